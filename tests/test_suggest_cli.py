"""``bigdecon suggest`` and ``run --auto`` on real stores: the candidates, their losses, the winner."""

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
    """A low-photon z stack (30 photons at the peak)."""
    raw = filaments_timelapse((6, 40, 40), fwhm=3.0, photons=30, seed=5)[0]
    path = write_image(tmp_path_factory.mktemp("dim") / "dim.ome.zarr", raw, "zyx", scale=SCALE, units=UNITS)
    return path, raw


def test_top_level_export(dim):
    """One function, both forms: an array (with fwhm) and a path (with the PSF options) choose alike."""
    assert bigdecon.suggest_parameters is suggest_parameters
    path, raw = dim
    lazy = suggest_parameters(open_image(path).data, fwhm=3, axes="zyx", budget=5)
    in_memory = suggest_parameters(raw, fwhm=3, axes="zyx", budget=5)
    from_path = suggest_parameters(path, fwhm=3, budget=5)
    assert lazy == in_memory == from_path  # the lazy Dask read sees the same pixels
    assert [c["loss"] for c in lazy.candidates] == [c["loss"] for c in from_path.candidates]


def test_suggest_prints_the_candidates_and_json(dim, run_main):
    path, raw = dim
    expected = suggest_parameters(raw, fwhm=3, axes="zyx", budget=6)
    code, out, err = run_main("suggest", path, "--fwhm", "3", "--budget", "6")
    assert code == 0, err
    lines = out.splitlines()
    for c in expected.candidates:
        line = next(x for x in lines if x[2:].startswith(c["name"] + " "))
        assert float(line.split()[-3]) == pytest.approx(c["relative"], abs=1e-4)
    assert f"winner: {expected.winner}: {expected.why}" in lines
    code, out, err = run_main("suggest", path, "--fwhm", "3", "--budget", "6", "--json")
    record = json.loads(out)
    assert [c["name"] for c in record["candidates"]] == [c["name"] for c in expected.candidates]
    assert all(c["loss"] > 0 and set(c["params"]) >= {"sparse_iters", "deconv_iters"} for c in record["candidates"])
    assert record["winner"] == expected.winner and record["deconv_iters"] == expected.deconv_iters
    code, out, err = run_main("suggest", path)
    assert code == 2 and "needs the PSF" in err and err.count("\n") == 1
    code, out, err = run_main("suggest", path, "--fwhm", "3", "--budget", "0")
    assert code == 2 and "budget" in err and err.count("\n") == 1


@pytest.mark.slow
def test_suggest_subprocess_with_optics_and_png(dim, tmp_path):
    path, _ = dim
    png = tmp_path / "best.png"
    proc = cli(
        "suggest", path, "--na", "1.2", "--wavelength", "0.52", "--refractive-index", "1.33",
        "--budget", "3", "--png", png,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "winner: " in proc.stdout and "RL 40" in proc.stdout
    import matplotlib.image

    assert matplotlib.image.imread(png).shape[1] > 3 * matplotlib.image.imread(png).shape[0] / 2  # 4 panels


@pytest.mark.slow
def test_run_auto_records_the_choice(dim, tmp_path):
    """A real run: the candidates, their losses and the winner are in the output; a given parameter is
    imposed on every candidate."""
    path, raw = dim
    cluster = ["--workers", "1", "--threads-per-worker", "1"]
    expected = suggest_parameters(raw, fwhm=3, axes="zyx", budget=8, fixed={"tcontinuity": 1.0})
    out = tmp_path / "auto.ome.zarr"
    auto = cli("run", path, out, "--fwhm", "3", "--auto", "--budget", "8", "--tcontinuity", "1", *cluster)
    assert auto.returncode == 0, auto.stdout + auto.stderr
    assert f"--auto chose {expected.winner}: " in auto.stdout
    made = open_image(out).attrs["bigdecon"]
    for name, value in expected.as_kwargs().items():
        assert made["parameters"][name] == value, name
    assert made["parameters"]["tcontinuity"] == 1.0
    record = made["suggestion"]
    assert record["winner"] == expected.winner and len(record["candidates"]) == 8
    assert [c["loss"] for c in record["candidates"]] == pytest.approx([c["loss"] for c in expected.candidates])
    assert made["config"]["auto"] is True and made["config"]["budget"] == "8"


def test_suggest_takes_a_bare_tiffs_axes(realdata):
    """``--axes tyx`` reaches the measurement of a file, as it reaches ``run`` (the real membrane
    time-lapse, a bare TIFF read as zyx without it)."""
    path = realdata / "mpicbg_membrane_timelapse" / "membrane_2d_timelapse.tif"
    ran = cli("suggest", path, "--fwhm", "3", "--axes", "tyx", "--budget", "2", "--json")
    assert ran.returncode == 0, ran.stderr
    blocks = json.loads(ran.stdout)["blocks"]
    assert blocks and all("t" in b and "z" not in b for b in blocks)
    # The same through the API: the file's axes are what the measurement sees.
    assert all("t" in b for b in suggest_parameters(str(path), fwhm=3, axes="tyx", budget=1).blocks)
