"""Point spread functions: the published Gaussian model and OTF conversion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import numpy as np

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
):
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
    widths = [float(fwhm)] * 2 if np.ndim(fwhm) == 0 else [float(w) for w in fwhm]
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


def psf_to_otf(psf, shape: Sequence[int], xp: ModuleType = np):
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
