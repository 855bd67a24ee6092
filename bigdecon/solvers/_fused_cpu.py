"""Fused CPU kernels for one split-Bregman iteration of the sparse Hessian (Numba).

One iteration is: the linear solve (DCTs, scipy), then for every penalty term
``t = D_j g + b_j``, ``b_j = clip(t, -1, 1)``, ``rhs += w_j D_j^T (t - 2 b_j)``.
The NumPy formulation makes about ten passes over memory per term; here all
terms together take two passes, threaded over rows, with no temporaries:

* :func:`shrink` reads ``g`` once (its neighbours come from cache) and updates
  each term's state in place;
* :func:`accumulate` reads the states with their neighbours and ``f``, and
  writes the right-hand side of the next solve (it may overwrite ``g``).

The state kept per term is ``t`` itself, not ``b``: ``b = clip(t, -1, 1)`` and
``d - b = t - 2 clip(t, -1, 1)`` both follow from it, so one array per term is
enough where ``b`` and ``d - b`` would need two, and the second pass recomputes
``d - b`` at each neighbour instead of reading a stored copy. The arithmetic,
and its order, is that of ``_accumulate`` in ``sparse_hessian.py`` (the tests
compare the two). Without Numba the NumPy path runs instead.

Arrays are C-contiguous float32 ``(k, y, x)``. Neumann (mirror) ends come from
clamped neighbours: ``a[min(i+1, n-1)] - 2 a[i] + a[max(i-1, 0)]`` is the second
difference of the mirrored array, and ``a[min(i+1, n-1)] - a[i]`` is the forward
difference that is zero at the last sample. Each row peels its first and last
sample so that the loop between them has no index arithmetic and vectorises.
"""

from __future__ import annotations

from typing import Any

import numpy as np

numba: Any
try:
    import numba
    from numba import njit, prange
except ImportError:  # the NumPy path is used
    numba = None

__all__ = ["available", "use_threads", "TERM_ORDER", "shrink", "accumulate", "solve_short_k"]

ONE = np.float32(1.0)
TWO = np.float32(2.0)

# The state array holds the terms in this order (the uncoupled case stops after
# "xy" and keeps "sparse" last); it is sparse_hessian_terms' order plus sparsity.
TERM_ORDER = ("xx", "yy", "xy", "kk", "xk", "yk", "sparse")


def available() -> bool:
    """True when Numba is installed."""
    return numba is not None


def use_threads(n: int) -> None:
    """Cap the kernels' threads (per calling thread), e.g. to 1 inside a Dask task."""
    if numba is not None:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


if numba is not None:
    # nnan, ninf: min/max instructions for the clip; no reassociation, so results are unchanged.
    _opts: dict[str, Any] = dict(parallel=True, cache=True, nogil=True, error_model="numpy", fastmath={"nnan", "ninf"})

    @njit(inline="always", fastmath={"nnan", "ninf"})
    def _clip(v):
        c = v if v < ONE else ONE
        return c if c > -ONE else -ONE

    @njit(inline="always", fastmath={"nnan", "ninf"})
    def _u(v):
        # d - b for the state t: shrink(t) - clip(t) = t - 2 clip(t)
        return v - TWO * _clip(v)

    @njit(inline="always", fastmath={"nnan", "ninf"})
    def _second_row(s, c, lo, hi):
        # s = (hi - 2 c + lo) + clip(s), hi/lo the neighbour rows along y or k
        for x in range(s.shape[0]):
            s[x] = hi[x] - TWO * c[x] + lo[x] + _clip(s[x])

    @njit(inline="always", fastmath={"nnan", "ninf"})
    def _mixed_row(s, r0, r1):
        # s = (r1[x+1] - r1[x]) - (r0[x+1] - r0[x]) + clip(s); zero difference at the last x
        n = s.shape[0]
        for x in range(n - 1):
            s[x] = (r1[x + 1] - r1[x]) - (r0[x + 1] - r0[x]) + _clip(s[x])
        s[n - 1] = (r1[n - 1] - r1[n - 1]) - (r0[n - 1] - r0[n - 1]) + _clip(s[n - 1])

    @njit(**_opts)
    def _shrink(g, s, coupled):
        n_k, n_y, n_x = g.shape
        last = s.shape[0] - 1
        for r in prange(n_k * n_y):
            k = r // n_y
            y = r - k * n_y
            yl = y - 1 if y > 0 else 0
            yh = y + 1 if y < n_y - 1 else n_y - 1
            c = g[k, y]
            # xx: second difference along x, ends peeled
            o = s[0, k, y]
            if n_x == 1:
                o[0] = c[0] - TWO * c[0] + c[0] + _clip(o[0])
            else:
                o[0] = c[1] - TWO * c[0] + c[0] + _clip(o[0])
                for x in range(1, n_x - 1):
                    o[x] = c[x + 1] - TWO * c[x] + c[x - 1] + _clip(o[x])
                m = n_x - 1
                o[m] = c[m] - TWO * c[m] + c[m - 1] + _clip(o[m])
            _second_row(s[1, k, y], c, g[k, yl], g[k, yh])  # yy
            _mixed_row(s[2, k, y], c, g[k, yh])  # xy = fwd_x(fwd_y g)
            if coupled:
                kl = k - 1 if k > 0 else 0
                kh = k + 1 if k < n_k - 1 else n_k - 1
                _second_row(s[3, k, y], c, g[kl, y], g[kh, y])  # kk
                _mixed_row(s[4, k, y], c, g[kh, y])  # xk
                # yk = fwd_y(fwd_k g): (r11 - r10) - (r01 - r00)
                o = s[5, k, y]
                r01 = g[k, yh]
                r10 = g[kh, y]
                r11 = g[kh, yh]
                for x in range(n_x):
                    o[x] = (r11[x] - r10[x]) - (r01[x] - c[x]) + _clip(o[x])
            o = s[last, k, y]  # sparsity: D = identity
            for x in range(n_x):
                o[x] = c[x] + _clip(o[x])

    @njit(inline="always", fastmath={"nnan", "ninf"})
    def _u_row(dst, src):
        for x in range(dst.shape[0]):
            dst[x] = _u(src[x])

    @njit(inline="always", fastmath={"nnan", "ninf"})
    def _add_second(out, w, c, lo, hi):
        for x in range(out.shape[0]):
            out[x] += w * (hi[x] - TWO * c[x] + lo[x])

    @njit(inline="always", fastmath={"nnan", "ninf"})
    def _add_mixed(out, w, c, p, has_prev):
        # bwd_x(bwd_a(u)) with p the previous row along a; samples before the first are zero
        n = out.shape[0]
        if has_prev:
            out[0] += w * (c[0] - p[0])
            for x in range(1, n):
                out[x] += w * ((c[x] - c[x - 1]) - (p[x] - p[x - 1]))
        else:
            out[0] += w * c[0]
            for x in range(1, n):
                out[x] += w * (c[x] - c[x - 1])

    # Rows of u = t - 2 clip(t) kept per thread while it walks down y (see _accumulate).
    _YY, _XY, _YK, _YK1, _KK, _XK, _XX, _SP = 0, 3, 5, 7, 9, 12, 14, 15

    @njit(**_opts)
    def _accumulate(s, f, fidelity, w, rhs, coupled, chunks):
        # Each thread walks a run of rows in order and keeps the u rows the y
        # stencils share: row y+1 of yy, row y of xy and yk are computed once and
        # reused by the next row, so d - b is evaluated ~11 times per voxel, not 22.
        n_k, n_y, n_x = f.shape
        last = s.shape[0] - 1
        rows = n_k * n_y
        per = (rows + chunks - 1) // chunks
        for ch in prange(chunks):
            u = np.empty((16, n_x), dtype=np.float32)
            yy0, yy1, yy2 = _YY, _YY + 1, _YY + 2  # rows y-1, y, y+1 of yy
            xy0, xy1 = _XY, _XY + 1  # rows y-1, y of xy
            yk0, yk1 = _YK, _YK + 1  # rows y-1, y of yk in plane k
            yl0, yl1 = _YK1, _YK1 + 1  # rows y-1, y of yk in plane k-1
            r0 = ch * per
            for r in range(r0, min(rows, r0 + per)):
                k = r // n_y
                y = r - k * n_y
                yh = y + 1 if y < n_y - 1 else n_y - 1
                if r > r0 and y > 0:  # the previous row was y-1 of this plane: roll
                    yy0, yy1, yy2 = yy1, yy2, yy0
                    _u_row(u[yy2], s[1, k, yh])
                    xy0, xy1 = xy1, xy0
                    _u_row(u[xy1], s[2, k, y])
                    if coupled:
                        yk0, yk1 = yk1, yk0
                        _u_row(u[yk1], s[5, k, y])
                        if k > 0:
                            yl0, yl1 = yl1, yl0
                            _u_row(u[yl1], s[5, k - 1, y])
                else:
                    yl = y - 1 if y > 0 else 0
                    _u_row(u[yy0], s[1, k, yl])
                    _u_row(u[yy1], s[1, k, y])
                    _u_row(u[yy2], s[1, k, yh])
                    _u_row(u[xy0], s[2, k, yl])
                    _u_row(u[xy1], s[2, k, y])
                    if coupled:
                        _u_row(u[yk0], s[5, k, yl])
                        _u_row(u[yk1], s[5, k, y])
                        if k > 0:
                            _u_row(u[yl0], s[5, k - 1, yl])
                            _u_row(u[yl1], s[5, k - 1, y])
                out = rhs[k, y]
                ff = f[k, y]
                for x in range(n_x):
                    out[x] = ff[x] * fidelity
                # xx, ends peeled
                c = u[_XX]
                _u_row(c, s[0, k, y])
                w0 = w[0]
                if n_x == 1:
                    out[0] += w0 * (c[0] - TWO * c[0] + c[0])
                else:
                    out[0] += w0 * (c[1] - TWO * c[0] + c[0])
                    for x in range(1, n_x - 1):
                        out[x] += w0 * (c[x + 1] - TWO * c[x] + c[x - 1])
                    m = n_x - 1
                    out[m] += w0 * (c[m] - TWO * c[m] + c[m - 1])
                _add_second(out, w[1], u[yy1], u[yy0], u[yy2])  # yy
                _add_mixed(out, w[2], u[xy1], u[xy0], y > 0)  # xy
                if coupled:
                    kl = k - 1 if k > 0 else 0
                    kh = k + 1 if k < n_k - 1 else n_k - 1
                    _u_row(u[_KK], s[3, kl, y])
                    _u_row(u[_KK + 1], s[3, k, y])
                    _u_row(u[_KK + 2], s[3, kh, y])
                    _add_second(out, w[3], u[_KK + 1], u[_KK], u[_KK + 2])  # kk
                    _u_row(u[_XK], s[4, k, y])
                    if k > 0:
                        _u_row(u[_XK + 1], s[4, k - 1, y])
                    _add_mixed(out, w[4], u[_XK], u[_XK + 1], k > 0)  # xk
                    # yk: bwd_k(bwd_y(u)): u - u[k-1] - u[y-1] + u[k-1, y-1]
                    c = u[yk1]
                    w5 = w[5]
                    if k > 0 and y > 0:
                        a, b, d = u[yl1], u[yk0], u[yl0]
                        for x in range(n_x):
                            out[x] += w5 * (c[x] - a[x] - b[x] + d[x])
                    elif k > 0 or y > 0:
                        a = u[yl1] if k > 0 else u[yk0]
                        for x in range(n_x):
                            out[x] += w5 * (c[x] - a[x])
                    else:
                        for x in range(n_x):
                            out[x] += w5 * c[x]
                c = u[_SP]
                _u_row(c, s[last, k, y])
                wl = w[last]
                for x in range(n_x):
                    out[x] += wl * c[x]

    @njit(**_opts)
    def _solve_short_k(spec, forward, inverse, inv_denom, chunks):
        # Per (y, x): v = inverse @ (inv_denom * (forward @ v)) along k, in place.
        n_k, n_y, n_x = spec.shape
        per = (n_y + chunks - 1) // chunks
        for c in prange(chunks):
            tmp = np.empty((n_k, n_x), dtype=np.float32)
            for y in range(c * per, min(n_y, (c + 1) * per)):
                for i in range(n_k):
                    t = tmp[i]
                    q = inv_denom[i, y]
                    a = spec[0, y]
                    m = forward[i, 0]
                    for x in range(n_x):
                        t[x] = m * a[x]
                    for j in range(1, n_k):
                        a = spec[j, y]
                        m = forward[i, j]
                        for x in range(n_x):
                            t[x] += m * a[x]
                    for x in range(n_x):
                        t[x] *= q[x]
                for i in range(n_k):
                    o = spec[i, y]
                    t = tmp[0]
                    m = inverse[i, 0]
                    for x in range(n_x):
                        o[x] = m * t[x]
                    for j in range(1, n_k):
                        t = tmp[j]
                        m = inverse[i, j]
                        for x in range(n_x):
                            o[x] += m * t[x]


def shrink(g: np.ndarray, state: np.ndarray, coupled: bool) -> None:
    """Every term: ``state_j = D_j g + clip(state_j, -1, 1)`` (``D`` = identity for the last)."""
    _shrink(g, state, coupled)


def accumulate(
    state: np.ndarray, f: np.ndarray, fidelity: float, weights: np.ndarray, rhs: np.ndarray, coupled: bool
) -> None:
    """``rhs = fidelity f + sum_j w_j D_j^T u_j`` with ``u_j = state_j - 2 clip(state_j, -1, 1)``.

    ``rhs`` may be the array the states were computed from (it is no longer needed).
    """
    chunks = max(1, min(numba.get_num_threads(), f.shape[0] * f.shape[1]))
    _accumulate(state, f, np.float32(fidelity), weights, rhs, coupled, chunks)


def solve_short_k(spec: np.ndarray, forward: np.ndarray, inverse: np.ndarray, inv_denom: np.ndarray) -> None:
    """In place along k: DCT by ``forward``, times ``inv_denom``, inverse DCT by ``inverse``."""
    chunks = max(1, min(numba.get_num_threads(), spec.shape[1]))
    _solve_short_k(spec, forward, inverse, inv_denom, chunks)
