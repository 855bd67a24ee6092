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
from ..planner import Layout, _spans, make_plan
from ..stages import check_image, output_psf, sparse_stage
from .tasks import _final_block, _preprocess_block

__all__ = ["sparse_deconvolve_dask"]


def sparse_deconvolve_dask(
    image: Any,
    params: Params,
    *,
    chunks: Mapping[str, int] | Sequence[int] | None = None,
    depth: Mapping[str, int] | int | None = None,
) -> Any:
    """Lazy sparse deconvolution of a 2-D or 3-D Dask array (see :func:`bigdecon.sparse_deconvolve`).

    The raw statistics are computed now (one pass of reductions); the rest is a
    lazy graph. The maxima after steps 3 and 4 are 0-d Dask arrays that the
    later steps wait for, so the step-4 blocks stay in memory until their
    maximum is known: for data larger than the cluster's memory use
    :func:`bigdecon.deconvolve`, which keeps them in a store.
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
