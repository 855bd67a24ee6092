"""Wavelet background estimation (step 2 of sparse deconvolution)."""

from __future__ import annotations

import warnings

import numpy as np

from .._backend import get_xp, to_numpy
from .._types import Array, ArrayLike

__all__ = ["estimate_background", "wavelet_lowpass", "BACKGROUND_MODES", "BACKGROUND_REACH"]

#: What each mode means (published): weak/strong background, high/low SNR.
BACKGROUND_MODES = {
    0: "none",
    1: "weak background, high SNR",
    2: "strong background, high SNR",
    3: "weak background, low SNR",
    4: "medium background, low SNR",
    5: "strong background, low SNR",
}

_WAVELET = "db6"
_LEVELS = 7
_ITERATIONS = 3
#: Seven db6 levels reach about 2**7 * 11 pixels: not local at chunk scale.
BACKGROUND_REACH = 2**_LEVELS * 11


def wavelet_lowpass(plane: np.ndarray) -> np.ndarray:
    """Keep only the approximation band of a 7-level db6 decomposition.

    PyWavelets' default ``symmetric`` extension; the reconstruction is cropped
    to the plane (it can be a pixel larger for odd sizes).
    """
    import pywt

    with warnings.catch_warnings():
        # Seven levels on a small plane: PyWavelets warns of boundary effects, as published.
        warnings.simplefilter("ignore", UserWarning)
        coeffs = pywt.wavedec2(plane, _WAVELET, level=_LEVELS)
    coeffs = [coeffs[0]] + [tuple(np.zeros_like(d) for d in detail) for detail in coeffs[1:]]
    low = pywt.waverec2(coeffs, _WAVELET)
    return low[: plane.shape[0], : plane.shape[1]].astype(np.float32, copy=False)


def _plane_background(plane: np.ndarray) -> np.ndarray:
    """Iterated low-pass: pixels above ``background + sqrt(|value|)/2`` are pulled down."""
    res = plane.astype(np.float32, copy=True)
    background = res
    for it in range(_ITERATIONS):
        background = wavelet_lowpass(res)
        if it == _ITERATIONS - 1:
            break
        eps = np.sqrt(np.abs(res)) / 2
        bright = res > background + eps
        res[bright] = background[bright] + eps[bright]
    return background


def estimate_background(image: ArrayLike, mode: int = 1, *, mean: float | None = None) -> Array:
    """Estimate the smooth background of each ``(y, x)`` plane.

    Parameters
    ----------
    image : ndarray
        2-D ``(y, x)`` or 3-D ``(k, y, x)`` data normalised to max 1 (the
        published step 1). NumPy or CuPy (the wavelets run on the host).
    mode : int
        0 none; 1 weak background, high SNR (estimate on ``image / 2.5``);
        2 strong background, high SNR (``image / 2``); 3, 4, 5 low SNR with
        weak, medium, strong background (estimate on a copy clipped at
        ``mean / 2.5``, ``mean / 2``, ``mean``).
    mean : float, optional
        Mean of the whole normalised data set, for modes 3-5. A chunked run
        passes the global value; by default the mean of ``image``.

    Returns
    -------
    background : ndarray of float32, same shape and array type as ``image``
        Subtract it from the image and clip at 0.

    References
    ----------
    .. [1] W. Zhao et al., Nat. Biotechnol. 40, 606-617 (2022), background
           estimation after Galloway et al. (2009).

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import estimate_background
    >>> yy, xx = np.mgrid[:128, :128]
    >>> image = (0.3 + 0.2 * xx / 128).astype(np.float32)
    >>> image[64, 64] = 1.0
    >>> bg = estimate_background(image, mode=2)
    >>> bool(bg[64, 64] < 0.5)
    True
    """
    if mode not in BACKGROUND_MODES:
        raise ValueError(f"background must be one of 0-5, got {mode!r}")
    xp = get_xp(image)
    host = to_numpy(image).astype(np.float32, copy=False)
    if mode == 0:
        return xp.zeros(host.shape, dtype=xp.float32)
    if mode in (1, 2):
        source = host / np.float32(2.5 if mode == 1 else 2.0)
    else:
        m = float(host.mean(dtype=np.float64)) if mean is None else float(mean)
        limit = np.float32(m / {3: 2.5, 4: 2.0, 5: 1.0}[mode])
        source = np.minimum(host, limit)  # a clipped copy; the image itself is untouched
    planes = source.reshape((-1,) + source.shape[-2:])
    out = np.stack([_plane_background(p) for p in planes]).reshape(host.shape)
    return xp.asarray(out)
