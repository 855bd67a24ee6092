"""Richardson-Lucy deconvolution with Biggs-Andrews acceleration (step 5, mode 1)."""

from __future__ import annotations

import numpy as np

from .._backend import fft_module, fft_workers, get_xp
from .psf import psf_to_otf

__all__ = ["richardson_lucy", "published_pad", "pad_edges", "FLOOR"]


# The published floors: they keep the ratio f / Hy finite and feed the
# acceleration factor, so they decide the last digits and are kept exactly.
FLOOR = 1e-6


def published_pad(shape) -> int:
    """Edge padding of the published 2-D step: ``floor(min(h, w) / 6)`` pixels."""
    return int(min(shape[-2], shape[-1]) // 6)


def _pad_widths(shape, axes, pad) -> tuple[int, ...]:
    """One padding width per deconvolved axis from ``pad`` (None, an int or a tuple)."""
    if pad is None:
        pad = published_pad(shape)
    widths = (int(pad),) * len(axes) if np.ndim(pad) == 0 else tuple(int(w) for w in pad)
    if len(widths) != len(axes) or min(widths) < 0:
        raise ValueError(f"pad must be one width >= 0 or one per deconvolved axis, got {pad!r}")
    return widths


def _crop(shape, axes, widths) -> tuple[slice, ...]:
    """Index that removes ``widths`` from both ends of ``axes``."""
    index = [slice(None)] * len(shape)
    for axis, w in zip(axes, widths):
        index[axis] = slice(w, w + shape[axis])
    return tuple(index)


def pad_edges(image, pad: int | tuple[int, ...], axes: tuple[int, ...]):
    """Replicate the edge ``pad`` pixels outward on ``axes`` (one width per axis or one for all)."""
    xp = get_xp(image)
    widths = (pad,) * len(axes) if np.ndim(pad) == 0 else tuple(pad)
    spec = [(0, 0)] * image.ndim
    for axis, w in zip(axes, widths):
        spec[axis] = (int(w), int(w))
    if not any(w for pair in spec for w in pair):
        return image
    return xp.pad(image, spec, mode="edge")


def padded_problem(image, psf, pad):
    """Shared set-up of the iterative deconvolutions: float32 data padded by the
    edge rule, its convolver, and the index that crops the padding off again."""
    xp = get_xp(image)
    f = xp.asarray(image, dtype=xp.float32)
    psf = xp.asarray(psf, dtype=xp.float32)
    if psf.ndim > f.ndim:
        raise ValueError(f"a {psf.ndim}-D PSF cannot deconvolve a {f.ndim}-D image")
    axes = tuple(range(f.ndim - psf.ndim, f.ndim))
    widths = _pad_widths(f.shape, axes, pad)
    padded = pad_edges(f, widths, axes)
    if any(p > s for p, s in zip(psf.shape, padded.shape[-psf.ndim :])):
        raise ValueError(f"PSF of shape {tuple(psf.shape)} is larger than the image {tuple(f.shape)}")
    return padded, _Convolver(padded.shape, psf, xp), _crop(f.shape, axes, widths)


class _Convolver:
    """``H`` and ``H^T`` for a PSF over the last ``psf.ndim`` axes (periodic, real FFTs)."""

    def __init__(self, shape, psf, xp):
        self.xp = xp
        self.fft = fft_module(xp)
        self.kw = fft_workers(xp, int(np.prod(shape)))
        self.axes = tuple(range(len(shape) - psf.ndim, len(shape)))
        self.shape = tuple(shape[a] for a in self.axes)
        self.otf = psf_to_otf(psf, self.shape, xp)
        self.otf_conj = self.otf.conj()

    def _apply(self, x, otf):
        spec = self.fft.rfftn(x, axes=self.axes, **self.kw)
        spec *= otf
        return self.fft.irfftn(spec, s=self.shape, axes=self.axes, **self.kw).astype(self.xp.float32, copy=False)

    def forward(self, x):
        return self._apply(x, self.otf)

    def adjoint(self, x):
        return self._apply(x, self.otf_conj)


def _plane_sum(a, ndim_psf: int, xp):
    """Sum over the PSF's axes, kept for broadcasting (one alpha per plane or volume)."""
    axes = tuple(range(a.ndim - ndim_psf, a.ndim))
    return a.sum(axis=axes, keepdims=True, dtype=xp.float64)


def richardson_lucy(image, psf, iterations: int = 7, accelerate: bool = True, *, pad: int | None = None):
    """Richardson-Lucy deconvolution, optionally with Biggs-Andrews acceleration.

    A 2-D PSF deconvolves each ``(y, x)`` plane of a 2-D or 3-D image
    separately, as the published sparse-deconvolution step does; a 3-D PSF
    deconvolves a 3-D image as a volume. The acceleration factor is a ratio of
    two sums over the whole plane (or volume), recomputed every iteration.

    Parameters
    ----------
    image : ndarray
        Non-negative data, 2-D ``(y, x)`` or 3-D ``(k, y, x)``; NumPy or CuPy.
    psf : ndarray
        2-D or 3-D kernel summing to 1, centred, no larger than the padded image.
    iterations : int
        Number of iterations (``deconv_iters``, default 7). 0 returns the input.
    accelerate : bool
        Biggs-Andrews vector extrapolation (the published default).
    pad : int or tuple of int, optional
        Pixels of edge replication on each side of the deconvolved axes (one
        for all, or one per axis), to keep the periodic FFT from wrapping.
        Default: the published ``floor(min(h, w) / 6)``; 0 gives a periodic
        deconvolution.

    Returns
    -------
    ndarray of float32, same shape as ``image``

    Notes
    -----
    Each iteration: ``x = max(y * H^T(f / max(H y, 1e-6)), 1e-6)`` (the PSF
    sums to 1, so ``H^T 1 = 1``), ``v = max(x - y, 1e-6)``; from the second
    iteration ``alpha = clip(sum(v_prev v) / (sum(v_prev^2) + 1e-10), 1e-6, 1)``
    and ``y = max(x + alpha (x - x_prev), 1e-6)``. The result is the last ``y``.

    References
    ----------
    .. [1] W. H. Richardson, "Bayesian-based iterative method of image
           restoration", J. Opt. Soc. Am. 62, 55-59 (1972).
    .. [2] L. B. Lucy, "An iterative technique for the rectification of
           observed distributions", Astron. J. 79, 745 (1974).
    .. [3] D. S. C. Biggs and M. Andrews, "Acceleration of iterative image
           restoration algorithms", Appl. Opt. 36, 1766-1775 (1997).

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf, richardson_lucy
    >>> from scipy.ndimage import convolve
    >>> truth = np.zeros((64, 64), np.float32); truth[32, 32] = 1
    >>> psf = gaussian_psf(4.0)
    >>> blurred = convolve(truth, psf, mode="wrap")
    >>> out = richardson_lucy(blurred, psf, iterations=20, pad=0)
    >>> bool(out[32, 32] > 3 * blurred[32, 32])
    True
    """
    xp = get_xp(image)
    if iterations <= 0:
        return xp.asarray(image, dtype=xp.float32).copy()
    padded, conv, crop = padded_problem(image, psf, pad)
    floor = xp.float32(FLOOR)

    y = padded
    x_prev = v_prev = None
    for it in range(iterations):
        ratio = conv.forward(y)
        xp.maximum(ratio, floor, out=ratio)
        xp.divide(padded, ratio, out=ratio)
        x = conv.adjoint(ratio)
        x *= y
        xp.maximum(x, floor, out=x)
        if not accelerate:
            y = x
            continue
        v = x - y
        xp.maximum(v, floor, out=v)
        if it == 0:
            y = x
        else:
            num = _plane_sum(v_prev * v, psf.ndim, xp)
            den = _plane_sum(v_prev * v_prev, psf.ndim, xp) + 1e-10
            alpha = xp.clip(num / den, 1e-6, 1.0).astype(xp.float32)
            y = x - x_prev
            y *= alpha
            y += x
            xp.maximum(y, floor, out=y)
        x_prev, v_prev = x, v
    out = y[crop]
    return xp.maximum(out, 0).astype(xp.float32, copy=False)
