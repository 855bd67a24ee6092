"""DCT-II of ``(k, y, x)`` arrays, shared by the solvers whose boundary is a mirror.

The DCT-II diagonalises every operator that commutes with a half-sample
symmetric (mirror) extension: the sparse-Hessian step's second differences
and, in Richardson-Lucy and Landweber, convolution with a PSF that is
symmetric along each axis. Such an operator is ``IDCT(lam * DCT(.))`` with
one real eigenvalue ``lam`` per mode: no padding, no complex arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from .._backend import fft_module, fft_workers
from .._types import Array, ArrayLike

__all__ = ["DCT3", "mirror_eigenvalues"]


def _fused():
    """The Numba kernels, imported on first use: a driver that only plans does not load Numba."""
    from . import _fused_cpu

    return _fused_cpu


class DCT3:
    """3-D DCT-II and its inverse for a ``(k, y, x)`` block.

    y and x go through ``dctn``; a short k axis (the usual time-lapse block)
    is transformed by a small matrix product instead, which reads memory once
    where a strided length-5 transform costs as much as the whole y/x part.
    """

    _MATMUL_MAX = 32

    def __init__(self, shape, xp: ModuleType):
        self.xp = xp
        self.fft = fft_module(xp)
        self.kw = fft_workers(xp, math.prod(shape))
        n = shape[0]
        self.k_axis = n > 1
        self.matrix = None
        if 1 < n <= self._MATMUL_MAX:
            i = np.arange(n)
            # scipy's unnormalised DCT-II: y_k = 2 sum_n x_n cos(pi k (2n + 1) / 2N)
            c = 2.0 * np.cos(np.pi * np.outer(i, 2 * i + 1) / (2 * n))
            self.matrix = xp.asarray(c.astype(np.float32))
            self.inverse_matrix = xp.asarray(np.linalg.inv(c).astype(np.float32))

    def _along_k(self, a, m):
        n = a.shape[0]
        return (m @ a.reshape(n, -1)).reshape(a.shape)

    def forward(self, a):
        spec = self.fft.dctn(a, type=2, axes=(1, 2), **self.kw)
        if not self.k_axis:
            return spec
        if self.matrix is not None:
            return self._along_k(spec, self.matrix)
        return self.fft.dct(spec, type=2, axis=0, **self.kw)

    def inverse(self, spec):
        if self.k_axis:
            if self.matrix is not None:
                spec = self._along_k(spec, self.inverse_matrix)
            else:
                spec = self.fft.idct(spec, type=2, axis=0, **self.kw)
        return self.fft.idctn(spec, type=2, axes=(1, 2), **self.kw)

    def _in_place(self, transform, a, **kwargs):
        out = transform(a, type=2, overwrite_x=True, **kwargs, **self.kw)
        if out.ctypes.data != a.ctypes.data:  # scipy writes float32 in place; never rely on it silently
            np.copyto(a, out)

    def solve_in_place(self, a, inv_denom, coupled: bool) -> None:
        """NumPy: ``a = IDCT(inv_denom * DCT(a))`` without temporaries (scipy, Numba along a short k).

        Without coupling ``inv_denom`` does not depend on k, so k is not transformed at all.
        """
        self._in_place(self.fft.dctn, a, axes=(1, 2))
        if coupled and self.matrix is not None:
            _fused().solve_short_k(a, self.matrix, self.inverse_matrix, inv_denom)
        elif coupled and self.k_axis:
            self._in_place(self.fft.dct, a, axis=0)
            a *= inv_denom
            self._in_place(self.fft.idct, a, axis=0)
        else:
            a *= inv_denom
        self._in_place(self.fft.idctn, a, axes=(1, 2))

    def apply(self, a, eigenvalues, coupled: bool = True):
        """``IDCT(eigenvalues * DCT(a))``: in place on NumPy (``a`` returned), a new array on CuPy.

        ``eigenvalues`` is ``(k, y, x)``, or ``(1, y, x)`` with ``coupled=False``
        (k not transformed: one plane at a time).
        """
        if self.xp is np and (self.matrix is None or not coupled or _fused().available()):
            self.solve_in_place(a, eigenvalues, coupled and self.k_axis)
            return a
        if not coupled:
            spec = self.fft.dctn(a, type=2, axes=(1, 2), **self.kw)
            spec *= eigenvalues
            return self.fft.idctn(spec, type=2, axes=(1, 2), **self.kw)
        spec = self.forward(a)
        spec *= eigenvalues
        return self.inverse(spec)


def mirror_eigenvalues(psf: ArrayLike, shape: Sequence[int], xp: ModuleType = np) -> Array:
    """DCT-II eigenvalues of convolution with ``psf`` under a mirror boundary, float32.

    For a centred kernel ``k`` of odd size, symmetric along each axis, on an
    axis of length ``N`` the half-sample symmetric extension makes convolution
    the operator ``IDCT(lam * DCT(.))`` with
    ``lam(m) = sum_j k(j) prod_a cos(pi m_a j_a / N_a)`` over the kernel's
    offsets ``j`` from its centre (any kernel size: the cosine is
    ``2N``-periodic, which is the repeated mirror). One cosine matrix per axis
    contracts the kernel (float64, then float32); no ``2N``-sized transform.
    ``shape`` are the lengths of the PSF's axes, the last ``psf.ndim`` of the
    array.
    """
    k = np.asarray(psf.get() if hasattr(psf, "get") else psf, dtype=np.float64)
    shape = tuple(int(n) for n in shape)
    if len(shape) != k.ndim:
        raise ValueError(f"eigenvalue shape {shape} has {len(shape)} axes, the PSF {k.ndim}")
    lam = k
    for axis, n in enumerate(shape):
        p = k.shape[axis]
        offsets = np.arange(p) - p // 2
        cosines = np.cos(np.pi * np.outer(np.arange(n), offsets) / n)  # (n, p)
        if axis == len(shape) - 1:  # this contraction yields the full volume: float32
            lam, cosines = lam.astype(np.float32), cosines.astype(np.float32)
        # Contract this axis of the kernel with its cosines; the new axis goes last, so
        # after every axis the order is (m_0, m_1, ...) again.
        lam = np.tensordot(lam, cosines, axes=([0], [1]))
    return xp.asarray(np.ascontiguousarray(lam, dtype=np.float32))
