"""PSF distilled from bead stacks: synthetic stacks from generators written here, and a real confocal stack."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from scipy.optimize import brentq
from scipy.special import j1

from bigdecon.errors import InputError
from bigdecon.solvers.beads import average_beads

GAUSS_FWHM = (7.0, 4.0, 4.5)  # z, y, x pixels


def gaussian_bead(z, y, x, centre, fwhm=GAUSS_FWHM):
    r2 = sum(((c - c0) / w) ** 2 for c, c0, w in zip((z, y, x), centre, fwhm))
    return np.exp(-4 * np.log(2) * r2)


def airy_sinc_bead(z, y, x, centre, scale=(2.0, 1.6, 1.6)):
    """A separable scalar model with side lobes: [2 J1(v)/v]^2 laterally times sinc^2 axially."""
    u = (z - centre[0]) / scale[0]
    v = np.hypot((y - centre[1]) / scale[1], (x - centre[2]) / scale[2])
    v = np.where(v < 1e-9, 1e-9, v)
    return (2 * j1(v) / v) ** 2 * np.sinc(u / np.pi) ** 2


def airy_sinc_fwhm(scale=(2.0, 1.6, 1.6)):
    """True half-maximum widths of airy_sinc_bead, from its formula (root finding)."""
    lateral = 2 * brentq(lambda v: (2 * j1(v) / v) ** 2 - 0.5, 0.1, 3.0)
    axial = 2 * brentq(lambda u: np.sinc(u / np.pi) ** 2 - 0.5, 0.1, 3.0)
    return (axial * scale[0], lateral * scale[1], lateral * scale[2])


def render(shape, beads, model, pedestal=100.0, reach=(20, 24, 24)):
    """Noise-free image: each bead (centre, peak) drawn in a window around it, on a flat pedestal."""
    image = np.full(shape, pedestal)
    for centre, peak in beads:
        lo = [max(int(c) - r, 0) for c, r in zip(centre, reach)]
        hi = [min(int(c) + r + 1, s) for c, r, s in zip(centre, reach, shape)]
        window = tuple(slice(a, b) for a, b in zip(lo, hi))
        z, y, x = np.mgrid[window]
        image[window] += peak * model(z, y, x, centre)
    return image


def bead_stack(model, seed=0, shape=(40, 160, 160), full_scale=65535, saturated_peak=2e5):
    """Beads on a jittered 5x5 grid at sub-pixel positions; one at the edge, one saturated, one touching pair."""
    rng = np.random.default_rng(seed)
    beads, isolated = [], []
    for gy in range(5):
        for gx in range(5):
            centre = (rng.uniform(17, 23), 20 + 30 * gy + rng.uniform(-3, 3), 20 + 30 * gx + rng.uniform(-3, 3))
            beads.append((centre, rng.uniform(400, 1500)))
            isolated.append(centre)
    edge = beads.pop(0)[0]
    beads.insert(0, ((edge[0], edge[1], 4.3), 1000.0))  # its box leaves the stack
    beads[1] = (beads[1][0], saturated_peak)  # clipped at full_scale
    pair = beads[6][0]
    beads.append(((pair[0], pair[1], pair[2] + 7.0), 1000.0))  # 1.5 FWHM from bead 6
    isolated = [c for k, c in enumerate(isolated) if k not in (0, 1, 6)]
    image = rng.poisson(render(shape, beads, model)).astype(np.float64)
    for _ in range(5):  # hot pixels
        image[tuple(rng.integers(0, s) for s in shape)] = 3000
    return np.clip(image, 0, full_scale).astype(np.uint16), isolated, beads


def test_gaussian_beads_widths_positions_rejections():
    stack, isolated, beads = bead_stack(gaussian_bead)
    psf, report = average_beads(stack, voxel_size=(0.3, 0.1, 0.1))
    assert psf.dtype == np.float32 and abs(float(psf.sum()) - 1) < 1e-5
    assert report["rejected"] == {"saturated": 1, "edge": 1, "crowded": 2, "shape": 0}
    assert report["used"] == len(isolated) == 22 and report["found"] == 26
    assert report["hot_pixels"] >= 5
    assert np.allclose(report["rejected_positions"]["saturated"][0], beads[1][0], atol=1.5)
    for truth, measured in zip(GAUSS_FWHM, report["fwhm_px"]):
        assert abs(measured / truth - 1) < 0.05, report["fwhm_px"]
    assert np.allclose(report["fwhm_um"], np.multiply(report["fwhm_px"], (0.3, 0.1, 0.1)))
    # Every used bead at its true sub-pixel position; the result centred on its middle voxel.
    used = np.array(report["positions"])
    nearest = [np.abs(used - c).max(axis=1).min() for c in isolated]
    assert max(nearest) < 0.15, nearest
    grid = np.indices(psf.shape)
    centroid = [(g * psf).sum() for g in grid]
    assert np.allclose(centroid, [s // 2 for s in psf.shape], atol=0.1)


@pytest.mark.parametrize("register, method", [("correlation", "mean"), ("centroid", "median")])
def test_airy_sinc_beads_with_side_lobes(register, method):
    # A 12-bit camera: the saturated bead's far rings stay below the others (unlike one 150x brighter).
    stack, isolated, _ = bead_stack(airy_sinc_bead, seed=1, full_scale=4095, saturated_peak=6000)
    psf, report = average_beads(stack, saturation=4095, register=register, method=method)
    assert report["used"] == len(isolated) and report["rejected"]["crowded"] == 2
    for truth, measured in zip(airy_sinc_fwhm(), report["fwhm_px"]):
        assert abs(measured / truth - 1) < 0.05, (airy_sinc_fwhm(), report["fwhm_px"])
    assert np.unravel_index(int(np.argmax(psf)), psf.shape) == tuple(s // 2 for s in psf.shape)


def test_widefield_beads_lobes_and_cone_not_taken_for_beads():
    """Born-Wolf widefield beads (NA 1.4 oil): their axial lobes and out-of-focus cone reach past the box;
    none of their maxima counts as a bead, and the faces' light does not narrow the average."""
    from bigdecon.solvers.psf import psf_fwhm, widefield_psf

    psf = widefield_psf((41, 41, 41), 1.4, 0.52, 1.518, 0.1, 0.2)
    volume = np.full((64, 200, 200), 100.0)
    for cy in (40, 100, 160):
        for cx in (40, 100, 160):
            volume[12:53, cy - 20 : cy + 21, cx - 20 : cx + 21] += 1000 * psf / psf.max()
    stack = np.random.default_rng(5).poisson(volume).astype(np.uint16)
    _, report = average_beads(stack)
    assert report["found"] == report["used"] == 9
    for truth, measured in zip(psf_fwhm(psf), report["fwhm_px"]):
        assert abs(measured / truth - 1) < 0.05, (psf_fwhm(psf), report["fwhm_px"])


def test_shape_outlier_and_explicit_saturation():
    """A cluster (three overlapping beads in a row) is rejected for its shape; a 12-bit saturation level is honoured."""
    rng = np.random.default_rng(3)
    beads = [
        ((20.0, 30 + 50 * i + rng.uniform(), 30 + 50 * j + rng.uniform()), 800.0) for i in range(3) for j in range(3)
    ]
    cluster = beads[4][0]
    beads += [((cluster[0], cluster[1], cluster[2] + d), 800.0) for d in (2.5, 5.0)]
    beads[8] = (beads[8][0], 9000.0)
    image = np.clip(rng.poisson(render((40, 160, 160), beads, gaussian_bead)), 0, 4095).astype(np.uint16)
    psf, report = average_beads(image, saturation=4095)
    assert report["rejected"] == {"saturated": 1, "edge": 0, "crowded": 0, "shape": 1}
    assert np.allclose(report["rejected_positions"]["shape"][0], cluster, atol=3)
    assert report["used"] == 7


def test_bad_stacks_say_why():
    with pytest.raises(InputError, match="no bead found"):
        average_beads(np.zeros((20, 30, 30), np.uint16))
    with pytest.raises(InputError, match="2-D or 3-D"):
        average_beads(np.zeros((4, 20, 30, 30)))
    only_edge = render((30, 60, 60), [((15.0, 30.0, 5.0), 1000.0)], gaussian_bead)
    with pytest.raises(InputError, match="no usable bead.*edge 1"):
        average_beads(only_edge)
    with pytest.raises(InputError, match="box must be odd"):
        average_beads(only_edge, box=(10, 11, 11))


def test_real_confocal_beads(realdata):
    """The MPI-CBG confocal stack: 4 beads at z 0.125, y/x 0.022 µm; a centred PSF of confocal widths."""
    stack = tifffile.imread(realdata / "mpicbg_confocal_beads" / "Bead_Image1_crop.tif")
    psf, report = average_beads(stack, voxel_size=(0.125, 0.022, 0.022))
    assert report["found"] == 4 and report["used"] == 4
    # Centred: through the middle voxel, the half-maximum crossings lie symmetrically about it.
    middle = tuple(s // 2 for s in psf.shape)
    for axis in range(3):
        line = psf[middle[:axis] + (slice(None),) + middle[axis + 1 :]]
        above = np.flatnonzero(line >= line.max() / 2)
        assert abs((above.min() + above.max()) / 2 - middle[axis]) <= 1, (axis, line)
    z, y, x = report["fwhm_um"]
    # A confocal bead image at high NA: about 0.5 µm axially, 0.15-0.25 µm laterally (measured 0.50, 0.22, 0.17).
    assert 0.4 < z < 0.6 and 0.15 < y < 0.25 and 0.15 < x < 0.25
