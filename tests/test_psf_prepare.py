"""Measured PSFs as a microscope saves them: preparation (bigdecon.solvers.psf_prepare) and `bigdecon psf`.

The PSFs here come from an independent generator: a scalar widefield PSF (the Debye integral over
the aperture, computed with NumPy quadrature and scipy's Bessel function), not bigdecon's psf module.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
from helpers import cli
from scipy.special import j0

from bigdecon.io.psf_file import read_psf
from bigdecon.solvers.psf_prepare import energy_crop, prepare_psf, remove_hot_pixels, resample_psf

NA, WAVELENGTH, N = 1.0, 0.52, 1.33  # water objective, green emission: FWHM 0.27 µm lateral, 1.01 µm axial


def scalar_widefield(shape, dz, dxy, centre=(0.0, 0.0, 0.0)):
    """|integral over the aperture of sqrt(cos t) J0(k r sin t) exp(i k z cos t) sin t dt|^2 on a grid (µm)."""
    k = 2 * np.pi * N / WAVELENGTH
    theta = np.linspace(0, np.arcsin(NA / N), 160)
    weight = np.sin(theta) * np.sqrt(np.cos(theta)) * (theta[1] - theta[0])
    nz, ny, nx = shape
    z = (np.arange(nz) - nz // 2) * dz - centre[0]
    y = (np.arange(ny) - ny // 2) * dxy - centre[1]
    x = (np.arange(nx) - nx // 2) * dxy - centre[2]
    r = np.sqrt(y[:, None] ** 2 + x[None, :] ** 2).ravel()
    bessel = j0(k * np.outer(r, np.sin(theta))) * weight
    out = np.stack([np.abs(bessel @ np.exp(1j * k * zz * np.cos(theta))) ** 2 for zz in z])
    return out.reshape(shape)


def as_measured(seed=0, peak=5000.0, shape=(61, 48, 48), shift_y_px=3):
    """A bead stack at a z step of 0.1 µm (a third of 0.3 µm data): pedestal 2 % of the peak, shot and
    read noise, six hot pixels, the bead 3 px off the box centre in y."""
    rng = np.random.default_rng(seed)
    psf = scalar_widefield(shape, 0.1, 0.1, centre=(0.0, shift_y_px * 0.1, 0.0))
    counts = rng.poisson(psf / psf.max() * peak + 0.02 * peak) + rng.normal(0, 3, shape)
    hot = [(int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1])), int(rng.integers(0, shape[2])))]
    hot += [(int(rng.integers(0, shape[0])), int(rng.integers(0, 10)), int(rng.integers(0, 48))) for _ in range(5)]
    for index in hot:
        counts[index] = 0.8 * peak
    return np.clip(counts, 0, 65535).astype(np.uint16), len(set(hot))


def pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_prepare_psf_recovers_the_true_psf_from_an_as_measured_bead():
    raw, n_hot = as_measured()
    prepared, report = prepare_psf(raw, (0.1, 0.1, 0.1), (0.3, 0.1, 0.1))
    # 2 % of the 5000-count peak (the z faces hold ~13 counts more: the PSF's own defocused light)
    assert report["pedestal"] == pytest.approx(100, abs=2)
    assert report["hot_pixels"] == n_hot
    # The bead is 3 px off its grid's centre (24) in y; the 48-pixel box's centre is 23.5 in y and x.
    assert report["shift_px"][1:] == pytest.approx([-3.5, -0.5], abs=0.15)
    assert abs(report["shift_px"][0]) < 0.3
    assert report["resample"] == [pytest.approx(1 / 3), 1.0, 1.0]
    assert all(n % 2 == 1 for n in prepared.shape) and prepared.dtype == np.float32
    assert float(prepared.sum()) == pytest.approx(1.0, abs=1e-5)
    assert report["spots"] == 1 and report["saturated"] == 0
    # The true PSF at the data's sampling, in the same box: the prepared one is it, up to noise.
    truth = scalar_widefield(prepared.shape, 0.3, 0.1)
    assert pearson(prepared, truth) > 0.99


def test_a_noise_free_model_psf_keeps_its_wings(realdata):
    """A model PSF's wings reach its box's faces with no pedestal under them: they stay light.

    The lowest face median took 14 % of a Debye widefield PSF's light and 26 % of flowdec's kernel
    (and its spread, counted as noise, set a floor that cut the wings further).
    """
    debye = scalar_widefield((41, 64, 64), 0.3, 0.1)
    kernel = tifffile.imread(realdata / "flowdec_bead" / "kernel.tif")
    for psf in (debye, kernel):
        prepared, report = prepare_psf(psf)
        assert report["pedestal_fraction"] < 0.04
        assert report["noise"] < 1e-4 * float(psf.max())
        assert prepared.shape[0] >= psf.shape[0] - 1  # no plane of defocused light dropped


def test_energy_crop_keeps_the_stated_light_in_the_smallest_centred_box():
    psf = scalar_widefield((41, 65, 65), 0.3, 0.1)
    for energy in (0.9, 0.99, 0.999):
        cropped, shape = energy_crop(psf, energy)
        assert cropped.sum() / psf.sum() >= energy - 1e-6
        assert all(n % 2 == 1 for n in shape)
    small, _ = energy_crop(psf, 0.9)
    big, _ = energy_crop(psf, 0.999)
    assert small.size < big.size <= psf.size  # a widefield PSF's light spreads over every plane


def test_resampling_keeps_the_width_in_micrometres():
    from bigdecon.solvers.psf import psf_fwhm

    fine = scalar_widefield((91, 33, 33), 0.1, 0.1)
    coarse = resample_psf(fine, (1 / 3, 1, 1))
    direct = scalar_widefield(coarse.shape, 0.3, 0.1)
    assert coarse.shape[0] == 31
    assert psf_fwhm(coarse)[0] * 0.3 == pytest.approx(psf_fwhm(fine)[0] * 0.1, rel=0.03)
    assert pearson(coarse, direct) > 0.999


def test_a_sharp_peak_is_not_a_hot_pixel():
    y, x = np.mgrid[-10:11, -10:11]
    for fwhm in (1.7, 2.5, 4.0):  # the peak of a PSF sampled at 1.7 px per FWHM is ~3 times its neighbour
        psf = np.exp(-4 * np.log(2) * (y**2 + x**2) / fwhm**2).astype(np.float32)
        assert remove_hot_pixels(psf)[1] == 0


@pytest.mark.slow
def test_psf_command_on_the_as_measured_bead(tmp_path):
    raw, _ = as_measured()
    path = tmp_path / "bead.tif"
    tifffile.imwrite(
        path, raw, imagej=True, resolution=(10, 10), metadata={"spacing": 0.1, "unit": "um", "axes": "ZYX"}
    )
    out, png = tmp_path / "psf.tif", tmp_path / "psf.png"
    args = (path, "--voxel-size", "0.3,0.1,0.1", "--na", NA, "--wavelength", WAVELENGTH, "--refractive-index", N)
    proc = cli("psf", *args, "-o", out, "--png", png)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "voxel size:   0.1 x 0.1 x 0.1 µm (metadata)" in text
    assert re.search(r"pedestal:\s+10\d \(", text) and "6 hot pixels" in text
    assert re.search(r"centroid:\s+z [+-]0\.\d+, y \+3\.\d+, x [+-]0\.\d+ px", text)
    # Widths against the widefield theory (Cole et al. 2011): within 5 % on every axis.
    ratios = [float(v) for v in re.findall(r"theory [\d.]+, x([\d.]+)\)", text)]
    assert len(ratios) == 3 and all(abs(r - 1) < 0.05 for r in ratios), text
    assert "warning:      the pedestal" in text
    psf, size = read_psf(out)
    assert size == pytest.approx([0.3, 0.1, 0.1]) and float(psf.sum()) == pytest.approx(1, abs=1e-5)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_psf_command_on_real_beads(tmp_path, realdata):
    beads = realdata / "mpicbg_confocal_beads" / "Bead_Image1_crop.tif"
    whole = cli("psf", beads, "--voxel-size", "0.29,0.26,0.26")
    assert whole.returncode == 0, whole.stderr
    assert "holds 4 separate spots" in whole.stdout  # the stack has 4 beads
    assert "11.6x finer than the data along y" in whole.stdout  # 0.0225 µm on 0.26 µm data
    out = tmp_path / "bead.npy"
    one = cli("psf", beads, "--region", "0:41,60:105,53:98", "-o", out)
    assert one.returncode == 0, one.stderr
    assert "separate spots" not in one.stdout and "voxel size:   0.125 x 0.0224919 x 0.0224919 µm" in one.stdout
    fwhm = [float(v) for v in re.findall(r"= ([\d.]+) µm", one.stdout)]
    assert 0.4 < fwhm[0] < 0.8 and all(0.12 < w < 0.3 for w in fwhm[1:])  # a confocal bead, z and y/x
    psf = np.load(out)
    assert all(n % 2 == 1 for n in psf.shape) and float(psf.sum()) == pytest.approx(1, abs=1e-5)
    # Distilled from all four beads (bigdecon.solvers.beads) instead of cropping one.
    averaged = cli("psf", "--from-beads", beads, "--voxel-size", "0.125,0.066,0.066", "-o", tmp_path / "avg.tif")
    assert averaged.returncode == 0, averaged.stderr
    assert "beads:        4 found, 4 averaged" in averaged.stdout and "separate spots" not in averaged.stdout
    psf, size = read_psf(tmp_path / "avg.tif")
    assert size == pytest.approx([0.125, 0.066, 0.066]) and float(psf.sum()) == pytest.approx(1, abs=1e-5)
    kernel = cli("psf", realdata / "flowdec_bead" / "kernel.tif")
    assert kernel.returncode == 0 and "voxel size:   unknown" in kernel.stdout
    assert re.search(r"energy box:\s+\d+x\d+x\d+ holds 99 %", kernel.stdout)


def test_psf_png_sections_are_drawn_in_micrometres(tmp_path):
    """``psf --png``: each section spans its true extent in µm about the centre voxel (anisotropic voxels keep
    their proportions), in pixels without a voxel size."""
    from bigdecon.cli.psf import section_views, write_sections

    psf = np.zeros((19, 43, 33), np.float32)
    psf[9, 21, 16] = 1
    views = {name: (extent, unit) for name, _section, extent, unit in section_views(psf, [0.125, 0.022, 0.022])}
    assert views["xy"] == ([-0.363, 0.363, -0.473, 0.473], "µm")
    assert views["xz"] == ([-0.363, 0.363, -1.1875, 1.1875], "µm")  # 2.375 µm tall, 0.726 µm wide
    assert views["yz"][0] == [-0.473, 0.473, -1.1875, 1.1875]
    assert section_views(psf)[1][2:] == ([-16.5, 16.5, -9.5, 9.5], "px")
    write_sections(str(tmp_path / "psf.png"), psf + 1e-6, [0.125, 0.022, 0.022])
    assert (tmp_path / "psf.png").read_bytes()[:4] == b"\x89PNG"
