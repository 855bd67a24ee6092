"""What the napari widget computes, without napari: a layer as an input, the preview of a region, a config file.

A preview is one block of a run: the region with the halo the run's blocks
read (the sparse-Hessian depth of :func:`bigdecon.planner.default_depth` plus the
step-5 halo of :func:`~bigdecon.solvers.richardson_lucy.deconv_halo`), run
through the same stages (:mod:`bigdecon.stages`) and cut back to the region.
The stages take the data set's statistics as arguments: a preview is given
them (:class:`Stats`, e.g. those a run recorded) or estimates them from the
block itself (:meth:`Stats.of_block`), which changes the output's intensity
scale, not where its structures are.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BigdeconError, InputError
from ..params import PARAMETERS, Params

__all__ = [
    "PREVIEW_KEYS",
    "RUN_KEYS",
    "Preview",
    "RunCancelled",
    "RunState",
    "Stats",
    "guess_axes",
    "image_source",
    "preview_region",
    "resolve",
    "run_job",
    "save_config",
    "suggest_region",
]

# The options a preview uses: the PSF, the input's description and the method (not the run's output
# or cluster options, nor the parameter search of --auto).
PREVIEW_KEYS = tuple(
    name
    for name, p in PARAMETERS.items()
    if p.group in ("psf", "input", "method") and "run" in p.commands and name not in ("auto", "budget")
)

# The options of the run itself: its output and its cluster (a local one, or a scheduler's address).
RUN_KEYS: tuple[str, ...] = ("output_dtype", "ngff_version", "resume", "overwrite", "work_dir", "workers")
RUN_KEYS += ("threads_per_worker", "memory_limit", "scheduler", "device")

# Planes up to this many pixels get steps 1-3 whole, as in a run; larger ones are cut to the
# preview's block (the wavelet background reaches ~1400 pixels: whole planes cost seconds each).
WHOLE_PLANE_PIXELS = 512 * 512


def guess_axes(ndim: int) -> str:
    """Axis names for an array of ``ndim`` dimensions without metadata (a 3-D stack is z, y, x).

    Examples
    --------
    >>> guess_axes(2), guess_axes(3), guess_axes(4), guess_axes(5)
    ('yx', 'zyx', 'tzyx', 'tczyx')
    """
    names = {2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}.get(ndim)
    if names is None:
        raise InputError(f"a layer of {ndim} dimensions: bigdecon takes 2 to 5 (t, c, z, y, x)")
    return names


def image_source(
    data: Any,
    axes: str,
    scale: Sequence[float] | None = None,
    translate: Sequence[float] | None = None,
    path: str = "",
) -> Any:
    """A layer's data (NumPy, Dask or Zarr, nothing loaded) as the :class:`~bigdecon.io.ImageSource` a run reads.

    Examples
    --------
    >>> import numpy as np
    >>> src = image_source(np.zeros((4, 32, 32), np.uint16), "tyx", scale=(1.0, 0.1, 0.1))
    >>> src.axes, src.scale["y"], src.units
    (('t', 'y', 'x'), 0.1, {'y': 'micrometer', 'x': 'micrometer'})
    """
    import dask.array as da

    from ..io import ImageSource

    ndim = data.ndim if hasattr(data, "ndim") else np.ndim(data)
    if len(axes) != ndim:
        raise InputError(f"axes {axes} name {len(axes)} axes, but the layer has {ndim}")
    lazy = data if isinstance(data, da.Array) else da.from_array(data, chunks="auto")
    sizes = [1.0] * len(axes) if scale is None else [float(s) for s in scale]
    offsets = [0.0] * len(axes) if translate is None else [float(t) for t in translate]
    units = {a: "micrometer" for a in axes if a in "zyx"}
    return ImageSource(
        lazy,
        tuple(axes),
        dict(zip(axes, sizes)),
        units,
        dict(zip(axes, offsets)),
        path=path,
        stored_chunks=tuple(c[0] for c in lazy.chunks),
    )


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
    halo: dict[str, int]


def _halo(request: Any, params: Params) -> dict[str, int]:
    """Per solver axis name (k, y, x): the reach of step 4 plus that of step 5, in output pixels."""
    from ..solvers.richardson_lucy import deconv_halo, psf_step
    from ..stages import output_psf

    lay = request.layout
    names = [n for n, ax in (("k", lay.k), ("y", lay.y), ("x", lay.x)) if ax is not None]
    # The plan's step-4 depth (default_depth unless the options set one); none along an uncoupled k.
    halo = {n: int(request.plan.depth.get(n, 0)) if params.sparse_iters else 0 for n in names}
    if "k" in halo and not request.plan.coupled:
        halo["k"] = 0
    psf = output_psf(params, 3 if "k" in names else 2)
    if psf is not None:
        if psf.ndim == 3 and request.plan.deconv_depth is not None:
            reach: Sequence[int] = [request.plan.deconv_depth[n] for n in ("k", "y", "x")]  # the run's step-5 halo
        else:  # 2-D step 5 runs on whole planes in a run: the halo that makes a block equal them
            reach = deconv_halo(psf.shape, params.deconv_iters, "rl", psf_step(psf))
        for n, r in zip(names[-psf.ndim :], reach):
            halo[n] += int(r)
    return halo


def preview_region(
    src: Any,
    options: Mapping[str, Any],
    region: Mapping[str, tuple[int, int]],
    index: Mapping[str, int] | None = None,
    stats: Stats | None = None,
    device: str = "auto",
) -> Preview:
    """Deconvolve one region of ``src`` as a run's block would: with its halo, then cut to the region.

    Parameters
    ----------
    src : ImageSource
        The input (:func:`image_source` of a layer, or :func:`bigdecon.io.open_image`).
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

    Returns
    -------
    Preview

    Examples
    --------
    >>> from bigdecon.data import filaments_timelapse
    >>> raw, _ = filaments_timelapse((8, 96, 96), fwhm=3.0, seed=1)
    >>> p = preview_region(image_source(raw, "tyx"), {"fwhm": 3, "sparse_iters": 10}, {"y": (32, 64), "x": (40, 72)})
    >>> p.data.shape, p.start
    ((8, 32, 32), {'t': 0.0, 'y': 32.0, 'x': 40.0})
    """
    t0 = time.perf_counter()
    request = resolve(src, options)
    lay, index = request.layout, dict(index or {})
    channel = _channel_position(request, index)
    params = request.channel_params[channel]
    solver = {n: ax for n, ax in (("k", lay.k), ("y", lay.y), ("x", lay.x)) if ax is not None}
    halo = _halo(request, params)
    spans, grown = {}, {}
    for n, ax in solver.items():
        name, size = lay.axes[ax], lay.shape[ax]
        a, b = (int(v) for v in region.get(name, (0, size)))
        a, b = max(0, a), min(size, b)
        if b <= a:
            raise InputError(f"the region is empty along {name} ({a}:{b} of {size})")
        spans[n] = (a, b)
        grown[n] = (max(0, a - halo[n]), min(size, b + halo[n]))
    whole_planes = lay.shape[lay.y] * lay.shape[lay.x] <= WHOLE_PLANE_PIXELS
    read = {n: (0, lay.shape[solver[n]]) if whole_planes and n in "yx" else grown[n] for n in solver}
    raw = _read(request, solver, read, index, channel)
    stats = stats or Stats.of_block(raw)
    out, stats = _stages(_on_device(raw, device), read, grown, spans, params, request, stats)
    names = "".join(lay.axes[ax] for ax in solver.values())
    factor = 2 if params.up_sample else 1
    step = {a: (1.0 / factor if a in "yx" else 1.0) for a in names}
    start = {lay.axes[solver[n]]: float(spans[n][0]) for n in solver}
    return Preview(
        out, start, step, names, time.perf_counter() - t0, stats, {lay.axes[solver[n]]: halo[n] for n in solver}
    )


def _on_device(raw: np.ndarray, device: str) -> Any:
    """The block where the stages run: on the GPU (CuPy) for ``gpu``, or ``auto`` with a GPU present."""
    from .._backend import gpu_available, to_device

    if device not in ("auto", "cpu", "gpu"):
        raise InputError(f"device must be auto, cpu or gpu, got {device!r}")
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
    request: Any, solver: dict[str, int], read: dict[str, tuple[int, int]], index: dict, channel: int
) -> np.ndarray:
    """The block's raw pixels as float32, the offset subtracted (clipped at 0) as a run does."""
    lay = request.layout
    where: list[Any] = []
    for ax, name in enumerate(lay.axes):
        k = next((n for n, a in solver.items() if a == ax), None)
        if k is not None:
            where.append(slice(*read[k]))
        elif name == "c":
            where.append(request.channel_ids[channel] if "c" in lay.axes else 0)
        else:
            where.append(int(index.get(name, 0)))
    raw = np.asarray(request.data[tuple(where)], dtype=np.float32)
    offset = request.offset
    if offset == "auto":
        from ..passes.request import estimate_offset

        offset = estimate_offset(request.data)
    if offset:
        raw = np.maximum(raw - np.float32(offset), 0)
    if not np.isfinite(raw).all():
        raise InputError("the region contains NaN or infinite pixels")
    return raw


def _stages(
    raw: np.ndarray,
    read: dict[str, tuple[int, int]],
    grown: dict[str, tuple[int, int]],
    spans: dict[str, tuple[int, int]],
    params: Params,
    request: Any,
    stats: Stats,
) -> tuple[np.ndarray, Stats]:
    """Steps 1-6 on the block read; returns the region and the statistics used (block maxima filled in)."""
    from .._backend import get_xp, to_numpy
    from ..passes.tasks import block_face_pad
    from ..stages import deconv_pad, deconv_stage, output_psf, preprocess, sparse_stage

    names = list(read)
    factor = 2 if params.up_sample else 1
    mult = {n: factor if n in "yx" else 1 for n in names}
    if stats.scale <= 0:
        shape = tuple((spans[n][1] - spans[n][0]) * mult[n] for n in names)
        return np.zeros(shape, np.float32), stats
    h = preprocess(raw, stats.scale, stats.mean, params)
    # Cut to the grown block (steps 1-3 may have run on whole planes).
    h = h[
        tuple(
            slice((g[0] - r[0]) * mult[n], (g[1] - r[0]) * mult[n])
            for n, g, r in zip(names, grown.values(), read.values())
        )
    ]
    h_max = stats.h_max if stats.h_max is not None else float(h.max())
    out_shape = {n: request.layout.shape[request.layout.axes.index(_axis_name(request, n))] * mult[n] for n in names}
    g_range = {n: (grown[n][0] * mult[n], grown[n][1] * mult[n]) for n in names}
    if params.sparse_iters:
        faces = tuple((g_range[n][0] == 0, g_range[n][1] == out_shape[n]) for n in names)
        g = get_xp(h).maximum(sparse_stage(h, h_max, params, request.plan.coupled, faces), 0)
        g_max = stats.g_max if stats.g_max is not None else float(g.max())
    else:
        g, g_max = h, h_max
    psf = output_psf(params, len(names))
    if psf is not None and psf.ndim == 3:
        pad = block_face_pad([g_range[n] for n in names], [out_shape[n] for n in names], psf.shape)
    else:
        pad = deconv_pad(tuple(out_shape[n] for n in names), psf) if psf is not None else None
    f = deconv_stage(g, g_max, stats.scale, params, psf, pad=pad) if g_max > 0 else get_xp(g).zeros_like(g)
    cut = tuple(slice((spans[n][0] - grown[n][0]) * mult[n], (spans[n][1] - grown[n][0]) * mult[n]) for n in names)
    used = Stats(stats.scale, stats.mean, h_max, g_max)
    return np.ascontiguousarray(to_numpy(f[cut]), dtype=np.float32), used


def _axis_name(request: Any, n: str) -> str:
    lay = request.layout
    return lay.axes[{"k": lay.k, "y": lay.y, "x": lay.x}[n]]


def _toml(v: Any) -> str:
    from ..cli.config import format_config

    return format_config({"v": v}).split(" = ", 1)[1]


def save_config(path: str | os.PathLike[str], options: Mapping[str, Any], *, input: str | None = None) -> str:
    """Write the options that differ from their defaults as a TOML file for ``bigdecon run --config``.

    Examples
    --------
    >>> import os, tempfile
    >>> path = save_config(os.path.join(tempfile.mkdtemp(), "run.toml"), {"fwhm": [3.0], "sparse_iters": 50})
    >>> print(open(path).read().strip())
    # bigdecon run --config run.toml INPUT OUTPUT
    fwhm = [3.0]
    sparse_iters = 50
    """
    lines = [f"# bigdecon run --config {os.path.basename(os.fspath(path))} {input or 'INPUT'} OUTPUT"]
    for name, value in options.items():
        if name not in PARAMETERS:
            raise InputError(f"unknown option {name!r}")
        if value is None or value == PARAMETERS[name].default:
            continue
        if (
            isinstance(value, float)
            and math.isfinite(value)
            and value.is_integer()
            and isinstance(PARAMETERS[name].default, int)
        ):
            value = int(value)
        lines.append(f"{name} = {_toml(value)}")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return os.fspath(path)


def suggest_region(
    src: Any,
    options: Mapping[str, Any],
    region: Mapping[str, tuple[int, int]],
    index: Mapping[str, int] | None = None,
    budget: Any = None,
) -> Any:
    """:func:`bigdecon.suggest_parameters` on one region of ``src`` (its PSF from ``options``, resolved as a run does).

    Examples
    --------
    >>> from bigdecon.data import filaments_timelapse
    >>> raw, _ = filaments_timelapse((8, 96, 96), fwhm=3.0, seed=1)
    >>> s = suggest_region(image_source(raw, "tyx"), {"fwhm": 3}, {"y": (0, 96), "x": (0, 96)}, budget=2)
    >>> sorted(s.as_kwargs())[:2]
    ['background', 'deconv_iters']
    """
    from ..suggest import suggest_parameters

    request = resolve(src, options)
    lay, index = request.layout, dict(index or {})
    channel = _channel_position(request, index)
    params = request.channel_params[channel]
    solver = {n: ax for n, ax in (("k", lay.k), ("y", lay.y), ("x", lay.x)) if ax is not None}
    spans = {n: tuple(int(v) for v in region.get(lay.axes[ax], (0, lay.shape[ax]))) for n, ax in solver.items()}
    raw = _read(request, solver, spans, index, channel)  # type: ignore[arg-type]
    axes = "".join(lay.axes[ax] for ax in solver.values())
    return suggest_parameters(raw, fwhm=params.fwhm, psf=params.psf, axes=axes, budget=budget)


class RunCancelled(BigdeconError):
    """The user cancelled a run: what finished is recorded, ``resume`` continues it."""


class RunState:
    """What a run in a worker thread shares with the widget: progress, the dashboard link, the cancel event."""

    def __init__(self) -> None:
        self.done = 0
        self.total = 0
        self.dashboard: str | None = None
        self.cancel = threading.Event()

    def progress(self, done: int, total: int) -> None:
        """``deconvolve``'s progress callback: a set cancel event stops the run here, between blocks."""
        self.done, self.total = done, total
        if self.cancel.is_set():
            raise RunCancelled(f"cancelled after {done} of {total} tasks; tick resume and run again to continue")


_CLUSTER_KEYS = ("workers", "threads_per_worker", "memory_limit", "scheduler")


def run_job(
    source: str, output: str, options: Mapping[str, Any], run_options: Mapping[str, Any], state: RunState
) -> dict[str, Any]:
    """:func:`bigdecon.deconvolve` from ``source`` to ``output`` on a local cluster or ``scheduler``.

    ``options`` are the method's and the PSF's, ``run_options`` the output's and the cluster's
    (:data:`RUN_KEYS`); progress and cancel go through ``state``.
    """
    import bigdecon

    from ..cluster import close, make_client

    cluster_opts: dict[str, Any] = {k: run_options.get(k) for k in _CLUSTER_KEYS}
    given = {k: v for k, v in {**options, **run_options}.items() if v is not None and k not in _CLUSTER_KEYS}
    given.pop("budget", None)
    client, cluster = make_client(**cluster_opts)
    try:
        state.dashboard = getattr(client, "dashboard_link", None)
        return bigdecon.deconvolve(source, output, client=client, progress=state.progress, **given)
    finally:
        close(client, cluster)
