"""The lazy driver: a Dask array in, a lazy Dask array out.

For data that fits in the cluster's memory; :func:`bigdecon.deconvolve` keeps
the intermediates in a store instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..params import Params
from ..planner import Layout, Plan, _spans, make_plan
from ..stages import check_image, output_psf, sparse_stage
from .tasks import _deconv_block, _final_block, _preprocess_block, block_face_pad

__all__ = ["sparse_deconvolve_dask"]


def sparse_deconvolve_dask(
    image: Any,
    params: Params,
    *,
    chunks: Mapping[str, int] | Sequence[int] | None = None,
    depth: Mapping[str, int] | int | None = None,
    deconv_chunks: Mapping[str, int] | Sequence[int] | None = None,
    task_memory: int = 512 * 2**20,
) -> Any:
    """Lazy sparse deconvolution of a 2-D or 3-D Dask array (see :func:`bigdecon.sparse_deconvolve`).

    The raw statistics are computed now (one pass of reductions); the rest is a
    lazy graph. The maxima after steps 3 and 4 are 0-d Dask arrays that the
    later steps wait for, so the step-4 blocks stay in memory until their
    maximum is known: for data larger than the cluster's memory use
    :func:`bigdecon.deconvolve`, which keeps them in a store.

    ``chunks`` and ``depth`` size the step-4 blocks; with a 3-D PSF, step 5
    runs on blocks of ``deconv_chunks`` (default: chosen to fit
    ``task_memory`` bytes per task) with the halo of
    :func:`~bigdecon.solvers.richardson_lucy.deconv_halo`.
    """
    import dask
    import dask.array as da

    check_image(image, params)
    axes = ("y", "x") if image.ndim == 2 else ("t", "y", "x")
    layout = Layout(axes, tuple(int(s) for s in image.shape))
    # In memory (dask): step 5 in one pass, its halo that of every iteration (no scratch to chain passes).
    plan = make_plan(
        layout, params, chunks=chunks, depth=depth, deconv_chunks=deconv_chunks, task_memory=task_memory, split=False
    )
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

        def solve(b, block_info=None):
            # Which sides of this block are faces of the data set (the solver extends those).
            info = block_info[0]
            faces = tuple((i == 0, i == n - 1) for i, n in zip(info["chunk-location"], info["num-chunks"]))
            return np.maximum(sparse_stage(b, 1.0, params, plan.coupled, faces), 0)

        g = f.map_overlap(
            solve,
            depth=dict(enumerate(dep)),
            boundary="none",
            trim=True,
            dtype=np.float32,
        )
        g = g / g.max()
    else:
        g = f
    psf = output_psf(params, image.ndim)
    if plan.deconv_block is not None and psf is not None:
        return _deconv_blocks(g, plan, scale, params, psf)
    whole = {-2: -1, -1: -1}
    if image.ndim == 3:
        # A 3-D PSF without blocks (make_plan gives 3-D step 5 blocks, one per volume at most, so only
        # a hand-made plan) deconvolves the whole volume at once.
        whole[0] = -1 if psf is not None and psf.ndim == 3 else plan.plane_group
    return g.rechunk(whole).map_blocks(_final_block, 1.0, scale, params, psf, dtype=np.float32)


def _deconv_blocks(g: Any, plan: Plan, scale: float, params: Params, psf: np.ndarray) -> Any:
    """3-D step 5 on the plan's blocks: each slices its halo from ``g`` (already divided by its
    maximum), deconvolves, keeps its interior; the interiors tile the result.

    The same block function and halo as the out-of-core tasks: explicit halo
    slices rather than ``map_overlap``, because the halo is deeper than a block
    may be and a block's padding depends on which faces its halo reaches.
    """
    import dask.array as da

    tasks = plan.final_tasks()
    grid = [len(_spans(n, plan.deconv_block[a])) for n, a in zip(g.shape, "kyx")]  # type: ignore[index]
    starts = [sorted({t[ax][0] for t in tasks}) for ax in range(3)]
    pieces = np.empty(grid, dtype=object)
    for region in tasks:
        grown = plan.deconv_halo(region)
        spans = [grown[ax] for ax in range(3)]
        pad = block_face_pad(spans, g.shape, psf.shape)
        interior = tuple(slice(region[ax][0] - spans[ax][0], region[ax][1] - spans[ax][0]) for ax in range(3))
        piece = g[tuple(slice(a, b) for a, b in spans)].rechunk(-1)
        out_chunks = tuple((region[ax][1] - region[ax][0],) for ax in range(3))
        index = tuple(starts[ax].index(region[ax][0]) for ax in range(3))
        pieces[index] = piece.map_blocks(
            _deconv_block, 1.0, scale, params, psf, pad, interior, dtype=np.float32, chunks=out_chunks
        )
    return da.block(pieces.tolist())


def _rechunk_for_depth(arr: Any, depth: Sequence[int]) -> Any:
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
