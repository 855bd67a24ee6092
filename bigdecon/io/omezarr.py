"""OME-Zarr (NGFF 0.4 / 0.5) input and resumable, block-parallel output.

The writer is built for runs that write blocks themselves from many Dask
worker processes, maybe on other machines, and that must survive a SIGKILL:

* every write covers whole zarr chunks (or whole shards), so two workers never
  read-modify-write the same stored object (see dask issue 12583);
* which blocks are written is the run's business: the out-of-core passes
  record each finished task in their ledger
  (:class:`bigdecon.passes.ledger.Ledger`, in the output's
  ``.bigdecon-work`` folder) after :func:`write_block` returned;
* until :meth:`OmeZarrWriter.finalize` the group carries no ``multiscales``
  (its ``bigdecon`` attributes say ``running``), so no viewer or reader
  mistakes a half-written output for a finished image, and ``--resume`` can
  recognise and continue it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import zarr

from bigdecon.errors import InputError
from bigdecon.io._meta import (
    ImageSource,
    check_axes,
    check_declared,
    display_window,
    multiscales_metadata,
    normalize_unit,
    ome_attrs,
    omero_metadata,
    parse_image_attrs,
    task_chunks,
)
from bigdecon.io.paths import join, normalize, read_bytes, redact, same_or_nested
from bigdecon.io.safety import LEASE_NAME, WORK_NAME, listing, remove_owned
from bigdecon.params import check_output_dtype

__all__ = [
    "OmeZarrWriter",
    "aligned_chunks",
    "cast_block",
    "check_output_path",
    "open_omezarr",
    "write_block",
    "write_dask",
    "write_image",
]

_BIGDECON = "bigdecon"


# --------------------------------------------------------------------------- reading


def open_omezarr(path: str | os.PathLike) -> ImageSource:
    """Open the full-resolution level of an OME-Zarr image lazily.

    Parameters
    ----------
    path
        Local path or fsspec URL of an NGFF 0.4 (zarr v2) or 0.5 (zarr v3)
        image group, or of a bioformats2raw layout (its image ``0`` is opened).

    Returns
    -------
    ImageSource
        ``data`` is a Dask array chunked as the zarr chunks.

    Raises
    ------
    InputError
        Missing path, not zarr, a plain array, no ``multiscales``, an unfinished
        bigdecon output, or axes other than t, c, z, y, x.
    """
    p, local = normalize(path)
    if local:
        if not os.path.exists(p):
            raise InputError(f"input not found: {p}")
        if not os.path.isdir(p):
            raise InputError(f"not an OME-Zarr image: {p} (a file, not a zarr directory)")
    try:
        node = zarr.open(p, mode="r")
    except FileNotFoundError as e:
        if local:
            raise InputError(f"not an OME-Zarr image: {p} (no zarr metadata)") from e
        raise InputError(f"input not found: {p}") from e
    except (zarr.errors.NodeNotFoundError, KeyError) as e:
        raise InputError(f"not an OME-Zarr image: {p} (no zarr metadata)") from e
    except RecursionError:
        raise InputError(f"cannot read input: {p} (its zarr metadata is nested too deeply)") from None
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"cannot read input: {p} ({_one_line(e)})") from e
    if isinstance(node, zarr.Array):
        raise InputError(f"not an OME-Zarr image: {p} (a plain zarr array without OME metadata)")
    return _image_from_group(node, p, nested=False)


def _image_from_group(group: zarr.Group, where: str, *, nested: bool) -> ImageSource:
    attrs = group.attrs.asdict()
    ome = ome_attrs(attrs)
    if "multiscales" not in ome:
        info = attrs.get(_BIGDECON)
        if isinstance(info, Mapping) and info.get("status") != "complete":
            raise InputError(
                f"incomplete bigdecon output: {where} (status {info.get('status')!r}: the run was "
                "interrupted or is still going; continue it with --resume)"
            )
        if not nested and ("bioformats2raw.layout" in ome or _has_group(group, "0")):
            child = group["0"]
            if isinstance(child, zarr.Group):
                return _image_from_group(child, join(where, "0"), nested=True)
        if "plate" in ome or "well" in ome:
            raise InputError(f"not an OME-Zarr image: {where} (an HCS plate or well; open one of its images)")
        raise InputError(f"not an OME-Zarr image: {where} (no 'multiscales' metadata)")

    meta = parse_image_attrs(attrs, where)
    try:
        arr = group[meta["dataset"]]
    except KeyError as e:
        raise InputError(f"broken OME-Zarr image: {where} (level {meta['dataset']!r} is missing)") from e
    except RecursionError:
        raise InputError(
            f"broken OME-Zarr image: {where} (level {meta['dataset']!r}: metadata nested too deeply)"
        ) from None
    except (ValueError, TypeError) as e:  # zarr's checks of the array metadata (negative chunks, ...)
        raise InputError(f"broken OME-Zarr image: {where} (level {meta['dataset']!r}: {_one_line(e)})") from e
    if not isinstance(arr, zarr.Array) or arr.ndim != len(meta["axes"]):
        raise InputError(
            f"broken OME-Zarr image: {where} (level {meta['dataset']!r} does not have "
            f"{len(meta['axes'])} dimensions {''.join(meta['axes'])})"
        )
    unit = tuple(int(c) for c in (getattr(arr, "shards", None) or arr.chunks))
    check_declared(arr.shape, meta["axes"], unit, where)
    return ImageSource(
        data=da.from_zarr(arr, chunks=task_chunks(arr.shape, unit, arr.dtype.itemsize)),
        axes=meta["axes"],
        scale=meta["scale"],
        units=meta["units"],
        translation=meta["translation"],
        channels=meta["channels"],
        ngff_version=meta["version"],
        path=where,
        attrs=attrs,
        level=("zarr", join(where, meta["dataset"])),
        stored_chunks=unit,
        array=arr,
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _has_group(group: zarr.Group, name: str) -> bool:
    try:
        return isinstance(group[name], zarr.Group)
    except KeyError:
        return False


# --------------------------------------------------------------------------- block I/O


def cast_block(block: np.ndarray, dtype: Any) -> np.ndarray:
    """Convert a block to the output dtype without wrap-around.

    Integer targets are rounded to nearest and clipped to the dtype's range
    (70000.0 -> 65535 and -3 -> 0 for uint16); NaN becomes 0. Float targets
    are a plain ``astype``.

    Parameters
    ----------
    block
        Data in any numeric dtype.
    dtype
        Target dtype.
    """
    dt = np.dtype(dtype)
    block = np.asarray(block)
    if dt.kind not in "iu":
        return block.astype(dt, copy=False)
    info = np.iinfo(dt)
    if block.dtype.kind in "iub":
        src = np.iinfo(block.dtype) if block.dtype.kind != "b" else np.iinfo(np.uint8)
        lo, hi = max(info.min, src.min), min(info.max, src.max)
        return np.clip(block, lo, hi).astype(dt)
    # float32 holds every integer up to 2**24 exactly, so 8- and 16-bit targets
    # round and clip in float32 (no float64 copy of the block); wider ones need
    # float64, which holds every value up to 2**53. The 64-bit maxima are not
    # representable: clip just below them instead of overflowing on the cast.
    work_dtype = np.float32 if dt.itemsize <= 2 and block.dtype.itemsize <= 4 else np.float64
    hi_f = float(info.max)
    if int(hi_f) > info.max:
        hi_f = float(np.nextafter(hi_f, -np.inf))
    out = np.array(block, dtype=work_dtype)
    np.nan_to_num(out, copy=False, nan=0.0, posinf=hi_f, neginf=float(info.min))
    np.rint(out, out=out)
    np.clip(out, float(info.min), hi_f, out=out)
    return out.astype(dt)


def _write_unit(arr: zarr.Array) -> tuple[int, ...]:
    """The smallest region that may be written without racing other writers."""
    shards = getattr(arr, "shards", None)
    return tuple(int(s) for s in (shards or arr.chunks))


def _check_region(region: Sequence[slice], shape: Sequence[int], unit: Sequence[int]) -> tuple[slice, ...]:
    if len(region) != len(shape):
        raise ValueError(f"region has {len(region)} slices for a {len(shape)}-D array")
    out = []
    for ax, (s, n, u) in enumerate(zip(region, shape, unit)):
        if not isinstance(s, slice) or s.step not in (None, 1):
            raise ValueError(f"region axis {ax}: need a step-1 slice, got {s!r}")
        start, stop, _ = s.indices(n)
        if start % u or (stop % u and stop != n) or stop <= start:
            raise ValueError(
                f"region axis {ax} [{start}:{stop}] is not aligned to the stored chunks/shards "
                f"of {u} (array length {n}): unaligned parallel writes can corrupt data"
            )
        out.append(slice(start, stop))
    return tuple(out)


def _open_level(path: str | os.PathLike, level: str = "s0", mode: str = "r+") -> zarr.Array:
    root, _ = normalize(path)
    # Opened afresh on every call: cheap next to a block's compute, and it never
    # hands out a stale array after an --overwrite in the same process.
    return zarr.open_array(join(root, level), mode=mode)


def write_block(path: str | os.PathLike, region: Sequence[slice], block: Any, *, level: str = "s0") -> None:
    """Write one block of an output created by :class:`OmeZarrWriter`.

    Safe to call from any worker process: it only needs the output path. The
    region must start on a chunk (or shard) boundary and end on one or at the
    array's end, so no two writers ever share a stored object.

    Parameters
    ----------
    path
        The output root (not the level).
    region
        One slice per axis.
    block
        NumPy (or CuPy) data of the region's shape; cast with :func:`cast_block`
        when its dtype differs from the output's.
    level
        Array inside the output group (``'s0'`` for the pipeline).
    """
    from bigdecon._backend import to_numpy

    arr = _open_level(path, level)
    reg = _check_region(region, arr.shape, _write_unit(arr))
    data = np.asarray(to_numpy(block))
    expected = tuple(s.stop - s.start for s in reg)
    if data.shape != expected:
        raise ValueError(f"block shape {data.shape} does not match region shape {expected}")
    if data.dtype != arr.dtype:
        data = cast_block(data, arr.dtype)
    arr[reg] = data


def aligned_chunks(shape: Sequence[int], chunks: Sequence[int], unit: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Dask chunks near ``chunks`` whose every block starts on a ``unit`` boundary.

    Each axis uses the largest multiple of ``unit`` not above the requested
    size (at least one unit), so blocks map onto whole stored chunks/shards.
    """
    out = []
    for n, c, u in zip(shape, chunks, unit):
        size = max(u, (int(c) // u) * u)
        full, rest = divmod(int(n), size)
        out.append((size,) * full + ((rest,) if rest else ()) or (0,))
    return tuple(out)


def _blocks_aligned(chunks: Sequence[Sequence[int]], unit: Sequence[int]) -> bool:
    for axis_chunks, u in zip(chunks, unit):
        if any(c % u for c in axis_chunks[:-1]):
            return False
    return True


def _store_task(block: np.ndarray, *, path: str, level: str, block_info: Any = None) -> np.ndarray:
    info = block_info[0]
    region = tuple(slice(a, b) for a, b in info["array-location"])
    write_block(path, region, block, level=level)
    return np.ones((1,) * block.ndim, dtype=bool)


def write_dask(
    path: str | os.PathLike,
    array: da.Array,
    *,
    level: str = "s0",
    compute: bool = True,
) -> da.Array | None:
    """Write a Dask array into an output level, one aligned block per task.

    The array is first rechunked so every block covers whole stored chunks
    (or shards): ``da.to_zarr`` with misaligned chunks can silently lose data
    when tasks race on a shared chunk (dask issue 12583).

    Parameters
    ----------
    path
        Output root.
    array
        Data of the level's shape; any dtype (integer outputs are cast with
        :func:`cast_block`).
    level
        Array inside the group.
    compute
        Run now (on the current Dask scheduler); otherwise return the lazy
        array of per-block flags.
    """
    root, _ = normalize(path)
    arr = _open_level(root, level, mode="r")
    if tuple(array.shape) != tuple(arr.shape):
        raise ValueError(f"array shape {array.shape} does not match {level} shape {arr.shape}")
    unit = _write_unit(arr)
    if not _blocks_aligned(array.chunks, unit):
        array = array.rechunk(aligned_chunks(array.shape, [c[0] for c in array.chunks], unit))
    flags = da.map_blocks(
        _store_task,
        array,
        path=root,
        level=level,
        dtype=bool,
        chunks=tuple((1,) * len(c) for c in array.chunks),
    )
    if not compute:
        return flags
    flags.compute()
    return None


# --------------------------------------------------------------------------- output paths


def check_output_path(input_path: str | os.PathLike, output_path: str | os.PathLike) -> None:
    """Refuse an output that is, lies inside, or contains the input.

    Both paths are compared as the places they name (:func:`bigdecon.io.paths.canonical`):
    ``local://``, ``file://``, cache-wrapped URLs, symlinks and protocol aliases
    (``s3a``/``s3``, ``gcs``/``gs``) do not hide the input.

    Raises
    ------
    InputError
        When writing (or ``--overwrite``-deleting) the output would touch the input.
    """
    i, o = redact(os.fspath(input_path)), redact(os.fspath(output_path))
    how = same_or_nested(input_path, output_path)
    if how == "same":
        raise InputError(f"output path is the input path: {o} names the same place as {i}")
    if how == "inside":
        raise InputError(f"output path {o} is inside the input {i}")
    if how == "contains":
        raise InputError(f"input {i} is inside the output path {o}: writing there would destroy it")


def _json(value: Any) -> Any:
    """``value`` as it reads back from zarr attributes (tuples -> lists, paths -> str)."""
    return json.loads(json.dumps(value, default=str))


# --------------------------------------------------------------------------- writer


class OmeZarrWriter:
    """Create (or resume) an OME-Zarr output that workers fill block by block.

    Parameters
    ----------
    path
        Output location: a local path or an fsspec URL.
    shape, axes, chunks
        Level-0 shape, axis names (subset of t, c, z, y, x) and zarr chunk shape.
    dtype
        Output dtype; integer dtypes get rounded and clipped by :func:`cast_block`.
    scale, units, translation
        Level-0 pixel size, units and origin per axis (defaults 1.0, none, 0.0).
    channels
        OMERO channel dicts to keep (labels, colours), one per channel.
    ngff_version
        ``'0.5'`` (zarr v3) or ``'0.4'`` (zarr v2).
    overwrite
        Delete an existing output first (only an OME-Zarr/bigdecon output or an empty folder).
    resume
        Reopen an unfinished output with the same shape, chunks, dtype and ``run_config``.
    run_config
        JSON-able run parameters, stored now and compared on resume.
    shards
        Zarr v3 shard shape (multiples of ``chunks``); block writes then have to
        cover whole shards.

    Notes
    -----
    The object holds only plain values, so it pickles cheaply to workers; the
    module function :func:`write_block` needs just the path.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        shape: Sequence[int],
        axes: Sequence[str],
        chunks: Sequence[int],
        dtype: Any = "float32",
        scale: Mapping[str, float] | None = None,
        units: Mapping[str, str] | None = None,
        translation: Mapping[str, float] | None = None,
        channels: Sequence[Mapping[str, Any]] | None = None,
        ngff_version: str = "0.5",
        overwrite: bool = False,
        resume: bool = False,
        run_config: dict | None = None,
        shards: Sequence[int] | None = None,
    ) -> None:
        self.path, self._local = normalize(path)
        self.axes = check_axes(axes, self.path)
        self.shape = tuple(int(n) for n in shape)
        self.chunks = tuple(int(c) for c in chunks)
        self.shards = tuple(int(s) for s in shards) if shards is not None else None
        self.dtype = np.dtype(dtype)
        self.ngff_version = str(ngff_version)
        self.scale = {a: float((scale or {}).get(a, 1.0)) for a in self.axes}
        self.units = {a: u for a in self.axes if (u := normalize_unit((units or {}).get(a)))}
        self.translation = {a: float((translation or {}).get(a, 0.0)) for a in self.axes}
        self.channels = [dict(c) for c in (channels or [])]
        self.run_config = _json(run_config)
        self._validate()
        if overwrite and resume:
            raise InputError("--overwrite and --resume cannot be combined")
        if resume:
            self._reopen()
            return
        if self._exists_nonempty():
            if not overwrite:
                raise InputError(
                    f"output exists: {self.path} (use --overwrite to replace it or --resume to continue it)"
                )
            self._remove()
        self._create()

    # ------------------------------------------------------------------ setup

    def _validate(self) -> None:
        nd = len(self.axes)
        if len(self.shape) != nd or len(self.chunks) != nd:
            raise InputError(
                f"output shape {self.shape} and chunks {self.chunks} need one entry per axis ({''.join(self.axes)})"
            )
        if any(n < 1 for n in self.shape) or any(c < 1 for c in self.chunks):
            raise InputError(f"output shape {self.shape} and chunks {self.chunks} must be positive")
        if self.ngff_version not in ("0.4", "0.5"):
            raise InputError(f"unsupported NGFF version {self.ngff_version!r}: use 0.4 or 0.5")
        check_output_dtype(self.dtype)  # the one rule of bigdecon.params: float32, float64 or integers
        if self.shards is not None:
            if self.ngff_version == "0.4":
                raise InputError("shards need NGFF 0.5 (zarr v3); NGFF 0.4 has no sharding")
            if len(self.shards) != nd or any(s < c or s % c for s, c in zip(self.shards, self.chunks)):
                raise InputError(f"shards {self.shards} must be whole multiples of chunks {self.chunks}")
        n_channels = self.shape[self.axes.index("c")] if "c" in self.axes else 1
        if self.channels and len(self.channels) != n_channels:
            raise InputError(f"got {len(self.channels)} channel descriptions for {n_channels} channels")

    def _exists_nonempty(self) -> bool:
        # The run's own lease (taken before the writer) does not make a folder an existing output.
        return bool([n for n in listing(self.path) or [] if n != LEASE_NAME])

    def _stored_info(self) -> tuple[zarr.Group, dict] | None:
        """The existing group and its attributes, or ``None`` when it is not zarr."""
        try:
            node = zarr.open_group(self.path, mode="r")
        except (OSError, ValueError, KeyError):  # no group metadata here (zarr's not-found errors are ValueErrors)
            return None
        return node, node.attrs.asdict()

    def _remove(self) -> None:
        remove_owned(self.path)  # only what bigdecon wrote, or a one-line refusal

    def _layout(self) -> dict[str, Any]:
        return _json(
            {
                "axes": list(self.axes),
                "ngff_version": self.ngff_version,
                "scale": self.scale,
                "units": self.units,
                "translation": self.translation,
                "channels": self.channels,
            }
        )

    def _array_kwargs(self, shape: Sequence[int], chunks: Sequence[int], shards: Sequence[int] | None) -> dict:
        # zarr's default codec (zstd), kept on purpose: byte shuffle made a run's float32 output
        # 3-8% larger (benchmarks/README.md), and every zarr reader decodes zstd.
        kw: dict[str, Any] = dict(shape=tuple(shape), chunks=tuple(chunks), dtype=self.dtype, fill_value=0)
        if self.ngff_version == "0.5":
            kw["dimension_names"] = list(self.axes)
            if shards is not None:
                kw["shards"] = tuple(shards)
        else:
            # NGFF 0.4 requires '/'-separated chunk keys.
            kw["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
        return kw

    def _create(self) -> None:
        try:
            if self._local:
                os.makedirs(self.path, exist_ok=True)
            # The 'running' marker is written with the group itself, so there is
            # never a group here that a later --resume cannot recognise.
            # create_group, not mode "w": that would wipe the folder, the run's lease with it.
            group = zarr.create_group(
                self.path,
                zarr_format=3 if self.ngff_version == "0.5" else 2,
                attributes={_BIGDECON: {"status": "running", "config": self.run_config, "layout": self._layout()}},
            )
            group.create_array(name="s0", overwrite=True, **self._array_kwargs(self.shape, self.chunks, self.shards))
        except OSError as e:
            raise InputError(f"cannot write output: {self.path} ({e.strerror or e})") from e

    def _reopen(self) -> None:
        if not self._exists_nonempty():
            raise InputError(f"nothing to resume: {self.path} does not exist")
        found = self._stored_info()
        info = found[1].get(_BIGDECON) if found else None
        if found is None and read_bytes(join(self.path, WORK_NAME, "stamp.json")) is not None:
            raise InputError(
                f"cannot resume {redact(self.path)}: its root metadata is missing (an interrupted --overwrite?); "
                "start again with --overwrite"
            )
        if found is None or not isinstance(info, Mapping):
            raise InputError(f"nothing to resume: {redact(self.path)} is not a bigdecon output")
        if info.get("status") == "complete":
            raise InputError(f"nothing to resume: {self.path} is already complete")
        try:
            arr = found[0]["s0"]
        except KeyError:
            arr = None
        if not isinstance(arr, zarr.Array):
            raise InputError(f"cannot resume {self.path}: it has no level s0 (start again with --overwrite)")
        stored_version = "0.5" if arr.metadata.zarr_format == 3 else "0.4"
        layout = info.get("layout") or {}
        stored_shards = getattr(arr, "shards", None)
        checks = [
            ("NGFF version", stored_version, self.ngff_version),
            ("axes", tuple(layout.get("axes", self.axes)), self.axes),
            ("shape", tuple(arr.shape), self.shape),
            ("chunks", tuple(arr.chunks), self.chunks),
            ("shards", tuple(stored_shards) if stored_shards else None, self.shards),
            ("dtype", str(arr.dtype), str(self.dtype)),
            ("run configuration", info.get("config"), self.run_config),
        ]
        for what, stored, wanted in checks:
            if stored != wanted:
                detail = (
                    _differences(stored, wanted)
                    if isinstance(stored, Mapping) and isinstance(wanted, Mapping)
                    else (f"stored {stored}, requested {wanted}")
                )
                raise InputError(f"cannot resume {self.path}: {what} differ ({detail}); use --overwrite to start again")

    # ------------------------------------------------------------------ blocks

    @property
    def level0_path(self) -> str:
        """Path (or URL) of the level-0 array."""
        return join(self.path, "s0")

    @property
    def block_shape(self) -> tuple[int, ...]:
        """The write unit: shards if set, else chunks. Block regions must align to it."""
        return self.shards or self.chunks

    def open_level0(self, mode: str = "r+") -> zarr.Array:
        """Open the level-0 zarr array (in any process)."""
        return _open_level(self.path, "s0", mode=mode)

    def write_block(self, region: Sequence[slice], block: Any) -> None:
        """Write one aligned block; see :func:`write_block`."""
        write_block(self.path, region, block)

    # ------------------------------------------------------------------ finalize

    def finalize(
        self,
        *,
        attrs: dict | None = None,
        pyramid: bool = True,
        min_size: int = 256,
        max_levels: int = 5,
    ) -> None:
        """Build the pyramid, write the NGFF metadata and mark the output complete.

        Parameters
        ----------
        attrs
            Extra JSON-able entries for ``attrs['bigdecon']`` (parameters, version).
        pyramid
            Add levels ``s1, s2...`` by 2x2 mean downsampling in y and x.
        min_size
            Stop before a level whose y or x would fall below this size.
        max_levels
            Most levels in all, ``s0`` included.

        Notes
        -----
        Levels are computed with the current Dask scheduler, one aligned block
        per task. The status turns ``complete`` last: a crash in here leaves a
        'running' output that a --resume can finalize again (the passes remove
        their work folder only after this returned).
        """
        group = zarr.open_group(self.path, mode="r+")
        level0 = group["s0"]
        assert isinstance(level0, zarr.Array)  # made by _create, checked by _reopen
        levels: list[zarr.Array] = [level0]
        if pyramid:
            yi, xi = self.axes.index("y"), self.axes.index("x")
            while len(levels) < max_levels:
                prev = levels[-1]
                if min(prev.shape[yi], prev.shape[xi]) < 2 * min_size:
                    break
                levels.append(self._downsample_level(group, prev, len(levels)))
        # Drop levels a previous, larger pyramid may have left behind (looked up
        # by name: listing the group would trip over a run's .bigdecon-work folder).
        for index in range(len(levels), len(levels) + 32):
            try:
                group[f"s{index}"]
            except KeyError:
                break
            del group[f"s{index}"]

        windows = _channel_windows(levels[-1], self.axes)
        ms = multiscales_metadata(
            axes=self.axes,
            scale=self.scale,
            translation=self.translation,
            units=self.units,
            n_levels=len(levels),
            version=self.ngff_version,
        )
        omero = omero_metadata(self.channels, windows, self.ngff_version)
        done_info: dict[str, Any] = {"status": "complete", "config": self.run_config, **_json(attrs or {})}
        if self.ngff_version == "0.5":
            new_attrs: dict[str, Any] = {
                "ome": {"version": "0.5", "multiscales": [ms], "omero": omero},
                _BIGDECON: done_info,
            }
        else:
            new_attrs = {"multiscales": [ms], "omero": omero, _BIGDECON: done_info}
        group.attrs.put(new_attrs)

    def _downsample_level(self, group: zarr.Group, src: zarr.Array, index: int) -> zarr.Array:
        yx = tuple(i for i, a in enumerate(self.axes) if a in ("y", "x"))
        shape = tuple(-(-n // 2) if i in yx else n for i, n in enumerate(src.shape))
        chunks = tuple(min(c, n) for c, n in zip(self.chunks, shape))
        shards = None
        if self.shards is not None:
            # Shards stay whole multiples of the chunks but no larger than needed.
            shards = tuple(min(s, -(-n // c) * c) for s, n, c in zip(self.shards, shape, chunks))
        dst = group.create_array(name=f"s{index}", overwrite=True, **self._array_kwargs(shape, chunks, shards))
        unit = _write_unit(dst)
        # Each input block is exactly twice an output write unit in y and x, so
        # every task produces one whole stored chunk/shard of the new level.
        in_chunks = tuple(2 * u if i in yx else u for i, u in enumerate(unit))
        source = da.from_zarr(src, chunks=in_chunks)
        out_chunks = tuple(tuple(-(-c // 2) for c in cs) if i in yx else cs for i, cs in enumerate(source.chunks))
        down = source.map_blocks(_mean2, yx=yx, dtype=dst.dtype, chunks=out_chunks)
        write_dask(self.path, down, level=f"s{index}")
        return zarr.open_array(join(self.path, f"s{index}"), mode="r")


def _differences(stored: Mapping, wanted: Mapping, prefix: str = "") -> str:
    """The keys two nested dicts disagree on, e.g. ``params.fidelity: stored 150, requested 120``."""
    out = []
    for key in sorted(set(stored) | set(wanted), key=str):
        a, b = stored.get(key), wanted.get(key)
        if a == b:
            continue
        name = f"{prefix}{key}"
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.append(_differences(a, b, prefix=f"{name}."))
        else:
            out.append(f"{name}: stored {a!r}, requested {b!r}")
    return "; ".join(out)


def _mean2(block: np.ndarray, *, yx: tuple[int, ...]) -> np.ndarray:
    """2x2 mean over the ``yx`` axes; an odd edge repeats its last row/column."""
    work = block.astype(np.float64 if block.dtype == np.float64 else np.float32)
    pad = [(0, n % 2 if i in yx else 0) for i, n in enumerate(work.shape)]
    if any(p[1] for p in pad):
        work = np.pad(work, pad, mode="edge")
    shape: list[int] = []
    for i, n in enumerate(work.shape):
        shape.extend((n // 2, 2) if i in yx else (n,))
    pair_axes = tuple(i + k + 1 for k, i in enumerate(sorted(yx)))
    out = work.reshape(shape).mean(axis=pair_axes)
    return cast_block(out, block.dtype)


def _channel_windows(
    arr: zarr.Array, axes: tuple[str, ...], budget: int = 1 << 24
) -> list[tuple[float, float, float, float]]:
    """Display window per channel from (a sample of) the lowest-resolution level."""
    shape = arr.shape
    steps = [1] * len(axes)
    per_channel = math.prod(n for a, n in zip(axes, shape) if a != "c")
    factor = per_channel / budget
    # Thin out t then z (never y/x) until one channel's sample fits the budget.
    for a in ("t", "z"):
        if factor > 1 and a in axes:
            i = axes.index(a)
            steps[i] = min(shape[i], math.ceil(factor))
            factor /= steps[i]
    n_channels = shape[axes.index("c")] if "c" in axes else 1
    windows = []
    for ch in range(n_channels):
        key = tuple(ch if a == "c" else slice(None, None, steps[i]) for i, a in enumerate(axes))
        windows.append(display_window(np.asarray(arr[key])))
    return windows


def write_image(
    path: str | os.PathLike,
    array: Any,
    axes: str | Sequence[str],
    *,
    scale: Mapping[str, float] | None = None,
    units: Mapping[str, str] | None = None,
    chunks: Sequence[int] | None = None,
    channels: Sequence[Mapping[str, Any]] | None = None,
    ngff_version: str = "0.5",
    overwrite: bool = False,
    skew_angle: float | None = None,
    skew_axis: str = "x",
) -> str:
    """Write an in-memory array as a finished OME-Zarr image (pyramid included).

    Parameters
    ----------
    path
        Output location (local path or fsspec URL).
    array
        The pixels, any real dtype, one axis per entry of ``axes``.
    axes
        Axis names, e.g. ``"tyx"`` or ``("c", "z", "y", "x")``.
    scale, units
        Pixel size and unit per axis (e.g. ``{"y": 0.065}``, ``{"y": "micrometer"}``).
    chunks
        Zarr chunk shape; default 1 along t and c, up to 32 along z, 512 in y/x.
    channels
        OMERO channel dicts (``label``, ``color``).
    ngff_version
        ``"0.5"`` (zarr v3, default) or ``"0.4"`` (zarr v2).
    overwrite
        Replace an existing image.
    skew_angle, skew_axis
        A stage-scanned stack stored skewed: its angle and axis, kept in the
        attributes (``bigdecon.skew``), where runs read them (docs/deskew.md).

    Returns
    -------
    str
        The path written (absolute for local paths).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from bigdecon.io import open_image, write_image
    >>> path = write_image(os.path.join(tempfile.mkdtemp(), "a.ome.zarr"), np.ones((3, 64, 64), np.uint16), "zyx")
    >>> open_image(path).axes
    ('z', 'y', 'x')
    """
    array = np.asarray(array)
    axes = tuple(axes)
    if chunks is None:
        limits = {"t": 1, "c": 1, "z": 32, "y": 512, "x": 512}
        chunks = tuple(min(n, limits.get(a, n)) for a, n in zip(axes, array.shape))
    writer = OmeZarrWriter(
        path,
        shape=array.shape,
        axes=axes,
        chunks=chunks,
        dtype=str(array.dtype),
        scale=scale,
        units=units,
        channels=channels,
        ngff_version=ngff_version,
        overwrite=overwrite,
    )
    write_block(writer.path, tuple(slice(None) for _ in array.shape), array)
    writer.finalize(attrs={"skew": {"angle": float(skew_angle), "axis": skew_axis}} if skew_angle else None)
    return writer.path
