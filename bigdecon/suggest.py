"""Parameters measured on the data: candidates scored by a self-supervised held-out loss.

:func:`suggest_parameters` takes an array (with ``fwhm`` or ``psf``) or the
path of an OME-Zarr / TIFF (with the PSF options of ``bigdecon run``), picks a
few representative blocks, runs every candidate setting on a recorrupted copy
of them, and keeps the one whose re-blurred output best predicts a second copy
with uncorrelated noise (:mod:`bigdecon.selection`). It returns a
:class:`Suggestion`: the winning parameters, why they won, and every
candidate with its loss. Every block of the data set is then processed with
these same parameters.

:func:`measure` reports noise, signal and sampling (shown beside the
suggestion; the choice does not depend on them, except the noise model that
weights the loss).

The measurements
----------------
* **Subsample**: at most ``MAX_PLANES`` planes evenly spaced along the first
  axis of a 3-D array (always the same ones), each cropped to its central
  ``MAX_SIDE x MAX_SIDE`` pixels. Nothing else is read.
* **Noise**: the finest Haar diagonal detail of each plane on non-overlapping
  2x2 blocks, ``d = (a00 - a01 - a10 + a11) / 2``, has the variance of the
  pixel noise (for independent noise) and hardly any of a signal blurred over
  2 or more pixels. ``noise_sigma`` is ``1.4826 x`` the median absolute
  deviation of ``d`` over the blocks at or below the median local level: the
  noise at the background level of a sparse image, away from bright edges. A Poisson-Gaussian model ``var = gain * level + offset`` is fitted
  to the variance of ``d`` in bins of the local level.
* **Background**: the 5th percentile of the 4x4-block means.
* **Signal peak**: the maximum of the 3x3-median-filtered planes minus the
  background (a hot pixel does not count); in photons when the gain is known.
* **Sampling**: the PSF FWHM in pixels (given, or measured on the PSF) over
  2.04, the FWHM of a Nyquist-sampled widefield PSF (0.51 lambda / NA over
  lambda / 4 NA): 1 is Nyquist, above 1 oversampled.
* **Out-of-focus light**: for a 3-D PSF (an array, or the Gaussian of three
  FWHM values), the fraction of its energy in planes farther than one axial
  FWHM from focus. A widefield PSF keeps its energy in every plane (about 0.7
  on a 23-plane Born-Wolf PSF); a light sheet or a Gaussian sections (below
  0.1).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import InputError
from .params import Params, parse_budget
from .selection import METHOD_NAMES
from .stages import output_psf

__all__ = ["Suggestion", "Estimates", "estimate_noise", "measure", "suggest_parameters"]

MAX_PLANES = 16
PSF_PREPARATION = ("psf_as_is", "psf_voxel_size", "voxel_size", "psf_energy")  # sparse_deconvolve's, for an array
MEASURE_PLANES = 4  # planes of the measurement shown beside a suggestion (for information: kept cheap)
MAX_SIDE = 512
NYQUIST_FWHM = 2.04


@dataclass(frozen=True)
class Estimates:
    """What :func:`measure` found (intensities in the image's units)."""

    noise_sigma: float
    gain: float | None
    offset: float | None
    background: float
    peak: float
    peak_photons: float | None
    snr: float
    noise_rel: float
    fwhm_px: float
    fwhm_z_px: float | None
    nyquist: float
    out_of_focus: float | None
    third_axis: str
    planes_used: int
    crop: tuple[int, int]


@dataclass(frozen=True)
class Suggestion:
    """The measured choice: the winning parameters, why they won, and every candidate's held-out loss."""

    sparse_iters: int
    fidelity: float
    sparsity: float
    tcontinuity: float
    background: int
    deconv_type: int
    deconv_iters: int
    wb_alpha: float = 0.001
    wb_beta: float = 0.1
    wb_order: int = 20
    winner: str = ""
    why: str = ""
    candidates: tuple = field(default=(), compare=False)
    blocks: tuple = ()
    seconds: float = field(default=0.0, compare=False)
    cpu_seconds: float = field(default=0.0, compare=False)
    measured: Estimates | None = None
    context: Any = field(default=None, repr=False, compare=False)

    def as_kwargs(self) -> dict:
        """Keyword arguments for :func:`bigdecon.sparse_deconvolve` / :func:`bigdecon.deconvolve`."""
        return {name: getattr(self, name) for name in METHOD_NAMES}

    def to_dict(self) -> dict:
        """JSON-friendly record: parameters, winner and why, the candidates with their losses, blocks, cost."""
        out: dict[str, Any] = self.as_kwargs()
        out.update(winner=self.winner, why=self.why, candidates=[dict(c) for c in self.candidates])
        out.update(blocks=list(self.blocks), seconds=round(self.seconds, 3), cpu_seconds=round(self.cpu_seconds, 3))
        out["measured"] = asdict(self.measured) if self.measured else None
        if out["measured"]:
            out["measured"]["crop"] = list(out["measured"]["crop"])
        return out


def _subsample(image: Any, max_planes: int = MAX_PLANES) -> np.ndarray:
    """At most ``max_planes`` evenly spaced planes, each cropped to the central MAX_SIDE square, float32."""
    ndim = len(image.shape)
    if ndim not in (2, 3):
        raise InputError(f"image must be 2-D (y, x) or 3-D (t or z, y, x), got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if min(h, w) < 8:
        raise InputError(f"image planes must be at least 8x8 pixels to measure noise, got {(h, w)}")
    y0, x0 = max(0, (h - MAX_SIDE) // 2), max(0, (w - MAX_SIDE) // 2)
    ys, xs = slice(y0, y0 + min(h, MAX_SIDE)), slice(x0, x0 + min(w, MAX_SIDE))
    n = image.shape[0] if ndim == 3 else 1
    index = np.unique(np.linspace(0, n - 1, min(n, max_planes)).round().astype(int))
    planes = []
    for i in index:
        p = image[int(i), ys, xs] if ndim == 3 else image[ys, xs]
        p = p.get() if hasattr(p, "get") and not isinstance(p, np.ndarray) else p  # CuPy
        p = p.compute() if hasattr(p, "compute") else p  # Dask
        planes.append(np.asarray(p, dtype=np.float32))
    sub = np.stack(planes)
    if not np.isfinite(sub).all():
        raise InputError("image contains NaN or infinite pixels")
    return sub


def _haar(sub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Diagonal Haar detail and local level on non-overlapping 2x2 blocks of each plane."""
    h, w = (sub.shape[-2] // 2) * 2, (sub.shape[-1] // 2) * 2
    a = sub[:, :h, :w].astype(np.float64)
    a00, a01, a10, a11 = a[:, 0::2, 0::2], a[:, 0::2, 1::2], a[:, 1::2, 0::2], a[:, 1::2, 1::2]
    d = (a00 - a01 - a10 + a11) / 2.0
    # The level: the 2x2 mean smoothed over 3x3 blocks, so binning by it is not biased by the noise.
    level = ndimage.uniform_filter((a00 + a01 + a10 + a11) / 4.0, size=(1, 3, 3), mode="nearest")
    return d, level


def _mad_sigma(d: np.ndarray) -> float:
    """Robust standard deviation: 1.4826 x the median absolute deviation.

    Integer data give Haar details on a grid of 0.5, where a plain median jumps
    by whole steps and is 0 once the noise is below one grey level (a dim uint8
    stack). There each value stands for its interval of the grid, and the median
    is interpolated within the interval it falls in (the median of grouped data).
    """
    step = 0.5
    if not np.array_equal(d / step, np.round(d / step)):
        return float(1.4826 * np.median(np.abs(d - np.median(d))))
    k = np.abs(np.round((d - np.round(np.median(d) / step) * step) / step))  # |d - median| in steps
    mid = float(np.quantile(k, 0.5, method="lower"))  # a value of the grid
    below, inside = float(np.mean(k < mid)), float(np.mean(k == mid))
    # Step 0 stands for [0, step/2): |d - median| below half a step; step j >= 1 for (j -+ 1/2) steps.
    lo, width = (0.0, step / 2) if mid == 0 else ((mid - 0.5) * step, step)
    return float(1.4826 * (lo + (0.5 - below) / inside * width))


def estimate_noise(image: Any) -> tuple[float, float | None, float | None]:
    """Noise of an image: ``(sigma, gain, offset)``.

    ``sigma`` is the robust (MAD) standard deviation of the finest Haar
    diagonal detail over the blocks at or below the median local level: the
    noise at the background level of the image. ``gain`` and
    ``offset`` fit ``variance = gain * level + offset`` (Poisson-Gaussian;
    ``gain`` is 1 for data in photons), or are None when the levels span too
    little range to fit.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> sigma, gain, offset = estimate_noise(rng.normal(100.0, 5.0, (64, 64)))
    >>> round(sigma)
    5
    """
    sub = _subsample(image)
    return _noise(*_haar(sub))


def _noise(d: np.ndarray, level: np.ndarray) -> tuple[float, float | None, float | None]:
    d, level = d.ravel(), level.ravel()
    # The blocks at or below the median level: background in a sparse image, and
    # free of the bright blurred edges that leak into d at high photon counts.
    sigma = _mad_sigma(d[level <= np.median(level)])
    # Bins of equal counts over the local level; the MAD variance of each bin.
    edges = np.unique(np.quantile(level, np.linspace(0, 1, 41)))
    which = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, len(edges) - 2)
    m, v, n = [], [], []
    for k in range(len(edges) - 1):
        sel = which == k
        if sel.sum() >= 50:
            m.append(float(np.median(level[sel])))
            v.append(_mad_sigma(d[sel]) ** 2)
            n.append(int(sel.sum()))
    if len(m) < 4 or m[-1] - m[0] < 3 * sigma:
        return sigma, None, None
    m_arr, v_arr = np.array(m), np.array(v)
    # Bright bins hold more structure (blurred edges leak into d): fit a line
    # to the lower 3/4 of the level range where the bins are noise-dominated.
    keep = m_arr <= m_arr[0] + 0.75 * (m_arr[-1] - m_arr[0])
    if keep.sum() < 3:
        return sigma, None, None
    gain, offset = np.polyfit(m_arr[keep], v_arr[keep], 1)
    if not gain > 0:
        return sigma, None, None
    return sigma, float(gain), float(offset)


def _psf_fwhm(psf: np.ndarray) -> tuple[float, float | None]:
    """FWHM in pixels of a PSF along x and (for a 3-D PSF) z: the widths ``bigdecon info`` reports."""
    from .solvers.psf import psf_fwhm

    widths = psf_fwhm(psf)
    return float(widths[-1]), (float(widths[0]) if len(widths) == 3 else None)


def _out_of_focus(psf: Any, fwhm_z: float | None) -> float | None:
    """Fraction of a 3-D PSF's energy in planes farther than one axial FWHM from its focal plane."""
    p = np.asarray(psf, dtype=np.float64)
    if p.ndim != 3 or fwhm_z is None:
        return None
    energy = p.sum(axis=(1, 2))
    focus = int(np.argmax(energy))
    far = np.abs(np.arange(p.shape[0]) - focus) > fwhm_z
    total = float(energy.sum())
    return float(energy[far].sum() / total) if total > 0 else None


def measure(image: Any, *, fwhm=None, psf=None, axes: str | None = None, planes: int = MAX_PLANES) -> Estimates:
    """Measure noise, background, signal and sampling on a bounded subsample of ``image``.

    See the module documentation for what is measured and on which pixels
    (``planes``: at most that many evenly spaced planes).
    """
    ndim = len(image.shape)
    if fwhm is None and psf is None:
        raise InputError("suggest_parameters needs fwhm (PSF size in pixels) or psf")
    if psf is not None:
        fx, fz = _psf_fwhm(psf)
    else:
        values = [float(fwhm)] if np.ndim(fwhm) == 0 else [float(v) for v in np.ravel(fwhm)]
        if not values or not all(math.isfinite(v) and v > 0 for v in values):
            raise InputError(f"fwhm must be numbers of pixels > 0, got {fwhm!r}")
        fx, fz = values[-1], (values[0] if len(values) == 3 else None)
        if fz is not None:
            from .solvers.psf import gaussian_psf

            psf = gaussian_psf(values)
    if axes is None:
        axes = "yx" if ndim == 2 else ("zyx" if fz is not None else "tyx")
    if axes not in ("yx", "tyx", "zyx") or len(axes) != ndim:
        raise InputError(f"axes must be 'yx' for a 2-D image or 'tyx' / 'zyx' for 3-D, got {axes!r} for {ndim}-D")
    haze = _out_of_focus(psf, fz) if psf is not None else None
    sub = _subsample(image, planes)
    d, level = _haar(sub)
    sigma, gain, offset = _noise(d, level)
    blocks = sub[:, : (sub.shape[1] // 4) * 4, : (sub.shape[2] // 4) * 4]
    blocks = blocks.reshape(sub.shape[0], blocks.shape[1] // 4, 4, blocks.shape[2] // 4, 4).mean(axis=(2, 4))
    background = float(np.percentile(blocks, 5))
    peak = float(ndimage.median_filter(sub, size=(1, 3, 3)).max()) - background
    peak = max(peak, 0.0)
    photons = peak / gain if gain else None
    noise_peak = math.sqrt(max(gain * (peak + background) + (offset or 0.0), sigma**2)) if gain else sigma
    snr = peak / noise_peak if noise_peak > 0 else float("inf")
    noise_rel = sigma / peak if peak > 0 else float("inf")
    return Estimates(
        noise_sigma=round(sigma, 6),
        gain=None if gain is None else round(gain, 6),
        offset=None if offset is None else round(offset, 6),
        background=round(background, 6),
        peak=round(peak, 6),
        peak_photons=None if photons is None else round(photons, 3),
        snr=round(snr, 4),
        noise_rel=round(noise_rel, 6),
        fwhm_px=round(fx, 4),
        fwhm_z_px=None if fz is None else round(fz, 4),
        nyquist=round(fx / NYQUIST_FWHM, 4),
        out_of_focus=None if haze is None else round(haze, 4),
        third_axis=axes[0] if ndim == 3 else "",
        planes_used=int(sub.shape[0]),
        crop=(int(sub.shape[1]), int(sub.shape[2])),
    )


@dataclass
class _Channel:
    """One channel to tune on: its image (lazy; axes among t, z, y, x), the axes and its base parameters."""

    id: int
    image: Any
    axes: str
    params: Params


def _read(image: Any, index: tuple) -> np.ndarray:
    part = image[index]
    part = part.get() if hasattr(part, "get") and not isinstance(part, np.ndarray) else part  # CuPy
    # A small read: in this thread (no pool to start, no cluster to look for).
    part = part.compute(scheduler="synchronous") if hasattr(part, "compute") else part  # Dask
    return np.asarray(part, dtype=np.float32)


def _index(axes: str, where: dict) -> tuple:
    return tuple(where.get(a, slice(None)) for a in axes)


def _stats(ch: _Channel, blocks: list[np.ndarray]) -> tuple[float, float]:
    """The data set's maximum and mean over it: exact for an in-memory array, else over at most
    ``MAX_PLANES`` evenly spaced planes (and the blocks)."""
    if isinstance(ch.image, np.ndarray):
        scale = float(ch.image.max())
        return scale, float(ch.image.mean(dtype=np.float64)) / scale if scale > 0 else 0.0
    lead = [ch.image.shape[i] for i, a in enumerate(ch.axes) if a not in "yx"]
    n = int(np.prod(lead)) if lead else 1
    planes = (
        [
            _read(ch.image, np.unravel_index(int(i), lead))
            for i in np.unique(np.linspace(0, n - 1, min(n, MAX_PLANES)).round())
        ]
        if lead
        else [_read(ch.image, ())]
    )
    scale = max(max(float(p.max()) for p in planes), max(float(b.max()) for b in blocks))
    mean = float(np.mean([p.mean(dtype=np.float64) for p in planes]))
    return scale, mean / scale if scale > 0 else 0.0


def _blocks(ch: _Channel, n_blocks: int, rng: np.random.Generator):
    """The channel's blocks with their masks and noise, and the data set's statistics."""
    from .selection import Block, pick_blocks, recorrupt

    shape = dict(zip(ch.axes, (int(s) for s in ch.image.shape)))
    psf = output_psf(ch.params, 3 if "z" in ch.axes or "t" in ch.axes else 2)
    psf_shape = tuple(psf.shape) if psf is not None else (1, 1)
    wheres = pick_blocks(shape, psf_shape, lambda w: _read(ch.image, _index(ch.axes, w)), n_blocks)
    out = []
    for where in wheres:
        data = _read(ch.image, _index(ch.axes, where))
        try:
            noise = estimate_noise(data)
        except InputError:
            noise = (float(np.std(data)), None, None)
        out.append(Block(where, data, *recorrupt(data, noise, rng)))
    scale, mean = _stats(ch, [b.data for b in out])
    k = "z" if "z" in shape else ("t" if "t" in shape else None)
    return out, (scale, mean, shape[k] if k else 1)


def _merge(per_channel: list[list[dict]]) -> list[dict]:
    """One record per candidate scored on every channel; per-voxel losses relative to each channel's RL 20."""
    names = [{r["candidate"].name for r in recs} for recs in per_channel]
    common = set.intersection(*names)
    merged = []
    for cand_rec in per_channel[0]:
        name = cand_rec["candidate"].name
        if name not in common:
            continue
        parts = [next(r for r in recs if r["candidate"].name == name) for recs in per_channel]
        per = np.concatenate([p["per"] / recs[0]["per"].mean() for p, recs in zip(parts, per_channel)])
        merged.append(
            dict(
                candidate=cand_rec["candidate"],
                params=cand_rec["params"],
                losses=[x for p in parts for x in p["losses"]],
                per=per,
                seconds=sum(p["seconds"] for p in parts),
            )
        )
    return merged


def _candidates(count: int | None, fixed: dict) -> list:
    """The default candidates with the ``fixed`` parameters imposed (duplicates dropped), RL 20 first."""
    from .selection import Candidate, default_candidates

    out, seen = [], set()
    pool = default_candidates()
    if "deconv_type" in fixed and "deconv_iters" not in fixed:
        # A given step 5 keeps the candidates of its kind (their iteration counts suit it).
        pool = [c for c in pool if c.params.get("deconv_type", 1) == fixed["deconv_type"]] or pool[:1]
    for c in pool:
        params = {**c.params, **fixed}
        key = tuple(sorted(params.items()))
        if key not in seen:
            seen.add(key)
            out.append(Candidate(c.name if params == c.params else f"{c.name} (given: {_given(fixed)})", params))
    return out[: max(count, 1)] if count else out


def _given(fixed: dict) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in fixed.items())


def tune(channels: list[_Channel], *, budget: Any = None, blocks: int = 2, seed: int = 0, fixed=None) -> Suggestion:
    """Score the candidates on ``blocks`` blocks of every channel and pick one setting for all of them."""
    from .selection import decide, score

    if any(ch.params.up_sample for ch in channels) or (fixed or {}).get("up_sample"):
        raise InputError("suggest does not score up-sampled runs: leave up_sample at 0")
    start, cpu = time.perf_counter(), time.process_time()  # process time: every thread of the process
    seconds, count = parse_budget(budget)
    candidates = _candidates(count, dict(fixed or {}))
    rng = np.random.default_rng(seed)
    per_channel, where, first = [], [], None
    for i, ch in enumerate(channels):
        bl, stats = _blocks(ch, blocks, rng)
        left = None if seconds is None else max(seconds - (time.perf_counter() - start), 0.0) / (len(channels) - i)
        per_channel.append(score(candidates, bl, ch.params, stats, left))
        where += [{"channel": ch.id, **{a: _span(v) for a, v in b.where.items()}} for b in bl]
        first = first or (bl[0], ch.params, stats)
    best, why, table = decide(_merge(per_channel))
    won = table[best]["params"]
    ch0 = channels[0]
    psf_kind = {"fwhm": ch0.params.fwhm} if ch0.params.fwhm is not None else {"psf": ch0.params.psf}
    try:
        measured = measure(_first_volume(ch0), **psf_kind, axes=_solver_axes(ch0.axes), planes=MEASURE_PLANES)
    except InputError:
        measured = None  # too small to measure the noise: the choice does not need it
    return Suggestion(
        **{k: won[k] for k in METHOD_NAMES},
        winner=table[best]["name"],
        why=why,
        candidates=tuple(table),
        blocks=tuple(where),
        seconds=time.perf_counter() - start,
        cpu_seconds=time.process_time() - cpu,
        measured=measured,
        context=first,
    )


def _span(v: Any) -> Any:
    return [v.start, v.stop] if isinstance(v, slice) else int(v)


def _solver_axes(axes: str) -> str:
    return axes.replace("t", "") if "z" in axes else axes


def _first_volume(ch: _Channel) -> Any:
    return ch.image[0] if "t" in ch.axes and "z" in ch.axes else ch.image


def _channels_from_path(path: str, options: dict) -> list[_Channel]:
    """The processed channels of an OME-Zarr / TIFF with their PSFs, as ``bigdecon run`` resolves them."""
    from .io import open_image
    from .passes.options import parse_run_options
    from .passes.request import prepare_request

    kwargs = {**options, "deconv_type": options.get("deconv_type") or 1}  # the PSF is needed to score
    kwargs["deconv_iters"] = kwargs.get("deconv_iters") or 1
    request = prepare_request(open_image(path), *parse_run_options(kwargs))
    axes = list(request.layout.axes)
    out = []
    for i, (c, p) in enumerate(zip(request.channel_ids, request.channel_params)):
        index = tuple(i if a == "c" else slice(None) for a in axes)
        kept = "".join(a for a in axes if a != "c")
        fwhm = p.fwhm
        if fwhm is not None and len(fwhm) == 3 and "z" not in kept:
            p = replace(p, fwhm=fwhm[1:])
        out.append(_Channel(c, request.data[index], kept, p))
    return out


def _channel_from_array(image: Any, fwhm: Any, psf: Any, axes: str | None) -> _Channel:
    ndim = len(image.shape)
    if ndim not in (2, 3):
        raise InputError(f"image must be 2-D (y, x) or 3-D (t or z, y, x), got shape {tuple(image.shape)}")
    if fwhm is None and psf is None:
        raise InputError("suggest_parameters needs fwhm (PSF size in pixels) or psf")
    params = Params.from_kwargs(fwhm=fwhm, psf=psf, deconv_type=1, deconv_iters=1)
    if axes is None:
        axes = "yx" if ndim == 2 else ("zyx" if params.volumetric else "tyx")
    if axes not in ("yx", "tyx", "zyx") or len(axes) != ndim:
        raise InputError(f"axes must be 'yx' for a 2-D image or 'tyx' / 'zyx' for 3-D, got {axes!r} for {ndim}-D")
    return _Channel(0, image, axes, params)


def suggest_parameters(
    image: Any,
    *,
    fwhm: Any = None,
    psf: Any = None,
    axes: str | None = None,
    budget: Any = None,
    blocks: int = 2,
    seed: int = 0,
    fixed: dict | None = None,
    **options: Any,
) -> Suggestion:
    """Choose the method parameters by a held-out loss measured on the data.

    Picks ``blocks`` blocks with signal per channel (spread over t, z, y and x),
    makes two copies of each with uncorrelated noise (Recorrupted-to-Recorrupted),
    runs every candidate (plain Richardson-Lucy at 5-80 iterations,
    Richardson-Lucy with the Wiener-Butterworth back projector at 1-3
    iterations, Landweber, the defaults and the sparse step at a few
    fidelity / sparsity / background settings, each followed by RL at 7-40
    iterations) on one copy, and keeps the one whose output, blurred with the
    PSF, predicts the other copy best (:mod:`bigdecon.selection`). Each
    setting's iteration count is the one nearest 20 within one standard error
    of its lowest loss (a run of snapshots stops once its loss is more than
    one standard error past its minimum); plain RL wins unless another setting
    beats it by more than two standard errors of the paired loss difference.
    The blocks of a candidate run at once, one thread each.

    Parameters
    ----------
    image : array-like or str or Path
        A 2-D ``(y, x)`` or 3-D ``(t or z, y, x)`` array (NumPy, Dask, Zarr,
        CuPy), or the path of an OME-Zarr / TIFF (then ``options`` are those of
        :func:`bigdecon.deconvolve`: ``na``, ``wavelength``, ``resolution``,
        ``channels``, ...).
    fwhm, psf : optional
        The PSF, as for :func:`bigdecon.sparse_deconvolve` (or from the optics for a path).
    axes : {"yx", "tyx", "zyx"}, optional
        For an array: whether the third axis is time or depth (default ``zyx``
        for a 3-D PSF). For a path: the file's axes where its metadata has
        none (``--axes`` of ``bigdecon run``, e.g. ``"tyx"``).
    budget : int or str or float, optional
        An int: at most that many candidates (in the order above, RL 20
        first); ``"30s"`` or a float: seconds (candidates that would not fit
        are skipped). Default: every candidate.
    blocks : int
        Blocks per channel (each 20 x 80 x 80, or larger to hold the PSF).
    seed : int
        Of the random masks: the same seed gives the same choice.
    fixed : dict, optional
        Method parameters imposed on every candidate (the ones a user gave).
    **options
        For a path, those of :func:`bigdecon.deconvolve`; for an array, the PSF's
        preparation as :func:`bigdecon.sparse_deconvolve` takes it (``psf_as_is``,
        ``psf_voxel_size``, ``voxel_size``, ``psf_energy``): an array PSF is
        prepared as there, so that the candidates are scored with the PSF the run uses.

    Returns
    -------
    Suggestion
        ``as_kwargs()`` for :func:`bigdecon.sparse_deconvolve`; ``to_dict()``
        records the candidates, their losses, the winner and why.

    References
    ----------
    .. [1] T. Pang, H. Zheng, Y. Quan and H. Ji, "Recorrupted-to-Recorrupted:
           Unsupervised deep learning for image denoising", Proc. CVPR 2021.
    .. [2] J. Batson and L. Royer, "Noise2Self: Blind denoising by
           self-supervision", Proc. ICML 2019, PMLR 97:524-533.

    Examples
    --------
    >>> from bigdecon.data import filaments_timelapse
    >>> raw, _ = filaments_timelapse((4, 64, 64), 3.5, photons=100, seed=1)
    >>> s = suggest_parameters(raw, fwhm=3.5, axes="tyx", budget=3)
    >>> [c["name"] for c in s.candidates]
    ['RL 20', 'RL 10', 'RL 40']
    """
    if isinstance(image, (str, os.PathLike)):
        # For a file, axes names a bare TIFF's axes, as ``--axes`` does for ``bigdecon run``.
        given = {"axes": axes} if axes is not None else {}
        channels = _channels_from_path(str(image), {"fwhm": fwhm, "psf": psf, **given, **options})
    else:
        prep = {k: options.pop(k) for k in PSF_PREPARATION if k in options}
        if options:
            raise InputError(f"{', '.join(sorted(options))}: only for a path (an array takes fwhm or psf)")
        if psf is not None and not prep.get("psf_as_is"):
            from .pipeline import _prepared_psf

            # As sparse_deconvolve prepares it: the candidates are scored with the PSF the run will use.
            psf = _prepared_psf(psf, prep.get("psf_voxel_size"), prep.get("voxel_size"), prep.get("psf_energy"))
        channels = [_channel_from_array(image, fwhm, psf, axes)]
    return tune(channels, budget=budget, blocks=blocks, seed=seed, fixed=fixed)


def save_preview(suggestion: Suggestion, path: str, n: int = 3) -> None:
    """A PNG of the raw block and the ``n`` best candidates side by side (the plane with most signal).

    The candidates run again on the block without its mask, with the same statistics.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .selection import run_candidate

    block, base, (scale, mean, n_planes) = suggestion.context
    best = sorted(suggestion.candidates, key=lambda c: c["loss"])[:n]
    images = [("raw", block.data)]
    for c in best:
        out = run_candidate(block.data, replace(base, **c["params"]), scale, mean, n_planes)
        images.append((f"{c['name']}\nloss {c['relative']:.4f} of RL 20", out))
    plane = int(np.argmax([np.percentile(p, 99.9) for p in block.data])) if block.data.ndim == 3 else None
    fig, axs = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.6))
    for ax, (title, img) in zip(np.atleast_1d(axs), images):
        show = img[plane] if plane is not None else img
        ax.imshow(show, cmap="gray", vmin=float(np.percentile(show, 0.5)), vmax=float(np.percentile(show, 99.8)))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def psf_width_losses(
    image: Any, fwhm: Any, *, axes: str | None = None, scales=(0.7, 0.85, 1.0, 1.2, 1.4), seed: int = 0
) -> list[dict]:
    """The held-out loss of plain Richardson-Lucy with the Gaussian PSF's FWHM scaled: is the width right?

    For each scale, RL at 10, 20 and 40 iterations (one run) on the recorrupted
    blocks of :func:`suggest_parameters`, scored with that width's own PSF; the
    fewest iterations within one standard error of the width's lowest loss.
    Losses are relative to the lowest at scale 1. On phantoms with a known PSF
    the loss rises for a PSF 15-40 % too narrow at every photon level, and for
    one too wide at high signal; at low signal a wider PSF (a stronger
    regulariser) scores as well or better, as it does against the truth
    (docs/suggest.md).

    Examples
    --------
    >>> from bigdecon.data import filaments_timelapse
    >>> raw, _ = filaments_timelapse((4, 64, 64), 3.0, photons=1000, seed=1)
    >>> rows = psf_width_losses(raw, 3.0, axes="tyx", scales=(0.7, 1.0))
    >>> [r["scale"] for r in rows], rows[0]["relative"] > rows[1]["relative"]
    ([0.7, 1.0], True)
    """
    from .selection import Candidate, decide, score

    ch = _channel_from_array(image, fwhm, None, axes)
    blocks, stats = _blocks(ch, 2, np.random.default_rng(seed))
    given = ch.params.fwhm
    assert given is not None  # _channel_from_array was given fwhm
    rows = []
    for scale in scales:
        scaled = tuple(float(f) * scale for f in given)
        base = replace(ch.params, fwhm=scaled)
        rl = [Candidate(f"RL {n}", dict(sparse_iters=0, background=0, deconv_iters=n)) for n in (20, 10, 40)]
        best, _, table = decide(score(rl, blocks, base, stats, None))
        rows.append(dict(scale=scale, fwhm=scaled, winner=table[best]["name"], loss=table[best]["loss"]))
    ref = next((r["loss"] for r in rows if r["scale"] == 1.0), rows[0]["loss"])
    for r in rows:
        r["relative"] = r["loss"] / ref
    return rows
