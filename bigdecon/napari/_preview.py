"""The preview of a region: one block of a run, computed stage by stage, cached, first look first.

A preview is one block of a run: the region with the halo the run's blocks read
(the sparse-Hessian depth of :func:`bigdecon.planner.default_depth` plus the
step-5 reach of :func:`~bigdecon.solvers.richardson_lucy.deconv_halo`), run
through the same stages (:mod:`bigdecon.stages`) and cut back to the region.

Three things make it quick to look at:

- **Stages cached** (:class:`PreviewCache`, one per layer): steps 1-3 per plane, step 4 per block.
  A change of step 5 (``deconv_iters``, ``deconv_type``) runs step 5 only; a change of step 4's
  parameters runs steps 4 and 5 on the cached background. The step-4 block is grown by the step-5
  reach of the next power of two of ``deconv_iters`` (at least 16), so more iterations within that
  bucket still find it; the extents are a function of the parameters alone, so a cached result is
  the uncached one, bit for bit.
- **First look** (:func:`preview_steps`): the plane on screen with its halo along the third axis
  first (17 of 80 planes for a 64-plane time-lapse region), then the whole region, with the same
  statistics, so the plane of the first look is that plane of the whole preview.
- **Both cores**: steps 1-3 (the wavelet background, one plane at a time in one thread) run on the
  planes in as many threads as :func:`~bigdecon._backend.cpu_threads` gives; the sparse step and
  the transforms of step 5 take their threads themselves.

The stages take the data set's statistics as arguments: :func:`dataset_stats` computes the raw
maximum and mean as a run does (the run's own pass, :func:`bigdecon.passes.run._source_stats`),
once per layer; the maxima after steps 1-3 and 4 come from the block (a run's whole-data values,
:meth:`Stats.of_run`, once a run has recorded them).
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import BigdeconError, InputError
from ..params import PARAMETERS, Params

__all__ = [
    "PREVIEW_KEYS",
    "Preview",
    "PreviewCache",
    "PreviewCancelled",
    "Stats",
    "dataset_stats",
    "preview_region",
    "preview_steps",
    "resolve",
]

# The options a preview uses: the PSF, the input's description and the method (not the run's output
# or cluster options, nor the parameter search of --auto).
PREVIEW_KEYS = tuple(
    name
    for name, p in PARAMETERS.items()
    if p.group in ("psf", "input", "method") and "run" in p.commands and name not in ("auto", "budget")
)

# Planes up to this many pixels get steps 1-3 whole, as in a run; larger ones are cut to the
# preview's block (the wavelet background reaches ~1400 pixels: whole planes cost seconds each).
WHOLE_PLANE_PIXELS = 512 * 512
# Steps 1-3 on a cut plane start and end on this grid, so a slightly larger step-4 halo (a lower
# fidelity) finds the cached background.
GRID = 64
# Layers up to this many voxels get the data set's raw maximum and mean (one pass over the layer, as a
# run's first pass); larger ones the block's until a run has recorded them.
DATASET_STATS_VOXELS = 2**28


def resolve(src: Any, options: Mapping[str, Any]) -> Any:
    """The run's resolved request (parameters per channel, PSF, plan) for ``src`` and the widget's options.

    Options left at ``None`` are not passed; every value goes through the same checks as
    :func:`bigdecon.deconvolve`'s (an :class:`~bigdecon.errors.InputError` names the problem).
    """
    from ..passes.options import parse_run_options
    from ..passes.request import prepare_request

    given = {k: v for k, v in options.items() if v is not None and k in PREVIEW_KEYS}
    return prepare_request(src, *parse_run_options(given))


@dataclass(frozen=True)
class Stats:
    """The data set's statistics the stages take (one channel): raw maximum, mean / maximum, and the
    maxima after steps 1-3 and after step 4 (those a run records in its output's ``statistics``)."""

    scale: float
    mean: float
    h_max: float | None = None
    g_max: float | None = None
    source: str = "block"  # "block", "data set" (raw maximum and mean) or "run" (all four)

    @classmethod
    def of_block(cls, raw: np.ndarray) -> Stats:
        """Estimated from the preview's own block (its maxima after steps 1-3 and 4 come as it runs)."""
        scale = float(raw.max())
        return cls(scale, float(raw.mean(dtype=np.float64)) / scale if scale > 0 else 0.0)

    @classmethod
    def of_run(cls, attrs: Mapping[str, Any], channel: int = 0) -> Stats:
        """The statistics a finished run recorded (its output's ``bigdecon`` attributes)."""
        st = attrs["statistics"]

        def pick(v: Any) -> float | None:
            return None if v is None else float(v[channel] if isinstance(v, list) else v)

        return cls(
            pick(st["raw_max"]) or 0.0,
            pick(st["raw_mean_normalised"]) or 0.0,
            pick(st["max_after_preprocess"]),
            pick(st["max_after_sparse"]),
            "run",
        )


@dataclass(frozen=True)
class Preview:
    """A deconvolved region: ``data`` (float32) and where it lies in the layer's data coordinates."""

    data: np.ndarray
    start: dict[str, float]  # data coordinate of the first output pixel, per axis of ``data``
    step: dict[str, float]  # data pixels per output pixel (0.5 in y and x when up-sampling)
    axes: str
    seconds: float
    stats: Stats
    halo: dict[str, int]  # the run's halo: step 4's depth plus step 5's reach, per axis
    ran: dict[str, float] = field(default_factory=dict)  # seconds of each stage computed (cached ones absent)
    first_look: bool = False  # one plane of the region, before the whole region
    planes: int = 0  # planes whose steps 1-3 were computed (not cached)
    cpu: dict[str, float] = field(default_factory=dict)  # the process's CPU seconds of each stage computed


class PreviewCancelled(BigdeconError):
    """A newer preview was asked for: this one stopped between two stages."""


class _Clock:
    """Wall and CPU seconds of the stages a preview computes, the planes of steps 1-3 it computed, and
    the cancel event it checks before each stage."""

    def __init__(self, cancel: Any = None) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.planes = 0
        self.cancel = cancel

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.cancel is not None and self.cancel.is_set():
            raise PreviewCancelled(f"preview stopped before {name}")
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - c0


class PreviewCache:
    """One layer's stage results: steps 1-3 per plane, step 4 per block, the data set's statistics.

    At most ``entries`` results of each stage are kept (the newest): a background of 80 planes of
    512 x 512 is 84 MB.

    Examples
    --------
    >>> from bigdecon.data import filaments_timelapse
    >>> raw, _ = filaments_timelapse((8, 64, 64), fwhm=3.0, seed=1)
    >>> cache, region = PreviewCache(), {"y": (16, 48), "x": (16, 48)}
    >>> src = image_source_for_doc(raw)
    >>> sorted(preview_region(src, {"fwhm": 3, "sparse_iters": 5}, region, cache=cache).ran)
    ['background', 'deconv', 'sparse']
    >>> sorted(preview_region(src, {"fwhm": 3, "sparse_iters": 5, "deconv_iters": 9}, region, cache=cache).ran)
    ['deconv']
    """

    def __init__(self, entries: int = 2) -> None:
        self.entries = entries
        self.planes: OrderedDict[tuple, tuple[int, int, Any]] = OrderedDict()
        self.blocks: OrderedDict[tuple, tuple[Any, float]] = OrderedDict()
        self.dataset: dict[Any, Any] = {}  # (offset option, channel) -> Stats; "auto offset" -> the estimate

    def _put(self, store: OrderedDict, key: tuple, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > self.entries:
            store.popitem(last=False)


def image_source_for_doc(raw: np.ndarray) -> Any:
    """A t/y/x layer for the examples (:func:`bigdecon.napari._core.image_source`)."""
    from ._core import image_source

    return image_source(raw, "tyx")


def dataset_stats(src: Any, options: Mapping[str, Any], channel: int = 0, cache: PreviewCache | None = None) -> Stats:
    """The data set's raw maximum and mean of one channel, computed by the run's own statistics pass.

    Over the whole layer (lazily, chunk by chunk), as a run's first pass; after the offset a run
    subtracts. Cached per ``(offset, channel)`` in ``cache``.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon.napari._core import image_source
    >>> raw = np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32)
    >>> dataset_stats(image_source(raw, "tyx"), {"fwhm": 3})
    Stats(scale=2047.0, mean=0.5, h_max=None, g_max=None, source='data set')
    """
    from ..passes.run import _source_stats

    cache = cache if cache is not None else PreviewCache()
    request = resolve(src, options)
    key = (str(request.offset), channel)
    if key not in cache.dataset:
        offset = _offset(request, cache)
        scale, mean, _ = _source_stats(request.data, request.layout, where="the layer", offset=offset)
        i = min(channel, len(scale) - 1)
        cache.dataset[key] = Stats(scale[i], mean[i], source="data set")
    return cache.dataset[key]


def _offset(request: Any, cache: PreviewCache) -> float:
    """The camera offset a run subtracts (``auto``: estimated once per layer from a sample of chunks)."""
    if request.offset != "auto":
        return float(request.offset or 0.0)
    if "auto offset" not in cache.dataset:
        from ..passes.request import estimate_offset

        cache.dataset["auto offset"] = estimate_offset(request.data)
    return float(cache.dataset["auto offset"])


def preview_region(
    src: Any,
    options: Mapping[str, Any],
    region: Mapping[str, tuple[int, int]],
    index: Mapping[str, int] | None = None,
    stats: Stats | None = None,
    device: str = "auto",
    cache: PreviewCache | None = None,
    cancel: Any = None,
) -> Preview:
    """Deconvolve one region of ``src`` as a run's block would: with its halo, then cut to the region.

    Parameters
    ----------
    src : ImageSource
        The input (:func:`~bigdecon.napari._core.image_source` of a layer, or :func:`bigdecon.io.open_image`).
    options : mapping
        Parameters as :func:`bigdecon.deconvolve` takes them (``fwhm``, ``psf_model``, ``sparse_iters``...).
    region : mapping
        ``{axis: (start, stop)}`` in input pixels for the solver axes (y, x and t or z); a missing
        axis is taken whole.
    index : mapping, optional
        The position on the other axes (``{"t": 3, "c": 1}``: a time point of a ``tczyx`` input, a channel).
    stats : Stats, optional
        The data set's statistics (default: estimated from the block, :meth:`Stats.of_block`).
    device : {"auto", "cpu", "gpu"}
        Where the block is computed: ``auto`` uses a GPU when CuPy sees one.
    cache : PreviewCache, optional
        Stage results of earlier previews of the same layer, reused where their inputs are the same.
    cancel : threading.Event, optional
        Once set, the preview stops before its next stage (:class:`PreviewCancelled`).

    Returns
    -------
    Preview

    Examples
    --------
    >>> from bigdecon.data import filaments_timelapse
    >>> from bigdecon.napari._core import image_source
    >>> raw, _ = filaments_timelapse((8, 96, 96), fwhm=3.0, seed=1)
    >>> p = preview_region(image_source(raw, "tyx"), {"fwhm": 3, "sparse_iters": 10}, {"y": (32, 64), "x": (40, 72)})
    >>> p.data.shape, p.start
    ((8, 32, 32), {'t': 0.0, 'y': 32.0, 'x': 40.0})
    """
    t0 = time.perf_counter()
    cache = cache if cache is not None else PreviewCache(entries=1)
    request = resolve(src, options)
    lay, index = request.layout, dict(index or {})
    channel = _channel_position(request, index)
    params = request.channel_params[channel]
    solver = _solver_axes(lay)
    spans, e5, e4, e13 = _extents(request, params, solver, region)
    clock = _Clock(cancel)
    raw = None
    if stats is None:  # the block's own statistics: its raw pixels first
        raw = _read(request, solver, e13, index, channel, _offset(request, cache))
        stats = Stats.of_block(raw)
    out, stats = _stages(
        request, params, solver, (spans, e5, e4, e13), index, channel, stats, device, cache, clock, raw
    )
    names = "".join(lay.axes[ax] for ax in solver.values())
    factor = 2 if params.up_sample else 1
    step = {a: (1.0 / factor if a in "yx" else 1.0) for a in names}
    start = {lay.axes[solver[n]]: float(spans[n][0]) for n in solver}
    halo = {lay.axes[solver[n]]: h for n, h in _run_halo(request, params, solver).items()}
    seconds = time.perf_counter() - t0
    return Preview(out, start, step, names, seconds, stats, halo, clock.wall, planes=clock.planes, cpu=clock.cpu)


def preview_steps(
    src: Any,
    options: Mapping[str, Any],
    region: Mapping[str, tuple[int, int]],
    index: Mapping[str, int] | None = None,
    stats: Stats | None = None,
    device: str = "auto",
    cache: PreviewCache | None = None,
    plane: int | None = None,
    cancel: Any = None,
) -> Iterator[Preview]:
    """The first look, then the whole region: :func:`preview_region` of ``plane`` alone, then of ``region``.

    ``plane`` is a position along the third solver axis (t or z; default: the region's middle) inside
    the region. The whole region is computed with the statistics the first look used (its maxima after
    steps 1-3 and 4 included), so the first look is that plane of the whole preview within the run's
    halo tolerance; the background of the first look's planes is reused (``cache``). Without a third
    axis, with a one-plane region, or where the first look's block would have more than half the
    whole one's planes (a 3-D PSF's reach along z), only the whole region comes.

    Without ``stats``, a layer of at most :data:`DATASET_STATS_VOXELS` voxels gets the data set's raw
    maximum and mean (:func:`dataset_stats`, cached), a larger one the first look's block's.
    ``cancel`` (a :class:`threading.Event`), once set, stops it at the next stage
    (:class:`PreviewCancelled`); what was computed stays in ``cache``.

    Examples
    --------
    >>> from bigdecon.data import filaments_timelapse
    >>> from bigdecon.napari._core import image_source
    >>> raw, _ = filaments_timelapse((40, 64, 64), fwhm=3.0, seed=1)
    >>> region = {"t": (4, 36), "y": (16, 48), "x": (16, 48)}
    >>> steps = preview_steps(image_source(raw, "tyx"), {"fwhm": 3, "sparse_iters": 5}, region)
    >>> [(p.first_look, p.data.shape, p.start["t"]) for p in steps]
    [(True, (1, 32, 32), 20.0), (False, (32, 32, 32), 4.0)]
    """
    cache = cache if cache is not None else PreviewCache()
    request = resolve(src, options)
    lay = request.layout
    if stats is None and int(np.prod(lay.shape)) <= DATASET_STATS_VOXELS:
        stats = dataset_stats(src, options, _channel_position(request, dict(index or {})), cache)
    if lay.k is None:
        yield preview_region(src, options, region, index, stats, device, cache, cancel)
        return
    k_name, size = lay.axes[lay.k], lay.shape[lay.k]
    a, b = (int(v) for v in region.get(k_name, (0, size)))
    a, b = max(0, a), min(size, b)
    p = (a + b) // 2 if plane is None else int(np.clip(plane, a, b - 1))
    if b - a > 1 and _worth_a_first_look(request, options, region, k_name, p, index):
        first = preview_region(src, options, {**region, k_name: (p, p + 1)}, index, stats, device, cache, cancel)
        yield replace(first, first_look=True)
        stats = first.stats
    yield preview_region(src, options, region, index, stats, device, cache, cancel)


def _worth_a_first_look(
    request: Any, options: Mapping[str, Any], region: Mapping[str, tuple[int, int]], k: str, plane: int, index: Any
) -> bool:
    """Whether the first look's step-4 block has at most half the planes of the whole region's. With a
    3-D PSF the step-5 reach along z (36 planes for FWHM 6 at 7 iterations) makes one plane's block
    nearly the whole region's: then only the whole region is computed."""
    params = request.channel_params[_channel_position(request, dict(index or {}))]
    solver = _solver_axes(request.layout)
    whole = _extents(request, params, solver, region)[2]["k"]
    one = _extents(request, params, solver, {**region, k: (plane, plane + 1)})[2]["k"]
    return 2 * (one[1] - one[0]) <= whole[1] - whole[0]


def _solver_axes(lay: Any) -> dict[str, int]:
    return {n: ax for n, ax in (("k", lay.k), ("y", lay.y), ("x", lay.x)) if ax is not None}


def _run_halo(request: Any, params: Params, solver: dict[str, int], iterations: int | None = None) -> dict[str, int]:
    """Per solver axis name (k, y, x): the reach of step 4 plus that of step 5 (at ``iterations``), in output pixels."""
    depth = _depth(request, params, solver)
    reach = _reach(request, params, solver, iterations)
    return {n: depth[n] + reach[n] for n in solver}


def _depth(request: Any, params: Params, solver: dict[str, int]) -> dict[str, int]:
    """The plan's step-4 depth (default_depth unless the options set one); none along an uncoupled k."""
    halo = {n: int(request.plan.depth.get(n, 0)) if params.sparse_iters else 0 for n in solver}
    if "k" in halo and not request.plan.coupled:
        halo["k"] = 0
    return halo


def _reach(request: Any, params: Params, solver: dict[str, int], iterations: int | None = None) -> dict[str, int]:
    """Step 5's halo per solver axis: the run's, or that of ``iterations`` iterations (the cache's margin)."""
    from ..solvers.richardson_lucy import deconv_halo, psf_step
    from ..stages import deconv_kind, output_psf

    reach = dict.fromkeys(solver, 0)
    psf = output_psf(params, 3 if "k" in solver else 2)
    if psf is None:
        return reach
    if psf.ndim == 3 and request.plan.deconv_depth is not None:
        if iterations is None:
            r: Sequence[int] = [request.plan.deconv_depth[n] for n in ("k", "y", "x")]  # the run's step-5 halo
        else:
            r = deconv_halo(psf.shape, iterations, deconv_kind(params), psf_step(psf))
    else:  # 2-D step 5 runs on whole planes in a run: the halo that makes a block equal them
        r = deconv_halo(psf.shape, iterations or params.deconv_iters, "rl", psf_step(psf))
    names = list(solver)
    for n, v in zip(names[-psf.ndim :], r):
        reach[n] = int(v)
    return reach


def _margin_iterations(iterations: int) -> int:
    """The iteration count whose step-5 reach grows the step-4 block: the next power of two, at least 16."""
    return max(16, 1 << (max(1, iterations) - 1).bit_length())


Extents = tuple[dict[str, tuple[int, int]], ...]


def _extents(
    request: Any, params: Params, solver: dict[str, int], region: Mapping[str, tuple[int, int]]
) -> tuple[
    dict[str, tuple[int, int]], dict[str, tuple[int, int]], dict[str, tuple[int, int]], dict[str, tuple[int, int]]
]:
    """In input pixels per solver axis: the region, step 5's block, step 4's block, steps 1-3's block."""
    lay = request.layout
    reach = _reach(request, params, solver)
    margin = {
        n: max(r, m)
        for (n, r), m in zip(
            reach.items(), _reach(request, params, solver, _margin_iterations(params.deconv_iters)).values()
        )
    }
    depth = _depth(request, params, solver)
    whole = lay.shape[lay.y] * lay.shape[lay.x] <= WHOLE_PLANE_PIXELS
    spans, e5, e4, e13 = {}, {}, {}, {}
    for n, ax in solver.items():
        name, size = lay.axes[ax], lay.shape[ax]
        a, b = (int(v) for v in region.get(name, (0, size)))
        a, b = max(0, a), min(size, b)
        if b <= a:
            raise InputError(f"the region is empty along {name} ({a}:{b} of {size})")
        spans[n] = (a, b)
        e5[n] = (max(0, a - reach[n]), min(size, b + reach[n]))
        e4[n] = (max(0, a - depth[n] - margin[n]), min(size, b + depth[n] + margin[n]))
        if n == "k":
            e13[n] = e4[n]
        elif whole:
            e13[n] = (0, size)
        else:
            e13[n] = (e4[n][0] // GRID * GRID, min(size, -(-e4[n][1] // GRID) * GRID))
    return spans, e5, e4, e13


def _on_device(raw: np.ndarray, device: str) -> Any:
    """The block where the stages run: on the GPU (CuPy) for ``gpu``, or ``auto`` with a GPU present."""
    from .._backend import gpu_available, to_device

    device = PARAMETERS["device"].parse(device)  # the model's one rule
    return to_device(raw, "gpu" if device == "gpu" or (device == "auto" and gpu_available()) else "cpu")


def _channel_position(request: Any, index: Mapping[str, int]) -> int:
    """Which of the request's processed channels ``index`` names (0 without a c axis)."""
    if "c" not in request.layout.axes:
        return 0
    c = int(index.get("c", 0))
    if c not in request.channel_ids:
        raise InputError(f"channel {c} is not among the processed channels {request.channel_ids}")
    return request.channel_ids.index(c)


def _read(
    request: Any,
    solver: dict[str, int],
    read: Mapping[str, tuple[int, int]],
    index: Mapping[str, int],
    channel: int,
    offset: float,
) -> np.ndarray:
    """The block's raw pixels as float32, the offset subtracted (clipped at 0) as a run does."""
    lay = request.layout
    where: list[Any] = []
    for ax, name in enumerate(lay.axes):
        k = next((n for n, a in solver.items() if a == ax), None)
        if k is not None:
            where.append(slice(*read[k]))
        elif name == "c":
            where.append(request.channel_ids[channel])
        else:
            where.append(int(np.clip(index.get(name, 0), 0, lay.shape[ax] - 1)))
    raw = np.asarray(request.data[tuple(where)], dtype=np.float32)
    if offset:
        raw = np.maximum(raw - np.float32(offset), 0)
    if not np.isfinite(raw).all():
        raise InputError("the region contains NaN or infinite pixels")
    return raw


def _preprocess(raw: Any, stats: Stats, params: Params, planes: bool) -> Any:
    """Steps 1-3; on the CPU the planes are shared among threads (each plane's background is its own)."""
    from .._backend import cpu_threads, get_xp
    from ..stages import preprocess

    threads = min(cpu_threads(), raw.shape[0]) if planes and get_xp(raw) is np else 1
    if threads <= 1:
        return preprocess(raw, stats.scale, stats.mean, params)
    parts = np.array_split(np.arange(raw.shape[0]), threads)
    with warnings.catch_warnings():
        # The background silences PyWavelets' boundary warning per call; warning filters are global, so
        # threads would undo each other's: silenced here, around all of them.
        warnings.filterwarnings("ignore", message="Level value of", category=UserWarning)
        with ThreadPoolExecutor(threads) as pool:
            done = list(pool.map(lambda p: preprocess(raw[p[0] : p[-1] + 1], stats.scale, stats.mean, params), parts))
    return np.concatenate(done)


def _index_key(request: Any, solver: dict[str, int], index: Mapping[str, int], channel: int) -> tuple:
    """The position on the axes outside the block (a time point, a channel), as a cache key."""
    lay = request.layout
    inside = {lay.axes[ax] for ax in solver.values()} | {"c"}
    return (channel, *sorted((a, int(v)) for a, v in index.items() if a in lay.axes and a not in inside))


def _background(
    request: Any,
    params: Params,
    solver: dict[str, int],
    e13: dict[str, tuple[int, int]],
    where: tuple[Mapping[str, int], int, str],
    stats: Stats,
    cache: PreviewCache,
    clock: _Clock,
    raw: np.ndarray | None,
) -> Any:
    """Steps 1-3 on the planes of ``e13``: the cached planes, and the others computed and added to them."""
    index, channel, device = where
    offset = _offset(request, cache)
    has_k = "k" in solver
    key: tuple = (_index_key(request, solver, index, channel), tuple(e13[n] for n in solver if n != "k"))
    key += (params.background, params.up_sample, stats.scale, stats.mean, offset, device)
    a, b = e13["k"] if has_k else (0, 1)

    def compute(lo: int, hi: int) -> Any:
        with clock.stage("background"):
            block = raw[lo - a : hi - a] if raw is not None and has_k else raw
            if block is None:
                block = _read(request, solver, {**e13, "k": (lo, hi)} if has_k else e13, index, channel, offset)
            clock.planes += hi - lo
            return _preprocess(_on_device(block, device), stats, params, has_k)

    hit = cache.planes.get(key)
    if hit is not None and has_k and hit[0] <= b and a <= hit[1]:  # overlapping planes: add the missing ones
        lo, hi, h = hit
        if a < lo or hi < b:
            xp = _xp(h)
            h = xp.concatenate([*([compute(a, lo)] if a < lo else []), h, *([compute(hi, b)] if hi < b else [])])
            lo, hi = min(a, lo), max(b, hi)
            cache._put(cache.planes, key, (lo, hi, h))
        return h[a - lo : b - lo]
    if hit is not None and not has_k:
        return hit[2]
    h = compute(a, b)
    cache._put(cache.planes, key, (a, b, h))
    return h


def _xp(array: Any) -> Any:
    from .._backend import get_xp

    return get_xp(array)


def _sparse(
    h: Any,
    h_max: float,
    params: Params,
    request: Any,
    g_range: dict[str, tuple[int, int]],
    out_shape: dict[str, int],
    key: tuple,
    cache: PreviewCache,
    clock: _Clock,
) -> tuple[Any, float]:
    """Step 4 on the step-4 block (cached per block and parameters): ``g`` and its maximum."""
    from ..stages import sparse_stage

    if not params.sparse_iters:
        return h, h_max
    key = (*key, tuple(g_range.values()), h_max, params.sparse_iters, params.fidelity, params.sparsity)
    key += (params.tcontinuity, request.plan.coupled)
    if key in cache.blocks:
        cache.blocks.move_to_end(key)
        return cache.blocks[key]
    faces = tuple((g_range[n][0] == 0, g_range[n][1] == out_shape[n]) for n in g_range)
    with clock.stage("sparse"):
        g = _xp(h).maximum(sparse_stage(h, h_max, params, request.plan.coupled, faces), 0)
        result = (g, float(g.max()))
    cache._put(cache.blocks, key, result)
    return result


def _stages(
    request: Any,
    params: Params,
    solver: dict[str, int],
    extents: tuple[dict[str, tuple[int, int]], ...],
    index: Mapping[str, int],
    channel: int,
    stats: Stats,
    device: str,
    cache: PreviewCache,
    clock: _Clock,
    raw: np.ndarray | None,
) -> tuple[np.ndarray, Stats]:
    """Steps 1-6: background on ``e13``, sparse on ``e4``, deconvolution on ``e5``, cut to the region.

    Returns the region and the statistics used (the block's maxima filled in where none were given).
    """
    from .._backend import gpu_available, to_numpy
    from ..passes.tasks import block_face_pad
    from ..stages import deconv_pad, deconv_stage, output_psf

    spans, e5, e4, e13 = extents
    names = list(solver)
    factor = 2 if params.up_sample else 1
    mult = {n: factor if n in "yx" else 1 for n in names}
    if stats.scale <= 0:
        return np.zeros(tuple((spans[n][1] - spans[n][0]) * mult[n] for n in names), np.float32), stats
    dev = PARAMETERS["device"].parse(device)
    dev = "gpu" if dev == "gpu" or (dev == "auto" and gpu_available()) else "cpu"
    h = _background(request, params, solver, e13, (index, channel, dev), stats, cache, clock, raw)

    def cut(x: Any, outer: dict[str, tuple[int, int]], inner: dict[str, tuple[int, int]]) -> Any:
        return x[
            tuple(slice((inner[n][0] - outer[n][0]) * mult[n], (inner[n][1] - outer[n][0]) * mult[n]) for n in names)
        ]

    h = cut(h, e13, e4)
    h_max = stats.h_max if stats.h_max is not None else float(h.max())
    out_shape = {n: request.layout.shape[solver[n]] * mult[n] for n in names}
    in_out = {n: (e4[n][0] * mult[n], e4[n][1] * mult[n]) for n in names}
    key: tuple = (_index_key(request, solver, index, channel), tuple(e13.values()), params.background, params.up_sample)
    key += (stats.scale, stats.mean, dev)
    g, g_max = _sparse(h, h_max, params, request, in_out, out_shape, key, cache, clock)
    g_max = stats.g_max if stats.g_max is not None else g_max
    g = cut(g, e4, e5)
    psf = output_psf(params, len(names))
    if psf is not None and psf.ndim == 3:
        ranges = [(e5[n][0] * mult[n], e5[n][1] * mult[n]) for n in names]
        pad = block_face_pad(ranges, [out_shape[n] for n in names], psf.shape)
    else:
        pad = deconv_pad(tuple(out_shape[n] for n in names), psf) if psf is not None else None
    with clock.stage("deconv"):
        f = deconv_stage(g, g_max, stats.scale, params, psf, pad=pad) if g_max > 0 else _xp(g).zeros_like(g)
    used = replace(stats, h_max=h_max, g_max=g_max)
    return np.ascontiguousarray(to_numpy(cut(f, e5, spans)), dtype=np.float32), used
