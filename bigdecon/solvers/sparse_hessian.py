"""Sparse-Hessian reconstruction by split Bregman (step 4 of sparse deconvolution)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from .._backend import cpu_threads, get_xp
from .._types import Array, ArrayLike
from ..params import DEFAULTS
from ._dct import DCT3 as _DCT

__all__ = ["sparse_hessian", "sparse_hessian_terms", "FACE_EXTENSION", "extend_faces"]

# Samples added beyond each face of the data set along (k, y, x), and how many samples next to the
# face their value is the mean of (extend_faces): fewer along k, whose structure is coarser in
# samples. Measured on the real nuclei stack and a dim noisy flat volume (docs/step5_blocks.md).
FACE_EXTENSION = (1, 1, 1)
FACE_MEAN = (4, 8, 8)


def _fused():
    """The Numba kernels, imported on first use: a driver that only plans does not load Numba."""
    from . import _fused_cpu

    return _fused_cpu


def _s(ndim: int, axis: int, sl: slice) -> tuple:
    """Index tuple that applies ``sl`` on ``axis`` and ``:`` elsewhere."""
    index = [slice(None)] * ndim
    index[axis] = sl
    return tuple(index)


def _second_diff(a, axis: int, out):
    """``bwd(fwd(a))`` along ``axis``: [1, -2, 1] with mirror (Neumann) ends.

    ``fwd`` is zero at the last sample and ``bwd`` treats the sample before the
    first as zero, so the operator is symmetric and the DCT-II diagonalises it.
    """
    n = a.shape[axis]
    if n == 1:
        out[...] = 0
        return out
    nd = a.ndim
    first, last = _s(nd, axis, slice(0, 1)), _s(nd, axis, slice(n - 1, n))
    mid = _s(nd, axis, slice(1, n - 1))
    # out[i] = a[i+1] - a[i] for i < n-1, then subtract the shifted copy.
    fwd = out
    fwd[_s(nd, axis, slice(0, n - 1))] = a[_s(nd, axis, slice(1, n))]
    fwd[_s(nd, axis, slice(0, n - 1))] -= a[_s(nd, axis, slice(0, n - 1))]
    # Second difference: interior a[i+1] - 2a[i] + a[i-1] = fwd[i] - fwd[i-1].
    last_val = -fwd[_s(nd, axis, slice(n - 2, n - 1))]
    if n > 2:
        fwd[mid] -= a[mid] - a[_s(nd, axis, slice(0, n - 2))]
    out[last] = last_val
    del first
    return out


def _mixed_fwd(a, axes: tuple[int, int], out):
    """``fwd_b(fwd_a(a))``: the 2x2 stencil [[1, -1], [-1, 1]], zero on the last faces."""
    nd = a.ndim
    p, q = axes
    out[...] = 0
    if a.shape[p] < 2 or a.shape[q] < 2:
        return out
    hi_p, lo_p = slice(1, None), slice(None, -1)
    hi_q, lo_q = slice(1, None), slice(None, -1)

    def at(sp, sq):
        index = [slice(None)] * nd
        index[p], index[q] = sp, sq
        return tuple(index)

    dst = out[at(lo_p, lo_q)]
    dst[...] = a[at(hi_p, hi_q)]
    dst -= a[at(hi_p, lo_q)]
    dst -= a[at(lo_p, hi_q)]
    dst += a[at(lo_p, lo_q)]
    return out


def _mixed_bwd(u, axes: tuple[int, int], out):
    """``bwd_a(bwd_b(u))`` for ``u`` that is zero on the last faces (the adjoint above)."""
    nd = u.ndim
    p, q = axes
    out[...] = u
    if u.shape[p] < 2 or u.shape[q] < 2:
        return out

    def at(sp, sq):
        index = [slice(None)] * nd
        index[p], index[q] = sp, sq
        return tuple(index)

    all_, hi, lo = slice(None), slice(1, None), slice(None, -1)
    out[at(hi, all_)] -= u[at(lo, all_)]
    out[at(all_, hi)] -= u[at(all_, lo)]
    out[at(hi, hi)] += u[at(lo, lo)]
    return out


def _accumulate(g, terms, bregman, rhs, t, tmp, xp) -> None:
    """Shrink each penalised quantity of ``g`` and add its share to ``rhs``.

    For every term: ``t = D g + b``; the new Bregman variable is the part that
    shrinkage removes, ``b = clip(t, -1, 1)``; then ``d - b = t - 2 b`` and
    ``rhs += w D^T (d - b)``. Works on views (a plane, a band of rows).
    """
    for (_name, axes, weight), b in zip(terms, bregman):
        if axes is None:  # the sparsity term, D = identity
            xp.add(g, b, out=t)
        elif len(axes) == 1:
            _second_diff(g, axes[0], t)
            t += b
        else:
            _mixed_fwd(g, axes, t)
            t += b
        xp.clip(t, -1.0, 1.0, out=b)
        t -= b
        t -= b
        if axes is None:
            share = t
        elif len(axes) == 1:
            share = _second_diff(t, axes[0], tmp)
        else:
            share = _mixed_bwd(t, axes, tmp)
        if weight != 1.0:
            share *= xp.float32(weight)
        rhs += share


class _ShrinkStep:
    """The shrink/Bregman half of one iteration; writes next iteration's right-hand side.

    On the CPU with Numba all terms together are two fused, threaded passes
    (``_fused_cpu``) that keep one state array per term; otherwise (CuPy, or
    no Numba) ``_accumulate`` runs the same arithmetic as array expressions.
    """

    def __init__(self, f, terms, fidelity: float, sparsity: float, xp: ModuleType):
        self.xp = xp
        self.f = f
        self.fidelity = float(fidelity)
        self.terms = list(terms) + [("sparse", None, float(sparsity))]
        names = tuple(name for name, _axes, _w in self.terms)
        self.coupled = len(self.terms) == len(_fused().TERM_ORDER)
        standard = names == (_fused().TERM_ORDER if self.coupled else _fused().TERM_ORDER[:3] + ("sparse",))
        self.fused = xp is np and _fused().available() and f.size > 4096 and standard
        self.state: np.ndarray | None = None
        self.weights = np.array([w for _n, _a, w in self.terms], dtype=np.float32)
        self._arrays: tuple[Array, list[Array], Array] | None = None
        self.tmp: Array | None = None

    def _expression_arrays(self):
        """Bregman variables and scratch of the array-expression path (allocated on first use)."""
        if self._arrays is None:
            xp, f = self.xp, self.f
            self._arrays = (
                f * xp.float32(self.fidelity),
                [xp.zeros_like(f) for _ in self.terms],
                xp.empty_like(f),
            )
        if self.tmp is None:
            self.tmp = self.xp.empty_like(self.f)
        return self._arrays

    def __call__(self, g, rhs) -> None:
        """Shrink the terms of ``g``; write the next right-hand side to ``rhs`` (``g`` itself when fused)."""
        if not self.fused:
            fid_f, bregman, t = self._expression_arrays()
            rhs[...] = fid_f
            _accumulate(g, self.terms, bregman, rhs, t, self.tmp, self.xp)
            return
        if self.state is None:
            _fused().use_threads(cpu_threads(self.f.size))
            # One state per term, t = D g + b, in a single allocation (zero: b starts at 0).
            self.state = np.zeros((len(self.terms), *self.f.shape), dtype=np.float32)
        g = np.ascontiguousarray(g, dtype=np.float32)
        _fused().shrink(g, self.state, self.coupled)
        _fused().accumulate(self.state, self.f, self.fidelity, self.weights, rhs, self.coupled)


def sparse_hessian_terms(tcontinuity: float, coupled: bool) -> list[tuple[str, tuple[int, ...], float]]:
    """The six Hessian penalties of a ``(k, y, x)`` array: name, axes, weight.

    Weights 1, 1, rho^2, 2, 2 rho, 2 rho with ``rho = sqrt(tcontinuity)``; the
    three terms along k are dropped when the third axis is not coupled.
    """
    rho = math.sqrt(tcontinuity) if coupled else 0.0
    terms = [("xx", (2,), 1.0), ("yy", (1,), 1.0), ("xy", (1, 2), 2.0)]
    if rho > 0:
        terms += [("kk", (0,), rho * rho), ("xk", (0, 2), 2.0 * rho), ("yk", (0, 1), 2.0 * rho)]
    return terms


def _dct_eigenvalues(n: int, xp: ModuleType):
    """Eigenvalues ``2 - 2 cos(pi k / n)`` of ``-bwd(fwd(.))`` under the DCT-II."""
    k = np.arange(n, dtype=np.float64)
    return 2.0 - 2.0 * np.cos(np.pi * k / n)


def _denominator(shape, terms, fidelity: float, sparsity: float, xp: ModuleType, full: bool = True):
    """``1 / (fidelity + sparsity^2 + sum_j w_j |D_j|^2)`` in the DCT-II basis, float32.

    With ``full=False`` axes it does not depend on keep length 1 (no k terms: one plane).
    """
    lam = [_dct_eigenvalues(n, xp) for n in shape]

    def axis_view(axis):
        return lam[axis].reshape([-1 if a == axis else 1 for a in range(3)])

    denom = np.full((1, 1, 1), fidelity + sparsity**2, dtype=np.float64)
    for _name, axes, weight in terms:
        factor = weight
        if len(axes) == 1:
            factor = factor * axis_view(axes[0]) ** 2
        else:
            factor = factor * axis_view(axes[0]) * axis_view(axes[1])
        denom = denom + factor
    if full:
        denom = np.broadcast_to(denom, shape)
    return xp.asarray((1.0 / denom).astype(np.float32))


def _iterate_fused(f, step: _ShrinkStep, dct: _DCT, iterations: int, fidelity: float, sparsity: float):
    """The CPU loop: one work array is in turn the right-hand side, its spectrum and ``g``.

    Memory: that array, one state per term and the denominator (none per
    iteration); the shrink pass reads ``g``, and the accumulate pass then
    overwrites it with the next right-hand side.
    """
    terms = step.terms[:-1]
    inv_denom = _denominator(f.shape, terms, fidelity, sparsity, np, full=step.coupled)
    work = np.empty_like(f)
    step(f, work)  # first iteration: g = f
    for it in range(1, iterations):
        dct.solve_in_place(work, inv_denom, step.coupled)
        if it == iterations - 1:
            break  # the auxiliaries after the last solve are never used
        step(work, work)
    return np.maximum(work, 0, out=work)


def extend_faces(f: Array, widths: Sequence[tuple[int, int]]) -> Array:
    """``f`` extended beyond its faces by ``widths[a] = (low, high)`` samples per axis.

    Each added sample is the mean of the ``FACE_MEAN[axis]`` samples next to
    the face on its line (``f`` is ``(k, y, x)``) (so it depends only on data near that face, as a block
    on the face sees them too). A mirror boundary repeats a face sample's own
    noise beyond the face, so the smoothing of the Hessian penalty averages
    it less there, and the L1 shrinkage and the clip at 0 turn that variance
    into a brighter face (x1.2-1.35 on a dim noisy flat image); beyond the
    extension's far end the mirror repeats only a smooth mean.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon.solvers.sparse_hessian import extend_faces
    >>> extend_faces(np.arange(4.0)[None, None], [(0, 0), (0, 0), (2, 1)])[0, 0].tolist()
    [1.5, 1.5, 0.0, 1.0, 2.0, 3.0, 1.5]
    """
    xp = get_xp(f)
    for axis, (lo, hi) in enumerate(widths):
        n = f.shape[axis]
        m = min(FACE_MEAN[axis], n)
        parts = [f]
        if lo:
            mean = f[_s(f.ndim, axis, slice(0, m))].mean(axis=axis, keepdims=True, dtype=xp.float32)
            parts.insert(0, xp.repeat(mean, int(lo), axis=axis))
        if hi:
            mean = f[_s(f.ndim, axis, slice(n - m, n))].mean(axis=axis, keepdims=True, dtype=xp.float32)
            parts.append(xp.repeat(mean, int(hi), axis=axis))
        if len(parts) > 1:
            f = xp.concatenate(parts, axis=axis)
    return f


def face_widths(shape: Sequence[int], faces: Sequence[tuple[bool, bool]], coupled: bool) -> list[tuple[int, int]]:
    """Extension per axis of a ``(k, y, x)`` block: :data:`FACE_EXTENSION` on the sides in ``faces``."""
    out = []
    for axis, (width, (lo, hi)) in enumerate(zip(FACE_EXTENSION, faces)):
        if axis == 0 and (not coupled or shape[0] < 2):
            width = 0  # planes solved one by one: no face along k
        out.append((width if lo else 0, width if hi else 0))
    return out


def sparse_hessian(
    image: ArrayLike,
    *,
    iterations: int = DEFAULTS.sparse_iters,
    fidelity: float = DEFAULTS.fidelity,
    sparsity: float = DEFAULTS.sparsity,
    tcontinuity: float = DEFAULTS.tcontinuity,
    coupled: bool | None = None,
    faces: Sequence[tuple[bool, bool]] | None = None,
) -> Array:
    """Sparse-Hessian reconstruction of a normalised image by split Bregman.

    Minimises ``fidelity/2 ||f - g||^2`` plus the L1 norms of the Hessian
    (``g_xx, g_yy, rho^2 g_kk, 2 g_xy, 2 rho g_xk, 2 rho g_yk``) and
    ``sparsity ||g||_1``, with ``rho = sqrt(tcontinuity)`` and ``mu = 1``.

    The boundary is half-sample symmetric (a mirror) on every face, and the
    linear step is solved exactly with real DCT-II transforms, so no padding
    and no complex arithmetic is needed. This equals the published periodic
    solve on an infinitely mirror-padded array: results differ from it only
    near the outer faces, where the mirror is the better physics.

    Parameters
    ----------
    image : ndarray, 2-D ``(y, x)`` or 3-D ``(k, y, x)``
        Data already scaled to about [0, 1] (the caller normalises by a global
        maximum). NumPy or CuPy; computed in float32.
    iterations : int
        Split-Bregman iterations (``sparse_iters``, default 100). On the first
        one the estimate is the input itself.
    fidelity : float
        Weight of the data term (default 150).
    sparsity : float
        Weight of the L1 term on the image (default 10).
    tcontinuity : float
        Continuity along the third axis, ``rho^2`` (default 0.5).
    coupled : bool, optional
        Whether the third axis is coupled. By default a 3-D array with at least
        3 planes is; a chunked run passes the decision for the whole data set.
    faces : sequence of (bool, bool), optional
        Per axis ``(k, y, x)`` (or ``(y, x)``), whether the low and high sides
        are faces of the data set (default: all). Beyond a face the image is
        extended by :data:`FACE_EXTENSION` samples (:func:`extend_faces`)
        before the mirror applies, so faces are not brightened; a block's cut
        sides keep the mirror, which its halo covers.

    Returns
    -------
    g : ndarray of float32, same shape as ``image``
        The reconstruction, clipped at 0.

    References
    ----------
    .. [1] W. Zhao et al., Nat. Biotechnol. 40, 606-617 (2022).
    .. [2] T. Goldstein and S. Osher, "The split Bregman method for
           L1-regularized problems", SIAM J. Imaging Sci. 2, 323-343 (2009).

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import sparse_hessian
    >>> rng = np.random.default_rng(0)
    >>> f = np.clip(0.5 + 0.1 * rng.standard_normal((4, 32, 32)), 0, 1).astype(np.float32)
    >>> g = sparse_hessian(f, iterations=20)
    >>> g.shape, g.dtype, bool(g.std() < f.std())
    ((4, 32, 32), dtype('float32'), True)
    """
    xp = get_xp(image)
    f = xp.asarray(image, dtype=xp.float32)
    squeeze = f.ndim == 2
    if squeeze:
        f = f[None]
    if f.ndim != 3:
        raise ValueError(f"image must be 2-D (y, x) or 3-D (k, y, x), got {f.ndim}-D")
    if coupled is None:
        coupled = f.shape[0] >= 3
    terms = sparse_hessian_terms(tcontinuity, coupled and f.shape[0] > 1)
    if iterations <= 1:
        g = f.copy()
        return xp.maximum(g, 0, out=g)[0] if squeeze else xp.maximum(g, 0, out=g)
    if faces is None:
        faces = [(True, True)] * 3
    elif squeeze:
        faces = [(False, False), *faces]
    widths = face_widths(f.shape, faces, coupled)
    if any(lo or hi for lo, hi in widths):
        inner = tuple(slice(lo, lo + n) for (lo, _hi), n in zip(widths, f.shape))
        g = _solve(extend_faces(f, widths), terms, iterations, fidelity, sparsity, xp)[inner]
    else:
        g = _solve(f, terms, iterations, fidelity, sparsity, xp)
    g = xp.ascontiguousarray(g)
    return g[0] if squeeze else g


def _solve(f, terms, iterations: int, fidelity: float, sparsity: float, xp: ModuleType):
    """The split-Bregman iterations on ``f`` (3-D, float32, at least 2 iterations), clipped at 0."""
    dct = _DCT(f.shape, xp)
    if xp is np:
        f = np.ascontiguousarray(f)
    step = _ShrinkStep(f, terms, fidelity, sparsity, xp)
    if step.fused:
        return _iterate_fused(f, step, dct, iterations, fidelity, sparsity)
    inv_denom = _denominator(f.shape, terms, fidelity, sparsity, xp)
    g = f.copy()
    rhs = xp.empty_like(f)
    for it in range(iterations):
        if it > 0:
            spec = dct.forward(rhs)
            spec *= inv_denom
            g = dct.inverse(spec)
            del spec
            if it == iterations - 1:
                break  # the auxiliaries after the last solve are never used
        step(g, rhs)
    g = g.astype(xp.float32, copy=False)
    return xp.maximum(g, 0, out=g)
