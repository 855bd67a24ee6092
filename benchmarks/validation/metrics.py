"""Image-quality metrics against a known truth, written for the validation of bigdecon.

Every function takes NumPy arrays and returns plain floats (or small dicts), so the
tables in ``docs/validation.md`` can be rebuilt from them alone.

* :func:`match_scale`: the least-squares factor that brings a result into the
  truth's intensity units (deconvolution output is in the input's units);
* :func:`psnr`, :func:`ssim`, :func:`pearson`: fidelity to the truth;
* :func:`rayleigh_dip`, :func:`smallest_resolved`: line pairs, resolved when the
  intensity between the two peaks dips at least 26.5 % below the weaker peak
  (the dip of two Airy patterns at the Rayleigh distance);
* :func:`frc`, :func:`frc_resolution`: Fourier ring correlation of two results
  from independent noise realisations, resolution at the 1/7 threshold;
* :func:`bright_features`: local maxima above a threshold fixed from a
  structure-free input, to count invented features.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

RAYLEIGH_DIP = 0.265
FRC_THRESHOLD = 1.0 / 7.0


def match_scale(result: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``a * result`` with ``a`` minimising ``||a * result - truth||²`` (float64)."""
    r = np.asarray(result, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    denom = float(np.vdot(r, r))
    a = float(np.vdot(r, t)) / denom if denom > 0 else 0.0
    return a * r


def psnr(result: np.ndarray, truth: np.ndarray, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(range² / MSE)``; range defaults to the truth's."""
    t = np.asarray(truth, dtype=np.float64)
    r = np.asarray(result, dtype=np.float64)
    rng = float(t.max() - t.min()) if data_range is None else float(data_range)
    mse = float(np.mean((r - t) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(rng**2 / mse)


def ssim(result: np.ndarray, truth: np.ndarray, *, data_range: float | None = None) -> float:
    """Structural similarity (scikit-image, 7-pixel window, Gaussian-free) against the truth."""
    from skimage.metrics import structural_similarity

    t = np.asarray(truth, dtype=np.float64)
    r = np.asarray(result, dtype=np.float64)
    rng = float(t.max() - t.min()) if data_range is None else float(data_range)
    return float(structural_similarity(t, r, data_range=rng))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation coefficient of two images (scale and offset free)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    x = x - x.mean()
    y = y - y.mean()
    d = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    return float(np.dot(x, y) / d) if d > 0 else 0.0


def quality(result: np.ndarray, truth: np.ndarray) -> dict:
    """PSNR, SSIM and Pearson of ``result`` against ``truth`` (truth scaled to max 1,
    result brought to the truth's units by :func:`match_scale`)."""
    t = np.asarray(truth, dtype=np.float64)
    t = t / t.max()
    r = match_scale(result, t)
    return {"psnr": psnr(r, t, data_range=1.0), "ssim": ssim(r, t, data_range=1.0), "pearson": pearson(result, t)}


# --------------------------------------------------------------------------- line pairs


def pearson_ssim(result: np.ndarray, truth: np.ndarray, axes: str) -> tuple[float, float]:
    """Pearson r and SSIM (after a least-squares intensity factor) against the truth;
    a time-lapse (``axes="tyx"``) scores SSIM frame by frame."""
    t = truth.astype(np.float64) / truth.max()
    r = match_scale(result, t)
    if axes == "tyx":
        s = float(np.mean([ssim(r[i], t[i], data_range=1.0) for i in range(t.shape[0])]))
    else:
        s = ssim(r, t, data_range=1.0)
    return pearson(result, t), s


def rayleigh_dip(profile: np.ndarray, left: float, right: float, tolerance: float = 1.0) -> float:
    """Relative dip between two peaks expected near positions ``left`` < ``right``.

    The peaks are the highest samples within ``tolerance`` pixels of each
    expected position (and on its side of the midpoint); the valley is the lowest
    sample between them. Returns ``1 - valley / min(peak_left, peak_right)``
    (0 when either peak is not higher than the valley, i.e. a single blob).
    """
    p = np.asarray(profile, dtype=np.float64)
    n = p.size
    mid = 0.5 * (left + right)
    idx = np.arange(n)

    def peak(center: float, side: int) -> int | None:
        sel = np.abs(idx - center) <= tolerance + 1e-9
        sel &= (idx < mid) if side < 0 else (idx > mid)
        if not sel.any():
            return None
        cand = idx[sel]
        return int(cand[np.argmax(p[cand])])

    i, j = peak(left, -1), peak(right, +1)
    if i is None or j is None or j - i < 2:
        return 0.0
    valley = float(p[i + 1 : j].min())
    top = min(float(p[i]), float(p[j]))
    if top <= 0 or valley >= top:
        return 0.0
    return 1.0 - valley / top


def resolved(profile: np.ndarray, left: float, right: float, threshold: float = RAYLEIGH_DIP) -> bool:
    """Whether a line pair is resolved by the Rayleigh criterion (dip >= 26.5 %)."""
    return rayleigh_dip(profile, left, right) >= threshold


def smallest_resolved(dips: dict, threshold: float = RAYLEIGH_DIP) -> float:
    """Smallest separation whose pair, and every wider pair, is resolved.

    ``dips`` maps separation -> dip. Returns ``inf`` when even the widest pair
    fails (so a lucky noisy dip at a small separation does not count).
    """
    best = float("inf")
    for sep in sorted(dips, reverse=True):
        if dips[sep] >= threshold:
            best = sep
        else:
            break
    return best


# --------------------------------------------------------------------------- FRC


def _hann2d(shape) -> np.ndarray:
    wy = np.hanning(shape[0])
    wx = np.hanning(shape[1])
    return np.outer(wy, wx)


def frc(a: np.ndarray, b: np.ndarray, *, window: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Fourier ring correlation of two square-ish 2-D images.

    Returns ``(freq, curve)``: ring centre frequencies in cycles per pixel
    (0 to 0.5, one ring per Fourier sample) and the correlation in each ring.
    A Hann window (default) suppresses the edge cross.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError("frc needs two 2-D images of the same shape")
    a = a - a.mean()
    b = b - b.mean()
    if window:
        w = _hann2d(a.shape)
        a, b = a * w, b * w
    fa = np.fft.fftshift(np.fft.fft2(a))
    fb = np.fft.fftshift(np.fft.fft2(b))
    ny, nx = a.shape
    ky = (np.arange(ny) - ny // 2) / ny
    kx = (np.arange(nx) - nx // 2) / nx
    r = np.hypot(*np.meshgrid(ky, kx, indexing="ij"))
    n = min(ny, nx) // 2
    edges = np.arange(n + 1) / (2.0 * n)  # 0 .. 0.5 cycles/px
    ring = np.digitize(r.ravel(), edges) - 1
    keep = (ring >= 0) & (ring < n)
    ring = ring[keep]
    num = np.bincount(ring, (fa * fb.conj()).real.ravel()[keep], minlength=n)
    da = np.bincount(ring, (np.abs(fa) ** 2).ravel()[keep], minlength=n)
    db = np.bincount(ring, (np.abs(fb) ** 2).ravel()[keep], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        curve = num / np.sqrt(da * db)
    curve = np.nan_to_num(curve)
    freq = 0.5 * (edges[:-1] + edges[1:])
    return freq, curve


def frc_resolution(freq: np.ndarray, curve: np.ndarray, threshold: float = FRC_THRESHOLD, smooth: int = 3) -> float:
    """Resolution in pixels (1 / frequency) where the FRC first falls below ``threshold``.

    The curve is smoothed by a ``smooth``-ring running mean; the crossing is
    linearly interpolated. Returns ``2.0`` (Nyquist) when the curve never falls
    below the threshold, ``inf`` when it starts below it.
    """
    c = np.asarray(curve, dtype=np.float64)
    if smooth > 1:
        c = np.convolve(np.pad(c, smooth // 2, mode="edge"), np.ones(smooth) / smooth, mode="valid")
    below = np.nonzero(c[1:] < threshold)[0]  # skip the DC ring
    if below.size == 0:
        return 2.0
    i = int(below[0]) + 1
    if i == 0:
        return float("inf")
    c0, c1 = c[i - 1], c[i]
    f = freq[i - 1] + (c0 - threshold) / (c0 - c1) * (freq[i] - freq[i - 1]) if c0 != c1 else freq[i]
    return float(1.0 / f) if f > 0 else float("inf")


# --------------------------------------------------------------------------- invention


def local_maxima(image: np.ndarray, size: int = 3) -> np.ndarray:
    """Boolean mask of strict-neighbourhood local maxima (``size``-pixel window, edges excluded)."""
    img = np.asarray(image, dtype=np.float64)
    mx = ndimage.maximum_filter(img, size=size, mode="nearest")
    mask = img >= mx
    # Flat plateaus are not features.
    mn = ndimage.minimum_filter(img, size=size, mode="nearest")
    mask &= img > mn
    m = size // 2
    if m:
        edge = np.zeros_like(mask)
        edge[(slice(m, -m),) * img.ndim] = True
        mask &= edge
    return mask


def bright_features(
    result: np.ndarray, reference_input: np.ndarray, k: float = 5.0, size: int = 3, flux_match: bool = True
) -> dict:
    """Count bright local maxima of ``result`` relative to a structure-free input.

    A feature is a local maximum above ``mean + k * std`` of the *input*. With
    ``flux_match`` (default) the result is first brought to the input's mean
    (deconvolution conserves flux; this undoes the pipeline's rescaling);
    without it the result is taken in its own units (bigdecon returns the
    input's units). Returns the count, the rate per 10⁴ pixels, the peak
    contrast ``max / mean`` and the coefficient of variation of the
    (flux-matched) result.
    """
    inp = np.asarray(reference_input, dtype=np.float64)
    out = np.asarray(result, dtype=np.float64)
    mu, sd = float(inp.mean()), float(inp.std())
    m_out = float(out.mean())
    if flux_match and m_out > 0:
        out = out * (mu / m_out)
    mask = local_maxima(out, size=size) & (out > mu + k * sd)
    count = int(mask.sum())
    return {
        "count": count,
        "per_1e4_px": 1e4 * count / out.size,
        "contrast": float(out.max() / mu) if mu > 0 else float("inf"),
        "cv": float(out.std() / mu) if mu > 0 else float("inf"),
    }
