"""Deskew of skewed light-sheet stacks: geometry, blocks, the pass, skewed-space deconvolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from bigdecon.solvers.deskew import SkewGeometry, deskew, deskew_block, skew_psf, source_span


def reference_deskew(raw: np.ndarray, angle: float, dz: float, dx: float, fill: float = 0.0) -> np.ndarray:
    """An independent deskew: each plane padded with ``fill`` and moved by scipy.ndimage.shift."""
    nz, _, nx = raw.shape
    step = dz * math.cos(math.radians(abs(angle))) / dx
    width = nx + math.ceil((nz - 1) * step - 1e-9)
    out = np.empty((nz, raw.shape[1], width), np.float32)
    for k in range(nz):
        move = k * step if angle > 0 else (nz - 1 - k) * step
        padded = np.pad(raw[k].astype(np.float64), ((0, 0), (1, width - nx + 1)), constant_values=fill)
        moved = ndimage.shift(padded, (0, move), order=1, mode="constant", cval=fill)
        out[k] = moved[:, 1 : 1 + width]
    return out


@pytest.mark.parametrize("angle", [31.5, -31.5, 60.0])
def test_deskew_equals_an_independent_plane_by_plane_shift(angle):
    rng = np.random.default_rng(3)
    raw = rng.uniform(100, 1000, (12, 9, 40)).astype(np.float32)
    got = deskew(raw, angle, 0.4, 0.104, fill=7.0)
    want = reference_deskew(raw, angle, 0.4, 0.104, fill=7.0)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * raw.max()


def test_negative_angle_mirrors_and_y_axis_transposes():
    rng = np.random.default_rng(4)
    raw = rng.uniform(0, 1, (6, 5, 20)).astype(np.float32)
    pos = deskew(raw, 60.0, 2.0, 0.5)  # 2 px per plane: the mirror is exact on whole pixels
    neg = deskew(raw[:, :, ::-1], -60.0, 2.0, 0.5)
    np.testing.assert_allclose(neg[:, :, ::-1], pos, atol=1e-6)
    along_y = deskew(np.swapaxes(raw, 1, 2), 60.0, 2.0, 0.5, axis="y")
    np.testing.assert_array_equal(np.swapaxes(along_y, 1, 2), pos)


def test_blocks_with_their_sheared_halo_equal_the_whole_volume():
    rng = np.random.default_rng(5)
    raw = rng.uniform(0, 1, (17, 4, 50)).astype(np.float32)
    for angle in (31.5, -31.5):
        g = SkewGeometry(angle, 0.4, 0.104, 17, 50)
        whole = deskew(raw, angle, 0.4, 0.104)
        for ka in range(0, 17, 5):
            kb = min(17, ka + 5)
            for ja in range(0, g.out_width, 13):
                jb = min(g.out_width, ja + 13)
                lo, hi = source_span(g, (ka, kb), (ja, jb))
                block = deskew_block(raw[ka:kb, :, lo:hi], g, (ka, kb), (ja, jb), lo)
                np.testing.assert_array_equal(block, whole[ka:kb, :, ja:jb])


def test_skewed_psf_deskews_back_to_the_sample_frame_psf():
    from bigdecon.solvers import gaussian_psf

    p = gaussian_psf((5, 3, 3))
    q = skew_psf(p, 31.5, 0.4, 0.104)
    assert abs(float(q.sum()) - 1) < 1e-5
    # Deskewing the skewed PSF lines its planes up again: the peak of every plane at one column.
    back = deskew(q, 31.5, 0.4, 0.104)
    peaks = {int(np.argmax(back[k, back.shape[1] // 2])) for k in range(q.shape[0] // 2 - 4, q.shape[0] // 2 + 5)}
    assert max(peaks) - min(peaks) <= 1
