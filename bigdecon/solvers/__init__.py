"""Pure array-to-array solvers. Each works on NumPy or CuPy arrays, in float32."""

from .background import estimate_background
from .deskew import deskew, skew_psf
from .landweber import landweber
from .psf import confocal_psf, gaussian_psf, lightsheet_psf, psf_fwhm, psf_size_for, psf_to_otf, widefield_psf
from .richardson_lucy import richardson_lucy
from .sparse_hessian import sparse_hessian
from .upsample import fourier_upsample, spatial_upsample
from .wiener_butterworth import mirror_backprojector, rl_wiener_butterworth, wiener_butterworth_backprojector

__all__ = [
    "confocal_psf",
    "deskew",
    "estimate_background",
    "fourier_upsample",
    "gaussian_psf",
    "landweber",
    "lightsheet_psf",
    "psf_fwhm",
    "psf_size_for",
    "psf_to_otf",
    "richardson_lucy",
    "rl_wiener_butterworth",
    "skew_psf",
    "sparse_hessian",
    "spatial_upsample",
    "widefield_psf",
    "wiener_butterworth_backprojector",
    "mirror_backprojector",
]
