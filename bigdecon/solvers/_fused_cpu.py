"""Fused CPU kernels for the split-Bregman shrink step (Numba).

The NumPy formulation of one shrink step makes about ten passes over memory per
penalty term; these kernels make two (shrink, then accumulate the right-hand
side), threaded over rows. They compute exactly what ``_accumulate`` in
``sparse_hessian.py`` computes with NumPy (the tests compare the two). Without
Numba the NumPy path runs instead.

Arrays are C-contiguous float32 ``(k, y, x)``. Neumann (mirror) ends come from
clamping neighbour indices: ``a[min(i+1, n-1)] - 2 a[i] + a[max(i-1, 0)]`` is
the second difference of the mirrored array, and ``a[min(i+1, n-1)] - a[i]``
is the forward difference that is zero at the last sample.
"""

from __future__ import annotations

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # the NumPy path is used
    numba = None

__all__ = ["available", "shrink_second", "accumulate_second", "shrink_mixed", "accumulate_mixed", "shrink_sparse"]

ONE = np.float32(1.0)
TWO = np.float32(2.0)


def available() -> bool:
    """True when Numba is installed."""
    return numba is not None


def use_threads(n: int) -> None:
    """Cap the kernels' threads (per calling thread), e.g. to 1 inside a Dask task."""
    if numba is not None:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


if numba is not None:

    @njit(parallel=True, cache=True, nogil=True)
    def _shrink_second(g, b, u, axis):
        n_k, n_y, n_x = g.shape
        for r in prange(n_k * n_y):
            k = r // n_y
            y = r - k * n_y
            bb = b[k, y]
            uu = u[k, y]
            c = g[k, y]
            if axis == 2:
                for x in range(n_x):
                    xl = x - 1 if x > 0 else 0
                    xh = x + 1 if x < n_x - 1 else n_x - 1
                    t = c[xh] - TWO * c[x] + c[xl] + bb[x]
                    bn = min(max(t, -ONE), ONE)
                    bb[x] = bn
                    uu[x] = t - TWO * bn
            else:
                if axis == 1:
                    lo = g[k, y - 1 if y > 0 else 0]
                    hi = g[k, y + 1 if y < n_y - 1 else n_y - 1]
                else:
                    lo = g[k - 1 if k > 0 else 0, y]
                    hi = g[k + 1 if k < n_k - 1 else n_k - 1, y]
                for x in range(n_x):
                    t = hi[x] - TWO * c[x] + lo[x] + bb[x]
                    bn = min(max(t, -ONE), ONE)
                    bb[x] = bn
                    uu[x] = t - TWO * bn

    @njit(parallel=True, cache=True, nogil=True)
    def _accumulate_second(u, rhs, w, axis):
        n_k, n_y, n_x = u.shape
        for r in prange(n_k * n_y):
            k = r // n_y
            y = r - k * n_y
            out = rhs[k, y]
            c = u[k, y]
            if axis == 2:
                for x in range(n_x):
                    xl = x - 1 if x > 0 else 0
                    xh = x + 1 if x < n_x - 1 else n_x - 1
                    out[x] += w * (c[xh] - TWO * c[x] + c[xl])
            else:
                if axis == 1:
                    lo = u[k, y - 1 if y > 0 else 0]
                    hi = u[k, y + 1 if y < n_y - 1 else n_y - 1]
                else:
                    lo = u[k - 1 if k > 0 else 0, y]
                    hi = u[k + 1 if k < n_k - 1 else n_k - 1, y]
                for x in range(n_x):
                    out[x] += w * (hi[x] - TWO * c[x] + lo[x])

    @njit(parallel=True, cache=True, nogil=True)
    def _shrink_mixed(g, b, u, pair):
        # pair 0: (y, x); 1: (k, x); 2: (k, y).  D = fwd_b(fwd_a(g)).
        n_k, n_y, n_x = g.shape
        for r in prange(n_k * n_y):
            k = r // n_y
            y = r - k * n_y
            bb = b[k, y]
            uu = u[k, y]
            if pair == 2:
                kh = k + 1 if k < n_k - 1 else n_k - 1
                yh = y + 1 if y < n_y - 1 else n_y - 1
                r00 = g[k, y]
                r01 = g[k, yh]
                r10 = g[kh, y]
                r11 = g[kh, yh]
                for x in range(n_x):
                    t = (r11[x] - r10[x]) - (r01[x] - r00[x]) + bb[x]
                    bn = min(max(t, -ONE), ONE)
                    bb[x] = bn
                    uu[x] = t - TWO * bn
            else:
                r0 = g[k, y]
                if pair == 0:
                    r1 = g[k, y + 1 if y < n_y - 1 else n_y - 1]
                else:
                    r1 = g[k + 1 if k < n_k - 1 else n_k - 1, y]
                for x in range(n_x):
                    xh = x + 1 if x < n_x - 1 else n_x - 1
                    t = (r1[xh] - r1[x]) - (r0[xh] - r0[x]) + bb[x]
                    bn = min(max(t, -ONE), ONE)
                    bb[x] = bn
                    uu[x] = t - TWO * bn

    @njit(parallel=True, cache=True, nogil=True)
    def _accumulate_mixed(u, rhs, w, pair):
        # bwd_a(bwd_b(u)), the sample before the first taken as zero.
        n_k, n_y, n_x = u.shape
        for r in prange(n_k * n_y):
            k = r // n_y
            y = r - k * n_y
            out = rhs[k, y]
            c = u[k, y]
            if pair == 2:
                has_k = k > 0
                has_y = y > 0
                for x in range(n_x):
                    v = c[x]
                    if has_k:
                        v -= u[k - 1, y, x]
                    if has_y:
                        v -= u[k, y - 1, x]
                    if has_k and has_y:
                        v += u[k - 1, y - 1, x]
                    out[x] += w * v
            else:
                has_prev = (y > 0) if pair == 0 else (k > 0)
                if has_prev:
                    p = u[k, y - 1] if pair == 0 else u[k - 1, y]
                    out[0] += w * (c[0] - p[0])
                    for x in range(1, n_x):
                        out[x] += w * ((c[x] - c[x - 1]) - (p[x] - p[x - 1]))
                else:
                    out[0] += w * c[0]
                    for x in range(1, n_x):
                        out[x] += w * (c[x] - c[x - 1])

    @njit(parallel=True, cache=True, nogil=True)
    def _shrink_sparse(g, b, rhs, w):
        n_k, n_y, n_x = g.shape
        for r in prange(n_k * n_y):
            k = r // n_y
            y = r - k * n_y
            c = g[k, y]
            bb = b[k, y]
            out = rhs[k, y]
            for x in range(n_x):
                t = c[x] + bb[x]
                bn = min(max(t, -ONE), ONE)
                bb[x] = bn
                out[x] += w * (t - TWO * bn)


_PAIRS = {(1, 2): 0, (0, 2): 1, (0, 1): 2}


def shrink_second(g, b, u, axis: int) -> None:
    """``t = bwd(fwd(g)) + b`` along ``axis``; ``b = clip(t, -1, 1)``; ``u = t - 2 b``."""
    _shrink_second(g, b, u, axis)


def accumulate_second(u, rhs, weight: float, axis: int) -> None:
    """``rhs += weight * bwd(fwd(u))`` along ``axis``."""
    _accumulate_second(u, rhs, np.float32(weight), axis)


def shrink_mixed(g, b, u, axes: tuple[int, int]) -> None:
    """``t = fwd_b(fwd_a(g)) + b``; ``b = clip(t, -1, 1)``; ``u = t - 2 b``."""
    _shrink_mixed(g, b, u, _PAIRS[tuple(axes)])


def accumulate_mixed(u, rhs, weight: float, axes: tuple[int, int]) -> None:
    """``rhs += weight * bwd_a(bwd_b(u))``."""
    _accumulate_mixed(u, rhs, np.float32(weight), _PAIRS[tuple(axes)])


def shrink_sparse(g, b, rhs, weight: float) -> None:
    """Identity term: ``t = g + b``; ``b = clip(t, -1, 1)``; ``rhs += weight (t - 2 b)``."""
    _shrink_sparse(g, b, rhs, np.float32(weight))
