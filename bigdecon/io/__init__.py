"""Input and output: OME-Zarr (NGFF 0.4/0.5) and TIFF in, resumable OME-Zarr out."""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from bigdecon.errors import InputError
from bigdecon.io._meta import ImageSource, voxel_origin, voxel_size_um, with_overrides
from bigdecon.io.omezarr import (
    OmeZarrWriter,
    aligned_chunks,
    cast_block,
    check_output_path,
    open_omezarr,
    write_block,
    write_dask,
    write_image,
)
from bigdecon.io.paths import normalize
from bigdecon.io.tiff import _zarr_view, is_tiff, open_tiff

__all__ = [
    "ImageSource",
    "OmeZarrWriter",
    "aligned_chunks",
    "cast_block",
    "check_output_path",
    "open_image",
    "read_region",
    "voxel_origin",
    "voxel_size_um",
    "with_overrides",
    "write_block",
    "write_dask",
    "write_image",
]

_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8")


def open_image(path: str | os.PathLike) -> ImageSource:
    """Open an OME-Zarr image or a TIFF lazily.

    Parameters
    ----------
    path
        An OME-Zarr image (local path or fsspec URL such as ``s3://...``), or a
        local TIFF / OME-TIFF / ImageJ TIFF.

    Returns
    -------
    ImageSource
        The full-resolution data as a Dask array and its metadata.

    Raises
    ------
    InputError
        With a one-line reason when the path cannot be used as an input image.
    """
    location, is_local = normalize(path)
    if not is_local:
        return open_omezarr(location)
    local = location
    if not os.path.exists(local):
        raise InputError(f"input not found: {local}")
    if os.path.isdir(local):
        return open_omezarr(local)
    if not os.access(local, os.R_OK):
        raise InputError(f"cannot read input: {local} (permission denied)")
    if is_tiff(local) or local.lower().endswith(_TIFF_SUFFIXES):
        return open_tiff(local)
    raise InputError(f"not an image bigdecon can read: {local} (neither an OME-Zarr folder nor a TIFF file)")


@functools.lru_cache(maxsize=8)
def _level_array(level: tuple, token: str) -> Any:
    # One open array per worker process and run (``token``): the metadata is
    # read once, and a later run over a rewritten input never sees stale shapes.
    if level[0] == "zarr":
        import zarr

        return zarr.open_array(level[1], mode="r")
    if level[0] == "tiff":
        return _zarr_view(level[1], level[2])
    raise ValueError(f"unknown stored level {level!r}")


def read_region(level: Sequence, index: Sequence[Any], token: str = "") -> np.ndarray:
    """Read one region of an input's full-resolution level straight from its store.

    Parameters
    ----------
    level
        :attr:`ImageSource.level` of an opened input.
    index
        One entry per axis: a slice, or a list of indices (orthogonal selection,
        e.g. the selected channels).
    token
        Cache key of the open array (a run's id): regions of one run share it.

    Returns
    -------
    ndarray
        The region in the stored dtype (native byte order).
    """
    arr = _level_array(tuple(level), token)
    index = tuple(index)
    block = np.asarray(arr.oindex[index] if any(isinstance(i, list) for i in index) else arr[index])
    # Big-endian stores (zarr v2 '>u2', common from bioformats2raw) are turned
    # into native order here, once, before any solver or GPU upload sees them.
    return block if block.dtype.isnative else block.astype(block.dtype.newbyteorder("="))
