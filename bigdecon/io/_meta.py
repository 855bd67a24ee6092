"""Image description shared by the readers and the writer, and NGFF metadata helpers.

Nothing here touches array data: these functions only turn OME-NGFF 0.4/0.5
attributes into plain Python values and back.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from bigdecon.errors import InputError

__all__ = [
    "AXIS_TYPES",
    "ImageSource",
    "MAX_AXIS",
    "MAX_CHANNELS",
    "MAX_METADATA_DEPTH",
    "MAX_PLANES",
    "MAX_VOXELS",
    "check_axes",
    "check_declared",
    "check_depth",
    "check_transform",
    "normalize_unit",
    "parse_image_attrs",
    "multiscales_metadata",
    "omero_metadata",
    "default_color",
    "display_window",
]

#: The axes bigdecon understands, in the order NGFF requires them.
AXES_ORDER: tuple[str, ...] = ("t", "c", "z", "y", "x")
AXIS_TYPES: dict[str, str] = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}

# Declared sizes bigdecon refuses before building anything from them: far beyond
# any real microscope data set (a terabyte of uint16 is 2**39 voxels), and small
# enough that what is built per chunk, plane or channel stays bounded.
MAX_VOXELS = 2**47  # about 1.4e14 voxels: 256 TiB of uint16
MAX_AXIS = 2**22  # along one axis: whole-slide scans reach ~2e5 pixels, time series ~1e5 points
MAX_PLANES = 2**26  # planes (every axis but y and x together): e.g. 60,000 time points x 1,000 z
MAX_CHANNELS = 2**16
MAX_METADATA_DEPTH = 64  # nesting of the attributes (NGFF metadata is less than 10 deep)

# Colours for channels that come without one: white for a single channel, then
# the usual fluorescence palette.
_PALETTE = ("00FF00", "FF00FF", "00FFFF", "FF0000", "0000FF", "FFFF00")

# Spellings found in OME-XML, ImageJ and older NGFF files, mapped to the
# UDUNITS-2 names NGFF requires.
_UNIT_ALIASES: dict[str, str] = {
    "µm": "micrometer",
    "μm": "micrometer",
    "um": "micrometer",
    "micron": "micrometer",
    "microns": "micrometer",
    "micrometre": "micrometer",
    "\\u00b5m": "micrometer",
    "nm": "nanometer",
    "nanometre": "nanometer",
    "mm": "millimeter",
    "millimetre": "millimeter",
    "cm": "centimeter",
    "m": "meter",
    "metre": "meter",
    "å": "angstrom",
    "a": "angstrom",
    "pm": "picometer",
    "s": "second",
    "sec": "second",
    "seconds": "second",
    "ms": "millisecond",
    "msec": "millisecond",
    "µs": "microsecond",
    "us": "microsecond",
    "min": "minute",
    "h": "hour",
    "hr": "hour",
    "ns": "nanosecond",
}
_NGFF_UNITS = frozenset(
    {
        "angstrom",
        "attometer",
        "centimeter",
        "decimeter",
        "exameter",
        "femtometer",
        "foot",
        "gigameter",
        "hectometer",
        "inch",
        "kilometer",
        "megameter",
        "meter",
        "micrometer",
        "mile",
        "millimeter",
        "nanometer",
        "parsec",
        "petameter",
        "picometer",
        "terameter",
        "yard",
        "yoctometer",
        "yottameter",
        "zeptometer",
        "zettameter",
        "attosecond",
        "centisecond",
        "day",
        "decisecond",
        "exasecond",
        "femtosecond",
        "gigasecond",
        "hectosecond",
        "hour",
        "kilosecond",
        "megasecond",
        "microsecond",
        "millisecond",
        "minute",
        "nanosecond",
        "petasecond",
        "picosecond",
        "second",
        "terasecond",
        "yoctosecond",
        "yottasecond",
        "zeptosecond",
        "zettasecond",
    }
)


@dataclass
class ImageSource:
    """A lazily loaded input image and its physical metadata.

    Attributes
    ----------
    data
        Full-resolution level in its native dtype, chunked as stored.
    axes
        Axis names in stored order, a subset of ``('t', 'c', 'z', 'y', 'x')``
        that always contains ``'y'`` and ``'x'``.
    scale
        Pixel size per axis (1.0 where unknown).
    units
        Unit per axis, only for the axes that have one (e.g. ``{'y': 'micrometer'}``).
    translation
        Position of the first pixel per axis (0.0 where unknown).
    channels
        OMERO channel dicts (``label``, ``color``, ``window``...), ``[]`` when none.
    ngff_version
        ``'0.4'``, ``'0.5'`` (or an older NGFF version string), ``None`` for TIFF.
    path
        Where the image was read from.
    attrs
        The raw group attributes of an OME-Zarr image, ``{}`` for TIFF.
    level
        Where the full-resolution pixels are stored, for workers that read
        regions of it directly: ``("zarr", url_of_level_array)`` or
        ``("tiff", path, mtime_ns)``. See :func:`bigdecon.io.read_region`.
    stored_chunks
        The chunk (or shard) shape on disk. :attr:`data` is chunked in whole
        multiples of it, about 64 MiB a block, so a reduction over a terabyte
        data set stays a graph of thousands of tasks, not millions.
    array
        The stored array :attr:`data` reads (a zarr array, or a lazy view of
        a TIFF's pages), for :meth:`read_chunks`; ``None`` where there is none.
    """

    data: da.Array
    axes: tuple[str, ...]
    scale: dict[str, float]
    units: dict[str, str]
    translation: dict[str, float]
    channels: list[dict] = field(default_factory=list)
    ngff_version: str | None = None
    path: str = ""
    attrs: dict = field(default_factory=dict)
    level: tuple = ()
    stored_chunks: tuple = ()
    array: Any = None

    def read_chunks(self, target: int) -> da.Array:
        """:attr:`data` read in Dask chunks of at most about ``target`` bytes (whole stored chunks).

        Each chunk is read from the store at its own size (not cut from a
        larger read), so a reduction over it holds about ``target`` bytes per
        chunk in flight: what keeps the statistics pass within a worker's
        task memory. :attr:`data` itself where its chunks are already that
        small, or where there is no :attr:`array` to read from.

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> from bigdecon.io import open_image, write_image
        >>> path = os.path.join(tempfile.mkdtemp(), "raw.ome.zarr")
        >>> src = open_image(write_image(path, np.ones((8, 64, 64), np.uint16), "zyx", chunks=(1, 64, 64)))
        >>> src.data.chunksize, src.read_chunks(4 * 64 * 64 * 2).chunksize
        ((8, 64, 64), (4, 64, 64))
        """
        chunks = task_chunks(self.data.shape, self.stored_chunks or self.data.chunksize, self.dtype.itemsize, target)
        if self.array is None or all(c >= b for c, b in zip(chunks, self.data.chunksize)):
            return self.data
        return da.from_array(
            self.array,
            chunks=chunks,
            name=f"{self.data.name}-{'x'.join(map(str, chunks))}",
            meta=np.empty((0,) * self.data.ndim, dtype=self.dtype),
            lock=False,
        )

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of :attr:`data`."""
        return tuple(int(n) for n in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """Dtype of :attr:`data`."""
        return self.data.dtype


def task_chunks(shape, unit, itemsize: int, target: int = 64 * 2**20) -> tuple[int, ...]:
    """Dask chunks for reading a stored array: whole multiples of ``unit`` (its
    chunks or shards), grown x first, then y, z, c, t, to about ``target`` bytes."""
    chunks = [max(1, min(int(u), int(n))) for u, n in zip(unit, shape)]
    for axis in reversed(range(len(chunks))):
        while chunks[axis] < shape[axis] and math.prod(chunks) * itemsize * 2 <= target:
            chunks[axis] = min(int(shape[axis]), 2 * chunks[axis])
    return tuple(chunks)


def check_axes(axes: Iterable[str], where: str | os.PathLike = "") -> tuple[str, ...]:
    """Validate axis names and return them lower-cased as a tuple.

    Raises
    ------
    InputError
        When an axis is not one of t, c, z, y, x, appears twice, or y/x is missing.
    """
    names = tuple(str(a).lower() for a in axes)
    suffix = f" in {os.fspath(where)}" if where else ""
    unknown = [a for a in names if a not in AXIS_TYPES]
    if unknown or len(set(names)) != len(names):
        raise InputError(
            f"unsupported axes {''.join(names) or '(none)'}{suffix}: "
            "bigdecon handles only t, c, z, y, x, each at most once"
        )
    if "y" not in names or "x" not in names:
        raise InputError(f"axes {''.join(names)}{suffix} lack y and x: an image needs both")
    return names


def check_declared(shape: Sequence[int], axes: Sequence[str], chunks: Sequence[int], where: str) -> None:
    """Refuse a declared shape or chunk shape that no real data set has, before anything is built from it.

    Raises
    ------
    InputError
        An axis or chunk length below 1, more than :data:`MAX_AXIS` along an
        axis (Dask keeps a list of the blocks along each), :data:`MAX_VOXELS` voxels,
        :data:`MAX_PLANES` planes or :data:`MAX_CHANNELS` channels.

    Examples
    --------
    >>> check_declared((10**9,) * 3, "zyx", (64, 64, 64), "big.zarr")
    Traceback (most recent call last):
    ...
    bigdecon.errors.InputError: big.zarr declares shape 1000000000x1000000000x1000000000: 1e+09 along one axis, more than bigdecon reads (2**22 = 4.19e+06): broken or hostile metadata
    """
    dims = "x".join(str(int(n)) for n in shape)
    if any(int(n) < 1 for n in shape) or any(int(c) < 1 for c in chunks):
        raise InputError(
            f"{where} declares shape {dims} with chunks {tuple(int(c) for c in chunks)}: every length must be >= 1"
        )
    voxels = math.prod(int(n) for n in shape)
    planes = math.prod(int(n) for a, n in zip(axes, shape) if a not in ("y", "x"))
    channels = int(shape[list(axes).index("c")]) if "c" in axes else 1
    for count, limit, what, text in (
        (max(int(n) for n in shape), MAX_AXIS, "along one axis", "2**22"),
        (voxels, MAX_VOXELS, "voxels", "2**47"),
        (planes, MAX_PLANES, "planes", "2**26"),
        (channels, MAX_CHANNELS, "channels", "2**16"),
    ):
        if count > limit:
            raise InputError(
                f"{where} declares shape {dims}: {count:.3g} {what}, more than bigdecon reads "
                f"({text} = {limit:.3g}): broken or hostile metadata"
            )


def check_depth(value: Any, where: str, limit: int = MAX_METADATA_DEPTH) -> None:
    """Refuse metadata nested deeper than ``limit`` (checked without recursion).

    Examples
    --------
    >>> check_depth({"a": [[1]]}, "x.zarr", limit=3)
    >>> check_depth([[[[1]]]], "x.zarr", limit=3)
    Traceback (most recent call last):
    ...
    bigdecon.errors.InputError: x.zarr: metadata nested deeper than 3 levels: broken or hostile metadata
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (Mapping, list, tuple)):
            if depth >= limit:
                raise InputError(f"{where}: metadata nested deeper than {limit} levels: broken or hostile metadata")
            children = item.values() if isinstance(item, Mapping) else item
            stack.extend((child, depth + 1) for child in children)


def check_transform(scale: Mapping[str, float], translation: Mapping[str, float], where: str) -> None:
    """Pixel sizes must be finite and > 0, offsets finite (NaN would be copied into the output).

    Examples
    --------
    >>> check_transform({"z": 0.0, "y": 1.0}, {"z": 0.0, "y": 0.0}, "a.zarr")
    Traceback (most recent call last):
    ...
    bigdecon.errors.InputError: a.zarr: pixel size of axis z is 0; it must be a finite number > 0
    """
    for axis, value in scale.items():
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{where}: pixel size of axis {axis} is {value:g}; it must be a finite number > 0")
    for axis, value in translation.items():
        if not math.isfinite(value):
            raise InputError(f"{where}: translation of axis {axis} is {value:g}; it must be finite")


def normalize_unit(unit: Any) -> str | None:
    """Map a unit spelling to its NGFF (UDUNITS-2) name; ``None`` when unknown or empty."""
    if not isinstance(unit, str) or not unit.strip():
        return None
    u = unit.strip()
    if u.lower() in _NGFF_UNITS:
        return u.lower()
    return _UNIT_ALIASES.get(u) or _UNIT_ALIASES.get(u.lower())


def default_color(index: int, n_channels: int) -> str:
    """Display colour (``RRGGBB``) for channel ``index`` of ``n_channels``."""
    return "FFFFFF" if n_channels == 1 else _PALETTE[index % len(_PALETTE)]


def _vector(transforms: Any, kind: str, ndim: int, where: str = "") -> list[float] | None:
    """The ``kind`` ('scale'/'translation') vector of an NGFF transformation list."""
    for t in transforms if isinstance(transforms, list) else []:
        if isinstance(t, Mapping) and t.get("type") == kind and kind in t:
            raw = t[kind]
            if not isinstance(raw, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw
            ):
                raise InputError(f"{where}: {kind} {str(raw)[:80]} is not a list of numbers")
            values = [float(v) for v in raw]
            if len(values) == ndim:
                return values
    return None


def ome_attrs(attrs: Mapping[str, Any]) -> Mapping[str, Any]:
    """Where the NGFF keys are: ``attrs['ome']`` in 0.5, the attributes themselves before."""
    ome = attrs.get("ome")
    return ome if isinstance(ome, Mapping) else attrs


def parse_image_attrs(attrs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Read what bigdecon needs from the attributes of an NGFF image group.

    Parameters
    ----------
    attrs
        The group attributes: NGFF 0.5 keeps them under ``attrs['ome']``,
        0.4 and older at the top level.
    where
        The image path, for error messages.

    Returns
    -------
    dict
        ``version``, ``axes``, ``dataset`` (path of the first, full-resolution
        level), ``scale``, ``translation``, ``units`` and ``channels``.

    Raises
    ------
    InputError
        When there is no usable ``multiscales`` metadata.
    """
    check_depth(attrs, where)
    ome = ome_attrs(attrs)
    multiscales = ome.get("multiscales")
    if not isinstance(multiscales, list) or not multiscales or not isinstance(multiscales[0], Mapping):
        raise InputError(f"not an OME-Zarr image: {where} (no 'multiscales' metadata)")
    ms = multiscales[0]
    version = ome.get("version") or ms.get("version")
    datasets = ms.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], Mapping):
        raise InputError(f"not an OME-Zarr image: {where} ('multiscales' lists no datasets)")
    if not isinstance(datasets[0].get("path"), str):
        raise InputError(f"not an OME-Zarr image: {where} (its first dataset has no path)")

    raw_axes = ms.get("axes")
    if raw_axes is None:  # NGFF 0.1/0.2 had no axes: always 5-D tczyx
        raw_axes = list(AXES_ORDER)
    if not isinstance(raw_axes, list):
        raise InputError(f"not an OME-Zarr image: {where} ('axes' is not a list)")
    names = [a.get("name", "") if isinstance(a, Mapping) else a for a in raw_axes]
    axes = check_axes(names, where)
    units: dict[str, str] = {}
    for name, a in zip(axes, raw_axes):
        unit = normalize_unit(a.get("unit")) if isinstance(a, Mapping) else None
        if unit:
            units[name] = unit

    # Dataset transforms and the optional multiscale-wide ones compose: scales
    # multiply, translations are scaled then added.
    ndim = len(axes)
    level = datasets[0].get("coordinateTransformations")
    scale = _vector(level, "scale", ndim, where) or [1.0] * ndim
    trans = _vector(level, "translation", ndim, where) or [0.0] * ndim
    g_scale = _vector(ms.get("coordinateTransformations"), "scale", ndim, where)
    g_trans = _vector(ms.get("coordinateTransformations"), "translation", ndim, where)
    if g_scale:
        trans = [t * g for t, g in zip(trans, g_scale)]
        scale = [s * g for s, g in zip(scale, g_scale)]
    if g_trans:
        trans = [t + g for t, g in zip(trans, g_trans)]

    check_transform(dict(zip(axes, scale)), dict(zip(axes, trans)), where)
    omero = ome.get("omero") if isinstance(ome.get("omero"), Mapping) else attrs.get("omero")
    channels = []
    if isinstance(omero, Mapping) and isinstance(omero.get("channels"), list):
        channels = [dict(c) for c in omero["channels"] if isinstance(c, Mapping)]
    return {
        "version": str(version) if version is not None else None,
        "axes": axes,
        "dataset": str(datasets[0]["path"]),
        "scale": dict(zip(axes, scale)),
        "translation": dict(zip(axes, trans)),
        "units": units,
        "channels": channels,
    }


def multiscales_metadata(
    *,
    axes: tuple[str, ...],
    scale: Mapping[str, float],
    translation: Mapping[str, float],
    units: Mapping[str, str],
    n_levels: int,
    version: str,
    name: str = "bigdecon",
) -> dict[str, Any]:
    """The ``multiscales[0]`` entry for a pyramid ``s0 .. s{n_levels-1}``.

    Each level halves y and x, so its pixel size doubles there and its first
    pixel centre moves by half the extra size (mean downsampling).
    """
    axes_meta = []
    for a in axes:
        entry = {"name": a, "type": AXIS_TYPES[a]}
        if a in units and a != "c":
            entry["unit"] = units[a]
        axes_meta.append(entry)
    datasets = []
    for level in range(n_levels):
        f = 2**level
        s, t = [], []
        for a in axes:
            s0 = float(scale.get(a, 1.0))
            t0 = float(translation.get(a, 0.0))
            if a in ("y", "x"):
                s.append(s0 * f)
                t.append(t0 + (f - 1) * s0 / 2.0)
            else:
                s.append(s0)
                t.append(t0)
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": s}]
        if any(v != 0.0 for v in t):
            transforms.append({"type": "translation", "translation": t})
        datasets.append({"path": f"s{level}", "coordinateTransformations": transforms})
    ms: dict[str, Any] = {
        "name": name,
        "axes": axes_meta,
        "datasets": datasets,
        "type": "mean",
        "metadata": {"description": "2x2 mean in y and x per level"},
    }
    if version == "0.4":
        ms["version"] = "0.4"
    return ms


def omero_metadata(
    channels: Sequence[Mapping[str, Any]], windows: Sequence[tuple[float, float, float, float]], version: str
) -> dict[str, Any]:
    """OMERO rendering metadata: the given channels with fresh display windows.

    Parameters
    ----------
    channels
        Channel dicts to keep (labels, colours...); missing fields get defaults.
    windows
        ``(min, max, start, end)`` per channel, from the output data.
    version
        NGFF version the metadata goes with.
    """
    n = len(windows)
    out = []
    for i, (lo, hi, start, end) in enumerate(windows):
        ch = dict(channels[i]) if i < len(channels) else {}
        color = str(ch.get("color", "")).lstrip("#").upper()
        if len(color) != 6 or any(c not in "0123456789ABCDEF" for c in color):
            color = default_color(i, n)
        ch.update(
            color=color,
            window={"min": lo, "max": hi, "start": start, "end": end},
        )
        ch.setdefault("label", f"Channel {i}")
        ch.setdefault("active", True)
        ch.setdefault("coefficient", 1.0)
        ch.setdefault("family", "linear")
        ch.setdefault("inverted", False)
        out.append(ch)
    omero: dict[str, Any] = {"channels": out, "rdefs": {"model": "greyscale" if n == 1 else "color"}}
    if version == "0.4":
        omero["version"] = "0.4"
    return omero


def display_window(values: np.ndarray, low: float = 0.1, high: float = 99.9) -> tuple[float, float, float, float]:
    """``(min, max, start, end)`` for a display window from sampled values.

    ``start``/``end`` are the ``low``/``high`` percentiles so that a few hot
    pixels do not wash out the display; ``min``/``max`` the full finite range.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0, 0.0, 1.0
    lo, hi = float(v.min()), float(v.max())
    start, end = (float(p) for p in np.percentile(v, [low, high]))
    if not end > start:  # a flat image: keep the window non-empty
        end = start + (abs(start) * 1e-6 or 1.0)
        hi = max(hi, end)
    return _finite(lo), _finite(hi), _finite(start), _finite(end)


def _finite(v: float) -> float:
    # JSON has no inf/nan; NGFF readers choke on them.
    return v if math.isfinite(v) else 0.0
