"""The plan of a chunked run: block grids, halo depths and output chunks.

The method has three kinds of steps, and each is chunked the way its reach allows:

* steps 1-3 (scale, wavelet background, up-sampling) and the published 2-D
  steps 5-6 (Richardson-Lucy or Landweber, plane by plane) run on **whole
  planes**: the background reaches ~1,400 px and the accelerated
  Richardson-Lucy's adaptive alpha is a sum over the plane, so any split in
  y/x would change the result;
* step 4 (sparse Hessian, 100 split-Bregman iterations, the expensive part) runs
  on **blocks with a halo** in k (t or z), y and x, cut from the whole data set
  and clipped at its outer faces, where the solver's own mirror boundary
  applies. Only the block's interior is kept;
* steps 5-6 with a 3-D PSF run on their own **(z, y, x) blocks with a halo**
  (:attr:`Plan.deconv_block`, :func:`deconv_halo`): the accelerated
  Richardson-Lucy then uses the Nesterov alpha schedule (a function of the
  iteration number only, in the whole-volume path too), the block pads only
  the sides on a face of the data set, and its interior equals the whole
  volume's result (``docs/step5_blocks.md``). Wiener-Butterworth (deconv_type
  3) gets blocks with every PSF that takes the mirror boundary, its back
  projector a finite kernel
  (:func:`~bigdecon.solvers.wiener_butterworth.blocks_allowed`); an
  asymmetric PSF gets one block per volume.

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

Blocks of 3-D step 5
--------------------
Memory per task follows the block alone: ``DECONV_BYTES`` per voxel of the
block's transform (the block grown by the halo, rounded up to a fast FFT
length; at a face on the edge path, its padding), measured by
``benchmarks/measure_step5_halo.py``; on the mirror path (no padding)
``DECONV_BYTES_MIRROR``, plus Wiener-Butterworth's kernel design
(:func:`deconv_fixed_bytes`), measured by ``benchmarks/measure_model_memory.py``. :func:`make_plan` picks, among block
sizes that fit ``task_memory``, the one with the least transform work over
the data set (halo overhead and FFT lengths included).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from .errors import InputError
from .params import DEFAULTS, Params
from .solvers.richardson_lucy import (
    boundary_rule,
    deconv_halo,
    fast_length,
    padded_geometry,
    psf_half_support,
    psf_step,
)
from .solvers.wiener_butterworth import blocks_allowed
from .stages import deconv_kind, is_coupled, output_psf

__all__ = [
    "DECONV_BYTES",
    "DECONV_BYTES_MIRROR",
    "WORKSET_FACTOR",
    "Layout",
    "Plan",
    "Region",
    "deconv_bytes",
    "deconv_fixed_bytes",
    "deconv_grown",
    "default_depth",
    "make_plan",
]

# A block of a pass: axis position -> (start, stop) over the output grid.
Region = dict[int, tuple[int, int]]


@dataclass(frozen=True)
class Blocks(Sequence[Region]):
    """The tasks of a pass: every combination of per-axis spans, made as they are asked for.

    A list of 1e6 region dicts would cost the driver ~200 MB; this holds only
    the spans of each axis (``axes[i]`` takes its spans from ``spans[i]``, the
    last axis varying fastest).

    Examples
    --------
    >>> blocks = Blocks((0, 1), (((0, 1), (1, 2)), ((0, 4), (4, 6))))
    >>> len(blocks), blocks[1], list(blocks)[-1]
    (4, {0: (0, 1), 1: (4, 6)}, {0: (1, 2), 1: (4, 6)})
    >>> blocks[::3] == [blocks[0], blocks[3]]
    True
    """

    axes: tuple[int, ...]
    spans: tuple[tuple[tuple[int, int], ...], ...]

    def __len__(self) -> int:
        return math.prod(len(s) for s in self.spans)

    def __iter__(self) -> Iterator[Region]:
        for combo in itertools.product(*self.spans):
            yield dict(zip(self.axes, combo))

    @overload
    def __getitem__(self, index: int) -> Region: ...

    @overload
    def __getitem__(self, index: slice) -> list[Region]: ...

    def __getitem__(self, index: int | slice) -> Region | list[Region]:
        n = len(self)
        if isinstance(index, slice):  # a list, as a list's slice would be
            return [self[i] for i in range(*index.indices(n))]
        if not -n <= index < n:
            raise IndexError(f"block {index} of {n}")
        index %= n
        picks = []
        for spans in reversed(self.spans):  # the last axis varies fastest
            index, j = divmod(index, len(spans))
            picks.append(spans[j])
        return dict(zip(self.axes, reversed(picks)))


# Bytes of working memory per voxel of a block, measured by benchmarks/bench_solvers.py
# (peak RSS / float32 input size): sparse Hessian ~13x, Richardson-Lucy on padded planes ~12x.
# The sparse step's extension beyond the data set's faces (1 sample, extend_faces) included:
# 45.7 B per voxel of a 64x288x512 block (11.4x; 40.0 B without it), Numba compiled beforehand.
WORKSET_FACTOR = 14

# Peak bytes of one 3-D step-5 block task per voxel of its transform (the padded
# block), input block included, with an asymmetric (measured) PSF, whose complex OTF costs more
# than a symmetric one's: measured 34.8-35.2 B for schedule-alpha RL and 35.2-38.9 B for Landweber
# (`benchmarks/measure_step5_halo.py --only memory --boundary edge --memory-psf asymmetric`,
# docs/step5_blocks.md), rounded up; the mirror path needs less (25-28 B for schedule-alpha RL).
# One real task of a run (`benchmarks/measure_model_memory.py --task --asymmetric`: store read,
# solve, write) peaked 36.5 B per transform voxel above its I/O (TASK_IO_BYTES) for RL, so RL is
# charged 39 (was 36); Landweber's 39 held (1454 MiB peak against 1546 charged at 160x384x384).
# Wiener-Butterworth on the edge path runs one task per volume (blocks_allowed).
DECONV_BYTES = {"rl-schedule": 39, "landweber": 39, "wb": 38}

# The same on the mirror path (a symmetric PSF: every Gaussian and optics model; blocks transformed
# at their own length, real DCT-II): measured 28.2-29.6 B for schedule-alpha RL, 36.2-37.0 B for
# Landweber and 24.6-27.5 B for Wiener-Butterworth per voxel of blocks of 2.4-23.6 Mvoxel, with the
# NA 1.1 widefield model (41x61x61) and a Gaussian (25x15x15), one task's own function in a fresh
# process (`benchmarks/measure_model_memory.py`, docs/step5_blocks.md), plus ~8 % margin.
DECONV_BYTES_MIRROR = {"rl-schedule": 32, "landweber": 40, "wb": 29}

# Step 5 split into passes of a few iterations (mirror path, the solver state read from scratch with
# the block; RL, Landweber: y and x_prev, WB: x). One real pass task of 96x256x256 with the NA 1.1
# model (benchmarks/measure_pass_memory.py, two runs) peaked RL 34.8-39.9, Landweber 45.5-47.5, WB
# 32.0-33.0 B per voxel above its I/O, the WB kernel's design included; charged ~10 % above.
DECONV_BYTES_PASSES = {"rl-schedule": 44, "landweber": 52, "wb": 36}

# Wiener-Butterworth designs its back projector's kernel (4 PSF half-supports + 1 per axis) in each
# task: a fixed cost on top of the per-voxel one, measured 23-30 MiB for the 41x61x61 model's
# 81x121x121 kernel box (37 MiB peak for a 0.5 Mvoxel block where the per-voxel cost alone is 15).
WB_KERNEL_BYTES = 24

# What a real step-5 task holds beyond its solver: the store's chunks read and decoded, the output
# chunks encoded and written. One task of a run on a uint16 OME-Zarr (`measure_model_memory.py
# --task`) peaks 29.4 B per voxel (RL 7) above a fixed ~39 MiB; charged on every path.
TASK_IO_BYTES = 40 * 2**20


def deconv_bytes(kind: str, mirror: bool) -> int:
    """Peak bytes per transform voxel of a 3-D step-5 block task (:data:`DECONV_BYTES`, or
    :data:`DECONV_BYTES_MIRROR` on the mirror path).

    Examples
    --------
    >>> deconv_bytes("rl-schedule", False), deconv_bytes("rl-schedule", True)
    (39, 32)
    """
    return (DECONV_BYTES_MIRROR if mirror else DECONV_BYTES)[kind]


def deconv_fixed_bytes(kind: str, psf_shape: Sequence[int], mirror: bool = False) -> int:
    """Bytes a 3-D step-5 task needs beyond its per-voxel cost: its reads and writes
    (:data:`TASK_IO_BYTES`) and, on the mirror path, Wiener-Butterworth's kernel design
    (:data:`WB_KERNEL_BYTES` per voxel of its ``4 * (n // 2) + 1`` box).

    Examples
    --------
    >>> deconv_fixed_bytes("wb", (41, 61, 61), True) // 2**20, deconv_fixed_bytes("rl-schedule", (41, 61, 61)) // 2**20
    (67, 40)
    """
    if kind != "wb" or not mirror:
        return TASK_IO_BYTES
    return TASK_IO_BYTES + WB_KERNEL_BYTES * math.prod(4 * (int(n) // 2) + 1 for n in psf_shape)


# Output chunks stay at most this long (k, y/x) where a step-5 block is longer.
_OUT_CHUNK_CAP = {"k": 64, "y": 512, "x": 512}


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


@dataclass(frozen=True)
class Spans(Sequence[tuple[int, int]]):
    """:func:`_spans` made as they are asked for: the task grid of an axis of a
    billion declared planes costs nothing until its tasks are run.

    Examples
    --------
    >>> Spans(10, 4)[-1], len(Spans(10**12, 1)), list(Spans(5, 2)) == _spans(5, 2)
    ((8, 10), 1000000000000, True)
    """

    n: int
    size: int

    def __len__(self) -> int:
        return -(-self.n // self._step)

    @property
    def _step(self) -> int:
        return max(1, min(int(self.size), self.n))

    @overload
    def __getitem__(self, index: int) -> tuple[int, int]: ...

    @overload
    def __getitem__(self, index: slice) -> list[tuple[int, int]]: ...

    def __getitem__(self, index: int | slice) -> tuple[int, int] | list[tuple[int, int]]:
        n = len(self)
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(n))]
        if not -n <= index < n:
            raise IndexError(f"span {index} of {n}")
        start = (index % n) * self._step
        return (start, min(start + self._step, self.n))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for start in range(0, self.n, self._step):
            yield (start, min(start + self._step, self.n))


def default_depth(params: Params, *, upsampled: bool | None = None) -> dict[str, int]:
    """Halo of the sparse-Hessian step per axis name (``k``, ``y``, ``x``), in output pixels."""
    # Measured at the model's defaults (the module's docstring: fidelity 150, tcontinuity 0.5).
    reach = (DEFAULTS.fidelity / float(params.fidelity)) ** 0.25
    k_reach = reach * (max(float(params.tcontinuity), 1e-3) / DEFAULTS.tcontinuity) ** 0.25
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
    volumetric: bool = False  # step 5 is 3-D (a 3-D PSF)
    itemsize: int = 4
    # 3-D step 5 (None otherwise): block sizes, halo and the PSF's half-support per
    # solver axis (k, y, x); the halo is the largest over the processed channels.
    deconv_block: dict[str, int] | None = None
    deconv_depth: dict[str, int] | None = None
    deconv_half: dict[str, int] | None = None
    deconv_mirror: bool = False  # the mirror path: blocks transformed at their own length (DECONV_BYTES_MIRROR)
    deconv_fixed: int = 0  # bytes per task beyond the per-voxel cost (deconv_fixed_bytes)
    deconv_pass_iters: int = 0  # step 5 in passes of this many iterations, the state in scratch (0: one pass)

    # Blocks are dicts axis-position -> (start, stop) over the output grid.
    def plane_tasks(self, whole_volumes: bool = False) -> Blocks:
        """Whole-plane tasks of ``plane_group`` planes (steps 1-3); whole volumes on request."""
        lay = self.layout
        group = lay.n_planes if whole_volumes else self.plane_group
        kspans = None if lay.k is None else Spans(lay.n_planes, group)
        return self._tasks(
            kspans,
            Spans(self.out_shape[lay.y], self.out_shape[lay.y]),
            Spans(self.out_shape[lay.x], self.out_shape[lay.x]),
        )

    def final_tasks(self) -> Blocks:
        """Tasks of steps 5-6: whole planes, or ``deconv_block`` blocks for a 3-D PSF."""
        if self.deconv_block is not None:
            return self._block_tasks(self.deconv_block)
        return self.plane_tasks()

    def sparse_tasks(self) -> Blocks:
        """Step-4 blocks of ``sparse_block`` (without their halo)."""
        return self._block_tasks(self.sparse_block)

    def _block_tasks(self, block: dict[str, int]) -> Blocks:
        lay = self.layout
        kspans = None if lay.k is None else Spans(lay.n_planes, block["k"])
        return self._tasks(kspans, Spans(self.out_shape[lay.y], block["y"]), Spans(self.out_shape[lay.x], block["x"]))

    def _tasks(
        self,
        kspans: Sequence[tuple[int, int]] | None,
        yspans: Sequence[tuple[int, int]],
        xspans: Sequence[tuple[int, int]],
    ) -> Blocks:
        """Every outer index (one plane each) x ``kspans`` (none without a k axis) x ``yspans`` x ``xspans``."""
        lay = self.layout
        axes = [*lay.outer, lay.y, lay.x]
        spans: list[Any] = [Spans(lay.shape[ax], 1) for ax in lay.outer]
        spans += [yspans, xspans]
        if kspans is not None and lay.k is not None:
            axes.insert(len(lay.outer), lay.k)
            spans.insert(len(lay.outer), kspans)
        return Blocks(tuple(axes), tuple(spans))

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

    def deconv_halo(self, region: Region) -> Region:
        """A step-5 block grown by its halo (see :func:`deconv_grown`), clipped at the faces."""
        assert self.deconv_depth is not None  # only 3-D step 5 has blocks
        lay = self.layout
        grown = dict(region)
        for ax, name in ((lay.k, "k"), (lay.y, "y"), (lay.x, "x")):
            if ax is not None:
                grown[ax] = deconv_grown(region[ax], self.deconv_depth[name], self.out_shape[ax])
        return grown

    def deconv_task_bytes(self) -> int:
        """Peak memory of the largest step-5 block task (0 without 3-D step 5)."""
        if self.deconv_block is None:
            return 0
        assert self.deconv_depth is not None and self.deconv_half is not None
        lay = self.layout
        voxels = 1
        for ax, name in ((lay.k, "k"), (lay.y, "y"), (lay.x, "x")):
            assert ax is not None  # 3-D step 5 has a k axis
            n = self.out_shape[ax]
            lengths = _deconv_lengths(n, self.deconv_block[name], self.deconv_depth[name], self.deconv_half[name])
            voxels *= lengths[2]
        kind = deconv_kind(self.params)
        per_voxel = DECONV_BYTES_PASSES[kind] if self.deconv_pass_iters else deconv_bytes(kind, self.deconv_mirror)
        return int(per_voxel * voxels) + self.deconv_fixed

    def deconv_transformed(self) -> float:
        """Voxels the step-5 blocks transform per iteration, per voxel of the data (halos included)."""
        assert self.deconv_block is not None and self.deconv_depth is not None and self.deconv_half is not None
        lay = self.layout
        total = 1.0
        for ax, name in ((lay.k, "k"), (lay.y, "y"), (lay.x, "x")):
            assert ax is not None  # 3-D step 5 has a k axis
            n = self.out_shape[ax]
            total *= _deconv_lengths(n, self.deconv_block[name], self.deconv_depth[name], self.deconv_half[name])[1]
            total /= n
        return float(total)

    def deconv_passes(self) -> list[tuple[int, int]]:
        """``(first iteration, iterations)`` of each step-5 pass: one pass unless split."""
        n = self.params.deconv_iters
        k = self.deconv_pass_iters or n
        return [(i, min(k, n - i)) for i in range(0, n, k)]

    def deconv_state_arrays(self) -> int:
        """Float32 volumes of solver state between two step-5 passes (RL, Landweber: y, x_prev; WB: x); 0 in one pass."""
        if not self.deconv_pass_iters:
            return 0
        return 1 if deconv_kind(self.params) == "wb" else 2

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
        # Whole-plane tasks: steps 1-3, and the 2-D (or no) step 5.
        plane_task = plane_vox * pad * pad * self.plane_group
        if self.deconv_block is not None and not self.needs_preprocess:
            plane_task = 0
        mem = WORKSET_FACTOR * 4 * max(math.prod(block) if self.params.sparse_iters else 0, plane_task)
        mem = max(mem, self.deconv_task_bytes())
        n_sparse = len(self.sparse_tasks()) if self.params.sparse_iters else 0
        n_plane = len(self.plane_tasks())
        n_final = len(self.final_tasks()) * len(self.deconv_passes())
        deconv = {}
        if self.deconv_block is not None:
            deconv = {
                "deconv_block": dict(self.deconv_block),
                "deconv_depth": dict(self.deconv_depth or {}),
                "deconv_tasks": n_final,
                "deconv_memory_per_task_bytes": self.deconv_task_bytes(),
                "deconv_transformed_per_iteration": round(self.deconv_transformed(), 2),
            }
            if self.deconv_pass_iters:
                deconv["deconv_passes"] = len(self.deconv_passes())
                deconv["deconv_iters_per_pass"] = self.deconv_pass_iters
                # One state is read while the next is written: twice its arrays at most, uncompressed.
                deconv["deconv_state_bytes"] = 2 * self.deconv_state_arrays() * 4 * math.prod(self.out_shape)
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
            **deconv,
        }


def deconv_grown(span: tuple[int, int], halo: int, n: int) -> tuple[int, int]:
    """A step-5 block's span grown by ``halo`` on each side, clipped at ``0`` and ``n``.

    Where neither side reaches a face, the span grows a little more, to a fast
    FFT length: the solver transforms such an axis at its own length
    (periodic; the halo absorbs the wrap), and extra halo only adds real data.
    Where a side reaches a face, the solver pads that face and picks a fast
    length itself.
    """
    a, b = span
    lo, hi = a - halo, b + halo
    if lo > 0 and hi < n:
        extra = _fast_length(hi - lo) - (hi - lo)
        lo, hi = lo - extra // 2, hi + extra - extra // 2
    return max(0, lo), min(n, hi)


def deconv_face_pad(grown: tuple[int, int], n: int, half: int) -> tuple[int, int]:
    """Edge padding of a step-5 block on one axis: the half-support on a side at a face, else 0."""
    return (half if grown[0] == 0 else 0, half if grown[1] == n else 0)


@functools.lru_cache(maxsize=4096)
def _fast_length(n: int) -> int:
    return fast_length(n)


@functools.lru_cache(maxsize=4096)
def _transform_length(length: int, pad: tuple[int, int], half: int) -> int:
    """What the solver transforms along an axis of ``length`` with ``pad`` (its own geometry; ``half`` 0:
    the mirror path, its own length)."""
    if half == 0:
        return length
    ((_lo, _hi, total),) = padded_geometry((length,), (2 * half + 1,), [pad])
    return total


@functools.lru_cache(maxsize=16384)
def _deconv_lengths(n: int, block: int, halo: int, half: int) -> tuple[int, int, int]:
    """(count, total, longest) of the transform lengths of the step-5 blocks along one axis.

    Blocks out of reach of both faces all transform the same length: the few
    near a face are measured and one inner block stands for the rest.
    """

    def length(i: int) -> int:
        grown = deconv_grown((i * block, min((i + 1) * block, n)), halo, n)
        return _transform_length(grown[1] - grown[0], deconv_face_pad(grown, n, half), half)

    count = -(-n // block)
    reach = halo + _fast_length(block + 2 * halo)  # the most a block grows on one side
    near = min(count, -(-reach // block) + 2)
    edge = sorted(set(range(near)) | set(range(count - near, count)))
    lengths = [length(i) for i in edge]
    inner = count - len(edge)
    if inner:
        lengths.append(length(near))
    return count, sum(lengths) + (inner - 1) * lengths[-1] if inner else sum(lengths), max(lengths)


def _block_candidates(n: int, unit: int, cap: int) -> list[int]:
    """Block lengths tried along an axis: multiples of ``unit`` up to ``cap``, of ``cap // 4`` beyond
    (so an output chunk of at least ``unit``, at most ``cap``, divides each), the whole axis, and
    1 .. unit - 1 on a short axis."""
    # Beyond 256 caps the step grows: a block that long is never the one that fits best,
    # and a declared billion planes must not make a billion candidates.
    far = min(n, 256 * cap)
    sizes = set(range(unit, min(n, cap + 1), unit)) | set(range(cap // 4, far, cap // 4)) | {n}
    sizes |= set(range(far, n, max(cap // 4, n // 64)))
    if n < 8 * unit:
        sizes |= set(range(1, min(unit, n)))
    return sorted(b for b in sizes if b <= n)


def _deconv_block(
    sizes: dict[str, int],
    depth: dict[str, int],
    half: dict[str, int],
    bytes_per_voxel: int,
    task_memory: int,
    min_tasks: int,
    n_outer: int,
) -> dict[str, int]:
    """The step-5 block (k, y, x) with the least transform work per thread that fits ``task_memory``.

    Work is the sum of the blocks' transform sizes over the data set (what the
    halo and the FFT lengths cost), run on ``min_tasks`` worker threads
    (:func:`_makespan`: a last wave that leaves threads idle counts); among
    blocks that fit, those giving at least ``min_tasks`` tasks are preferred. Lengths come from
    :func:`_block_candidates`, so output chunks can divide them. When even the
    smallest block does not fit, the budget is twice what the smallest needs.
    """
    names = ("k", "y", "x")
    tables = {}
    for a in names:
        cands = _block_candidates(sizes[a], 4 if a == "k" else 16, _OUT_CHUNK_CAP[a])
        lengths = [_deconv_lengths(sizes[a], b, depth[a], half[a]) for b in cands]
        tables[a] = (
            np.array(cands),
            np.array([ls[2] for ls in lengths], dtype=np.float64),
            np.array([ls[1] for ls in lengths], dtype=np.float64),
            np.array([ls[0] for ls in lengths], dtype=np.float64),
        )
    ky, yy, xy = tables["k"], tables["y"], tables["x"]
    budget = task_memory / bytes_per_voxel
    mem_yx = yy[1][:, None] * xy[1][None, :]
    work_yx = yy[2][:, None] * xy[2][None, :]
    tasks_yx = yy[3][:, None] * xy[3][None, :] * n_outer
    threads = max(1, min_tasks)
    # Best (time, k index, y index, x index) among blocks giving enough tasks, and among all that fit.
    best: dict[bool, tuple[float, int, int, int]] = {}
    smallest: tuple[float, int, int, int] | None = None
    for i in range(len(ky[0])):
        mem = ky[1][i] * mem_yx
        j, m = np.unravel_index(int(np.argmin(mem)), mem.shape)
        if smallest is None or mem[j, m] < smallest[0]:
            smallest = (float(mem[j, m]), i, int(j), int(m))
        fits = mem <= budget
        if not fits.any():
            continue
        tasks = ky[3][i] * tasks_yx
        est = _makespan(tasks, ky[2][i] * work_yx * n_outer, mem, threads)
        for enough in (True, False):
            ok = fits & (tasks >= min_tasks) if enough else fits
            if not ok.any():
                continue
            t = np.where(ok, est, np.inf)
            cy, cx = _cheapest(t, tasks)
            if enough not in best or t[cy, cx] < best[enough][0] * 0.999:
                best[enough] = (float(t[cy, cx]), i, cy, cx)
    assert smallest is not None
    if not best:
        # Nothing fits: the halo alone is over budget. Take twice the least a block needs,
        # rather than blocks of a voxel that cost as much.
        return _deconv_block(sizes, depth, half, 1, int(2 * smallest[0]), min_tasks, n_outer)
    _, bi, bj, bm = best.get(True) or best[False]
    return {"k": int(ky[0][bi]), "y": int(yy[0][bj]), "x": int(xy[0][bm])}


def _spans_grown(n: int, block: int, halo: int) -> tuple[int, int, int]:
    """(count, total length, longest) of the blocks along an axis once grown by ``halo`` and clipped
    at the faces. Only the blocks near a face differ from the rest: a few are measured, however long
    the axis (a declared billion planes costs no more than a thousand).

    Examples
    --------
    >>> _spans_grown(10, 4, 1), _spans_grown(10**12, 8, 4)
    ((3, 14, 6), (125000000000, 1999999999992, 16))
    """
    count = -(-n // block)
    near = min(count, -(-halo // block) + 2)  # blocks within reach of a face
    edge = sorted(set(range(near)) | set(range(count - near, count)))
    lengths = [min((i + 1) * block + halo, n) - max(i * block - halo, 0) for i in edge]
    inner = count - len(edge)  # each a whole block grown on both sides
    return count, sum(lengths) + inner * (block + 2 * halo), max(lengths + ([block + 2 * halo] if inner else []))


# Work one extra task costs, in voxels of a step-4 block (reading, writing and
# scheduling it); it only breaks ties between cuts that solve as many voxels.
_TASK_VOXELS = 2**16


def _sparse_candidates(n: int, unit: int, cap: int) -> list[int]:
    """Step-4 block lengths tried along an axis: multiples of ``unit`` up to ``cap``, and the whole axis."""
    return sorted({b for b in range(unit, min(n, cap) + 1, unit)} | {n})


def _sparse_block(
    sizes: dict[str, int], depth: dict[str, int], task_memory: int, threads: int, n_outer: int
) -> dict[str, int]:
    """The default step-4 block (k, y, x): the least work per worker thread that fits ``task_memory``.

    A block's memory is ``4 * WORKSET_FACTOR`` bytes per voxel of the block
    grown by its halo. The work of a cut is the voxels its blocks solve
    (grown by the halo, clipped at the faces), run on ``threads`` threads
    (:func:`_makespan`): a last wave that leaves threads idle counts, so a
    small data set is cut into as many blocks as threads (not more) along the
    axes where the halo costs least, and a large one into the largest blocks
    that fit. At least ``threads`` blocks where the data allow. When no block
    fits, the one needing the least memory.

    Examples
    --------
    >>> _sparse_block({"k": 64, "y": 512, "x": 512}, {"k": 8, "y": 16, "x": 16}, 512 * 2**20, 2, 1)
    {'k': 64, 'y': 256, 'x': 512}
    """
    names = ("k", "y", "x")
    tables = {}
    for a in names:
        cands = _sparse_candidates(sizes[a], 8 if a == "k" else 64, 256 if a == "k" else 4096)
        grown = [_spans_grown(sizes[a], b, depth[a]) for b in cands]
        tables[a] = (
            np.array(cands),
            np.array([min(sizes[a], b + 2 * depth[a]) for b in cands], dtype=np.float64),  # memory
            np.array([g[1] for g in grown], dtype=np.float64),  # voxels solved along the axis
            np.array([g[0] for g in grown], dtype=np.float64),  # blocks along the axis
            np.array([g[2] for g in grown], dtype=np.float64),  # the longest grown block
        )
    k, y, x = tables["k"], tables["y"], tables["x"]
    mem = k[1][:, None, None] * y[1][None, :, None] * x[1][None, None, :] * 4 * WORKSET_FACTOR
    tasks = k[3][:, None, None] * y[3][None, :, None] * x[3][None, None, :] * n_outer
    work = k[2][:, None, None] * y[2][None, :, None] * x[2][None, None, :] * n_outer + _TASK_VOXELS * tasks
    largest = k[4][:, None, None] * y[4][None, :, None] * x[4][None, None, :] + _TASK_VOXELS
    cost = _makespan(tasks, work, largest, threads)
    ok = mem <= task_memory
    if not ok.any():
        ok = mem == mem.min()
    enough = ok & (tasks >= min(threads, tasks.max()))
    if enough.any():
        ok = enough
    i, j, m = _cheapest(np.where(ok, cost, np.inf), tasks)
    return {"k": int(k[0][i]), "y": int(y[0][j]), "x": int(x[0][m])}


def _cheapest(cost: Any, tasks: Any) -> tuple[int, ...]:
    """Index of the least ``cost``; among costs within 0.1% of it (equal times), the fewest ``tasks``."""
    near = cost <= cost.min() * 1.001
    return tuple(int(i) for i in np.unravel_index(int(np.argmin(np.where(near, tasks, np.inf))), cost.shape))


def _makespan(tasks: Any, work: Any, largest: Any, threads: int) -> Any:
    """Time to run ``tasks`` tasks of ``work`` in all, the largest ``largest``, on ``threads`` threads.

    Whole waves of the largest task, or the bound of list scheduling (an even
    share plus at most one task), whichever is less: exact for equal tasks,
    close for many unequal ones. Works on arrays.
    """
    waves = np.ceil(tasks / threads) * largest
    return np.minimum(waves, work / threads + largest * (1 - 1 / threads))


def _plane_group(n_planes: int, most: int, threads: int, n_outer: int) -> int:
    """Planes per whole-plane task: at most ``most``, balanced over ``threads``.

    The least time over ``threads`` threads (:func:`_makespan`, in planes),
    at least ``threads`` tasks where the data allow; among equal ones, the
    largest group (fewest tasks).

    Examples
    --------
    >>> _plane_group(64, 20, 2, 1)  # 4 tasks of 16 planes rather than 20, 20, 20 and 4
    16
    """
    best: tuple[float, int] | None = None
    for group in range(max(1, most), 0, -1):
        tasks = n_outer * -(-n_planes // group)
        if tasks < min(threads, n_outer * n_planes):
            continue
        cost = float(_makespan(tasks, n_outer * n_planes + 1e-3 * tasks, group + 1e-3, threads))
        if best is None or cost < best[0] * (1 - 1e-9):
            best = (cost, group)
    return best[1] if best is not None else 1


def _divisor_chunk(block: int, n: int, cap: int, default: int) -> int:
    """An output chunk length that tiles a step-5 block: the largest divisor <= cap."""
    if block >= n:
        return default
    return max(d for d in range(1, min(block, cap) + 1) if block % d == 0)


def make_plan(
    layout: Layout,
    params: Params,
    *,
    chunks: Mapping[str, int] | Sequence[int] | None = None,
    depth: Mapping[str, int] | int | None = None,
    task_memory: int = 512 * 2**20,
    min_tasks: int = 1,
    deconv_chunks: Mapping[str, int] | Sequence[int] | None = None,
    psf_shapes: Sequence[Any] | None = None,
    wb_blocks: bool | None = None,
    mirror: bool | None = None,
    split: bool = True,
) -> Plan:
    """Choose block sizes, halo depths and output chunks for a data set.

    ``min_tasks`` is the number of worker threads the run has (one block
    each at least). Without explicit ``chunks``, step-4 blocks are chosen by
    :func:`_sparse_block`: among those that fit ``task_memory`` with their
    halo, the ones with the least work per thread, halo voxels and the idle
    threads of an unfinished last wave included; whole-plane tasks are
    balanced the same way (:func:`_plane_group`).

    With a 3-D PSF, step 5 gets its own blocks (``deconv_chunks``, or chosen
    so that one block task fits ``task_memory``, see :func:`_deconv_block`),
    with the halo of :func:`~bigdecon.solvers.richardson_lucy.deconv_halo`
    for the largest of ``psf_shapes`` (the step-5 PSF of every processed
    channel, its shape or the array itself; by default the array of ``params``).
    An array's halo follows its light (:func:`~bigdecon.solvers.richardson_lucy.psf_step`). Output chunks then tile the
    step-5 blocks, so no two tasks write one stored chunk. ``wb_blocks``: whether
    3-D Wiener-Butterworth (deconv_type 3) may run on blocks, for every
    channel's PSF (:func:`~bigdecon.solvers.wiener_butterworth.blocks_allowed`;
    default: for the PSF of ``params``); if not, each volume is one step-5 task.
    ``mirror``: whether every channel's step-5 PSF takes the mirror boundary
    (:func:`~bigdecon.solvers.richardson_lucy.boundary_rule`; default: the PSF
    of ``params``): its blocks are transformed at their own length, faces
    included, so memory counts no face padding. ``split``: whether step 5 may run
    in passes of a few iterations when one pass does not fit ``task_memory``
    (:func:`_split_plan`).
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
    n_outer = math.prod(layout.shape[i] for i in layout.outer)
    threads = max(1, int(min_tasks))
    if chunks is None:
        block = _sparse_block({"k": K, "y": Y, "x": X}, d, task_memory, threads, n_outer)
    else:
        block = {"k": min(K, 32), "y": min(Y, 256), "x": min(X, 256)}
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
        group = _plane_group(K, group, threads, n_outer)
    out_chunks = []
    for i in range(len(layout.axes)):
        if i in layout.outer:
            out_chunks.append(1)
        elif i == layout.k:
            out_chunks.append(group)
        else:
            out_chunks.append(min(out_shape[i], 512))
    deconv: dict[str, Any] = {}
    if params.volumetric and params.deconvolves and layout.k is not None:
        # Wiener-Butterworth (deconv_type 3) on blocks only with a symmetric PSF (mirror faces, a
        # finite back projector kernel), else one block per volume: edge-padded block faces ring,
        # ~2e-2 of the maximum at any halo (blocks_allowed).
        if params.deconv_type == 3 and not (_wb_blocks(params) if wb_blocks is None else wb_blocks):
            deconv_chunks = (K, Y, X)
        if mirror is None:
            mirror = _mirror(params)
        deconv = _deconv_plan(layout, params, (K, Y, X), task_memory, min_tasks, deconv_chunks, psf_shapes, mirror)
        if split and deconv_chunks is None and mirror:
            deconv.update(_split_plan(layout, params, (K, Y, X), task_memory, min_tasks, psf_shapes, deconv))
        for ax, name in ((layout.k, "k"), (layout.y, "y"), (layout.x, "x")):
            n = out_shape[ax]
            out_chunks[ax] = _divisor_chunk(deconv["deconv_block"][name], n, _OUT_CHUNK_CAP[name], out_chunks[ax])
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
        **deconv,
    )


def _wb_blocks(params: Params) -> bool:
    """3-D Wiener-Butterworth of ``params`` may run on blocks (see :func:`blocks_allowed`)."""
    psf = output_psf(params, 3)
    return psf is not None and blocks_allowed(psf)


def _mirror(params: Params) -> bool:
    """Whether the 3-D step-5 PSF of ``params`` takes the unpadded mirror boundary."""
    psf = output_psf(params, 3)
    return psf is not None and boundary_rule(3, psf) == "mirror"


def _deconv_plan(
    layout: Layout,
    params: Params,
    sizes: tuple[int, int, int],
    task_memory: int,
    min_tasks: int,
    deconv_chunks: Mapping[str, int] | Sequence[int] | None,
    psf_shapes: Sequence[Any] | None,
    mirror: bool = False,
) -> dict[str, Any]:
    """Block, halo and face padding of 3-D step 5 (the ``deconv_*`` fields of a Plan).

    ``deconv_half`` is the edge padding a block gets on a side at a face: the
    PSF's half-support on the edge path, 0 on the mirror path (no padding).
    """
    if psf_shapes is None:
        psf = output_psf(params, 3)
        assert psf is not None  # step 5 runs
        psf_shapes = [psf]
    names = ("k", "y", "x")
    kind = deconv_kind(params)
    # An array's halo steps as far as its light reaches (psf_step); a shape's by its half-support.
    steps = [psf_step(p) if isinstance(p, np.ndarray) else None for p in psf_shapes]
    shapes = [tuple(int(n) for n in np.shape(p)) for p in psf_shapes]
    halos = [deconv_halo(shape, params.deconv_iters, kind, step) for shape, step in zip(shapes, steps)]
    halves = [(0,) * len(shape) if mirror else psf_half_support(shape) for shape in shapes]
    n = dict(zip(names, sizes))
    depth = {a: min(max(h[i] for h in halos), n[a]) for i, a in enumerate(names)}
    half = {a: max(h[i] for h in halves) for i, a in enumerate(names)}
    fixed = max(deconv_fixed_bytes(kind, shape, mirror) for shape in shapes)
    if deconv_chunks is not None:
        named = _named_chunks(layout, deconv_chunks)
        if isinstance(deconv_chunks, Mapping):
            named = _solver_axes_only(layout, named, "deconv_chunks")
        k_name = _k_name(layout)
        block = {a: n[a] for a in names}
        for a in names:
            key = k_name if a == "k" else a
            if key in named:
                block[a] = int(named[key])
        if min(block.values()) < 1:
            raise InputError(f"deconv_chunks sizes must be >= 1, got {deconv_chunks!r}")
        block = {a: min(n[a], block[a]) for a in names}
    else:
        n_outer = math.prod(layout.shape[i] for i in layout.outer)
        budget = max(task_memory - fixed, 1)
        block = _deconv_block(n, depth, half, deconv_bytes(kind, mirror), budget, min_tasks, n_outer)
    return {
        "deconv_block": block,
        "deconv_depth": depth,
        "deconv_half": half,
        "deconv_mirror": mirror,
        "deconv_fixed": fixed,
    }


def _task_bytes(
    sizes: Mapping[str, int],
    block: Mapping[str, int],
    depth: Mapping[str, int],
    half: Mapping[str, int],
    per_voxel: int,
) -> int:
    """Per-voxel bytes of the largest step-5 block task (its longest transform per axis)."""
    return per_voxel * math.prod(_deconv_lengths(sizes[a], block[a], depth[a], half[a])[2] for a in ("k", "y", "x"))


def pass_halo(psf_shape: Sequence[int], iterations: int, kind: str) -> tuple[int, ...]:
    """Halo of a step-5 pass of ``iterations`` iterations from the solver's state: its exact light cone.

    Richardson-Lucy and Landweber reach ``2`` PSF half-supports per iteration
    (``H`` then ``H^T``; their momentum is local), Wiener-Butterworth ``3`` (``H``
    then its back projector's kernel); measured 2.3e-7 / 4.0e-7 of the maximum
    (RL, z / y) and 1.5e-7 / 3.0e-7 (WB) for one iteration with the NA 1.1 model
    (``benchmarks/results_model_halo.txt``).

    Examples
    --------
    >>> pass_halo((41, 61, 61), 1, "rl-schedule"), pass_halo((41, 61, 61), 1, "wb")
    ((40, 60, 60), (60, 90, 90))
    """
    if kind == "wb":
        return deconv_halo(psf_shape, iterations, "wb")
    return tuple(2 * iterations * h for h in psf_half_support(psf_shape))


# A step 5 that fits one pass is still split when one pass transforms more than this many times what
# the split passes do per iteration (each pass also reads the state with its halo and writes it).
SPLIT_GAIN = 2.0


def _split_plan(
    layout: Layout,
    params: Params,
    sizes: tuple[int, int, int],
    task_memory: int,
    min_tasks: int,
    psf_shapes: Sequence[Any] | None,
    single: dict[str, Any],
) -> dict[str, Any]:
    """Step 5 in passes of ``k`` iterations (mirror path, every 3-D type) when one pass does not fit
    ``task_memory`` and passes do, or one pass transforms over :data:`SPLIT_GAIN` times more voxels per
    iteration; the halo is
    the light cone of ``k`` iterations (:func:`pass_halo`), the state goes through scratch. Among the
    ``k`` that fit (``k = 1`` always counts), the one that transforms the fewest voxels; ``{}`` keeps
    one pass."""
    kind = deconv_kind(params)
    if kind not in DECONV_BYTES_PASSES or params.deconv_iters < 2:
        return {}
    names = ("k", "y", "x")
    n = dict(zip(names, sizes))
    half, fixed, per_voxel = single["deconv_half"], single["deconv_fixed"], DECONV_BYTES_PASSES[kind]

    def work(block: Mapping[str, int], depth: Mapping[str, int]) -> float:
        return float(math.prod(_deconv_lengths(n[a], block[a], depth[a], half[a])[1] for a in names))

    one_pass = (single["deconv_block"], single["deconv_depth"])
    fits = _task_bytes(n, *one_pass, half, deconv_bytes(kind, True)) + fixed <= task_memory
    shapes = [tuple(int(m) for m in np.shape(p)) for p in (psf_shapes or [output_psf(params, 3)])]
    n_outer = math.prod(layout.shape[i] for i in layout.outer)
    best: tuple[float, dict[str, Any]] | None = None
    for k in range(params.deconv_iters - 1, 0, -1):
        halos = [pass_halo(shape, k, kind) for shape in shapes]
        depth = {a: min(max(h[i] for h in halos), n[a]) for i, a in enumerate(names)}
        block = _deconv_block(n, depth, half, per_voxel, max(task_memory - fixed, 1), min_tasks, n_outer)
        # Voxels transformed per iteration: a longer pass's halo can leave only tiny blocks (RL 7,
        # NA 1.1 model, 512 MiB: 2 iterations per pass 2,100x the data, 1 iteration 6x).
        if _task_bytes(n, block, depth, half, per_voxel) + fixed > task_memory and k > 1:
            continue
        if best is None or work(block, depth) < best[0] * 0.999:
            best = (work(block, depth), {"deconv_block": block, "deconv_depth": depth, "deconv_pass_iters": k})
    assert best is not None  # k = 1 always counts
    split = best[1]
    split_fits = _task_bytes(n, split["deconv_block"], split["deconv_depth"], half, per_voxel) + fixed <= task_memory
    if (fits or not split_fits) and work(*one_pass) <= SPLIT_GAIN * best[0]:
        return {}  # one pass fits, or neither does (the budget is below any block): split only for the work
    return split


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
