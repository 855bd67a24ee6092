"""Resolve a request: per-channel parameters, selections and the plan of a run.

:func:`prepare_request` turns the method's parameters and the run's options
(:mod:`bigdecon.passes.options`) and an opened source into a :class:`Request`:
everything checked, before anything is read or written.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BigdeconNotice, InputError
from ..io import voxel_size_um, with_overrides
from ..params import DEFAULT_REFRACTIVE_INDEX, Params, parse_timepoints
from ..planner import Layout, Plan, _k_name, _wb_blocks, make_plan
from ..solvers.psf_prepare import DEFAULT_ENERGY
from ..solvers.richardson_lucy import boundary_rule
from ..stages import check_image, output_psf
from .options import RunOptions, method_values

__all__ = ["Request", "estimate_offset", "prepare_request"]


@dataclass(frozen=True)
class Request:
    """A resolved request: what a run (or a plan) works on.

    ``params`` is the first processed channel's, ``channel_params`` one per
    processed channel (they differ only in their PSF); ``selection`` maps an
    axis position to the chosen channels (a list) or the first time point (an
    int); ``data`` is the selected input as a lazy Dask array, in chunks
    of :func:`stats_chunk_bytes` (it feeds the statistics pass).
    """

    layout: Layout
    params: Params
    channel_params: list[Params]
    channel_ids: list[int]
    plan: Plan
    selection: dict[int, Any]
    data: Any
    src: Any
    optics: list[dict[str, Any]] | None = None
    offset: float | str = 0.0  # counts subtracted from the input first; "auto" until a run estimates it
    psf_reports: list[dict[str, Any]] | None = None  # what prepare_psf did, per channel


_OPTICS_KEYS = ("psf_model", "na", "wavelength", "refractive_index", "sheet_thickness", "excitation_wavelength")
_PER_CHANNEL_KEYS = ("fwhm", "resolution", "psf", "psf_voxel_size")

# Task memory when neither the caller nor the cluster sizes it.
DEFAULT_TASK_MEMORY = 512 * 2**20


def stats_chunk_bytes(task_memory: int) -> int:
    """Bytes of input per task of the statistics pass: a quarter of ``task_memory``, at most 64 MiB.

    Such a task holds its chunk, the stored pieces it is assembled from, a
    boolean copy (the NaN/inf check) and, on a worker that reads ahead, the
    next chunk: about 3-4 times the chunk. Chunk sizes move the mean only by
    the rounding of its float64 sum; the maximum not at all.

    Examples
    --------
    >>> stats_chunk_bytes(512 * 2**20) // 2**20, stats_chunk_bytes(64 * 2**20) // 2**20
    (64, 16)
    """
    return max(1, min(64 * 2**20, int(task_memory) // 4))


def _channel_values(name: str, value: Any, n_channels: int, ids: list[int], has_c: bool) -> list[Any]:
    """One value of a per-channel option for every processed channel.

    ``value`` is one value for all channels, or a dict from the input's channel
    index to that channel's value.
    """
    if not isinstance(value, dict):
        return [value] * len(ids)
    try:
        table = {int(k): v for k, v in value.items()}
    except (TypeError, ValueError):
        raise InputError(f"{name} per channel needs channel numbers as keys, got {sorted(value, key=str)}") from None
    if not has_c and set(table) - {0}:
        raise InputError(f"{name} is given per channel, but the input has no c axis (only channel 0 exists)")
    bad = sorted(k for k in table if not 0 <= k < n_channels)
    if bad:
        raise InputError(f"{name} names channel(s) {bad}, but the input has channels 0-{n_channels - 1}")
    return [table.get(c) for c in ids]


def prepare_request(src: Any, params: Params, options: RunOptions) -> Request:
    """Resolve what a run (or a plan) of an opened input works on: everything checked, nothing read yet.

    The entry point of :func:`~bigdecon.passes.run.deconvolve`,
    :func:`~bigdecon.passes.run.plan`, the skewed-stack runs and
    :func:`bigdecon.suggest_parameters`.

    Parameters
    ----------
    src
        An opened input (:func:`bigdecon.io.open_image`).
    params, options
        The method's parameters and the run's options, as
        :func:`~bigdecon.passes.options.parse_run_options` makes them from keyword arguments.

    Returns
    -------
    Request
        The selected input's layout and lazy data, one
        :class:`~bigdecon.params.Params` per processed channel (its PSF
        resolved: a Gaussian's size, a prepared file or the optics), and the plan.

    Raises
    ------
    InputError
        A parameter or option that does not fit the input, naming it (and the channel).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from bigdecon.io import open_image, write_image
    >>> from bigdecon.passes.options import parse_run_options
    >>> path = write_image(os.path.join(tempfile.mkdtemp(), "raw.ome.zarr"), np.ones((2, 8, 64, 64), np.uint16), "czyx")
    >>> request = prepare_request(open_image(path), *parse_run_options({"fwhm": {0: 2, 1: 3}, "channels": [1]}))
    >>> request.layout.shape, request.channel_ids, request.params.fwhm
    ((1, 8, 64, 64), [1], (3.0, 3.0))
    """
    src = with_overrides(src, options.axes, options.voxel_size)
    data = src.read_chunks(stats_chunk_bytes(options.task_memory or DEFAULT_TASK_MEMORY))
    n_in_channels = int(data.shape[tuple(src.axes).index("c")]) if "c" in src.axes else 1
    data, selection, channel_ids = _select(data, tuple(src.axes), options)
    layout = Layout(tuple(src.axes), tuple(int(s) for s in data.shape))
    channel_params, optics_psfs, reports = _channel_params(src, params, options, channel_ids, n_in_channels)
    _check_channels(channel_params, layout, data.dtype)
    the_plan = make_plan(
        layout,
        channel_params[0],
        chunks=options.chunks,
        depth=options.depth,
        task_memory=options.task_memory or DEFAULT_TASK_MEMORY,
        min_tasks=options.min_tasks or 1,
        psf_shapes=_step5_psf_shapes(channel_params, layout),
        wb_blocks=_every_channel_wb_blocks(channel_params),
        mirror=_every_channel_mirror(channel_params, layout),
    )
    return Request(
        layout=layout,
        params=channel_params[0],
        channel_params=channel_params,
        channel_ids=channel_ids,
        plan=the_plan,
        selection=selection,
        data=data,
        src=src,
        optics=optics_psfs or None,
        offset=options.offset,
        psf_reports=reports or None,
    )


def _select(data: Any, axes: tuple[str, ...], options: RunOptions) -> tuple[Any, dict[int, Any], list[int]]:
    """The selected channels and time points of ``data``: the data, the selection and the channel numbers."""
    selection: dict[int, Any] = {}
    channel_ids = list(range(data.shape[axes.index("c")] if "c" in axes else 1))
    channels = options.channels
    if channels is not None:
        if "c" not in axes:
            raise InputError("channels given, but the input has no c axis")
        ci = axes.index("c")
        channels = [int(c) for c in ([channels] if np.ndim(channels) == 0 else channels)]
        bad = [c for c in channels if not 0 <= c < data.shape[ci]]
        if bad or not channels:
            raise InputError(f"channels {bad or channels} out of range 0-{data.shape[ci] - 1}")
        if len(set(channels)) != len(channels):
            raise InputError(f"channels {channels} name a channel twice")
        selection[ci] = channels
        channel_ids = channels
        data = data[(slice(None),) * ci + (channels,)]
    if options.timepoints is not None:
        if "t" not in axes:
            raise InputError("timepoints given, but the input has no t axis")
        ti = axes.index("t")
        a, b = parse_timepoints(options.timepoints, data.shape[ti])
        selection[ti] = a
        data = data[(slice(None),) * ti + (slice(a, b),)]
    return data, selection, channel_ids


def _channel_params(
    src: Any, params: Params, options: RunOptions, channel_ids: list[int], n_in_channels: int
) -> tuple[list[Params], list[dict[str, Any]], list[dict[str, Any]]]:
    """One :class:`Params` per processed channel (they differ only in their PSF), the optics PSFs
    computed and the PSF files prepared."""
    if options.resolution is not None and options.fwhm is not None:
        raise InputError("give either fwhm (pixels) or resolution (physical units), not both")
    has_c = "c" in src.axes
    per = {k: _channel_values(k, getattr(options, k), n_in_channels, channel_ids, has_c) for k in _PER_CHANNEL_KEYS}
    optics = {k: getattr(options, k) for k in _OPTICS_KEYS}
    model = _optics_model(optics, per)
    wavelengths = _channel_values("wavelength", options.wavelength, n_in_channels, channel_ids, has_c) if model else []
    channel_params = []
    optics_psfs: list[dict[str, Any]] = []
    reports: list[dict[str, Any]] = []
    for i, c in enumerate(channel_ids):
        fwhm, psf = per["fwhm"][i], per["psf"][i]
        if per["resolution"][i] is not None:
            fwhm = _fwhm_from_resolution(per["resolution"][i], src)
        try:
            if psf is not None:
                psf, report = measured_psf(psf, per["psf_voxel_size"][i], src, options.psf_as_is, options.psf_energy)
                if report is not None:
                    reports.append({"channel": c, **report})
            if model and params.deconv_type and params.deconv_iters != 0:
                energy = options.psf_energy or DEFAULT_ENERGY
                psf, described = optics_psf(model, src, {**optics, "wavelength": wavelengths[i]}, energy)
                optics_psfs.append({"channel": c, **described})
            channel_params.append(Params.from_kwargs(fwhm=fwhm, psf=psf, **method_values(params)))
        except InputError as e:
            raise InputError(f"channel {c}: {e}" if len(channel_ids) > 1 else str(e)) from None
    return channel_params, optics_psfs, reports


def _check_channels(channel_params: list[Params], layout: Layout, dtype: Any) -> None:
    """Every channel's PSF of the same kind, a 3-D one only along z, and the image fit for the solvers."""
    params = channel_params[0]
    if len({p.volumetric for p in channel_params}) > 1:
        raise InputError("every channel needs the same kind of PSF: all 2-D (y, x) or all 3-D (z, y, x)")
    if params.volumetric and params.deconvolves and _k_name(layout) != "z":
        raise InputError(
            f"a 3-D PSF (3-value fwhm or 3-D psf) deconvolves along z, but the input's axes are "
            f"{''.join(layout.axes)}: give the PSF size in y and x only"
        )
    solver_shape = tuple(layout.shape[i] for i in (layout.k, layout.y, layout.x) if i is not None)
    for p in channel_params:
        check_image(_Shape(solver_shape, dtype), p)


def measured_psf(
    psf: Any, psf_voxel: Any, src: Any, as_is: bool, energy: float | None = None
) -> tuple[Any, dict[str, Any] | None]:
    """A measured PSF for the data: a file (path) prepared by :func:`~bigdecon.solvers.psf_prepare.prepare_psf`.

    An array is used as given (normalised to sum 1 later): whoever built it
    in Python has prepared it (``prepare_psf`` is there for that); a file is
    what the microscope wrote. The file's voxel size: ``psf_voxel``, else its
    metadata, else the data's (with a notice). With ``as_is`` the file is
    only read. Every warning of the preparation is a
    :class:`~bigdecon.errors.BigdeconNotice`.
    """
    from ..io.psf_file import read_psf
    from ..solvers.psf_prepare import DEFAULT_ENERGY, prepare_psf, sampling_warnings

    if not isinstance(psf, (str, os.PathLike)):
        return psf, None
    where = f"PSF file {os.fspath(psf)}"
    a, from_file = read_psf(psf)
    origin = "option" if psf_voxel is not None else "metadata" if from_file is not None else "unknown"
    psf_voxel = psf_voxel if psf_voxel is not None else from_file
    data_voxel = voxel_size_um(src, ("z", "y", "x")[3 - a.ndim :])
    if as_is:
        for line in sampling_warnings(psf_voxel, data_voxel):
            _notice(f"{where}: {line.replace(': resampled', ': used as is (--psf-as-is)')}")
        return a.astype(np.float32), {"file": os.fspath(psf), "as_is": True, "shape": list(a.shape)}
    if psf_voxel is None and data_voxel is not None:
        _notice(
            f"{where} states no voxel size: taken at the data's ({_sizes_text(data_voxel)} µm); "
            "give --psf-voxel-size if it differs"
        )
        psf_voxel, origin = data_voxel, "data"
    elif psf_voxel is not None and data_voxel is None:
        _notice("the input states no voxel size: the PSF is not resampled to it (give --voxel-size)")
    prepared, report = prepare_psf(
        a, psf_voxel, data_voxel if psf_voxel is not None else None, energy=energy or DEFAULT_ENERGY
    )
    report = {
        "file": os.fspath(psf),
        **report,
        "psf_voxel_size": [float(v) for v in psf_voxel] if psf_voxel else None,
        "psf_voxel_size_from": origin,  # option, metadata, data (taken at the data's) or unknown
    }
    for line in report["warnings"]:
        _notice(f"{where}: {line}")
    return prepared, report


def _sizes_text(sizes: Any) -> str:
    return " x ".join(f"{float(v):g}" for v in sizes)


def _notice(text: str) -> None:
    warnings.warn(text, BigdeconNotice, stacklevel=3)


def estimate_offset(data: Any, max_chunks: int = 8, percentile: float = 0.5) -> float:
    """The camera offset of an input: a low percentile of a sample of its chunks.

    The darkest pixels of a fluorescence image are the camera's offset plus
    read noise. The ``percentile`` (0.5 %) of up to ``max_chunks`` chunks spread
    over the data set lies ~2.5 noise SDs below that dark level, so the
    estimate errs on the side of leaving a little background (which the
    background step and Richardson-Lucy tolerate) rather than cutting into
    the signal. Computed once, before any block runs.

    Parameters
    ----------
    data : dask.array.Array
        The input as read (any real dtype).

    Returns
    -------
    float
        Counts, >= 0, rounded down to a whole count for integer data.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> image = 100 + rng.normal(0, 2, (8, 64, 64)).round() + (rng.random((8, 64, 64)) > 0.9) * 500
    >>> estimate_offset(da.from_array(image.astype(np.uint16), chunks=(2, 64, 64)))
    95.0
    """
    import dask

    blocks = list(np.ndindex(*data.numblocks))
    picks = sorted({blocks[int(i)] for i in np.linspace(0, len(blocks) - 1, min(max_chunks, len(blocks)))})
    # A strided look at each chunk: ~1/8 of its pixels is plenty for a percentile.
    sample = dask.compute(*[data.blocks[b].ravel()[::8] for b in picks])
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in sample])
    level = max(0.0, float(np.percentile(values, percentile)))
    return float(math.floor(level)) if data.dtype.kind in "iu" else level


def psf_model_used(request: Request) -> str | None:
    """The PSF that ran, for the output's record: an optics model, ``gaussian``, ``measured`` or ``None``."""
    if request.optics:
        return str(request.optics[0]["model"])
    p = request.params
    return "gaussian" if p.fwhm is not None else "measured" if p.psf is not None else None


def _params_record(channel_params: list[Params], channel_ids: list[int]) -> dict[str, Any]:
    """The parameters as recorded in the output: one dict, per-channel PSFs by channel number."""
    records = [p.to_dict() for p in channel_params]
    out = dict(records[0])
    for key in ("fwhm", "psf_shape", "psf_sha256"):
        values = [r[key] for r in records]
        if any(v != values[0] for v in values):
            out[key] = {str(c): v for c, v in zip(channel_ids, values)}
    return out


@dataclass
class _Shape:
    """Just enough of an array for :func:`check_image`."""

    shape: tuple[int, ...]
    dtype: Any

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _fwhm_from_resolution(resolution: Any, src: Any) -> list[float]:
    """Resolution in physical units -> FWHM in pixels from the metadata's pixel sizes."""
    values = [float(v) for v in ([resolution] if np.ndim(resolution) == 0 else resolution)]
    if any(not (math.isfinite(v) and v > 0) for v in values):
        raise InputError(f"resolution must be > 0, got {resolution!r}")
    names = ["y", "x"] if len(values) in (1, 2) else ["z", "y", "x"]
    if len(values) == 1:
        values = values * 2
    sizes = []
    for name in names:
        size = src.scale.get(name)
        if not size or size == 1.0 and name not in src.units:
            raise InputError(
                f"resolution needs the pixel size along {name}, which the input's metadata does not give: use fwhm"
            )
        sizes.append(size)
    fwhm = [v / s for v, s in zip(values, sizes)]
    small = [(n, f, s) for n, f, s in zip(names, fwhm, sizes) if f < 0.5]
    if small:
        n, f, s = small[0]
        unit = src.units.get(n, "the metadata's unit")
        raise InputError(
            f"resolution {resolution} gives a FWHM of {f:.3g} px along {n} (pixel size {s:g} {unit}): "
            f"give the resolution in {unit}"
        )
    return fwhm


def _optics_model(optics: Mapping[str, Any], per: Mapping[str, list[Any]]) -> str | None:
    """The optics model a request asks for (``None``: a Gaussian or measured PSF), checked against the rest."""
    from ..params import PSF_MODELS

    model = optics.get("psf_model")
    if model is not None and model not in PSF_MODELS:
        raise InputError(f"psf_model must be one of {', '.join(PSF_MODELS)}, got {model!r}")
    stated = [k for k in ("na", "wavelength") if optics.get(k) is not None]
    if model == "gaussian":
        if stated:
            raise InputError("psf_model gaussian takes fwhm, resolution or psf, not na/wavelength")
        return None
    if model is None:
        if not stated:
            return None
        model = "widefield"  # na and wavelength alone: the widefield model
    missing = [k for k in ("na", "wavelength") if optics.get(k) is None]
    if model == "lightsheet" and optics.get("sheet_thickness") is None:
        missing.append("sheet_thickness")
    if missing:
        raise InputError(f"psf_model {model} needs {' and '.join(missing)}")
    given = [k for k in ("fwhm", "resolution", "psf") if any(v is not None for v in per[k])]
    if given:
        raise InputError(f"give either {' / '.join(given)} or a PSF from the optics (psf_model {model}), not both")
    return str(model)


def _pixel_size(src: Any, name: str, why: str) -> float:
    """The metadata's pixel size along ``name``; one line naming the problem when it has none."""
    size = src.scale.get(name)
    if not size or size == 1.0 and name not in src.units:
        raise InputError(
            f"{why} needs the physical pixel size along {name}, which the input's metadata does not give "
            "(no scale with a unit): use fwhm instead, or write the pixel sizes into the OME-Zarr"
        )
    return float(size)


def _fwhm_px(psf: np.ndarray) -> list[float | None]:
    """FWHM per axis in pixels; ``None`` along an axis the PSF does not fall to half along (cut by the data)."""
    from ..solvers.psf import psf_fwhm

    try:
        return [round(float(v), 3) for v in psf_fwhm(psf)]
    except InputError:
        centre = np.unravel_index(int(np.argmax(psf)), psf.shape)
        out: list[float | None] = []
        for axis in range(psf.ndim):
            line = psf[tuple(slice(None) if a == axis else centre[a] for a in range(psf.ndim))]
            try:
                out.append(round(float(psf_fwhm(line)[0]), 3))
            except InputError:
                out.append(None)
        return out


def optics_psf(
    model: str, src: Any, optics: Mapping[str, Any], energy: float = 0.99
) -> tuple[np.ndarray, dict[str, Any]]:
    """A PSF from the optics and the metadata's pixel sizes, and what it is.

    3-D ``(z, y, x)`` when the input has a z axis (a light sheet needs one),
    else the in-focus ``(y, x)`` plane; its shape from
    :func:`~bigdecon.solvers.psf.psf_size_for`, cut to the data's extent.
    """
    from ..solvers import psf as optics_models

    why = f"psf_model {model}"
    axes = tuple(src.axes)
    pixel = (_pixel_size(src, "y", why), _pixel_size(src, "x", why))
    nz = src.shape[axes.index("z")] if "z" in axes else 0
    z_step = _pixel_size(src, "z", why) if nz >= 3 else None
    if model == "lightsheet" and z_step is None:
        raise InputError(f"psf_model lightsheet is 3-D: the input needs a z axis of 3 planes or more ({''.join(axes)})")
    na = float(optics["na"])
    wavelength = float(optics["wavelength"])
    n = float(optics.get("refractive_index") or DEFAULT_REFRACTIVE_INDEX)
    shape = optics_models.psf_size_for(na, wavelength, n, pixel, z_step)
    # A PSF wider than the data adds nothing but cost: at most the data's extent (odd) on each axis.
    extent = [src.shape[axes.index(a)] for a in ("z", "y", "x")[3 - len(shape) :]]
    shape = tuple(min(s, n if n % 2 else n - 1) for s, n in zip(shape, extent))
    common = (shape, na, wavelength, n, pixel, z_step)
    if model == "widefield":
        psf = optics_models.widefield_psf(*common)
    elif model == "confocal":
        psf = optics_models.confocal_psf(*common, excitation_wavelength=optics.get("excitation_wavelength"))
    else:
        assert z_step is not None
        psf = optics_models.lightsheet_psf(shape, na, wavelength, n, pixel, z_step, float(optics["sheet_thickness"]))
    from ..solvers.psf_prepare import MODEL_FLOOR, energy_crop

    # The box of its light (above the floor that set its box), not of the threshold's box.
    psf, _ = energy_crop(np.asarray(psf, dtype=np.float32), energy, MODEL_FLOOR)
    described = {
        "model": model,
        "na": na,
        "wavelength": wavelength,
        "refractive_index": n,
        "shape": [int(s) for s in psf.shape],
        "fwhm_px": _fwhm_px(psf),
    }
    return np.asarray(psf, dtype=np.float32), described


def _every_channel_wb_blocks(channel_params: list[Params]) -> bool | None:
    """With Wiener-Butterworth, whether every channel's 3-D PSF allows blocks (else None: not asked)."""
    if channel_params[0].deconv_type != 3 or not channel_params[0].volumetric:
        return None
    return all(_wb_blocks(p) for p in channel_params)


def _every_channel_mirror(channel_params: list[Params], layout: Layout) -> bool | None:
    """Whether every channel's 3-D step-5 PSF takes the mirror boundary (None without 3-D step 5)."""
    if _step5_psf_shapes(channel_params, layout) is None:
        return None
    return all(boundary_rule(3, output_psf(p, 3)) == "mirror" for p in channel_params)


def _required(psf: np.ndarray | None) -> np.ndarray:
    if psf is None:  # a volumetric run that deconvolves always has a PSF (Params checks it)
        raise ValueError("no step-5 PSF")
    return psf


def _step5_psf_shapes(channel_params: list[Params], layout: Layout) -> list[np.ndarray] | None:
    """Every channel's 3-D step-5 PSF (the plan's halo covers the widest light); None otherwise."""
    if not (channel_params[0].volumetric and channel_params[0].deconvolves and layout.k is not None):
        return None
    return [_required(output_psf(p, 3)) for p in channel_params]
