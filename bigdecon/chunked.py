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

import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import __version__
from ._backend import get_xp
from .errors import InputError, ProcessingError
from .params import Params
from .pipeline import check_image, deconv_stage, is_coupled, output_psf, preprocess, sparse_stage

__all__ = ["deconvolve", "plan", "sparse_deconvolve_dask", "default_depth", "Layout"]

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
    itemsize: int = 4
    extra: dict = field(default_factory=dict)

    # Blocks are dicts axis-position -> (start, stop) over the output grid.
    def _outer_regions(self):
        for idx in self.layout.outer_indices():
            yield {ax: (i, i + 1) for ax, i in zip(self.layout.outer, idx)}

    def plane_tasks(self) -> list[dict[int, tuple[int, int]]]:
        """Whole-plane tasks (steps 1-3 and 5-6). With a 3-D PSF: whole volumes."""
        lay = self.layout
        tasks = []
        group = lay.n_planes if (self.params.volumetric and self.params.deconvolves) else self.plane_group
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
        block = [self.sparse_block["k"] + 2 * self.depth["k"] if lay.k is not None else 1,
                 self.sparse_block["y"] + 2 * self.depth["y"], self.sparse_block["x"] + 2 * self.depth["x"]]
        if lay.k is not None:
            block[0] = min(block[0], lay.n_planes)
        block[1] = min(block[1], self.out_shape[lay.y])
        block[2] = min(block[2], self.out_shape[lay.x])
        plane_vox = self.out_shape[lay.y] * self.out_shape[lay.x]
        pad = 1 + 2 / 6  # the published one-sixth edge padding of step 5
        plane_task = plane_vox * pad * pad * (self.plane_group if not self.params.volumetric else lay.n_planes)
        mem = WORKSET_FACTOR * 4 * max(math.prod(block) if self.params.sparse_iters else 0, plane_task)
        n_sparse = len(self.sparse_tasks()) if self.params.sparse_iters else 0
        n_plane = len(self.plane_tasks())
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
            "n_tasks": n_sparse + n_plane * (2 if self.needs_preprocess else 1),
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
            d.update({("k" if a in ("t", "z") else a): int(v) for a, v in depth.items()})
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
        for name in ("y", "x"):
            if name in named:
                block[name] = named[name]
        for name in ("t", "z"):
            if name in named and layout.k is not None and layout.axes[layout.k] == name:
                block["k"] = named[name]
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
    for i, ax in enumerate(layout.axes):
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
    )


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
        dep = (plan.depth["k"], plan.depth["y"], plan.depth["x"]) if image.ndim == 3 else (plan.depth["y"], plan.depth["x"])
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
    """Completion records of one run, as small files written by atomic rename.

    A record holds the block's own results (its maximum), so a resumed run
    needs neither the block's data nor a recomputation to finish a reduction.
    """

    def __init__(self, root: str):
        self.root = root

    def _path(self, stage: str, key: str) -> str:
        return os.path.join(self.root, "ledger", stage, key + ".json")

    def record(self, stage: str, key: str, value: dict) -> None:
        path = self._path(stage, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.{time.monotonic_ns()}.tmp"
        with open(tmp, "w") as fh:
            json.dump(value, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # a record exists only once the block is fully written

    def done(self, stage: str) -> dict[str, dict]:
        folder = os.path.join(self.root, "ledger", stage)
        if not os.path.isdir(folder):
            return {}
        out = {}
        for name in os.listdir(folder):
            if name.endswith(".json"):
                with open(os.path.join(folder, name)) as fh:
                    out[name[: -len(".json")]] = json.load(fh)
        return out

    def get(self, key: str) -> dict | None:
        path = os.path.join(self.root, key + ".json")
        if not os.path.exists(path):
            return None
        with open(path) as fh:
            return json.load(fh)

    def put(self, key: str, value: dict) -> None:
        os.makedirs(self.root, exist_ok=True)
        tmp = os.path.join(self.root, key + ".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(value, fh)
        os.replace(tmp, os.path.join(self.root, key + ".json"))


def _read_source(path: str, selection: dict[int, Any], region: dict[int, tuple[int, int]], ndim: int) -> np.ndarray:
    """Read a region of the (selected) input from its store, inside a worker."""
    from .io import open_image

    data = open_image(path).data
    index = []
    for i in range(ndim):
        a, b = region.get(i, (0, data.shape[i]))
        sel = selection.get(i)
        if sel is None:
            index.append(slice(a, b))
        elif isinstance(sel, list):
            index.append(sel[a:b])
        else:  # an offset (time points a:b)
            index.append(slice(sel + a, sel + b))
    block = data
    for axis, idx in enumerate(index):  # list indices one axis at a time (dask's rule)
        block = block[(slice(None),) * axis + (idx,)]
    return np.asarray(block.compute(scheduler="sync"))


def _read_work(path: str, region, ndim: int) -> np.ndarray:
    import zarr

    return np.asarray(zarr.open_array(path, mode="r")[_region_slices(region, ndim)])


def _write_work(path: str, region, ndim: int, block: np.ndarray) -> None:
    import zarr

    zarr.open_array(path, mode="r+")[_region_slices(region, ndim)] = block


def _device(job: dict) -> str:
    """Where this worker runs the solvers: its GPU when it has one (``device="auto"``)."""
    from ._backend import gpu_available

    wanted = job.get("device", "auto")
    return "gpu" if wanted == "gpu" or (wanted == "auto" and gpu_available()) else "cpu"


def _solve(fn, block: np.ndarray, job: dict, *args):
    """Move a block to the worker's device once, run every step there, bring the result back."""
    from ._backend import to_device, to_numpy

    return to_numpy(fn(to_device(block, _device(job)), *args))


def _one_thread_per_task() -> None:
    """Inside a Dask worker, a task's solvers use one thread: tasks fill the cores.

    Run in this process (no cluster), the solvers keep all cores.
    """
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return
    os.environ.setdefault("BIGDECON_THREADS", "1")


def _task_preprocess(job: dict, region) -> dict:
    _one_thread_per_task()
    lay, params = job["layout"], job["params"]
    raw_region = dict(region)
    if params.up_sample:
        raw_region[lay.y] = (0, lay.shape[lay.y])
        raw_region[lay.x] = (0, lay.shape[lay.x])
    raw = _read_source(job["source"], job["selection"], raw_region, len(lay.axes))
    c = lay.channel_of(tuple(region[a][0] for a in lay.outer))
    h = _embed(_solve(_preprocess_block, _solver_view(raw, lay), job, job["scale"][c], job["mean"][c], params), lay)
    _write_work(job["h"], region, len(lay.axes), h)
    return {"max": float(h.max())}


def _task_sparse(job: dict, region) -> dict:
    _one_thread_per_task()
    lay, params, plan = job["layout"], job["params"], job["plan"]
    grown = plan.halo(region)
    ndim = len(lay.axes)
    c = lay.channel_of(tuple(region[a][0] for a in lay.outer))
    if plan.needs_preprocess:
        h, norm = _read_work(job["h"], grown, ndim), job["h_max"][c]
    else:
        h, norm = _read_source(job["source"], job["selection"], grown, ndim), job["scale"][c]
    interior = tuple(
        slice(region[a][0] - grown[a][0], region[a][1] - grown[a][0])
        for a in range(ndim)
        if a not in lay.outer
    )
    g = _embed(_solve(_sparse_block, _solver_view(h, lay).astype(np.float32, copy=False), job, norm, params, plan.coupled, interior), lay)
    _write_work(job["g"], region, ndim, g)
    return {"max": float(g.max()) if g.size else 0.0}


def _task_final(job: dict, region) -> dict:
    from .io import write_block

    _one_thread_per_task()
    lay, params, plan = job["layout"], job["params"], job["plan"]
    ndim = len(lay.axes)
    c = lay.channel_of(tuple(region[a][0] for a in lay.outer))
    if params.sparse_iters:
        g, norm = _read_work(job["g"], region, ndim), job["g_max"][c]
    elif plan.needs_preprocess:
        g, norm = _read_work(job["h"], region, ndim), job["h_max"][c]
    else:
        g, norm = _read_source(job["source"], job["selection"], region, ndim), job["scale"][c]
    out = _solve(_final_block, _solver_view(g, lay).astype(np.float32, copy=False), job, norm, job["scale"][c], params, job["psf"])
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
    # after a worker dies rewrites the same bytes.
    futures = {}
    for region in todo:
        fut = client.submit(fn, job, region, key=f"bigdecon-{stage}-{_region_key(region)}-{job['run_id']}", retries=3, pure=False)
        futures[fut] = region
    for fut in as_completed(futures):
        if fut.status == "error":
            exc = fut.exception()
            for other in futures:
                other.cancel()
            if isinstance(exc, (InputError, ProcessingError)):
                raise exc
            raise ProcessingError(f"{stage} failed on block {_region_key(futures[fut])}: {type(exc).__name__}: {exc}") from exc
        finish(futures[fut], fut.result())
    return done


def _per_channel_max(records: dict[str, dict], regions, layout: Layout) -> list[float]:
    out = [0.0] * layout.n_channels
    for region in regions:
        c = layout.channel_of(tuple(region[a][0] for a in layout.outer))
        out[c] = max(out[c], records[_region_key(region)]["max"])
    return out


def _source_stats(data, layout: Layout) -> tuple[list[float], list[float]]:
    """Raw maximum and mean per channel, and the check for NaN/inf: one pass."""
    import dask
    import dask.array as da

    c_axis = layout.axes.index("c") if "c" in layout.axes else None
    red = tuple(i for i in range(data.ndim) if i != c_axis)
    finite, mx, total = dask.compute(
        da.isfinite(data).all() if np.issubdtype(data.dtype, np.floating) else True,
        data.max(axis=red),
        data.sum(axis=red, dtype=np.float64),
    )
    if not finite:
        raise InputError("input contains NaN or infinite pixels")
    mx = np.atleast_1d(np.asarray(mx, dtype=np.float64))
    count = data.size / (data.shape[c_axis] if c_axis is not None else 1)
    means = np.atleast_1d(np.asarray(total, dtype=np.float64)) / count
    scale = [float(m) for m in mx]
    return scale, [float(m / s) if s > 0 else 0.0 for m, s in zip(means, scale)]


def plan(source, **kwargs) -> dict:
    """What :func:`deconvolve` would do with ``source``: block grid, overlap, tasks, memory.

    Takes the same keyword arguments as :func:`deconvolve`; returns a dict with
    ``axes``, ``shape``, ``dtype``, ``chunks``, ``depth``, ``n_tasks``,
    ``memory_per_task_bytes`` and ``output_shape``.
    """
    from .io import open_image

    src = open_image(source)
    job = _prepare(src, kwargs)
    summary = job["plan"].summary()
    summary["dtype"] = str(src.data.dtype)
    summary["input_chunks"] = [int(c[0]) for c in src.data.chunks]
    return summary


_RUN_KEYS = {"channels", "timepoints", "chunks", "depth", "resolution", "task_memory", "min_tasks"}


def _prepare(src, kwargs: dict) -> dict:
    """Resolve parameters, selections and the plan for an opened source."""
    kwargs = dict(kwargs)
    run = {k: kwargs.pop(k) for k in list(kwargs) if k in _RUN_KEYS}
    resolution = run.get("resolution")
    if resolution is not None:
        if kwargs.get("fwhm") is not None:
            raise InputError("give either fwhm (pixels) or resolution (physical units), not both")
        kwargs["fwhm"] = _fwhm_from_resolution(resolution, src)
    params = Params.from_kwargs(**kwargs)
    data = src.data
    axes = tuple(src.axes)
    selection: dict[int, Any] = {}
    channels = run.get("channels")
    if channels is not None:
        if "c" not in axes:
            raise InputError("channels given, but the input has no c axis")
        ci = axes.index("c")
        channels = [int(c) for c in ([channels] if np.ndim(channels) == 0 else channels)]
        bad = [c for c in channels if not 0 <= c < data.shape[ci]]
        if bad or not channels:
            raise InputError(f"channels {bad or channels} out of range 0-{data.shape[ci] - 1}")
        selection[ci] = channels
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
    solver_shape = tuple(layout.shape[i] for i in (layout.k, layout.y, layout.x) if i is not None)
    check_image(_Shape(solver_shape, data.dtype), params)
    the_plan = make_plan(layout, params, chunks=run.get("chunks"), depth=run.get("depth"),
                         task_memory=run.get("task_memory") or 512 * 2**20, min_tasks=run.get("min_tasks") or 1)
    return {"layout": layout, "params": params, "plan": the_plan, "selection": selection, "data": data, "src": src}


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
    if not (0 <= a < b <= n):
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
            raise InputError(f"resolution needs the pixel size along {name}, which the input's metadata does not give: use fwhm")
        sizes.append(size)
    return [v / s for v, s in zip(values, sizes)]


def _stored_config(destination) -> dict:
    """The run configuration recorded in an unfinished output ({} if none)."""
    import zarr

    try:
        info = zarr.open_group(os.fspath(destination), mode="r").attrs.asdict().get("bigdecon", {})
    except Exception:
        return {}
    return info.get("config") or {} if isinstance(info, dict) else {}


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
        Input OME-Zarr (NGFF 0.4/0.5) or TIFF; output OME-Zarr path.
    fwhm, resolution, psf
        PSF size in input pixels, or in the metadata's physical units, or a
        measured PSF array.
    sparse_iters, fidelity, sparsity, tcontinuity, background, deconv_iters, deconv_type, up_sample
        As in :func:`bigdecon.sparse_deconvolve`.
    channels : int or list of int, optional
        Channels to process (default all).
    timepoints : str or (int, int), optional
        ``"a:b"``: time points a to b-1.
    chunks : dict or sequence, optional
        Step-4 block size, e.g. ``{"t": 16, "y": 512, "x": 512}``.
    depth : dict or int, optional
        Step-4 halo per axis, overriding :func:`default_depth`.
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
    device : {"auto", "cpu", "gpu"}
        Where workers run the solvers: ``auto`` uses a worker's GPU (CuPy)
        when it has one. A block moves to the GPU once; only the result returns.

    Returns
    -------
    dict
        ``output``, ``shape``, ``seconds``, ``voxels``, ``chunks``, ``stats``.
    """
    from .io import OmeZarrWriter, check_output_path, open_image

    t0 = time.perf_counter()
    src = open_image(source)
    check_output_path(source, destination)
    # Default blocks are sized so every worker thread has work; a resumed run
    # keeps the sizing of the run it continues, whatever cluster it has now.
    min_tasks = _cluster_threads(client) * 2
    if task_memory is None and chunks is None and device != "cpu":
        task_memory = _gpu_task_memory(client)  # chunk size from the card's memory
    if resume:
        min_tasks = _stored_config(destination).get("min_tasks", min_tasks)
    job = _prepare(
        src,
        dict(fwhm=fwhm, resolution=resolution, psf=psf, sparse_iters=sparse_iters, fidelity=fidelity,
             sparsity=sparsity, tcontinuity=tcontinuity, background=background, deconv_iters=deconv_iters,
             deconv_type=deconv_type, up_sample=up_sample, channels=channels, timepoints=timepoints,
             chunks=chunks, depth=depth, task_memory=task_memory, min_tasks=min_tasks),
    )
    layout, params, the_plan = job["layout"], job["params"], job["plan"]
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

    run_record = {
        "params": params.to_dict(),
        "channels": channels,
        "timepoints": timepoints,
        "shape": list(the_plan.out_shape),
        "chunks": list(the_plan.out_chunks),
        "sparse_block": the_plan.sparse_block,
        "depth": the_plan.depth,
        "output_dtype": str(dtype),
        "source": os.fspath(source),
        "min_tasks": min_tasks,
    }
    scale_meta = dict(src.scale)
    if params.up_sample:
        for ax in ("y", "x"):
            if ax in scale_meta:
                scale_meta[ax] = scale_meta[ax] / 2
    channels_meta = src.channels
    if channels is not None and src.channels:
        channels_meta = [src.channels[c] for c in job["selection"][layout.axes.index("c")] if c < len(src.channels)]
    # The data set's statistics (and its NaN/inf check) come before anything is
    # written, so bad pixels leave no output behind; a resumed run reuses its own.
    stats = None
    if resume:
        stats = Ledger(os.path.join(os.fspath(destination), ".bigdecon-work")).get("stats")
    if stats is None:
        scale, mean = _source_stats(job["data"], layout)
        stats = {"scale": scale, "mean": mean}
    writer = OmeZarrWriter(
        destination,
        shape=the_plan.out_shape,
        axes=layout.axes,
        chunks=the_plan.out_chunks,
        dtype=str(dtype),
        scale=scale_meta,
        units=src.units,
        translation=src.translation,
        channels=channels_meta,
        ngff_version=ngff_version,
        overwrite=overwrite,
        resume=resume,
        run_config=run_record,
    )
    work = os.path.join(writer.path, ".bigdecon-work")
    ledger = Ledger(work)
    import zarr

    ledger.put("stats", stats)
    task = {
        "layout": layout,
        "params": params,
        "plan": the_plan,
        "source": os.fspath(source),
        "selection": job["selection"],
        "scale": stats["scale"],
        "mean": stats["mean"],
        "h": os.path.join(work, "h.zarr"),
        "g": os.path.join(work, "g.zarr"),
        "output": writer.path,
        "dtype": str(dtype),
        "psf": output_psf(params, 3 if layout.k is not None else 2),
        "run_id": f"{os.getpid()}-{time.monotonic_ns()}",
        "device": device,
    }
    plane_tasks = the_plan.plane_tasks()
    sparse_tasks = the_plan.sparse_tasks() if params.sparse_iters else []
    total = len(plane_tasks) * (2 if the_plan.needs_preprocess else 1) + len(sparse_tasks)
    counter = {"done": 0, "total": total}
    ndim = len(layout.axes)

    def work_array(path: str, chunk_shape) -> None:
        if not os.path.exists(path):
            zarr.create_array(path, shape=the_plan.out_shape, chunks=tuple(int(c) for c in chunk_shape), dtype="float32", fill_value=0.0, zarr_format=3)

    if the_plan.needs_preprocess:
        chunk = [1] * ndim
        if layout.k is not None:
            chunk[layout.k] = plane_tasks[0][layout.k][1] - plane_tasks[0][layout.k][0]
        chunk[layout.y], chunk[layout.x] = the_plan.out_shape[layout.y], the_plan.out_shape[layout.x]
        work_array(task["h"], chunk)
        records = _run_tasks(_task_preprocess, task, plane_tasks, "preprocess", ledger, client, progress, counter)
        task["h_max"] = _per_channel_max(records, plane_tasks, layout)
    if params.sparse_iters:
        chunk = [1] * ndim
        if layout.k is not None:
            chunk[layout.k] = the_plan.sparse_block["k"]
        chunk[layout.y], chunk[layout.x] = the_plan.sparse_block["y"], the_plan.sparse_block["x"]
        work_array(task["g"], chunk)
        records = _run_tasks(_task_sparse, task, sparse_tasks, "sparse", ledger, client, progress, counter)
        task["g_max"] = _per_channel_max(records, sparse_tasks, layout)
    records = _run_tasks(_task_final, task, plane_tasks, "final", ledger, client, progress, counter)
    seconds = time.perf_counter() - t0
    attrs = {
        "version": __version__,
        "parameters": params.to_dict(),
        "statistics": {"raw_max": stats["scale"], "raw_mean_normalised": stats["mean"],
                       "max_after_preprocess": task.get("h_max"), "max_after_sparse": task.get("g_max")},
        "depth": the_plan.depth,
        "config": config or {},
        "seconds": round(seconds, 3),
    }
    writer.finalize(attrs=attrs)
    shutil.rmtree(work, ignore_errors=True)
    voxels = int(np.prod(layout.shape))
    return {
        "output": os.fspath(destination),
        "shape": list(the_plan.out_shape),
        "seconds": time.perf_counter() - t0,
        "voxels": voxels,
        "chunks": total,
        "stats": attrs["statistics"],
    }
