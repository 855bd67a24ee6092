"""Synthetic microscopy samples with known ground truth, for demos, tests and tuning.

Every generator returns ``(raw, truth)`` as float32 arrays of the same shape:

* ``truth`` is the object (thin structures, maximum 1), before the microscope;
* ``raw`` is ``truth`` blurred by a Gaussian PSF of the given FWHM (in pixels),
  scaled to ``photons`` counts at its brightest, on a constant ``background``,
  with Poisson (shot) noise and Gaussian (camera read) noise of standard
  deviation ``noise``, clipped at 0.

Structures are drawn with sub-pixel positions (linear splatting), so nothing
snaps to the pixel grid. All randomness comes from ``numpy.random.default_rng(seed)``:
the same arguments always give the same arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

__all__ = ["filaments_timelapse", "beads_volume", "rings_image", "widefield_volume", "fwhm_to_sigma"]

_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def fwhm_to_sigma(fwhm: float | Sequence[float]) -> np.ndarray:
    """Gaussian standard deviation(s) for full width(s) at half maximum."""
    return np.asarray(fwhm, dtype=np.float64) / _FWHM_PER_SIGMA


def _splat(coords: np.ndarray, weights: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Accumulate point masses at sub-pixel ``coords`` (N, ndim) by linear interpolation.

    Each point spreads its weight over the 2**ndim surrounding pixels; points
    outside the array are dropped. One ``bincount``: fast for millions of points.
    """
    ndim = len(shape)
    base = np.floor(coords).astype(np.int64)
    frac = coords - base
    out = np.zeros(int(np.prod(shape)), dtype=np.float64)
    strides = np.array([int(np.prod(shape[i + 1 :])) for i in range(ndim)], dtype=np.int64)
    for corner in np.ndindex(*(2,) * ndim):
        # Only the spatial axes are interpolated; an integer axis (t) has frac 0.
        offset = np.array(corner, dtype=np.int64)
        idx = base + offset
        w = weights * np.prod(np.where(offset, frac, 1.0 - frac), axis=1)
        inside = np.all((idx >= 0) & (idx < np.array(shape)), axis=1) & (w > 0)
        out += np.bincount(idx[inside] @ strides, weights=w[inside], minlength=out.size)
    return out.reshape(shape)


def _image(
    truth: np.ndarray, sigma: Sequence[float], photons: float, background: float, noise: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise ``truth`` to max 1, blur it, and add shot and read noise."""
    peak = truth.max()
    truth = truth / peak if peak > 0 else truth
    blurred = gaussian_filter(truth, sigma=list(sigma), mode="reflect")
    peak = blurred.max()
    expected = photons * (blurred / peak if peak > 0 else blurred) + background
    raw = rng.poisson(np.clip(expected, 0, None)).astype(np.float64)
    if noise > 0:
        raw += rng.normal(0.0, noise, size=raw.shape)
    return np.clip(raw, 0, None).astype(np.float32), truth.astype(np.float32)


def _check_shape(shape: Sequence[int], ndim: int, name: str) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != ndim or min(shape) < 1:
        raise ValueError(f"{name}: shape must be {ndim} positive sizes, got {shape}")
    return shape


def filaments_timelapse(
    shape: Sequence[int] = (16, 256, 256),
    fwhm: float = 3.0,
    *,
    n_filaments: int | None = None,
    drift: tuple[float, float] = (0.4, 0.25),
    photons: float = 200.0,
    background: float = 20.0,
    noise: float = 3.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A time-lapse ``(t, y, x)`` of curved filaments that drift and bend slowly.

    Parameters
    ----------
    shape
        ``(t, y, x)``.
    fwhm
        FWHM of the Gaussian PSF in pixels (applied in y and x only).
    n_filaments
        Number of filaments (default: one per ~3,000 pixels of a frame, at least 4).
    drift
        Drift of the whole field in pixels per frame ``(dy, dx)``.
    photons
        Peak signal in photons (lower is noisier).
    background
        Constant background in photons.
    noise
        Standard deviation of the Gaussian read noise, in photons.
    seed
        Seed of the random generator.

    Returns
    -------
    raw, truth : ndarray of float32, shape ``shape``
        ``truth`` is 1-2 px wide lines with maximum 1; ``raw`` is in photons.
    """
    t, h, w = _check_shape(shape, 3, "filaments_timelapse")
    rng = np.random.default_rng(seed)
    n = n_filaments if n_filaments is not None else max(4, (h * w) // 3000)
    ds = 0.25  # arc-length step: 4 samples per pixel, no gaps in the lines
    length = 0.9 * max(h, w)
    s = np.arange(0.0, length, ds)  # (S,)
    # Per filament: start point, heading, gentle curvature and a slow wobble.
    y0 = rng.uniform(-0.1 * h, 1.1 * h, n)[None, :, None]
    x0 = rng.uniform(-0.1 * w, 1.1 * w, n)[None, :, None]
    heading = rng.uniform(0, 2 * np.pi, n)[None, :, None]
    curvature = rng.uniform(-1.5, 1.5, n)[None, :, None] / length
    amp = rng.uniform(0.1, 0.35, n)[None, :, None]
    period = rng.uniform(0.3, 0.8, n)[None, :, None] * length
    phase = rng.uniform(0, 2 * np.pi, n)[None, :, None]
    bright = rng.uniform(0.4, 1.0, n)[None, :, None]
    k = np.arange(t, dtype=np.float64)[:, None, None]
    # The wobble's phase moves with time: filaments bend a little from frame to frame.
    theta = heading + curvature * s + amp * np.sin(2 * np.pi * s / period + phase + 0.08 * k)  # (T, F, S)
    ys = y0 + np.cumsum(np.sin(theta), axis=-1) * ds + drift[0] * k
    xs = x0 + np.cumsum(np.cos(theta), axis=-1) * ds + drift[1] * k
    ks = np.broadcast_to(k, ys.shape)
    coords = np.stack([ks.ravel(), ys.ravel(), xs.ravel()], axis=1)
    weights = np.broadcast_to(bright * ds, ys.shape).ravel()
    truth = _splat(coords, weights, (t, h, w))
    sigma = float(fwhm_to_sigma(fwhm))
    return _image(truth, (0.0, sigma, sigma), photons, background, noise, rng)


def beads_volume(
    shape: Sequence[int] = (32, 128, 128),
    fwhm: Sequence[float] = (6.0, 3.0, 3.0),
    *,
    n_beads: int | None = None,
    n_rings: int | None = None,
    ring_radius: tuple[float, float] = (2.5, 6.0),
    photons: float = 300.0,
    background: float = 10.0,
    noise: float = 2.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A volume ``(z, y, x)`` of point-like beads and small rings, blurred anisotropically.

    Parameters
    ----------
    shape
        ``(z, y, x)``.
    fwhm
        FWHM of the 3-D Gaussian PSF in pixels, ``(z, y, x)`` (z is usually
        2-4x coarser).
    n_beads, n_rings
        Number of sub-resolution beads and of rings (circles in a y-x plane,
        like the cross-section of a vesicle); defaults scale with the volume.
    ring_radius
        Range of ring radii in pixels.
    photons, background, noise, seed
        As in :func:`filaments_timelapse`.

    Returns
    -------
    raw, truth : ndarray of float32, shape ``shape``
    """
    d, h, w = _check_shape(shape, 3, "beads_volume")
    if len(tuple(fwhm)) != 3:
        raise ValueError(f"beads_volume: fwhm must be (z, y, x), got {fwhm!r}")
    rng = np.random.default_rng(seed)
    vox = d * h * w
    nb = n_beads if n_beads is not None else max(4, vox // 8000)
    nr = n_rings if n_rings is not None else max(2, vox // 40000)
    margin = np.array([1.0, 2.0, 2.0])
    hi = np.array([d, h, w], dtype=np.float64) - 1 - margin
    beads = rng.uniform(margin, hi, size=(nb, 3))
    bead_w = rng.uniform(0.5, 1.0, nb)
    # Rings: 64 samples per turn and radius, in the y-x plane at a sub-pixel z.
    centres = rng.uniform(
        margin + [0, ring_radius[1], ring_radius[1]], hi - [0, ring_radius[1], ring_radius[1]], size=(nr, 3)
    )
    radii = rng.uniform(*ring_radius, nr)
    n_pts = 64 * int(math.ceil(ring_radius[1]))
    angle = np.linspace(0, 2 * np.pi, n_pts, endpoint=False)
    ring_pts = np.stack(
        [
            np.broadcast_to(centres[:, :1], (nr, n_pts)),
            centres[:, 1:2] + radii[:, None] * np.sin(angle),
            centres[:, 2:3] + radii[:, None] * np.cos(angle),
        ],
        axis=-1,
    ).reshape(-1, 3)
    # A ring's total brightness ~ its circumference, bead-like per pixel of line.
    ring_w = np.repeat(rng.uniform(0.3, 0.6, nr) * 2 * np.pi * radii / n_pts, n_pts)
    truth = _splat(np.concatenate([beads, ring_pts]), np.concatenate([bead_w, ring_w]), (d, h, w))
    return _image(truth, tuple(fwhm_to_sigma(fwhm)), photons, background, noise, rng)


def rings_image(
    shape: Sequence[int] = (256, 256),
    fwhm: float = 3.0,
    *,
    gaps: Sequence[float] = (2.0, 3.0, 4.0, 5.0, 6.0, 8.0),
    photons: float = 200.0,
    background: float = 10.0,
    noise: float = 2.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A 2-D resolution target ``(y, x)``: pairs of concentric rings with shrinking gaps.

    Each pair is two thin circles ``gap`` pixels apart; pairs closer than about
    the FWHM merge in ``raw`` and are what deconvolution should separate.

    Parameters
    ----------
    shape
        ``(y, x)``.
    fwhm
        FWHM of the Gaussian PSF in pixels.
    gaps
        Separation of the two rings of each pair, in pixels; one pair per gap,
        laid out on a grid.
    photons, background, noise, seed
        As in :func:`filaments_timelapse` (the seed moves centres by a sub-pixel
        amount and draws the noise).

    Returns
    -------
    raw, truth : ndarray of float32, shape ``shape``
    """
    h, w = _check_shape(shape, 2, "rings_image")
    rng = np.random.default_rng(seed)
    gaps = [float(g) for g in gaps]
    cols = int(math.ceil(math.sqrt(len(gaps))))
    rows = int(math.ceil(len(gaps) / cols))
    cell_h, cell_w = h / rows, w / cols
    pts, wts = [], []
    for i, gap in enumerate(gaps):
        cy = (i // cols + 0.5) * cell_h + rng.uniform(-0.5, 0.5)
        cx = (i % cols + 0.5) * cell_w + rng.uniform(-0.5, 0.5)
        outer = 0.4 * min(cell_h, cell_w)
        for r in (max(outer - gap, 1.0), outer):
            n = max(16, int(8 * 2 * np.pi * r))
            a = np.linspace(0, 2 * np.pi, n, endpoint=False)
            pts.append(np.stack([cy + r * np.sin(a), cx + r * np.cos(a)], axis=1))
            wts.append(np.full(n, 2 * np.pi * r / n))
    truth = _splat(np.concatenate(pts), np.concatenate(wts), (h, w))
    sigma = float(fwhm_to_sigma(fwhm))
    return _image(truth, (sigma, sigma), photons, background, noise, rng)


def widefield_volume(
    shape: Sequence[int] = (32, 128, 128),
    fwhm: Sequence[float] = (3.14, 2.41, 2.41),
    *,
    psf: np.ndarray | None = None,
    n_beads: int | None = None,
    n_filaments: int | None = None,
    bead_radius: tuple[float, float] = (1.0, 2.0),
    voxel_aspect: float = 2.5,
    photons: float = 300.0,
    background: float = 10.0,
    noise: float = 2.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A widefield-like volume ``(z, y, x)`` of solid beads and curved filaments.

    Unlike :func:`beads_volume` (point masses), the objects have a size: beads
    are solid spheres of 1-2 lateral pixels radius (100-200 nm at 0.1 um
    pixels) and filaments are lines about a pixel wide that wander in z, so a
    good deconvolution can approach the truth and scores against it mean
    something.

    Parameters
    ----------
    shape
        ``(z, y, x)``.
    fwhm
        FWHM of the 3-D Gaussian PSF in pixels ``(z, y, x)``. The default is a
        water objective, NA 1.1, n 1.33, 0.52 um emission, 0.1 um pixels and
        0.25 um planes: lateral ``0.51 lambda / NA``, axial
        ``0.88 lambda / (n - sqrt(n^2 - NA^2))``.
    psf
        A PSF array ``(z, y, x)`` to blur with instead of the Gaussian (e.g. a
        Born-Wolf model); normalised to sum 1 here.
    n_beads, n_filaments
        Number of beads and filaments (defaults scale with the volume).
    bead_radius
        Range of bead radii in lateral pixels.
    voxel_aspect
        z step over the lateral pixel size (a sphere spans fewer planes).
    photons, background, noise, seed
        As in :func:`filaments_timelapse`.

    Returns
    -------
    raw, truth : ndarray of float32, shape ``shape``
    """
    d, h, w = _check_shape(shape, 3, "widefield_volume")
    rng = np.random.default_rng(seed)
    vox = d * h * w
    nb = n_beads if n_beads is not None else max(4, vox // 12000)
    nf = n_filaments if n_filaments is not None else max(3, (h * w) // 3000)
    truth = np.zeros((d, h, w), dtype=np.float64)
    # Beads: solid spheres, filled by testing voxel centres against the radius.
    zz, yy, xx = np.indices((d, h, w), dtype=np.float64)
    for _ in range(nb):
        r = rng.uniform(*bead_radius)
        c = rng.uniform([1.0, r + 1, r + 1], [d - 2.0, h - r - 2, w - r - 2])
        inside = ((zz - c[0]) * voxel_aspect) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= r * r
        truth[inside] += rng.uniform(0.6, 1.0)
    del zz, yy, xx
    # Filaments: smooth curves, 4 samples per pixel, drifting slowly through z.
    ds = 0.25
    length = 0.9 * max(h, w)
    s = np.arange(0.0, length, ds)
    pts, wts = [], []
    for _ in range(nf):
        heading = rng.uniform(0, 2 * np.pi)
        curv = rng.uniform(-1.5, 1.5) / length
        theta = heading + curv * s
        y = rng.uniform(0.1 * h, 0.9 * h) + np.cumsum(np.sin(theta)) * ds
        x = rng.uniform(0.1 * w, 0.9 * w) + np.cumsum(np.cos(theta)) * ds
        z = rng.uniform(0.2 * d, 0.8 * d) + 0.25 * (d / voxel_aspect) * np.sin(
            2 * np.pi * s / length + rng.uniform(0, 6.3)
        )
        pts.append(np.stack([z, y, x], axis=1))
        wts.append(np.full(s.size, rng.uniform(0.3, 0.6) * ds))
    truth += _splat(np.concatenate(pts), np.concatenate(wts), (d, h, w))
    truth = np.clip(truth, 0, None)
    if psf is None:
        return _image(truth, tuple(fwhm_to_sigma(fwhm)), photons, background, noise, rng)
    from scipy.signal import fftconvolve

    kernel = np.asarray(psf, dtype=np.float64)
    kernel = kernel / kernel.sum()
    truth = truth / truth.max()
    blurred = np.clip(
        fftconvolve(np.pad(truth, [(k // 2, k // 2) for k in kernel.shape], mode="symmetric"), kernel, mode="valid"),
        0,
        None,
    )
    expected = photons * blurred / blurred.max() + background
    raw = rng.poisson(expected).astype(np.float64)
    if noise > 0:
        raw += rng.normal(0.0, noise, size=raw.shape)
    return np.clip(raw, 0, None).astype(np.float32), truth.astype(np.float32)
