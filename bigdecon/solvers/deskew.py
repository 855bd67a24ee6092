"""Deskew of stage-scanned light-sheet stacks (LLSM, OPM, diSPIM), whole or on blocks.

A stage-scanned stack is recorded **skewed**: plane ``k`` is displaced along x
(or y) by ``k * shear`` pixels relative to plane 0, with
``shear = dz * cos(theta) / dx`` (``dz`` the stage step, ``dx`` the pixel size,
``theta`` the angle between the scan direction and the sheet, 31.5 degrees on a
classic lattice light-sheet; the convention of cudaDecon and LLSpy). The
deskewed volume puts every plane where it belongs:

``out[k, y, j] = raw[k, y, j - shift(k)]``, ``shift(k) = k * shear + origin``

with ``origin = 0`` for ``theta > 0`` and ``(nz - 1) * |shear|`` for
``theta < 0`` (a negative angle mirrors the shear), the output
``nx + ceil((nz - 1) * |shear|)`` wide and its planes ``dz * sin(theta)``
apart. Values between pixels are linear interpolations along x (as cudaDecon),
with the input extended by ``fill`` outside its columns, so the voids (the
triangles no plane covers) are ``fill`` and the edges blend into it over one
pixel.

Every output voxel is the same arithmetic of the same two input voxels
whatever block it is computed in (:func:`deskew_block` with
:func:`source_span`), so blocks equal the whole volume exactly.

:func:`skew_psf` is the converse for a PSF: a PSF in the sample (deskewed)
frame, sampled on the deskewed grid ``(dz * sin(theta), dy, dx)``, sheared into
the frame of the stack as recorded, where convolving the skewed truth with it
gives the recorded stack (the shear is a linear map of determinant 1, so it
commutes with convolution).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "RotateGeometry",
    "SkewGeometry",
    "deskew",
    "deskew_block",
    "move_planes",
    "plane_drift",
    "rotate_block",
    "skew_psf",
    "source_span",
]


@dataclass(frozen=True)
class SkewGeometry:
    """The shear of a skewed stack along one axis.

    Parameters
    ----------
    angle : float
        ``theta`` in degrees (negative mirrors the shear).
    dz, dx : float
        Stage step and pixel size along the skew axis, in one unit.
    nz, nx : int
        Planes, and pixels along the skew axis, of the skewed stack.

    Examples
    --------
    >>> g = SkewGeometry(31.5, 0.4, 0.104, 100, 256)
    >>> round(g.shear, 4), g.out_width, round(g.z_step, 4)
    (3.2794, 581, 0.209)
    >>> SkewGeometry(-31.5, 0.4, 0.104, 100, 256).shift(0) == g.shift(99)
    True
    """

    angle: float
    dz: float
    dx: float
    nz: int
    nx: int

    @property
    def shear(self) -> float:
        """Pixels along the skew axis per plane (negative for a negative angle)."""
        return self.dz * math.cos(math.radians(self.angle)) / self.dx * (1 if self.angle >= 0 else -1)

    @property
    def origin(self) -> float:
        """Shift of plane 0: 0 for a positive angle, ``(nz - 1) * |shear|`` for a negative one."""
        return -min(0.0, (self.nz - 1) * self.shear)

    @property
    def out_width(self) -> int:
        """Width of the deskewed output along the skew axis."""
        # A hair of tolerance: 1e-9 px of rounding must not add a column.
        return self.nx + math.ceil((self.nz - 1) * abs(self.shear) - 1e-9)

    @property
    def z_step(self) -> float:
        """Distance of the deskewed planes, ``dz * sin(|theta|)``."""
        return self.dz * abs(math.sin(math.radians(self.angle)))

    def shift(self, k: int) -> float:
        """Where plane ``k`` moves along the skew axis, in pixels."""
        return k * self.shear + self.origin


def source_span(geometry: SkewGeometry, planes: tuple[int, int], cols: tuple[int, int]) -> tuple[int, int]:
    """Input columns an output block of ``planes`` x ``cols`` reads (its halo follows the shear).

    Clipped to the input; ``(a, a)`` (empty) when the block lies in a void.

    Examples
    --------
    >>> g = SkewGeometry(31.5, 0.4, 0.104, 100, 256)
    >>> source_span(g, (10, 20), (100, 200))
    (37, 168)
    >>> source_span(g, (0, 1), (300, 400))
    (256, 256)
    """
    (ka, kb), (ja, jb) = planes, cols
    shifts = (geometry.shift(ka), geometry.shift(kb - 1))
    lo = math.floor(ja - max(shifts))
    hi = math.floor(jb - 1 - min(shifts)) + 2  # the right neighbour of the last sample
    lo, hi = max(0, lo), min(geometry.nx, hi)
    return (lo, hi) if lo < hi else (min(lo, geometry.nx), min(lo, geometry.nx))


def deskew_block(
    window: np.ndarray,
    geometry: SkewGeometry,
    planes: tuple[int, int],
    cols: tuple[int, int],
    x0: int,
    fill: float = 0.0,
) -> np.ndarray:
    """Output columns ``cols`` of planes ``planes`` from ``window``: input columns ``x0...`` of those planes.

    ``window`` is ``(k, ..., x)`` (the skew axis last, any axes between),
    holding at least :func:`source_span`'s columns. Returns float32.

    Examples
    --------
    >>> g = SkewGeometry(45.0, 2 ** 0.5, 1.0, 3, 4)  # one pixel per plane
    >>> raw = np.arange(12, dtype=np.float32).reshape(3, 4)
    >>> deskew_block(raw, g, (0, 3), (0, g.out_width), 0)
    array([[ 0.,  1.,  2.,  3.,  0.,  0.],
           [ 0.,  4.,  5.,  6.,  7.,  0.],
           [ 0.,  0.,  8.,  9., 10., 11.]], dtype=float32)
    """
    ka, kb = planes
    out = np.empty((kb - ka, *window.shape[1:-1], cols[1] - cols[0]), np.float32)
    for i, k in enumerate(range(ka, kb)):
        out[i] = _shifted(window[i], geometry.shift(k), cols, x0, geometry.nx, fill)
    return out


def _shifted(plane: np.ndarray, shift: float, cols: tuple[int, int], x0: int, nx: int, fill: float) -> np.ndarray:
    """Columns ``cols`` of ``plane`` moved by ``shift`` px (linear; ``fill`` outside the input's ``0..nx-1``).

    ``plane`` holds input columns ``x0...``. With ``shift = m + f`` (``m``
    whole, ``0 <= f < 1``) output column ``j`` is ``f * in[j - m - 1] +
    (1 - f) * in[j - m]``: two slices and weights of the plane alone, so
    every block computes a voxel from the same two values with the same weights.
    """
    m = math.floor(shift + 1e-9)  # a shift a rounding error from whole is whole
    f = max(0.0, shift - m) if shift - m > 1e-9 else 0.0
    start, stop = cols[0] - m - 1, cols[1] - m  # the input columns the output columns read
    seg = np.full((*plane.shape[:-1], stop - start), fill, np.float32)
    lo, hi = max(start, 0, x0), min(stop, nx, x0 + plane.shape[-1])
    if hi > lo:
        seg[..., lo - start : hi - start] = plane[..., lo - x0 : hi - x0]
    out = seg[..., 1:] * np.float32(1 - f)
    out += seg[..., :-1] * np.float32(f)
    return out


def deskew(volume: np.ndarray, angle: float, dz: float, dx: float, axis: str = "x", fill: float = 0.0) -> np.ndarray:
    """Deskew a whole skewed ``(z, y, x)`` stack (see the module's docstring for the geometry).

    Parameters
    ----------
    volume : ndarray
        ``(z, y, x)`` as recorded.
    angle : float
        ``theta`` in degrees; negative mirrors the shear.
    dz, dx : float
        Stage step and pixel size along ``axis``, in one unit.
    axis : {"x", "y"}
        The axis the planes move along.
    fill : float
        Value of the voids.

    Returns
    -------
    ndarray of float32
        ``(z, y, x + ceil((z - 1) * dz * |cos theta| / dx))`` (y widened for
        ``axis="y"``); its planes lie ``dz * sin(theta)`` apart.

    Examples
    --------
    >>> out = deskew(np.ones((5, 8, 16), np.float32), 31.5, 0.4, 0.104)
    >>> out.shape, float(out[0, 0, 0]), float(out[0, 0, -1]), float(out[4, 0, -2])
    ((5, 8, 30), 1.0, 0.0, 1.0)
    """
    if axis not in ("x", "y"):
        raise ValueError(f"axis must be x or y, got {axis!r}")
    vol = np.asarray(volume)
    if vol.ndim != 3:
        raise ValueError(f"deskew needs a (z, y, x) stack, got shape {vol.shape}")
    if axis == "y":
        return np.swapaxes(deskew(np.swapaxes(vol, 1, 2), angle, dz, dx, "x", fill), 1, 2)
    g = SkewGeometry(float(angle), float(dz), float(dx), vol.shape[0], vol.shape[2])
    return deskew_block(vol, g, (0, g.nz), (0, g.out_width), 0, fill)


def skew_psf(psf: np.ndarray, angle: float, dz: float, dx: float, axis: str = "x") -> np.ndarray:
    """A sample-frame ``(z, y, x)`` PSF sheared into the frame of the skewed stack.

    ``psf`` is sampled on the deskewed grid (planes ``dz * sin(theta)`` apart,
    centred); the result ``Q[dk, y, i] = P[dk, y, i + dk * shear]`` (linear
    along the skew axis, zero outside), widened so nothing is cut, centred and
    normalised to sum 1.

    Examples
    --------
    >>> from bigdecon.solvers import gaussian_psf
    >>> q = skew_psf(gaussian_psf((5, 3, 3)), 31.5, 0.4, 0.104)
    >>> q.shape, int(np.argmax(q[q.shape[0] // 2 + 4, q.shape[1] // 2])) - q.shape[2] // 2
    ((21, 15, 81), -13)
    """
    if axis == "y":
        return np.swapaxes(skew_psf(np.swapaxes(psf, 1, 2), angle, dz, dx, "x"), 1, 2)
    p = np.asarray(psf, dtype=np.float32)
    nzp, _, nxp = p.shape
    half_z, half_x = nzp // 2, nxp // 2
    g = SkewGeometry(float(angle), float(dz), float(dx), nzp, nxp)
    grow = math.ceil(half_z * abs(g.shear))
    half = half_x + grow
    out = np.zeros((nzp, p.shape[1], 2 * half + 1), np.float32)
    for i in range(nzp):
        # Q's column t (t - half from the centre) samples P's plane at t - half + (i - half_z) * shear + half_x.
        move = half - half_x - (i - half_z) * g.shear
        out[i] = _shifted(p[i], move, (0, 2 * half + 1), 0, nxp, 0.0)
    return (out / out.sum()).astype(np.float32)


def plane_drift(kernel: np.ndarray) -> tuple[float, float]:
    """How far a 3-D kernel's planes move per plane along y and x: the slopes of their centroids.

    A weighted least-squares fit (weights: each plane's sum) of the centroid of
    plane ``dk`` against ``dk``. A PSF sheared by :func:`skew_psf` drifts by
    ``-shear`` px per plane along the skew axis; a sample-frame PSF by 0.

    Examples
    --------
    >>> from bigdecon.solvers import gaussian_psf
    >>> [round(v, 2) for v in plane_drift(skew_psf(gaussian_psf((5, 3, 3)), 31.5, 0.4, 0.104))]
    [0.0, -3.28]
    """
    p = np.asarray(kernel, dtype=np.float64)
    w = p.sum(axis=(1, 2))
    live = w > w.max() * 1e-9
    dk = (np.arange(p.shape[0]) - p.shape[0] // 2)[live]
    weights = w[live]
    slopes = []
    for axis in (1, 2):
        profile = p.sum(axis=3 - axis)[live]  # (planes, this axis)
        centroid = (profile * np.arange(p.shape[axis])).sum(axis=1) / weights
        k_mean = np.average(dk, weights=weights)
        c_mean = np.average(centroid, weights=weights)
        var = float(np.sum(weights * (dk - k_mean) ** 2))
        slopes.append(float(np.sum(weights * (dk - k_mean) * (centroid - c_mean)) / var) if var > 0 else 0.0)
    return slopes[0], slopes[1]


def move_planes(kernel: np.ndarray, drift: Sequence[float], box: Sequence[int] | None = None) -> np.ndarray:
    """Plane ``dk`` of a centred 3-D kernel moved by ``dk * drift`` px along (y, x), linear, float64.

    The result is centred in ``box`` (y, x sizes, odd; default: widened so
    nothing is cut); what falls outside it is dropped. Moving by ``-drift``
    undoes a move by ``drift`` up to the linear interpolation's blur.

    Examples
    --------
    >>> k = np.zeros((3, 1, 5)); k[:, 0, 2] = 1
    >>> move_planes(k, (0.0, 1.0))[:, 0]
    array([[0., 0., 0., 1., 0., 0., 0., 0., 0.],
           [0., 0., 0., 0., 1., 0., 0., 0., 0.],
           [0., 0., 0., 0., 0., 1., 0., 0., 0.]])
    """
    from scipy import ndimage

    p = np.asarray(kernel, dtype=np.float64)
    half_k = p.shape[0] // 2
    if box is None:
        box = [n + 2 * (math.ceil(half_k * abs(d)) + (d != 0)) for n, d in zip(p.shape[1:], drift)]
    out = np.zeros((p.shape[0], *box), np.float64)
    big = [max(b, n) for b, n in zip(box, p.shape[1:])]
    for i in range(p.shape[0]):
        plane = np.zeros(big)
        at = [(b - n) // 2 for b, n in zip(big, p.shape[1:])]
        plane[at[0] : at[0] + p.shape[1], at[1] : at[1] + p.shape[2]] = p[i]
        moved = ndimage.shift(plane, [(i - half_k) * d for d in drift], order=1, mode="constant", cval=0.0)
        cut = [(n - b) // 2 for n, b in zip(big, box)]
        out[i] = moved[cut[0] : cut[0] + box[0], cut[1] : cut[1] + box[1]]
    return out


def deskewed_shape(shape: Sequence[int], geometry: SkewGeometry, axis_index: int) -> tuple[int, ...]:
    """``shape`` with the skew axis widened to :attr:`SkewGeometry.out_width`.

    Examples
    --------
    >>> deskewed_shape((2, 100, 64, 256), SkewGeometry(31.5, 0.4, 0.104, 100, 256), 3)
    (2, 100, 64, 581)
    """
    out = list(shape)
    out[axis_index] = geometry.out_width
    return tuple(out)


@dataclass(frozen=True)
class RotateGeometry:
    """Deskew and rotation to the coverslip frame in one affine map, isotropic voxels of ``dx``.

    The deskewed frame (planes normal to the sheet, ``dz * sin(theta)`` apart)
    is rotated about the lateral axis by ``theta`` so that the stage-scan
    direction becomes the output's x (or y) and the output's z is normal to
    the coverslip, as PetaKit5D's deskew-rotate. Every output voxel samples
    the recorded stack (bilinear in plane and skew axis, exact along the
    lateral axis; ``fill`` outside).

    Examples
    --------
    >>> r = RotateGeometry(SkewGeometry(31.5, 0.4, 0.104, 100, 256))
    >>> r.out_size  # 255 px of sheet at 31.5 deg: 134 px high; 99 steps of 0.4 um and the sheet's 218 px wide
    (134, 599)
    """

    skew: SkewGeometry

    def _trig(self) -> tuple[float, float, float]:
        a = math.radians(abs(self.skew.angle))
        return math.cos(a), math.sin(a), (1.0 if self.skew.angle >= 0 else -1.0)

    def _corners(self) -> tuple[float, float, float, float]:
        """Least and largest (zc, xc) of the deskewed volume, in pixels of ``dx``."""
        g = self.skew
        c, s, sign = self._trig()
        xc, zc = [], []
        for k in (0, g.nz - 1):  # the recorded stack's corners: no void beyond them
            for i in (0, g.nx - 1):
                u, w = i + g.shift(k), k * g.dz * s / g.dx
                xc.append(u * c + sign * w * s)
                zc.append(w * c - sign * u * s)
        return min(zc), max(zc), min(xc), max(xc)

    @property
    def out_size(self) -> tuple[int, int]:
        """Output planes and width along the skew axis."""
        z0, z1, x0, x1 = self._corners()
        return math.floor(z1 - z0 + 1e-9) + 1, math.floor(x1 - x0 + 1e-9) + 1

    def recorded(self, zc: np.ndarray, xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Plane and column of the recorded stack an output (plane, column) samples (float64, broadcast)."""
        g = self.skew
        c, s, sign = self._trig()
        z0, _, x0, _ = self._corners()
        xp, zp = xc + x0, zc + z0  # coverslip coordinates, pixels of dx
        u = c * xp - sign * s * zp
        w = sign * s * xp + c * zp
        k = w * g.dx / (g.dz * s)
        return k, u - (k * g.shear + g.origin)

    def window(self, planes: tuple[int, int], cols: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
        """Recorded planes and columns an output block reads (the affine image of its corners, plus one)."""
        zs = np.array([planes[0], planes[1] - 1], np.float64)[:, None]
        xs = np.array([cols[0], cols[1] - 1], np.float64)[None, :]
        k, i = self.recorded(zs, xs)
        kr = (max(0, math.floor(k.min())), min(self.skew.nz, math.floor(k.max()) + 2))
        ir = (max(0, math.floor(i.min())), min(self.skew.nx, math.floor(i.max()) + 2))
        return (kr[0], max(kr)), (ir[0], max(ir))


def rotate_block(
    window: np.ndarray,
    geometry: RotateGeometry,
    planes: tuple[int, int],
    cols: tuple[int, int],
    origin: tuple[int, int],
    fill: float = 0.0,
) -> np.ndarray:
    """Output planes ``planes`` x columns ``cols`` of the deskew-rotation from ``window`` ``(k, lateral, skew)``.

    ``origin`` is the (plane, column) of the recorded stack ``window`` starts at.

    Examples
    --------
    >>> r = RotateGeometry(SkewGeometry(31.5, 0.4, 0.104, 10, 20))
    >>> nz, nx = r.out_size
    >>> out = rotate_block(np.ones((10, 3, 20), np.float32), r, (0, nz), (0, nx), (0, 0))
    >>> out.shape, float(out.max())
    ((10, 3, 51), 1.0)
    """
    from scipy.ndimage import map_coordinates

    zc = np.arange(planes[0], planes[1], dtype=np.float64)[:, None]
    xc = np.arange(cols[0], cols[1], dtype=np.float64)[None, :]
    k, i = geometry.recorded(zc, xc)
    k, i = k - origin[0], i - origin[1]
    out = np.empty((planes[1] - planes[0], window.shape[1], cols[1] - cols[0]), np.float32)
    if window.shape[0] == 0 or window.shape[2] == 0:
        out[...] = fill
        return out
    data = np.asarray(window, dtype=np.float32)
    for y in range(window.shape[1]):
        plane = data[:, y, :]
        out[:, y, :] = map_coordinates(plane, [k, i], order=1, mode="constant", cval=fill, prefilter=False)
    return out
