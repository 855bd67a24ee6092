"""Prepare a measured PSF (a bead stack as the microscope saved it) for deconvolution.

A PSF file straight from a microscope has a camera pedestal under the bead,
noise, hot pixels, is not centred in its box and is sampled at its own voxel
size. Richardson-Lucy takes the PSF as the image of one point of light: the
pedestal would be read as light spread over the whole box, an off-centre PSF
shifts the result, and a PSF at another z step blurs along z by the wrong
amount. :func:`prepare_psf` runs every step, in this order:

1. :func:`estimate_pedestal`: the lowest median of the box's faces (and the
   noise there, from their median absolute deviation), subtracted;
2. :func:`remove_hot_pixels`: single pixels far brighter than all their
   in-plane neighbours, replaced by the neighbours' median;
3. the noise floor (:func:`noise_floor`): what is left below three times the
   faces' noise is set to 0 (else clipped noise adds a positive haze over the
   whole box), and so are the specks of noise that pass it;
4. :func:`centre_psf`: shifted (cubic spline) so that its centroid is the box
   centre, to a fraction of a pixel;
5. :func:`resample_psf`: to the data's voxel size (Gaussian anti-aliasing
   first where it gets coarser);
6. :func:`energy_crop`: to the smallest centred box that holds ``energy`` of
   its light (default :data:`DEFAULT_ENERGY`);
7. normalised to sum 1.

Every function is pure (array in, array out), float32, NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..params import PARAMETERS

__all__ = [
    "DEFAULT_ENERGY",
    "MODEL_FLOOR",
    "centre_psf",
    "energy_crop",
    "count_spots",
    "estimate_pedestal",
    "noise_floor",
    "prepare_psf",
    "sampling_warnings",
    "saturated_count",
    "remove_hot_pixels",
    "resample_psf",
]

#: Fraction of a PSF's light its box keeps (see :func:`energy_crop`). Light cut
#: off is light the forward model of Richardson-Lucy puts nowhere: 1 % of it is
#: below the relative noise of all but the brightest images (a pixel of 10,000
#: photons has 1 % shot noise), while the box of a widefield or bead PSF, whose
#: faint wings hold little light over many voxels, shrinks several-fold.
DEFAULT_ENERGY: float = PARAMETERS["psf_energy"].default  # 0.99, the model's psf_energy

# A pixel brighter than this many times every in-plane neighbour is not light
# from a PSF sampled at 1.6 pixels or more per FWHM (there the peak is at most
# ~3.4 times its brightest neighbour): a hot pixel.
_HOT_RATIO = 3.0
_CENTRED = 1e-3  # a centroid this close to the centre voxel (in voxels) is not moved
_NOISE_FLOOR = 3.0  # the noise floor, in noise standard deviations of the faces
# Voxels above the floor in a (26-connected) group smaller than this are noise: at 3 noise SDs one
# voxel in ~740 passes by chance, nearly always alone (two touching: ~3 % of them, four: ~1e-5).
_SPECK = 4
_MAD_TO_SIGMA = 1.4826  # a normal distribution's sigma over its median absolute deviation


def _faces(psf: np.ndarray) -> list[np.ndarray]:
    """The faces of the box (y and x faces; z faces too in 3-D), each as the 1-D or 2-D array it is."""
    faces = []
    for axis in range(psf.ndim):
        faces += [np.take(psf, 0, axis=axis), np.take(psf, -1, axis=axis)]
    return faces


def _spread(values: np.ndarray, centre: float) -> float:
    """Robust standard deviation about ``centre`` (1.4826 x MAD); where the MAD is 0 (a few photons a
    pixel), the root-mean-square deviation without the largest 1 %."""
    mad = float(np.median(np.abs(values - centre)))
    if mad > 0:
        return _MAD_TO_SIGMA * mad
    dev = np.abs(values - centre)
    return float(np.sqrt(np.mean(dev[dev <= np.percentile(dev, 99)] ** 2)))


def _difference_noise(faces: list[np.ndarray]) -> float:
    """The noise of the faces from second differences along them: blind to smooth light (a model
    PSF's wings), which first differences and the spread about a median count as noise."""
    diffs = np.concatenate([np.diff(f, n=2, axis=-1).ravel() for f in faces if f.shape[-1] > 2])
    return _spread(diffs, 0.0) / math.sqrt(6.0)  # f[i-1] - 2 f[i] + f[i+1] of white noise: sqrt(6) SDs


def noise_floor(psf: np.ndarray, noise: float) -> np.ndarray:
    """A pedestal-free PSF with its noise removed: 0 below ``3 * noise``, and 0 in specks above it.

    A voxel of pure noise passes 3 noise SDs once in ~740: in a 61x128x128
    bead box ~1,300 do, and with a 7,800-count peak they hold ~1.4 % of the
    light, spread over the whole box: more than the 1 % the energy crop may
    drop, so the box could not shrink to the bead's light. They pass nearly
    always alone, so groups of fewer than 4 touching voxels (26-connected) are
    set to 0 too; the PSF's own light above the floor (its core, rings, side
    lobes) comes in groups far larger.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((9, 9, 9), np.float32); a[3:6, 3:6, 3:6] = 50; a[0, 0, 8] = 40; a[8, 8, 0] = 2
    >>> out = noise_floor(a, 10.0)
    >>> float(out.sum()), float(out[0, 0, 8])   # the core kept; a lone voxel over the floor and one under it gone
    (1350.0, 0.0)
    """
    from scipy.ndimage import label

    a = np.array(psf, dtype=np.float32)
    above = a > _NOISE_FLOOR * noise
    a[~above] = 0  # the noise floor (and everything below the pedestal)
    labels, n = label(above, structure=np.ones((3,) * a.ndim, bool))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    a[(sizes < _SPECK)[labels] & above] = 0
    return a


def estimate_pedestal(psf: np.ndarray) -> tuple[float, float]:
    """The constant level under a PSF and the noise on it, from the faces of its box.

    The faces of a bead's box hold the camera pedestal (offset plus dark
    signal and background) and little of the bead's light. The pedestal is
    the lowest of the faces' medians: the same as their common median where
    the pedestal is flat, and less of the PSF's own wings where they reach
    some faces (the defocused light of a widefield PSF at the z faces). It is
    never more than the darkest 1 % of the box plus 3 noise SDs: a pedestal
    is under every voxel, so a PSF whose darkest voxels are 0 (a model PSF,
    or a file whose pedestal was taken off) has none, however much of its
    wings' light the faces hold (PSF Generator's and psfmodels' widefield
    PSFs: 5-30 % of their light).

    The noise is the smaller of the faces' typical robust spread about their
    medians (1.4826 x MAD) and the robust spread of neighbour differences
    along the faces over sqrt(2): the two agree on camera noise, and the
    second does not count smooth wings as noise.

    Parameters
    ----------
    psf : ndarray
        2-D or 3-D.

    Returns
    -------
    pedestal, noise : float
        Where a MAD is 0 (a few photons a pixel), that spread is the
        root-mean-square deviation without the largest 1 %.

    Examples
    --------
    >>> import numpy as np
    >>> psf = np.full((9, 9, 9), 100.0, np.float32)
    >>> psf[4, 4, 4] = 1000
    >>> estimate_pedestal(psf)
    (100.0, 0.0)

    A noise-free PSF with wide wings: the pedestal is its darkest level (0.010),
    not its faces' lowest median (0.019).

    >>> z, y, x = np.mgrid[-7:8, -7:8, -7:8]
    >>> wings = np.exp(-(x**2 + y**2 + z**2) / 4.5) + 0.05 * np.exp(-(x**2 + y**2) / 72 - z**2 / 200)
    >>> round(estimate_pedestal(wings)[0], 3)
    0.013
    """
    faces = _faces(np.asarray(psf, dtype=np.float64))
    medians = [float(np.median(f)) for f in faces]
    value_noise = float(np.median([_spread(f.ravel(), m) for f, m in zip(faces, medians)]))
    noise = min(value_noise, _difference_noise(faces))
    darkest = float(np.percentile(np.asarray(psf, dtype=np.float64), 1.0))
    pedestal = min(min(medians), darkest + 3.0 * noise)
    return float(pedestal), float(noise)


def remove_hot_pixels(psf: np.ndarray, noise: float = 0.0) -> tuple[np.ndarray, int]:
    """Replace hot pixels (single pixels far brighter than every in-plane neighbour) by their neighbours' median.

    A pixel is hot when it is more than 3 times its brightest neighbour in its
    (y, x) plane and more than ``10 * noise`` above their median: a PSF
    sampled at 1.6 pixels per FWHM or finer never is (its peak is at most
    ~3.4 times its neighbour), a defective camera pixel or a cosmic ray is.

    Parameters
    ----------
    psf : ndarray
        2-D or 3-D (z, y, x), pedestal subtracted.
    noise : float
        Standard deviation of the noise (see :func:`estimate_pedestal`).

    Returns
    -------
    cleaned : ndarray of float32
    count : int
        Pixels replaced.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[-8:9, -8:9]
    >>> psf = np.exp(-(y**2 + x**2) / 8.0).astype(np.float32)
    >>> psf[2, 3] = 5.0
    >>> cleaned, count = remove_hot_pixels(psf)
    >>> count, bool(cleaned[2, 3] < 0.01), bool(cleaned[8, 8] == psf[8, 8])
    (1, True, True)
    """
    from scipy.ndimage import grey_dilation, median_filter

    a = np.asarray(psf, dtype=np.float32)
    size = (1,) * (a.ndim - 2) + (3, 3)
    ring = np.ones(size, bool)
    ring[(0,) * (a.ndim - 2) + (1, 1)] = False
    brightest = grey_dilation(a, footprint=ring, mode="mirror")  # "nearest" would count the pixel itself
    median = median_filter(a, footprint=ring, mode="mirror")
    hot = (a > _HOT_RATIO * np.maximum(brightest, 0)) & (a - median > 10.0 * noise) & (a > 0)
    out = a.copy()
    out[hot] = median[hot]
    return out, int(hot.sum())


def _centroid(psf: np.ndarray) -> np.ndarray:
    grids = np.indices(psf.shape, dtype=np.float64)
    total = float(psf.sum(dtype=np.float64))
    return np.array([float((g * psf).sum(dtype=np.float64)) / total for g in grids])


def centre_psf(psf: np.ndarray) -> tuple[np.ndarray, tuple[float, ...]]:
    """Shift a PSF so that its centroid is the centre voxel of its box (sub-pixel, cubic spline).

    The box is first grown by the shift on each side, so no light leaves it;
    values below zero that the spline rings into are clipped.

    Parameters
    ----------
    psf : ndarray
        Non-negative, 2-D or 3-D, pedestal subtracted (a pedestal would pull
        the centroid to the box centre).

    Returns
    -------
    centred : ndarray of float32
        Odd on every axis; its centroid at ``n // 2`` to a fraction of a pixel.
    shift : tuple of float
        The shift applied, in voxels per axis.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[0:15, 0:15]
    >>> psf = np.exp(-((y - 5.3) ** 2 + (x - 9.0) ** 2) / 4.0).astype(np.float32)
    >>> centred, shift = centre_psf(psf)
    >>> centred.shape, [round(s, 2) for s in shift]
    ((19, 19), [1.7, -2.0])
    """
    from scipy.ndimage import shift as spline_shift

    a = np.asarray(psf, dtype=np.float32)
    if not a.sum() > 0:
        raise InputError("the PSF holds no light above its pedestal")
    shift = (np.array(a.shape, float) - 1) / 2.0 - _centroid(a)
    if all(n % 2 for n in a.shape) and np.abs(shift).max() < _CENTRED:
        # Centred already (a model, a PSF prepared before): kept exactly, so a symmetric one stays symmetric.
        return a.copy(), tuple(0.0 for _ in a.shape)
    # Grow each axis by the shift on both sides and to an odd length: the centre is then a voxel.
    pads = []
    for n, s in zip(a.shape, shift):
        grow = int(math.ceil(abs(s)))
        pads.append((grow, grow + (1 - n % 2)))
    grown = np.pad(a, pads)
    target = (np.array(grown.shape, float) - 1) / 2.0
    move = target - _centroid(grown)
    out = spline_shift(grown, move, order=3, mode="constant", cval=0.0, prefilter=True)
    np.maximum(out, 0, out=out)
    return out.astype(np.float32, copy=False), tuple(float(round(s, 4)) for s in shift)


def resample_psf(psf: np.ndarray, factors: Sequence[float]) -> np.ndarray:
    """Resample a centred PSF by ``factors`` (new voxels per old voxel, per axis), keeping its centre voxel.

    ``factor = PSF voxel size / data voxel size``: below 1 the PSF gets
    coarser (a bead stack at a third of the data's z step: 1/3), above 1
    finer. Where it gets
    coarser, a Gaussian of sigma ``(1 / factor - 1) / 2`` old voxels smooths
    it first (anti-aliasing); the new values are cubic-spline samples,
    clipped at 0. The sum is not kept: normalise afterwards.

    Parameters
    ----------
    psf : ndarray
        2-D or 3-D, its centre at ``n // 2`` (odd lengths; see :func:`centre_psf`).
    factors : sequence of float
        One per axis, > 0.

    Returns
    -------
    ndarray of float32
        Odd on every axis, its centre voxel at the same physical place.

    Examples
    --------
    >>> import numpy as np
    >>> z = np.arange(31) - 15.0
    >>> psf = np.exp(-(z**2) / 50.0)[:, None, None] * np.ones((1, 5, 5))
    >>> out = resample_psf(psf, (1 / 3, 1, 1))
    >>> out.shape, round(float(out[5, 2, 2]), 3), round(float(out[8, 2, 2]), 3)
    ((11, 5, 5), 0.981, 0.207)
    """
    from scipy.ndimage import gaussian_filter, map_coordinates

    a = np.asarray(psf, dtype=np.float32)
    f = [float(v) for v in factors]
    if len(f) != a.ndim or any(not (math.isfinite(v) and v > 0) for v in f):
        raise InputError(f"resample factors must be {a.ndim} numbers > 0, got {factors}")
    if all(abs(v - 1) < 1e-6 for v in f):
        return a.copy()
    sigma = [max(0.0, (1.0 / v - 1.0) / 2.0) for v in f]
    if any(s > 0 for s in sigma):
        a = gaussian_filter(a, sigma, mode="constant", cval=0.0).astype(np.float32)
    centre_in = [(n - 1) / 2.0 for n in a.shape]
    half_out = [int(math.floor(((n - 1) / 2.0) * v + 1e-6)) for n, v in zip(a.shape, f)]
    axes = [c + (np.arange(2 * h + 1) - h) / v for c, h, v in zip(centre_in, half_out, f)]
    coords = np.meshgrid(*axes, indexing="ij")
    out = map_coordinates(a, coords, order=3, mode="constant", cval=0.0, prefilter=True)
    return np.maximum(out, 0).astype(np.float32)


def energy_crop(
    psf: np.ndarray, energy: float = DEFAULT_ENERGY, floor: float = 0.0
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Crop a centred PSF to the smallest centred box that holds at least ``energy`` of its light.

    Each axis keeps the narrowest centred span outside which at most
    ``(1 - energy) / ndim`` of the light lies (from the PSF's profile summed
    over the other axes), so the box as a whole keeps at least ``energy``.
    With ``floor`` > 0 the light is what rises above ``floor`` times the peak
    (a computed PSF, which has no noise floor of its own, see
    :data:`MODEL_FLOOR`); the box is cut from the PSF itself.

    Parameters
    ----------
    psf : ndarray
        Non-negative, odd on every axis, centred at ``n // 2``.
    energy : float
        Between 0 and 1 (default :data:`DEFAULT_ENERGY`); 1 keeps the box.
    floor : float
        Fraction of the peak below which a voxel holds no light (default 0).

    Returns
    -------
    cropped : ndarray of float32
        Odd on every axis (at least 3 where the input is), centred.
    shape : tuple of int
        Its shape.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf
    >>> big = np.pad(gaussian_psf((4.0, 4.0)), 20)
    >>> cropped, shape = energy_crop(big, 0.99)
    >>> big.shape, shape, round(float(cropped.sum() / big.sum()), 3) >= 0.99
    ((59, 59), (11, 11), True)
    """
    a = np.asarray(psf, dtype=np.float32)
    if not 0 < energy <= 1:
        raise InputError(f"energy must be between 0 (exclusive) and 1, got {energy}")
    light = np.where(a >= floor * a.max(), a, 0) if floor > 0 else a
    total = float(light.sum(dtype=np.float64))
    if energy >= 1 or not total > 0:
        return a, tuple(a.shape)
    allowed = (1.0 - energy) / a.ndim * total
    box = []
    for axis, n in enumerate(a.shape):
        profile = light.sum(axis=tuple(i for i in range(a.ndim) if i != axis), dtype=np.float64)
        c = n // 2
        # outside[h]: the light beyond c - h .. c + h along this axis.
        inside = np.array([profile[max(0, c - h) : c + h + 1].sum() for h in range(c + 1)])
        h = int(np.flatnonzero(total - inside <= allowed)[0]) if (total - inside <= allowed).any() else c
        h = max(h, min(1, c))
        box.append(slice(c - h, c + h + 1))
    out = np.ascontiguousarray(a[tuple(box)])
    return out, tuple(out.shape)


#: The light of a computed (optics model) PSF: what rises above this fraction of its peak, the
#: threshold that sets its box (:func:`~bigdecon.solvers.psf.psf_size_for`). A widefield PSF holds
#: the same light in every plane, spread ever thinner, so without a floor no box holds 99 % of it.
MODEL_FLOOR = 1e-3

_FINER_LIMIT = 5.0  # a PSF sampled this many times finer than the data along an axis: a notice
_COARSER_LIMIT = 2.0  # ... or this many times coarser (the data holds detail the PSF cannot describe)
_PEDESTAL_WARNING = 0.10  # a pedestal above this fraction of the file's sum: a notice


def _voxel_sizes(value: Sequence[float] | None, ndim: int, what: str) -> list[float] | None:
    if value is None:
        return None
    sizes = [float(v) for v in value]
    if len(sizes) == 3 and ndim == 2:
        sizes = sizes[1:]  # a 2-D PSF on a z stack: its plane's sizes
    if len(sizes) != ndim or any(not (math.isfinite(v) and v > 0) for v in sizes):
        raise InputError(f"{what} must be {ndim} sizes > 0 for a {ndim}-D PSF, got {list(value)}")
    return sizes


def saturated_count(psf: np.ndarray) -> int:
    """Pixels of an integer PSF at its dtype's maximum or at a camera ceiling (4095, 16383) it reaches twice or more.

    Examples
    --------
    >>> import numpy as np
    >>> saturated_count(np.array([[0, 4095], [4095, 7]], np.uint16)), saturated_count(np.ones((2, 2)))
    (2, 0)
    """
    a = np.asarray(psf)
    if a.dtype.kind not in "iu" or a.size == 0:
        return 0
    top = int(a.max())
    at_top = int((a == top).sum())
    if top == int(np.iinfo(a.dtype).max) or (top in (255, 1023, 4095, 16383) and at_top > 1):
        return at_top
    return 0


def count_spots(psf: np.ndarray, level: float = 0.2) -> int:
    """Separate bright regions of a cleaned PSF: connected regions above 10 % of the peak whose own peak is above
    ``level`` of it. One for a PSF; more for a crop holding several beads (or a badly aberrated one).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((20, 20)); a[5, 5] = 1; a[15, 12] = 0.5
    >>> count_spots(a), count_spots(a[:10, :10])
    (2, 1)
    """
    from scipy.ndimage import label, maximum

    a = np.asarray(psf, dtype=np.float32)
    peak = float(a.max())
    if not peak > 0:
        return 0
    labels, n = label(a > 0.1 * peak)
    if n <= 1:
        return n
    peaks = np.atleast_1d(maximum(a, labels, index=np.arange(1, n + 1)))
    return int((peaks >= level * peak).sum())


def prepare_psf(
    psf: np.ndarray,
    psf_voxel_size: Sequence[float] | None = None,
    data_voxel_size: Sequence[float] | None = None,
    *,
    energy: float = DEFAULT_ENERGY,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A measured PSF made ready for deconvolution: every step of this module (see its description).

    Parameters
    ----------
    psf : ndarray
        2-D ``(y, x)`` or 3-D ``(z, y, x)``, as the microscope saved it (any
        real dtype).
    psf_voxel_size, data_voxel_size : sequence of float, optional
        Voxel sizes in one unit (micrometres), one per PSF axis; with both the
        PSF is resampled to the data's. Without either it keeps its sampling.
    energy : float
        Fraction of the light the cropped box keeps (default :data:`DEFAULT_ENERGY`).

    Returns
    -------
    prepared : ndarray of float32
        Odd on every axis, centred, at the data's voxel size, summing to 1.
    report : dict
        What was done, JSON-friendly: ``shape_in``, ``pedestal``, ``noise``,
        ``pedestal_fraction`` (pedestal times the voxels over the file's sum),
        ``hot_pixels``, ``shift_px`` (per axis, in the file's voxels),
        ``resample`` (factors per axis), ``voxel_size`` (the prepared PSF's,
        or ``None``), ``energy``, ``shape``, ``saturated``, ``spots`` and
        ``warnings`` (one line each).

    Raises
    ------
    InputError
        Not 2-D or 3-D, not finite, no light above the pedestal, or voxel
        sizes that do not fit.

    Examples
    --------
    >>> import numpy as np
    >>> z, y, x = np.mgrid[0:31, 0:32, 0:32]
    >>> bead = 50 + 1000 * np.exp(-((z - 15) ** 2 / 18 + (y - 12) ** 2 / 2 + (x - 16) ** 2 / 2))
    >>> psf, report = prepare_psf(bead, (0.1, 0.1, 0.1), (0.3, 0.1, 0.1))
    >>> psf.shape, round(float(psf.sum()), 4), report["pedestal"], report["shift_px"]
    ((7, 7, 7), 1.0, 50.0, [0.0, 3.5, -0.5])
    """
    raw = np.asarray(psf)
    if raw.ndim not in (2, 3) or raw.dtype.kind not in "iuf":
        raise InputError(f"a PSF must be a 2-D or 3-D array of real numbers, got {raw.ndim}-D {raw.dtype}")
    a = raw.astype(np.float32)
    if not np.isfinite(a).all():
        raise InputError("the PSF contains NaN or infinite values")
    own = _voxel_sizes(psf_voxel_size, a.ndim, "psf_voxel_size")
    target = _voxel_sizes(data_voxel_size, a.ndim, "voxel_size")
    pedestal, noise = estimate_pedestal(a)
    total = float(a.sum(dtype=np.float64))
    a -= np.float32(pedestal)
    a, hot = remove_hot_pixels(a, noise)
    a = noise_floor(a, noise)
    spots = count_spots(a)
    a, shift = centre_psf(a)
    factors = [o / t for o, t in zip(own, target)] if own and target else [1.0] * a.ndim
    a = resample_psf(a, factors)
    a, shape = energy_crop(a, energy)
    a = (a / a.sum(dtype=np.float64)).astype(np.float32)
    report: dict[str, Any] = {
        "shape_in": [int(n) for n in raw.shape],
        "pedestal": float(f"{pedestal:.6g}"),
        "noise": float(f"{noise:.6g}"),
        "pedestal_fraction": round(pedestal * raw.size / total, 4) if total > 0 else None,
        "hot_pixels": hot,
        "shift_px": [float(s) for s in shift],
        "resample": [round(f, 6) for f in factors],
        "voxel_size": target or own,
        "energy": energy,
        "shape": [int(n) for n in shape],
        "saturated": saturated_count(raw),
        "spots": spots,
    }
    report["warnings"] = _warnings(report, own, target)
    return a, report


def _warnings(report: dict[str, Any], own: list[float] | None, target: list[float] | None) -> list[str]:
    """One line per thing about the PSF file the preparation cannot fix, or that a user should know."""
    out = []
    if report["saturated"]:
        out.append(f"PSF has {report['saturated']} saturated pixels: its peak is clipped, so it is too wide")
    if report["spots"] > 1:
        out.append(f"PSF holds {report['spots']} separate spots, not one: crop a single bead")
    fraction = report["pedestal_fraction"]
    if fraction is not None and fraction > _PEDESTAL_WARNING:
        out.append(
            f"the pedestal ({report['pedestal']:.3g}) is {100 * fraction:.0f} % of the PSF file's sum (subtracted)"
        )
    return out + sampling_warnings(own, target)


def sampling_warnings(own: Sequence[float] | None, target: Sequence[float] | None) -> list[str]:
    """One line per axis along which a PSF is sampled more than 5x finer or 2x coarser than the data.

    Examples
    --------
    >>> sampling_warnings([0.125, 0.022, 0.022], [0.29, 0.26, 0.26])[0]
    'PSF sampled 11.8x finer than the data along y (0.022 vs 0.26): resampled'
    """
    if not own or not target:
        return []
    out = []
    names = ("z", "y", "x")[3 - len(own) :]
    for name, o, t in zip(names, own, target):
        if o * _FINER_LIMIT < t:
            out.append(f"PSF sampled {t / o:.1f}x finer than the data along {name} ({o:g} vs {t:g}): resampled")
        elif o > _COARSER_LIMIT * t:
            out.append(
                f"PSF sampled {o / t:.1f}x coarser than the data along {name} ({o:g} vs {t:g}): it cannot "
                "describe the data's detail"
            )
    return out
