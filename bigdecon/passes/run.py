"""The out-of-core driver: OME-Zarr/TIFF in, OME-Zarr out, one pass after another.

:func:`deconvolve` resolves the request, computes the raw statistics, then runs
the passes (steps 1-3, step 4, steps 5-6) as tasks on the cluster, each pass's
maxima feeding the next through the :class:`~bigdecon.passes.tasks.TaskContext`.
"""

from __future__ import annotations

import collections
import functools
import itertools
import os
import statistics
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import __version__
from ..errors import BigdeconNotice, BigdeconWarning, InputError, ProcessingError
from ..io import voxel_origin
from ..io.paths import normalize, redact
from ..io.safety import Lease, fingerprint, root_attrs, work_stamp
from ..params import DEFAULTS, Params
from ..planner import Layout, Region
from ..stages import output_psf
from .guard import check_run, finish_cleanup
from .ledger import Ledger, RecordBook
from .options import RunOptions, method_values, parse_run_options
from .request import Request, _params_record, estimate_offset, prepare_request, psf_model_used
from .scratch import Scratch, Watch, folder_bytes, resolve_work_dir, work_chunks, work_root
from .tasks import (
    TaskContext,
    _region_key,
    _task_batch,
    _task_deconv_pass,
    _task_final,
    _task_preprocess,
    _task_sparse,
    _work_array,
)

__all__ = ["deconvolve", "plan", "plan_run", "run_deconvolution", "run_sizing"]


# Tasks a pass keeps on the cluster at once, per worker thread: enough that no
# thread waits for the driver, few enough that the scheduler's and the driver's
# memory do not grow with the number of blocks.
WAVE_PER_THREAD = 4
WAVE_MIN = 32


def _run_tasks(
    fn: Callable[[TaskContext, Region], dict[str, float]],
    ctx: TaskContext,
    regions: Sequence[Region],
    book: RecordBook,
    client: Any,
    progress: Callable[[int, int], None] | None,
    counter: dict[str, int],
    watch: Watch | None = None,
) -> list[float]:
    """Run ``fn(ctx, region)`` for every region not in ``book.done``; return the pass's maximum per channel.

    ``watch.recorded(keys)`` runs here, in the driver, once regions' records have
    been written to the ledger (not merely added to the pending batch): it
    frees inputs that no unfinished task reads, which is safe only once a
    resumed run can no longer re-run the region. On a cluster the deletions
    (and the scratch samples) run on the watch's background thread, which the
    end of the pass waits for, failed or not. Nothing here is kept per block:
    the regions are made as they are submitted, and the records only the
    ledger's open segment holds.
    """
    maxima = [0.0] * ctx.layout.n_channels

    def release() -> None:
        if watch is not None:
            watch.recorded(book.take_written())

    if watch is not None:
        watch.open(background=client is not None)
    failed = True
    try:
        _run_pass(fn, ctx, regions, book, client, progress, counter, release, watch, maxima)
        failed = False
    finally:
        try:
            book.close()  # what finished is recorded, even when the pass failed
            release()  # and what is recorded may be freed: a resume will not run it again
        except BaseException:
            failed = True
            raise
        finally:
            if watch is not None:
                watch.close(failed)  # every deletion done: none runs after the pass
    return maxima


# On a cluster, records that free work chunks are written at most this often
# (the others within RecordBook's BATCH_SECONDS): a batch file per returned
# future would be thousands of files, and index rewrites, at 1e6 tasks.
FREE_EVERY_SECONDS = 0.25


def _run_pass(
    fn: Callable[[TaskContext, Region], dict[str, float]],
    ctx: TaskContext,
    regions: Sequence[Region],
    book: RecordBook,
    client: Any,
    progress: Callable[[int, int], None] | None,
    counter: dict[str, int],
    release: Callable[[], None],
    watch: Watch | None,
    maxima: list[float],
) -> None:
    """One pass: the maxima an earlier run recorded, then the blocks left, here or on the cluster."""
    done, stage = book.done, book.stage
    layout = ctx.layout

    def channel(region: Region) -> int:
        return layout.channel_of(tuple(region[a][0] for a in layout.outer))

    n_todo = len(regions)
    for region in regions if done else ():  # a resumed run: what its records say
        record = done.get(_region_key(region))
        if record is not None:
            n_todo -= 1
            c = channel(region)
            maxima[c] = max(maxima[c], record["max"])
    counter["done"] += len(regions) - n_todo
    counter["resumed"] = counter.get("resumed", 0) + len(regions) - n_todo
    if progress:
        progress(counter["done"], counter["total"])
    # Keys once per block: the records, the reaper and the future keys all use them.
    todo = ((r, k) for r, k in ((r, _region_key(r)) for r in regions) if k not in done)

    # Without a cluster a record that frees inputs is written at once (blocks are slow there).
    free_every = 0.0 if client is None else FREE_EVERY_SECONDS

    def finish(region: Region, key: str, result: dict[str, Any]) -> None:
        book.add(key, result)
        c = channel(region)
        maxima[c] = max(maxima[c], result["max"])
        if watch is not None and watch.finished(key, region):
            book.flush(after=free_every)  # inputs nobody else reads can go once the records are on disk
        release()
        counter["done"] += 1
        if progress:
            progress(counter["done"], counter["total"])

    if not n_todo:
        return
    if client is None:
        for region, key in todo:
            finish(region, key, fn(ctx, region))
        return
    _run_on_cluster(fn, ctx, todo, n_todo, client, stage, finish)


def _run_on_cluster(
    fn: Callable[[TaskContext, Region], dict[str, float]],
    ctx: TaskContext,
    todo: Iterator[tuple[Region, str]],
    n_todo: int,
    client: Any,
    stage: str,
    finish: Callable[[Region, str, dict[str, Any]], None],
) -> None:
    """The ``n_todo`` blocks of ``todo`` (region, key) as futures on ``client``; ``finish`` each result."""
    from distributed import as_completed

    # Tasks are idempotent (each writes only the chunks it owns), so a retry
    # after a worker dies rewrites the same bytes. The context is a few kB (the
    # PSFs travel through the work folder). Futures go out in a rolling wave of
    # a few per worker thread: the scheduler never holds the whole pass. A
    # future runs a batch of consecutive blocks, one until blocks have been
    # timed, then as many as take about BATCH_TARGET_SECONDS.
    threads = _cluster_threads(client)
    sizer = _BatchSizer(threads)
    in_flight: dict[Any, list[tuple[Region, str]]] = {}
    position = 0

    def submit() -> Any:
        nonlocal position
        batch = list(itertools.islice(todo, sizer.size(n_todo - position)))
        position += len(batch)
        key = f"bigdecon-{stage}-{batch[0][1]}-x{len(batch)}-{ctx.run_id}"
        # Bound in a partial: Dask would walk the blocks' lists and dicts looking for futures.
        call = functools.partial(_task_batch, fn, ctx, [r for r, _ in batch], stage)
        fut = client.submit(call, key=key, retries=3, pure=False)
        in_flight[fut] = batch
        return fut

    width = max(WAVE_MIN, WAVE_PER_THREAD * threads)
    while position < n_todo and len(in_flight) < width:
        submit()
    finished = as_completed(list(in_flight))
    try:
        for fut in finished:
            batch = in_flight.pop(fut)
            if fut.status == "error":
                exc = fut.exception()
                if isinstance(exc, (InputError, ProcessingError)):
                    raise exc  # the batch function named the block
                raise ProcessingError(f"{stage} failed on {_blocks(batch)}: {type(exc).__name__}: {exc}") from exc
            results, seconds = fut.result()
            sizer.add(seconds, len(batch))
            if position < n_todo:
                finished.add(submit())
            for (region, key), result in zip(batch, results):
                finish(region, key, result)
    finally:
        for other in in_flight:  # a failure, or an interrupted driver: nothing left running
            other.cancel()


# A future costs the driver and the scheduler 10-15 ms of CPU whatever it runs
# (distributed's messages; bench_bookkeeping.py under load): with about this
# many seconds of work per future, blocks of up to 0.2 s go ten or more to a
# future (<= 1.5 ms each); tasks over ~1.3 s keep one block per future, and a
# retry, a kill or a pass's tail costs at most this long per thread.
BATCH_TARGET_SECONDS = 2.0
# The most blocks in one future: ~0.2 ms of that cost per block, ten times below
# the 2 ms target, and a bounded result message and retry.
BATCH_MAX = 64
# Batches whose seconds per block the next size is the median of.
BATCH_WINDOW = 16


class _BatchSizer:
    """Blocks per future from the seconds per block measured in the workers.

    One block per future until a batch has returned, then
    ``clamp(round(BATCH_TARGET_SECONDS / median seconds per block), 1, BATCH_MAX)``,
    over the last ``BATCH_WINDOW`` batches: tasks of a second or more keep
    one block per future; only tiny tasks are grouped. Near a pass's end no
    batch takes more than its share of the blocks left, so every worker
    thread still has work.

    Examples
    --------
    >>> sizer = _BatchSizer(threads=4)
    >>> sizer.size(remaining=10_000)
    1
    >>> sizer.add(seconds=0.1, blocks=1)
    >>> sizer.size(remaining=10_000), sizer.size(remaining=40)
    (20, 10)
    >>> sizer.add(seconds=3.0, blocks=1)
    >>> sizer.add(seconds=2.0, blocks=1)
    >>> sizer.size(remaining=10_000)
    1
    """

    def __init__(self, threads: int) -> None:
        self.threads = max(1, threads)
        self.per_block: collections.deque[float] = collections.deque(maxlen=BATCH_WINDOW)

    def add(self, seconds: float, blocks: int) -> None:
        """A batch of ``blocks`` blocks took ``seconds`` in its worker."""
        self.per_block.append(seconds / max(1, blocks))

    def size(self, remaining: int) -> int:
        """Blocks in the next future, with ``remaining`` blocks not yet submitted."""
        if not self.per_block:
            return 1
        per = statistics.median(self.per_block)
        n = BATCH_MAX if per * BATCH_MAX <= BATCH_TARGET_SECONDS else round(BATCH_TARGET_SECONDS / per)
        return max(1, min(n, BATCH_MAX, remaining // self.threads))


def _blocks(batch: list[tuple[Region, str]]) -> str:
    """The blocks of a failed future (regions and keys), for its error message."""
    if len(batch) == 1:
        return f"block {batch[0][1]}"
    return f"one of {len(batch)} blocks {batch[0][1]} to {batch[-1][1]}"


def _source_stats(
    data: Any, layout: Layout, where: str = "the input", offset: float = 0.0
) -> tuple[list[float], list[float], dict[str, Any]]:
    """Maximum and mean per channel (after the offset), the check for NaN/inf and the saturated pixels: one pass."""
    import dask
    import dask.array as da

    c_axis = layout.axes.index("c") if "c" in layout.axes else None
    red = tuple(i for i in range(data.ndim) if i != c_axis)
    counted = data if not offset else da.maximum(data.astype(np.float32) - np.float32(offset), 0)
    ceilings = _ceilings(data.dtype)
    try:
        finite, mx, total, raw_max, *at = dask.compute(
            da.isfinite(data).all() if np.issubdtype(data.dtype, np.floating) else True,
            counted.max(axis=red),
            counted.sum(axis=red, dtype=np.float64),
            data.max(),
            *[(data == c).sum() for c in ceilings],
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
    return scale, [float(m / s) if s > 0 else 0.0 for m, s in zip(means, scale)], _saturation(raw_max, ceilings, at)


def _ceilings(dtype: np.dtype) -> list[int]:
    """Values at which an integer camera image saturates: its dtype's maximum, and 4095 / 16383 for 12 / 14-bit data."""
    if np.dtype(dtype).kind not in "iu":
        return []
    top = int(np.iinfo(dtype).max)
    return [c for c in (4095, 16383) if c < top] + [top]


def _saturation(raw_max: Any, ceilings: list[int], counts: list[Any]) -> dict[str, Any]:
    """The saturated pixels (at the data's maximum, when that is a ceiling), with one notice line.

    Two or more: an image rescaled to its dtype's full range has one pixel there.
    """
    top = float(raw_max)
    for ceiling, n in zip(ceilings, counts):
        if top == ceiling and int(n) > 1:
            warnings.warn(
                f"{int(n)} input pixels are at {ceiling}, the camera's ceiling: saturated, their true "
                "intensity is unknown and deconvolution around them is unreliable",
                BigdeconNotice,
                stacklevel=3,
            )
            return {"saturated_pixels": int(n), "saturation_level": ceiling}
    return {"saturated_pixels": 0, "saturation_level": None}


def plan(source: str | os.PathLike[str], **kwargs: Any) -> dict[str, Any]:
    """What :func:`deconvolve` would do with ``source``: block grid, overlap, tasks, memory.

    Takes the same keyword arguments as :func:`deconvolve` (plus ``min_tasks``
    and ``task_memory``, which a run derives from its cluster); returns a dict
    with ``axes``, ``shape``, ``dtype``, ``chunks``, ``depth``, ``n_tasks``,
    ``memory_per_task_bytes``, ``output_shape`` and ``fwhm_px`` (the PSF FWHM
    in input pixels per processed channel, ``None`` for a measured PSF) and
    ``optics_psf`` (the PSF computed from the optics, per channel, or ``None``).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> import bigdecon
    >>> from bigdecon.io import write_image
    >>> path = write_image(os.path.join(tempfile.mkdtemp(), "raw.ome.zarr"), np.ones((40, 600, 600), np.uint16), "tyx")
    >>> summary = bigdecon.plan(path, fwhm=3)
    >>> summary["depth"], summary["sparse_block"], summary["n_tasks"]
    ({'k': 8, 'y': 16, 'x': 16}, {'k': 40, 'y': 320, 'x': 600}, 8)
    """
    return plan_run(source, *parse_run_options(kwargs))


def plan_run(source: str | os.PathLike[str], params: Params, options: RunOptions, *, src: Any = None) -> dict[str, Any]:
    """:func:`plan` of the method's parameters and the run's options (``src``: the input, if already opened).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from bigdecon.io import write_image
    >>> from bigdecon.passes.options import parse_run_options
    >>> path = write_image(os.path.join(tempfile.mkdtemp(), "raw.ome.zarr"), np.ones((8, 64, 64), np.uint16), "tyx")
    >>> plan_run(path, *parse_run_options({"fwhm": 2}))["output_shape"]
    [8, 64, 64]
    """
    from ..io import open_image

    src = open_image(source) if src is None else src
    found = _skew_found(src, options)
    if options.skew_angle or found is not None:  # a skewed stack: its plan and the deskew pass
        from .skewed import skewed_plan, split_skew

        skew, kwargs = split_skew(_keywords(params, options))
        return skewed_plan(source, kwargs, skew, found)
    request = prepare_request(src, params, options)
    summary = request.plan.summary()
    summary["dtype"] = str(src.data.dtype)
    summary["input_chunks"] = list(src.stored_chunks)
    summary["fwhm_px"] = [list(p.fwhm) if p.fwhm is not None else None for p in request.channel_params]
    summary["optics_psf"] = request.optics
    summary["psf_preparation"] = request.psf_reports
    summary["offset"] = request.offset
    summary["voxel_size"] = {a: request.src.scale[a] for a in ("z", "y", "x") if a in request.src.axes}
    return summary


def _skew_found(src: Any, options: RunOptions) -> Any:
    """The :class:`~bigdecon.io.skew_meta.SkewMeta` of an input its files say is stored skewed, where no
    ``skew_angle`` was given (``0``: not skewed); else None."""
    if options.skew_angle is not None:
        return None
    from ..io.skew_meta import read_skew

    found = read_skew(src)
    return found if found is not None and found.skewed else None


def _keywords(params: Params, options: RunOptions) -> dict[str, Any]:
    """``params`` and ``options`` as the keyword arguments of :func:`deconvolve` (a skewed stack's run takes those)."""
    kwargs = {**method_values(params), **options.as_kwargs()}
    del kwargs["pyramid"]  # only the skewed run's intermediate has none
    return kwargs


def _stored_status(destination: str | os.PathLike[str]) -> str | None:
    """``complete`` or ``running`` for a bigdecon output at ``destination``, None for anything else."""
    import zarr

    try:
        info = zarr.open_group(normalize(destination)[0], mode="r").attrs.asdict().get("bigdecon", {})
    except Exception:
        return None
    status = info.get("status") if isinstance(info, dict) else None
    return str(status) if status in ("complete", "running") else None


def _stored_config(destination: str | os.PathLike[str]) -> dict[str, Any]:
    """The run configuration recorded in an unfinished output ({} if none)."""
    info = (root_attrs(normalize(destination)[0]) or {}).get("bigdecon", {})
    return info.get("config") or {} if isinstance(info, dict) else {}


# Seconds a run waits for the first worker of a cluster it was given (pods and
# batch jobs may still be starting) before it sizes blocks from the workers.
WORKER_WAIT = 300


def _wait_for_workers(client: Any) -> None:
    if client is None:
        return
    try:
        client.wait_for_workers(1, timeout=WORKER_WAIT)
    except (TimeoutError, OSError) as e:
        raise ProcessingError(
            f"no Dask worker joined the scheduler within {WORKER_WAIT} s ({type(e).__name__})"
        ) from None


def run_sizing(
    client: Any,
    destination: str | os.PathLike[str],
    *,
    resume: bool = False,
    chunks: Mapping[str, int] | Sequence[int] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """``min_tasks`` and ``task_memory`` of a run on ``client``, as :func:`deconvolve` derives them.

    Default blocks are sized for the cluster's worker threads (``min_tasks``:
    at least one block each, cut so the threads finish together, see
    :func:`~bigdecon.planner.make_plan`), and from the card's memory on GPU workers; a resumed run keeps the sizing of the
    run it continues, whatever cluster it has now. Waits for a first worker.
    Call it to print the plan that will run (``plan(..., **run_sizing(...))``)
    and pass the same values to :func:`deconvolve`.
    """
    _wait_for_workers(client)
    stored = _stored_config(destination) if resume else {}
    task_memory = stored.get("task_memory")
    if "task_memory" not in stored and chunks is None and device != "cpu":
        task_memory = _gpu_task_memory(client)
    return {"min_tasks": stored.get("min_tasks", _cluster_threads(client)), "task_memory": task_memory}


def _gpu_task_memory(client: Any) -> int | None:
    """Bytes a task may use on the workers' GPUs (40% of the smallest card), or None."""

    def probe() -> int:
        from .._backend import gpu_available

        if not gpu_available():
            return 0
        import cupy

        return int(cupy.cuda.runtime.memGetInfo()[1])

    try:
        sizes = list(client.run(probe).values()) if client is not None else [probe()]
    except Exception:
        return None
    return int(0.4 * min(sizes)) if sizes and min(sizes) > 0 else None


def _cluster_threads(client: Any) -> int:
    """Worker threads of a cluster (1 without one), to size the default blocks."""
    if client is None:
        return 1
    try:
        return max(1, sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values()))
    except Exception:
        return 1


def deconvolve(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    fwhm: Any = None,
    resolution: Any = None,
    psf: Any = None,
    sparse_iters: int = DEFAULTS.sparse_iters,
    fidelity: float = DEFAULTS.fidelity,
    sparsity: float = DEFAULTS.sparsity,
    tcontinuity: float = DEFAULTS.tcontinuity,
    background: int = DEFAULTS.background,
    deconv_iters: int | None = None,
    deconv_type: int = DEFAULTS.deconv_type,
    up_sample: int = DEFAULTS.up_sample,
    wb_alpha: float = DEFAULTS.wb_alpha,
    wb_beta: float = DEFAULTS.wb_beta,
    wb_order: int = DEFAULTS.wb_order,
    psf_model: str | None = None,
    na: float | None = None,
    wavelength: float | Mapping[int, float] | None = None,
    refractive_index: float | None = None,
    sheet_thickness: float | None = None,
    excitation_wavelength: float | None = None,
    psf_voxel_size: Any = None,
    psf_as_is: bool = False,
    psf_energy: float | None = None,
    voxel_size: Sequence[float] | None = None,
    axes: str | None = None,
    offset: float | str = 0.0,
    suggestion: dict[str, Any] | None = None,
    channels: int | Sequence[int] | None = None,
    timepoints: str | tuple[int, int] | None = None,
    chunks: Mapping[str, int] | Sequence[int] | None = None,
    depth: Mapping[str, int] | int | None = None,
    output_dtype: str = "float32",
    ngff_version: str = "0.5",
    resume: bool = False,
    overwrite: bool = False,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
    config: dict[str, Any] | None = None,
    task_memory: int | None = None,
    min_tasks: int | None = None,
    device: str = "auto",
    work_dir: str | os.PathLike[str] | None = None,
    skew_angle: float | None = None,
    skew_axis: str = "x",
    psf_frame: str = "sample",
    deskew_first: bool = False,
    skew_fill: float | None = None,
    rotate: bool = False,
    pyramid: bool = True,
) -> dict[str, Any]:
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
        measured PSF (an array, or a ``.tif``/``.npy`` file: see ``psf_as_is``). Each may be one value for every channel or a dict
        from the input's channel number to that channel's value, e.g.
        ``fwhm={0: 3.0, 1: (4.2, 4.2)}``.
    sparse_iters, fidelity, sparsity, tcontinuity, background, deconv_iters, deconv_type, up_sample
        As in :func:`bigdecon.sparse_deconvolve`; ``deconv_type=3`` is
        Richardson-Lucy with the Wiener-Butterworth back projector (``deconv_iters``
        defaults to 2 for it, 7 for types 1 and 2; the resolved number is recorded).
    wb_alpha, wb_beta, wb_order
        The back projector of ``deconv_type=3``, see
        :func:`bigdecon.solvers.wiener_butterworth.rl_wiener_butterworth`.
    psf_model, na, wavelength, refractive_index, sheet_thickness, excitation_wavelength
        A PSF computed from the optics (``psf_model`` ``"widefield"``,
        ``"confocal"`` or ``"lightsheet"``; widefield when ``na`` and
        ``wavelength`` are given alone) with the pixel sizes of the input's
        metadata, 3-D for data with a z axis (see :mod:`bigdecon.solvers.psf`).
        ``wavelength`` may be a dict from channel number to wavelength.
        The optical PSFs are cropped to the box holding 99 % of their light
        (:func:`~bigdecon.solvers.psf_prepare.energy_crop`).
    psf_voxel_size, psf_as_is, psf_energy
        A ``psf`` given as a file (``.tif``/``.npy`` path) is prepared for the
        data by :func:`~bigdecon.solvers.psf_prepare.prepare_psf` (pedestal,
        hot pixels, centring, resampling from ``psf_voxel_size`` (``[z,] y, x``
        micrometres; default: the file's metadata, else the data's) to the
        data's voxel size, energy crop, sum 1), unless ``psf_as_is``; what was
        done is recorded in the output's attributes. A ``psf`` array is used
        as given (normalised to sum 1). ``psf_energy``: the fraction of its light
        the prepared file's box (and an optical model's) keeps (default 0.99).
    voxel_size, axes
        The input's voxel size (``[z,] y, x`` in micrometres) and axis names
        (e.g. ``"tyx"``) where its metadata lacks them or is wrong.
    offset : float or "auto"
        Camera offset in counts, subtracted from every input pixel first
        (clipped at 0): Richardson-Lucy assumes offset-free counts. ``"auto"``
        estimates it from a sample of chunks (:func:`~bigdecon.passes.request.estimate_offset`).
    suggestion : dict, optional
        What :func:`bigdecon.suggest_parameters` suggested (``Suggestion.to_dict()``),
        recorded in the output's attributes.
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
        512 MiB on CPUs) and the worker threads the blocks are cut for (by
        default the cluster's, at least one block each): they size the
        default blocks. See :func:`run_sizing`.
    device : {"auto", "cpu", "gpu"}
        Where workers run the solvers: ``auto`` uses a worker's GPU (CuPy)
        when it has one. A block moves to the GPU once; only the result returns.
    skew_angle, skew_axis, psf_frame, deskew_first, skew_fill, rotate
        A skewed stack (stage-scanned lattice light-sheet, OPM; ``skew_angle``
        None: the angle the input's files carry, if any, ``0``: not skewed): the angle in
        degrees between the scan and the sheet, the axis the planes move along,
        the frame of a 3-D PSF (``"sample"``: sheared automatically; ``"skewed"``:
        as is), and whether to deskew before deconvolving (default: deconvolve
        the stack as recorded, then deskew). ``rotate``: write the coverslip frame instead
        (deskewed and rotated, isotropic voxels). ``skew_fill``: the voids' value
        (default: the median of each channel's last recorded plane). The output is deskewed, its z
        step ``dz * sin(angle)``. See :mod:`bigdecon.passes.skewed` and docs/deskew.md.
    pyramid : bool
        Build the output's multiscale pyramid (an intermediate needs none).
    work_dir : str or path, optional
        Where the intermediates and the completion records go (a local path or
        URL, e.g. a local disk while the output goes to object storage); by
        default inside the output. Recorded in the output, so a resume finds
        it; resuming with a different one is refused. Intermediates are
        deleted chunk by chunk as soon as every task reading them is done.

    Returns
    -------
    dict
        ``output``, ``shape``, ``seconds``, ``voxels``, ``chunks`` (tasks in
        all), ``resumed`` (tasks an earlier run had finished), ``stats``,
        ``peak_scratch_bytes`` (the most the output and work folders held
        together, sampled as tasks finished) and ``output_bytes`` (the
        finished output's size). A ``resume`` of an output that is complete
        but still has its work folder (a run killed after finalising) only
        removes that folder: then ``output``, ``cleaned`` (the folder
        removed), ``chunks`` and ``resumed`` (0).

    Raises
    ------
    InputError
        Refusals before anything is written or deleted (docs/safety.md): an
        output or ``work_dir`` that is, contains or lies inside the input; an
        ``overwrite`` of a folder bigdecon did not write; an output leased by
        another live run; a ``resume`` across versions or of a changed input.

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
    given = dict(locals())  # the keywords, once: everything below takes Params + RunOptions
    source, destination = given.pop("source"), given.pop("destination")
    hooks = {k: given.pop(k) for k in ("client", "progress", "config", "suggestion")}
    params, options = parse_run_options(given)
    return run_deconvolution(source, destination, params, options, **hooks)


def run_deconvolution(
    source: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    params: Params,
    options: RunOptions,
    *,
    client: Any = None,
    progress: Callable[[int, int], None] | None = None,
    config: dict[str, Any] | None = None,
    suggestion: dict[str, Any] | None = None,
    src: Any = None,
) -> dict[str, Any]:
    """:func:`deconvolve` of the method's parameters and the run's options: open, plan, statistics, passes, finalise.

    ``client``, ``progress``, ``config`` and ``suggestion`` are as in
    :func:`deconvolve`, which makes ``params`` and ``options`` from its keyword
    arguments with :func:`~bigdecon.passes.options.parse_run_options`; ``src``:
    the input, if the caller has opened it. A skewed stack
    (``options.skew_angle``) is deconvolved in its own frame, then deskewed
    (:func:`~bigdecon.passes.skewed.deconvolve_skewed`).

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from bigdecon.io import write_image
    >>> from bigdecon.passes.options import parse_run_options
    >>> folder = tempfile.mkdtemp()
    >>> path = write_image(os.path.join(folder, "raw.ome.zarr"), np.ones((4, 32, 32), np.uint16), "tyx")
    >>> params, options = parse_run_options({"fwhm": 2, "sparse_iters": 5})
    >>> run_deconvolution(path, os.path.join(folder, "out.ome.zarr"), params, options)["shape"]
    [4, 32, 32]
    """
    from ..io import open_image

    src = open_image(source) if src is None else src
    found = _skew_found(src, options)
    if options.skew_angle or found is not None:  # a skewed stack: deconvolved in its own frame, then deskewed
        from .skewed import deconvolve_skewed

        hooks = {"client": client, "progress": progress, "config": config, "suggestion": suggestion}
        args = {"source": source, "destination": destination, **_keywords(params, options), **hooks}
        return deconvolve_skewed(args, found)
    t0 = time.perf_counter()
    resume, overwrite, work_dir = options.resume, options.overwrite, options.work_dir
    if check_run(src, source, destination, resume=resume, overwrite=overwrite, work_dir=work_dir) == "cleanup":
        cleaned = finish_cleanup(str(destination))
        return {"output": normalize(destination)[0], "cleaned": cleaned, "chunks": 0, "resumed": 0}
    lease = Lease.acquire(normalize(destination)[0])  # after the checks: a refused run takes nothing
    held = True
    try:
        run = _plan_run(src, source, destination, params, options, client)
        stats = _statistics(run, destination)
        writer, ledger = _open_output(run, destination, stats)
        scratch = Scratch(writer.path, ledger.root, lease=lease)
        ctx, counter = _run_passes(run, stats, ledger, writer.path, scratch, client, progress)
        seconds = time.perf_counter() - t0
        attrs = _finalise(run, ctx, stats, writer, ledger, lease, {"config": config, "suggestion": suggestion}, seconds)
        lease.release()  # before the output is measured: the lease file is not part of it
        held = False
        output_bytes = folder_bytes(writer.path)
        return {
            "output": writer.path,
            "shape": list(run.request.plan.out_shape),
            "seconds": time.perf_counter() - t0,
            "voxels": int(np.prod(run.request.layout.shape)),
            "chunks": counter["total"],
            "resumed": counter["resumed"],
            "stats": attrs["statistics"],
            "peak_scratch_bytes": max(scratch.peak, output_bytes),
            "output_bytes": output_bytes,
        }
    finally:
        if held:
            lease.release()


@dataclass(frozen=True)
class _Run:
    """A planned run: its request, its options (sized for the cluster) and what the output records of it."""

    request: Request
    options: RunOptions
    source_id: str
    params_record: dict[str, Any]
    record: dict[str, Any]
    work_dir: str | None


def _plan_run(src: Any, source: Any, destination: Any, params: Params, options: RunOptions, client: Any) -> _Run:
    """Size the blocks for the cluster (what the caller did not size), resolve the request and the records."""
    if options.min_tasks is None:
        sizing = run_sizing(client, destination, resume=options.resume, chunks=options.chunks, device=options.device)
        task_memory = sizing["task_memory"] if options.task_memory is None else options.task_memory
        options = replace(options, min_tasks=sizing["min_tasks"], task_memory=task_memory)
    request = prepare_request(src, params, options)
    stored = _stored_config(destination) if options.resume else {}
    work_dir = resolve_work_dir(options.work_dir, stored, options.resume)
    params_record = _params_record(request.channel_params, request.channel_ids)
    the_plan = request.plan
    record = {
        "params": params_record,
        "channels": options.channels,
        "timepoints": options.timepoints,
        "shape": list(the_plan.out_shape),
        "chunks": list(the_plan.out_chunks),
        "sparse_block": the_plan.sparse_block,
        "depth": the_plan.depth,
        "output_dtype": options.output_dtype,
        "source": redact(normalize(source)[0]),
        "min_tasks": options.min_tasks,
        "task_memory": options.task_memory,
        # A resume is refused when either differs (passes/guard.py: check_resume).
        "version": __version__,
        # A resume checked the recorded one (same chunks sampled) in check_run: it is kept.
        "input": stored.get("input") if options.resume else fingerprint(request.src),
    }
    if work_dir is not None:  # only when set: outputs of earlier versions still resume
        record["work_dir"] = redact(work_dir)
    return _Run(request, options, str(record["source"]), params_record, record, work_dir)


def _statistics(run: _Run, destination: Any) -> dict[str, Any]:
    """The data set's statistics (and its NaN/inf check), a resumed run's own if it has them.

    They come before anything is written, so bad pixels leave no output behind.
    """
    request = run.request
    if run.options.resume:
        stats = Ledger(work_root(destination, run.work_dir)).get("stats")
        if stats is not None:
            return dict(stats)
    auto = request.offset == "auto"
    found = estimate_offset(request.data) if auto else float(request.offset)
    if auto:
        warnings.warn(f"offset auto: the data's dark level is {found:g} counts, subtracted", BigdeconNotice, 2)
    scale, mean, saturation = _source_stats(request.data, request.layout, where=run.source_id, offset=found)
    return {"scale": scale, "mean": mean, "offset": found, "offset_auto": auto, **saturation}


def _output_meta(run: _Run) -> dict[str, Any]:
    """The output's scale (halved in y and x when up-sampling), translation (of the first time point
    selected) and channel metadata (of the channels selected; none when it does not match the data)."""
    request, options, src = run.request, run.options, run.request.src
    layout = request.layout
    scale = dict(src.scale)
    if request.params.up_sample:
        for ax in ("y", "x"):
            if ax in scale:
                scale[ax] = scale[ax] / 2
    translation = dict(src.translation)
    if options.timepoints is not None:  # output t = 0 is input time point a
        first = request.selection[layout.axes.index("t")]
        translation["t"] = translation.get("t", 0.0) + first * src.scale.get("t", 1.0)
    channels = src.channels
    if options.channels is not None and src.channels:
        picked = request.selection[layout.axes.index("c")]
        channels = [src.channels[c] for c in picked if c < len(src.channels)]
    if channels and len(channels) != layout.n_channels:
        channels = []  # metadata that does not match the data: napari gets defaults
    return {"scale": scale, "units": src.units, "translation": translation, "channels": channels}


def _open_output(run: _Run, destination: Any, stats: dict[str, Any]) -> tuple[Any, Ledger]:
    """The output (created, or opened to resume) and the run's ledger, holding the statistics."""
    from ..io import OmeZarrWriter

    the_plan, options = run.request.plan, run.options
    writer = OmeZarrWriter(
        destination,
        shape=the_plan.out_shape,
        axes=run.request.layout.axes,
        chunks=the_plan.out_chunks,
        dtype=options.output_dtype,
        **_output_meta(run),
        ngff_version=options.ngff_version,
        overwrite=options.overwrite,
        resume=options.resume,
        run_config=run.record,
    )
    ledger = Ledger(work_root(writer.path, run.work_dir))
    if not options.resume:  # a work folder outside the output may hold an earlier run's records
        ledger.remove()
        work_stamp(ledger.root, writer.path)
    ledger.put("stats", stats)
    return writer, ledger


def _run_passes(
    run: _Run,
    stats: dict[str, Any],
    ledger: Ledger,
    output: str,
    scratch: Scratch,
    client: Any,
    progress: Callable[[int, int], None] | None,
) -> tuple[TaskContext, dict[str, int]]:
    """Steps 1-3, step 4 and steps 5-6 as tasks, each pass's maxima feeding the next; the counts of tasks."""
    the_plan = run.request.plan
    ctx = _task_context(run.request, stats, ledger, output, run.options.device)
    pre_tasks = the_plan.plane_tasks() if the_plan.needs_preprocess else []
    sparse_tasks = the_plan.sparse_tasks() if run.request.params.sparse_iters else []
    final_tasks = the_plan.final_tasks()
    counter = {"done": 0, "total": len(pre_tasks) + len(sparse_tasks) + len(final_tasks), "resumed": 0}
    if pre_tasks:
        # Without step 4, step 5 reads h: its loss means recomputing it. With step 4, h is
        # dropped once step 4 is done, and a step-4 block recomputes missing chunks itself.
        lost_h = "preprocess" if not sparse_tasks else None
        _work_array(ctx.h, the_plan.out_shape, work_chunks(the_plan, "h"), ledger, lost_h)
        book = RecordBook(ledger, "preprocess")
        h_max = _run_tasks(_task_preprocess, ctx, pre_tasks, book, client, progress, counter, scratch.watch(None))
        ctx = replace(ctx, h_max=h_max)
    if sparse_tasks:
        _work_array(ctx.g, the_plan.out_shape, work_chunks(the_plan, "g"), ledger, "sparse")
        # One read of the pass's records, an earlier run's: for the book and for the reaper.
        book = RecordBook(ledger, "sparse")
        watch = scratch.watch(ctx.h if pre_tasks else None, sparse_tasks, the_plan.halo, book.done)
        g_max = _run_tasks(_task_sparse, ctx, sparse_tasks, book, client, progress, counter, watch)
        ctx = replace(ctx, g_max=g_max)
        scratch.drop(ctx.h)
    final_input = ctx.g if sparse_tasks else ctx.h if pre_tasks else None
    ctx = _step5_passes(ctx, ledger, scratch, client, progress, counter)
    # A 3-D step-5 block reads its halo too: its neighbours' chunks stay until they are done.
    read = the_plan.deconv_halo if the_plan.deconv_block is not None else (lambda r: r)
    book = RecordBook(ledger, "final")
    watch = scratch.watch(final_input, final_tasks, read, book.done)
    _run_tasks(_task_final, ctx, final_tasks, book, client, progress, counter, watch)
    for path in ctx.state_in:
        scratch.drop(path)
    scratch.sample(force=True)
    return ctx, counter


def _step5_passes(
    ctx: TaskContext,
    ledger: Ledger,
    scratch: Scratch,
    client: Any,
    progress: Callable[[int, int], None] | None,
    counter: dict[str, int],
) -> TaskContext:
    """The passes of a split step 5 before the last (:meth:`Plan.deconv_passes`), each reading the state
    the one before wrote (work arrays ``step5-<pass>-<i>.zarr``, ledger stage ``step5-<pass>``); the
    context of the last pass, which writes the output as ``final``. A resumed run skips the passes
    its ledger holds whole (their state may be gone: only the next pass read it)."""
    plan = ctx.plan
    passes = plan.deconv_passes() if plan.deconv_pass_iters else []
    tasks = plan.final_tasks()
    counter["total"] += len(tasks) * max(0, len(passes) - 1)
    state_in: tuple[str, ...] = ()
    for j, (first, count) in enumerate(passes):
        ctx = replace(ctx, first_iteration=first, pass_iterations=count, state_in=state_in, state_out=())
        if j == len(passes) - 1:
            break
        out = tuple(ledger.path(f"step5-{j}-{i}.zarr") for i in range(plan.deconv_state_arrays()))
        ctx = replace(ctx, state_out=out)
        stage = f"step5-{j}"
        after = "final" if j + 2 == len(passes) else f"step5-{j + 1}"
        if len(ledger.done(stage)) == len(tasks) and len(ledger.done(after)):
            counter["done"] += len(tasks)  # done, and the next pass has started from it
            counter["resumed"] += len(tasks)
        else:
            for path in out:
                _work_array(path, plan.out_shape, plan.out_chunks, ledger, stage)
            _run_tasks(_task_deconv_pass, ctx, tasks, RecordBook(ledger, stage), client, progress, counter)
            for path in state_in:  # read by this pass only
                scratch.drop(path)
        state_in = out
    return ctx


def _finalise(
    run: _Run,
    ctx: TaskContext,
    stats: dict[str, Any],
    writer: Any,
    ledger: Ledger,
    lease: Lease,
    records: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """Write the output's attributes (it is complete from then on) and remove the work folder; the attributes."""
    attrs = _attrs(run, ctx, stats, records, seconds)
    lease.check()  # a run presumed dead and taken over finishes nothing
    writer.finalize(attrs=attrs, pyramid=run.options.pyramid)
    lease.check()
    try:
        ledger.remove()
    except OSError as e:  # the image is complete: say how to finish the clean-up
        warnings.warn(
            f"could not remove the work folder {redact(ledger.root)} ({e}); run the same command with "
            "--resume to remove it",
            BigdeconWarning,
            stacklevel=2,
        )
    return attrs


def _attrs(
    run: _Run, ctx: TaskContext, stats: dict[str, Any], records: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """What the finished output records of its run (``records``: the caller's ``config`` and ``suggestion``)."""
    request, src = run.request, run.request.src
    attrs: dict[str, Any] = {
        "version": __version__,
        "parameters": run.params_record,
        "statistics": {
            "raw_max": stats["scale"],
            "raw_mean_normalised": stats["mean"],
            "max_after_preprocess": ctx.h_max,
            "max_after_sparse": ctx.g_max,
            "saturated_pixels": stats.get("saturated_pixels", 0),
            "saturation_level": stats.get("saturation_level"),
        },
        "offset": {"counts": stats.get("offset", 0.0), "estimated": bool(stats.get("offset_auto"))},
        "voxel_size": {
            a: {"size": src.scale[a], "unit": src.units.get(a), "from": voxel_origin(src, a)}
            for a in ("z", "y", "x")
            if a in src.axes
        },
        "psf_preparation": request.psf_reports,
        "depth": request.plan.depth,
        "psf_model": psf_model_used(request),  # the model that ran (optics: its values in "optics_psf")
        "config": redact(records.get("config") or {}),
        "seconds": round(seconds, 3),
    }
    if records.get("suggestion") is not None:
        attrs["suggestion"] = records["suggestion"]
    if request.optics:
        attrs["optics_psf"] = request.optics
    if run.work_dir is not None:  # where a run killed after finalising left its work folder
        attrs["work_dir"] = run.record["work_dir"]
    return attrs


def _task_context(request: Request, stats: dict[str, Any], ledger: Ledger, output: str, device: str) -> TaskContext:
    """What every task of a run carries: a few kB when pickled.

    The PSFs (one per processed channel) go to the work folder and the tasks
    read them from there; the parameters lose their measured PSF.
    """
    layout = request.layout
    psf_paths: list[str | None] = []
    for i, p in enumerate(request.channel_params):
        kernel = output_psf(p, 3 if layout.k is not None else 2)
        psf_paths.append(ledger.put_array(f"psf-{i}", kernel) if kernel is not None else None)
    lean = replace(request.params, psf=None)
    return TaskContext(
        layout=layout,
        params=lean,
        plan=replace(request.plan, params=lean),
        level=tuple(request.src.level),
        selection=request.selection,
        scale=stats["scale"],
        mean=stats["mean"],
        offset=float(stats.get("offset", 0.0)),
        h=ledger.path("h.zarr"),
        g=ledger.path("g.zarr"),
        output=output,
        psf=psf_paths,
        run_id=f"{os.getpid()}-{time.monotonic_ns()}",
        device=device,
    )
