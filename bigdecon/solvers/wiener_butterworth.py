"""Richardson-Lucy with the Wiener-Butterworth unmatched back projector (step 5).

Richardson-Lucy multiplies the estimate by the back projection of the ratio
``f / H x``; the textbook back projector is ``H^T`` (the flipped PSF), a low-pass
filter that damps exactly the high frequencies the deconvolution has to
restore, so it needs tens of iterations. Guo et al. (2020) replace it with a
filter that passes the frequencies inside the PSF's support almost flat (a
Wiener inverse) and cuts off above the resolution limit (a Butterworth window),
which brings the estimate near convergence in one to three iterations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._backend import get_xp, to_numpy
from .psf import psf_fwhm, psf_to_otf
from .richardson_lucy import FLOOR, padded_problem

__all__ = ["wiener_butterworth_backprojector", "rl_wiener_butterworth"]

# The back projector code published with Guo et al. (2020) defaults to a
# Wiener parameter of 0.001, a cut-off at the resolution limit 1 / FWHM, a gain
# there equal to the OTF's own (``beta=None`` here) and order 10; its example
# scripts also use gain 0.1 and order 20. With a widefield PSF the OTF's gain at
# 1 / FWHM is ~0.005, which pulls the window's half-power point down to about
# half the cut-off; gain 0.1 and order 20 keep the passband and reached plain
# RL's 20-iteration quality in 2 iterations (docs/backprojector.md).
ALPHA = 0.001
BETA = 0.1
ORDER = 20


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
    psf,
    shape: Sequence[int],
    *,
    alpha: float = ALPHA,
    beta: float | None = BETA,
    order: int = ORDER,
    cutoff: float | Sequence[float] | None = None,
):
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
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if beta is not None and not 0 < beta < 1:
        raise ValueError(f"beta must be between 0 and 1, got {beta}")
    if int(order) < 1:
        raise ValueError(f"order must be an integer >= 1, got {order}")
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
    w: Any = None
    for f, c in zip(_frequencies(shape, xp), kc):
        term = (f / xp.float32(c)) ** 2
        w = term if w is None else w + term
    window = xp.float32(1.0) / xp.sqrt(xp.float32(1.0) + xp.float32(eps2) * w ** int(order))
    wiener *= window
    wiener /= wiener[(0,) * len(shape)].real
    return wiener.astype(xp.complex64, copy=False)


def rl_wiener_butterworth(
    image,
    psf,
    iterations: int = 2,
    *,
    pad: int | tuple[int, ...] | None = None,
    alpha: float = ALPHA,
    beta: float | None = BETA,
    order: int = ORDER,
    cutoff: float | Sequence[float] | None = None,
):
    """Richardson-Lucy with the Wiener-Butterworth unmatched back projector.

    Each iteration ``x = max(x * B(f / max(H x, 1e-6)), 1e-6)``, starting from
    ``x = f``, with ``B`` from :func:`wiener_butterworth_backprojector` in place
    of ``H^T``. Plane by plane for a 2-D PSF, as a volume for a 3-D PSF, on the
    data padded by edge replication like :func:`richardson_lucy`.

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
        that of :func:`richardson_lucy`.
    alpha, beta, order, cutoff
        Back projector parameters, see :func:`wiener_butterworth_backprojector`.

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
    padded, conv, crop = padded_problem(image, psf, pad)
    backprojector = wiener_butterworth_backprojector(
        xp.asarray(psf, dtype=xp.float32), conv.shape, alpha=alpha, beta=beta, order=order, cutoff=cutoff
    )
    floor = xp.float32(FLOOR)
    x = padded
    for _ in range(iterations):
        ratio = conv.forward(x)
        xp.maximum(ratio, floor, out=ratio)
        xp.divide(padded, ratio, out=ratio)
        update = conv._apply(ratio, backprojector)
        update *= x
        x = xp.maximum(update, floor, out=update)
    out = x[crop]
    return xp.maximum(out, 0).astype(xp.float32, copy=False)
