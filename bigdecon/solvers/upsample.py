"""Two-fold up-sampling in y and x (step 3 of sparse deconvolution)."""

from __future__ import annotations

from .._backend import fft_module, fft_workers, get_xp
from .._types import Array, ArrayLike

__all__ = ["fourier_upsample", "spatial_upsample", "upsample"]


def fourier_upsample(image: Array, factor: int = 2, *, pad: int | None = None) -> Array:
    """Fourier (band-limited) interpolation of each ``(y, x)`` plane.

    The plane is mirror-padded (half-sample symmetric) so that the periodic
    transform does not wrap one edge onto the other, its real spectrum is
    zero-padded ``factor`` times, and the padding is cropped off again.

    Parameters
    ----------
    image : ndarray
        2-D ``(y, x)`` or 3-D ``(k, y, x)``; NumPy or CuPy.
    factor : int
        Up-sampling factor in y and x (default 2).
    pad : int, optional
        Mirror padding on each side in input pixels; default a quarter of the
        smaller side, at least 8.

    Returns
    -------
    ndarray of float32 with y and x ``factor`` times larger, same intensity scale.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import fourier_upsample
    >>> yy, xx = np.mgrid[:32, :32]
    >>> image = np.cos(2 * np.pi * xx / 16).astype(np.float32)
    >>> up = fourier_upsample(image)
    >>> up.shape, bool(np.allclose(up[::2, ::2], image, atol=1e-5))  # the input's samples are kept
    ((64, 64), True)
    """
    xp = get_xp(image)
    fft = fft_module(xp)
    kw = fft_workers(xp, 4 * int(image.size))
    f = xp.asarray(image, dtype=xp.float32)
    h, w = f.shape[-2:]
    p = max(8, min(h, w) // 4) if pad is None else int(pad)
    spec_pad = [(0, 0)] * (f.ndim - 2) + [(p, p), (p, p)]
    padded = xp.pad(f, spec_pad, mode="symmetric")
    ph, pw = padded.shape[-2:]
    big_h, big_w = ph * factor, pw * factor
    spec = fft.rfftn(padded, axes=(-2, -1), **kw)
    big = xp.zeros(f.shape[:-2] + (big_h, big_w // 2 + 1), dtype=spec.dtype)
    # Rows: non-negative frequencies on top, negative ones at the bottom. An even
    # size's Nyquist row/column stands for +N/2 and -N/2 at once: split it in two.
    pos, neg = (ph + 1) // 2, ph // 2
    cols = pw // 2 + 1
    big[..., :pos, :cols] = spec[..., :pos, :]
    big[..., big_h - neg :, :cols] = spec[..., ph - neg :, :]
    if ph % 2 == 0:
        big[..., big_h - neg, :cols] *= 0.5
        big[..., neg, :cols] = big[..., big_h - neg, :cols]
    if pw % 2 == 0:
        big[..., :, cols - 1] *= 0.5
    out = fft.irfftn(big, s=(big_h, big_w), axes=(-2, -1), **kw)
    out *= factor * factor  # keep the intensity scale
    crop = (Ellipsis, slice(p * factor, p * factor + h * factor), slice(p * factor, p * factor + w * factor))
    return out[crop].astype(xp.float32)


def spatial_upsample(image: ArrayLike, factor: int = 2) -> Array:
    """Place each pixel at every ``factor``-th position in y and x, zeros between.

    The published mode 2: the sparse-Hessian step then fills the gaps (lower
    fidelity and sparsity with it).

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import spatial_upsample
    >>> spatial_upsample(np.ones((2, 2), np.float32))
    array([[1., 0., 1., 0.],
           [0., 0., 0., 0.],
           [1., 0., 1., 0.],
           [0., 0., 0., 0.]], dtype=float32)
    """
    xp = get_xp(image)
    f = xp.asarray(image, dtype=xp.float32)
    out = xp.zeros(f.shape[:-2] + (f.shape[-2] * factor, f.shape[-1] * factor), dtype=xp.float32)
    out[..., ::factor, ::factor] = f
    return out


def upsample(image: ArrayLike, mode: int) -> Array:
    """Up-sampling mode 0 (none), 1 (Fourier) or 2 (spatial)."""
    if mode == 0:
        return image
    if mode == 1:
        return fourier_upsample(image)
    if mode == 2:
        return spatial_upsample(image)
    raise ValueError(f"up_sample must be 0, 1 or 2, got {mode!r}")
