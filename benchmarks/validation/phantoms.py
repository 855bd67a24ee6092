"""Synthetic ground truth for the validation, modelled on the simulations of Zhao et al. (2022).

All 2-D scenes use 16 nm pixels and are drawn on a 4x finer grid (4 nm), blurred
there by a Gaussian PSF and integrated over each 16 nm pixel, so the truth and the
image share one sampling and the PSF in the solver (sampled at pixel centres) is
slightly narrower than the one that made the data, as with a real microscope.

* :func:`rings`: rings of 80 nm diameter (8 nm wall) on a jittered grid;
* :func:`line_pairs`: pairs of thin lines at separations of 2-10 pixels (32-160 nm);
* :func:`filaments`: a network of smooth curved filaments (texture for FRC/PSNR);
* :func:`drifting_filaments`: the same as a 2-D+t time-lapse with slow drift;
* :func:`volume`: a light-sheet-like 3-D volume of filaments and beads.

Noise: :func:`add_noise`, Poisson counts at a given peak photon number plus
Gaussian read noise with a standard deviation given as a fraction of that peak,
clipped at 0 (counts after offset subtraction).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

PIXEL_NM = 16.0
OVERSAMPLE = 4
LINE_NM = 8.0
SEPARATIONS_PX = (2, 3, 4, 5, 6, 7, 8, 10)


def fwhm_to_sigma(fwhm: float) -> float:
    return fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _bin(fine: np.ndarray, factor: int = OVERSAMPLE) -> np.ndarray:
    h, w = fine.shape[-2] // factor, fine.shape[-1] // factor
    lead = fine.shape[:-2]
    return fine.reshape(*lead, h, factor, w, factor).mean(axis=(-3, -1))


def _blur_fine(fine: np.ndarray, fwhm_nm: float) -> np.ndarray:
    s = fwhm_to_sigma(fwhm_nm / (PIXEL_NM / OVERSAMPLE))
    return ndimage.gaussian_filter(fine, s, mode="constant", truncate=5.0)


def _finish(fine: np.ndarray, fwhm_nm: float) -> tuple[np.ndarray, np.ndarray]:
    truth = _bin(fine)
    blurred = _bin(_blur_fine(fine, fwhm_nm))
    scale = truth.max()
    return (truth / scale).astype(np.float32), (blurred / scale).astype(np.float32)


def _fine_grid(n: int):
    c = (np.arange(n * OVERSAMPLE) + 0.5) / OVERSAMPLE  # in pixel units
    return c


def rings(fwhm_nm: float, n: int = 128, diameter_nm: float = 80.0, spacing_px: int = 32, seed: int = 1):
    """Rings of ``diameter_nm`` on a grid ``spacing_px`` apart, centres jittered by up to ±1 px.

    Returns ``(truth, blurred, centres)``; truth and blurred share one scale
    (the truth's maximum is 1), centres are in pixels.
    """
    rng = np.random.default_rng(seed)
    c = _fine_grid(n)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    fine = np.zeros(yy.shape, np.float64)
    r_px = 0.5 * diameter_nm / PIXEL_NM
    wall_px = 0.5 * LINE_NM / PIXEL_NM
    centres = []
    for cy in np.arange(spacing_px / 2, n, spacing_px):
        for cx in np.arange(spacing_px / 2, n, spacing_px):
            y0, x0 = cy + rng.uniform(-1, 1), cx + rng.uniform(-1, 1)
            r = np.hypot(yy - y0, xx - x0)
            fine[np.abs(r - r_px) <= wall_px] = 1.0
            centres.append((y0, x0))
    truth, blurred = _finish(fine, fwhm_nm)
    return truth, blurred, centres


def line_pairs(fwhm_nm: float, n: int = 128, length_px: int = 48, separations=SEPARATIONS_PX):
    """Vertical line pairs at ``separations`` (pixels), two rows of four.

    Returns ``(truth, blurred, pairs)``, ``pairs`` a list of dicts with the
    separation, the row span and the two line columns (pixel centres).
    """
    c = _fine_grid(n)
    fine = np.zeros((n * OVERSAMPLE, n * OVERSAMPLE), np.float64)
    half_line = 0.5 * LINE_NM / PIXEL_NM
    pairs = []
    per_row = int(math.ceil(len(separations) / 2))
    slot = n // per_row
    for k, sep in enumerate(separations):
        row, col = divmod(k, per_row)
        yc = n // 4 + row * (n // 2)
        y0, y1 = yc - length_px // 2, yc + length_px // 2
        x_left = col * slot + slot // 2 - sep // 2
        x_right = x_left + sep
        ys = (c >= y0) & (c < y1)
        for xl in (x_left, x_right):
            xs = np.abs(c - (xl + 0.5)) <= half_line + 1e-9
            fine[np.ix_(ys, xs)] = 1.0
        pairs.append({"sep_px": int(sep), "sep_nm": sep * PIXEL_NM, "rows": (y0, y1), "cols": (x_left, x_right)})
    truth, blurred = _finish(fine, fwhm_nm)
    return truth, blurred, pairs


def pair_profile(image: np.ndarray, pair: dict, margin: int = 8, trim: int = 6) -> tuple[np.ndarray, float, float]:
    """Mean profile across a line pair (rows trimmed at both ends), and the
    expected peak positions in the profile's coordinates."""
    y0, y1 = pair["rows"]
    xl, xr = pair["cols"]
    a, b = max(xl - margin, 0), min(xr + margin + 1, image.shape[-1])
    prof = np.asarray(image[y0 + trim : y1 - trim, a:b], dtype=np.float64).mean(axis=0)
    return prof, float(xl - a), float(xr - a)


def _curve_points(rng, n: float, n_pts: int = 400):
    """A smooth random curve crossing a square of side ``n`` (pixel units)."""
    p0 = rng.uniform(0, n, 2)
    angle = rng.uniform(0, 2 * np.pi)
    curv = rng.uniform(-0.02, 0.02)
    wiggle_amp, wiggle_f = rng.uniform(0, 0.03), rng.uniform(0.02, 0.08)
    t = np.linspace(-1.5 * n, 1.5 * n, n_pts * 3)
    theta = angle + curv * t + wiggle_amp * np.sin(wiggle_f * t)
    step = t[1] - t[0]
    pts = np.cumsum(np.stack([np.sin(theta), np.cos(theta)], 1) * step, 0)
    pts -= pts[len(t) // 2]
    return pts + p0


def _draw_curves(curves, n_fine: int, shift=(0.0, 0.0)) -> np.ndarray:
    fine = np.zeros((n_fine, n_fine), np.float64)
    for pts, bright in curves:
        q = (pts + np.asarray(shift)) * OVERSAMPLE
        # Dense sampling, then splat to the nearest fine pixel: an ~4 nm-wide line.
        seg = np.linalg.norm(np.diff(q, axis=0), axis=1)
        m = max(2, int(seg.sum() * 2))
        s = np.concatenate([[0], np.cumsum(seg)])
        u = np.linspace(0, s[-1], m)
        yy = np.interp(u, s, q[:, 0])
        xx = np.interp(u, s, q[:, 1])
        iy, ix = np.floor(yy).astype(int), np.floor(xx).astype(int)
        ok = (iy >= 0) & (iy < n_fine) & (ix >= 0) & (ix < n_fine)
        img = np.zeros_like(fine)
        img[iy[ok], ix[ok]] = bright
        fine = np.maximum(fine, ndimage.maximum_filter(img, size=2))  # 8 nm wide
    return fine


def filaments(fwhm_nm: float, n: int = 128, count: int = 10, seed: int = 2):
    """A network of ``count`` smooth filaments with brightness 0.5-1. Returns ``(truth, blurred)``."""
    rng = np.random.default_rng(seed)
    curves = [(_curve_points(rng, n), rng.uniform(0.5, 1.0)) for _ in range(count)]
    fine = _draw_curves(curves, n * OVERSAMPLE)
    return _finish(fine, fwhm_nm)


def drifting_filaments(
    fwhm_nm: float, frames: int = 16, n: int = 128, count: int = 8, drift_px: float = 0.25, seed: int = 3
):
    """2-D+t: filaments translating by ``drift_px`` per frame (different direction each),
    blurred per frame. Returns ``(truth, blurred)`` of shape ``(t, n, n)``, one common scale."""
    rng = np.random.default_rng(seed)
    curves = [(_curve_points(rng, n), rng.uniform(0.5, 1.0)) for _ in range(count)]
    dirs = rng.uniform(0, 2 * np.pi, count)
    truths, blurs = [], []
    for k in range(frames):
        fine = np.zeros((n * OVERSAMPLE,) * 2)
        for (pts, bright), d in zip(curves, dirs):
            shift = (k * drift_px * np.sin(d), k * drift_px * np.cos(d))
            fine = np.maximum(fine, _draw_curves([(pts, bright)], n * OVERSAMPLE, shift))
        truths.append(_bin(fine))
        blurs.append(_bin(_blur_fine(fine, fwhm_nm)))
    truth, blurred = np.stack(truths), np.stack(blurs)
    s = truth.max()
    return (truth / s).astype(np.float32), (blurred / s).astype(np.float32)


def volume(shape=(32, 128, 128), fwhm_px=(5.0, 3.0, 3.0), n_filaments: int = 8, n_beads: int = 20, seed: int = 4):
    """Light-sheet-like volume (voxel e.g. 200 nm in z, 100 nm in y/x): 3-D filaments and
    point beads, blurred by an anisotropic Gaussian PSF of ``fwhm_px`` (z, y, x).

    Drawn directly on the voxel grid (no oversampling). Returns
    ``(truth, blurred, beads)`` with ``beads`` the integer (z, y, x) positions.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    truth = np.zeros(shape, np.float64)
    for _ in range(n_filaments):
        p = np.array([rng.uniform(4, nz - 4), rng.uniform(0, ny), rng.uniform(0, nx)])
        d = rng.normal(size=3)
        d[0] *= 0.25
        d /= np.linalg.norm(d)
        bright = rng.uniform(0.4, 0.8)
        for t in np.linspace(-ny, ny, 8 * ny):
            q = p + t * d + np.array([2.0 * np.sin(t / 17.0), 3.0 * np.sin(t / 23.0), 0.0])
            iz, iy, ix = np.round(q).astype(int)
            if 0 <= iz < nz and 0 <= iy < ny and 0 <= ix < nx:
                truth[iz, iy, ix] = max(truth[iz, iy, ix], bright)
    beads = []
    margin = (8, 10, 10)
    while len(beads) < n_beads:
        b = tuple(int(rng.integers(m, s - m)) for m, s in zip(margin, shape))
        # Keep beads isolated from each other and from filaments (for clean FWHM).
        lo = [max(0, c - m) for c, m in zip(b, margin)]
        hi = [min(s, c + m + 1) for c, m, s in zip(b, margin, shape)]
        if truth[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].any():
            continue
        truth[b] = 1.0
        beads.append(b)
    sig = [fwhm_to_sigma(f) for f in fwhm_px]
    blurred = ndimage.gaussian_filter(truth, sig, mode="constant", truncate=5.0)
    s = truth.max()
    return (truth / s).astype(np.float32), (blurred / s).astype(np.float32), beads


def add_noise(blurred: np.ndarray, gaussian: float, photons: float = 100.0, seed: int = 0) -> np.ndarray:
    """Poisson noise at ``photons`` for the brightest blurred pixel, plus Gaussian noise of
    standard deviation ``gaussian * photons``; clipped at 0; float32 in photon units."""
    rng = np.random.default_rng(seed)
    lam = np.clip(blurred, 0, None) / float(blurred.max()) * photons
    img = rng.poisson(lam).astype(np.float64) + rng.normal(0.0, gaussian * photons, lam.shape)
    return np.clip(img, 0, None).astype(np.float32)
