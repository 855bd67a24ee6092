"""The stages of sparse deconvolution, with every global statistic an argument.

None of the stages looks at the maximum or mean of the block it is given.
:func:`bigdecon.sparse_deconvolve` on a NumPy/CuPy array computes the
statistics of that array and runs the stages on it whole; the passes
(:mod:`bigdecon.passes`) compute them over the whole data set and run the same
stages block by block.

Stage 1 ``preprocess``: ``f = raw / scale``, background subtracted and clipped,
up-sampled: ``h``. Because up-sampling is linear, the published two
renormalisations (after the background, after up-sampling) reduce to one
division by ``max(h)`` over the data set.
Stage 2 ``sparse_stage``: ``g = max(sparse_hessian(h / max(h)), 0)``.
Stage 3 ``deconv_stage``: ``scale * RL(g / max(g))`` (Richardson-Lucy, Landweber
or Richardson-Lucy with the Wiener-Butterworth back projector, by ``deconv_type``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backend import get_xp
from .errors import InputError
from .params import Params
from .solvers.background import estimate_background
from .solvers.landweber import landweber
from .solvers.psf import energy_crop, gaussian_psf
from .solvers.richardson_lucy import psf_half_support, published_pad, richardson_lucy
from .solvers.sparse_hessian import sparse_hessian
from .solvers.upsample import upsample
from .solvers.wiener_butterworth import rl_wiener_butterworth

__all__ = [
    "check_image",
    "deconv_kind",
    "deconv_pad",
    "deconv_stage",
    "is_coupled",
    "output_psf",
    "preprocess",
    "sparse_stage",
]


def is_coupled(n_planes: int, params: Params) -> bool:
    """Whether the third axis enters the Hessian: rho > 0 and >= 3 planes in the data set."""
    return n_planes >= 3 and params.tcontinuity > 0


def preprocess(raw, scale: float, mean: float, params: Params):
    """Steps 1-3 on whole ``(y, x)`` planes: scale, background, up-sampling.

    Parameters
    ----------
    raw : ndarray
        ``(y, x)`` or ``(k, y, x)``, any real dtype.
    scale : float
        Maximum of the raw data set.
    mean : float
        Mean of the raw data set divided by ``scale`` (background modes 3-5).
    params : Params

    Returns
    -------
    h : ndarray of float32 (y and x doubled when up-sampling)
    """
    xp = get_xp(raw)
    f = xp.asarray(raw, dtype=xp.float32) * xp.float32(1.0 / scale)
    if params.background:
        f -= estimate_background(f, params.background, mean=mean)
        xp.maximum(f, 0, out=f)
    return upsample(f, params.up_sample)


def sparse_stage(h, norm: float, params: Params, coupled: bool, faces=None):
    """Step 4 on a block: ``max(sparse_hessian(h / norm), 0)``; ``h / norm`` when it is off.

    ``faces``: per solver axis, whether the block's low and high sides are faces of
    the data set (default: all, a whole array), see :func:`sparse_hessian`.
    """
    xp = get_xp(h)
    f = xp.asarray(h, dtype=xp.float32) * xp.float32(1.0 / norm)
    if not params.sparse_iters:
        return f
    return sparse_hessian(
        f,
        iterations=params.sparse_iters,
        fidelity=params.fidelity,
        sparsity=params.sparsity,
        tcontinuity=params.tcontinuity,
        coupled=coupled,
        faces=faces,
    )


def output_psf(params: Params, ndim: int) -> np.ndarray | None:
    """The PSF of step 5 in output pixels (FWHM doubled in y and x after up-sampling).

    A 3-D PSF given as an array is cut to the box holding ``1 - ENERGY_EPS`` of its
    light (:func:`~bigdecon.solvers.psf.energy_crop`); a Gaussian's box is its light already.
    """
    if not params.deconvolves:
        return None
    factor = 2 if params.up_sample else 1
    if params.psf is not None:
        psf = np.asarray(params.psf, dtype=np.float32)
        if factor > 1:
            from scipy.ndimage import zoom

            psf = np.clip(zoom(psf, [1] * (psf.ndim - 2) + [factor, factor], order=1), 0, None)
        psf = (psf / psf.sum()).astype(np.float32)
        # A 3-D PSF given as an array (a file, an optics model) is cut to where its light is: halo,
        # face padding and memory follow its light, not its box. 2-D keeps the published step.
        return energy_crop(psf) if psf.ndim == 3 else psf
    assert params.fwhm is not None  # Params requires fwhm or psf for step 5
    fwhm = list(params.fwhm)
    fwhm[-2:] = [w * factor for w in fwhm[-2:]]
    if len(fwhm) == 3 and ndim < 3:
        raise InputError("a 3-value fwhm (z, y, x) needs a 3-D image")
    return gaussian_psf(fwhm)


def deconv_pad(shape, psf) -> tuple[int, ...]:
    """Edge padding of step 5: the published ``floor(min(h, w) / 6)`` in y and x
    for a 2-D PSF; a 3-D PSF's half-support ``n // 2`` on every axis (the solver
    takes that padding as object, not data, and rounds up to fast transform lengths). A symmetric 3-D
    PSF (every Gaussian and optical model) takes the solver's unpadded mirror
    (DCT-II) path, which ignores this. Depends only on whole-plane sizes and the
    PSF, so whole-array and chunked runs pad identically."""
    if psf.ndim == 3:
        return psf_half_support(psf.shape)
    yx = published_pad(shape)
    return (yx, yx)


def deconv_kind(params: Params) -> str:
    """The iteration of 3-D step 5, as :func:`deconv_halo` names it.

    ``"rl-schedule"`` for Richardson-Lucy (deconv_type 1: accelerated, with the
    Nesterov alpha schedule in 3-D), ``"landweber"`` for deconv_type 2, ``"wb"``
    for the Wiener-Butterworth back projector (deconv_type 3).
    """
    return {1: "rl-schedule", 3: "wb"}.get(params.deconv_type, "landweber")


def deconv_stage(g, norm: float, scale: float, params: Params, psf, pad=None, snapshots: dict | None = None):
    """Steps 5-6: ``scale * RL(g / norm)``.

    With a 2-D PSF on whole planes, the published way (adaptive alpha). With a
    3-D PSF on a whole volume or on a block of one: the accelerated
    Richardson-Lucy then extrapolates with the Nesterov schedule
    (``alpha="schedule"``), which depends on the iteration number only, so
    blocks with a halo compute what the whole volume computes; ``pad`` (one
    ``(low, high)`` pair per axis) is a block's edge padding, only on the sides
    at a face of the data set (default: every face, :func:`deconv_pad`).
    ``snapshots`` (Richardson-Lucy only): see :func:`richardson_lucy`; filled in output units.
    """
    xp = get_xp(g)
    f = xp.asarray(g, dtype=xp.float32) * xp.float32(1.0 / norm)
    if params.deconvolves:
        if pad is None:
            pad = deconv_pad(f.shape, psf)
        psf = xp.asarray(psf)
        if params.deconv_type == 3:
            f = rl_wiener_butterworth(
                f,
                psf,
                params.deconv_iters,
                pad=pad,
                alpha=params.wb_alpha,
                beta=params.wb_beta,
                order=params.wb_order,
            )
        elif params.deconv_type == 1:
            alpha = "schedule" if psf.ndim == 3 else "adaptive"
            f = richardson_lucy(f, psf, params.deconv_iters, pad=pad, alpha=alpha, snapshots=snapshots)
            for v in (snapshots or {}).values():
                if v is not None:
                    v *= xp.float32(scale)
        else:
            f = landweber(f, psf, params.deconv_iters, pad=pad)
    f *= xp.float32(scale)
    return f


def check_image(image: Any, params: Params) -> None:
    """Shape checks at the public edge (values are checked where they are reduced)."""
    if image.ndim not in (2, 3):
        raise InputError(
            f"image must be 2-D (y, x) or 3-D (t or z, y, x), got {image.ndim}-D with shape {tuple(image.shape)}"
        )
    if min(image.shape[-2:]) < 4:
        raise InputError(f"image planes must be at least 4x4 pixels, got {tuple(image.shape[-2:])}")
    if not np.issubdtype(np.dtype(image.dtype), np.number) or np.issubdtype(np.dtype(image.dtype), np.complexfloating):
        raise InputError(f"image must hold real numbers, got dtype {image.dtype}")
    if params.deconvolves:
        psf = output_psf(params, image.ndim)
        assert psf is not None  # step 5 runs
        out_shape = list(image.shape)
        if params.up_sample:
            out_shape[-2:] = [2 * s for s in out_shape[-2:]]
        plane = [s + 2 * published_pad(out_shape) for s in out_shape[-2:]]
        if psf.ndim > image.ndim or any(p > s for p, s in zip(psf.shape[-2:], plane)):
            raise InputError(
                f"PSF of shape {tuple(psf.shape)} is larger than the image {tuple(image.shape)}: "
                "check fwhm (in pixels) or psf"
            )
