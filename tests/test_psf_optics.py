"""PSFs from the optics against the physics they model.

Widths are measured on the computed arrays (cubic-spline half-maximum
crossings, :func:`psf_fwhm`) and compared with the textbook widths of a
diffraction-limited objective: lateral ``0.51 lambda / NA`` (the Airy disc) and
axial ``0.88 lambda / (n - sqrt(n^2 - NA^2))`` (the non-paraxial widefield
formula).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import j1

from bigdecon import InputError
from bigdecon.solvers import confocal_psf, lightsheet_psf, psf_fwhm, psf_size_for, widefield_psf

# (NA, immersion index, pixel size, z step), micrometres; 520 nm emission.
OBJECTIVES = {
    "water 1.1": (1.1, 1.33, 0.1, 0.25),
    "air 0.8": (0.8, 1.0, 0.1, 0.25),
    "oil 1.4": (1.4, 1.518, 0.065, 0.1),
}
WAVELENGTH = 0.52


def lateral_fwhm(na: float, wavelength: float = WAVELENGTH) -> float:
    return 0.51 * wavelength / na


def axial_fwhm(na: float, n: float, wavelength: float = WAVELENGTH) -> float:
    return 0.88 * wavelength / (n - math.sqrt(n * n - na * na))


def psf3d(name: str, wavelength: float = WAVELENGTH, shape=(41, 41, 41)):
    na, n, px, dz = OBJECTIVES[name]
    return widefield_psf(shape, na=na, wavelength=wavelength, refractive_index=n, pixel_size=px, z_step=dz)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_widefield_fwhm_matches_textbook_widths(name):
    na, n, px, dz = OBJECTIVES[name]
    psf = psf3d(name)
    fz, fy, fx = psf_fwhm(psf)
    lat = fy * px / lateral_fwhm(na)
    ax = fz * dz / axial_fwhm(na, n)
    print(f"{name}: lateral FWHM {fy * px:.4f} um ({lat:.3f} x 0.51 l/NA), axial {fz * dz:.4f} um ({ax:.3f} x)")
    assert fx == pytest.approx(fy, rel=1e-6)
    assert 0.9 < lat < 1.1
    assert 0.9 < ax < 1.1


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_widefield_is_normalised_centred_and_symmetric(name):
    psf = psf3d(name, shape=(21, 31, 31))
    assert psf.dtype == np.float32 and psf.shape == (21, 31, 31)
    assert float(psf.sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    assert psf.min() >= 0
    assert np.unravel_index(int(np.argmax(psf)), psf.shape) == (10, 15, 15)
    np.testing.assert_array_equal(psf, psf[::-1])  # +-z
    np.testing.assert_array_equal(psf, psf[:, ::-1])  # y
    np.testing.assert_array_equal(psf, psf[:, :, ::-1])  # x
    np.testing.assert_allclose(psf, psf.transpose(0, 2, 1), rtol=1e-6, atol=1e-12)  # x <-> y


def test_longer_wavelength_widens_by_the_ratio():
    na, n, px, dz = OBJECTIVES["water 1.1"]
    kw = dict(na=na, refractive_index=n, pixel_size=0.04, z_step=0.1)
    blue = psf_fwhm(widefield_psf((41, 41, 41), wavelength=0.46, **kw))
    red = psf_fwhm(widefield_psf((41, 41, 41), wavelength=0.67, **kw))
    ratio = 0.67 / 0.46
    print(f"FWHM red/blue: axial {red[0] / blue[0]:.4f}, lateral {red[1] / blue[1]:.4f}, wavelengths {ratio:.4f}")
    assert red[0] / blue[0] == pytest.approx(ratio, rel=0.05)
    assert red[1] / blue[1] == pytest.approx(ratio, rel=0.05)


def test_in_focus_plane_is_the_airy_pattern():
    na, n = 1.1, 1.33
    px = 0.01  # pixels far below the resolution: integration over them changes nothing visible
    psf = widefield_psf((121, 121), na=na, wavelength=WAVELENGTH, refractive_index=n, pixel_size=px)
    row = psf[60] / psf[60, 60]
    v = 2 * math.pi / WAVELENGTH * na * np.abs(np.arange(121) - 60) * px
    with np.errstate(invalid="ignore", divide="ignore"):
        airy = np.where(v > 0, (2 * j1(v) / v) ** 2, 1.0)
    assert np.abs(row - airy).max() < 2e-3


def test_two_d_psf_is_the_focal_plane_of_the_three_d_one():
    na, n, px, dz = OBJECTIVES["oil 1.4"]
    plane = widefield_psf((31, 31), na=na, wavelength=WAVELENGTH, refractive_index=n, pixel_size=px)
    vol = widefield_psf((11, 31, 31), na=na, wavelength=WAVELENGTH, refractive_index=n, pixel_size=px, z_step=dz)
    np.testing.assert_allclose(plane, vol[5] / vol[5].sum(), rtol=1e-5, atol=1e-9)


def test_large_pixels_integrate_the_intensity_over_the_pixel():
    """A 0.2 um pixel holds what 5 x 5 pixels of 0.04 um hold (binning the finer PSF)."""
    kw = dict(na=1.2, wavelength=WAVELENGTH, refractive_index=1.33)
    coarse = widefield_psf((21, 21), pixel_size=0.2, **kw)
    fine = widefield_psf((105, 105), pixel_size=0.04, **kw)
    binned = fine.reshape(21, 5, 21, 5).sum(axis=(1, 3))
    binned /= binned.sum()
    assert np.abs(coarse - binned).max() < 5e-3 * coarse.max()
    # Point sampling at the pixel centres would be far off: the peak pixel alone differs by > 10 %.
    centre = fine[2::5, 2::5] / fine[2::5, 2::5].sum()
    assert abs(centre[10, 10] - coarse[10, 10]) > 0.1 * coarse[10, 10]


def test_anisotropic_pixels():
    psf = widefield_psf((31, 21), na=1.1, wavelength=WAVELENGTH, refractive_index=1.33, pixel_size=(0.05, 0.1))
    fy, fx = psf_fwhm(psf)
    assert fy * 0.05 == pytest.approx(fx * 0.1, rel=0.06)


def test_confocal_is_the_product_of_excitation_and_emission():
    kw = dict(na=1.4, refractive_index=1.518, pixel_size=0.02, z_step=0.05)
    wide = widefield_psf((21, 41, 41), wavelength=WAVELENGTH, **kw).astype(np.float64)
    conf = confocal_psf((21, 41, 41), wavelength=WAVELENGTH, **kw)
    square = wide**2 / (wide**2).sum()
    # Pixel integration of a product is not the product of integrals: close for small pixels.
    assert np.abs(conf - square).max() < 0.02 * conf.max()
    ratio = psf_fwhm(conf)[1] / psf_fwhm(wide)[1]
    assert 0.68 < ratio < 0.76  # Airy^2 over Airy: 0.37 / 0.51
    # A shorter excitation wavelength narrows it further.
    blue = confocal_psf((21, 41, 41), wavelength=WAVELENGTH, excitation_wavelength=0.405, **kw)
    assert psf_fwhm(blue)[1] < 0.95 * psf_fwhm(conf)[1]
    assert float(blue.sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)


def test_lightsheet_is_detection_times_a_gaussian_sheet():
    kw = dict(na=0.8, wavelength=WAVELENGTH, refractive_index=1.33, pixel_size=0.15, z_step=0.2)
    wide = widefield_psf((41, 21, 21), **kw).astype(np.float64)
    sheet = lightsheet_psf((41, 21, 21), sheet_thickness=1.5, **kw).astype(np.float64)
    z = (np.arange(41) - 20) * 0.2
    profile = np.exp(-4 * math.log(2) * z**2 / 1.5**2)
    expected = wide * profile[:, None, None]
    np.testing.assert_allclose(sheet, expected / expected.sum(), rtol=1e-4, atol=1e-9)
    # The axial width is set by the sheet when the sheet is thinner than the detection PSF.
    assert psf_fwhm(sheet)[0] * 0.2 < psf_fwhm(wide)[0] * 0.2
    with pytest.raises(InputError, match="3-D"):
        lightsheet_psf((21, 21), sheet_thickness=1.0, **kw)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(na=1.5, refractive_index=1.33), "cannot exceed"),
        (dict(na=0.0), "na must be"),
        (dict(wavelength=-0.5), "wavelength must be"),
        (dict(shape=(20, 21, 21)), "odd"),
        (dict(shape=(21,)), "shape"),
        (dict(z_step=None), "z_step"),
        (dict(pixel_size=(0.1, 0.1, 0.1)), "pixel_size"),
    ],
)
def test_bad_optics_raise_input_error(kwargs, message):
    args = dict(shape=(21, 21, 21), na=1.1, wavelength=0.52, refractive_index=1.33, pixel_size=0.1, z_step=0.25)
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        widefield_psf(**args)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_psf_size_for_covers_the_psf_to_a_thousandth(name):
    na, n, px, dz = OBJECTIVES[name]
    kw = dict(na=na, wavelength=WAVELENGTH, refractive_index=n, pixel_size=px, z_step=dz)
    shape = psf_size_for(**kw)
    print(f"{name}: psf_size_for -> {shape}")
    assert all(s % 2 == 1 for s in shape)
    assert shape[0] <= 65 and shape[1] <= 129 and shape[1] == shape[2]
    # Rendered two pixels larger on every side, nothing outside the chosen box reaches
    # the threshold (up to pixel integration), unless the cap stopped it.
    big = widefield_psf(tuple(s + 4 for s in shape), **kw)
    peak = float(big.max())
    inner = np.zeros(big.shape, bool)
    inner[2:-2, 2:-2, 2:-2] = True
    outside = float(big[~inner].max()) / peak
    capped = shape[0] == 65 or shape[1] == 129
    assert capped or outside < 2e-3
    # 2-D: the focal plane only, a far smaller box.
    flat = psf_size_for(na=na, wavelength=WAVELENGTH, refractive_index=n, pixel_size=px)
    assert len(flat) == 2 and flat[0] <= shape[1]
    plane = widefield_psf(tuple(s + 4 for s in flat), na=na, wavelength=WAVELENGTH, refractive_index=n, pixel_size=px)
    ring = plane.copy()
    ring[2:-2, 2:-2] = 0
    assert float(ring.max()) < 2e-3 * float(plane.max())


def test_psf_size_for_caps_and_scales():
    kw = dict(wavelength=WAVELENGTH, refractive_index=1.33, pixel_size=0.1)
    low, high = psf_size_for(na=0.5, **kw), psf_size_for(na=1.2, **kw)
    assert low[0] > high[0]  # the lower the NA, the wider the Airy disc
    assert psf_size_for(na=1.1, z_step=0.25, max_planes=33, max_lateral=41, **kw) == (33, 41, 41)
    # Fewer planes, less out-of-focus spread to hold: the lateral size shrinks with them.
    near = psf_size_for(na=1.1, z_step=0.05, max_planes=33, **kw)
    assert near[0] == 33 and near[1] < 41


def test_psf_fwhm_of_a_gaussian():
    from bigdecon import gaussian_psf

    widths = psf_fwhm(gaussian_psf((7.0, 4.0, 5.0)))
    np.testing.assert_allclose(widths, (7.0, 4.0, 5.0), rtol=0.01)
    with pytest.raises(InputError, match="half"):
        psf_fwhm(np.ones((5, 5), np.float32))
