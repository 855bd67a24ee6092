"""``bigdecon suggest``, ``run --auto`` and the note for default parameters on a z stack, on real stores."""

from __future__ import annotations

import json

import pytest
from helpers import cli

import bigdecon
from bigdecon.data import filaments_timelapse
from bigdecon.io import open_image, write_image
from bigdecon.suggest import suggest_parameters

UM = "micrometer"
SCALE = {"z": 0.2, "y": 0.065, "x": 0.065}
UNITS = {"z": UM, "y": UM, "x": UM}


@pytest.fixture(scope="module")
def dim(tmp_path_factory):
    """A low-photon z stack (30 photons at the peak): the suggestion differs from the published defaults."""
    raw = filaments_timelapse((6, 40, 40), fwhm=3.0, photons=30, seed=5)[0]
    path = write_image(tmp_path_factory.mktemp("dim") / "dim.ome.zarr", raw, "zyx", scale=SCALE, units=UNITS)
    return path, raw


def test_top_level_export(dim):
    assert bigdecon.suggest_parameters is suggest_parameters
    path, raw = dim
    lazy = suggest_parameters(open_image(path).data, fwhm=3, axes="zyx")
    assert lazy == suggest_parameters(raw, fwhm=3, axes="zyx")  # the lazy Dask read sees the same pixels


def test_suggest_prints_values_reasons_and_estimates(dim, run_main):
    path, raw = dim
    expected = suggest_parameters(raw, fwhm=3, axes="zyx")
    code, out, err = run_main("suggest", path, "--fwhm", "3")
    assert code == 0, err
    lines = out.splitlines()
    for name, value in expected.as_kwargs().items():
        line = next(x for x in lines if x.split()[:1] == [name])
        assert line.split()[1] == f"{value:g}" and expected.reasons[name] in line
    assert any("estimates:" in x and "noise sigma" in x and "photons" in x and "Nyquist" in x for x in lines)
    code, out, err = run_main("suggest", path, "--fwhm", "3", "--json")
    record = json.loads(out)["channels"]["0"]
    assert record["fidelity"] == expected.fidelity and record["reasons"] == expected.reasons
    assert record["measured"]["noise_rel"] == expected.measured.noise_rel
    code, out, err = run_main("suggest", path)
    assert code == 2 and "PSF size" in err and err.count("\n") == 1


def test_suggest_subprocess_with_optics(dim):
    path, _ = dim
    proc = cli("suggest", path, "--na", "1.2", "--wavelength", "0.52", "--refractive-index", "1.33")
    assert proc.returncode == 0, proc.stderr
    assert "suggested parameters" in proc.stdout and "x Nyquist" in proc.stdout
    # A 6-plane stack: the Born-Wolf PSF is cut to 5 planes, whose out-of-focus share is printed.
    assert "of the PSF's light out of focus" in proc.stdout


@pytest.mark.slow
def test_defaults_note_then_auto_records_the_suggestion(dim, tmp_path):
    path, raw = dim
    cluster = ["--workers", "1", "--threads-per-worker", "1"]
    plain = cli("run", path, tmp_path / "plain.ome.zarr", "--fwhm", "3", *cluster)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    notes = [x for x in plain.stderr.splitlines() if x.startswith("bigdecon: note: data suggest:")]
    assert len(notes) == 1 and notes[0].endswith("try --auto or `bigdecon suggest`"), plain.stderr

    expected = suggest_parameters(raw, fwhm=3, axes="zyx")
    out = tmp_path / "auto.ome.zarr"
    auto = cli("run", path, out, "--fwhm", "3", "--auto", "--sparse-iters", "20", *cluster)
    assert auto.returncode == 0, auto.stdout + auto.stderr
    assert "data suggest" not in auto.stderr
    assert "--auto chose: " in auto.stdout and "sparse_iters 20 (given)" in auto.stdout
    made = open_image(out).attrs["bigdecon"]
    # The parameters used: suggested ones, except the one given on the command line.
    for name, value in expected.as_kwargs().items():
        assert made["parameters"][name] == (20 if name == "sparse_iters" else value), name
    assert made["suggestion"]["reasons"] == expected.reasons
    assert made["suggestion"]["measured"]["noise_rel"] == expected.measured.noise_rel
    assert made["config"]["auto"] is True
