"""TIFF, ImageJ hyperstack and OME-TIFF input, read lazily through tifffile."""

from __future__ import annotations

import functools
import os
import warnings
import weakref
import xml.etree.ElementTree as ET
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr
from dask.base import tokenize

from bigdecon.errors import BigdeconNotice, InputError
from bigdecon.io._meta import ImageSource, check_axes, check_declared, check_transform, normalize_unit, task_chunks

__all__ = ["open_tiff", "is_tiff", "read_tiff_with_sizes"]

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_LETTERS = {"T": "t", "C": "c", "Z": "z", "Y": "y", "X": "x"}


def is_tiff(path: str | os.PathLike) -> bool:
    """True when the file starts with a TIFF or BigTIFF signature."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in _TIFF_MAGIC
    except OSError:
        return False


@functools.lru_cache(maxsize=8)
def _zarr_view(path: str, mtime_ns: int) -> zarr.Array:
    # One open file per process and file version: parsing the IFDs of a large
    # stack is slow, so tasks reading different planes share it.
    store = tifffile.imread(path, aszarr=True, series=0, level=0)
    array = zarr.open_array(store, mode="r")
    # Closed when the last reader lets go of the array (after the cache drops it), not left to the
    # garbage collector, which would warn of an unclosed file.
    weakref.finalize(array, store.close)
    return array


class _LazyTiff:
    """A picklable array-like over series 0 of a TIFF, for ``dask.array.from_array``.

    It holds only the path, so workers reopen the file themselves; the open
    ``ZarrTiffStore`` has a lock and a file handle and does not pickle.
    """

    def __init__(self, path: str, mtime_ns: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path = path
        self.mtime_ns = mtime_ns
        self.shape = shape
        self.dtype = dtype
        self.ndim = len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(_zarr_view(self.path, self.mtime_ns)[key])


def open_tiff(path: str | os.PathLike) -> ImageSource:
    """Open series 0 of a TIFF / OME-TIFF / ImageJ TIFF lazily.

    Axes come from the OME or ImageJ metadata through tifffile; an unnamed
    leading axis ('Q' or 'I') is z, or t when ImageJ counts it as frames.
    Pixel sizes come from OME ``PhysicalSize*`` or the ImageJ resolution,
    ``spacing`` and ``finterval``.

    Raises
    ------
    InputError
        Missing or unreadable file, interleaved RGB data (samples after x), or
        axes other than t, c, z, y, x. Planar samples (a 3- or 4-plane stack
        that ``tifffile.imwrite`` saved as RGB) are read as channels, with a
        :class:`~bigdecon.errors.BigdeconNotice` warning.
    """
    p = os.path.abspath(os.path.expanduser(os.fspath(path)))
    if not os.path.exists(p):
        raise InputError(f"input not found: {p}")
    try:
        with tifffile.TiffFile(p) as tif:
            series = tif.series[0]
            raw_axes, shape, dtype = series.axes, tuple(series.shape), np.dtype(series.dtype)
            ome_xml = tif.ome_metadata if tif.is_ome else None
            ij = tif.imagej_metadata if tif.is_imagej else None
            tags = _first_page_tags(series)
            raw_axes = _planar_samples_as_channels(raw_axes, p)
            axes = _map_axes(raw_axes, ij, p)
            # Before the zarr view: its chunk index is built from the declared shape.
            check_declared(shape, axes, [1] * len(shape), p)
            view = _zarr_view(p, os.stat(p).st_mtime_ns)
    except (tifffile.TiffFileError, OSError, IndexError, ValueError, KeyError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read TIFF: {p} ({e})") from e

    scale = {a: 1.0 for a in axes}
    units: dict[str, str] = {}
    channels: list[dict] = []
    if ome_xml:
        _ome_physical(ome_xml, axes, scale, units, channels)
    elif ij is not None:
        try:
            _imagej_physical(ij, tags, axes, scale, units)
        except (TypeError, ValueError, ZeroDivisionError):
            raise InputError(f"{p}: ImageJ metadata has a pixel size that is not a number") from None
    elif tags.get("ResolutionUnit") == 3:  # centimetre: a real size, unlike the 72-dpi default
        _resolution(tags, scale, factor=1e4)
        units.update({a: "micrometer" for a in ("y", "x") if scale[a] != 1.0})
    check_transform(scale, {}, p)

    mtime = os.stat(p).st_mtime_ns
    if tuple(view.shape) != shape:  # tifffile and its zarr view should agree; be safe
        raise InputError(f"cannot read TIFF: {p} (series shape {shape} but pixel data {view.shape})")
    lazy = _LazyTiff(p, mtime, shape, dtype)
    unit = tuple(int(c) for c in view.chunks)
    data = da.from_array(
        lazy,
        chunks=task_chunks(shape, unit, dtype.itemsize),
        name=f"tiff-{tokenize(p, mtime)}",
        meta=np.empty((0,) * len(shape), dtype=dtype),
        lock=False,
    )
    return ImageSource(
        data=data,
        axes=axes,
        scale=scale,
        units=units,
        translation={a: 0.0 for a in axes},
        channels=channels,
        ngff_version=None,
        path=p,
        attrs={},
        level=("tiff", p, mtime),
        stored_chunks=unit,
        array=lazy,
    )


def _planar_samples_as_channels(raw: str, where: str) -> str:
    """Planar samples (axis 'S' before y and x) read as channels; interleaved RGB is refused.

    ``tifffile.imwrite(path, stack)`` stores a (3 or 4, y, x) stack as planar
    RGB(A): the commonest way of saving a small stack should open as the planes
    it holds, so each sample becomes a channel (with one notice).
    """
    if "S" not in raw:
        return raw
    if raw.index("S") < raw.index("Y") and "C" not in raw:
        warnings.warn(
            f"{where}: TIFF stores planar samples (axes {raw}, e.g. a 3- or 4-plane stack saved as RGB); "
            "reading them as channels (axis c)",
            BigdeconNotice,
            stacklevel=3,
        )
        return raw.replace("S", "C")
    raise InputError(f"RGB / multi-sample TIFF not supported: {where} (axes {raw}); save the channels as a C axis")


def _first_page_tags(series: Any) -> dict[str, Any]:
    """The first page's TIFF tags by name (none for a series without a full first page)."""
    page = series.pages[0] if series.pages else None
    return {t.name: t.value for t in page.tags.values()} if isinstance(page, tifffile.TiffPage) else {}


def _map_axes(raw: str, ij: dict | None, where: str) -> tuple[str, ...]:
    """tifffile axis letters -> bigdecon names (see :func:`open_tiff`)."""
    ij = ij or {}
    frames_first = int(ij.get("frames", 1) or 1) > 1 and int(ij.get("slices", 1) or 1) <= 1
    names: list[str] = []
    for letter in raw:
        if letter in _LETTERS:
            names.append(_LETTERS[letter])
        elif letter in "QI":
            order = ("t", "z") if frames_first else ("z", "t")
            free = [a for a in order if a not in raw.lower() and a not in names]
            names.append(free[0] if free else letter.lower())
        else:
            names.append(letter.lower())
    return check_axes(names, f"{where} (TIFF axes {raw})")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _ome_physical(xml: str, axes: tuple[str, ...], scale: dict, units: dict, channels: list) -> None:
    """Fill pixel sizes, units and channel names from the first OME Image."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return
    pixels = next((el for el in root.iter() if _local(el.tag) == "Pixels"), None)
    if pixels is None:
        return
    for axis, key, default_unit in (
        ("x", "PhysicalSizeX", "µm"),
        ("y", "PhysicalSizeY", "µm"),
        ("z", "PhysicalSizeZ", "µm"),
        ("t", "TimeIncrement", "s"),
    ):
        value = pixels.get(key)
        if axis not in axes or value is None:
            continue
        try:
            scale[axis] = float(value)
        except ValueError:
            continue
        unit = normalize_unit(pixels.get(key + "Unit", default_unit))
        if unit:
            units[axis] = unit
    if "c" in axes:
        for i, ch in enumerate(el for el in pixels if _local(el.tag) == "Channel"):
            entry: dict[str, Any] = {"label": ch.get("Name") or f"Channel {i}"}
            color = ch.get("Color")
            if color is not None:
                try:  # OME stores RGBA as one signed 32-bit integer
                    entry["color"] = f"{(int(color) & 0xFFFFFFFF) >> 8:06X}"
                except ValueError:
                    pass
            channels.append(entry)


def _resolution(tags: dict, scale: dict, factor: float = 1.0) -> None:
    for axis, tag in (("x", "XResolution"), ("y", "YResolution")):
        value = tags.get(tag)
        if isinstance(value, tuple) and len(value) == 2 and value[0]:
            scale[axis] = factor * float(value[1]) / float(value[0])


def _imagej_physical(ij: dict, tags: dict, axes: tuple[str, ...], scale: dict, units: dict) -> None:
    """Pixel sizes from ImageJ: resolution tags for y/x, ``spacing`` for z, ``finterval`` for t."""
    _resolution(tags, scale)
    unit = normalize_unit(ij.get("unit"))
    if unit:  # 'pixel' and other non-physical units normalise to None
        units.update(y=unit, x=unit)
    if "z" in axes and ij.get("spacing"):
        scale["z"] = float(ij["spacing"])
        if unit:
            units["z"] = unit
    if "t" in axes and ij.get("finterval"):
        scale["t"] = float(ij["finterval"])
        units["t"] = normalize_unit(ij.get("tunit")) or "second"


def read_tiff_with_sizes(source: Any) -> tuple[np.ndarray, dict[str, float], dict[str, str], tuple[str, ...]]:
    """Series 0 of a small TIFF read whole (a PSF), with its pixel sizes, units and axes.

    ``source`` is a path or a file-like object. Sizes are 1.0 and units
    missing where the metadata has none (see :func:`open_tiff`).
    """
    with tifffile.TiffFile(source) as tif:
        series = tif.series[0]
        raw_axes = series.axes.replace("S", "C") if "S" in series.axes else series.axes
        ome_xml = tif.ome_metadata if tif.is_ome else None
        ij = tif.imagej_metadata if tif.is_imagej else None
        tags = _first_page_tags(series)
        data = series.asarray()
    axes = _map_axes(raw_axes, ij, str(getattr(source, "name", source)))
    scale = {a: 1.0 for a in axes}
    units: dict[str, str] = {}
    if ome_xml:
        _ome_physical(ome_xml, axes, scale, units, [])
    elif ij is not None:
        _imagej_physical(ij, tags, axes, scale, units)
    elif tags.get("ResolutionUnit") == 3:
        _resolution(tags, scale, factor=1e4)
        units.update({a: "micrometer" for a in ("y", "x") if scale[a] != 1.0})
    return np.asarray(data), scale, units, axes
