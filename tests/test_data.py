"""Synthetic samples: deterministic, the right shapes and dtypes, a truth sharper than the raw data."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bigdecon import data

GENERATORS = {
    "filaments": (data.filaments_timelapse, {"shape": (6, 96, 96)}),
    "beads": (data.beads_volume, {"shape": (16, 64, 64)}),
    "rings": (data.rings_image, {"shape": (128, 128)}),
}


def sharpness(a: np.ndarray) -> float:
    """Mean squared gradient in y and x over the variance: high for thin structures."""
    a = a.astype(np.float64)
    gy, gx = np.diff(a, axis=-2), np.diff(a, axis=-1)
    return float((np.mean(gy**2) + np.mean(gx**2)) / (a.var() + 1e-12))


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_shapes_dtypes_and_ranges(name):
    fn, kw = GENERATORS[name]
    raw, truth = fn(**kw)
    assert raw.shape == truth.shape == tuple(kw["shape"])
    assert raw.dtype == truth.dtype == np.float32
    assert np.isfinite(raw).all() and np.isfinite(truth).all()
    assert raw.min() >= 0 and truth.min() >= 0
    assert truth.max() == pytest.approx(1.0)
    assert raw.max() > 10 * np.median(raw) / 2  # structures stand out of the background


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_deterministic_by_seed(name):
    fn, kw = GENERATORS[name]
    a_raw, a_truth = fn(**kw, seed=3)
    b_raw, b_truth = fn(**kw, seed=3)
    c_raw, _ = fn(**kw, seed=4)
    np.testing.assert_array_equal(a_raw, b_raw)
    np.testing.assert_array_equal(a_truth, b_truth)
    assert not np.array_equal(a_raw, c_raw)


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_truth_is_sharper_than_raw(name):
    fn, kw = GENERATORS[name]
    raw, truth = fn(**kw)
    # Noise-free, so that only the blur counts.
    clean, _ = fn(**kw, photons=1e6, background=0.0, noise=0.0)
    assert sharpness(truth) > 2 * sharpness(clean)
    # And the raw data is the blurred truth: they correlate well.
    assert np.corrcoef(clean.ravel(), raw.ravel())[0, 1] > 0.9


def test_wider_psf_blurs_more():
    kw = dict(shape=(4, 96, 96), photons=1e6, background=0.0, noise=0.0)
    narrow, _ = data.filaments_timelapse(fwhm=2.0, **kw)
    wide, _ = data.filaments_timelapse(fwhm=6.0, **kw)
    assert sharpness(narrow) > 1.5 * sharpness(wide)


def test_noise_follows_photons():
    kw = dict(shape=(128, 128), background=10.0, noise=2.0)
    dim, _ = data.rings_image(photons=20.0, **kw)
    bright, _ = data.rings_image(photons=2000.0, **kw)
    clean, _ = data.rings_image((128, 128), photons=1e6, background=0.0, noise=0.0)
    empty = clean < 1e-4 * clean.max()  # far from every ring: only background and noise
    assert empty.sum() > 1000
    # The background noise is the same in both, the signal 100x: the SNR rises.
    snr = lambda a: (a.max() - np.median(a[empty])) / a[empty].std()  # noqa: E731
    assert snr(bright) > 20 * snr(dim)


def test_filaments_drift_between_frames():
    raw, truth = data.filaments_timelapse((8, 96, 96), drift=(2.0, 0.0), photons=1e6, noise=0.0)
    # Frame k+1 matches frame k shifted by the drift better than unshifted.
    a, b = truth[2].astype(np.float64), truth[3].astype(np.float64)
    shifted = np.roll(a, 2, axis=0)
    assert np.sum(shifted[8:-8] * b[8:-8]) > np.sum(a[8:-8] * b[8:-8])


def test_beads_blur_is_anisotropic():
    raw, truth = data.beads_volume((24, 64, 64), fwhm=(8.0, 2.0, 2.0), photons=1e6, background=0.0, noise=0.0)
    gz = np.mean(np.diff(raw.astype(np.float64), axis=0) ** 2)
    gy = np.mean(np.diff(raw.astype(np.float64), axis=1) ** 2)
    assert gy > 4 * gz


def test_rings_pairs_are_separate_in_truth():
    _, truth = data.rings_image((128, 128), gaps=(6.0,), seed=0)
    row = truth[64]  # through the centre: crosses each ring twice
    peaks = np.flatnonzero((row[1:-1] > row[:-2]) & (row[1:-1] >= row[2:]) & (row[1:-1] > 0.2))
    assert len(peaks) >= 4


@pytest.mark.parametrize(
    "fn, shape",
    [
        (data.filaments_timelapse, (16, 256, 256)),
        (data.beads_volume, (32, 128, 128)),
        (data.rings_image, (256, 256)),
    ],
)
def test_fast_at_demo_sizes(fn, shape):
    fn(shape=shape)  # warm caches
    t = time.perf_counter()
    fn(shape=shape)
    assert time.perf_counter() - t < 2.0  # < 1 s on a quiet machine; slack for a busy CI


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="shape"):
        data.filaments_timelapse((64, 64))
    with pytest.raises(ValueError, match="fwhm"):
        data.beads_volume((8, 32, 32), fwhm=(2.0, 2.0))
    with pytest.raises(ValueError, match="shape"):
        data.rings_image((0, 32))
