"""Landweber deconvolution with Nesterov momentum (step 5, mode 2)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .._backend import get_xp
from .._types import Array, ArrayLike, Pad
from ..params import DECONV_ITERS_BY_TYPE
from .richardson_lucy import FLOOR, _Convolver, _MirrorConvolver, fill_outside, padded_problem

__all__ = ["landweber", "landweber_steps"]


def landweber(
    image: ArrayLike,
    psf: ArrayLike,
    iterations: int = DECONV_ITERS_BY_TYPE[2],
    *,
    pad: Pad = None,
    boundary: str = "auto",
) -> Array:
    """Accelerated Landweber deconvolution, floored at 1e-6.

    Gradient steps ``x = y + H^T (f - H y)`` on the least-squares data term,
    with Nesterov momentum ``y = x + (t_k - 1) / t_{k+1} (x - x_prev)``.
    Plane by plane for a 2-D PSF, as a volume for a 3-D PSF, with the same
    face rules as :func:`richardson_lucy`: a mirror and unpadded DCT-II for a
    3-D PSF symmetric along every axis, edge padding otherwise.

    Parameters
    ----------
    image : ndarray
        2-D ``(y, x)`` or 3-D ``(k, y, x)``, NumPy or CuPy.
    psf : ndarray
        2-D or 3-D kernel summing to 1.
    iterations : int
        Number of gradient steps (default 7).
    pad : int, sequence, optional
        Edge replication as in :func:`richardson_lucy`: one width, one per
        axis or one ``(low, high)`` pair per axis; default the published
        ``floor(min(h, w) / 6)`` for a 2-D PSF, the PSF's half-support for a
        3-D PSF. The momentum depends only on the iteration number, so blocks
        of a volume compute what the whole volume computes. Ignored by the
        mirror boundary.
    boundary : {"auto", "mirror", "edge"}
        Face rule, as in :func:`richardson_lucy`.

    Returns
    -------
    ndarray of float32, same shape as ``image``

    References
    ----------
    .. [1] L. Landweber, "An iteration formula for Fredholm integral equations
           of the first kind", Am. J. Math. 73, 615-624 (1951).
    .. [2] Y. Nesterov, "A method for solving the convex programming problem
           with convergence rate O(1/k^2)", Dokl. Akad. Nauk SSSR 269 (1983).

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf, landweber
    >>> from scipy.ndimage import convolve
    >>> truth = np.zeros((64, 64), np.float32); truth[32, 32] = 1
    >>> blurred = convolve(truth, gaussian_psf(3.0), mode="wrap")
    >>> out = landweber(blurred, gaussian_psf(3.0), iterations=30, pad=0)
    >>> bool(out[32, 32] > blurred[32, 32])
    True
    """
    xp = get_xp(image)
    if iterations <= 0:
        return xp.asarray(image, dtype=xp.float32).copy()
    padded, conv, crop = padded_problem(image, psf, pad, boundary)
    # No data beyond the faces (edge rule): nothing to fit there.
    outside = crop if conv.masked else None
    y, x_prev, t = padded, padded, 1.0
    for _ in range(iterations):
        y, x_prev, t = _step(conv, padded, y, x_prev, t, outside)
    return xp.maximum(x_prev[crop], 0).astype(xp.float32, copy=False)


def _next_t(t: float) -> float:
    """Nesterov's ``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2``, from ``t_0 = 1``."""
    return (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0


def _step(
    conv: _Convolver | _MirrorConvolver,
    f: Array,
    y: Array,
    x_prev: Array,
    t: float,
    outside: Sequence[slice] | None = None,
) -> tuple[Array, Array, float]:
    """One iteration: ``x = max(y + H^T(f - H y), floor)``, then the momentum; ``(y, x, t)`` after it.
    ``outside``: the crop whose outside has no data (its residual is 0 there)."""
    xp = get_xp(y)
    floor = xp.float32(FLOOR)
    residual = conv.forward(y)
    xp.subtract(f, residual, out=residual)
    if outside is not None:
        fill_outside(residual, outside, 0.0)
    x = y + conv.adjoint(residual)
    xp.maximum(x, floor, out=x)
    t_next = _next_t(t)
    y = x + xp.float32((t - 1.0) / t_next) * (x - x_prev)
    xp.maximum(y, floor, out=y)
    return y, x, t_next


def landweber_steps(
    image: ArrayLike,
    psf: ArrayLike,
    iterations: int,
    state: tuple[Array, Array] | None = None,
    first: int = 0,
) -> tuple[Array, Array]:
    """Iterations ``first .. first + iterations - 1`` of :func:`landweber` on the mirror path, from a
    state ``(y, x_prev)`` (``None`` before the first) and back to one: a run split into passes.

    The momentum's ``t`` depends on the iteration number only, so passes chained
    through the state compute what one call computes, to the bit; ``x_prev`` is
    what a run of that many iterations returns. A block of one pass needs the
    light cone of its iterations as halo: ``2 * iterations`` PSF half-supports.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf, landweber
    >>> from bigdecon.solvers.landweber import landweber_steps
    >>> vol = np.random.default_rng(0).random((16, 24, 24), np.float32)
    >>> psf = gaussian_psf((3.0, 2.0, 2.0))
    >>> state = landweber_steps(vol, psf, 3)
    >>> _, x = landweber_steps(vol, psf, 4, state, first=3)
    >>> bool(np.array_equal(x, landweber(vol, psf, 7)))
    True
    """
    from .richardson_lucy import pass_problem

    xp, f, conv = pass_problem(image, psf, state, first)
    y, x_prev = (f, f) if state is None else (xp.asarray(state[0]), xp.asarray(state[1]))
    t = 1.0
    for _ in range(first):
        t = _next_t(t)
    for _ in range(iterations):
        y, x_prev, t = _step(conv, f, y, x_prev, t)
    return y, x_prev
