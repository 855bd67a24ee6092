"""A straightforward NumPy float64 implementation of sparse deconvolution, for benchmarks.

Written from ``ALGORITHM.md`` (the project's restatement of Zhao et al., Nat.
Biotechnol. 2022) as a stand-in for the published Python code: the same
split-Bregman iteration, solved with **complex** FFTs (``numpy.fft``, one
thread) and a **periodic** boundary, in float64, every step a separate NumPy
expression (no fusion). It is deliberately plain: it is the baseline that
``benchmarks/bench_peers.py`` times bigdecon against, and a check that
bigdecon computes the same thing (away from the edges, where bigdecon's mirror
boundary differs from this periodic one).

Only what the benchmark needs: ``background=0``, no up-sampling, Richardson-Lucy
(accelerated) as step 5, a Gaussian PSF given by its FWHM in pixels.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["sparse_hessian_ref", "richardson_lucy_ref", "sparse_deconvolve_ref", "gaussian_psf_ref"]


# --------------------------------------------------------------------------- finite differences
# fwd(a)[i] = a[i+1] - a[i], zero at the last sample; bwd(a)[i] = a[i] - a[i-1], zero at the first.


def _fwd(a: np.ndarray, axis: int) -> np.ndarray:
    out = np.zeros_like(a)
    n = a.shape[axis]
    if n > 1:
        hi = [slice(None)] * a.ndim
        lo = [slice(None)] * a.ndim
        hi[axis], lo[axis] = slice(1, n), slice(0, n - 1)
        out[tuple(lo)] = a[tuple(hi)] - a[tuple(lo)]
    return out


def _bwd(a: np.ndarray, axis: int) -> np.ndarray:
    out = np.zeros_like(a)
    n = a.shape[axis]
    if n > 1:
        hi = [slice(None)] * a.ndim
        lo = [slice(None)] * a.ndim
        hi[axis], lo[axis] = slice(1, n), slice(0, n - 1)
        out[tuple(hi)] = a[tuple(hi)] - a[tuple(lo)]
    return out


def _terms(tcontinuity: float, coupled: bool):
    """(kind, axes, weight) for the six Hessian terms of a (k, y, x) array."""
    rho = math.sqrt(tcontinuity) if coupled else 0.0
    t = [("second", (2,), 1.0), ("second", (1,), 1.0), ("mixed", (1, 2), 2.0)]
    if rho > 0:
        t += [("second", (0,), rho * rho), ("mixed", (0, 2), 2.0 * rho), ("mixed", (0, 1), 2.0 * rho)]
    return t


def _apply(kind: str, axes, a: np.ndarray) -> np.ndarray:
    if kind == "second":
        return _bwd(_fwd(a, axes[0]), axes[0])
    return _fwd(_fwd(a, axes[0]), axes[1])


def _apply_rhs(kind: str, axes, a: np.ndarray) -> np.ndarray:
    if kind == "second":
        return _bwd(_fwd(a, axes[0]), axes[0])
    return _bwd(_bwd(a, axes[1]), axes[0])


def _symbol(shape, axis: int) -> np.ndarray:
    """``2 - 2 cos(2 pi k / N)`` along ``axis``, broadcastable to ``shape``: |fwd^|^2 of one axis."""
    n = shape[axis]
    s = 2.0 - 2.0 * np.cos(2.0 * np.pi * np.arange(n) / n)
    view = [1] * len(shape)
    view[axis] = n
    return s.reshape(view)


def sparse_hessian_ref(
    f: np.ndarray,
    iterations: int = 100,
    fidelity: float = 150.0,
    sparsity: float = 10.0,
    tcontinuity: float = 0.5,
    mu: float = 1.0,
) -> np.ndarray:
    """Split-Bregman sparse-Hessian reconstruction of a (k, y, x) or (y, x) array; periodic FFT solve."""
    f = np.asarray(f, dtype=np.float64)
    squeeze = f.ndim == 2
    if squeeze:
        f = f[None]
    coupled = f.shape[0] >= 3
    terms = _terms(tcontinuity, coupled)
    shape = f.shape
    denom = np.full(shape, fidelity / mu + sparsity**2, dtype=np.float64)
    for kind, axes, w in terms:
        if kind == "second":
            denom = denom + w * _symbol(shape, axes[0]) ** 2
        else:
            denom = denom + w * _symbol(shape, axes[0]) * _symbol(shape, axes[1])
    d = [np.zeros(shape) for _ in range(len(terms) + 1)]
    b = [np.zeros(shape) for _ in range(len(terms) + 1)]
    g = f.copy()
    for it in range(iterations):
        if it > 0:
            rhs = (fidelity / mu) * f
            for j, (kind, axes, w) in enumerate(terms):
                rhs = rhs + w * _apply_rhs(kind, axes, d[j] - b[j])
            rhs = rhs + sparsity * (d[-1] - b[-1])
            g = np.real(np.fft.ifftn(np.fft.fftn(rhs) / denom))
        for j, (kind, axes, _w) in enumerate(terms):
            q = _apply(kind, axes, g)
            v = q + b[j]
            d[j] = np.sign(v) * np.maximum(np.abs(v) - 1.0 / mu, 0.0)
            b[j] = v - d[j]
        v = g + b[-1]
        d[-1] = np.sign(v) * np.maximum(np.abs(v) - 1.0 / mu, 0.0)
        b[-1] = v - d[-1]
    g = np.maximum(g, 0.0)
    return g[0] if squeeze else g


def gaussian_psf_ref(fwhm: float) -> np.ndarray:
    """The published Gaussian kernel: half-width ceil(sigma sqrt(-2 ln 2e-4)) + 1, sum 1."""
    sigma = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    h = int(math.ceil(sigma * math.sqrt(-2.0 * math.log(0.0002)))) + 1
    x = np.arange(-h, h + 1, dtype=np.float64)
    k = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma**2))
    return k / k.sum()


def _otf(psf: np.ndarray, shape) -> np.ndarray:
    pad = np.zeros(shape, dtype=np.float64)
    pad[: psf.shape[0], : psf.shape[1]] = psf
    pad = np.roll(pad, (-(psf.shape[0] // 2), -(psf.shape[1] // 2)), axis=(0, 1))
    return np.fft.fft2(pad)


def richardson_lucy_ref(
    plane: np.ndarray, psf: np.ndarray, iterations: int, accelerate: bool = True, pad: int | None = None
) -> np.ndarray:
    """Richardson-Lucy of one 2-D plane (Biggs-Andrews acceleration optional), edge padding
    ``floor(min(h, w) / 6)`` by default, complex FFTs, float64."""
    f0 = np.asarray(plane, dtype=np.float64)
    p = int(min(f0.shape) // 6) if pad is None else int(pad)
    f = np.pad(f0, p, mode="edge") if p else f0
    otf = _otf(psf, f.shape)
    H = lambda a: np.real(np.fft.ifft2(np.fft.fft2(a) * otf))  # noqa: E731
    Ht = lambda a: np.real(np.fft.ifft2(np.fft.fft2(a) * np.conj(otf)))  # noqa: E731
    ht1 = Ht(np.ones_like(f))
    y = f.copy()
    x_prev = np.zeros_like(f)
    v_prev = np.zeros_like(f)
    for it in range(iterations):
        x = np.maximum(y * Ht(f / np.maximum(H(y), 1e-6)) / ht1, 1e-6)
        if not accelerate:
            y = x
            continue
        v = np.maximum(x - y, 1e-6)
        if it == 0:
            y = x
        else:
            alpha = np.clip(np.sum(v_prev * v) / (np.sum(v_prev * v_prev) + 1e-10), 1e-6, 1.0)
            y = np.maximum(x + alpha * (x - x_prev), 1e-6)
        x_prev, v_prev = x, v
    y = np.maximum(y, 0.0)
    return y[p : p + f0.shape[0], p : p + f0.shape[1]] if p else y


def sparse_deconvolve_ref(
    image: np.ndarray,
    fwhm: float,
    sparse_iters: int = 100,
    fidelity: float = 150.0,
    sparsity: float = 10.0,
    tcontinuity: float = 0.5,
    deconv_iters: int = 7,
    timings: dict | None = None,
) -> np.ndarray:
    """The whole pipeline with ``background=0``: scale, sparse Hessian, rescale, RL per plane, unscale."""
    import time

    img = np.asarray(image, dtype=np.float64)
    scale = float(img.max())
    f = img / scale
    t0 = time.perf_counter()
    g = sparse_hessian_ref(f, sparse_iters, fidelity, sparsity, tcontinuity) if sparse_iters else f
    t1 = time.perf_counter()
    g = g / g.max()
    psf = gaussian_psf_ref(fwhm)
    if g.ndim == 2:
        out = richardson_lucy_ref(g, psf, deconv_iters)
    else:
        out = np.stack([richardson_lucy_ref(p, psf, deconv_iters) for p in g])
    t2 = time.perf_counter()
    if timings is not None:
        timings.update(sparse_hessian=t1 - t0, deconv=t2 - t1)
    return out * scale
