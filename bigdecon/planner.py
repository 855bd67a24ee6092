"""The plan of a chunked run: block grids, halo depths and output chunks.

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

:func:`make_plan` chooses those blocks for a data set's :class:`Layout`; the
passes (:mod:`bigdecon.passes`) run them.

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
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .params import Params
from .stages import is_coupled, output_psf

__all__ = ["WORKSET_FACTOR", "Layout", "Plan", "Region", "default_depth", "make_plan"]

# A block of a pass: axis position -> (start, stop) over the output grid.
Region = dict[int, tuple[int, int]]

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

    def outer_indices(self) -> Iterator[tuple[int, ...]]:
        """Every index over the outer axes: one independent problem each."""
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


@dataclass(frozen=True)
class Plan:
    """Block grids of every pass, and what a worker needs for one task.

    Frozen: a plan is the contract between the run and its tasks, which
    receive it pickled; a change of parameters makes a new plan
    (:func:`dataclasses.replace`).
    """

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
    psf_z: int = 0  # planes of a 3-D PSF: a whole-volume task is padded by as many on each side

    # Blocks are dicts axis-position -> (start, stop) over the output grid.
    def _outer_regions(self) -> Iterator[Region]:
        for idx in self.layout.outer_indices():
            yield {ax: (i, i + 1) for ax, i in zip(self.layout.outer, idx)}

    def plane_tasks(self, whole_volumes: bool = False) -> list[Region]:
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

    def final_tasks(self) -> list[Region]:
        """Tasks of steps 5-6: whole planes, or whole volumes for a 3-D PSF."""
        return self.plane_tasks(whole_volumes=self.volumetric and self.params.deconvolves)

    def sparse_tasks(self) -> list[Region]:
        """Step-4 blocks of ``sparse_block`` (without their halo)."""
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

    def halo(self, region: Region) -> Region:
        """The region grown by the step-4 halo, clipped at the data set's faces."""
        lay = self.layout
        grown = dict(region)
        for ax, name in ((lay.k, "k"), (lay.y, "y"), (lay.x, "x")):
            if ax is None:
                continue
            a, b = region[ax]
            grown[ax] = (max(0, a - self.depth[name]), min(self.out_shape[ax], b + self.depth[name]))
        return grown

    def summary(self) -> dict[str, Any]:
        """The plan as :func:`bigdecon.plan` reports it (JSON-friendly)."""
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
        final_planes = lay.n_planes + 2 * self.psf_z if whole_volumes else self.plane_group
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
    chunks: Mapping[str, int] | Sequence[int] | None = None,
    depth: Mapping[str, int] | int | None = None,
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
        if isinstance(depth, Mapping):
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

    def block_bytes(b: dict[str, int]) -> int:
        return 4 * WORKSET_FACTOR * math.prod(min(n, b[a] + 2 * d[a]) for n, a in ((K, "k"), (Y, "y"), (X, "x")))

    if chunks is None:
        # A large memory budget (a GPU worker's card) takes larger blocks: less halo per voxel.
        while block_bytes({**block, "y": 2 * block["y"], "x": 2 * block["x"]}) <= task_memory and (
            block["y"] < Y or block["x"] < X
        ):
            block["y"], block["x"] = min(Y, 2 * block["y"]), min(X, 2 * block["x"])

    def n_blocks(b: dict[str, int]) -> int:
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
        if isinstance(chunks, Mapping):
            named = _solver_axes_only(layout, named, "chunks")
        for name in ("y", "x"):
            if name in named:
                block[name] = named[name]
        k_name = _k_name(layout)
        if k_name is not None and k_name in named:
            block["k"] = named[k_name]
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
        psf_z=_psf_planes(params),
    )


def _psf_planes(params: Params) -> int:
    """Planes of step 5's 3-D PSF (0 for plane-by-plane deconvolution)."""
    if not (params.volumetric and params.deconvolves):
        return 0
    psf = output_psf(params, 3)
    return int(psf.shape[0]) if psf is not None else 0


def _k_name(layout: Layout) -> str | None:
    """The name of the third solver axis (z, or t without z), None for single planes."""
    return layout.axes[layout.k] if layout.k is not None else None


def _solver_axes_only(layout: Layout, sizes: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Reject names that are not solver axes of this data set, with the reason."""
    k_name = _k_name(layout)
    allowed = [a for a in (k_name, "y", "x") if a]
    out = {}
    for key, value in sizes.items():
        name = str(key)
        if name == "k" and k_name:
            name = k_name
        if name not in allowed:
            if name in layout.axes:
                why = (
                    "channels are processed one at a time" if name == "c" else f"each {name} is a separate problem here"
                )
                raise InputError(f"{what} along {name} cannot be set: {why} (solver axes: {', '.join(allowed)})")
            raise InputError(f"{what} names axis {name!r}, which the input ({''.join(layout.axes)}) does not have")
        out[name] = value
    return out


def _named_chunks(layout: Layout, chunks: Mapping[str, int] | Sequence[int]) -> dict[str, int]:
    """Chunk sizes by axis name, from a dict or one size per (solver) axis."""
    if isinstance(chunks, Mapping):
        return {str(k): int(v) for k, v in chunks.items()}
    chunks = [int(c) for c in chunks]
    inner = [layout.axes[i] for i in (layout.k, layout.y, layout.x) if i is not None]
    if len(chunks) == len(layout.axes):
        return dict(zip(layout.axes, chunks))
    if len(chunks) == len(inner):
        return dict(zip(inner, chunks))
    raise InputError(f"chunks needs {len(inner)} values ({', '.join(inner)}) or one per axis, got {len(chunks)}")
