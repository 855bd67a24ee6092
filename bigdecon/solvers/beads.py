"""A point spread function distilled from a stack of sub-resolution beads.

The idea of Huygens' PSF distiller and of PSFj, written here from scratch: find
the beads, keep the isolated, unsaturated, typical ones, register them to
sub-pixel precision and average them. Pure NumPy/SciPy, float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import fft as sfft
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .._types import ArrayLike

__all__ = ["average_beads"]

# Sigma of the noise from the median absolute deviation of Gaussian noise.
_MAD_SIGMA = 1.4826
# A local maximum fainter than this fraction of a brighter one nearby is its side lobe.
_LOBE_RATIO = 0.1
# Two maxima are one object when the profile between them never dips below this fraction of the fainter.
_SAME_OBJECT_DIP = 0.9
# Voxels above this fraction of a crop's maximum define its centroid.
_CENTROID_LEVEL = 0.25
# Room around a crop for the sub-pixel shift's spline.
_MARGIN = 2
_REASONS = ("saturated", "edge", "crowded", "shape")


def _input_error(message: str):
    from ..errors import InputError

    return InputError(message)


def _per_axis(name: str, value, ndim: int, integer: bool = False) -> tuple[float, ...]:
    values = [value] * ndim if np.ndim(value) == 0 else list(value)
    if len(values) != ndim:
        raise _input_error(f"{name} needs one value or {ndim} (one per axis), got {len(values)}")
    out = []
    for v in values:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise _input_error(f"{name} must be numbers, got {value!r}") from None
        if not (math.isfinite(f) and f > 0) or (integer and (f != int(f) or int(f) % 2 == 0)):
            kind = "odd whole numbers of pixels" if integer else "finite numbers > 0"
            raise _input_error(f"{name} must be {kind}, got {value!r}")
        out.append(f)
    return tuple(out)


def _background(smoothed: np.ndarray) -> tuple[float, float]:
    """Median and robust noise sigma of the smoothed stack (most voxels are background)."""
    sample = smoothed.ravel()[:: max(1, smoothed.size // 2_000_000)]
    median = float(np.median(sample))
    sigma = _MAD_SIGMA * float(np.median(np.abs(sample - median)))
    if sigma == 0:  # quantised, nearly flat background: the spread of what lies above the median
        above = sample[sample > median]
        sigma = float(np.std(above)) if above.size else 1.0
    return median, max(sigma, 1e-12)


def _remove_hot_pixels(a: np.ndarray, base: float, factor: float = 4.0) -> int:
    """Replace, in place, voxels far brighter than all their neighbours by the neighbours' median.

    Hot: 4x higher above the background than every neighbour (a well-sampled bead,
    FWHM >= 1.5 px, never is) and above them by 10 sigma of the voxels' noise.
    """
    _, noise = _background(a)
    footprint = np.ones((3,) * a.ndim, bool)
    footprint[(1,) * a.ndim] = False
    neighbours = ndi.maximum_filter(a, footprint=footprint, mode="mirror")  # mirror: not itself
    hot = (a - neighbours > 10 * noise) & (a - base > factor * np.maximum(neighbours - base, 0))
    if hot.any():
        a[hot] = ndi.median_filter(a, footprint=footprint, mode="mirror")[hot]
    return int(hot.sum())


def _local_maxima(smoothed: np.ndarray, threshold: float) -> np.ndarray:
    """Integer positions of the local maxima above ``threshold``, brightest first (plateaus once)."""
    peaks = (smoothed == ndi.maximum_filter(smoothed, size=3, mode="nearest")) & (smoothed > threshold)
    labels, n = ndi.label(peaks, structure=np.ones((3,) * smoothed.ndim))
    if n == 0:
        return np.zeros((0, smoothed.ndim), np.intp)
    centres = np.rint(ndi.center_of_mass(peaks, labels, range(1, n + 1))).astype(np.intp).reshape(n, -1)
    values = smoothed[tuple(centres.T)]
    return centres[np.argsort(-values, kind="stable")]


def _same_object(smoothed: np.ndarray, a: np.ndarray, b: np.ndarray, base: float) -> bool:
    """Whether the profile from maximum ``a`` to a fainter ``b`` stays near ``b``'s height."""
    n = int(np.ceil(np.abs(b - a).max())) * 2 + 2
    line = np.linspace(a, b, n).T
    profile = ndi.map_coordinates(smoothed, line, order=1)
    return bool(profile.min() - base >= _SAME_OBJECT_DIP * (float(smoothed[tuple(b)]) - base))


def _merge_lobes(smoothed, peaks, reach: np.ndarray, base: float, wide: np.ndarray, clipped: np.ndarray) -> np.ndarray:
    """Drop the maxima that belong to a brighter one: its noise bumps and plateaus (joined to it within
    ``reach``) and its side lobes (fainter than a tenth of it within ``reach``, or within ``wide`` of an
    unsaturated one: a widefield PSF's lobes and cone lie further out than its box; a saturated bead's
    true height is unknown, so it does not swallow the beads around it)."""
    tree = cKDTree(peaks / wide)
    keep = np.ones(len(peaks), bool)
    height = smoothed[tuple(peaks.T)] - base
    for j in range(len(peaks)):  # brightest first: a maximum is compared with brighter kept ones
        for i in tree.query_ball_point(peaks[j] / wide, r=1.0, p=np.inf):
            if i >= j or not keep[i]:
                continue
            near = bool((np.abs(peaks[j] - peaks[i]) < reach).all())
            faint = height[j] < _LOBE_RATIO * height[i] and (near or not clipped[i])
            if faint or (near and _same_object(smoothed, peaks[i], peaks[j], base)):
                keep[j] = False
                break
    return peaks[keep]


def _clipped(a: np.ndarray, peaks: np.ndarray, level: float | None) -> np.ndarray:
    """Whether each maximum has a saturated voxel next to it."""
    if level is None:
        return np.zeros(len(peaks), bool)
    return np.array([a[tuple(slice(max(c - 1, 0), c + 2) for c in p)].max() >= level for p in peaks], bool)


def _half_width(line: np.ndarray, c: int, base: float) -> float:
    """Full width at half height above ``base`` of a 1-D profile around index ``c`` (NaN if open)."""
    half = base + 0.5 * (float(line[c]) - base)
    edges = []
    for step in (-1, 1):
        i = c
        while 0 <= i + step < line.size and line[i + step] >= half:
            i += step
        if not 0 <= i + step < line.size:
            return float("nan")
        inner, outer = float(line[i]), float(line[i + step])
        edges.append(i + step * (inner - half) / (inner - outer))
    return float(edges[1] - edges[0])


def _widths(smoothed: np.ndarray, peaks: np.ndarray, base: float) -> np.ndarray:
    """Half-maximum width of every candidate along every axis, through its peak (pixels)."""
    out = np.full(peaks.shape, np.nan)
    for k, p in enumerate(peaks):
        for axis in range(smoothed.ndim):
            index: list[int | slice] = [int(i) for i in p]
            index[axis] = slice(None)
            out[k, axis] = _half_width(smoothed[tuple(index)], int(p[axis]), base)
    return out


def _crowded(peaks: np.ndarray, separation: np.ndarray) -> np.ndarray:
    """Candidates with another one closer than ``separation`` along every axis."""
    if len(peaks) < 2:
        return np.zeros(len(peaks), bool)
    tree = cKDTree(peaks / separation)
    pairs = tree.query_pairs(r=1.0 - 1e-9, p=np.inf, output_type="ndarray")
    crowded = np.zeros(len(peaks), bool)
    crowded[pairs.ravel()] = True
    return crowded


def _shape_outliers(widths: np.ndarray, candidates: np.ndarray, tolerance: float) -> np.ndarray:
    """Candidates whose width along some axis differs from the typical one by more than ``tolerance``."""
    out = ~np.isfinite(widths).all(axis=1)
    good = candidates & ~out
    if good.sum() >= 2:
        typical = np.median(widths[good], axis=0)
        out |= (np.abs(widths / typical - 1) > tolerance).any(axis=1)
    return out


def _crop(a: np.ndarray, centre: Sequence[int] | np.ndarray, half: Sequence[int]) -> np.ndarray | None:
    """The box of half-size ``half`` (+ the margin) around ``centre``, or None where it leaves ``a``."""
    lo = [int(c) - h - _MARGIN for c, h in zip(centre, half)]
    hi = [int(c) + h + _MARGIN + 1 for c, h in zip(centre, half)]
    if min(lo) < 0 or any(e > s for e, s in zip(hi, a.shape)):
        return None
    return a[tuple(slice(lo_, hi_) for lo_, hi_ in zip(lo, hi))]


def _pedestal(crop: np.ndarray) -> float:
    """The dark level around the bead: the lowest median of the crop's faces (the others may hold its
    rings or out-of-focus light, which would otherwise be taken for dark level and narrow the bead)."""
    return min(float(np.median(np.moveaxis(crop, axis, 0)[side])) for axis in range(crop.ndim) for side in (0, -1))


def _centroid(crop: np.ndarray) -> np.ndarray:
    """Intensity centroid of the bright core (above a quarter of the maximum) connected to the peak."""
    mask, _ = ndi.label(crop > _CENTROID_LEVEL * float(crop.max()))
    peak = np.unravel_index(int(np.argmax(crop)), crop.shape)
    core = mask == mask[peak]
    return np.asarray(ndi.center_of_mass(np.where(core, crop, 0)), dtype=np.float64)


def _extract(a: np.ndarray, peak: np.ndarray, half: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A bead's crop (margin included, pedestal subtracted) around its centroid; that centroid in it and in ``a``."""
    for _ in range(2):  # the second time around the centroid found the first time
        cut = _crop(a, peak, half)
        if cut is None:
            return None
        crop = cut - np.float32(_pedestal(cut))
        origin = np.asarray(peak) - np.asarray(half) - _MARGIN
        centre = origin + _centroid(crop)
        if (np.rint(centre) == peak).all():
            break
        peak = np.rint(centre).astype(np.intp)
    return crop, centre - origin, centre


def _centred(crop: np.ndarray, offset: np.ndarray, half: Sequence[int]) -> np.ndarray:
    """Shift ``crop`` (cubic spline) so that the point ``offset`` lands on the box's middle voxel, then cut the margin."""
    middle = np.asarray(half, dtype=np.float64) + _MARGIN
    moved = ndi.shift(crop, middle - offset, order=3, mode="nearest")
    return moved[(slice(_MARGIN, -_MARGIN),) * crop.ndim].astype(np.float32)


def _correlation_offset(reference: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Sub-pixel displacement of ``box`` against ``reference``: cross-correlation peak, parabola per axis."""
    cc = sfft.irfftn(sfft.rfftn(box) * np.conj(sfft.rfftn(reference)), s=box.shape)
    peak = np.unravel_index(int(np.argmax(cc)), cc.shape)
    shift = np.zeros(box.ndim)
    for axis, n in enumerate(box.shape):
        values = []
        for d in (-1, 0, 1):
            index = list(peak)
            index[axis] = (peak[axis] + d) % n
            values.append(float(cc[tuple(index)]))
        curvature = values[0] - 2 * values[1] + values[2]
        frac = 0.5 * (values[0] - values[2]) / curvature if curvature < 0 else 0.0
        s = peak[axis] + frac
        shift[axis] = s - n if s > n / 2 else s
    return shift


def _register(
    crops: list[tuple[np.ndarray, np.ndarray, np.ndarray]], half: Sequence[int], register: str
) -> list[np.ndarray]:
    """Each bead centred in the box: on its centroid, then (``"correlation"``) refined against their mean."""
    boxes = [_centred(crop, offset, half) for crop, offset, _ in crops]
    if register == "correlation" and len(boxes) > 1:
        reference = np.mean([b / b.sum() for b in boxes], axis=0)
        offsets = [offset + _correlation_offset(reference, b) for (_, offset, _), b in zip(crops, boxes)]
        boxes = [_centred(crop, offset, half) for (crop, _, _), offset in zip(crops, offsets)]
    return boxes


def _saturation_level(raw: np.ndarray, saturation: float | None) -> float | None:
    if saturation is not None:
        return float(saturation)
    return float(np.iinfo(raw.dtype).max) if np.issubdtype(raw.dtype, np.integer) else None


def _checked_stack(stack) -> np.ndarray:
    raw = np.asarray(stack)
    if raw.ndim not in (2, 3) or not (np.issubdtype(raw.dtype, np.integer) or np.issubdtype(raw.dtype, np.floating)):
        raise _input_error(f"a bead stack must be a 2-D or 3-D array of numbers, got {raw.ndim}-D {raw.dtype}")
    if min(raw.shape) < 5:
        raise _input_error(f"a bead stack needs at least 5 pixels along every axis, got {raw.shape}")
    if np.issubdtype(raw.dtype, np.floating) and not np.isfinite(raw).all():
        raise _input_error("the bead stack has NaN or infinite pixels")
    return raw


def _typical_width(a, smoothed, peaks, base, smooth, level) -> np.ndarray:
    """Half-maximum width of the typical bead per axis, from the brightest unsaturated candidates.

    Their side lobes are set aside first (with a generous reach, a quarter of the
    stack), and the widening by the detection smoothing is undone.
    """
    quarter = np.asarray(smoothed.shape) / 4
    bright = peaks[:200]
    clipped = _clipped(a, bright, level)
    bright = _merge_lobes(smoothed, bright, quarter, base, quarter, clipped)
    bright = bright[~_clipped(a, bright, level)]
    measured = np.nanmedian(_widths(smoothed, bright[:25], base), axis=0) if len(bright) else np.nan
    if not np.isfinite(measured).all():
        raise _input_error("the brightest unsaturated beads do not fall to half their maximum inside the stack")
    return np.sqrt(np.maximum(measured**2 - (2.3548 * smooth) ** 2, 1.0))


def _geometry(width: np.ndarray, box, min_separation) -> tuple[tuple[int, ...], np.ndarray]:
    """Half-size of the box and the least distance to another bead, per axis (pixels)."""
    if box is None:
        half = tuple(int(math.ceil(2 * w)) for w in width)
    else:
        half = tuple(int(b) // 2 for b in _per_axis("box", box, width.size, integer=True))
    if min_separation is None:
        return half, np.asarray(half, float) + np.ceil(width)
    return half, np.asarray(_per_axis("min_separation", min_separation, width.size))


def _classify(a, smoothed, peaks, half, separation, level, base, tolerance) -> tuple[list[str | None], np.ndarray]:
    """Why each candidate is rejected (None: used), in the order of ``_REASONS``; and its widths."""
    reasons: list[str | None] = [None] * len(peaks)
    for k, p in enumerate(peaks):
        window = tuple(slice(max(int(c) - h, 0), int(c) + h + 1) for c, h in zip(p, half))
        if level is not None and float(a[window].max()) >= level:
            reasons[k] = "saturated"
        elif _crop(a, p, half) is None:
            reasons[k] = "edge"
    for j in np.flatnonzero(_crowded(peaks, separation)):
        reasons[j] = reasons[j] or "crowded"
    widths = _widths(smoothed, peaks, base)
    candidates = np.array([r is None for r in reasons], bool)
    for j in np.flatnonzero(_shape_outliers(widths, candidates, tolerance) & candidates):
        reasons[j] = "shape"
    return reasons, widths


def _finish(boxes: list[np.ndarray], method: str) -> np.ndarray:
    """Each bead normalised to sum 1, combined voxel by voxel, floor removed, normalised to sum 1."""
    stacked = np.stack([b / np.float32(b.sum()) for b in boxes])
    psf = np.median(stacked, axis=0) if method == "median" else stacked.mean(axis=0)
    psf = np.clip(psf - np.float32(_pedestal(psf)), 0, None).astype(np.float32)
    return psf / np.float32(psf.sum())


def _fwhm_or_nan(psf: np.ndarray) -> list[float]:
    from ..errors import InputError
    from .psf import psf_fwhm

    try:
        return [float(w) for w in psf_fwhm(psf)]
    except InputError:  # the average does not fall to half its maximum inside the box
        return [float("nan")] * psf.ndim


def average_beads(
    stack: ArrayLike,
    voxel_size: float | Sequence[float] | None = None,
    *,
    box: int | Sequence[int] | None = None,
    min_separation: float | Sequence[float] | None = None,
    saturation: float | None = None,
    threshold: float | None = None,
    smooth: float = 1.0,
    register: str = "centroid",
    method: str = "mean",
    shape_tolerance: float = 0.25,
) -> tuple[np.ndarray, dict]:
    """Distil a point spread function from an image of sub-resolution beads.

    Candidates are the local maxima of the stack, lightly smoothed, above a robust
    noise threshold (after isolated hot pixels are replaced); maxima fainter than a
    tenth of a brighter one nearby, or joined to it without a dip, are its side lobes
    or noise. A candidate is rejected when it is saturated, when its box leaves the
    stack, when another bead lies closer than ``min_separation``, or when its
    half-maximum width along some axis differs from the typical bead's by more than
    ``shape_tolerance`` (clusters, debris, hot pixels). Each bead kept is cropped,
    its pedestal (the median of its box's faces) subtracted, centred on its
    intensity centroid to sub-pixel precision (cubic-spline shift), normalised to
    sum 1; the beads are averaged and the result normalised to sum 1.

    Parameters
    ----------
    stack : array_like
        A 2-D ``(y, x)`` or 3-D ``(z, y, x)`` bead image, as the microscope saved it.
    voxel_size : float or sequence of float, optional
        Size of a voxel per axis (µm), only to report the widths in µm too.
    box : int or sequence of int, optional
        Odd size of the returned PSF per axis, in pixels. By default four times
        the typical bead's half-maximum width, plus one.
    min_separation : float or sequence of float, optional
        A bead is rejected when another lies closer than this along every axis
        (pixels). By default half the box plus the bead's width.
    saturation : float, optional
        Level at which the detector saturates: beads with a voxel at or above it
        are rejected. Default: the maximum of an integer dtype; none for floats
        (give 4095 for a 12-bit camera saved as 16-bit).
    threshold : float, optional
        Least height of a candidate in the smoothed stack, in the stack's units.
        Default: its median plus five robust standard deviations.
    smooth : float
        Sigma in pixels of the Gaussian smoothing used to find the beads (only).
    register : {"centroid", "correlation"}
        ``"correlation"`` refines the centroids by cross-correlation with their
        average (parabolic sub-pixel peak).
    method : {"mean", "median"}
        How the registered beads are combined voxel by voxel.
    shape_tolerance : float
        Largest relative deviation of a bead's width from the median bead's.

    Returns
    -------
    psf : ndarray of float32
        The averaged bead, centred on the middle voxel of its box, summing to 1.
    report : dict
        ``found``, ``used``, ``rejected`` (count per reason: saturated, edge,
        crowded, shape), ``positions`` (sub-pixel centroids of the beads used),
        ``rejected_positions`` (per reason), ``fwhm_px`` and ``fwhm_um`` (of the
        result, per axis), ``box``, ``background``, ``noise``, ``threshold``,
        ``saturation``, ``hot_pixels``, ``register``, ``method``.

    Raises
    ------
    bigdecon.InputError
        When the stack is not a 2-D/3-D image or no bead survives the tests.

    Examples
    --------
    Nine Gaussian beads of FWHM (6, 3, 3) px at sub-pixel positions, plus a pedestal:

    >>> import numpy as np
    >>> from bigdecon.solvers.beads import average_beads
    >>> z, y, x = np.mgrid[:40, :90, :90]
    >>> stack = np.full(z.shape, 100.0, np.float32)
    >>> for cy in (20.3, 45.6, 70.1):
    ...     for cx in (19.8, 45.2, 70.4):
    ...         r2 = ((z - 20.2) / 6) ** 2 + ((y - cy) / 3) ** 2 + ((x - cx) / 3) ** 2
    ...         stack += 1000 * np.exp(-4 * np.log(2) * r2)
    >>> psf, report = average_beads(stack, voxel_size=(0.3, 0.1, 0.1))
    >>> report["found"], report["used"], psf.shape, round(float(psf.sum()), 4)
    (9, 9, (27, 15, 15), 1.0)
    >>> [round(w, 1) for w in report["fwhm_px"]], [round(w, 2) for w in report["fwhm_um"]]
    ([6.0, 3.0, 3.0], [1.8, 0.3, 0.3])
    """
    raw = _checked_stack(stack)
    if register not in ("centroid", "correlation") or method not in ("mean", "median"):
        raise _input_error(f"register must be centroid|correlation and method mean|median, got {register}, {method}")
    voxel = _per_axis("voxel_size", voxel_size, raw.ndim) if voxel_size is not None else None
    a = raw.astype(np.float32)
    base, sigma = _background(ndi.gaussian_filter(a, smooth))
    level = base + 5 * sigma if threshold is None else float(threshold)
    hot = _remove_hot_pixels(a, base)
    # Padded with the background: a face voxel's noise is not doubled into a false maximum.
    smoothed = ndi.gaussian_filter(a, smooth, mode="constant", cval=base)
    peaks = _local_maxima(smoothed, level)
    if len(peaks) == 0:
        raise _input_error(f"no bead found: nothing in the stack rises above {level:.4g} (background {base:.4g})")
    sat = _saturation_level(raw, saturation)
    half, separation = _geometry(_typical_width(a, smoothed, peaks, base, smooth, sat), box, min_separation)
    wide = np.maximum(2 * separation, np.asarray(smoothed.shape) / 4)
    peaks = _merge_lobes(smoothed, peaks, separation, base, wide, _clipped(a, peaks, sat))
    reasons, _ = _classify(a, smoothed, peaks, half, separation, sat, base, shape_tolerance)
    crops = [(k, _extract(a, peaks[k], half)) for k, r in enumerate(reasons) if r is None]
    for k, crop in crops:
        reasons[k] = None if crop is not None else "edge"  # its centroid is too near the edge
    used = [(k, crop) for k, crop in crops if crop is not None]
    if not used:
        counts = ", ".join(f"{r} {reasons.count(r)}" for r in _REASONS)
        raise _input_error(f"no usable bead among the {len(peaks)} found (rejected: {counts})")
    psf = _finish(_register([c for _, c in used], half, register), method)
    fwhm = _fwhm_or_nan(psf)
    report = {
        "found": len(peaks),
        "used": len(used),
        "rejected": {r: reasons.count(r) for r in _REASONS},
        "positions": [[float(v) for v in c[2]] for _, c in used],
        "rejected_positions": {
            r: [[int(v) for v in peaks[k]] for k in range(len(peaks)) if reasons[k] == r] for r in _REASONS
        },
        "fwhm_px": fwhm,
        "fwhm_um": [w * v for w, v in zip(fwhm, voxel)] if voxel else None,
        "box": list(psf.shape),
        "background": base,
        "noise": sigma,
        "threshold": level,
        "saturation": sat,
        "hot_pixels": hot,
        "register": register,
        "method": method,
    }
    return psf, report
