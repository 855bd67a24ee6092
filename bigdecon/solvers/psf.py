"""Point spread functions: the published Gaussian model and OTF conversion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from .._types import Array, ArrayLike, NDArrayF32

__all__ = ["gaussian_psf", "psf_halfwidth", "psf_to_otf", "fwhm_to_sigma"]

# The published kernel is cut where the Gaussian falls to 2e-4 of its peak.
_CUTOFF = 0.0002


def fwhm_to_sigma(fwhm: float) -> float:
    """Standard deviation of a Gaussian with full width at half maximum ``fwhm``."""
    return float(fwhm) / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def psf_halfwidth(fwhm: float) -> int:
    """Half-width in pixels of the published Gaussian kernel for one axis.

    ``ceil(sigma * sqrt(-2 ln 0.0002)) + 1``, about 4 sigma + 1.
    """
    sigma = fwhm_to_sigma(fwhm)
    return int(math.ceil(sigma * math.sqrt(-2.0 * math.log(_CUTOFF)))) + 1


def gaussian_psf(
    fwhm: float | Sequence[float],
    shape: Sequence[int] | None = None,
    *,
    xp: ModuleType = np,
) -> Array:
    """Gaussian point spread function normalised to sum 1.

    Parameters
    ----------
    fwhm : float or sequence of float
        Full width at half maximum in pixels: one number gives a 2-D ``(y, x)``
        PSF with that width in both axes; a sequence gives one width per axis,
        ``(y, x)`` or ``(z, y, x)``. This is the ``sigma`` argument of the
        published sparse-deconvolution code (resolution / pixel size).
    shape : sequence of int, optional
        Size of the returned kernel. By default each axis is
        ``2 * psf_halfwidth(fwhm) + 1`` pixels, the published grid.
    xp : module, optional
        ``numpy`` (default) or ``cupy``.

    Returns
    -------
    psf : ndarray of float32
        Centred kernel that sums to 1.

    References
    ----------
    .. [1] W. Zhao et al., "Sparse deconvolution improves the resolution of
           live-cell super-resolution fluorescence microscopy", Nat. Biotechnol.
           40, 606-617 (2022). doi:10.1038/s41587-021-01092-2

    Examples
    --------
    >>> from bigdecon import gaussian_psf
    >>> psf = gaussian_psf(3.0)
    >>> psf.shape, round(float(psf.sum()), 6)
    ((15, 15), 1.0)
    >>> gaussian_psf((6.0, 3.0, 3.0)).shape
    (25, 15, 15)
    """
    widths = [float(w) for w in np.ravel(np.asarray(fwhm, dtype=float))]
    widths = widths * 2 if np.ndim(fwhm) == 0 else widths
    if len(widths) not in (2, 3):
        raise ValueError(f"fwhm must be one number or 2 or 3 per-axis values, got {len(widths)}")
    for w in widths:
        if not (math.isfinite(w) and w > 0):
            raise ValueError(f"fwhm must be a finite number > 0 pixels, got {w}")
    if shape is None:
        shape = [2 * psf_halfwidth(w) + 1 for w in widths]
    elif len(shape) != len(widths):
        raise ValueError(f"shape {tuple(shape)} does not match {len(widths)} fwhm values")
    kernel = np.ones((1,) * len(widths), dtype=np.float64)
    for axis, (w, n) in enumerate(zip(widths, shape)):
        # Sampled at integer offsets from the centre, as published.
        offsets = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
        profile = np.exp(-(offsets**2) / (2.0 * fwhm_to_sigma(w) ** 2))
        kernel = kernel * profile.reshape([-1 if a == axis else 1 for a in range(len(widths))])
    kernel /= kernel.sum()
    return xp.asarray(kernel.astype(np.float32))


def psf_to_otf(psf: ArrayLike, shape: Sequence[int], xp: ModuleType = np) -> Array:
    """Real-to-complex transfer function of ``psf`` for arrays of ``shape``.

    The kernel is zero-padded to ``shape`` and rolled so its centre sits at
    index 0 (the psf2otf convention), then transformed with ``rfftn`` over its
    own axes (the last ``psf.ndim`` axes of ``shape``).
    """
    from .._backend import fft_module, fft_workers

    psf = xp.asarray(psf, dtype=xp.float32)
    shape = tuple(int(s) for s in shape)
    if len(shape) != psf.ndim:
        raise ValueError(f"OTF shape {shape} has {len(shape)} axes, the PSF {psf.ndim}")
    if any(p > s for p, s in zip(psf.shape, shape)):
        raise ValueError(f"PSF of shape {psf.shape} is larger than the image {shape}")
    padded = xp.zeros(shape, dtype=xp.float32)
    padded[tuple(slice(0, p) for p in psf.shape)] = psf
    padded = xp.roll(padded, [-(p // 2) for p in psf.shape], axis=tuple(range(psf.ndim)))
    fft = fft_module(xp)
    return fft.rfftn(padded, **fft_workers(xp)).astype(xp.complex64)


# ---------------------------------------------------------------------------
# PSFs from the optics: a scalar Born-Wolf model of a widefield objective, and
# the confocal and light-sheet PSFs built from it.
# ---------------------------------------------------------------------------

__all__ += [
    "widefield_psf",
    "confocal_psf",
    "lightsheet_psf",
    "psf_size_for",
    "psf_fwhm",
    "energy_reach",
    "energy_crop",
]

# Sub-pixels per camera pixel are chosen so that a sub-pixel is at most
# lambda / (8 NA), a quarter of the Nyquist pixel of the OTF; never more than
# this many per axis.
_MAX_OVERSAMPLE = 15
# Default caps of psf_size_for (odd sizes, centred).
_MAX_LATERAL = 129
_MAX_PLANES = 65


def _input_error(message: str):
    from ..errors import InputError

    return InputError(message)


def _positive(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise _input_error(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise _input_error(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _check_optics(na, wavelength, refractive_index) -> tuple[float, float, float]:
    na = _positive("na", na)
    wavelength = _positive("wavelength", wavelength)
    n = _positive("refractive_index", refractive_index)
    if na > n:
        raise _input_error(f"na {na} cannot exceed the immersion refractive index {n}")
    return na, wavelength, n


def _pixel_pair(pixel_size) -> tuple[float, float]:
    """``(y, x)`` pixel size from one number or a pair."""
    if np.ndim(pixel_size) == 0:
        p = _positive("pixel_size", pixel_size)
        return p, p
    sizes = [_positive("pixel_size", v) for v in pixel_size]
    if len(sizes) != 2:
        raise _input_error(f"pixel_size must be one number or a (y, x) pair, got {tuple(pixel_size)}")
    return sizes[0], sizes[1]


def _psf_shape(shape) -> tuple[int, ...]:
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise _input_error(f"PSF shape must be a sequence of 2 or 3 sizes, got {shape!r}") from None
    if len(dims) not in (2, 3):
        raise _input_error(f"PSF shape must be (y, x) or (z, y, x), got {dims}")
    if any(d < 1 or d % 2 == 0 for d in dims):
        raise _input_error(f"PSF sizes must be odd and >= 1 (centred on the middle voxel), got {dims}")
    return dims


def _defocus_profiles(r, z, na: float, wavelength: float, n: float) -> np.ndarray:
    """Scalar Born-Wolf intensity ``I(r, z)`` (unnormalised) for radii ``r`` and defocus ``z``.

    ``|int_0^1 J0(k NA r rho) exp(-i k z (n - sqrt(n^2 - NA^2 rho^2))) rho drho|^2``
    with ``k = 2 pi / wavelength``, by Gauss-Legendre quadrature over the pupil
    radius ``rho``. The defocus phase is the exact (non-paraxial) path difference
    of a ray at ``sin(theta) = NA rho / n``. Returns an array of shape ``(len(z), len(r))``.
    """
    from scipy.special import j0

    r = np.asarray(r, dtype=np.float64)
    z = np.asarray(z, dtype=np.float64)
    k = 2.0 * math.pi / wavelength
    depth = n - math.sqrt(n * n - na * na)
    # Both factors oscillate: J0 through k NA r radians over the pupil, the
    # phase through k |z| depth. Gauss-Legendre with about 3/4 node per radian
    # (plus a margin) converges to rounding error (checked against 4x the nodes).
    swing = k * na * float(np.max(r, initial=0.0)) + k * depth * float(np.max(np.abs(z), initial=0.0))
    nodes = int(min(8000, 32 + math.ceil(0.75 * swing)))
    t, w = np.polynomial.legendre.leggauss(nodes)
    rho = 0.5 * (t + 1.0)
    weight = 0.5 * w * rho
    bessel = j0(k * na * np.outer(r, rho))  # (R, N)
    path = n - np.sqrt(n * n - (na * rho) ** 2)  # (N,)
    pupil = np.exp(-1j * k * np.outer(z, path)) * weight  # (Z, N)
    amplitude = pupil @ bessel.T  # (Z, R)
    return amplitude.real**2 + amplitude.imag**2


def _render_psf(shape, pixel_size, z_step, na, refractive_index, wavelengths, sheet_fwhm=None) -> np.ndarray:
    """Product of the Born-Wolf intensities at ``wavelengths`` on the pixel grid, float64, unnormalised.

    The intensity is integrated over each camera pixel (averaged over odd x odd
    sub-pixels) and sampled at the plane positions along z (the focal plane
    moves, it has no extent), optionally times a Gaussian light sheet along z.
    """
    dims = _psf_shape(shape)
    na, _, n = _check_optics(na, wavelengths[0], refractive_index)
    wavelengths = [_check_optics(na, wl, n)[1] for wl in wavelengths]
    py, px = _pixel_pair(pixel_size)
    if len(dims) == 3:
        if z_step is None:
            raise _input_error("a 3-D (z, y, x) PSF needs z_step (the plane spacing)")
        dz = _positive("z_step", z_step)
        nz, ny, nx = dims
    else:
        dz, nz = 1.0, 1
        ny, nx = dims

    # Sub-pixel sampling: odd so that the middle sub-pixel sits on the pixel centre.
    finest = min(wavelengths) / (8.0 * na)
    over = min(_MAX_OVERSAMPLE, max(1, math.ceil(max(py, px) / finest)))
    over += 1 - over % 2
    # Integer offsets minus a half-integer are exact, so the grid is exactly symmetric.
    yf = (np.arange(ny * over) - (ny * over - 1) / 2.0) * (py / over)
    xf = (np.arange(nx * over) - (nx * over - 1) / 2.0) * (px / over)
    radius = np.hypot(yf[:, None], xf[None, :])

    # The radial profile is computed finely once and interpolated onto the grid.
    dr = min(min(py, px) / over / 2.0, finest / 4.0)
    r = np.arange(0.0, float(radius.max()) + 2.0 * dr, dr)
    planes = np.abs(np.arange(nz) - nz // 2)  # |z| index: +z and -z get the very same values
    depths = np.unique(planes)
    profile = np.ones((len(depths), len(r)))
    for wl in wavelengths:
        profile *= _defocus_profiles(r, depths * dz, na, wl, n)

    out = np.empty((len(depths), ny, nx))
    for i, d in enumerate(depths):
        fine = np.interp(radius, r, profile[i])
        out[i] = fine.reshape(ny, over, nx, over).mean(axis=(1, 3))
        if sheet_fwhm is not None:
            out[i] *= math.exp(-4.0 * math.log(2.0) * (d * dz / sheet_fwhm) ** 2)
    volume = out[np.searchsorted(depths, planes)]
    return volume if len(dims) == 3 else volume[0]


def _finish_psf(volume: np.ndarray, xp: ModuleType):
    total = float(volume.sum())
    if not (math.isfinite(total) and total > 0):
        raise _input_error("the PSF is zero everywhere on this grid (pixels far larger than the PSF?)")
    return xp.asarray((volume / total).astype(np.float32))


def widefield_psf(
    shape: Sequence[int],
    na: float,
    wavelength: float,
    refractive_index: float,
    pixel_size: float | Sequence[float],
    z_step: float | None = None,
    *,
    xp: ModuleType = np,
) -> Array:
    """Widefield PSF of an objective from its numerical aperture (scalar Born-Wolf model).

    The intensity at lateral distance ``r`` and defocus ``z`` from a point source is

    ``I(r, z) = |int_0^1 J0(k NA r rho) exp(-i k z (n - sqrt(n^2 - NA^2 rho^2))) rho drho|^2``

    with ``k = 2 pi / wavelength`` (in the medium's units: the wavelength in
    vacuum, the refractive index in the phase), the Born-Wolf diffraction
    integral over the pupil radius ``rho`` with the exact defocus path
    difference of the Gibson-Lanni model for a specimen in the design immersion
    medium (no coverslip or depth aberration). It is evaluated by Gauss-Legendre
    quadrature on a fine radial grid, interpolated onto sub-pixels and averaged
    over each camera pixel (so large pixels are accurate), and sampled at the
    plane positions along z.

    Parameters
    ----------
    shape : sequence of int
        ``(y, x)`` for the in-focus 2-D PSF or ``(z, y, x)``; odd sizes, the
        centre on the middle pixel. :func:`psf_size_for` picks one.
    na : float
        Numerical aperture of the objective (at most ``refractive_index``).
    wavelength : float
        Emission wavelength in vacuum, in the unit of ``pixel_size`` (micrometres).
    refractive_index : float
        Of the immersion medium (1.0 air, 1.33 water, 1.518 oil).
    pixel_size : float or (float, float)
        Pixel size in the sample, ``y`` and ``x`` (camera pixel / magnification).
    z_step : float, optional
        Plane spacing; required for a 3-D shape, ignored for a 2-D one.
    xp : module, optional
        ``numpy`` (default) or ``cupy`` for the returned array.

    Returns
    -------
    psf : ndarray of float32
        Sums to 1, symmetric in ``y``, ``x`` and ``+-z``.

    Notes
    -----
    The lateral FWHM is close to ``0.51 wavelength / NA`` and the axial one to
    ``0.88 wavelength / (n - sqrt(n^2 - NA^2))``. A widefield PSF keeps the same
    energy in every plane (the light spreads over a wider disc out of focus), so
    any finite array cuts some of it off; the sum is 1 over the array.

    References
    ----------
    .. [1] M. Born and E. Wolf, Principles of Optics, 7th ed., Cambridge
           University Press (1999), section 8.8.
    .. [2] S. F. Gibson and F. Lanni, "Experimental test of an analytical model
           of aberration in an oil-immersion objective lens used in
           three-dimensional light microscopy", J. Opt. Soc. Am. A 8, 1601-1613
           (1991).

    Examples
    --------
    >>> from bigdecon.solvers.psf import widefield_psf, psf_fwhm
    >>> psf = widefield_psf((33, 31, 31), na=1.1, wavelength=0.52, refractive_index=1.33,
    ...                     pixel_size=0.1, z_step=0.25)
    >>> psf.shape, psf.dtype.name, round(float(psf.sum()), 5)
    ((33, 31, 31), 'float32', 1.0)
    >>> fz, fy, fx = psf_fwhm(psf)
    >>> round(fy * 0.1, 2), round(fz * 0.25, 1)   # micrometres
    (0.25, 0.8)
    """
    na, wavelength, n = _check_optics(na, wavelength, refractive_index)
    return _finish_psf(_render_psf(shape, pixel_size, z_step, na, n, [wavelength]), xp)


def confocal_psf(
    shape: Sequence[int],
    na: float,
    wavelength: float,
    refractive_index: float,
    pixel_size: float | Sequence[float],
    z_step: float | None = None,
    *,
    excitation_wavelength: float | None = None,
    xp: ModuleType = np,
) -> Array:
    """Point-scanning confocal PSF: excitation times detection widefield PSFs (pinhole ignored).

    The product of the Born-Wolf intensities (see :func:`widefield_psf`) at the
    excitation and emission wavelengths through the same objective, i.e. the
    square of the widefield PSF when ``excitation_wavelength`` is not given. This
    is the limit of a small pinhole; a pinhole near 1 Airy unit gives a
    slightly wider PSF.

    Parameters
    ----------
    shape, na, wavelength, refractive_index, pixel_size, z_step
        As for :func:`widefield_psf` (``wavelength`` is the emission wavelength).
    excitation_wavelength : float, optional
        Default: ``wavelength``.
    xp : module, optional
        ``numpy`` (default) or ``cupy``.

    Returns
    -------
    psf : ndarray of float32
        Sums to 1, symmetric.

    References
    ----------
    .. [1] T. Wilson and C. Sheppard, Theory and Practice of Scanning Optical
           Microscopy, Academic Press (1984).
    .. [2] M. Born and E. Wolf, Principles of Optics, 7th ed. (1999), section 8.8.

    Examples
    --------
    >>> from bigdecon.solvers.psf import confocal_psf, widefield_psf, psf_fwhm
    >>> kw = dict(na=1.4, wavelength=0.52, refractive_index=1.518, pixel_size=0.05)
    >>> ratio = psf_fwhm(confocal_psf((31, 31), **kw))[0] / psf_fwhm(widefield_psf((31, 31), **kw))[0]
    >>> round(ratio, 1)   # about 1 / sqrt(2), as for a Gaussian
    0.7
    """
    na, wavelength, n = _check_optics(na, wavelength, refractive_index)
    excitation = wavelength if excitation_wavelength is None else excitation_wavelength
    return _finish_psf(_render_psf(shape, pixel_size, z_step, na, n, [excitation, wavelength]), xp)


def lightsheet_psf(
    shape: Sequence[int],
    na: float,
    wavelength: float,
    refractive_index: float,
    pixel_size: float | Sequence[float],
    z_step: float,
    sheet_thickness: float,
    *,
    xp: ModuleType = np,
) -> Array:
    """Light-sheet PSF: the detection widefield PSF times a Gaussian sheet along z.

    ``PSF(z, y, x) = I_det(z, y, x) exp(-4 ln 2 z^2 / T^2)`` with ``I_det`` from
    :func:`widefield_psf` and ``T`` the sheet's full width at half maximum
    (a Gaussian beam near its waist, constant across the field).

    Parameters
    ----------
    shape : (int, int, int)
        ``(z, y, x)``, odd sizes.
    na, wavelength, refractive_index, pixel_size, z_step
        Of the detection objective, as for :func:`widefield_psf`.
    sheet_thickness : float
        FWHM of the illumination sheet along z, in the unit of ``z_step``.
    xp : module, optional
        ``numpy`` (default) or ``cupy``.

    Returns
    -------
    psf : ndarray of float32
        Sums to 1, symmetric.

    References
    ----------
    .. [1] J. Huisken, J. Swoger, F. Del Bene, J. Wittbrodt and E. H. K. Stelzer,
           "Optical sectioning deep inside live embryos by selective plane
           illumination microscopy", Science 305, 1007-1009 (2004).
    .. [2] M. Born and E. Wolf, Principles of Optics, 7th ed. (1999), section 8.8.

    Examples
    --------
    >>> from bigdecon.solvers.psf import lightsheet_psf, psf_fwhm
    >>> psf = lightsheet_psf((41, 21, 21), na=0.8, wavelength=0.52, refractive_index=1.33,
    ...                      pixel_size=0.15, z_step=0.2, sheet_thickness=1.0)
    >>> round(psf_fwhm(psf)[0] * 0.2, 1)   # thinner than the detection PSF alone (1.9)
    0.9
    """
    if len(_psf_shape(shape)) != 3:
        raise _input_error(f"a light-sheet PSF is 3-D (z, y, x), got shape {tuple(shape)}")
    na, wavelength, n = _check_optics(na, wavelength, refractive_index)
    sheet = _positive("sheet_thickness", sheet_thickness)
    return _finish_psf(_render_psf(shape, pixel_size, z_step, na, n, [wavelength], sheet_fwhm=sheet), xp)


def psf_size_for(
    na: float,
    wavelength: float,
    refractive_index: float,
    pixel_size: float | Sequence[float],
    z_step: float | None = None,
    *,
    threshold: float = 1e-3,
    max_lateral: int = _MAX_LATERAL,
    max_planes: int = _MAX_PLANES,
) -> tuple[int, ...]:
    """Odd PSF shape that holds the widefield PSF down to ``threshold`` of its peak.

    Along z: the outermost plane whose brightest pixel is at least ``threshold``
    times the peak; laterally: the largest radius, over those planes, where the
    intensity still reaches it (out of focus the light spreads into a wider
    disc, so the lateral size grows with the z range). Each axis is capped.

    Parameters
    ----------
    na, wavelength, refractive_index, pixel_size
        As for :func:`widefield_psf`.
    z_step : float, optional
        Plane spacing; without it a 2-D ``(y, x)`` shape is returned.
    threshold : float
        Fraction of the peak intensity (default 1e-3).
    max_lateral, max_planes : int
        Caps on the y/x size (default 129) and the number of planes (default 65);
        odd.

    Returns
    -------
    tuple of int
        ``(y, x)`` or ``(z, y, x)``, for :func:`widefield_psf` and the others.
        A confocal or light-sheet PSF falls off faster, so the shape is
        generous for them.

    Examples
    --------
    >>> from bigdecon.solvers.psf import psf_size_for
    >>> psf_size_for(na=1.4, wavelength=0.52, refractive_index=1.518, pixel_size=0.065)
    (23, 23)
    >>> psf_size_for(na=0.5, wavelength=0.52, refractive_index=1.0, pixel_size=0.2, z_step=1.0)
    (59, 93, 93)
    """
    na, wavelength, n = _check_optics(na, wavelength, refractive_index)
    py, px = _pixel_pair(pixel_size)
    if not 0 < threshold < 1:
        raise _input_error(f"threshold must be between 0 and 1, got {threshold}")
    half_lat = max(0, (int(max_lateral) - 1) // 2)
    half_z = max(0, (int(max_planes) - 1) // 2)
    pixel = min(py, px)
    r = np.arange(0.0, (half_lat + 1) * max(py, px) * math.sqrt(2.0), pixel / 4.0)
    if z_step is None:
        z: np.ndarray = np.zeros(1)
    else:
        z = np.arange(half_z + 1) * _positive("z_step", z_step)
    profile = _defocus_profiles(r, z, na, wavelength, n)
    keep = profile >= threshold * profile[0, 0]
    planes = int(np.flatnonzero(keep.any(axis=1)).max())
    radius = float(r[np.flatnonzero(keep[: planes + 1].any(axis=0)).max()])

    def lateral(p: float) -> int:
        return 2 * min(half_lat, int(math.ceil(radius / p))) + 1

    lat = (lateral(py), lateral(px))
    return lat if z_step is None else (2 * min(half_z, planes) + 1, *lat)


def psf_fwhm(psf: ArrayLike) -> tuple[float, ...]:
    """Full width at half maximum of a PSF along each axis, in pixels.

    Measured on the profile through the brightest voxel, interpolated by a
    cubic spline, between the half-maximum crossings nearest the peak.

    Parameters
    ----------
    psf : ndarray
        1-, 2- or 3-D, NumPy or CuPy; every axis at least 3 long.

    Returns
    -------
    tuple of float
        One width per axis, in pixels of that axis.

    Examples
    --------
    >>> from bigdecon import gaussian_psf
    >>> from bigdecon.solvers.psf import psf_fwhm
    >>> [round(w, 1) for w in psf_fwhm(gaussian_psf((6.0, 3.0, 3.0)))]
    [6.0, 3.0, 3.0]
    """
    from scipy.interpolate import CubicSpline
    from scipy.optimize import brentq

    from .._backend import to_numpy

    a = np.asarray(to_numpy(psf), dtype=np.float64)
    peak = np.unravel_index(int(np.argmax(a)), a.shape)
    half = 0.5 * float(a[peak])
    if not half > 0:
        raise _input_error("the PSF has no positive maximum")
    widths = []
    for axis in range(a.ndim):
        index: list[int | slice] = [int(i) for i in peak]
        index[axis] = slice(None)
        line = a[tuple(index)]
        if line.size < 3:
            raise _input_error(f"PSF axis {axis} has {line.size} pixels; at least 3 are needed for a width")
        c = peak[axis]
        below = np.flatnonzero(line < half)
        left, right = below[below < c], below[below > c]
        if not (left.size and right.size):
            raise _input_error(f"the PSF does not fall to half its maximum on both sides along axis {axis}")
        spline = CubicSpline(np.arange(line.size), line - half)
        lo = brentq(spline, float(left.max()), float(c))
        hi = brentq(spline, float(c), float(right.min()))
        widths.append(float(hi - lo))
    return tuple(widths)


# Light a 3-D step-5 PSF may lose to its energy crop (energy_crop): measured to move
# Richardson-Lucy, Landweber and Wiener-Butterworth results by <= 1e-6 of their maximum
# (docs/step5_blocks.md, "Halo from the PSF's light"), while a bead PSF's box shrinks to its light.
ENERGY_EPS = 1e-5


def energy_reach(psf: ArrayLike, eps: float = ENERGY_EPS) -> tuple[int, ...]:
    """Half-width per axis, about the box centre ``n // 2``, of the box holding ``1 - eps`` of ``|psf|``.

    Along each axis the light outside ``|j - n // 2| <= r`` (the PSF summed over the
    other axes) is at most ``eps / ndim``, so the box of these half-widths holds at
    least ``1 - eps`` of the total. The centre is the array's, where convolution
    puts the origin: light off centre (an uncentred bead) widens the reach on that
    side, as it must.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon.solvers.psf import energy_reach
    >>> psf = np.zeros((61, 128, 128), np.float32); psf[30, 64, 60:66] = 1
    >>> energy_reach(psf)   # the light sits 4 px left of the box centre in x
    (0, 0, 4)
    """
    a = np.abs(np.asarray(psf, dtype=np.float64))
    total = float(a.sum())
    if not (math.isfinite(total) and total > 0):
        raise _input_error("the PSF has no light (its sum is 0 or not finite)")
    out = []
    for axis, n in enumerate(a.shape):
        line = a.sum(axis=tuple(i for i in range(a.ndim) if i != axis)) / total
        dist = np.abs(np.arange(n) - n // 2)
        # Light beyond each radius r: the sum over |j - c| > r.
        outside = np.array([line[dist > r].sum() for r in range(n // 2 + 1)])
        out.append(int(np.flatnonzero(outside <= eps / a.ndim)[0]))
    return tuple(out)


def energy_crop(psf: ArrayLike, eps: float = ENERGY_EPS) -> NDArrayF32:
    """``psf`` cut to the box of :func:`energy_reach` (odd, same centre), renormalised to sum 1.

    An axis whose light reaches the box's shorter side keeps its whole length
    (so an even-sized box is never shifted). Symmetric PSFs stay symmetric.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon.solvers.psf import energy_crop
    >>> psf = np.zeros((61, 128, 128), np.float32); psf[28:33, 60:69, 61:68] = 1
    >>> energy_crop(psf).shape   # a bead's light in a large box
    (5, 9, 7)
    """
    a = np.asarray(psf, dtype=np.float32)
    index = []
    for n, r in zip(a.shape, energy_reach(a, eps)):
        c = n // 2
        index.append(slice(None) if r >= min(c, n - 1 - c) else slice(c - r, c + r + 1))
    cut = a[tuple(index)]
    if cut.shape == a.shape:
        return a
    return (cut / cut.sum(dtype=np.float64)).astype(np.float32)
