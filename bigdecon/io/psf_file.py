"""Measured PSF files: ``.npy`` or TIFF (ImageJ or OME metadata give its voxel size), local or a URL."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bigdecon.errors import InputError
from bigdecon.io._meta import _UM_PER_UNIT

__all__ = ["read_psf", "write_psf"]


def _um(scale: dict[str, float], units: dict[str, str], axes: Sequence[str]) -> list[float] | None:
    out = []
    for a in axes:
        factor = _UM_PER_UNIT.get(units.get(a, ""))
        if factor is None:
            return None
        out.append(round(scale[a] * factor, 12))
    return out


def read_psf(path: str | os.PathLike) -> tuple[np.ndarray, list[float] | None]:
    """A PSF file's array (in its stored dtype, singleton axes dropped) and its voxel size.

    Parameters
    ----------
    path
        ``.npy``, ``.tif`` or ``.tiff``; a local path or an fsspec URL.

    Returns
    -------
    psf : ndarray
        2-D ``(y, x)`` or 3-D ``(z, y, x)``.
    voxel_size : list of float or None
        Per axis of ``psf``, in micrometres, from ImageJ (resolution tags,
        ``spacing``, ``unit``) or OME (``PhysicalSize*``) metadata; ``None``
        when the file does not state it (always for ``.npy``).

    Raises
    ------
    InputError
        Missing or unreadable file, another suffix, not 2-D or 3-D, not real
        numbers, NaN or infinite values.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> path = write_psf(os.path.join(tempfile.mkdtemp(), "psf.tif"), np.ones((5, 7, 7), np.float32), [0.3, 0.1, 0.1])
    >>> psf, size = read_psf(path)
    >>> psf.shape, [round(v, 6) for v in size]
    ((5, 7, 7), [0.3, 0.1, 0.1])
    """
    from bigdecon.io.paths import is_url

    path = os.fspath(path)
    lower = path.lower()
    if not lower.endswith((".npy", ".tif", ".tiff")):
        raise InputError(f"PSF file must be .npy or .tif, got {path}")
    if not is_url(path) and not os.path.isfile(path):
        raise InputError(f"PSF file not found: {path}")
    try:
        raw: Any = path
        if is_url(path):  # e.g. s3://bucket/psf.tif, beside the data a cluster reads
            import fsspec

            with fsspec.open(path, "rb") as fh:
                raw = io.BytesIO(fh.read())
        if lower.endswith(".npy"):
            psf, size = np.load(raw, allow_pickle=False), None
        else:
            from bigdecon.io.tiff import read_tiff_with_sizes

            psf, scale, units, axes = read_tiff_with_sizes(raw)
            keep = [a for a, n in zip(axes, psf.shape) if n > 1]
            size = _um(scale, units, [a for a in keep if a in ("z", "y", "x")])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read PSF file {path}: {' '.join(str(exc).split())}") from None
    psf = np.squeeze(np.asarray(psf))
    if psf.dtype.kind not in "iuf":
        raise InputError(f"PSF file {path} must hold real numbers, got dtype {psf.dtype}")
    if psf.ndim not in (2, 3):
        raise InputError(f"PSF file {path} must hold a 2-D or 3-D PSF, got shape {psf.shape}")
    if psf.dtype.kind == "f" and not np.isfinite(psf).all():
        raise InputError(f"PSF file {path} contains NaN or infinite values")
    if size is not None and len(size) != psf.ndim:
        size = None
    return psf, size


def write_psf(path: str | os.PathLike, psf: np.ndarray, voxel_size: Sequence[float] | None = None) -> str:
    """Write a PSF as float32 ``.npy`` or ImageJ TIFF (with its voxel size in micrometres); returns the path.

    A ``.npy`` file cannot hold the voxel size: give it with ``--psf-voxel-size`` when using it.
    """
    path = os.fspath(path)
    a = np.asarray(psf, dtype=np.float32)
    if path.lower().endswith(".npy"):
        np.save(path, a)
        return path
    if not path.lower().endswith((".tif", ".tiff")):
        raise InputError(f"the prepared PSF is written as .tif or .npy, got {path}")
    import tifffile

    kwargs: dict[str, Any] = {"imagej": True, "metadata": {"axes": "ZYX"[3 - a.ndim :]}}
    if voxel_size is not None:
        sizes = [float(v) for v in voxel_size]
        kwargs["resolution"] = (1.0 / sizes[-1], 1.0 / sizes[-2])
        kwargs["metadata"]["unit"] = "um"
        if a.ndim == 3:
            kwargs["metadata"]["spacing"] = sizes[0]
    tifffile.imwrite(path, a, **kwargs)
    return path
