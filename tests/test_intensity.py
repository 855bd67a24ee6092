"""What the output's intensities mean: flux per plane and channel ratios (docs/suggest.md, "Intensity scale").

Measured on these phantoms (filaments, 4 x 96 x 96, 300 photons on 10 of background):

* Richardson-Lucy alone (``sparse_iters=0, background=0``, 20 iterations) keeps
  each plane's total flux within 0.10 % (in memory and out of core alike, the
  two outputs identical); 50 iterations within 0.27 %. Tolerance here: 0.5 %.
* Two channels of one structure at 1:3 with independent Poisson noise: the
  ratio of the outputs' fluxes is 2.9999 for RL alone (per plane 2.995-3.011)
  and 2.904 for the default pipeline (3.2 % low: each channel is normalised by
  its own noisy maximum and the sparse step and background removal cut the
  noisier channel's flux relatively less). Channels that are exact multiples
  keep the ratio to 1e-6 in both (the pipeline is scale-equivariant).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import bigdecon
from bigdecon.data import filaments_timelapse, fwhm_to_sigma
from bigdecon.io import open_image, write_image

RL_ONLY = dict(fwhm=3.0, sparse_iters=0, background=0, deconv_iters=20)
FLUX_TOLERANCE = 0.005  # measured: 0.10 % at 20 iterations


@pytest.fixture(scope="module")
def timelapse():
    raw, truth = filaments_timelapse((4, 96, 96), 3.0, photons=300, background=10, noise=2, seed=3)
    return raw, truth


@pytest.fixture(scope="module")
def two_channels(timelapse):
    """The same structure at intensities 1 and 3 (background included), independent Poisson noise."""
    _, truth = timelapse
    s = fwhm_to_sigma(3.0)
    blurred = gaussian_filter(truth.astype(np.float64), (0, s, s))
    expected = 300 * blurred / blurred.max() + 10
    rng = np.random.default_rng(5)
    return np.stack([rng.poisson(expected), rng.poisson(3 * expected)]).astype(np.float32)


def plane_flux(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).sum(axis=(-2, -1))


def test_richardson_lucy_keeps_flux_per_plane(timelapse):
    raw, _ = timelapse
    out = bigdecon.sparse_deconvolve(raw, **RL_ONLY)
    rel = plane_flux(out) / plane_flux(raw) - 1
    assert np.abs(rel).max() <= FLUX_TOLERANCE, rel


def test_richardson_lucy_keeps_flux_out_of_core(tmp_path, timelapse):
    """Through an OME-Zarr and bigdecon.deconvolve: the same flux, the same image as in memory."""
    raw, _ = timelapse
    src = write_image(str(tmp_path / "in.zarr"), raw, "tyx", chunks=(1, 48, 48))
    summary = bigdecon.deconvolve(src, str(tmp_path / "out.zarr"), chunks={"t": 2, "y": 48, "x": 48}, **RL_ONLY)
    out = open_image(summary["output"]).data.compute()
    rel = plane_flux(out) / plane_flux(raw) - 1
    assert np.abs(rel).max() <= FLUX_TOLERANCE, rel
    whole = bigdecon.sparse_deconvolve(raw, **RL_ONLY)
    assert np.abs(out - whole).max() <= 1e-3 * whole.max()


def test_default_pipeline_does_not_keep_flux(timelapse):
    """A property, not a bug: background removal and the sparse step drop flux (here about half)."""
    raw, _ = timelapse
    out = bigdecon.sparse_deconvolve(raw, fwhm=3.0)
    ratio = plane_flux(out) / plane_flux(raw)
    assert np.all(ratio < 0.7), ratio
    # The output is rescaled by the raw maximum after normalising to the maxima of
    # steps 2-4, so its maximum is not the input's maximum either.
    assert abs(float(out.max()) / float(raw.max()) - 1) > 0.1


def test_exact_multiples_keep_their_ratio(timelapse):
    """Scale-equivariance: a channel that is exactly 3x another gives exactly 3x the output."""
    raw, _ = timelapse
    for params in (RL_ONLY, dict(fwhm=3.0)):
        one = bigdecon.sparse_deconvolve(raw, **params)
        three = bigdecon.sparse_deconvolve(3 * raw, **params)
        assert np.abs(three - 3 * one).max() <= 1e-5 * three.max()


def test_channel_ratio_out_of_core(tmp_path, two_channels):
    """1:3 channels with independent noise through bigdecon.deconvolve: RL keeps 3 to 1 %,
    the default pipeline keeps it to 5 % (measured 2.904: biased low, see the module docstring)."""
    src = write_image(str(tmp_path / "c.zarr"), two_channels, "ctyx", chunks=(1, 1, 48, 48))
    ratios = {}
    for name, params in (("rl", RL_ONLY), ("defaults", dict(fwhm=3.0))):
        summary = bigdecon.deconvolve(src, str(tmp_path / f"{name}.zarr"), **params)
        out = open_image(summary["output"]).data.compute()
        ratios[name] = plane_flux(out[1]).sum() / plane_flux(out[0]).sum()
        per_plane = plane_flux(out[1]) / plane_flux(out[0])
        if name == "rl":
            assert np.abs(per_plane / 3 - 1).max() <= 0.02, per_plane
    assert abs(ratios["rl"] / 3 - 1) <= 0.01, ratios
    assert abs(ratios["defaults"] / 3 - 1) <= 0.05, ratios
