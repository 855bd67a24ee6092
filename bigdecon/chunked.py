"""The Dask layer: sparse deconvolution of data far larger than memory.

The method has three kinds of steps, and each is chunked the way its reach allows:

* steps 1-3 (scale, wavelet background, up-sampling) and steps 5-6
  (Richardson-Lucy or Landweber, plane by plane as published, or volume by
  volume with a 3-D PSF) run on **whole planes** (whole volumes): the
  background reaches ~1,400 px and the accelerated Richardson-Lucy's alpha is
  a sum over the plane, so any split in y/x would change the result;
* step 4 (sparse Hessian, 100 split-Bregman iterations, the expensive part) runs
  on **blocks with a halo** in k (t or z), y and x, cut from the whole data set
  and clipped at its outer faces, where the solver's own mirror boundary
  applies. Only the block's interior is kept.

Global statistics (the raw maximum and mean per channel, the maximum after the
background/up-sampling, the maximum after step 4) are reductions over the
whole data set, computed once and passed to every block: a block never
normalises itself.

Two drivers share the block functions:

* :func:`sparse_deconvolve_dask` builds a lazy Dask array (``dask.array`` in,
  ``dask.array`` out) for data that fits in the cluster's memory;
* :func:`deconvolve` runs OME-Zarr/TIFF to OME-Zarr out of core: each pass is
  one task per output block that reads its own halo straight from a store and
  writes exactly the chunks it owns, recording completion in a ledger, so the
  graph grows with the number of chunks, a worker's memory with the chunk
  size only, and a killed run resumes where it stopped.

Halo depth of step 4
--------------------
Measured on drifting filaments (see ``tests/test_chunked.py``): with the default
parameters a halo of 8 planes and 16 px makes the interior of a block equal to
the whole-array solution to float32 precision. The split-Bregman solve is a
short-range kernel whose reach grows as fidelity falls (the kernel of
``fidelity + |D|^4`` decays over ``(1/fidelity)^(1/4)`` pixels), so the default
depth is ``16 * (150 / fidelity)^(1/4)`` px in y and x and
``8 * (150 / fidelity)^(1/4) * (tcontinuity / 0.5)^(1/4)`` planes in k,
rounded up (in output pixels when up-sampling), and never more than the axis.
``depth=`` overrides it.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from . import __version__
from ._backend import get_xp
from .errors import InputError, ProcessingError
from .params import Params
from .pipeline import check_image, deconv_stage, is_coupled, output_psf, preprocess, sparse_stage

__all__ = ["deconvolve", "plan", "run_sizing", "sparse_deconvolve_dask", "default_depth", "Layout"]

# Bytes of working memory per voxel of a block, measured by benchmarks/bench_solvers.py
# (peak RSS / float32 input size): sparse Hessian ~13x, Richardson-Lucy on padded planes ~12x.
WORKSET_FACTOR = 14


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Layout:
    """How a data set's axes map onto independent solver problems.

    ``outer`` axes (channels, and time when there is also z) are independent;
    ``k`` is the third solver axis (z, or t for a time-lapse without z).
    """

    axes: tuple[str, ...]
    shape: tuple[int, ...]

    @property
    def k(self) -> int | None:
        if "z" in self.axes:
            return self.axes.index("z")
        if "t" in self.axes:
            return self.axes.index("t")
        return None

    @property
    def y(self) -> int:
        return self.axes.index("y")

    @property
    def x(self) -> int:
        return self.axes.index("x")

    @property
    def outer(self) -> tuple[int, ...]:
        inner = {self.k, self.y, self.x}
        return tuple(i for i in range(len(self.axes)) if i not in inner)

    @property
    def n_planes(self) -> int:
        return 1 if self.k is None else self.shape[self.k]

    def outer_indices(self):
        return itertools.product(*(range(self.shape[i]) for i in self.outer))

    def channel_of(self, outer_index: tuple[int, ...]) -> int:
        """The channel an outer index belongs to (0 without a c axis)."""
        if "c" not in self.axes:
            return 0
        return outer_index[self.outer.index(self.axes.index("c"))]

    @property
    def n_channels(self) -> int:
        return self.shape[self.axes.index("c")] if "c" in self.axes else 1


def _spans(n: int, size: int) -> list[tuple[int, int]]:
    """Chunk boundaries ``[(start, stop), ...]`` covering ``range(n)``."""
    size = max(1, min(int(size), n))
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def default_depth(params: Params, *, upsampled: bool | None = None) -> dict[str, int]:
    """Halo of the sparse-Hessian step per axis name (``k``, ``y``, ``x``), in output pixels."""
    reach = (150.0 / float(params.fidelity)) ** 0.25
    k_reach = reach * (max(float(params.tcontinuity), 1e-3) / 0.5) ** 0.25
    yx = math.ceil(16 * reach)
    return {"k": math.ceil(8 * k_reach), "y": yx, "x": yx}


def _output_shape(layout: Layout, params: Params) -> tuple[int, ...]:
    factor = 2 if params.up_sample else 1
    shape = list(layout.shape)
    shape[layout.y] *= factor
    shape[layout.x] *= factor
    return tuple(shape)


# --------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """Block grids of every pass, and what a worker needs for one task."""

    layout: Layout
    params: Params
    out_shape: tuple[int, ...]
    depth: dict[str, int]
    sparse_block: dict[str, int]  # k, y, x sizes of step-4 blocks (output pixels)
    plane_group: int  # planes per whole-plane task
    out_chunks: tuple[int, ...]
    coupled: bool
    needs_preprocess: bool
    volumetric: bool = False  # step 5 is 3-D: its tasks take whole volumes
    itemsize: int = 4
    extra: dict = field(default_factory=dict)

    # Blocks are dicts axis-position -> (start, stop) over the output grid.
    def _outer_regions(self):
        for idx in self.layout.outer_indices():
            yield {ax: (i, i + 1) for ax, i in zip(self.layout.outer, idx)}

    def plane_tasks(self, whole_volumes: bool = False) -> list[dict[int, tuple[int, int]]]:
        """Whole-plane tasks of ``plane_group`` planes (steps 1-3); whole volumes on request."""
        lay = self.layout
        tasks = []
        group = lay.n_planes if whole_volumes else self.plane_group
        for base in self._outer_regions():
            spans = [(0, 1)] if lay.k is None else _spans(lay.n_planes, group)
            for span in spans:
                region = dict(base)
                if lay.k is not None:
                    region[lay.k] = span
                region[lay.y] = (0, self.out_shape[lay.y])
                region[lay.x] = (0, self.out_shape[lay.x])
                tasks.append(region)
        return tasks

    def final_tasks(self) -> list[dict[int, tuple[int, int]]]:
        """Tasks of steps 5-6: whole planes, or whole volumes for a 3-D PSF."""
        return self.plane_tasks(whole_volumes=self.volumetric and self.params.deconvolves)

    def sparse_tasks(self) -> list[dict[int, tuple[int, int]]]:
        lay = self.layout
        tasks = []
        kspans = [(0, 1)] if lay.k is None else _spans(lay.n_planes, self.sparse_block["k"])
        for base in self._outer_regions():
            for ks, ys, xs in itertools.product(
                kspans,
                _spans(self.out_shape[lay.y], self.sparse_block["y"]),
                _spans(self.out_shape[lay.x], self.sparse_block["x"]),
            ):
                region = dict(base)
                if lay.k is not None:
                    region[lay.k] = ks
                region[lay.y], region[lay.x] = ys, xs
                tasks.append(region)
        return tasks

    def halo(self, region: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """The region grown by the step-4 halo, clipped at the data set's faces."""
        lay = self.layout
        grown = dict(region)
        for ax, name in ((lay.k, "k"), (lay.y, "y"), (lay.x, "x")):
            if ax is None:
                continue
            a, b = region[ax]
            grown[ax] = (max(0, a - self.depth[name]), min(self.out_shape[ax], b + self.depth[name]))
        return grown

    def summary(self) -> dict:
        lay = self.layout
        block = [
            self.sparse_block["k"] + 2 * self.depth["k"] if lay.k is not None else 1,
            self.sparse_block["y"] + 2 * self.depth["y"],
            self.sparse_block["x"] + 2 * self.depth["x"],
        ]
        if lay.k is not None:
            block[0] = min(block[0], lay.n_planes)
        block[1] = min(block[1], self.out_shape[lay.y])
        block[2] = min(block[2], self.out_shape[lay.x])
        plane_vox = self.out_shape[lay.y] * self.out_shape[lay.x]
        pad = 1 + 2 / 6  # the published one-sixth edge padding of step 5
        whole_volumes = self.volumetric and self.params.deconvolves
        final_planes = lay.n_planes + 2 * self.extra.get("psf_z", 0) if whole_volumes else self.plane_group
        plane_task = plane_vox * pad * pad * final_planes
        mem = WORKSET_FACTOR * 4 * max(math.prod(block) if self.params.sparse_iters else 0, plane_task)
        n_sparse = len(self.sparse_tasks()) if self.params.sparse_iters else 0
        n_plane = len(self.plane_tasks())
        n_final = len(self.final_tasks())
        return {
            "axes": "".join(lay.axes),
            "shape": list(lay.shape),
            "output_shape": list(self.out_shape),
            "solver_axes": ("k=" + lay.axes[lay.k] + ", " if lay.k is not None else "") + "y, x",
            "depth": dict(self.depth) if self.params.sparse_iters else {},
            "sparse_block": dict(self.sparse_block),
            "planes_per_task": self.plane_group,
            "chunks": list(self.out_chunks),
            "coupled_k": self.coupled,
            "n_tasks": n_sparse + n_final + (n_plane if self.needs_preprocess else 0),
            "memory_per_task_bytes": int(mem),
        }


def make_plan(
    layout: Layout,
    params: Params,
    *,
    chunks: dict[str, int] | Sequence[int] | None = None,
    depth: dict[str, int] | int | None = None,
    task_memory: int = 512 * 2**20,
    min_tasks: int = 1,
) -> Plan:
    """Choose block sizes, halo depths and output chunks for a data set.

    Without explicit ``chunks``, step-4 blocks are 32 planes x 256 x 256 px,
    halved (y/x first, not below 64 px; then k, not below the halo) until
    there are at least ``min_tasks`` of them, so every worker has work.
    """
    out_shape = _output_shape(layout, params)
    d = default_depth(params)
    if depth is not None:
        if isinstance(depth, dict):
            d.update(
                {
                    ("k" if a == _k_name(layout) else a): int(v)
                    for a, v in _solver_axes_only(layout, depth, "depth").items()
                }
            )
        else:
            d = {"k": int(depth), "y": int(depth), "x": int(depth)}
        if min(d.values()) < 0:
            raise InputError(f"depth must be >= 0, got {depth!r}")
    K, Y, X = layout.n_planes, out_shape[layout.y], out_shape[layout.x]
    d = {"k": min(d["k"], K), "y": min(d["y"], Y), "x": min(d["x"], X)}
    block = {"k": min(K, 32), "y": min(Y, 256), "x": min(X, 256)}
    n_outer = math.prod(layout.shape[i] for i in layout.outer)

    def block_bytes(b):
        return 4 * WORKSET_FACTOR * math.prod(min(n, b[a] + 2 * d[a]) for n, a in ((K, "k"), (Y, "y"), (X, "x")))

    if chunks is None:
        # A large memory budget (a GPU worker's card) takes larger blocks: less halo per voxel.
        while block_bytes({**block, "y": 2 * block["y"], "x": 2 * block["x"]}) <= task_memory and (
            block["y"] < Y or block["x"] < X
        ):
            block["y"], block["x"] = min(Y, 2 * block["y"]), min(X, 2 * block["x"])

    def n_blocks(b):
        return n_outer * math.prod(-(-n // b[a]) for n, a in ((K, "k"), (Y, "y"), (X, "x")))

    if chunks is None:
        while n_blocks(block) < min_tasks:
            if max(block["y"], block["x"]) > 64:
                axis = "y" if block["y"] >= block["x"] else "x"
                block[axis] = max(64, -(-block[axis] // 2))
            elif block["k"] > max(1, d["k"]):
                block["k"] = max(1, d["k"], -(-block["k"] // 2))
            else:
                break
    if chunks is not None:
        named = _named_chunks(layout, chunks)
        if isinstance(chunks, dict):
            named = _solver_axes_only(layout, named, "chunks")
        for name in ("y", "x"):
            if name in named:
                block[name] = named[name]
        if _k_name(layout) in named:
            block["k"] = named[_k_name(layout)]
        if min(block.values()) < 1:
            raise InputError(f"chunk sizes must be >= 1, got {chunks!r}")
        block = {"k": min(K, block["k"]), "y": min(Y, block["y"]), "x": min(X, block["x"])}
    # Planes per whole-plane task: enough to fill the task's memory, at most a k block.
    plane_bytes = 4 * Y * X * (1 + 2 / 6) ** 2 * WORKSET_FACTOR
    group = max(1, min(block["k"], int(task_memory // max(plane_bytes, 1))))
    if chunks is None:
        while group > 1 and n_outer * -(-K // group) < min_tasks:
            group = -(-group // 2)
    out_chunks = []
    for i in range(len(layout.axes)):
        if i in layout.outer:
            out_chunks.append(1)
        elif i == layout.k:
            out_chunks.append(group)
        else:
            out_chunks.append(min(out_shape[i], 512))
    return Plan(
        layout=layout,
        params=params,
        out_shape=out_shape,
        depth=d,
        sparse_block=block,
        plane_group=group,
        out_chunks=tuple(out_chunks),
        coupled=is_coupled(K, params) if layout.k is not None else False,
        needs_preprocess=bool(params.background or params.up_sample),
        volumetric=params.volumetric,
        extra={"psf_z": int(output_psf(params, 3).shape[0])} if params.volumetric and params.deconvolves else {},
    )


def _k_name(layout: Layout) -> str | None:
    """The name of the third solver axis (z, or t without z), None for single planes."""
    return layout.axes[layout.k] if layout.k is not None else None


def _solver_axes_only(layout: Layout, sizes: dict, what: str) -> dict:
    """Reject names that are not solver axes of this data set, with the reason."""
    allowed = [a for a in (_k_name(layout), "y", "x") if a]
    out = {}
    for name, value in sizes.items():
        name = str(name)
        if name == "k" and _k_name(layout):
            name = _k_name(layout)
        if name not in allowed:
            if name in layout.axes:
                why = (
                    "channels are processed one at a time" if name == "c" else f"each {name} is a separate problem here"
                )
                raise InputError(f"{what} along {name} cannot be set: {why} (solver axes: {', '.join(allowed)})")
            raise InputError(f"{what} names axis {name!r}, which the input ({''.join(layout.axes)}) does not have")
        out[name] = value
    return out


def _named_chunks(layout: Layout, chunks) -> dict[str, int]:
    if isinstance(chunks, dict):
        return {str(k): int(v) for k, v in chunks.items()}
    chunks = [int(c) for c in chunks]
    inner = [layout.axes[i] for i in (layout.k, layout.y, layout.x) if i is not None]
    if len(chunks) == len(layout.axes):
        return dict(zip(layout.axes, chunks))
    if len(chunks) == len(inner):
        return dict(zip(inner, chunks))
    raise InputError(f"chunks needs {len(inner)} values ({', '.join(inner)}) or one per axis, got {len(chunks)}")


# --------------------------------------------------------------------------- block functions


def _solver_view(block: np.ndarray, layout: Layout) -> np.ndarray:
    """Drop the (length-1) outer axes of a block: ``(k, y, x)`` or ``(y, x)``."""
    index = tuple(0 if i in layout.outer else slice(None) for i in range(block.ndim))
    return block[index]


def _embed(block: np.ndarray, layout: Layout) -> np.ndarray:
    """Inverse of :func:`_solver_view`: put back the length-1 outer axes."""
    for ax in layout.outer:
        block = np.expand_dims(block, ax)
    return block


def _preprocess_block(raw, scale: float, mean: float, params: Params):
    """Steps 1-3 on whole planes (NumPy or CuPy)."""
    if scale <= 0:
        factor = 2 if params.up_sample else 1
        return get_xp(raw).zeros(raw.shape[:-2] + tuple(s * factor for s in raw.shape[-2:]), np.float32)
    return preprocess(raw, scale, mean, params)


def _sparse_block(h, norm: float, params: Params, coupled: bool, interior):
    """Step 4 on a block with its halo; returns the interior, clipped at 0."""
    xp = get_xp(h)
    if norm <= 0:
        return xp.zeros(h[interior].shape, np.float32)
    return xp.ascontiguousarray(sparse_stage(h, norm, params, coupled)[interior])


def _final_block(g, norm: float, scale: float, params: Params, psf):
    """Steps 5-6 on whole planes (or volumes)."""
    if norm <= 0 or scale <= 0:
        return get_xp(g).zeros(g.shape, np.float32)
    return deconv_stage(g, norm, scale, params, psf)


# --------------------------------------------------------------------------- lazy driver


def sparse_deconvolve_dask(
    image,
    params: Params,
    *,
    chunks: dict[str, int] | Sequence[int] | None = None,
    depth: dict[str, int] | int | None = None,
):
    """Lazy sparse deconvolution of a 2-D or 3-D Dask array (see :func:`bigdecon.sparse_deconvolve`).

    The raw statistics are computed now (one pass of reductions); the rest is a
    lazy graph. The maxima after steps 3 and 4 are 0-d Dask arrays that the
    later steps wait for, so the step-4 blocks stay in memory until their
    maximum is known: for data larger than the cluster's memory use
    :func:`deconvolve`, which keeps them in a store.
    """
    import dask
    import dask.array as da

    check_image(image, params)
    axes = ("y", "x") if image.ndim == 2 else ("t", "y", "x")
    layout = Layout(axes, tuple(int(s) for s in image.shape))
    plan = make_plan(layout, params, chunks=chunks, depth=depth)
    raw = image
    finite, scale, total = dask.compute(da.isfinite(raw).all(), raw.max(), raw.sum(dtype=np.float64))
    if not finite:
        raise InputError("image contains NaN or infinite pixels")
    scale = float(scale)
    mean = float(total) / raw.size / scale if scale > 0 else 0.0
    planes = raw.rechunk({**({0: plan.plane_group} if image.ndim == 3 else {}), -2: -1, -1: -1})
    if plan.needs_preprocess:
        factor = 2 if params.up_sample else 1
        chunks_out = planes.chunks[:-2] + ((planes.shape[-2] * factor,), (planes.shape[-1] * factor,))
        h = planes.map_blocks(_preprocess_block, scale, mean, params, dtype=np.float32, chunks=chunks_out)
        norm = h.max()
    else:
        h = planes.astype(np.float32)
        norm = scale
    f = h / norm
    if params.sparse_iters:
        blk = plan.sparse_block
        target = (blk["k"], blk["y"], blk["x"]) if image.ndim == 3 else (blk["y"], blk["x"])
        dep = (
            (plan.depth["k"], plan.depth["y"], plan.depth["x"])
            if image.ndim == 3
            else (plan.depth["y"], plan.depth["x"])
        )
        f = f.rechunk(target)
        # map_overlap needs chunks at least as deep as the halo: merge small edge chunks.
        f = _rechunk_for_depth(f, dep)
        g = f.map_overlap(
            lambda b: np.maximum(sparse_stage(b, 1.0, params, plan.coupled), 0),
            depth=dict(enumerate(dep)),
            boundary="none",
            trim=True,
            dtype=np.float32,
        )
        g = g / g.max()
    else:
        g = f
    psf = output_psf(params, image.ndim)
    whole = {-2: -1, -1: -1}
    if image.ndim == 3:
        whole[0] = -1 if params.volumetric else plan.plane_group
    return g.rechunk(whole).map_blocks(_final_block, 1.0, scale, params, psf, dtype=np.float32)


def _rechunk_for_depth(arr, depth):
    """Rechunk so every chunk is at least ``depth`` deep (map_overlap's requirement)."""
    new = []
    for chunks, d, n in zip(arr.chunks, depth, arr.shape):
        if d == 0 or min(chunks) >= d:
            new.append(chunks)
            continue
        size = max(max(chunks), d)
        spans = [b - a for a, b in _spans(n, size)]
        if len(spans) > 1 and spans[-1] < d:
            spans[-2] += spans[-1]
            spans.pop()
        new.append(tuple(spans))
    return arr.rechunk(tuple(new))


# --------------------------------------------------------------------------- out-of-core driver


def _region_slices(region: dict[int, tuple[int, int]], ndim: int) -> tuple[slice, ...]:
    return tuple(slice(*region[i]) if i in region else slice(None) for i in range(ndim))


def _region_key(region: dict[int, tuple[int, int]]) -> str:
    return ".".join(f"{a}-{b}" for _, (a, b) in sorted(region.items()))


class Ledger:
    """The run's work folder inside the output: completion records, statistics, PSFs.

    A record holds the block's own results (its maximum), so a resumed run
    needs neither the block's data nor a recomputation to finish a reduction.
    Local folders are written by atomic rename; object stores (``s3://``...)
    through fsspec, where a single PUT is atomic.
    """

    def __init__(self, root: str):
        from .io.omezarr import _fs, _normalize

        self.root, self.local = _normalize(root)
        self.fs = None if self.local else _fs(self.root)

    def path(self, *parts: str) -> str:
        """Location of an entry (for the work arrays: local path or URL)."""
        return "/".join([self.root.rstrip("/"), *parts])

    def _write(self, path: str, data: bytes) -> None:
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # an entry exists only once it is fully written

    def _read(self, path: str) -> bytes | None:
        try:
            if self.local:
                with open(path, "rb") as fh:
                    return fh.read()
            return self.fs.cat_file(path)
        except FileNotFoundError:
            return None

    def record(self, stage: str, key: str, value: dict) -> None:
        self._write(self.path("ledger", stage, key + ".json"), json.dumps(value).encode())

    def done(self, stage: str) -> dict[str, dict]:
        folder = self.path("ledger", stage)
        if self.local:
            names = [n for n in os.listdir(folder) if n.endswith(".json")] if os.path.isdir(folder) else []
            return {n[: -len(".json")]: json.loads(self._read(os.path.join(folder, n))) for n in names}
        if not self.fs.exists(folder):
            return {}
        paths = [p for p in self.fs.ls(folder, detail=False) if p.endswith(".json")]
        blobs = self.fs.cat(paths) if paths else {}
        return {p.rsplit("/", 1)[-1][: -len(".json")]: json.loads(b) for p, b in blobs.items()}

    def get(self, key: str) -> dict | None:
        data = self._read(self.path(key + ".json"))
        return None if data is None else json.loads(data)

    def put(self, key: str, value: dict) -> None:
        self._write(self.path(key + ".json"), json.dumps(value).encode())

    def put_array(self, name: str, array: np.ndarray) -> str:
        """Store an array (a PSF) for the workers; returns where it is."""
        import io as _io

        buf = _io.BytesIO()
        np.save(buf, np.ascontiguousarray(array))
        path = self.path(name + ".npy")
        self._write(path, buf.getvalue())
        return path

    def remove(self) -> None:
        if self.local:
            shutil.rmtree(self.root, ignore_errors=True)
        elif self.fs.exists(self.root):
            self.fs.rm(self.root, recursive=True)


@functools.lru_cache(maxsize=16)
def _load_array(path: str, token: str) -> np.ndarray:
    """An array stored by :meth:`Ledger.put_array`, read once per worker and run."""
    import io as _io

    data = Ledger(path.rsplit("/", 1)[0])._read(path)  # Ledger.path joins with "/" everywhere
    if data is None:
        raise ProcessingError(f"work file missing: {path} (was the output deleted during the run?)")
    return np.load(_io.BytesIO(data))


def _read_source(job: dict, region: dict[int, tuple[int, int]]) -> np.ndarray:
    """Read a region of the (selected) input straight from its store, inside a worker."""
    from .io import read_region

    selection, lay = job["selection"], job["layout"]
    index: list[Any] = []
    for i in range(len(lay.axes)):
        a, b = region.get(i, (0, lay.shape[i]))
        sel = selection.get(i)
        if sel is None:
            index.append(slice(a, b))
        elif isinstance(sel, list):  # chosen channels
            index.append(sel[a:b])
        else:  # an offset (time points a:b)
            index.append(slice(sel + a, sel + b))
    return read_region(job["level"], index, token=job["run_id"])


def _read_work(path: str, region, ndim: int) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(path, mode="r")[_region_slices(region, ndim)])


def _write_work(path: str, region, ndim: int, block: np.ndarray) -> None:
    import zarr

    zarr.open_array(path, mode="r+")[_region_slices(region, ndim)] = block


def _work_array(path: str, shape: tuple[int, ...], chunks: Sequence[int]) -> None:
    """Create an intermediate float32 array, or keep the one a resumed run left."""
    import zarr

    chunks = tuple(int(c) for c in chunks)
    try:
        arr = zarr.open_array(path, mode="r")
        if tuple(arr.shape) == tuple(shape) and tuple(arr.chunks) == chunks:
            return
    except Exception:  # missing (or unreadable): make it anew
        pass
    zarr.create_array(path, shape=shape, chunks=chunks, dtype="float32", fill_value=0.0, zarr_format=3, overwrite=True)


def _device(job: dict) -> str:
    """Where this worker runs the solvers: its GPU when it has one (``device="auto"``)."""
    from ._backend import gpu_available

    wanted = job.get("device", "auto")
    return "gpu" if wanted == "gpu" or (wanted == "auto" and gpu_available()) else "cpu"


def _solve(fn, block: np.ndarray, job: dict, *args):
    """Move a block to the worker's device once, run every step there, bring the result back."""
    from ._backend import release_device_memory, to_device, to_numpy

    device = _device(job)
    try:
        return to_numpy(fn(to_device(block, device), *args))
    finally:
        if device == "gpu":
            # Blocks of other shapes follow (edge blocks, whole-plane tasks): hand the
            # pool's blocks and cached FFT plans back so they never pile up on the card.
            release_device_memory()


def _one_thread_per_task() -> None:
    """Inside a Dask worker, a task's solvers use one thread: tasks fill the cores.

    Run in this process (no cluster), the solvers keep all cores. A worker
    started with ``BIGDECON_THREADS`` set (a pod or batch job with several
    cores per Dask thread) keeps its value.
    """
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return
    os.environ.setdefault("BIGDECON_THREADS", "1")


def _channel(job: dict, region) -> int:
    """Position of a region's channel among the processed channels."""
    lay = job["layout"]
    return lay.channel_of(tuple(region[a][0] for a in lay.outer))


def _task_preprocess(job: dict, region) -> dict:
    _one_thread_per_task()
    lay, params = job["layout"], job["params"]
    raw_region = dict(region)
    if params.up_sample:
        raw_region[lay.y] = (0, lay.shape[lay.y])
        raw_region[lay.x] = (0, lay.shape[lay.x])
    raw = _read_source(job, raw_region)
    c = _channel(job, region)
    h = _embed(_solve(_preprocess_block, _solver_view(raw, lay), job, job["scale"][c], job["mean"][c], params), lay)
    _write_work(job["h"], region, len(lay.axes), h)
    return {"max": float(h.max())}


def _task_sparse(job: dict, region) -> dict:
    _one_thread_per_task()
    lay, params, plan = job["layout"], job["params"], job["plan"]
    grown = plan.halo(region)
    ndim = len(lay.axes)
    c = _channel(job, region)
    if plan.needs_preprocess:
        h, norm = _read_work(job["h"], grown, ndim), job["h_max"][c]
    else:
        h, norm = _read_source(job, grown), job["scale"][c]
    interior = tuple(
        slice(region[a][0] - grown[a][0], region[a][1] - grown[a][0]) for a in range(ndim) if a not in lay.outer
    )
    g = _embed(
        _solve(
            _sparse_block,
            _solver_view(h, lay).astype(np.float32, copy=False),
            job,
            norm,
            params,
            plan.coupled,
            interior,
        ),
        lay,
    )
    _write_work(job["g"], region, ndim, g)
    return {"max": float(g.max()) if g.size else 0.0}


def _task_final(job: dict, region) -> dict:
    from .io import write_block

    _one_thread_per_task()
    lay, params, plan = job["layout"], job["params"], job["plan"]
    ndim = len(lay.axes)
    c = _channel(job, region)
    if params.sparse_iters:
        g, norm = _read_work(job["g"], region, ndim), job["g_max"][c]
    elif plan.needs_preprocess:
        g, norm = _read_work(job["h"], region, ndim), job["h_max"][c]
    else:
        g, norm = _read_source(job, region), job["scale"][c]
    psf = _load_array(job["psf"][c], job["run_id"]) if job["psf"][c] else None
    out = _solve(
        _final_block, _solver_view(g, lay).astype(np.float32, copy=False), job, norm, job["scale"][c], params, psf
    )
    write_block(job["output"], _region_slices(region, ndim), _embed(out, lay))
    return {"max": float(out.max())}


def _run_tasks(
    fn: Callable,
    job: dict,
    regions: list,
    stage: str,
    ledger: Ledger,
    client,
    progress: Callable[[int, int], None] | None,
    counter: dict,
) -> dict[str, dict]:
    """Run ``fn(job, region)`` for every region not yet in the ledger; return all records."""
    done = ledger.done(stage)
    todo = [r for r in regions if _region_key(r) not in done]
    counter["done"] += len(regions) - len(todo)
    counter["resumed"] = counter.get("resumed", 0) + len(regions) - len(todo)
    if progress:
        progress(counter["done"], counter["total"])

    def finish(region, result):
        ledger.record(stage, _region_key(region), result)
        done[_region_key(region)] = result
        counter["done"] += 1
        if progress:
            progress(counter["done"], counter["total"])

    if not todo:
        return done
    if client is None:
        for region in todo:
            finish(region, fn(job, region))
        return done
    from distributed import as_completed

    # Tasks are idempotent (each writes only the chunks it owns), so a retry
    # after a worker dies rewrites the same bytes. The job is a few kB (the
    # PSFs travel through the work folder), so sending it with every task
    # keeps the scheduler's memory proportional to the number of tasks only.
    futures = {}
    for region in todo:
        fut = client.submit(
            fn, job, region, key=f"bigdecon-{stage}-{_region_key(region)}-{job['run_id']}", retries=3, pure=False
        )
        futures[fut] = region
    for fut in as_completed(futures):
        if fut.status == "error":
            exc = fut.exception()
            for other in futures:
                other.cancel()
            if isinstance(exc, (InputError, ProcessingError)):
                raise exc
            raise ProcessingError(
                f"{stage} failed on block {_region_key(futures[fut])}: {type(exc).__name__}: {exc}"
            ) from exc
        finish(futures[fut], fut.result())
    return done


def _per_channel_max(records: dict[str, dict], regions, layout: Layout) -> list[float]:
    out = [0.0] * layout.n_channels
    for region in regions:
        c = layout.channel_of(tuple(region[a][0] for a in layout.outer))
        out[c] = max(out[c], records[_region_key(region)]["max"])
    return out


def _source_stats(data, layout: Layout, where: str = "the input") -> tuple[list[float], list[float]]:
    """Raw maximum and mean per channel, and the check for NaN/inf: one pass."""
    import dask
    import dask.array as da

    c_axis = layout.axes.index("c") if "c" in layout.axes else None
    red = tuple(i for i in range(data.ndim) if i != c_axis)
    try:
        finite, mx, total = dask.compute(
            da.isfinite(data).all() if np.issubdtype(data.dtype, np.floating) else True,
            data.max(axis=red),
            data.sum(axis=red, dtype=np.float64),
        )
    except (InputError, ProcessingError):
        raise
    except Exception as e:  # a corrupt chunk, a store that went away
        raise ProcessingError(f"reading {where} failed: {type(e).__name__}: {e}") from e
    if not finite:
        raise InputError("input contains NaN or infinite pixels")
    mx = np.atleast_1d(np.asarray(mx, dtype=np.float64))
    count = data.size / (data.shape[c_axis] if c_axis is not None else 1)
    means = np.atleast_1d(np.asarray(total, dtype=np.float64)) / count
    scale = [float(m) for m in mx]
    return scale, [float(m / s) if s > 0 else 0.0 for m, s in zip(means, scale)]


def plan(source, **kwargs) -> dict:
    """What :func:`deconvolve` would do with ``source``: block grid, overlap, tasks, memory.

    Takes the same keyword arguments as :func:`deconvolve` (plus ``min_tasks``
    and ``task_memory``, which a run derives from its cluster); returns a dict
    with ``axes``, ``shape``, ``dtype``, ``chunks``, ``depth``, ``n_tasks``,
    ``memory_per_task_bytes``, ``output_shape`` and ``fwhm_px`` (the PSF FWHM
    in input pixels per processed channel, ``None`` for a measured PSF).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import bigdecon
    >>> from bigdecon.io import write_image
    >>> path = write_image(os.path.join(tempfile.mkdtemp(), "raw.ome.zarr"), np.ones((40, 600, 600), np.uint16), "tyx")
    >>> summary = bigdecon.plan(path, fwhm=3)
    >>> summary["depth"], summary["n_tasks"]
    ({'k': 8, 'y': 16, 'x': 16}, 24)
    """
    from .io import open_image

    src = open_image(source)
    job = _prepare(src, kwargs)
    summary = job["plan"].summary()
    summary["dtype"] = str(src.data.dtype)
    summary["input_chunks"] = list(src.stored_chunks)
    summary["fwhm_px"] = [list(p.fwhm) if p.fwhm is not None else None for p in job["channel_params"]]
    return summary


_RUN_KEYS = {"channels", "timepoints", "chunks", "depth", "resolution", "task_memory", "min_tasks"}
_PER_CHANNEL_KEYS = ("fwhm", "resolution", "psf")


def _channel_values(name: str, value, n_channels: int, ids: list[int], has_c: bool) -> list:
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


def _prepare(src, kwargs: dict) -> dict:
    """Resolve parameters (per channel), selections and the plan for an opened source."""
    kwargs = dict(kwargs)
    run = {k: kwargs.pop(k) for k in list(kwargs) if k in _RUN_KEYS}
    data = src.data
    axes = tuple(src.axes)
    selection: dict[int, Any] = {}
    has_c = "c" in axes
    n_in_channels = data.shape[axes.index("c")] if has_c else 1
    channel_ids = list(range(n_in_channels))
    channels = run.get("channels")
    if channels is not None:
        if not has_c:
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
    timepoints = run.get("timepoints")
    if timepoints is not None:
        if "t" not in axes:
            raise InputError("timepoints given, but the input has no t axis")
        ti = axes.index("t")
        a, b = _parse_span(timepoints, data.shape[ti])
        selection[ti] = a
        data = data[(slice(None),) * ti + (slice(a, b),)]
    layout = Layout(axes, tuple(int(s) for s in data.shape))

    # Per-channel PSF sizes: one Params per processed channel, the rest shared.
    if run.get("resolution") is not None and kwargs.get("fwhm") is not None:
        raise InputError("give either fwhm (pixels) or resolution (physical units), not both")
    per = {
        k: _channel_values(
            k, kwargs.pop(k, None) if k != "resolution" else run.get(k), n_in_channels, channel_ids, has_c
        )
        for k in _PER_CHANNEL_KEYS
    }
    channel_params = []
    for i, c in enumerate(channel_ids):
        fwhm = per["fwhm"][i]
        if per["resolution"][i] is not None:
            fwhm = _fwhm_from_resolution(per["resolution"][i], src)
        try:
            channel_params.append(Params.from_kwargs(fwhm=fwhm, psf=per["psf"][i], **kwargs))
        except InputError as e:
            raise InputError(f"channel {c}: {e}" if len(channel_ids) > 1 else str(e)) from None
    params = channel_params[0]
    if len({p.volumetric for p in channel_params}) > 1:
        raise InputError("every channel needs the same kind of PSF: all 2-D (y, x) or all 3-D (z, y, x)")
    if params.volumetric and params.deconvolves and _k_name(layout) != "z":
        raise InputError(
            f"a 3-D PSF (3-value fwhm or 3-D psf) deconvolves along z, but the input's axes are {''.join(axes)}: "
            "give the PSF size in y and x only"
        )
    solver_shape = tuple(layout.shape[i] for i in (layout.k, layout.y, layout.x) if i is not None)
    for p in channel_params:
        check_image(_Shape(solver_shape, data.dtype), p)
    the_plan = make_plan(
        layout,
        params,
        chunks=run.get("chunks"),
        depth=run.get("depth"),
        task_memory=run.get("task_memory") or 512 * 2**20,
        min_tasks=run.get("min_tasks") or 1,
    )
    return {
        "layout": layout,
        "params": params,
        "channel_params": channel_params,
        "channel_ids": channel_ids,
        "plan": the_plan,
        "selection": selection,
        "data": data,
        "src": src,
    }


def _params_record(channel_params: list[Params], channel_ids: list[int]) -> dict:
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


def _parse_span(span, n: int) -> tuple[int, int]:
    if isinstance(span, str):
        parts = span.split(":")
        if len(parts) != 2:
            raise InputError(f"timepoints must look like a:b, got {span!r}")
        a = int(parts[0]) if parts[0] else 0
        b = int(parts[1]) if parts[1] else n
    else:
        a, b = (int(v) for v in span)
    # Negative ends count from the last time point, as in Python slicing.
    a, b = (a + n if a < 0 else a), (b + n if b < 0 else b)
    if a >= b:
        raise InputError(
            f"timepoints {span if isinstance(span, str) else f'{a}:{b}'} select nothing (empty or reversed range; the input has 0:{n})"
        )
    if not (0 <= a and b <= n):
        raise InputError(f"timepoints {a}:{b} outside 0:{n}")
    return a, b


def _fwhm_from_resolution(resolution, src) -> list[float]:
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


def _stored_config(destination) -> dict:
    """The run configuration recorded in an unfinished output ({} if none)."""
    import zarr

    from .io.omezarr import _normalize

    try:
        info = zarr.open_group(_normalize(destination)[0], mode="r").attrs.asdict().get("bigdecon", {})
    except Exception:
        return {}
    return info.get("config") or {} if isinstance(info, dict) else {}


# Seconds a run waits for the first worker of a cluster it was given (pods and
# batch jobs may still be starting) before it sizes blocks from the workers.
WORKER_WAIT = 300


def _wait_for_workers(client) -> None:
    if client is None:
        return
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT)
    except (TimeoutError, OSError) as e:
        raise ProcessingError(
            f"no Dask worker joined the scheduler within {WORKER_WAIT} s ({type(e).__name__})"
        ) from None


def run_sizing(client, destination, *, resume: bool = False, chunks=None, device: str = "auto") -> dict:
    """``min_tasks`` and ``task_memory`` of a run on ``client``, as :func:`deconvolve` derives them.

    Default blocks are sized so every worker thread has two of them, and from
    the card's memory on GPU workers; a resumed run keeps the sizing of the
    run it continues, whatever cluster it has now. Waits for a first worker.
    Call it to print the plan that will run (``plan(..., **run_sizing(...))``)
    and pass the same values to :func:`deconvolve`.
    """
    _wait_for_workers(client)
    stored = _stored_config(destination) if resume else {}
    task_memory = stored.get("task_memory")
    if "task_memory" not in stored and chunks is None and device != "cpu":
        task_memory = _gpu_task_memory(client)
    return {"min_tasks": stored.get("min_tasks", _cluster_threads(client) * 2), "task_memory": task_memory}


def _gpu_task_memory(client) -> int | None:
    """Bytes a task may use on the workers' GPUs (40% of the smallest card), or None."""

    def probe():
        from ._backend import gpu_available

        if not gpu_available():
            return 0
        import cupy

        return int(cupy.cuda.runtime.memGetInfo()[1])

    try:
        sizes = list(client.run(probe).values()) if client is not None else [probe()]
    except Exception:
        return None
    return int(0.4 * min(sizes)) if sizes and min(sizes) > 0 else None


def _cluster_threads(client) -> int:
    """Worker threads of a cluster (1 without one), to size the default blocks."""
    if client is None:
        return 1
    try:
        return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
    except Exception:
        return 1


def deconvolve(
    source,
    destination,
    *,
    fwhm=None,
    resolution=None,
    psf=None,
    sparse_iters: int = 100,
    fidelity: float = 150.0,
    sparsity: float = 10.0,
    tcontinuity: float = 0.5,
    background: int = 1,
    deconv_iters: int = 7,
    deconv_type: int = 1,
    up_sample: int = 0,
    channels=None,
    timepoints=None,
    chunks=None,
    depth=None,
    output_dtype: str = "float32",
    ngff_version: str = "0.5",
    resume: bool = False,
    overwrite: bool = False,
    client=None,
    progress: Callable[[int, int], None] | None = None,
    config: dict | None = None,
    task_memory: int | None = None,
    min_tasks: int | None = None,
    device: str = "auto",
) -> dict:
    """Sparse deconvolution of an OME-Zarr (or TIFF) data set into a new OME-Zarr.

    Out of core: every pass is one task per block that reads its halo from a
    store and writes only its own chunks, so memory depends on the chunk size,
    not on the data size. Channels are processed independently; with both t
    and z each time point's volume is one problem; with t or z alone, that axis
    is the third solver axis.

    Parameters
    ----------
    source, destination : str or path
        Input OME-Zarr (NGFF 0.4/0.5; local path or fsspec URL) or TIFF;
        output OME-Zarr path or URL.
    fwhm, resolution, psf
        PSF size in input pixels, or in the metadata's physical units, or a
        measured PSF array. Each may be one value for every channel or a dict
        from the input's channel number to that channel's value, e.g.
        ``fwhm={0: 3.0, 1: (4.2, 4.2)}``.
    sparse_iters, fidelity, sparsity, tcontinuity, background, deconv_iters, deconv_type, up_sample
        As in :func:`bigdecon.sparse_deconvolve`.
    channels : int or list of int, optional
        Channels to process (default all).
    timepoints : str or (int, int), optional
        ``"a:b"``: time points a to b-1 (negative ends count from the last).
    chunks : dict or sequence, optional
        Step-4 block size per solver axis, e.g. ``{"t": 16, "y": 512, "x": 512}``.
    depth : dict or int, optional
        Step-4 halo per solver axis, overriding :func:`default_depth`.
    output_dtype : str
        ``float32`` (default) or an integer dtype, clipped to its range.
    ngff_version : {"0.5", "0.4"}
    resume, overwrite : bool
        Continue a killed run (only unfinished blocks are computed), or replace
        an existing output. Without either an existing output is refused.
    client : distributed.Client, optional
        Run on this cluster; by default the blocks run one after the other here.
    progress : callable, optional
        ``progress(done, total)`` as blocks finish.
    config : dict, optional
        The resolved configuration to record in the output's attributes.
    task_memory, min_tasks : int, optional
        Bytes one task may use (by default 40% of the workers' GPU memory, or
        512 MiB on CPUs) and the fewest step-4 blocks (by default two per worker
        thread): they size the default blocks. See :func:`run_sizing`.
    device : {"auto", "cpu", "gpu"}
        Where workers run the solvers: ``auto`` uses a worker's GPU (CuPy)
        when it has one. A block moves to the GPU once; only the result returns.

    Returns
    -------
    dict
        ``output``, ``shape``, ``seconds``, ``voxels``, ``chunks`` (tasks in
        all), ``resumed`` (tasks an earlier run had finished), ``stats``.

    Examples
    --------
    >>> import os, tempfile
    >>> import bigdecon
    >>> from bigdecon.data import filaments_timelapse
    >>> from bigdecon.io import write_image
    >>> folder = tempfile.mkdtemp()
    >>> raw, truth = filaments_timelapse((4, 64, 64), fwhm=3.0, seed=1)
    >>> path = write_image(os.path.join(folder, "raw.ome.zarr"), raw, "tyx")
    >>> info = bigdecon.deconvolve(path, os.path.join(folder, "out.ome.zarr"), fwhm=3, sparse_iters=10)
    >>> info["shape"]
    [4, 64, 64]
    """
    from .io import OmeZarrWriter, check_output_path, open_image
    from .io.omezarr import _normalize

    t0 = time.perf_counter()
    if device not in ("auto", "cpu", "gpu"):
        raise InputError(f"device must be auto, cpu or gpu, got {device!r}")
    if ngff_version not in ("0.4", "0.5"):
        raise InputError(f"ngff_version must be 0.4 or 0.5, got {ngff_version!r}")
    try:
        dtype = np.dtype(output_dtype)
    except TypeError:
        raise InputError(f"output_dtype {output_dtype!r} is not a NumPy dtype") from None
    if not (dtype == np.float32 or dtype == np.float64 or np.issubdtype(dtype, np.integer)):
        raise InputError(f"output_dtype must be float32 or an integer type, got {dtype}")
    src = open_image(source)
    check_output_path(source, destination)
    source_id = _normalize(source)[0]
    if min_tasks is None:  # what the caller did not size, the cluster does
        sizing = run_sizing(client, destination, resume=resume, chunks=chunks, device=device)
        min_tasks = sizing["min_tasks"]
        task_memory = sizing["task_memory"] if task_memory is None else task_memory
    job = _prepare(
        src,
        dict(
            fwhm=fwhm,
            resolution=resolution,
            psf=psf,
            sparse_iters=sparse_iters,
            fidelity=fidelity,
            sparsity=sparsity,
            tcontinuity=tcontinuity,
            background=background,
            deconv_iters=deconv_iters,
            deconv_type=deconv_type,
            up_sample=up_sample,
            channels=channels,
            timepoints=timepoints,
            chunks=chunks,
            depth=depth,
            task_memory=task_memory,
            min_tasks=min_tasks,
        ),
    )
    layout, params, the_plan = job["layout"], job["params"], job["plan"]
    channel_params = job["channel_params"]
    params_record = _params_record(channel_params, job["channel_ids"])

    run_record = {
        "params": params_record,
        "channels": channels,
        "timepoints": timepoints,
        "shape": list(the_plan.out_shape),
        "chunks": list(the_plan.out_chunks),
        "sparse_block": the_plan.sparse_block,
        "depth": the_plan.depth,
        "output_dtype": str(dtype),
        "source": source_id,
        "min_tasks": min_tasks,
        "task_memory": task_memory,
    }
    scale_meta = dict(src.scale)
    if params.up_sample:
        for ax in ("y", "x"):
            if ax in scale_meta:
                scale_meta[ax] = scale_meta[ax] / 2
    translation = dict(src.translation)
    if timepoints is not None:  # output t = 0 is input time point a
        translation["t"] = translation.get("t", 0.0) + job["selection"][layout.axes.index("t")] * src.scale.get(
            "t", 1.0
        )
    channels_meta = src.channels
    if channels is not None and src.channels:
        channels_meta = [src.channels[c] for c in job["selection"][layout.axes.index("c")] if c < len(src.channels)]
    if channels_meta and len(channels_meta) != layout.n_channels:
        channels_meta = []  # metadata that does not match the data: napari gets defaults
    # The data set's statistics (and its NaN/inf check) come before anything is
    # written, so bad pixels leave no output behind; a resumed run reuses its own.
    stats = None
    if resume:
        stats = Ledger(_work_root(destination)).get("stats")
    if stats is None:
        scale, mean = _source_stats(job["data"], layout, where=source_id)
        stats = {"scale": scale, "mean": mean}
    writer = OmeZarrWriter(
        destination,
        shape=the_plan.out_shape,
        axes=layout.axes,
        chunks=the_plan.out_chunks,
        dtype=str(dtype),
        scale=scale_meta,
        units=src.units,
        translation=translation,
        channels=channels_meta,
        ngff_version=ngff_version,
        overwrite=overwrite,
        resume=resume,
        run_config=run_record,
    )
    ledger = Ledger(_work_root(writer.path))
    ledger.put("stats", stats)
    run_id = f"{os.getpid()}-{time.monotonic_ns()}"
    ndim = len(layout.axes)
    psf_paths = []
    for i, p in enumerate(channel_params):
        kernel = output_psf(p, 3 if layout.k is not None else 2)
        psf_paths.append(ledger.put_array(f"psf-{i}", kernel) if kernel is not None else None)
    # What every task carries: a few kB. The PSFs stay in the work folder, and
    # the parameters lose their measured PSF (the tasks read the kernel instead).
    lean = replace(params, psf=None)
    task = {
        "layout": layout,
        "params": lean,
        "plan": replace(the_plan, params=lean),
        "level": src.level,
        "selection": job["selection"],
        "scale": stats["scale"],
        "mean": stats["mean"],
        "h": ledger.path("h.zarr"),
        "g": ledger.path("g.zarr"),
        "output": writer.path,
        "dtype": str(dtype),
        "psf": psf_paths,
        "run_id": run_id,
        "device": device,
    }
    pre_tasks = the_plan.plane_tasks() if the_plan.needs_preprocess else []
    sparse_tasks = the_plan.sparse_tasks() if params.sparse_iters else []
    final_tasks = the_plan.final_tasks()
    total = len(pre_tasks) + len(sparse_tasks) + len(final_tasks)
    counter = {"done": 0, "total": total, "resumed": 0}
    blk = the_plan.sparse_block

    def work_chunks(k_size: int) -> list[int]:
        # Intermediates are chunked like the step-4 blocks in y/x, so a block
        # reads little beyond its halo; in k like the tasks that write them.
        chunk = [1] * ndim
        if layout.k is not None:
            chunk[layout.k] = k_size
        chunk[layout.y], chunk[layout.x] = blk["y"], blk["x"]
        return chunk

    if pre_tasks:
        _work_array(task["h"], the_plan.out_shape, work_chunks(the_plan.plane_group))
        records = _run_tasks(_task_preprocess, task, pre_tasks, "preprocess", ledger, client, progress, counter)
        task["h_max"] = _per_channel_max(records, pre_tasks, layout)
    if sparse_tasks:
        _work_array(task["g"], the_plan.out_shape, work_chunks(blk["k"]))
        records = _run_tasks(_task_sparse, task, sparse_tasks, "sparse", ledger, client, progress, counter)
        task["g_max"] = _per_channel_max(records, sparse_tasks, layout)
    _run_tasks(_task_final, task, final_tasks, "final", ledger, client, progress, counter)
    seconds = time.perf_counter() - t0
    attrs = {
        "version": __version__,
        "parameters": params_record,
        "statistics": {
            "raw_max": stats["scale"],
            "raw_mean_normalised": stats["mean"],
            "max_after_preprocess": task.get("h_max"),
            "max_after_sparse": task.get("g_max"),
        },
        "depth": the_plan.depth,
        "config": config or {},
        "seconds": round(seconds, 3),
    }
    writer.finalize(attrs=attrs)
    ledger.remove()
    voxels = int(np.prod(layout.shape))
    return {
        "output": writer.path,
        "shape": list(the_plan.out_shape),
        "seconds": time.perf_counter() - t0,
        "voxels": voxels,
        "chunks": total,
        "resumed": counter["resumed"],
        "stats": attrs["statistics"],
    }


def _work_root(destination) -> str:
    """The work folder of a run: inside its output, removed when the output is complete."""
    from .io.omezarr import _join, _normalize

    return _join(_normalize(destination)[0], ".bigdecon-work")
