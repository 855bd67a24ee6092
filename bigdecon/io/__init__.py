"""Input and output: OME-Zarr (NGFF 0.4/0.5) and TIFF in, resumable OME-Zarr out."""

from __future__ import annotations

import os

from bigdecon.errors import InputError
from bigdecon.io._meta import ImageSource
from bigdecon.io.omezarr import (
    OmeZarrWriter,
    aligned_chunks,
    cast_block,
    check_output_path,
    done_keys,
    mark_done,
    open_omezarr,
    write_block,
    write_dask,
)
from bigdecon.io.tiff import is_tiff, open_tiff

__all__ = [
    "ImageSource",
    "OmeZarrWriter",
    "aligned_chunks",
    "cast_block",
    "check_output_path",
    "done_keys",
    "mark_done",
    "open_image",
    "write_block",
    "write_dask",
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
    p = os.fspath(path)
    local = p[len("file://") :] if p.startswith("file://") else p
    if "://" in local:
        return open_omezarr(p)
    local = os.path.abspath(os.path.expanduser(local))
    if not os.path.exists(local):
        raise InputError(f"input not found: {local}")
    if os.path.isdir(local):
        return open_omezarr(local)
    if not os.access(local, os.R_OK):
        raise InputError(f"cannot read input: {local} (permission denied)")
    if is_tiff(local) or local.lower().endswith(_TIFF_SUFFIXES):
        return open_tiff(local)
    raise InputError(f"not an image bigdecon can read: {local} (neither an OME-Zarr folder nor a TIFF file)")
