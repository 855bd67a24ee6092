"""Pure array-to-array solvers. Each works on NumPy or CuPy arrays, in float32."""

from .background import estimate_background
from .landweber import landweber
from .psf import gaussian_psf
from .richardson_lucy import richardson_lucy
from .sparse_hessian import sparse_hessian
from .upsample import fourier_upsample, spatial_upsample

__all__ = [
    "estimate_background",
    "fourier_upsample",
    "gaussian_psf",
    "landweber",
    "richardson_lucy",
    "sparse_hessian",
    "spatial_upsample",
]
