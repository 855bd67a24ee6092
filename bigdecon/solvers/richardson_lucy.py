"""Richardson-Lucy deconvolution with Biggs-Andrews acceleration (step 5, mode 1)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from .._backend import fft_module, fft_workers, get_xp, to_numpy
from .._types import Array, ArrayLike, Pad
from ..params import DECONV_ITERS_BY_TYPE
from ._dct import DCT3, mirror_eigenvalues
from .psf import psf_to_otf

__all__ = [
    "richardson_lucy",
    "rl_schedule_steps",
    "published_pad",
    "pad_edges",
    "psf_half_support",
    "fast_length",
    "padded_geometry",
    "deconv_halo",
    "psf_step",
    "backprojector_half_support",
    "ALPHA_RULES",
    "schedule_alpha",
    "FLOOR",
    "BOUNDARIES",
    "mirror_symmetric",
    "boundary_rule",
]


# The published floors: they keep the ratio f / Hy finite and feed the
# acceleration factor, so they decide the last digits and are kept exactly.
FLOOR = 1e-6

# How the accelerated iteration chooses its extrapolation factor (see richardson_lucy).
ALPHA_RULES = ("adaptive", "schedule")

# Face rules of the iterative solvers: "auto" picks one of the other two (boundary_rule).
BOUNDARIES = ("auto", "mirror", "edge")


def published_pad(shape: Sequence[int]) -> int:
    """Edge padding of the published 2-D step: ``floor(min(h, w) / 6)`` pixels."""
    return int(min(shape[-2], shape[-1]) // 6)


def psf_half_support(psf_shape: Sequence[int]) -> tuple[int, ...]:
    """Pixels the PSF reaches from its centre on each axis: ``n // 2``."""
    return tuple(int(n) // 2 for n in psf_shape)


# deconv_halo's factors were measured with Gaussian PSFs, whose box reaches 4.7 (z of fwhm (6, 3, 3))
# to 5.5 standard deviations of their light (gaussian_psf: ceil(4.13 sigma) + 1 per side).
LIGHT_WIDTHS = 4.7


def psf_step(psf: ArrayLike) -> tuple[int, ...]:
    """How far one pass of the PSF carries light along each axis, in pixels: the halo's step.

    The half-support ``n // 2``, or ``LIGHT_WIDTHS`` times the RMS width of the
    PSF's light along the axis (``|psf|`` summed over the other axes, about the
    box centre) where that is more. A Gaussian's box is its light (the step is
    its half-support, the factors of :func:`deconv_halo` were measured on it); a
    PSF whose light reaches its box's faces (a widefield model, whose every plane
    holds the same light; a bead's wide wings) spreads further per iteration,
    as a random walk does with longer steps.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf
    >>> from bigdecon.solvers.richardson_lucy import psf_step
    >>> psf_step(gaussian_psf((6.0, 3.0, 3.0)))            # its box
    (12, 7, 7)
    >>> psf_step(np.full((9, 15, 15), 1 / (9 * 15 * 15)))   # light to the faces: 4.7 x its RMS width
    (13, 21, 21)
    """
    a = np.abs(np.asarray(to_numpy(psf), dtype=np.float64))
    a = a / a.sum()
    out = []
    for axis, n in enumerate(a.shape):
        line = a.sum(axis=tuple(i for i in range(a.ndim) if i != axis))
        rms = math.sqrt(float((line * (np.arange(n) - n // 2) ** 2).sum()))
        out.append(max(n // 2, math.ceil(LIGHT_WIDTHS * rms - 1e-9)))
    return tuple(out)


# Half-width of the Wiener-Butterworth back projector's kernel on the mirror path, in PSF
# half-supports (bigdecon.solvers.wiener_butterworth.backprojector_kernel, docs/backprojector.md).
WB_KERNEL_RADIUS = 2


def backprojector_half_support(psf_shape: Sequence[int]) -> tuple[int, ...]:
    """Pixels the mirror path's Wiener-Butterworth kernel reaches: ``WB_KERNEL_RADIUS * max(n // 2, 1)``.

    Examples
    --------
    >>> from bigdecon.solvers.richardson_lucy import backprojector_half_support
    >>> backprojector_half_support((61, 69, 69))
    (60, 68, 68)
    """
    return tuple(WB_KERNEL_RADIUS * max(h, 1) for h in psf_half_support(psf_shape))


def fast_length(n: int, xp: ModuleType = np) -> int:
    """Smallest transform length ``>= n`` that the FFT library does fast.

    ``scipy.fft.next_fast_len(n, real=True)`` (factors 2, 3, 5) on the CPU;
    factors 2, 3, 5, 7 for cuFFT.
    """
    n = int(n)
    if xp is np:
        import scipy.fft

        return int(scipy.fft.next_fast_len(n, real=True))
    m = n
    while True:
        k = m
        for p in (2, 3, 5, 7):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _pad_pairs(shape, axes, pad, psf_shape) -> tuple[tuple[int, int], ...]:
    """``(low, high)`` edge-replication widths per deconvolved axis from ``pad``."""
    if pad is None:
        if len(psf_shape) == 2:
            pad = published_pad(shape)  # the published 2-D rule, kept for equivalence
        else:
            pad = psf_half_support(psf_shape)
    if np.ndim(pad) == 0:
        pairs = [(int(pad), int(pad))] * len(axes)
    else:
        pad = list(pad)
        if len(pad) != len(axes):
            raise ValueError(f"pad must be one width >= 0 or one per deconvolved axis, got {pad!r}")
        pairs = []
        for w in pad:
            if np.ndim(w) == 0:
                pairs.append((int(w), int(w)))
            elif len(w) == 2:
                pairs.append((int(w[0]), int(w[1])))
            else:
                raise ValueError(f"each pad entry must be a width or a (low, high) pair, got {w!r}")
    if min(min(p) for p in pairs) < 0:
        raise ValueError(f"pad widths must be >= 0, got {pad!r}")
    return tuple(pairs)


def padded_geometry(
    shape: Sequence[int],
    psf_shape: Sequence[int],
    pad: Pad = None,
    xp: ModuleType = np,
    guard: bool | None = None,
    reach: Sequence[int] | None = None,
) -> tuple[tuple[int, int, int], ...]:
    """``(low, high, transform length)`` of each deconvolved axis.

    With a 3-D PSF, an axis padded on either side gets its edge replicated
    ``low`` / ``high`` pixels and is rounded up to :func:`fast_length` with
    zeros. The iterative solvers take the padding as object the data see
    blurred, not as data (their ratio is 1 in :func:`richardson_lucy`), so both faces' padding wraps
    onto each other harmlessly; an axis padded on one side only (a block on a
    face) gets a guard of zeros at least the PSF's half-support wide between
    its cut side and the padding. A face's treatment is then local, the same
    for a block on that face as for the whole volume. With a 2-D PSF (the published per-plane step) there is no guard:
    ``high`` grows to the fast length. An axis with no padding on either side
    stays periodic at its own length. ``guard=False`` drops the 3-D guard (the
    unmatched back projector rings on a step to zero). ``reach`` (pixels per
    deconvolved axis): a back projector that reaches further than the PSF's
    half-support (a sheared Wiener-Butterworth kernel) gets that much more
    guard on every padded axis, so no data wraps onto the faces' padding.
    """
    if guard is None:
        guard = len(psf_shape) != 2  # the published per-plane step has none
    axes = tuple(range(len(shape) - len(psf_shape), len(shape)))
    pairs = _pad_pairs(shape, axes, pad, psf_shape)
    out = []
    reaches = psf_half_support(psf_shape) if reach is None else tuple(int(r) for r in reach)
    for axis, (lo, hi), half, far in zip(axes, pairs, psf_half_support(psf_shape), reaches):
        n = int(shape[axis])
        if lo == hi == 0:
            total = n
        elif not guard:
            # The published per-plane step: no guard, the fast length filled by more
            # edge replication on the high side (periodic across the padding, as published).
            total = fast_length(n + lo + hi, xp)
            hi = total - n - lo
        else:
            # The solvers take the padding as object, not data (richardson_lucy): an axis padded on
            # both sides wraps nothing the data see, one padded on one side (a block on a face)
            # keeps a zero guard between its cut side and the padding.
            total = fast_length(n + lo + hi + (half if (lo == 0) != (hi == 0) else 0) + max(0, far - half), xp)
        out.append((lo, hi, total))
    return tuple(out)


def pad_edges(image: Array, pad: int | tuple[int, ...], axes: tuple[int, ...]) -> Array:
    """Replicate the edge ``pad`` pixels outward on ``axes`` (one width per axis or one for all)."""
    xp = get_xp(image)
    widths = [int(w) for w in np.broadcast_to(np.asarray(pad), (len(axes),))]
    spec = [(0, 0)] * image.ndim
    for axis, w in zip(axes, widths):
        spec[axis] = (int(w), int(w))
    if not any(w for pair in spec for w in pair):
        return image
    return xp.pad(image, spec, mode="edge")


def _embed(f, axes, geometry, xp):
    """``f`` edge-replicated by each axis' ``(low, high)`` inside zeros of the transform shape."""
    shape = list(f.shape)
    for axis, (_lo, _hi, total) in zip(axes, geometry):
        shape[axis] = total
    if tuple(shape) == f.shape:
        return f.copy()
    out = xp.zeros(shape, dtype=xp.float32)
    inner = [slice(None)] * f.ndim
    for axis, (lo, _hi, _total) in zip(axes, geometry):
        inner[axis] = slice(lo, lo + f.shape[axis])
    out[tuple(inner)] = f
    for axis, (lo, hi, _total) in zip(axes, geometry):
        n = f.shape[axis]

        def at(sl, axis=axis):
            index = [slice(None)] * f.ndim
            index[axis] = sl
            return tuple(index)

        if lo:
            out[at(slice(0, lo))] = out[at(slice(lo, lo + 1))]
        if hi:
            out[at(slice(lo + n, lo + n + hi))] = out[at(slice(lo + n - 1, lo + n))]
    return out


def mirror_symmetric(psf: Array) -> bool:
    """True when ``psf`` has odd sizes and equals its own reflection along every axis.

    Exactly (no tolerance): then convolution under a mirror boundary is
    diagonal in the DCT-II basis. Every Gaussian and the scalar Born-Wolf
    PSFs of :mod:`bigdecon.solvers.psf` are; a measured PSF usually is not.
    """
    xp = get_xp(psf)
    if not all(int(n) % 2 for n in psf.shape):
        return False
    return all(bool(xp.array_equal(psf, xp.flip(psf, axis=a))) for a in range(psf.ndim))


def boundary_rule(image_ndim: int, psf: Array, boundary: str = "auto") -> str:
    """The face rule the iterative solvers use: ``"mirror"`` or ``"edge"``.

    ``"auto"`` gives ``"mirror"`` (unpadded DCT-II) for a 3-D image with a 3-D
    PSF that is :func:`mirror_symmetric`, ``"edge"`` (padded real FFT)
    otherwise: a 2-D PSF keeps the published per-plane padding. A blockwise
    driver calls this once for the data set to know whether blocks need ``pad``.
    """
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if boundary == "edge":
        return "edge"
    symmetric = mirror_symmetric(psf)
    if boundary == "mirror":
        if not symmetric:
            raise ValueError("boundary='mirror' needs an odd-sized PSF symmetric along every axis")
        return "mirror"
    return "mirror" if symmetric and np.ndim(psf) == 3 and image_ndim == 3 else "edge"


def padded_problem(
    image: ArrayLike,
    psf: ArrayLike,
    pad: Pad,
    boundary: str = "edge",
    *,
    guard: bool | None = None,
    reach: Sequence[int] | None = None,
) -> tuple[Array, _Convolver | _MirrorConvolver, tuple[slice, ...]]:
    """Shared set-up of the iterative deconvolutions: float32 data, its convolver,
    and the index that crops back to the image.

    With the ``"edge"`` rule the data are padded by edge replication inside a
    fast length (a 3-D PSF: ``conv.masked``, the padding is not data); with ``"mirror"`` (:func:`boundary_rule`) they are
    not padded at all (``pad`` is ignored) and the convolver uses the DCT-II.
    ``guard`` and ``reach`` as in :func:`padded_geometry`.
    """
    xp = get_xp(image)
    f = xp.asarray(image, dtype=xp.float32)
    psf = xp.asarray(psf, dtype=xp.float32)
    if psf.ndim > f.ndim:
        raise ValueError(f"a {psf.ndim}-D PSF cannot deconvolve a {f.ndim}-D image")
    if boundary_rule(f.ndim, psf, boundary) == "mirror":
        f = xp.ascontiguousarray(f)
        return f, _MirrorConvolver(f.shape, psf, xp), tuple(slice(None) for _ in f.shape)
    axes = tuple(range(f.ndim - psf.ndim, f.ndim))
    geometry = padded_geometry(f.shape, psf.shape, pad, xp, guard, reach)
    if any(p > g[2] for p, g in zip(psf.shape, geometry)):
        raise ValueError(f"PSF of shape {tuple(psf.shape)} is larger than the image {tuple(f.shape)}")
    padded = _embed(f, axes, geometry, xp)
    crop = [slice(None)] * f.ndim
    region = [slice(None)] * f.ndim
    for axis, (lo, hi, _total) in zip(axes, geometry):
        crop[axis] = slice(lo, lo + f.shape[axis])
        region[axis] = slice(0, lo + f.shape[axis] + hi)
    conv = _Convolver(padded.shape, psf, xp)
    conv.region = tuple(region)  # the edge-padded data without the guard
    # A 3-D PSF with padded faces: the data are known on the image only; the padding is object the
    # data see blurred, not data. The published 2-D step keeps its padding as data.
    conv.masked = psf.ndim == 3 and geometry_padded(geometry, f.shape, axes)  # see richardson_lucy
    return padded, conv, tuple(crop)


def geometry_padded(geometry: Sequence[tuple[int, int, int]], shape: Sequence[int], axes: Sequence[int]) -> bool:
    """Whether any deconvolved axis is padded (its transform longer than the image)."""
    return any(total != shape[a] for a, (_lo, _hi, total) in zip(axes, geometry))


def fill_outside(a: Array, crop: Sequence[slice], value: float) -> None:
    """Set ``a`` to ``value`` outside the image's region ``crop`` (the faces' padding and guard), in place."""
    for axis, sl in enumerate(crop):
        if sl.start is None:
            continue
        lo = [slice(None)] * a.ndim
        lo[axis] = slice(0, sl.start)
        a[tuple(lo)] = value
        hi = [slice(None)] * a.ndim
        hi[axis] = slice(sl.stop, None)
        a[tuple(hi)] = value


class _Convolver:
    """``H`` and ``H^T`` for a PSF over the last ``psf.ndim`` axes (periodic, real FFTs)."""

    def __init__(self, shape, psf, xp):
        self.xp = xp
        self.region: tuple[slice, ...] = tuple(slice(None) for _ in shape)  # data region (no guard)
        self.masked = False  # whether the padding is object, not data (padded_problem)
        self.fft = fft_module(xp)
        self.kw = fft_workers(xp, int(np.prod(shape)))
        self.axes = tuple(range(len(shape) - psf.ndim, len(shape)))
        self.shape = tuple(shape[a] for a in self.axes)
        otf = psf_to_otf(psf, self.shape, xp)
        flipped = psf[tuple(slice(None, None, -1) for _ in range(psf.ndim))]
        if all(n % 2 for n in psf.shape) and bool(xp.array_equal(psf, flipped)):
            # A centred symmetric PSF has a real OTF and H^T = H: half the memory.
            self.otf = otf.real.astype(xp.float32)
        else:
            self.otf = otf  # H^T multiplies by its conjugate in place (adjoint): no second array

    def _apply(self, x, otf, adjoint: bool = False):
        spec = self.fft.rfftn(x, axes=self.axes, **self.kw)
        conj = adjoint and self.otf.dtype.kind == "c"
        if conj:  # X conj(OTF) = conj(conj(X) OTF)
            self.xp.conjugate(spec, out=spec)
        spec *= otf
        if conj:
            self.xp.conjugate(spec, out=spec)
        return self.fft.irfftn(spec, s=self.shape, axes=self.axes, **self.kw).astype(self.xp.float32, copy=False)

    def forward(self, x):
        return self._apply(x, self.otf)

    def adjoint(self, x):
        return self._apply(x, self.otf, adjoint=True)


class _MirrorConvolver:
    """``H`` (= ``H^T``) for a PSF symmetric along every axis, mirror boundary: real DCT-II, no padding.

    ``H = IDCT(lam * DCT(.))`` over the last ``psf.ndim`` axes on the array's
    own shape (:func:`bigdecon.solvers._dct.mirror_eigenvalues`); the
    transforms run in place, so one iteration of Richardson-Lucy needs no
    array besides the solver's own.
    """

    def __init__(self, shape, psf, xp):
        self.xp = xp
        self.region: tuple[slice, ...] = tuple(slice(None) for _ in shape)  # no padding: all is data
        self.masked = False
        shape = tuple(int(n) for n in shape)
        self.shape3 = shape if len(shape) == 3 else (1,) * (3 - len(shape)) + shape
        self.coupled = psf.ndim == 3  # a 2-D PSF: plane by plane, k not transformed
        self.dct = DCT3(self.shape3, xp)
        lam = mirror_eigenvalues(psf, shape[len(shape) - psf.ndim :], xp)
        self.lam = lam.reshape((1,) * (3 - lam.ndim) + tuple(lam.shape))

    def _apply_in_place(self, a):
        return self.dct.apply(a.reshape(self.shape3), self.lam, self.coupled).reshape(a.shape)

    def forward(self, x):
        return self._apply_in_place(x.copy())

    def adjoint(self, x):
        """``H^T x`` = ``H x``, overwriting ``x`` (the solvers pass a temporary)."""
        return self._apply_in_place(x)


def _plane_sum(a, ndim_psf: int, xp):
    """Sum over the PSF's axes, kept for broadcasting (one alpha per plane or volume)."""
    axes = tuple(range(a.ndim - ndim_psf, a.ndim))
    return a.sum(axis=axes, keepdims=True, dtype=xp.float64)


def schedule_alpha(iteration: int) -> float:
    """Extrapolation factor of the ``"schedule"`` rule at 0-based ``iteration`` (>= 1).

    Nesterov's ``(k - 1) / (k + 2)`` with ``k = iteration + 1``: 0.25, 0.4,
    0.5, ... rising to 1. It depends on nothing but the iteration number, so a
    block of a volume extrapolates exactly as the whole volume does.
    """
    k = iteration + 1
    return (k - 1.0) / (k + 2.0)


def richardson_lucy(
    image: ArrayLike,
    psf: ArrayLike,
    iterations: int = DECONV_ITERS_BY_TYPE[1],
    accelerate: bool = True,
    *,
    pad: Pad = None,
    alpha: str = "adaptive",
    boundary: str = "auto",
    start: str | float = "image",
    snapshots: dict | None = None,
) -> Array:
    """Richardson-Lucy deconvolution, optionally with Biggs-Andrews acceleration.

    A 2-D PSF deconvolves each ``(y, x)`` plane of a 2-D or 3-D image
    separately, as the published sparse-deconvolution step does; a 3-D PSF
    deconvolves a 3-D image as a volume. A 3-D PSF symmetric along every axis
    (every Gaussian, the Born-Wolf PSFs) takes a mirror boundary at the
    faces and real DCT-II transforms of the unpadded volume; other PSFs take
    edge padding and real FFTs (``boundary``).

    Parameters
    ----------
    image : ndarray
        Non-negative data, 2-D ``(y, x)`` or 3-D ``(k, y, x)``; NumPy or CuPy.
    psf : ndarray
        2-D or 3-D kernel summing to 1, centred, no larger than the padded image.
    iterations : int
        Number of iterations (``deconv_iters``, default 7). 0 returns the input.
    accelerate : bool
        Vector extrapolation (Biggs-Andrews; the published default).
    pad : int, sequence, optional
        Pixels of edge replication on the deconvolved axes: one width for all
        sides, one per axis, or one ``(low, high)`` pair per axis (a block of a
        larger volume pads only the sides on the data set's faces). Default:
        the published ``floor(min(h, w) / 6)`` for a 2-D PSF, the PSF's
        half-support ``n // 2`` per axis for a 3-D PSF. Padded axes get a zero
        fast transform length (:func:`padded_geometry`); with a 3-D PSF the
        padding is object the data see blurred, not data (the ratio is 1 there,
        so no face lights up whatever the PSF's tail); ``0``
        gives a periodic deconvolution. Used by the ``"edge"`` boundary only:
        the mirror needs no padding, and ignores ``pad``.
    alpha : {"adaptive", "schedule"}
        Extrapolation factor when accelerating. ``"adaptive"`` (default, the
        published rule): a ratio of two sums over the whole plane or volume,
        recomputed every iteration. ``"schedule"``: :func:`schedule_alpha`, a
        function of the iteration number only, so that blocks of a volume
        compute exactly what the whole volume computes.
    boundary : {"auto", "mirror", "edge"}
        Face rule (:func:`boundary_rule`). ``"auto"`` (default): ``"mirror"``
        for a 3-D image with a 3-D PSF symmetric along every axis, ``"edge"``
        otherwise. ``"mirror"``: half-sample symmetric faces, exact with
        ``IDCT(lam * DCT(.))`` on the image's own shape (no padding, no guard,
        ``H^T = H``); a block of a volume needs no ``pad`` either, only a
        halo (:func:`deconv_halo`). ``"edge"``: ``pad`` and real FFTs.
    start : "image" or float
        First estimate. ``"image"`` (default, the published start): the data
        themselves. A number: that constant everywhere, as scikit-image's
        ``richardson_lucy`` (0.5) and many textbook versions start; after one
        plain iteration a constant start gives ``H^T f`` whatever its value.
    snapshots : dict, optional
        Keys are iteration counts below ``iterations``: each value is set to
        the result after that many iterations (what a run of that many would
        return), so several iteration counts cost one run (accelerated runs).

    Returns
    -------
    ndarray of float32, same shape as ``image``

    Notes
    -----
    Each iteration: ``x = max(y * H^T(f / max(H y, 1e-6)), 1e-6)`` (the PSF
    sums to 1, so ``H^T 1 = 1``); from the second iteration
    ``y = max(x + alpha (x - x_prev), 1e-6)``, where the adaptive rule takes
    ``v = max(x - y, 1e-6)`` and ``alpha = clip(sum(v_prev v) / (sum(v_prev^2)
    + 1e-10), 1e-6, 1)``. The result is the last ``y``.

    Under the mirror boundary, convolution with a kernel ``k`` that is
    symmetric along every axis is diagonalised by the DCT-II, with eigenvalues
    ``lam(m) = sum_j k(j) prod_a cos(pi m_a j_a / N_a)`` [5]_.

    References
    ----------
    .. [1] W. H. Richardson, "Bayesian-based iterative method of image
           restoration", J. Opt. Soc. Am. 62, 55-59 (1972).
    .. [2] L. B. Lucy, "An iterative technique for the rectification of
           observed distributions", Astron. J. 79, 745 (1974).
    .. [3] D. S. C. Biggs and M. Andrews, "Acceleration of iterative image
           restoration algorithms", Appl. Opt. 36, 1766-1775 (1997).
    .. [4] Y. Nesterov, "A method for solving the convex programming problem
           with convergence rate O(1/k^2)", Dokl. Akad. Nauk SSSR 269 (1983).
    .. [5] S. A. Martucci, "Symmetric convolution and the discrete sine and
           cosine transforms", IEEE Trans. Signal Process. 42, 1038-1051 (1994).

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf, richardson_lucy
    >>> from scipy.ndimage import convolve
    >>> truth = np.zeros((64, 64), np.float32); truth[32, 32] = 1
    >>> psf = gaussian_psf(4.0)
    >>> blurred = convolve(truth, psf, mode="wrap")
    >>> out = richardson_lucy(blurred, psf, iterations=20, pad=0)
    >>> bool(out[32, 32] > 3 * blurred[32, 32])
    True

    A volume with a symmetric 3-D PSF: mirror faces, no padding.

    >>> vol = np.zeros((16, 32, 32), np.float32); vol[8, 16, 16] = 1
    >>> psf3 = gaussian_psf((3.0, 2.0, 2.0))
    >>> out3 = richardson_lucy(convolve(vol, psf3, mode="reflect"), psf3, iterations=10)
    >>> out3.shape, bool(out3[8, 16, 16] > 0.1)
    ((16, 32, 32), True)
    """
    xp = get_xp(image)
    if alpha not in ALPHA_RULES:
        raise ValueError(f"alpha must be one of {ALPHA_RULES}, got {alpha!r}")
    if boundary not in BOUNDARIES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    if not (start == "image" or (isinstance(start, (int, float)) and not isinstance(start, bool) and start > 0)):
        raise ValueError(f"start must be 'image' or a positive number, got {start!r}")
    if iterations <= 0:
        return xp.asarray(image, dtype=xp.float32).copy()
    padded, conv, crop = padded_problem(image, psf, pad, boundary)
    ndim_psf = np.ndim(psf)
    floor = xp.float32(FLOOR)
    adaptive = accelerate and alpha == "adaptive"

    masked = conv.masked
    y = padded
    if start != "image":
        y = xp.zeros_like(padded)  # the zero guard (edge rule) stays zero
        y[conv.region] = xp.float32(start)
    x_prev: Array | None = None
    v_prev: Array | None = None
    for it in range(iterations):
        ratio = conv.forward(y)
        xp.maximum(ratio, floor, out=ratio)
        xp.divide(padded, ratio, out=ratio)
        if masked:
            # Beyond the faces there are no data: their ratio is taken as 1 (explained), so a voxel
            # there keeps its value in the measure the data do not see it, and no face is lit up by
            # the padding's own mismatch (the bright frame of a PSF with light to its box's faces).
            fill_outside(ratio, crop, 1.0)
        x = conv.adjoint(ratio)
        del ratio
        x *= y
        xp.maximum(x, floor, out=x)
        if not accelerate:
            y = x
            continue
        v: Array | None = None
        if adaptive:
            v = x - y
            xp.maximum(v, floor, out=v)
        if it == 0:
            y = x
        else:
            if adaptive:
                # Sums over the edge-padded data as published, not over the zero guard.
                assert v_prev is not None and v is not None  # set on every iteration once adaptive
                vp, vc = v_prev[conv.region], v[conv.region]
                num = _plane_sum(vp * vc, ndim_psf, xp)
                den = _plane_sum(vp * vp, ndim_psf, xp) + 1e-10
                a = xp.clip(num / den, 1e-6, 1.0).astype(xp.float32)
            else:
                a = xp.float32(schedule_alpha(it))
            y = x - x_prev
            y *= a
            y += x
            xp.maximum(y, floor, out=y)
        x_prev, v_prev = x, v
        if snapshots is not None and it + 1 in snapshots and it + 1 < iterations:
            snapshots[it + 1] = xp.maximum(y[crop], 0).astype(xp.float32)
    out = y[crop]
    return xp.maximum(out, 0).astype(xp.float32, copy=False)


def deconv_halo(
    psf_shape: Sequence[int], iterations: int, kind: str = "rl", step: Sequence[int] | None = None
) -> tuple[int, ...]:
    """Halo per axis that makes blockwise iterative deconvolution equal the whole volume.

    Each iteration couples a voxel to its neighbours twice through the PSF
    (``H`` then ``H^T``), so the depth is counted in the PSF's half-support
    ``n // 2`` per axis, as dask-image derives ``depth`` from a kernel, times a
    factor that grows with the square root of the iteration count (influence
    spreads like a random walk of PSF-sized steps). The factors are measured
    (``benchmarks/measure_step5_halo.py``, ``docs/step5_blocks.md``): about
    1e-5 of the maximum for 7 and 20 iterations with a Gaussian PSF;
    iterations with momentum (``"rl-schedule"``, ``"landweber"``) spread
    further than plain Richardson-Lucy (``"rl"``). The Wiener-Butterworth back
    projector (``"wb"``, 1-3 iterations) on the mirror path is a finite kernel
    of :func:`backprojector_half_support` (2 PSF half-supports), so its halo
    is the light cone of the iteration itself: ``iterations x (PSF
    half-support + kernel half-support)`` (``H`` then ``B`` per iteration),
    3 PSF half-supports per iteration; blocks then equal the whole volume up
    to float32 rounding, measured <= 2e-6 of the maximum with Gaussian and
    Born-Wolf PSFs (``benchmarks/measure_wb_blocks.py``,
    ``docs/backprojector.md``). The
    adaptive Biggs-Andrews alpha is global: no halo makes blocks exact for it.

    Parameters
    ----------
    psf_shape : sequence of int
        Shape of the PSF, one entry per blocked axis.
    iterations : int
        Iterations of the solver.
    kind : {"rl", "rl-schedule", "landweber", "wb"}
        Plain Richardson-Lucy, accelerated with ``alpha="schedule"``, Landweber,
        or Richardson-Lucy with the Wiener-Butterworth back projector.
    step : sequence of int, optional
        The PSF's step per axis (:func:`psf_step` of the PSF array) in place of
        its half-support, for the iterative kinds: a PSF whose light reaches its
        box's faces needs more halo than its box says (the NA 1.1 widefield
        model at 0.3/0.1 µm: 2.2e-4 of the maximum with its half-support, 5e-7 with
        1.9 times it, docs/step5_blocks.md). The light cone of ``"wb"`` is exact
        as it is.

    Returns
    -------
    tuple of int, one halo width per axis

    Examples
    --------
    >>> from bigdecon.solvers.richardson_lucy import deconv_halo
    >>> deconv_halo((25, 15, 15), 7, "rl")
    (36, 21, 21)
    >>> deconv_halo((25, 15, 15), 20, "rl-schedule")
    (49, 29, 29)
    >>> deconv_halo((25, 15, 15), 2, "wb")
    (72, 42, 42)
    """
    if kind == "rl":
        factor = 2.0 + math.sqrt(iterations / 7.0)
    elif kind in ("rl-schedule", "landweber"):
        factor = 1.5 + 1.5 * math.sqrt(iterations / 7.0)
    elif kind == "wb":
        # Exact by the light cone: each iteration reaches one PSF and one back projector
        # kernel further (benchmarks/measure_wb_blocks.py, docs/backprojector.md).
        psf = psf_half_support(psf_shape)
        return tuple(iterations * (h + r) for h, r in zip(psf, backprojector_half_support(psf_shape)))
    else:
        raise ValueError(f"kind must be 'rl', 'rl-schedule', 'landweber' or 'wb', got {kind!r}")
    reach = psf_half_support(psf_shape) if step is None else tuple(int(h) for h in step)
    return tuple(int(math.ceil(factor * h - 1e-9)) for h in reach)


def pass_problem(
    image: ArrayLike, psf: ArrayLike, state: tuple[Array, Array] | None, first: int
) -> tuple[ModuleType, Array, _MirrorConvolver]:
    """``(xp, image, convolver)`` of one pass of a run split into passes, checked: the mirror boundary
    (a state on the image's own grid) and a state exactly when the pass is not the first."""
    xp = get_xp(image)
    f, conv, _crop = padded_problem(image, psf, None, "auto")
    if not isinstance(conv, _MirrorConvolver):
        raise ValueError("iterations split into passes need the mirror boundary (a 3-D PSF symmetric on every axis)")
    if (state is None) != (first == 0):
        raise ValueError(f"a state is needed after the first iteration and only then (first={first})")
    return xp, f, conv


def rl_schedule_steps(
    image: ArrayLike,
    psf: ArrayLike,
    iterations: int,
    state: tuple[Array, Array] | None = None,
    first: int = 0,
) -> tuple[Array, Array]:
    """Iterations ``first .. first + iterations - 1`` of :func:`richardson_lucy` with ``alpha="schedule"``
    on the mirror path, from a state and back to one: a run split into passes.

    The state is ``(y, x_prev)``, the estimate after the last iteration and the
    iteration's unextrapolated ``x`` (``None`` before the first iteration,
    ``first`` 0); ``y`` is what a run of that many iterations returns. Nothing
    else carries from one iteration to the next (the schedule's alpha depends
    on the iteration number only), so passes of ``k`` iterations chained
    through the state compute what one call computes, to the bit, and a block
    of one pass needs only the light cone of its own iterations as its halo:
    ``2 * iterations`` PSF half-supports.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon import gaussian_psf
    >>> from bigdecon.solvers.richardson_lucy import richardson_lucy, rl_schedule_steps
    >>> vol = np.random.default_rng(0).random((16, 24, 24), np.float32)
    >>> psf = gaussian_psf((3.0, 2.0, 2.0))
    >>> state = rl_schedule_steps(vol, psf, 3)
    >>> y, _ = rl_schedule_steps(vol, psf, 4, state, first=3)
    >>> bool(np.array_equal(y, richardson_lucy(vol, psf, 7, alpha="schedule")))
    True
    """
    xp, f, conv = pass_problem(image, psf, state, first)
    floor = xp.float32(FLOOR)
    y, x_prev = (f, None) if state is None else (xp.asarray(state[0]), xp.asarray(state[1]))
    for it in range(first, first + iterations):
        ratio = conv.forward(y)
        xp.maximum(ratio, floor, out=ratio)
        xp.divide(f, ratio, out=ratio)
        x = conv.adjoint(ratio)
        del ratio
        x *= y
        xp.maximum(x, floor, out=x)
        if it == 0:
            y = x
        else:
            y = x - x_prev
            y *= xp.float32(schedule_alpha(it))
            y += x
            xp.maximum(y, floor, out=y)
        x_prev = x
    assert x_prev is not None  # at least one iteration ran or a state came in
    return y, x_prev
