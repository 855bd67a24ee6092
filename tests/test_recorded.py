"""What is printed and recorded is what ran: the PSF model, one FWHM, the noise of quantised data, the clock."""

from __future__ import annotations

import io

import numpy as np
import pytest
import tifffile

from bigdecon.cli import build_parser
from bigdecon.cli.options import method_kwargs, resolve_options
from bigdecon.errors import InputError
from bigdecon.solvers.psf import psf_fwhm, widefield_psf


def _resolved(*argv: str) -> dict:
    return resolve_options(build_parser().parse_args(["run", "in.zarr", "out.zarr", *argv]))


def test_the_optics_resolve_to_the_model_that_runs():
    # --na and --wavelength alone: the widefield model, and the configuration says so.
    resolved = _resolved("--na", "1.1", "--wavelength", "0.46")
    assert resolved["psf_model"] == "widefield" and method_kwargs(resolved)["psf_model"] == "widefield"
    assert _resolved("--fwhm", "3")["psf_model"] == "gaussian"
    assert _resolved("--na", "1.1", "--wavelength", "0.46", "--psf-model", "confocal")["psf_model"] == "confocal"
    # An explicit Gaussian model with the optics is refused, not computed as a widefield PSF.
    with pytest.raises(InputError, match="--psf-model gaussian takes"):
        method_kwargs(_resolved("--na", "1.1", "--wavelength", "0.46", "--psf-model", "gaussian"))


def test_suggest_and_info_report_one_fwhm():
    from bigdecon.passes.request import _fwhm_px
    from bigdecon.suggest import _psf_fwhm

    # A narrow widefield PSF (NA 1.1, 460 nm, 0.2 um pixels): linear and spline widths differed here
    # (suggest 1.18 px, info 1.307 px on the same PSF).
    psf = widefield_psf((9, 9), 1.1, 0.46, 1.33, 0.2)
    info = _fwhm_px(psf)
    fx, fz = _psf_fwhm(psf)
    assert fz is None and fx == pytest.approx(info[1], abs=1e-3) and fx == pytest.approx(psf_fwhm(psf)[1])
    assert 1.2 < fx < 1.4


def test_noise_of_a_dim_uint8_stack_is_not_zero(realdata):
    from bigdecon.suggest import estimate_noise

    # Real confocal beads, uint8, background at 0-2 grey levels: the plain MAD was 0 here.
    beads = tifffile.imread(realdata / "mpicbg_confocal_beads" / "Bead_Image1_crop.tif")
    assert beads.dtype == np.uint8
    sigma = estimate_noise(beads)[0]
    assert 0.1 < sigma < 0.5, sigma
    # Rounded Gaussian noise: the estimate follows the rounded data's own deviation at every level.
    rng = np.random.default_rng(1)
    for s in (0.3, 0.5, 1.0, 2.0, 5.0):
        rounded = np.round(rng.normal(100.0, s, (256, 256)))
        expected = np.sqrt(s**2 + 1 / 12)  # the noise plus the rounding's
        assert estimate_noise(rounded)[0] == pytest.approx(expected, rel=0.4 if s < 0.5 else 0.1), s


def test_progress_counts_elapsed_time_from_the_run_start():
    from bigdecon.progress import ProgressReporter

    now = [100.0]
    stream = io.StringIO()
    report = ProgressReporter(1000, stream=stream, tty=False, interval=0.0, clock=lambda: now[0])
    now[0] += 2.5  # opening the input and the statistics
    report(0, 4)
    now[0] += 1.0
    report(1, 4)
    first, second = stream.getvalue().splitlines()
    assert "elapsed 2.50 s" in first and "elapsed 3.50 s" in second, stream.getvalue()
    assert "250 voxel/s" in second  # the rate counts from the first report: 1 task of 4 in 1 s
