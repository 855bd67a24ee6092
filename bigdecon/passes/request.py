"""Resolve a request: per-channel parameters, selections and the plan of a run.

:func:`_prepare` turns the keyword arguments of :func:`bigdecon.deconvolve`
(or :func:`bigdecon.plan`) and an opened source into a :class:`Request`:
everything checked, before anything is read or written.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..params import Params
from ..planner import Layout, Plan, _k_name, make_plan
from ..stages import check_image, output_psf

__all__ = ["Request"]


@dataclass(frozen=True)
class Request:
    """A resolved request: what a run (or a plan) works on.

    ``params`` is the first processed channel's, ``channel_params`` one per
    processed channel (they differ only in their PSF); ``selection`` maps an
    axis position to the chosen channels (a list) or the first time point (an
    int); ``data`` is the selected input as a lazy Dask array.
    """

    layout: Layout
    params: Params
    channel_params: list[Params]
    channel_ids: list[int]
    plan: Plan
    selection: dict[int, Any]
    data: Any
    src: Any


_RUN_KEYS = {"channels", "timepoints", "chunks", "depth", "resolution", "task_memory", "min_tasks"}
_PER_CHANNEL_KEYS = ("fwhm", "resolution", "psf")


def _channel_values(name: str, value: Any, n_channels: int, ids: list[int], has_c: bool) -> list[Any]:
    """One value of a per-channel option for every processed channel.

    ``value`` is one value for all channels, or a dict from the input's channel
    index to that channel's value.
    """
    if not isinstance(value, dict):
        return [value] * len(ids)
    try:
        table = {int(k): v for k, v in value.items()}
    except (TypeError, ValueError):
        raise InputError(f"{name} per channel needs channel numbers as keys, got {sorted(value, key=str)}") from None
    if not has_c and set(table) - {0}:
        raise InputError(f"{name} is given per channel, but the input has no c axis (only channel 0 exists)")
    bad = sorted(k for k in table if not 0 <= k < n_channels)
    if bad:
        raise InputError(f"{name} names channel(s) {bad}, but the input has channels 0-{n_channels - 1}")
    return [table.get(c) for c in ids]


def _prepare(src: Any, kwargs: Mapping[str, Any]) -> Request:
    """Resolve parameters (per channel), selections and the plan for an opened source."""
    kwargs = dict(kwargs)
    run = {k: kwargs.pop(k) for k in list(kwargs) if k in _RUN_KEYS}
    data = src.data
    axes = tuple(src.axes)
    selection: dict[int, Any] = {}
    has_c = "c" in axes
    n_in_channels = data.shape[axes.index("c")] if has_c else 1
    channel_ids = list(range(n_in_channels))
    channels = run.get("channels")
    if channels is not None:
        if not has_c:
            raise InputError("channels given, but the input has no c axis")
        ci = axes.index("c")
        channels = [int(c) for c in ([channels] if np.ndim(channels) == 0 else channels)]
        bad = [c for c in channels if not 0 <= c < data.shape[ci]]
        if bad or not channels:
            raise InputError(f"channels {bad or channels} out of range 0-{data.shape[ci] - 1}")
        if len(set(channels)) != len(channels):
            raise InputError(f"channels {channels} name a channel twice")
        selection[ci] = channels
        channel_ids = channels
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

    # Per-channel PSF sizes: one Params per processed channel, the rest shared.
    if run.get("resolution") is not None and kwargs.get("fwhm") is not None:
        raise InputError("give either fwhm (pixels) or resolution (physical units), not both")
    per = {
        k: _channel_values(
            k, kwargs.pop(k, None) if k != "resolution" else run.get(k), n_in_channels, channel_ids, has_c
        )
        for k in _PER_CHANNEL_KEYS
    }
    channel_params = []
    for i, c in enumerate(channel_ids):
        fwhm = per["fwhm"][i]
        if per["resolution"][i] is not None:
            fwhm = _fwhm_from_resolution(per["resolution"][i], src)
        try:
            channel_params.append(Params.from_kwargs(fwhm=fwhm, psf=per["psf"][i], **kwargs))
        except InputError as e:
            raise InputError(f"channel {c}: {e}" if len(channel_ids) > 1 else str(e)) from None
    params = channel_params[0]
    if len({p.volumetric for p in channel_params}) > 1:
        raise InputError("every channel needs the same kind of PSF: all 2-D (y, x) or all 3-D (z, y, x)")
    if params.volumetric and params.deconvolves and _k_name(layout) != "z":
        raise InputError(
            f"a 3-D PSF (3-value fwhm or 3-D psf) deconvolves along z, but the input's axes are {''.join(axes)}: "
            "give the PSF size in y and x only"
        )
    solver_shape = tuple(layout.shape[i] for i in (layout.k, layout.y, layout.x) if i is not None)
    for p in channel_params:
        check_image(_Shape(solver_shape, data.dtype), p)
    the_plan = make_plan(
        layout,
        params,
        chunks=run.get("chunks"),
        depth=run.get("depth"),
        task_memory=run.get("task_memory") or 512 * 2**20,
        min_tasks=run.get("min_tasks") or 1,
        psf_shapes=_step5_psf_shapes(channel_params, layout),
    )
    return Request(
        layout=layout,
        params=params,
        channel_params=channel_params,
        channel_ids=channel_ids,
        plan=the_plan,
        selection=selection,
        data=data,
        src=src,
    )


def _params_record(channel_params: list[Params], channel_ids: list[int]) -> dict[str, Any]:
    """The parameters as recorded in the output: one dict, per-channel PSFs by channel number."""
    records = [p.to_dict() for p in channel_params]
    out = dict(records[0])
    for key in ("fwhm", "psf_shape", "psf_sha256"):
        values = [r[key] for r in records]
        if any(v != values[0] for v in values):
            out[key] = {str(c): v for c, v in zip(channel_ids, values)}
    return out


@dataclass
class _Shape:
    """Just enough of an array for :func:`check_image`."""

    shape: tuple[int, ...]
    dtype: Any

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _parse_span(span: str | tuple[int, int], n: int) -> tuple[int, int]:
    """``"a:b"`` or ``(a, b)`` -> ``(a, b)`` within ``0:n``; negative ends count from the last."""
    if isinstance(span, str):
        parts = span.split(":")
        if len(parts) != 2:
            raise InputError(f"timepoints must look like a:b, got {span!r}")
        a = int(parts[0]) if parts[0] else 0
        b = int(parts[1]) if parts[1] else n
    else:
        a, b = (int(v) for v in span)
    # Negative ends count from the last time point, as in Python slicing.
    a, b = (a + n if a < 0 else a), (b + n if b < 0 else b)
    if a >= b:
        raise InputError(
            f"timepoints {span if isinstance(span, str) else f'{a}:{b}'} select nothing (empty or reversed range; the input has 0:{n})"
        )
    if not (0 <= a and b <= n):
        raise InputError(f"timepoints {a}:{b} outside 0:{n}")
    return a, b


def _fwhm_from_resolution(resolution: Any, src: Any) -> list[float]:
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
            raise InputError(
                f"resolution needs the pixel size along {name}, which the input's metadata does not give: use fwhm"
            )
        sizes.append(size)
    fwhm = [v / s for v, s in zip(values, sizes)]
    small = [(n, f, s) for n, f, s in zip(names, fwhm, sizes) if f < 0.5]
    if small:
        n, f, s = small[0]
        unit = src.units.get(n, "the metadata's unit")
        raise InputError(
            f"resolution {resolution} gives a FWHM of {f:.3g} px along {n} (pixel size {s:g} {unit}): "
            f"give the resolution in {unit}"
        )
    return fwhm


def _step5_psf_shapes(channel_params: list[Params], layout: Layout) -> list[tuple[int, ...]] | None:
    """Shapes of every channel's 3-D step-5 PSF (the plan's halo covers the largest); None otherwise."""
    if not (channel_params[0].volumetric and channel_params[0].deconvolves and layout.k is not None):
        return None
    return [tuple(np.shape(output_psf(p, 3))) for p in channel_params]
