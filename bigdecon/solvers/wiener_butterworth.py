"""Richardson-Lucy with the Wiener-Butterworth unmatched back projector (step 5).

Richardson-Lucy multiplies the estimate by the back projection of the ratio
``f / H x``; the textbook back projector is ``H^T`` (the flipped PSF), a low-pass
filter that damps exactly the high frequencies the deconvolution has to
restore, so it needs tens of iterations. Guo et al. (2020) replace it with a
filter that passes the frequencies inside the PSF's support almost flat (a
Wiener inverse) and cuts off above the resolution limit (a Butterworth window),
which brings the estimate near convergence in one to three iterations.

A 3-D PSF symmetric along every axis takes the mirror boundary of
:func:`~bigdecon.solvers.richardson_lucy.richardson_lucy` (real DCT-II, no
padding): ``H`` and ``B`` are then both diagonal in the DCT basis, and a block
of a volume with a halo reproduces the whole volume's result
(:func:`~bigdecon.solvers.richardson_lucy.deconv_halo`, ``kind="wb"``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._backend import get_xp, to_numpy
from .._types import Array, ArrayLike, Pad
from ..params import DECONV_ITERS_BY_TYPE, DEFAULTS
from ._dct import mirror_eigenvalues
from .psf import psf_fwhm, psf_to_otf
from .richardson_lucy import BOUNDARIES, FLOOR, _Convolver, _MirrorConvolver, fill_outside, padded_problem

__all__ = [
    "wiener_butterworth_backprojector",
    "backprojector_kernel",
    "mirror_backprojector",
    "rl_wiener_butterworth",
    "blocks_allowed",
    "sheared_backprojector_kernel",
    "sheared_drift",
]

# The back projector code published with Guo et al. (2020) defaults to a
# Wiener parameter of 0.001, a cut-off at the resolution limit 1 / FWHM, a gain
# there equal to the OTF's own (``beta=None`` here) and order 10; its example
# scripts also use gain 0.1 and order 20. With a widefield PSF the OTF's gain at
# 1 / FWHM is ~0.005, which pulls the window's half-power point down to about
# half the cut-off; gain 0.1 and order 20 keep the passband and reached plain
# RL's 20-iteration quality in 2 iterations (docs/backprojector.md).
# The model's defaults (bigdecon.params): wb_alpha 0.001, wb_beta 0.1, wb_order 20.
ALPHA: float = DEFAULTS.wb_alpha
BETA: float = DEFAULTS.wb_beta
ORDER: int = DEFAULTS.wb_order

# The mirror path's back projector is a finite kernel of KERNEL_RADIUS PSF half-supports per
# axis (backprojector_kernel), so a block with the halo of deconv_halo(kind="wb") equals the
# whole volume for every symmetric PSF. Measured (docs/backprojector.md): 1.5 half-supports
# already match the infinite filter's quality on Gaussian and Born-Wolf PSFs, 1 does not on
# every Gaussian (too coarse a sampling of the sharp window); 2 keeps a margin.


def _frequencies(shape, xp):
    """Per-axis frequency vectors (cycles per pixel) of an ``rfftn`` of ``shape``, for broadcasting."""
    out = []
    for axis, n in enumerate(shape):
        f = np.fft.rfftfreq(n) if axis == len(shape) - 1 else np.fft.fftfreq(n)
        view = [1] * len(shape)
        view[axis] = -1
        out.append(xp.asarray(f.astype(np.float32)).reshape(view))
    return out


def _gain_at(magnitude, shape, axis: int, freq: float) -> float:
    """Largest ``magnitude`` over the other axes' frequencies, at ``freq`` cycles per pixel on ``axis``.

    The maximum rather than the axis line: a widefield OTF is zero along the
    z axis itself (the missing cone) but not next to it.
    """
    xp = get_xp(magnitude)
    others = tuple(a for a in range(len(shape)) if a != axis)
    line = to_numpy(xp.max(magnitude, axis=others) if others else magnitude).astype(np.float64)
    n = shape[axis]
    positive = n // 2 + 1  # 0 .. Nyquist (an rfft axis holds just these)
    f = np.arange(positive) / n
    return float(np.interp(min(freq, f[-1]), f, line[:positive]))


def _check_filter(alpha: float, beta: float | None, order: int) -> None:
    """The back projector's parameters, as both of its samplings take them."""
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if beta is not None and not 0 < beta < 1:
        raise ValueError(f"beta must be between 0 and 1, got {beta}")
    if int(order) < 1:
        raise ValueError(f"order must be an integer >= 1, got {order}")


def _cutoffs(psf, cutoff) -> tuple[float, ...]:
    if cutoff is None:
        # The resolution limit as 1 / FWHM of the PSF per axis (Guo et al.);
        # for a diffraction-limited PSF it lies close to the OTF's support edge.
        return tuple(1.0 / w for w in psf_fwhm(psf))
    values = (float(cutoff),) * psf.ndim if np.ndim(cutoff) == 0 else tuple(float(c) for c in cutoff)
    if len(values) != psf.ndim or not all(math.isfinite(c) and c > 0 for c in values):
        raise ValueError(f"cutoff must be one frequency > 0 (cycles per pixel) or one per PSF axis, got {cutoff!r}")
    return values


def wiener_butterworth_backprojector(
    psf: ArrayLike,
    shape: Sequence[int],
    *,
    alpha: float = ALPHA,
    beta: float | None = BETA,
    order: int = ORDER,
    cutoff: float | Sequence[float] | None = None,
) -> Array:
    """Transfer function of the Wiener-Butterworth back projector for arrays of ``shape``.

    ``B(k) = W(k) M(k) / (W(0) M(0))`` with the Wiener filter
    ``W = conj(H) / (|H|^2 + alpha)`` of the PSF's OTF ``H`` (normalised to a
    peak of 1) and the Butterworth window
    ``M = 1 / sqrt(1 + eps^2 (sum_a (k_a / kc_a)^2)^order)``. The cut-off
    ``kc`` is the resolution limit, ``1 / FWHM`` of the PSF along each axis,
    and ``eps`` makes the back projector's gain at the cut-off equal ``beta``.

    Parameters
    ----------
    psf : ndarray
        2-D or 3-D kernel summing to 1, centred (NumPy or CuPy).
    shape : sequence of int
        Shape of the (padded) arrays it will filter, one size per PSF axis.
    alpha : float
        Wiener parameter (default 0.001): the larger, the less the back
        projector lifts frequencies where the OTF is weak.
    beta : float or None
        Gain of the back projector at the cut-off, relative to its gain at
        zero frequency (default 0.1). ``None``: the OTF's own gain there (the
        textbook back projector's), the published code's default.
    order : int
        Butterworth order (default 20): how steeply the window falls past the cut-off.
    cutoff : float or sequence of float, optional
        Cut-off frequency per axis in cycles per pixel; default ``1 / FWHM``.

    Returns
    -------
    ndarray of complex64
        ``rfftn`` layout for ``shape``, equal to 1 at zero frequency, to
        multiply the spectrum of the ratio ``f / H x``.

    References
    ----------
    .. [1] M. Guo et al., "Rapid image deconvolution and multiview fusion for
           optical microscopy", Nat. Biotechnol. 38, 1337-1346 (2020).
           doi:10.1038/s41587-020-0560-x

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf
    >>> from bigdecon.solvers import psf_to_otf, wiener_butterworth_backprojector
    >>> psf = gaussian_psf(4.0)
    >>> b = wiener_butterworth_backprojector(psf, (64, 64))
    >>> h = psf_to_otf(psf, (64, 64))
    >>> b.shape, b.dtype.name, complex(b[0, 0])
    ((64, 33), 'complex64', (1+0j))
    >>> bool(abs(b[0, 8]) > 2 * abs(h[0, 8]))   # lifts frequencies below the cut-off (1/4)
    True
    >>> bool(abs(b[0, 28]) < 1e-3)               # and stops well above it
    True
    """
    xp = get_xp(psf)
    psf = xp.asarray(psf, dtype=xp.float32)
    shape = tuple(int(s) for s in shape)
    _check_filter(alpha, beta, order)
    kc = _cutoffs(psf, cutoff)

    otf = psf_to_otf(psf, shape, xp)
    otf /= xp.abs(otf).max()
    power = otf.real**2 + otf.imag**2
    wiener = otf.conj()
    wiener /= power + xp.float32(alpha)

    axes = range(len(shape))
    if beta is None:
        magnitude = xp.sqrt(power)
        beta = sum(_gain_at(magnitude, shape, a, kc[a]) for a in axes) / len(shape)
    magnitude = xp.abs(wiener)
    gain = sum(_gain_at(magnitude, shape, a, kc[a]) for a in axes) / len(shape)
    del magnitude
    eps2 = max((gain / max(beta, 1e-12)) ** 2 - 1.0, 0.0)

    # sum_a (k_a / kc_a)^2, then the window; float32 throughout.
    w: Array | None = None
    for f, c in zip(_frequencies(shape, xp), kc):
        term = (f / xp.float32(c)) ** 2
        w = term if w is None else w + term
    assert w is not None  # a shape has at least one axis
    window = xp.float32(1.0) / xp.sqrt(xp.float32(1.0) + xp.float32(eps2) * w ** int(order))
    wiener *= window
    wiener /= wiener[(0,) * len(shape)].real
    return wiener.astype(xp.complex64, copy=False)


def _response(k, freqs):
    """Frequency response ``sum_j k(j) prod_a cos(2 pi f_a j_a)`` of a centred symmetric kernel, float64.

    ``freqs`` holds one vector of frequencies (cycles per pixel) per axis; the
    result is their outer grid. A kernel symmetric along every axis has this
    real response (its OTF), defined at any frequency, not only on a DFT grid.
    """
    out = np.asarray(k, dtype=np.float64)
    for axis, f in enumerate(freqs):
        p = k.shape[axis]
        cosines = np.cos(2 * np.pi * np.outer(np.asarray(f, np.float64), np.arange(p) - p // 2))
        out = np.tensordot(out, cosines, axes=([0], [1]))  # this axis goes last: (f_0, f_1, ...) at the end
    return out


def _mirror_gain(k, kc, alpha: float | None) -> float:
    """Mean over axes of the largest gain at ``f_a = kc_a``: of the Wiener filter, or (``alpha=None``) of ``H``.

    On a grid that depends on the PSF alone (exact at the cut-off, the other
    axes sampled at a quarter of ``1 / psf size``), so that a block and the
    whole volume build the same filter whatever their sizes.
    """
    gains = []
    for a in range(k.ndim):
        freqs = [np.linspace(0.0, 0.5, max(2 * n + 1, 33)) for n in k.shape]
        freqs[a] = np.array([min(kc[a], 0.5)])
        h = _response(k, freqs)
        g = np.abs(h) if alpha is None else np.abs(h / (h * h + alpha))
        gains.append(float(g.max()))
    return sum(gains) / len(gains)


def _sampled_backprojector(
    psf,
    shape: Sequence[int],
    *,
    alpha: float = ALPHA,
    beta: float | None = BETA,
    order: int = ORDER,
    cutoff: float | Sequence[float] | None = None,
):
    """The Wiener-Butterworth filter sampled at the DCT-II frequencies of ``shape`` (infinite kernel), float32.

    The filter of :func:`wiener_butterworth_backprojector` for a PSF symmetric
    along every axis, sampled at the DCT-II frequencies ``m_a / (2 N_a)``:
    there the PSF's OTF ``H`` is real and even, and is exactly the mirror
    eigenvalues :func:`~bigdecon.solvers._dct.mirror_eigenvalues`; ``B`` is a
    real function of ``H`` times a window even in every frequency, so it is
    real and even too. Its spatial kernel (the ``2N``-periodic one whose
    spectrum is ``B``) is as long as the array: with the Born-Wolf PSF, whose
    OTF is sharp-edged and (in a finite box) rings around zero in the missing
    cone, 25-35% of its absolute mass lies beyond 3 PSF half-supports, so
    blocks sampling it on their own grids disagree with the whole volume.
    :func:`backprojector_kernel` samples it once on a grid set by the PSF
    alone (``shape`` = the kernel's half-support), which gives the finite
    kernel the mirror path uses.

    ``H`` is normalised by ``H(0)``, ``B`` by ``B(0)``, the Butterworth
    ``eps`` comes from a PSF-sized grid: the filter depends on the PSF and the
    parameters only. Returns float32 of ``shape``, 1 at index 0.
    """
    xp = get_xp(psf)
    k = np.asarray(to_numpy(psf), dtype=np.float64)
    shape = tuple(int(s) for s in shape)
    _check_filter(alpha, beta, order)
    if len(shape) != k.ndim:
        raise ValueError(f"shape {shape} has {len(shape)} axes, the PSF {k.ndim}")
    kc = _cutoffs(k, cutoff)
    k = k / k.sum()  # H(0) = 1
    if beta is None:
        beta = _mirror_gain(k, kc, None)
    eps2 = max((_mirror_gain(k, kc, alpha) / max(beta, 1e-12)) ** 2 - 1.0, 0.0)

    b = mirror_eigenvalues(k, shape, xp)  # H at m / 2N, float32
    # W = H / (H^2 + alpha), in place: b holds H, then W.
    b2 = b * b
    b2 += xp.float32(alpha)
    b /= b2
    del b2
    if eps2 > 0:  # else the window is 1 everywhere (and inf * 0 would give NaN past the cut-off)
        w: Array | None = None
        for a, (n, c) in enumerate(zip(shape, kc)):
            view = [1] * len(shape)
            view[a] = n
            term = xp.asarray(((np.arange(n) / (2.0 * n) / c) ** 2).astype(np.float32)).reshape(view)
            w = term if w is None else w + term
        assert w is not None  # a shape has at least one axis
        w = w ** int(order)  # overflows to inf far past the cut-off: a gain of 0 there, as it should be
        w *= xp.float32(eps2)
        w += xp.float32(1.0)
        b /= xp.sqrt(w, out=w)
        del w
    b /= b[(0,) * b.ndim].copy()  # W(0) = 1 / (1 + alpha), the window 1: B(0) = 1
    return b


def backprojector_kernel(
    psf: ArrayLike,
    *,
    alpha: float = ALPHA,
    beta: float | None = BETA,
    order: int = ORDER,
    cutoff: float | Sequence[float] | None = None,
) -> np.ndarray:
    """The mirror path's Wiener-Butterworth back projector as a finite spatial kernel, float64.

    The filter of :func:`wiener_butterworth_backprojector` (for a PSF symmetric
    along every axis, real and even) sampled at the frequencies ``m / 2R`` of a
    grid that depends on the PSF's shape alone, ``R`` =
    :func:`~bigdecon.solvers.richardson_lucy.backprojector_half_support`
    (``WB_KERNEL_RADIUS`` PSF half-supports per axis), is the spectrum of one
    ``2R``-periodic kernel; one period, centred, is this kernel of size
    ``2R + 1`` (the samples at offset ``+-R``, one sample of the periodic
    kernel, split in halves). It is symmetric along every axis and sums to 1
    (``B(0) = 1``). :func:`mirror_backprojector` takes its DCT eigenvalues for
    any array, as for the PSF, so a block and the whole volume filter with the
    same finite kernel and a halo makes them equal
    (:func:`~bigdecon.solvers.richardson_lucy.deconv_halo`, ``kind="wb"``).
    Between the samples its response interpolates the filter; it is 0 at
    0.5 cycles per pixel.

    Parameters
    ----------
    psf : ndarray
        Odd-sized kernel symmetric along every axis, summing to 1 (NumPy or CuPy).
    alpha, beta, order, cutoff
        As in :func:`wiener_butterworth_backprojector`.

    Returns
    -------
    ndarray of float64 (NumPy), ``2 R + 1`` per axis, summing to 1.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf
    >>> from bigdecon.solvers.wiener_butterworth import backprojector_kernel
    >>> psf = gaussian_psf((6.0, 3.0, 3.0))
    >>> psf.shape, backprojector_kernel(psf).shape    # 2 PSF half-supports per axis
    ((25, 15, 15), (49, 29, 29))
    >>> k = backprojector_kernel(psf)
    >>> round(float(k.sum()), 12), bool(np.array_equal(k, k[::-1, ::-1, ::-1]))
    (1.0, True)
    """
    import scipy.fft

    from .richardson_lucy import backprojector_half_support

    k = np.asarray(to_numpy(psf), dtype=np.float64)
    r = backprojector_half_support(k.shape)
    b = _sampled_backprojector(k, r, alpha=alpha, beta=beta, order=order, cutoff=cutoff).astype(np.float64)
    b = np.pad(b, [(0, 1)] * k.ndim)  # m = R (0.5 cycles per pixel): gain 0
    kernel = scipy.fft.idctn(b, type=1)  # the 2R-periodic kernel at offsets 0..R, per axis
    for axis in range(k.ndim):
        edge = [slice(None)] * k.ndim
        edge[axis] = slice(-1, None)
        kernel[tuple(edge)] *= 0.5  # offsets +R and -R share one periodic sample
        inner = np.flip(np.take(kernel, np.arange(1, kernel.shape[axis]), axis=axis), axis=axis)
        kernel = np.concatenate([inner, kernel], axis=axis)  # offsets -R..R
    return kernel / kernel.sum()  # 1 up to rounding: B(0) = 1 exactly


def mirror_backprojector(
    psf: ArrayLike,
    shape: Sequence[int],
    *,
    alpha: float = ALPHA,
    beta: float | None = BETA,
    order: int = ORDER,
    cutoff: float | Sequence[float] | None = None,
) -> Array:
    """The Wiener-Butterworth back projector as DCT-II eigenvalues (mirror boundary), float32.

    The DCT-II eigenvalues (:func:`~bigdecon.solvers._dct.mirror_eigenvalues`,
    exactly as for the PSF) of the finite kernel :func:`backprojector_kernel`
    on arrays of ``shape``. The kernel is symmetric along every axis, so
    convolution with it under the mirror boundary is ``IDCT(B * DCT(.))``
    exactly; it depends on the PSF and the parameters only, not on ``shape``,
    so blocks of any size and the whole volume apply the same operator and a
    halo of :func:`~bigdecon.solvers.richardson_lucy.deconv_halo`
    (``kind="wb"``) makes a block equal the whole volume. A complex or odd
    ``B`` (an asymmetric PSF) would not be diagonal in the DCT basis: that
    case keeps edge padding and real FFTs.

    Parameters
    ----------
    psf : ndarray
        Odd-sized kernel symmetric along every axis, summing to 1 (NumPy or CuPy).
    shape : sequence of int
        Lengths of the PSF's axes in the arrays it will filter.
    alpha, beta, order, cutoff
        As in :func:`wiener_butterworth_backprojector`.

    Returns
    -------
    ndarray of float32, ``shape``, equal to 1 at index 0.

    Examples
    --------
    >>> from bigdecon import gaussian_psf
    >>> from bigdecon.solvers import mirror_backprojector
    >>> b = mirror_backprojector(gaussian_psf((6.0, 3.0, 3.0)), (32, 64, 64))
    >>> b.shape, b.dtype.name, float(b[0, 0, 0])
    ((32, 64, 64), 'float32', 1.0)
    >>> bool(b[0, 0, 30] > 2 and abs(b[0, 0, 63]) < 1e-2)  # lifts 0.23 cycle per pixel, stops at 0.49
    True
    """
    xp = get_xp(psf)
    shape = tuple(int(s) for s in shape)
    if len(shape) != np.ndim(psf):
        raise ValueError(f"shape {shape} has {len(shape)} axes, the PSF {np.ndim(psf)}")
    kernel = backprojector_kernel(psf, alpha=alpha, beta=beta, order=order, cutoff=cutoff)
    b = mirror_eigenvalues(kernel, shape, xp)
    b /= b[(0,) * b.ndim].copy()  # the kernel's sum, 1 up to float32 rounding
    return b


def blocks_allowed(psf: ArrayLike) -> bool:
    """Whether 3-D Wiener-Butterworth may run on blocks with the halo of ``deconv_halo(kind="wb")``.

    Every PSF that takes the mirror boundary (3-D, symmetric along every
    axis): its back projector is the finite kernel of
    :func:`backprojector_kernel`, whole volume and blocks alike. Not an
    asymmetric PSF: an edge-padded block's faces get other FFT lengths than
    the whole volume, and the sharp back projector rings on them (~2% of the
    maximum at any halo), so such volumes stay whole.

    Examples
    --------
    >>> from bigdecon import gaussian_psf
    >>> from bigdecon.solvers import widefield_psf
    >>> from bigdecon.solvers.wiener_butterworth import blocks_allowed
    >>> blocks_allowed(gaussian_psf((6.0, 3.0, 3.0)))
    True
    >>> blocks_allowed(widefield_psf((21, 31, 31), 1.1, 0.52, 1.33, pixel_size=0.1, z_step=0.25))
    True
    """
    from .richardson_lucy import mirror_symmetric

    return np.ndim(psf) == 3 and (mirror_symmetric(psf) or sheared_drift(psf) is not None)


def _symmetrized(kernel: np.ndarray) -> np.ndarray:
    for axis in range(kernel.ndim):
        kernel = (kernel + np.flip(kernel, axis)) / 2
    return kernel


def sheared_drift(psf: ArrayLike) -> tuple[float, float] | None:
    """The drift per plane (y, x px) of a 3-D PSF that is a mirror-symmetric PSF sheared plane by plane.

    A skewed light-sheet stack's PSF (:func:`~bigdecon.solvers.deskew.skew_psf`)
    is one: moved back by its drift (:func:`~bigdecon.solvers.deskew.move_planes`)
    it is symmetric along every axis to 2 % of its maximum. None for every other
    PSF, and for a drift under 0.05 px per plane.

    Examples
    --------
    >>> from bigdecon import gaussian_psf
    >>> from bigdecon.solvers.deskew import skew_psf
    >>> [round(v, 3) for v in sheared_drift(skew_psf(gaussian_psf((5.0, 3.0, 3.0)), 31.5, 0.4, 0.104))]
    [0.0, -3.279]
    >>> sheared_drift(gaussian_psf((5.0, 3.0, 3.0))) is None
    True
    """
    from .deskew import move_planes, plane_drift

    p = np.asarray(to_numpy(psf), dtype=np.float64)
    if p.ndim != 3 or not all(n % 2 for n in p.shape) or not p.max() > 0:
        return None
    drift = plane_drift(p)
    if max(abs(v) for v in drift) < 0.05:
        return None
    sample = move_planes(p, [-v for v in drift])
    if np.abs(sample - _symmetrized(sample)).max() > 0.02 * sample.max():
        return None
    return drift


def _trimmed(kernel: np.ndarray, floor: float = 1e-7) -> np.ndarray:
    """``kernel`` cut, centred, to where its y and x profiles exceed ``floor`` of their maximum."""
    index = [slice(None)]
    for axis in (1, 2):
        profile = kernel.sum(axis=tuple(a for a in range(3) if a != axis))
        centre = kernel.shape[axis] // 2
        live = np.flatnonzero(profile > floor * profile.max())
        half = int(max(abs(live[0] - centre), abs(live[-1] - centre)))
        index.append(slice(centre - half, centre + half + 1))
    return kernel[tuple(index)]


def sheared_backprojector_kernel(
    psf: ArrayLike,
    *,
    alpha: float = ALPHA,
    beta: float | None = BETA,
    order: int = ORDER,
    cutoff: float | Sequence[float] | None = None,
) -> np.ndarray:
    """The Wiener-Butterworth back projector of a sheared PSF (:func:`sheared_drift`), a finite kernel.

    Designed in the sample frame and sheared like the PSF: the PSF is moved
    back by its drift, symmetrised, and given the symmetric finite kernel of
    :func:`backprojector_kernel` (cut-offs from the sample frame's FWHM, which a
    shear would distort), whose planes are then moved by the drift, inside the
    box of :func:`~bigdecon.solvers.richardson_lucy.backprojector_half_support`
    of the sheared PSF, and normalised to sum 1. Finite, so a block with the
    halo of :func:`~bigdecon.solvers.richardson_lucy.deconv_halo` (``kind="wb"``)
    filters as the whole volume does.

    Examples
    --------
    >>> from bigdecon import gaussian_psf
    >>> from bigdecon.solvers.deskew import skew_psf
    >>> q = skew_psf(gaussian_psf((5.0, 3.0, 3.0)), 31.5, 0.4, 0.104)
    >>> k = sheared_backprojector_kernel(q)
    >>> q.shape, k.shape, round(float(k.sum()), 6)
    ((21, 15, 81), (41, 29, 161), 1.0)
    """
    from .deskew import move_planes
    from .richardson_lucy import backprojector_half_support

    p = np.asarray(to_numpy(psf), dtype=np.float64)
    drift = sheared_drift(p)
    if drift is None:
        raise ValueError("the PSF is not a symmetric PSF sheared plane by plane")
    sample = _trimmed(_symmetrized(move_planes(p, [-v for v in drift])))
    kernel = backprojector_kernel(sample / sample.sum(), alpha=alpha, beta=beta, order=order, cutoff=cutoff)
    r = backprojector_half_support(p.shape)
    out = move_planes(kernel, drift, (2 * r[1] + 1, 2 * r[2] + 1))
    return out / out.sum()


def _sheared_kernel(image, psf, boundary: str, params: dict[str, Any]) -> np.ndarray | None:
    """The finite back projector of a sheared 3-D PSF on the edge path (:func:`sheared_drift`), else None."""
    from .richardson_lucy import boundary_rule

    if np.ndim(psf) != 3 or np.ndim(image) != 3 or boundary_rule(3, psf, boundary) != "edge":
        return None
    if sheared_drift(psf) is None:
        return None
    return sheared_backprojector_kernel(psf, **params)


def _kernel_otf(kernel: np.ndarray, shape: Sequence[int], xp: Any):
    """The transfer function of a centred kernel on a periodic grid of ``shape`` (folded if larger)."""
    from .._backend import fft_module

    grid = np.zeros(tuple(int(n) for n in shape), np.float64)
    index = [(np.arange(n) - n // 2) % int(m) for n, m in zip(kernel.shape, shape)]
    np.add.at(grid, np.ix_(*index), kernel)
    return fft_module(xp).rfftn(xp.asarray(grid.astype(np.float32))).astype(xp.complex64)


def rl_wiener_butterworth(
    image: ArrayLike,
    psf: ArrayLike,
    iterations: int = DECONV_ITERS_BY_TYPE[3],
    *,
    pad: Pad = None,
    alpha: float = ALPHA,
    beta: float | None = BETA,
    order: int = ORDER,
    cutoff: float | Sequence[float] | None = None,
    boundary: str = "auto",
    start: Array | None = None,
) -> Array:
    """Richardson-Lucy with the Wiener-Butterworth unmatched back projector.

    Each iteration ``x = max(x * B(f / max(H x, 1e-6)), 1e-6)``, starting from
    ``x = f``, with ``B`` from :func:`wiener_butterworth_backprojector` in place
    of ``H^T``. Plane by plane for a 2-D PSF, as a volume for a 3-D PSF, with
    the face rule of :func:`richardson_lucy`: a 3-D PSF symmetric along every
    axis takes the mirror boundary (real DCT-II, no padding, ``B`` from
    :func:`mirror_backprojector`), other PSFs edge padding and real FFTs.

    Parameters
    ----------
    image : ndarray
        Non-negative data, 2-D ``(y, x)`` or 3-D ``(k, y, x)``; NumPy or CuPy.
    psf : ndarray
        2-D or 3-D kernel summing to 1, centred.
    iterations : int
        Number of iterations (default 2; 1 to 3 is the useful range). 0 returns the input.
    pad : int or tuple of int, optional
        Edge replication on each side of the deconvolved axes; the default is
        that of :func:`richardson_lucy`. Ignored by the mirror boundary.
    alpha, beta, order, cutoff
        Back projector parameters, see :func:`wiener_butterworth_backprojector`.
    boundary : {"auto", "mirror", "edge"}
        Face rule, as in :func:`richardson_lucy` (:func:`boundary_rule`).
        With ``"mirror"`` a block of a volume needs only a halo
        (:func:`deconv_halo` with ``kind="wb"``) to equal the whole volume.
    start : ndarray, optional
        The estimate to start from (default: the data): what an earlier call
        returned, so that passes of ``k`` iterations compute what one call of
        their sum computes (mirror boundary only, where it has the image's shape).

    Returns
    -------
    ndarray of float32, same shape as ``image``

    Notes
    -----
    The back projector is not the adjoint of ``H``, so the iteration does not
    maximise the Poisson likelihood; run more than a few iterations and it
    amplifies noise (the table in docs/backprojector.md).

    References
    ----------
    .. [1] M. Guo et al., "Rapid image deconvolution and multiview fusion for
           optical microscopy", Nat. Biotechnol. 38, 1337-1346 (2020).
           doi:10.1038/s41587-020-0560-x
    .. [2] W. H. Richardson, "Bayesian-based iterative method of image
           restoration", J. Opt. Soc. Am. 62, 55-59 (1972).

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf, richardson_lucy
    >>> from bigdecon.solvers import rl_wiener_butterworth
    >>> from scipy.ndimage import convolve
    >>> truth = np.zeros((64, 64), np.float32); truth[32, 32] = 1
    >>> psf = gaussian_psf(4.0)
    >>> blurred = convolve(truth, psf, mode="wrap")
    >>> wb = rl_wiener_butterworth(blurred, psf, iterations=2, pad=0)
    >>> rl = richardson_lucy(blurred, psf, iterations=2, accelerate=False, pad=0)
    >>> bool(wb[32, 32] > 2 * rl[32, 32])
    True
    """
    xp = get_xp(image)
    if iterations <= 0:
        return xp.asarray(image, dtype=xp.float32).copy()
    # No zero guard: a step to zero rings through the sharp back projector and
    # grows multiplicatively (a flat image would not stay flat at its faces).
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    params: dict[str, Any] = dict(alpha=alpha, beta=beta, order=order, cutoff=cutoff)
    kernel = _sheared_kernel(image, psf, boundary, params)
    if kernel is None:
        padded, conv, crop = padded_problem(image, psf, pad, boundary, guard=False)
    else:  # a finite kernel: the faces as Richardson-Lucy's (guard, padding as object), its reach guarded
        reach = [n // 2 for n in kernel.shape]
        padded, conv, crop = padded_problem(image, psf, pad, boundary, guard=True, reach=reach)
    psf = xp.asarray(psf, dtype=xp.float32)
    if kernel is not None:
        assert isinstance(conv, _Convolver)  # a sheared PSF is not mirror-symmetric: the edge rule
        b = _kernel_otf(kernel, conv.shape, xp)

        def backproject(r):
            if conv.masked:  # beyond the faces there are no data: ratio 1, as in richardson_lucy
                fill_outside(r, crop, 1.0)
            return conv._apply(r, b)

    elif isinstance(conv, _MirrorConvolver):
        mirror = conv
        b = mirror_backprojector(psf, mirror.lam.shape[3 - psf.ndim :], **params).reshape(mirror.lam.shape)

        def backproject(r):
            return mirror.dct.apply(r.reshape(mirror.shape3), b, mirror.coupled).reshape(r.shape)

    else:
        periodic = conv
        b = wiener_butterworth_backprojector(psf, periodic.shape, **params)

        def backproject(r):
            return periodic._apply(r, b)

    floor = xp.float32(FLOOR)
    x = padded
    if start is not None:
        if not isinstance(conv, _MirrorConvolver):
            raise ValueError("start needs the mirror boundary (a 3-D PSF symmetric on every axis)")
        x = xp.asarray(start, dtype=xp.float32)
    for _ in range(iterations):
        ratio = conv.forward(x)
        xp.maximum(ratio, floor, out=ratio)
        xp.divide(padded, ratio, out=ratio)
        update = backproject(ratio)  # in place on NumPy under the mirror
        update *= x
        x = xp.maximum(update, floor, out=update)
    out = x[crop]
    return xp.maximum(out, 0).astype(xp.float32, copy=False)
