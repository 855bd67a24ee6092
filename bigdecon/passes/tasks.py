"""The tasks of an out-of-core run, and the block functions they share with the lazy driver.

A task reads one region (with its halo) straight from a store, runs one stage
of :mod:`bigdecon.stages` on it with the data set's statistics from its
:class:`TaskContext`, and writes exactly the chunks it owns. Tasks are
idempotent: a retry rewrites the same bytes.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._backend import get_xp
from .._types import Array
from ..errors import BigdeconNotice, BigdeconWarning, InputError, ProcessingError
from ..io.paths import filesystem, join, normalize, remove_files
from ..params import Params
from ..planner import Layout, Plan, Region, deconv_face_pad
from ..solvers.richardson_lucy import psf_half_support
from ..stages import deconv_stage, preprocess, sparse_stage
from .ledger import load_array

__all__ = ["TaskContext"]


@dataclass(frozen=True)
class TaskContext:
    """What every task of a run receives: a few kB when pickled.

    The measured PSFs stay in the work folder (``psf`` holds their paths, one
    per processed channel, ``None`` where step 5 is off) and ``params`` has
    no measured PSF. Between passes the run adds the maxima of the pass just
    finished with :func:`dataclasses.replace`: ``h_max`` (after steps 1-3)
    and ``g_max`` (after step 4), one per processed channel.
    """

    layout: Layout
    params: Params
    plan: Plan
    level: tuple[Any, ...]  # the input's stored level (ImageSource.level)
    selection: dict[int, Any]  # axis -> chosen channels (list) or first time point (int)
    scale: list[float]  # raw maximum per channel
    mean: list[float]  # raw mean / maximum per channel
    h: str  # work array after steps 1-3
    g: str  # work array after step 4
    output: str  # the output's root
    psf: list[str | None]
    run_id: str
    device: str = "auto"
    offset: float = 0.0  # camera offset subtracted from every raw read (clipped at 0)
    h_max: list[float] | None = None
    g_max: list[float] | None = None
    # Step 5 split into passes (Plan.deconv_pass_iters): this pass's first iteration and count, the
    # state arrays it reads (none in the first pass) and writes (none in the last: it writes the output).
    first_iteration: int = 0
    pass_iterations: int = 0
    state_in: tuple[str, ...] = ()
    state_out: tuple[str, ...] = ()


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


def _preprocess_block(raw: Array, scale: float, mean: float, params: Params) -> Array:
    """Steps 1-3 on whole planes (NumPy or CuPy)."""
    if scale <= 0:
        factor = 2 if params.up_sample else 1
        return get_xp(raw).zeros(raw.shape[:-2] + tuple(s * factor for s in raw.shape[-2:]), np.float32)
    return preprocess(raw, scale, mean, params)


def _sparse_block(
    h: Array,
    norm: float,
    params: Params,
    coupled: bool,
    interior: tuple[slice, ...],
    faces: Sequence[tuple[bool, bool]] | None = None,
) -> Array:
    """Step 4 on a block with its halo; returns the interior, clipped at 0. ``faces`` as for
    :func:`~bigdecon.stages.sparse_stage`."""
    xp = get_xp(h)
    if norm <= 0:
        return xp.zeros(h[interior].shape, np.float32)
    return xp.ascontiguousarray(sparse_stage(h, norm, params, coupled, faces)[interior])


def _final_block(g: Array, norm: float, scale: float, params: Params, psf: np.ndarray | None) -> Array:
    """Steps 5-6 on whole planes (or volumes)."""
    if norm <= 0 or scale <= 0:
        return get_xp(g).zeros(g.shape, np.float32)
    return deconv_stage(g, norm, scale, params, psf)


def _deconv_block(
    g: Array,
    norm: float,
    scale: float,
    params: Params,
    psf: np.ndarray,
    pad: tuple[tuple[int, int], ...],
    interior: tuple[slice, ...],
) -> Array:
    """3-D steps 5-6 on a block grown by its halo: the interior of ``scale * RL(g / norm)``.

    ``pad`` is the edge padding on the sides of the grown block that lie on a
    face of the data set (:func:`block_face_pad`), the only ones the whole
    volume pads.
    """
    xp = get_xp(g)
    if norm <= 0 or scale <= 0:
        return xp.zeros(g[interior].shape, np.float32)
    return xp.ascontiguousarray(deconv_stage(g, norm, scale, params, psf, pad=pad)[interior])


def _deconv_pass_block(
    g: Array,
    state: Sequence[np.ndarray],
    norm: float,
    scale: float,
    params: Params,
    psf: np.ndarray,
    interior: tuple[slice, ...],
    iterations: tuple[int, int],
    last: bool,
) -> Array:
    """One pass of a split step 5 on a block grown by its halo (the mirror path): iterations
    ``first .. first + count - 1`` from ``state`` (none in the first pass; a list is emptied). Returns the interior of the
    output (``last``) or of the new state, its arrays stacked on a first axis (RL, Landweber: y, x_prev;
    WB: x)."""
    from ..solvers.landweber import landweber_steps
    from ..solvers.richardson_lucy import rl_schedule_steps
    from ..solvers.wiener_butterworth import rl_wiener_butterworth

    xp = get_xp(g)
    first, count = iterations
    n_state = 1 if last else (1 if params.deconv_type == 3 else 2)
    if norm <= 0 or scale <= 0:
        zeros = xp.zeros(g[interior].shape, np.float32)
        return zeros if last else xp.stack([zeros] * n_state)
    f = xp.asarray(g, dtype=xp.float32) * xp.float32(1.0 / norm)
    start = [xp.asarray(s) for s in state] or None
    if isinstance(state, list):
        state.clear()  # the caller's reads are not held through the solve (consumed)
    psf = xp.asarray(psf)
    if params.deconv_type == 3:
        x0 = start[0] if start else None
        wb = rl_wiener_butterworth(
            f, psf, count, alpha=params.wb_alpha, beta=params.wb_beta, order=params.wb_order, start=x0
        )
        out: tuple[Array, ...] = (wb,)
    elif params.deconv_type == 2:
        y_x = landweber_steps(f, psf, count, None if start is None else (start[0], start[1]), first)
        out = y_x[::-1] if last else y_x  # Landweber's result is x_prev
    else:
        out = rl_schedule_steps(f, psf, count, None if start is None else (start[0], start[1]), first)
    del f, start
    if last:
        y = out[0][interior] * xp.float32(scale)
        return xp.maximum(y, 0)
    return xp.stack([a[interior] for a in out[:n_state]])


def block_face_pad(grown: Sequence[tuple[int, int]], shape: Sequence[int], psf_shape: Sequence[int]):
    """Per solver axis, the PSF's half-support on each side of ``grown`` that lies on a face, else 0."""
    return tuple(deconv_face_pad(g, n, h) for g, n, h in zip(grown, shape, psf_half_support(psf_shape)))


# --------------------------------------------------------------------------- reading and writing


def _task_batch(
    fn: Callable[[TaskContext, Region], dict[str, float]], ctx: TaskContext, regions: Sequence[Region], stage: str
) -> tuple[list[dict[str, float]], float]:
    """Run ``fn(ctx, region)`` for each region in turn: one future for several small tasks.

    Returns the regions' results, in order, and the seconds the batch took
    (the driver sizes the next batches from them). An error names its block:
    :class:`~bigdecon.errors.InputError` and
    :class:`~bigdecon.errors.ProcessingError` pass unchanged, any other
    exception becomes a ProcessingError that names the stage and the block.
    """
    t0 = time.perf_counter()
    results = []
    for region in regions:
        try:
            results.append(fn(ctx, region))
        except (InputError, ProcessingError):
            raise
        except Exception as e:  # named here: the driver sees only the batch
            raise ProcessingError(f"{stage} failed on block {_region_key(region)}: {type(e).__name__}: {e}") from e
    return results, time.perf_counter() - t0


def _region_slices(region: Region, ndim: int) -> tuple[slice, ...]:
    return tuple(slice(*region[i]) if i in region else slice(None) for i in range(ndim))


def _region_key(region: Region) -> str:
    """A region's name in the ledger and in task keys, e.g. ``0-1.0-32.0-256.0-256``."""
    return ".".join(f"{a}-{b}" for _, (a, b) in sorted(region.items()))


def selected_index(selection: dict[int, Any], spans: Sequence[tuple[int, int]]) -> list[Any]:
    """The stored input's index of a region of the selected input (``spans``: a (start, stop) per axis).

    ``selection`` maps an axis to its chosen channels (a list) or its first time point (an int).

    Examples
    --------
    >>> selected_index({0: [2, 5], 1: 10}, [(1, 2), (0, 4), (0, 8)])
    [[5], slice(10, 14, None), slice(0, 8, None)]
    """
    index: list[Any] = []
    for i, (a, b) in enumerate(spans):
        sel = selection.get(i)
        if sel is None:
            index.append(slice(a, b))
        elif isinstance(sel, list):  # chosen channels
            index.append(sel[a:b])
        else:  # an offset (time points a:b)
            index.append(slice(sel + a, sel + b))
    return index


def _read_source(ctx: TaskContext, region: Region) -> np.ndarray:
    """Read a region of the (selected) input straight from its store, inside a worker."""
    from ..io import read_region

    lay = ctx.layout
    spans = [region.get(i, (0, lay.shape[i])) for i in range(len(lay.axes))]
    raw = read_region(ctx.level, selected_index(ctx.selection, spans), token=ctx.run_id)
    if not ctx.offset:
        return raw
    # The same constant for every block: chunked runs equal whole-array ones.
    return np.maximum(raw.astype(np.float32) - np.float32(ctx.offset), 0)


@functools.lru_cache(maxsize=8)
def _open_work(path: str, token: str) -> Any:
    # One open work array per worker process and run (``token``): with small
    # blocks, reading its metadata for every task cost as much as the task's data.
    # Chunks of zeros are stored too, so a chunk that is absent was freed
    # (:func:`_missing_chunks`), never merely empty.
    import zarr

    return zarr.open_array(path, mode="r+").with_config({"write_empty_chunks": True})


def _chunk_box(region: Region, shape: Sequence[int], chunks: Sequence[int]) -> tuple[slice, ...]:
    """The slice of the chunk grid a region touches."""
    box = []
    for i, (n, c) in enumerate(zip(shape, chunks)):
        a, b = region.get(i, (0, n))
        box.append(slice(a // c, -(-b // c)))
    return tuple(box)


def _chunk_ids(region: Region, shape: Sequence[int], chunks: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Grid indices of the chunks a region touches."""
    return itertools.product(*(range(s.start, s.stop) for s in _chunk_box(region, shape, chunks)))


def _chunk_paths(path: str, region: Region, token: str, keep: Callable[[Region], bool] | None = None) -> list[str]:
    """Paths of the stored chunks of a work array that ``region`` touches (those ``keep`` accepts)."""
    arr = _open_work(path, token)
    root = normalize(path)[0]
    out = []
    for idx in _chunk_ids(region, arr.shape, arr.chunks):
        box = {i: (j * c, min((j + 1) * c, n)) for i, (j, c, n) in enumerate(zip(idx, arr.chunks, arr.shape))}
        if keep is None or keep(box):
            out.append(join(root, arr.metadata.encode_chunk_key(idx)))
    return out


def _missing_chunks(path: str, region: Region, token: str) -> bool:
    """Whether a chunk of ``region`` is absent from the work array (freed: zarr would read zeros)."""
    paths = _chunk_paths(path, region, token)
    if normalize(path)[1]:
        return not all(os.path.exists(p) for p in paths)
    fs = filesystem(normalize(path)[0])
    return not all(fs.exists(p) for p in paths)


def _read_work(path: str, region: Region, ndim: int, token: str = "") -> np.ndarray:
    return np.asarray(_open_work(path, token)[_region_slices(region, ndim)])


def _write_work(path: str, region: Region, ndim: int, block: np.ndarray, token: str = "") -> None:
    _open_work(path, token)[_region_slices(region, ndim)] = block


def work_compressor() -> Any:
    """The lossless codec of the intermediates ``h`` and ``g``: Blosc, byte shuffle, zstd level 1.

    Measured on a run's real intermediates (benchmarks/README.md): 2-5% smaller
    than zarr's default (zstd alone) and faster to write; bitshuffle compresses
    them worse, higher levels save ~2% more at under half the write speed. Their low
    mantissa bytes are noise no lossless codec removes. The output keeps zarr's
    default (see :class:`~bigdecon.io.OmeZarrWriter`).

    Examples
    --------
    >>> codec = work_compressor()
    >>> codec.cname.value, codec.clevel, codec.shuffle.value
    ('zstd', 1, 'shuffle')
    """
    from zarr.codecs import BloscCodec

    # Byte shuffle groups the float32 exponent bytes, the only part that repeats.
    return BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")


def _work_array(
    path: str, shape: tuple[int, ...], chunks: Sequence[int], ledger: Any = None, stage: str | None = None
) -> None:
    """Create an intermediate float32 array, or keep the one a resumed run left.

    A resumed run keeps it whatever its chunks or codec (a version that made
    it otherwise): it holds the recorded tasks' results, and every reader and
    :class:`~bigdecon.passes.scratch.ChunkReaper` takes the chunks from the array.
    When it is gone (or has another shape) while ``ledger`` holds records of
    the pass ``stage`` that wrote it, those records are dropped: the pass
    computes the array again rather than leaving later passes to read zeros.
    """
    import warnings

    import zarr

    chunks = tuple(int(c) for c in chunks)
    try:
        arr = zarr.open_array(path, mode="r")
        if tuple(arr.shape) == tuple(shape):
            return
    except (FileNotFoundError, zarr.errors.NodeNotFoundError):  # not there: made anew below
        pass
    if ledger is not None and stage is not None and ledger.done(stage):
        name = normalize(path)[0].rstrip("/").rsplit("/", 1)[-1]
        warnings.warn(
            f"the work array {name} is missing from the work folder: its blocks are computed again",
            BigdeconNotice,
            stacklevel=2,
        )
        ledger.forget(stage)
    zarr.create_array(
        path,
        shape=shape,
        chunks=chunks,
        dtype="float32",
        fill_value=0.0,
        zarr_format=3,
        compressors=work_compressor(),
        overwrite=True,
    )


# --------------------------------------------------------------------------- where a task runs


def _device(ctx: TaskContext) -> str:
    """Where this worker runs the solvers: its GPU when it has one (``device="auto"``)."""
    from .._backend import gpu_available

    wanted = ctx.device
    return "gpu" if wanted == "gpu" or (wanted == "auto" and gpu_available()) else "cpu"


def _solve(fn: Callable[..., Any], block: np.ndarray, ctx: TaskContext, *args: Any) -> np.ndarray:
    """Move a block to the worker's device once, run every step there, bring the result back."""
    from .._backend import release_device_memory, to_device, to_numpy

    device = _device(ctx)
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


def _channel(ctx: TaskContext, region: Region) -> int:
    """Position of a region's channel among the processed channels."""
    lay = ctx.layout
    return lay.channel_of(tuple(region[a][0] for a in lay.outer))


def _maxima(values: list[float] | None, what: str) -> list[float]:
    # The run fills these in before the pass that needs them.
    if values is None:
        raise RuntimeError(f"{what} is not known yet: the pass that computes it has not run")
    return values


# --------------------------------------------------------------------------- tasks


def _task_preprocess(ctx: TaskContext, region: Region) -> dict[str, float]:
    """Steps 1-3 on whole planes: raw input -> work array ``h``."""
    h = _preprocess(ctx, region)
    _write_work(ctx.h, region, len(ctx.layout.axes), h, ctx.run_id)
    return {"max": float(h.max())}


def _preprocess(ctx: TaskContext, region: Region) -> np.ndarray:
    """Steps 1-3 on the whole planes of ``region``."""
    _one_thread_per_task()
    lay, params = ctx.layout, ctx.params
    raw_region = dict(region)
    if params.up_sample:
        raw_region[lay.y] = (0, lay.shape[lay.y])
        raw_region[lay.x] = (0, lay.shape[lay.x])
    raw = _read_source(ctx, raw_region)
    c = _channel(ctx, region)
    return _embed(_solve(_preprocess_block, _solver_view(raw, lay), ctx, ctx.scale[c], ctx.mean[c], params), lay)


def _h_again(ctx: TaskContext, grown: Region) -> np.ndarray:
    """``h`` over ``grown`` computed again from the input: steps 1-3 of the whole-plane
    tasks it overlaps, exactly as they ran (same regions, same code, same bytes)."""
    lay, plan = ctx.layout, ctx.plan
    ndim = len(lay.axes)
    span = [grown.get(i, (0, plan.out_shape[i])) for i in range(ndim)]
    out = np.empty(tuple(b - a for a, b in span), np.float32)
    for task in plan.plane_tasks():
        part = [task.get(i, (0, plan.out_shape[i])) for i in range(ndim)]
        both = [(max(a, c), min(b, d)) for (a, b), (c, d) in zip(span, part)]
        if any(a >= b for a, b in both):
            continue
        h = _preprocess(ctx, task)
        out[tuple(slice(a - s[0], b - s[0]) for (a, b), s in zip(both, span))] = h[
            tuple(slice(a - p[0], b - p[0]) for (a, b), p in zip(both, part))
        ]
    return out


def _read_h(ctx: TaskContext, region: Region, grown: Region) -> np.ndarray:
    """A step-4 block's ``h`` (with its halo); then frees the chunks of ``h`` that no other block reads.

    The chunks only this block reads are deleted as soon as it has read them,
    so ``h`` shrinks while step 4 runs rather than once its blocks are
    recorded. A retry or a resumed run of the block finds some of its chunks
    gone (zarr would read zeros): it computes its ``h`` again from the input.
    """
    ndim = len(ctx.layout.axes)
    h = _read_work(ctx.h, grown, ndim, ctx.run_id)
    if _missing_chunks(ctx.h, grown, ctx.run_id):  # checked after the read: nothing re-creates a chunk
        h = _h_again(ctx, grown)
    depth = ctx.plan.depth
    reach = {ax: depth[name] for ax, name in zip((ctx.layout.k, ctx.layout.y, ctx.layout.x), "kyx") if ax is not None}
    n = ctx.plan.out_shape

    def own(box: Region) -> bool:  # no other block's halo reaches the chunk
        return all(
            region[i][0] <= max(0, a - reach.get(i, 0)) and min(n[i], b + reach.get(i, 0)) <= region[i][1]
            for i, (a, b) in box.items()
        )

    try:
        remove_files(_chunk_paths(ctx.h, grown, ctx.run_id, keep=own))
    except OSError as e:  # costs space until the work folder goes, never the block
        import warnings

        warnings.warn(
            f"could not free chunks of h ({e}); the work folder's removal will", BigdeconWarning, stacklevel=2
        )
    return h


def _task_sparse(ctx: TaskContext, region: Region) -> dict[str, float]:
    """Step 4 on a block and its halo: ``h`` (or the raw input) -> work array ``g``."""
    _one_thread_per_task()
    lay, params, plan = ctx.layout, ctx.params, ctx.plan
    grown = plan.halo(region)
    ndim = len(lay.axes)
    c = _channel(ctx, region)
    if plan.needs_preprocess:
        h, norm = _read_h(ctx, region, grown), _maxima(ctx.h_max, "h_max")[c]
    else:
        h, norm = _read_source(ctx, grown), ctx.scale[c]
    interior = tuple(
        slice(region[a][0] - grown[a][0], region[a][1] - grown[a][0]) for a in range(ndim) if a not in lay.outer
    )
    faces = tuple((grown[a][0] == 0, grown[a][1] == plan.out_shape[a]) for a in range(ndim) if a not in lay.outer)
    g = _embed(
        _solve(
            _sparse_block,
            _solver_view(h, lay).astype(np.float32, copy=False),
            ctx,
            norm,
            params,
            plan.coupled,
            interior,
            faces,
        ),
        lay,
    )
    _write_work(ctx.g, region, ndim, g, ctx.run_id)
    return {"max": float(g.max()) if g.size else 0.0}


def _read_step5_input(ctx: TaskContext, region: Region, c: int) -> tuple[np.ndarray, float]:
    """What step 5 deconvolves over ``region``: ``g``, or ``h``, or the raw input; and its maximum."""
    if ctx.params.sparse_iters:
        return _read_stored(ctx, ctx.g, region, "step 4"), _maxima(ctx.g_max, "g_max")[c]
    if ctx.plan.needs_preprocess:
        return _read_stored(ctx, ctx.h, region, "steps 1-3"), _maxima(ctx.h_max, "h_max")[c]
    return _read_source(ctx, region), ctx.scale[c]


def _read_stored(ctx: TaskContext, path: str, region: Region, writer: str) -> np.ndarray:
    """A region of an intermediate that must be whole: a missing chunk stops the run (zarr would read zeros)."""
    block = _read_work(path, region, len(ctx.layout.axes), ctx.run_id)
    if _missing_chunks(path, region, ctx.run_id):  # checked after the read: nothing re-creates a chunk
        name = normalize(path)[0].rstrip("/").rsplit("/", 1)[-1]
        raise ProcessingError(
            f"work array {name} lost chunks over block {_region_key(region)} that {writer} recorded as written "
            "(was the work folder changed during the run?); start again with --overwrite"
        )
    return block


def _task_final(ctx: TaskContext, region: Region) -> dict[str, float]:
    """Steps 5-6 on whole planes, or on a 3-D block with its halo: ``g`` (or ``h``, or the raw input) -> the output."""
    from ..io import write_block

    _one_thread_per_task()
    lay, params, plan = ctx.layout, ctx.params, ctx.plan
    ndim = len(lay.axes)
    c = _channel(ctx, region)
    psf_path = ctx.psf[c]
    psf = load_array(psf_path, ctx.run_id) if psf_path else None
    if plan.deconv_pass_iters and psf is not None:
        out = _deconv_pass(ctx, region, c, psf)
    elif plan.deconv_block is not None and psf is not None:
        out = _final_3d_block(ctx, region, c, psf)
    else:
        g, norm = _read_step5_input(ctx, region, c)
        out = _solve(
            _final_block, _solver_view(g, lay).astype(np.float32, copy=False), ctx, norm, ctx.scale[c], params, psf
        )
    write_block(ctx.output, _region_slices(region, ndim), _embed(out, lay))
    return {"max": float(out.max()) if out.size else 0.0}


def _final_3d_block(ctx: TaskContext, region: Region, c: int, psf: np.ndarray) -> np.ndarray:
    """3-D step 5 on one block: read it grown by the halo, deconvolve, keep the interior."""
    lay, plan = ctx.layout, ctx.plan
    grown = plan.deconv_halo(region)
    g, norm = _read_step5_input(ctx, grown, c)
    axes = [a for a in (lay.k, lay.y, lay.x) if a is not None]
    pad = block_face_pad([grown[a] for a in axes], [plan.out_shape[a] for a in axes], psf.shape)
    interior = tuple(slice(region[a][0] - grown[a][0], region[a][1] - grown[a][0]) for a in axes)
    block = _solver_view(g, lay).astype(np.float32, copy=False)
    del g  # a uint16 input is not held through the solve: 2 B per voxel less at its peak
    return _solve(_deconv_block, block, ctx, norm, ctx.scale[c], ctx.params, psf, pad, interior)


def _deconv_pass(ctx: TaskContext, region: Region, c: int, psf: np.ndarray) -> np.ndarray:
    """One block of a step-5 pass: the input and the state grown by the pass's halo, its iterations,
    the interior of the output (last pass) or of the new state (stacked on a first axis)."""
    lay, plan = ctx.layout, ctx.plan
    ndim = len(lay.axes)
    grown = plan.deconv_halo(region)
    g, norm = _read_step5_input(ctx, grown, c)
    state = [_solver_view(_read_stored(ctx, p, grown, "the step-5 pass before"), lay) for p in ctx.state_in]
    axes = [a for a in (lay.k, lay.y, lay.x) if a is not None]
    interior = tuple(slice(region[a][0] - grown[a][0], region[a][1] - grown[a][0]) for a in axes)
    block = _solver_view(g, lay).astype(np.float32, copy=False)
    del g
    iters = (ctx.first_iteration, ctx.pass_iterations)
    last = not ctx.state_out
    args = (state, norm, ctx.scale[c], ctx.params, psf, interior, iters, last)
    out = _solve(_deconv_pass_block, block, ctx, *args)
    del block, state
    if last:
        return out
    for path, part in zip(ctx.state_out, out):
        _write_work(path, region, ndim, _embed(part, lay), ctx.run_id)
    return out


def _task_deconv_pass(ctx: TaskContext, region: Region) -> dict[str, float]:
    """A step-5 pass before the last: the input and the state -> the next state (work arrays)."""
    _one_thread_per_task()
    c = _channel(ctx, region)
    psf_path = ctx.psf[c]
    assert psf_path is not None  # a split step 5 has a 3-D PSF
    out = _deconv_pass(ctx, region, c, load_array(psf_path, ctx.run_id))
    return {"max": float(out.max()) if out.size else 0.0}
