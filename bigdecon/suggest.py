"""Parameters from the data: measure noise, signal and sampling, then suggest settings.

:func:`suggest_parameters` measures an image (a bounded, deterministic
subsample of it, so it works on arrays far larger than memory) and returns a
:class:`Suggestion`: the settings of :func:`bigdecon.sparse_deconvolve` that a
rule fitted on synthetic phantoms with known truth recommends, each with a
one-line reason, and the measurements it used. :func:`would_differ` says in
one line how a user's parameters differ from it.

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
  0.1). Above ``HAZY_PSF`` the rule treats the data as widefield.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import InputError

__all__ = ["Suggestion", "Estimates", "estimate_noise", "measure", "suggest_parameters", "would_differ"]

MAX_PLANES = 16
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
    """Suggested parameters of :func:`bigdecon.sparse_deconvolve`, each with a one-line reason."""

    sparse_iters: int
    fidelity: float
    sparsity: float
    tcontinuity: float
    background: int
    deconv_type: int
    deconv_iters: int
    reasons: dict = field(default_factory=dict)
    measured: Estimates | None = None

    def as_kwargs(self) -> dict:
        """Keyword arguments for :func:`bigdecon.sparse_deconvolve` / :func:`bigdecon.deconvolve`."""
        return {
            "sparse_iters": self.sparse_iters,
            "fidelity": self.fidelity,
            "sparsity": self.sparsity,
            "tcontinuity": self.tcontinuity,
            "background": self.background,
            "deconv_type": self.deconv_type,
            "deconv_iters": self.deconv_iters,
        }

    def estimates(self) -> dict:
        """The measurements as a flat dict (prefixed ``est_``)."""
        return {f"est_{k}": v for k, v in asdict(self.measured).items()} if self.measured else {}

    def to_dict(self) -> dict:
        """JSON-friendly record: parameters, reasons and measurements."""
        out = self.as_kwargs()
        out["reasons"] = dict(self.reasons)
        out["measured"] = asdict(self.measured) if self.measured else None
        if out["measured"]:
            out["measured"]["crop"] = list(out["measured"]["crop"])
        return out


def _subsample(image: Any) -> np.ndarray:
    """At most MAX_PLANES evenly spaced planes, each cropped to the central MAX_SIDE square, float32."""
    ndim = len(image.shape)
    if ndim not in (2, 3):
        raise InputError(f"image must be 2-D (y, x) or 3-D (t or z, y, x), got shape {tuple(image.shape)}")
    h, w = image.shape[-2:]
    if min(h, w) < 8:
        raise InputError(f"image planes must be at least 8x8 pixels to measure noise, got {(h, w)}")
    y0, x0 = max(0, (h - MAX_SIDE) // 2), max(0, (w - MAX_SIDE) // 2)
    ys, xs = slice(y0, y0 + min(h, MAX_SIDE)), slice(x0, x0 + min(w, MAX_SIDE))
    n = image.shape[0] if ndim == 3 else 1
    index = np.unique(np.linspace(0, n - 1, min(n, MAX_PLANES)).round().astype(int))
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


def measure(image: Any, *, fwhm=None, psf=None, axes: str | None = None) -> Estimates:
    """Measure noise, background, signal and sampling on a bounded subsample of ``image``.

    See the module documentation for what is measured and on which pixels.
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
            from .solvers.psf import gaussian_psf  # noqa: PLC0415  (only for a 3-value fwhm)

            psf = gaussian_psf(values)
    if axes is None:
        axes = "yx" if ndim == 2 else ("zyx" if fz is not None else "tyx")
    if axes not in ("yx", "tyx", "zyx") or len(axes) != ndim:
        raise InputError(f"axes must be 'yx' for a 2-D image or 'tyx' / 'zyx' for 3-D, got {axes!r} for {ndim}-D")
    haze = _out_of_focus(psf, fz) if psf is not None else None
    sub = _subsample(image)
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


# The rule, fitted on the sweep of benchmarks/validation/run_suggest.py --sweep
# (docs/suggest.md): the noise relative to the signal peak decides.
HIGH_SNR = 0.003  # noise_rel below: 3000 photons over 10 of background
MID_SNR = 0.01
LOW_SNR = 0.03
VERY_LOW_SNR = 0.08  # noise_rel above: about 30 photons
# out_of_focus above: a widefield PSF (its out-of-focus light is in every plane). Born-Wolf
# widefield 0.69 on 23 planes; light sheet (1 um sheet) 0.07; Gaussian 0.007.
HAZY_PSF = 0.3


def _rule(est: Estimates) -> tuple[dict, dict]:
    """Parameters and one-line reasons from the measurements."""
    r = est.noise_rel
    at = f"noise/peak {r:.3g}"
    p = dict(sparse_iters=100, fidelity=150.0, sparsity=10.0, tcontinuity=0.5, background=0, deconv_type=1)
    why = {"tcontinuity": "published default (not swept)", "deconv_type": "accelerated Richardson-Lucy"}
    hazy = est.third_axis == "z" and est.out_of_focus is not None and est.out_of_focus > HAZY_PSF
    haze = f"widefield PSF ({est.out_of_focus or 0:.0%} of its light out of focus)"
    if est.third_axis == "z" and (r < HIGH_SNR or (hazy and r < MID_SNR)):
        p.update(sparse_iters=0, deconv_iters=20)
        where = f"{haze}, {at}" if r >= HIGH_SNR else at
        why["sparse_iters"] = f"{where}: at this SNR the priors did not beat Richardson-Lucy alone on phantoms"
        why["fidelity"] = why["sparsity"] = "unused (no sparse step)"
        why["background"] = "RL alone keeps flux; a flat background needs no removal"
        why["deconv_iters"] = "RL alone: 20 iterations scored best of 7 / 20 on the sweep"
        return p, why
    why["sparse_iters"] = f"{at}: the sparse step scored above RL alone on phantoms at this SNR"
    why["deconv_iters"] = "20 iterations after the sparse step scored above 7 on the sweep"
    p["deconv_iters"] = 20
    why["background"] = "flat background: mode 0 scored above mode 1 at this SNR"
    if hazy and r >= LOW_SNR:
        p["background"] = 1
        why["background"] = f"{haze}, {at}: mode 1 removes the out-of-focus floor; it scored best here"
        why["fidelity"] = f"{haze}, {at}: the published 150 scored best (lower fidelity blurred the haze in)"
    elif r < MID_SNR:
        p.update(fidelity=500.0, sparsity=5.0 if r < HIGH_SNR else 10.0)
        why["fidelity"] = f"{at}: little noise, keep more of the data (500 scored best)"
    elif r < LOW_SNR:
        why["fidelity"] = f"{at}: the published 150 scored best"
    elif r < VERY_LOW_SNR:
        p["background"] = 1
        why["background"] = f"{at}: mode 1 (weak background) removes the noisy floor; it scored best here"
        why["fidelity"] = f"{at}: the published 150 scored best"
    elif est.third_axis == "z":
        p.update(fidelity=20.0, sparsity=0.5)
        why["fidelity"] = f"{at}: very noisy volume, lean on the continuity prior (20 beat RL alone in both scores)"
    else:
        p.update(fidelity=50.0, deconv_iters=7)
        why["fidelity"] = f"{at}: very noisy, lean on the priors (50 scored best)"
        why["deconv_iters"] = "very noisy: more than 7 iterations amplified the noise"
    why["sparsity"] = f"{at}: {p['sparsity']:g} scored best with fidelity {p['fidelity']:g}"
    return p, why


def suggest_parameters(image: Any, *, fwhm=None, psf=None, axes: str | None = None) -> Suggestion:
    """Suggest sparse-deconvolution parameters from measurements of the image.

    Measures noise, background, signal peak and sampling on a bounded
    subsample (:func:`measure`) and applies a rule fitted on synthetic
    phantoms with known truth (``docs/suggest.md``): the noise relative to
    the signal peak picks fidelity, sparsity, background mode and the
    number of Richardson-Lucy iterations, or Richardson-Lucy alone
    (``sparse_iters=0``) where the priors did not beat it.

    Parameters
    ----------
    image : array-like, 2-D ``(y, x)`` or 3-D ``(t or z, y, x)``
        NumPy, Dask, Zarr or CuPy; only the subsample is read.
    fwhm : float or sequence of float, optional
        PSF FWHM in pixels, as for :func:`bigdecon.sparse_deconvolve`.
    psf : ndarray, optional
        A measured PSF instead (its FWHM is measured).
    axes : {"yx", "tyx", "zyx"}, optional
        Whether the third axis is time or depth. Default: ``zyx`` when
        ``fwhm`` has 3 values or ``psf`` is 3-D, else ``tyx``.

    Returns
    -------
    Suggestion
        Frozen; ``as_kwargs()`` for :func:`bigdecon.sparse_deconvolve`.

    References
    ----------
    .. [1] W. Zhao et al., "Sparse deconvolution improves the resolution of
           live-cell super-resolution fluorescence microscopy", Nat.
           Biotechnol. 40, 606-617 (2022). doi:10.1038/s41587-021-01092-2
    .. [2] A. Foi et al., "Practical Poissonian-Gaussian noise modeling and
           fitting for single-image raw-data", IEEE Trans. Image Process. 17,
           1737-1754 (2008).

    Examples
    --------
    >>> from bigdecon.data import filaments_timelapse
    >>> raw, _ = filaments_timelapse((4, 64, 64), 3.5, photons=100, seed=1)
    >>> s = suggest_parameters(raw, fwhm=3.5, axes="tyx")
    >>> s.sparse_iters > 0, s.measured.third_axis
    (True, 't')
    """
    est = measure(image, fwhm=fwhm, psf=psf, axes=axes)
    p, why = _rule(est)
    return Suggestion(**p, reasons=why, measured=est)


def _get(params: Any, name: str, default: Any) -> Any:
    if isinstance(params, dict):
        return params.get(name, default)
    return getattr(params, name, default)


def would_differ(suggestion: Suggestion, params: Any) -> str | None:
    """One line saying how ``params`` differ materially from ``suggestion``, or None when close.

    Material: the sparse step on where RL alone is suggested (or off where it
    is suggested), a different background mode (0 vs not 0), fidelity or
    sparsity off by more than a factor of 2, or Richardson-Lucy iterations off
    by more than 40 %.

    Parameters
    ----------
    suggestion : Suggestion
    params : Params, dict or any object with the parameter names as attributes
        Missing names take the published defaults.

    Examples
    --------
    >>> s = Suggestion(0, 150.0, 10.0, 0.5, 0, 1, 20, {"sparse_iters": "noise low"})
    >>> would_differ(s, {"sparse_iters": 0, "background": 0, "deconv_iters": 20}) is None
    True
    >>> print(would_differ(s, {}))
    data suggest: sparse_iters 0 (yours 100: noise low), background 0 (yours 1), deconv_iters 20 (yours 7)
    """
    from .params import DEFAULTS, resolve_deconv_iters  # noqa: PLC0415  (params is light; kept local against cycles)

    got = {k: _get(params, k, getattr(DEFAULTS, k)) for k in suggestion.as_kwargs()}
    # deconv_iters' default depends on deconv_type (None or absent: 7 for RL, 2 for Wiener-Butterworth).
    got["deconv_iters"] = resolve_deconv_iters(_get(params, "deconv_iters", None), got["deconv_type"])
    want = suggestion.as_kwargs()
    diffs = []

    def note(name: str) -> None:
        why = suggestion.reasons.get(name)
        diffs.append(f"{name} {want[name]:g} (yours {got[name]:g}{': ' + why if why else ''})")

    if bool(want["sparse_iters"]) != bool(got["sparse_iters"]):
        note("sparse_iters")
    if want["sparse_iters"] and got["sparse_iters"]:
        for name in ("fidelity", "sparsity"):
            a, b = float(want[name]), float(got[name])
            if (a == 0) != (b == 0) or (a > 0 and b > 0 and max(a / b, b / a) > 2.0):
                note(name)
    if bool(want["background"]) != bool(got["background"]):
        note("background")
    if bool(want["deconv_type"]) != bool(got["deconv_type"]):
        note("deconv_type")
    elif want["deconv_type"]:
        a, b = int(want["deconv_iters"]), int(got["deconv_iters"])
        if abs(a - b) > 0.4 * max(a, b, 1):
            note("deconv_iters")
    return "data suggest: " + ", ".join(diffs) if diffs else None
