"""The validation's metric functions on inputs with known answers, and the invention check.

The metrics live in ``benchmarks/validation/metrics.py`` (used by
``benchmarks/validation/run_validation.py`` to build ``docs/validation.md``).
Real computations throughout; the whole file runs in a few seconds.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

VALIDATION = Path(__file__).resolve().parents[1] / "benchmarks" / "validation"
sys.path.insert(0, str(VALIDATION))

import metrics as M  # noqa: E402
import phantoms as P  # noqa: E402

import bigdecon  # noqa: E402


def _gauss(x, centre, fwhm):
    s = fwhm / (2 * math.sqrt(2 * math.log(2)))
    return np.exp(-((x - centre) ** 2) / (2 * s * s))


# --------------------------------------------------------------------------- PSNR, SSIM, Pearson


def test_psnr_of_a_constant_error_is_exact():
    truth = np.zeros((32, 32))
    truth[8:24, 8:24] = 1.0
    assert M.psnr(truth + 0.1, truth) == pytest.approx(20.0, abs=1e-9)  # 10 log10(1 / 0.01)
    assert M.psnr(truth + 0.01, truth, data_range=1.0) == pytest.approx(40.0, abs=1e-9)
    assert M.psnr(truth, truth) == math.inf


def test_ssim_and_pearson_on_known_pairs():
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.random((64, 64)), 2)
    assert M.ssim(a, a) == pytest.approx(1.0)
    assert M.pearson(a, 3 * a + 2) == pytest.approx(1.0)
    assert M.pearson(a, -a) == pytest.approx(-1.0)
    noisy = a + 0.2 * a.std() * rng.standard_normal(a.shape)
    worse = a + 1.0 * a.std() * rng.standard_normal(a.shape)
    assert 0 < M.ssim(worse, a) < M.ssim(noisy, a) < 1
    assert M.pearson(worse, a) < M.pearson(noisy, a) < 1


def test_match_scale_undoes_a_global_factor():
    rng = np.random.default_rng(1)
    t = rng.random((16, 16))
    np.testing.assert_allclose(M.match_scale(7.5 * t, t), t, rtol=1e-12)
    q = M.quality(0.3 * t, t)  # quality() is scale-free in the result
    assert q["psnr"] == math.inf or q["psnr"] > 200
    assert q["pearson"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- Rayleigh dip


def test_rayleigh_dip_of_two_separated_gaussians_matches_the_formula():
    x = np.arange(41, dtype=float)
    fwhm, left, right = 4.0, 15.0, 25.0
    prof = _gauss(x, left, fwhm) + _gauss(x, right, fwhm)
    valley = prof[20]
    peak = prof[15]
    assert M.rayleigh_dip(prof, left, right) == pytest.approx(1 - valley / peak, rel=1e-12)
    assert M.resolved(prof, left, right)


def test_rayleigh_dip_is_zero_for_an_unresolved_pair_and_follows_separation():
    x = np.arange(41, dtype=float)
    fwhm = 6.0
    dips = {}
    for sep in (2, 4, 6, 8, 10, 12):
        prof = _gauss(x, 20 - sep / 2, fwhm) + _gauss(x, 20 + sep / 2, fwhm)
        dips[sep] = M.rayleigh_dip(prof, 20 - sep / 2, 20 + sep / 2)
    assert dips[2] == 0.0 and dips[4] == 0.0  # below ~0.85 FWHM two Gaussians merge into one peak
    seps = sorted(dips)
    assert all(dips[a] <= dips[b] for a, b in zip(seps, seps[1:]))
    # Sparrow/Rayleigh: at 1 FWHM the dip is small, at 2 FWHM it is deep.
    assert dips[6] < M.RAYLEIGH_DIP < dips[12]
    assert M.smallest_resolved(dips) in (8, 10)


def test_smallest_resolved_ignores_a_lucky_dip_below_a_failed_pair():
    dips = {160: 0.9, 128: 0.5, 96: 0.1, 64: 0.4}
    assert M.smallest_resolved(dips) == 128
    assert M.smallest_resolved({160: 0.1}) == math.inf


def test_line_pair_phantom_truth_and_blur():
    truth, blurred, pairs = P.line_pairs(110.0)
    dip_t = {p["sep_nm"]: M.rayleigh_dip(*P.pair_profile(truth, p)) for p in pairs}
    dip_b = {p["sep_nm"]: M.rayleigh_dip(*P.pair_profile(blurred, p)) for p in pairs}
    assert M.smallest_resolved(dip_t) == 32.0  # every pair is separate in the truth
    # A 110 nm Gaussian leaves only pairs well above its FWHM resolved.
    assert 110.0 <= M.smallest_resolved(dip_b) <= 160.0


# --------------------------------------------------------------------------- FRC


def test_frc_of_identical_images_is_one_and_of_independent_noise_near_zero():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((128, 128))
    _, c_same = M.frc(a, a)
    assert np.allclose(c_same[1:], 1.0)
    _, c_ind = M.frc(a, rng.standard_normal((128, 128)))
    assert abs(float(np.mean(c_ind[4:]))) < 0.05


def test_frc_resolution_of_a_linear_curve():
    freq = (np.arange(64) + 0.5) / 128.0
    curve = 1.0 - freq / 0.5  # crosses 1/7 at f = 0.5 (1 - 1/7)
    res = M.frc_resolution(freq, curve, smooth=1)
    assert res == pytest.approx(1.0 / (0.5 * (1 - 1 / 7)), rel=1e-3)
    assert M.frc_resolution(freq, np.ones(64)) == 2.0


def test_frc_resolution_tracks_the_blur():
    rng = np.random.default_rng(3)
    obj = rng.random((128, 128))
    res = []
    for sigma in (1.0, 3.0):
        img = ndimage.gaussian_filter(obj, sigma, mode="wrap")
        img = img / img.std()
        a = img + 0.3 * rng.standard_normal(img.shape)
        b = img + 0.3 * rng.standard_normal(img.shape)
        res.append(M.frc_resolution(*M.frc(a, b)))
    assert 2.0 <= res[0] < res[1]


# --------------------------------------------------------------------------- invention


def _noise(level, read, n=128, seed=31):
    rng = np.random.default_rng(seed)
    return np.clip(rng.poisson(level, (n, n)) + rng.normal(0, read, (n, n)), 0, None).astype(np.float32)


def test_bright_features_counts_planted_spots_only():
    img = _noise(100.0, 2.0)
    assert M.bright_features(img, img, k=5)["count"] == 0
    spiked = img.copy()
    for y, x in ((20, 20), (60, 90), (100, 40)):
        spiked[y, x] += 200
    assert M.bright_features(spiked, img, k=5, flux_match=False)["count"] == 3


def test_sparse_hessian_step_does_not_invent_bright_features_on_pure_noise():
    """Pure low-count noise (5 photons + read noise): the sparse-Hessian step smooths it;
    no local maximum reaches 5 sd of the input, and fewer reach 3 sd than in the raw noise."""
    img = _noise(5.0, 3.0)
    out = bigdecon.sparse_deconvolve(img, background=0, deconv_type=0)
    as_is5 = M.bright_features(out, img, k=5, flux_match=False)
    as_is3 = M.bright_features(out, img, k=3, flux_match=False)
    raw3 = M.bright_features(img, img, k=3, flux_match=False)
    assert as_is5["count"] == 0
    assert as_is3["count"] < raw3["count"]
    assert float(out.max()) <= float(img.max()) * 1.0001


def test_sparse_deconvolution_invents_nothing_on_a_flat_field():
    """A uniformly lit field at high counts: the whole pipeline (background 0) gives no
    bright feature above 5 sd, and a smoother result than the input."""
    img = _noise(1000.0, 20.0)
    out = bigdecon.sparse_deconvolve(img, fwhm=110.0 / 16.0, background=0)
    r = M.bright_features(out, img, k=5)
    assert r["count"] == 0
    assert r["cv"] < M.bright_features(img, img, k=5)["cv"]
