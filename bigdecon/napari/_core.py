"""What the napari widget computes, without napari: a layer as an input, the preview of a region, a config file.

The preview itself (one block of a run, cached stage by stage, first look first) is
:mod:`bigdecon.napari._preview`; its names are re-exported here.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import BigdeconError, InputError
from ..params import PARAMETERS
from ._preview import (
    PREVIEW_KEYS,
    Preview,
    PreviewCache,
    Stats,
    _channel_position,
    _offset,
    _read,
    _solver_axes,
    dataset_stats,
    preview_region,
    preview_steps,
    resolve,
)

__all__ = [
    "PREVIEW_KEYS",
    "RUN_KEYS",
    "Preview",
    "PreviewCache",
    "RunCancelled",
    "RunState",
    "Stats",
    "guess_axes",
    "image_source",
    "preview_region",
    "resolve",
    "run_job",
    "dataset_stats",
    "preview_steps",
    "save_config",
    "suggest_region",
]

# The options of the run itself: its output and its cluster (a local one, or a scheduler's address).
RUN_KEYS: tuple[str, ...] = ("output_dtype", "ngff_version", "resume", "overwrite", "work_dir", "workers")
RUN_KEYS += ("threads_per_worker", "memory_limit", "scheduler", "device", "channels", "timepoints")


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


def _toml(v: Any) -> str:
    from ..cli.config import format_config

    return format_config({"v": v}).split(" = ", 1)[1]


def save_config(path: str | os.PathLike[str], options: Mapping[str, Any], *, input: str | None = None) -> str:
    """Write the options that differ from their defaults as a TOML file for ``bigdecon run --config``.

    Examples
    --------
    >>> import os, pathlib, tempfile
    >>> path = save_config(os.path.join(tempfile.mkdtemp(), "run.toml"), {"fwhm": [3.0], "sparse_iters": 50})
    >>> print(pathlib.Path(path).read_text().strip())
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
    solver = _solver_axes(lay)
    spans = {n: tuple(int(v) for v in region.get(lay.axes[ax], (0, lay.shape[ax]))) for n, ax in solver.items()}
    raw = _read(request, solver, spans, index, channel, _offset(request, PreviewCache()))  # type: ignore[arg-type]
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
