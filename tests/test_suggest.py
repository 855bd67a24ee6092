"""Parameters from the data: the measurements are right, the suggestion is deterministic and scores well.

The scores use the metrics of the validation (benchmarks/validation/metrics.py):
Pearson r against the truth, and SSIM after one least-squares intensity factor.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import bigdecon
from bigdecon.data import filaments_timelapse, widefield_volume
from bigdecon.errors import InputError
from bigdecon.params import DEFAULTS
from bigdecon.suggest import Suggestion, estimate_noise, measure, suggest_parameters, would_differ

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "validation"))
import metrics as M  # noqa: E402

WF_FWHM = (3.14, 2.41, 2.41)  # NA 1.1 water, 0.52 um, 0.1 um pixels, 0.25 um planes
RL_ONLY = dict(sparse_iters=0, background=0, deconv_iters=20)


@pytest.mark.parametrize("photons", [30, 100, 300, 1000, 3000])
@pytest.mark.parametrize("read", [2.0, 6.0])
def test_noise_sigma_within_20_percent(photons, read):
    """On both phantom kinds, over the photon range: sigma of the background noise (Poisson + read)."""
    background = 10.0
    true_sigma = np.sqrt(background + read**2)
    raw, _ = filaments_timelapse((4, 96, 96), 3.5, photons=photons, background=background, noise=read, seed=7)
    sigma, _, _ = estimate_noise(raw)
    assert abs(sigma / true_sigma - 1) <= 0.2, (sigma, true_sigma)
    raw, _ = widefield_volume((12, 64, 64), WF_FWHM, photons=photons, background=background, noise=read, seed=7)
    assert abs(measure(raw, fwhm=WF_FWHM).noise_sigma / true_sigma - 1) <= 0.2


def test_gaussian_noise_and_gain():
    """Pure Gaussian noise: sigma exact to 5 %; a flat Poisson ramp: gain 1 to 20 %."""
    rng = np.random.default_rng(0)
    sigma, _, _ = estimate_noise(rng.normal(50.0, 4.0, (8, 128, 128)))
    assert abs(sigma / 4.0 - 1) <= 0.05
    ramp = np.linspace(5, 400, 256)[None, None, :] * np.ones((4, 128, 1))
    sigma, gain, offset = estimate_noise(rng.poisson(ramp).astype(np.float32))
    assert gain is not None and abs(gain - 1) <= 0.2, gain


def test_subsample_bounds_and_determinism():
    """A large stack: only MAX_PLANES planes and the central crop are read; the same answer twice."""
    from bigdecon import suggest

    small, _ = filaments_timelapse((8, 120, 112), 3.5, photons=200, seed=2)
    raw = np.tile(small, (5, 5, 5))  # 40 x 600 x 560, cheap to make
    a = suggest_parameters(raw, fwhm=3.5, axes="tyx")
    b = suggest_parameters(raw.copy(), fwhm=3.5, axes="tyx")
    assert a == b and a.to_dict() == b.to_dict()
    assert a.measured.planes_used == suggest.MAX_PLANES
    assert a.measured.crop == (suggest.MAX_SIDE, suggest.MAX_SIDE)
    json.dumps(a.to_dict())  # JSON-friendly
    # Dask gives the same measurements as NumPy.
    import dask.array as da

    c = suggest_parameters(da.from_array(raw, chunks=(8, 300, 280)), fwhm=3.5, axes="tyx")
    assert c == a


def test_sampling_and_axis():
    raw, _ = widefield_volume((12, 64, 64), WF_FWHM, photons=300, seed=1)
    est = measure(raw, fwhm=WF_FWHM)
    assert est.third_axis == "z" and est.fwhm_px == pytest.approx(2.41) and est.fwhm_z_px == pytest.approx(3.14)
    assert est.nyquist == pytest.approx(2.41 / 2.04, rel=1e-3)
    # A measured PSF gives its FWHM back (to a tenth of a pixel).
    est = measure(raw, psf=bigdecon.gaussian_psf(WF_FWHM))
    assert est.fwhm_px == pytest.approx(2.41, abs=0.1) and est.fwhm_z_px == pytest.approx(3.14, abs=0.1)
    assert measure(raw[0], fwhm=2.41).third_axis == ""
    with pytest.raises(InputError, match="fwhm"):
        measure(raw)
    with pytest.raises(InputError, match="axes"):
        measure(raw, fwhm=3.0, axes="yx")


def test_suggestion_kwargs_run_and_reasons():
    raw, _ = filaments_timelapse((4, 64, 64), 3.5, photons=100, seed=3)
    s = suggest_parameters(raw, fwhm=3.5, axes="tyx")
    assert isinstance(s, Suggestion)
    assert set(s.reasons) >= {"sparse_iters", "fidelity", "sparsity", "background", "deconv_iters"}
    assert all(isinstance(v, str) and v and "\n" not in v for v in s.reasons.values())
    out = bigdecon.sparse_deconvolve(raw, fwhm=3.5, **s.as_kwargs())
    assert out.shape == raw.shape


def test_would_differ():
    raw, _ = widefield_volume((12, 64, 64), WF_FWHM, photons=30, seed=4)
    s = suggest_parameters(raw, fwhm=WF_FWHM)
    assert would_differ(s, s.as_kwargs()) is None
    line = would_differ(s, DEFAULTS)
    assert line is not None and "\n" not in line and line.startswith("data suggest:")


def test_low_photon_volume_beats_rl_and_defaults():
    """Widefield-like volume, 30 photons: suggested >= RL alone - 0.005 in both scores, and beats the defaults."""
    raw, truth = widefield_volume((16, 80, 80), WF_FWHM, photons=30, background=10, noise=2, seed=11)
    s = suggest_parameters(raw, fwhm=WF_FWHM)
    got = M.pearson_ssim(bigdecon.sparse_deconvolve(raw, fwhm=WF_FWHM, **s.as_kwargs()), truth, "zyx")
    rl = M.pearson_ssim(bigdecon.sparse_deconvolve(raw, fwhm=WF_FWHM, **RL_ONLY), truth, "zyx")
    default = M.pearson_ssim(bigdecon.sparse_deconvolve(raw, fwhm=WF_FWHM), truth, "zyx")
    assert got[0] >= rl[0] - 0.005 and got[1] >= rl[1] - 0.005, (got, rl)
    assert got[0] > default[0] and got[1] >= default[1] - 0.005, (got, default)


def test_sim_timelapse_beats_rl():
    """SIM-like time-lapse, 100 photons: the suggestion beats RL alone (the priors help here)."""
    raw, truth = filaments_timelapse((6, 96, 96), 3.5, photons=100, background=10, noise=2, seed=11)
    s = suggest_parameters(raw, fwhm=3.5, axes="tyx")
    assert s.sparse_iters > 0
    got = M.pearson_ssim(bigdecon.sparse_deconvolve(raw, fwhm=3.5, **s.as_kwargs()), truth, "tyx")
    rl = M.pearson_ssim(bigdecon.sparse_deconvolve(raw, fwhm=3.5, **RL_ONLY), truth, "tyx")
    assert got[0] > rl[0] + 0.005 and got[1] > rl[1] + 0.005, (got, rl)


# --------------------------------------------------------------------------- PSFs from the optics (issue 12)

WF_OPTICS = (1.1, 0.52, 1.33, 0.1, 0.25)  # NA, wavelength, n, pixel, z step: the widefield phantom's optics
LS_OPTICS = (0.8, 0.52, 1.33, 0.15, 0.3)  # a light sheet's detection objective (1 um sheet)


def optics_phantom(kind, photons, shape=(16, 80, 80), seed=11):
    """``(raw, truth, psf)``: blurred with the PSF down to 1e-3 of its peak, and the run's PSF (cut to the data)."""
    from bigdecon.solvers.psf import lightsheet_psf, psf_size_for, widefield_psf

    optics = WF_OPTICS if kind == "widefield" else LS_OPTICS
    full = psf_size_for(*optics)
    blur_shape = (min(full[0], 2 * shape[0] - 1), *full[1:])
    run_shape = tuple(min(s, n if n % 2 else n - 1) for s, n in zip(full, shape))
    make = widefield_psf if kind == "widefield" else (lambda s, *o: lightsheet_psf(s, *o, 1.0))
    aspect = optics[4] / optics[3]
    raw, truth = widefield_volume(
        shape, psf=make(blur_shape, *optics), voxel_aspect=aspect, photons=photons, background=10, noise=2, seed=seed
    )
    return raw, truth, make(run_shape, *optics)


def test_out_of_focus_light_of_the_psf():
    """A widefield PSF keeps light in every plane; a light sheet and a Gaussian section."""
    raw, _, wf = optics_phantom("widefield", 300)
    _, _, ls = optics_phantom("lightsheet", 300)
    assert measure(raw, psf=wf).out_of_focus > 0.4
    assert measure(raw, psf=ls).out_of_focus < 0.15
    assert measure(raw, fwhm=WF_FWHM).out_of_focus < 0.05
    assert measure(raw, fwhm=2.41, axes="tyx").out_of_focus is None


@pytest.mark.parametrize("kind", ["widefield", "lightsheet"])
def test_optics_volume_30_photons_beats_rl(kind):
    """Born-Wolf widefield and light-sheet volumes at 30 photons: the suggestion beats RL alone in
    Pearson and is never more than 0.005 under it in SSIM (the issue's criterion)."""
    raw, truth, psf = optics_phantom(kind, 30)
    s = suggest_parameters(raw, psf=psf)
    assert s.sparse_iters > 0
    if kind == "widefield":  # the haze is removed, not smeared with a low fidelity
        assert (s.background, s.fidelity) == (1, 150.0) and "widefield PSF" in s.reasons["background"]
    got = M.pearson_ssim(bigdecon.sparse_deconvolve(raw, psf=psf, **s.as_kwargs()), truth, "zyx")
    rl = M.pearson_ssim(bigdecon.sparse_deconvolve(raw, psf=psf, **RL_ONLY), truth, "zyx")
    assert got[0] > rl[0] + 0.05 and got[1] >= rl[1] - 0.005, (got, rl)


def test_widefield_volume_many_photons_is_rl_alone():
    """Born-Wolf widefield at 3000 photons: RL alone, with the reason naming the widefield PSF."""
    raw, _, psf = optics_phantom("widefield", 3000)
    s = suggest_parameters(raw, psf=psf)
    assert (s.sparse_iters, s.background, s.deconv_type, s.deconv_iters) == (0, 0, 1, 20)
    assert "widefield PSF" in s.reasons["sparse_iters"]
