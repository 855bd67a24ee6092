"""Issue 12 wired in: a PSF from the optics (API, CLI, per channel) and Wiener-Butterworth as step-5 type 3."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from helpers import cli

import bigdecon
from bigdecon.data import filaments_timelapse
from bigdecon.errors import InputError
from bigdecon.io import open_image, write_image
from bigdecon.params import DEFAULTS, PARAMETERS, Params
from bigdecon.solvers.psf import psf_fwhm, psf_size_for, widefield_psf
from bigdecon.solvers.psf_prepare import MODEL_FLOOR, energy_crop
from bigdecon.solvers.wiener_butterworth import rl_wiener_butterworth

TOLERANCE = 1e-3  # of the image maximum (ALGORITHM.md)
UM = "micrometer"
OPTICS = dict(na=1.1, wavelength=0.52, refractive_index=1.33)


@pytest.fixture(scope="module")
def raw():
    return filaments_timelapse((6, 48, 48), fwhm=3.0, seed=3)[0]


@pytest.fixture(scope="module")
def stores(tmp_path_factory, raw):
    folder = tmp_path_factory.mktemp("optics")
    scale = {"t": 1.0, "z": 0.3, "y": 0.1, "x": 0.1}
    units = {"t": "second", "z": UM, "y": UM, "x": UM}
    return {
        "zyx": write_image(folder / "zyx.ome.zarr", raw, "zyx", scale=scale, units=units),
        "tyx": write_image(folder / "tyx.ome.zarr", raw, "tyx", scale=scale, units=units, chunks=(3, 24, 24)),
        "czyx": write_image(folder / "czyx.ome.zarr", np.stack([raw, raw]), "czyx", scale=scale, units=units),
        "bare": write_image(folder / "bare.ome.zarr", raw, "zyx"),
    }


# --------------------------------------------------------------------------- PSF from the optics


def test_plan_builds_the_psf_from_the_metadata(stores):
    summary = bigdecon.plan(stores["zyx"], psf_model="widefield", **OPTICS)
    (described,) = summary["optics_psf"]
    # 3-D for data with z: the pixel sizes are the metadata's (z 0.3, y/x 0.1 um), the shape psf_size_for's,
    # cut to the data's extent (6 planes -> 5, 48 pixels -> 47), then to the box of 99 % of its light
    # (what rises above 1e-3 of its peak: the light of a model).
    expected = psf_size_for(1.1, 0.52, 1.33, (0.1, 0.1), 0.3)
    shape = (5, min(expected[1], 47), min(expected[2], 47))
    model = widefield_psf(shape, 1.1, 0.52, 1.33, 0.1, 0.3)
    direct, cropped = energy_crop(model, 0.99, MODEL_FLOOR)
    assert described["shape"] == list(cropped) and cropped[1] < energy_crop(model, 0.99)[1][1] < shape[1]
    assert described["fwhm_px"][1:] == pytest.approx(psf_fwhm(direct)[1:], abs=1e-3)
    assert described["model"] == "widefield" and described["na"] == 1.1
    # t is not z: the in-focus 2-D plane; na and wavelength alone mean widefield.
    (flat,) = bigdecon.plan(stores["tyx"], **OPTICS)["optics_psf"]
    plane = [min(s, 47) for s in psf_size_for(1.1, 0.52, 1.33, 0.1)]
    assert flat["shape"] == list(energy_crop(widefield_psf(plane, 1.1, 0.52, 1.33, 0.1), 0.99, MODEL_FLOOR)[1])
    assert flat["model"] == "widefield"


def test_per_channel_wavelengths_give_different_psfs(stores):
    summary = bigdecon.plan(stores["czyx"], na=1.1, wavelength={0: 0.52, 1: 0.61}, refractive_index=1.33)
    first, second = summary["optics_psf"]
    assert (first["channel"], second["channel"]) == (0, 1)
    assert (first["wavelength"], second["wavelength"]) == (0.52, 0.61)
    # Lateral FWHM scales with the wavelength (Abbe): 0.61 / 0.52 = 1.17.
    assert second["fwhm_px"][2] / first["fwhm_px"][2] == pytest.approx(0.61 / 0.52, rel=0.05)


def test_optics_psf_is_used_as_a_measured_psf(stores, tmp_path):
    # The run with the optics equals the run given the same PSF array: it is that PSF that step 5 uses.
    common = dict(sparse_iters=5, deconv_iters=2, chunks={"t": 3, "y": 24, "x": 24})
    bigdecon.deconvolve(stores["tyx"], tmp_path / "a.zarr", **OPTICS, **common)
    psf = widefield_psf([min(s, 47) for s in psf_size_for(1.1, 0.52, 1.33, 0.1)], 1.1, 0.52, 1.33, 0.1)
    psf = energy_crop(psf, 0.99, MODEL_FLOOR)[0]  # the box of 99 % of the light above 1e-3 of the peak
    bigdecon.deconvolve(stores["tyx"], tmp_path / "b.zarr", psf=psf, **common)
    a = open_image(tmp_path / "a.zarr")
    b = np.asarray(open_image(tmp_path / "b.zarr").data)
    np.testing.assert_array_equal(np.asarray(a.data), b)
    assert a.attrs["bigdecon"]["parameters"]["psf_shape"] == list(psf.shape)
    # What is recorded is what ran: the optics model and its PSF, then the measured PSF.
    assert a.attrs["bigdecon"]["psf_model"] == "widefield"
    assert a.attrs["bigdecon"]["optics_psf"][0]["shape"] == list(psf.shape)
    assert open_image(tmp_path / "b.zarr").attrs["bigdecon"]["psf_model"] == "measured"


def test_optics_psf_needs_pixel_sizes(stores, run_main):
    with pytest.raises(InputError, match="pixel size along y"):
        bigdecon.plan(stores["bare"], **OPTICS)
    with pytest.raises(InputError, match="needs sheet_thickness"):
        bigdecon.plan(stores["zyx"], psf_model="lightsheet", **OPTICS)
    with pytest.raises(InputError, match="not both"):
        bigdecon.plan(stores["zyx"], fwhm=3, **OPTICS)
    code, _, err = run_main("info", stores["bare"], "--na", "1.1", "--wavelength", "0.52")
    assert code == 2 and err.startswith("bigdecon: error:") and err.count("\n") == 1, err
    assert "pixel size" in err and "Traceback" not in err


def test_cli_info_prints_the_optics_psf(stores, run_main):
    args = ["--na", "1.1", "--wavelength", "0.52", "--refractive-index", "1.33", "--psf-model", "widefield"]
    code, out, err = run_main("info", stores["zyx"], *args)
    assert code == 0, err
    lateral = min(psf_size_for(1.1, 0.52, 1.33, (0.1, 0.1), 0.3)[1], 47)
    lateral = energy_crop(widefield_psf((5, lateral, lateral), 1.1, 0.52, 1.33, 0.1, 0.3), 0.99, MODEL_FLOOR)[1][1]
    line = next(x for x in out.splitlines() if x.strip().startswith("PSF:"))
    assert f"widefield, NA 1.1, wavelength 0.52, n 1.33, shape 5x{lateral}x{lateral}, FWHM" in line
    code, out, err = run_main("info", stores["czyx"], "--na", "1.1", "--wavelength", "0=0.52", "1=0.61")
    assert code == 0, err
    lines = [x for x in out.splitlines() if x.strip().startswith("PSF:")]
    assert len(lines) == 2 and "channel 1: widefield" in lines[1] and "wavelength 0.61" in lines[1]


# --------------------------------------------------------------------------- Wiener-Butterworth (deconv_type 3)


def test_deconv_type_3_parameters():
    p = Params.from_kwargs(fwhm=3, deconv_type=3, deconv_iters=2, wb_beta=0.2)
    assert (p.wb_alpha, p.wb_beta, p.wb_order) == (0.001, 0.2, 20)
    with pytest.raises(InputError, match="deconv_type must be one of 0-3"):
        Params.from_kwargs(fwhm=3, deconv_type=4)
    with pytest.raises(InputError, match="wb_beta"):
        Params.from_kwargs(fwhm=3, deconv_type=3, wb_beta=1.0)


def test_deconv_iters_default_depends_on_deconv_type(raw):
    # None (the default) resolves on construction: 7 for RL and Landweber, 2 for Wiener-Butterworth.
    assert DEFAULTS.deconv_iters == 7 and PARAMETERS["deconv_iters"].default is None
    assert [Params.from_kwargs(fwhm=3, deconv_type=t).deconv_iters for t in (0, 1, 2, 3)] == [7, 7, 7, 2]
    assert Params.from_kwargs(fwhm=3, deconv_type=3, deconv_iters=5).deconv_iters == 5  # given wins
    assert Params.from_kwargs(fwhm=3, deconv_type=3).to_dict()["deconv_iters"] == 2  # recorded resolved
    kw = dict(fwhm=3, sparse_iters=0, background=0)
    np.testing.assert_array_equal(
        bigdecon.sparse_deconvolve(raw, **kw, deconv_type=3),
        bigdecon.sparse_deconvolve(raw, **kw, deconv_type=3, deconv_iters=2),
    )
    np.testing.assert_array_equal(
        bigdecon.sparse_deconvolve(raw, **kw), bigdecon.sparse_deconvolve(raw, **kw, deconv_iters=7)
    )


def test_run_argv_states_deconv_iters_only_off_its_types_default():
    from bigdecon.cli import build_parser, run_argv_from_args
    from bigdecon.cli.submit import EXPLICIT_RUN_OPTIONS

    parser = build_parser()

    def argv(*options):
        return run_argv_from_args(parser.parse_args(["run", "in.zarr", "out.zarr", "--fwhm", "3", *options]))

    assert argv("--deconv-type", "3") == ["--fwhm", "3", "--deconv-type", "3"]
    assert argv("--deconv-type", "3", "--deconv-iters", "7") == [
        "--fwhm", "3", "--deconv-iters", "7", "--deconv-type", "3"
    ]  # fmt: skip
    assert argv("--deconv-iters", "2") == ["--fwhm", "3", "--deconv-iters", "2"]
    # A submitted job states the resolved number (the image's bigdecon may resolve differently).
    args = parser.parse_args(["run", "in.zarr", "out.zarr", "--fwhm", "3", "--deconv-type", "3"])
    stated = run_argv_from_args(args, explicit=EXPLICIT_RUN_OPTIONS)
    assert stated[stated.index("--deconv-iters") + 1] == "2"


def test_cli_info_prints_the_final_step_and_its_iterations(stores, run_main):
    code, out, err = run_main("info", stores["tyx"], "--fwhm", "3", "--deconv-type", "3")
    assert code == 0, err
    assert "final step:       Richardson-Lucy, Wiener-Butterworth back projector, 2 iterations" in out
    code, out, err = run_main("info", stores["tyx"], "--fwhm", "3")
    assert code == 0, err
    assert "final step:       Richardson-Lucy, 7 iterations" in out
    code, out, err = run_main("info", stores["tyx"], "--fwhm", "3", "--deconv-type", "2", "--deconv-iters", "4")
    assert code == 0, err
    assert "final step:       Landweber, 4 iterations" in out


@pytest.mark.slow
def test_cli_run_deconv_type_3_records_its_default_iterations(stores, tmp_path, raw):
    dest = tmp_path / "wb_default.ome.zarr"
    args = ["--fwhm", "3", "--sparse-iters", "10", "--deconv-type", "3", "--workers", "1", "--threads-per-worker", "1"]
    proc = cli("run", stores["tyx"], dest, *args, "--print-config")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "deconv_iters = 2" in proc.stdout  # the configuration printed (and reusable) states the number
    assert open_image(dest).attrs["bigdecon"]["parameters"]["deconv_iters"] == 2
    whole = bigdecon.sparse_deconvolve(raw, fwhm=3, sparse_iters=10, deconv_type=3, deconv_iters=2)
    assert np.abs(np.asarray(open_image(dest).data) - whole).max() <= TOLERANCE * float(whole.max())


def test_deconv_type_3_runs_the_wiener_butterworth_solver(raw):
    # No sparse step, no background: step 5 alone, so the result is scale * RL-WB(raw / scale).
    out = bigdecon.sparse_deconvolve(raw, fwhm=3, sparse_iters=0, background=0, deconv_type=3, deconv_iters=2)
    from bigdecon.solvers.psf import gaussian_psf
    from bigdecon.solvers.richardson_lucy import published_pad

    scale = float(raw.max())
    pad = published_pad(raw.shape)
    expected = scale * rl_wiener_butterworth(raw / np.float32(scale), gaussian_psf((3, 3)), 2, pad=(pad, pad))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-5 * scale)
    rl = bigdecon.sparse_deconvolve(raw, fwhm=3, sparse_iters=0, background=0, deconv_iters=2)
    assert np.abs(out - rl).max() > 0.01 * scale  # not Richardson-Lucy under another name


def test_deconv_type_3_chunked_equals_whole(raw, stores, tmp_path):
    params = dict(fwhm=3, sparse_iters=20, deconv_type=3, deconv_iters=2)
    whole = bigdecon.sparse_deconvolve(raw, **params)
    lazy = bigdecon.sparse_deconvolve(da.from_array(raw, chunks=(3, 24, 24)), chunks=(3, 24, 32), **params)
    peak = float(np.abs(whole).max())
    assert np.abs(np.asarray(lazy) - whole).max() <= TOLERANCE * peak
    bigdecon.deconvolve(stores["tyx"], tmp_path / "out.zarr", chunks={"t": 3, "y": 24, "x": 24}, **params)
    stored = np.asarray(open_image(tmp_path / "out.zarr").data)
    assert np.abs(stored - whole).max() <= TOLERANCE * peak


@pytest.mark.slow
def test_cli_run_deconv_type_3(stores, tmp_path, raw):
    out = tmp_path / "wb.ome.zarr"
    args = ["--fwhm", "3", "--sparse-iters", "10", "--deconv-type", "3", "--deconv-iters", "2", "--wb-order", "10"]
    proc = cli("run", stores["tyx"], out, *args, "--workers", "1", "--threads-per-worker", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]  # the options that are not defaults, in one line
    assert "--deconv-type 3" in first and "--wb-order 10" in first, first
    img = open_image(out)
    assert img.attrs["bigdecon"]["parameters"]["deconv_type"] == 3
    assert img.attrs["bigdecon"]["parameters"]["wb_order"] == 10
    whole = bigdecon.sparse_deconvolve(raw, fwhm=3, sparse_iters=10, deconv_type=3, deconv_iters=2, wb_order=10)
    assert np.abs(np.asarray(img.data) - whole).max() <= TOLERANCE * float(whole.max())


def test_help_names_the_new_options(run_main):
    code, out, _ = run_main("run", "--help")
    assert code == 0
    for flag in ("--na", "--wavelength", "--refractive-index", "--sheet-thickness", "--psf-model", "--wb-alpha"):
        assert flag in out
    text = " ".join(out.split())
    assert "3 Richardson-Lucy with the Wiener" in text and "Butterworth back projector" in text


def test_deconv_type_3_volume_is_one_whole_volume_task(raw):
    # 3-D Wiener-Butterworth (3-value fwhm): lazy chunks give the whole-array result (a Gaussian PSF may
    # take step-5 blocks with the "wb" halo; at this size the halo covers the volume).
    params = dict(fwhm=(2, 3, 3), sparse_iters=10, background=0, deconv_type=3, deconv_iters=2)
    whole = bigdecon.sparse_deconvolve(raw, **params)
    lazy = np.asarray(bigdecon.sparse_deconvolve(da.from_array(raw, chunks=(3, 24, 24)), chunks=(3, 24, 24), **params))
    assert np.abs(lazy - whole).max() <= TOLERANCE * float(np.abs(whole).max())
    rl = bigdecon.sparse_deconvolve(raw, **{**params, "deconv_type": 1})
    assert np.abs(whole - rl).max() > 0.01 * float(np.abs(whole).max())
