"""The ``bigdecon`` command line on real stores: runs in a subprocess, refusals in process.

Bad input must give exit code 2, one line on stderr naming the problem, no
traceback, and no output that opens as an image. Commands that fail before any
cluster starts run through ``bigdecon.cli.main`` in this process (``run_main``);
runs, interrupts and a few refusals run as real processes (``cli``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import Ran, cli, stop_process_groups

from bigdecon import data
from bigdecon.io import OmeZarrWriter, open_image, write_block

# One small worker process: cluster start-up dominates these runs.
CLUSTER = ["--workers", "1", "--threads-per-worker", "2"]
FAST = ["--fwhm", "3", "--sparse-iters", "10", "--deconv-iters", "3"]


def write_ome(path: Path, array: np.ndarray, axes: str = "tyx", chunks=None) -> Path:
    writer = OmeZarrWriter(
        str(path),
        shape=array.shape,
        axes=axes,
        chunks=chunks or array.shape,
        dtype=str(array.dtype),
        scale={"t": 2.0, "z": 0.2, "y": 0.065, "x": 0.065},
        units={"t": "second", "z": "micrometer", "y": "micrometer", "x": "micrometer"},
    )
    write_block(str(path), tuple(slice(None) for _ in array.shape), array)
    writer.finalize()
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A 6x64x64 drifting-filament OME-Zarr (NGFF 0.5), chunked 3x32x32."""
    raw, _ = data.filaments_timelapse((6, 64, 64), seed=0)
    return write_ome(tmp_path_factory.mktemp("in") / "small.ome.zarr", raw, chunks=(3, 32, 32))


def assert_usage_error(proc: subprocess.CompletedProcess | Ran, *words: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert err.startswith("bigdecon: error:") and "\n" not in err, err
    for word in words:
        assert word.lower() in err.lower(), (word, err)


def assert_no_image(path: Path) -> None:
    if not os.path.lexists(path):
        return
    with pytest.raises(Exception):  # noqa: B017 - any refusal to open it will do
        open_image(path)


def stored_config(path: Path) -> dict:
    return open_image(path).attrs["bigdecon"]["config"]


# --------------------------------------------------------------------------- success paths


def test_help_lists_commands_and_options():
    top = cli("--help")
    assert top.returncode == 0
    for command in ("run", "info", "demo"):
        assert command in top.stdout
    run = cli("run", "--help")
    assert run.returncode == 0
    for option in (
        "--fwhm",
        "--resolution",
        "--psf",
        "--sparse-iters",
        "--fidelity",
        "--sparsity",
        "--tcontinuity",
        "--background",
        "--deconv-iters",
        "--deconv-type",
        "--up-sample",
        "--channels",
        "--timepoints",
        "--chunks",
        "--depth",
        "--workers",
        "--threads-per-worker",
        "--memory-limit",
        "--gpus",
        "--scheduler",
        "--resume",
        "--overwrite",
        "--output-dtype",
        "--ngff-version",
        "--dashboard-address",
        "--debug",
        "--config",
        "--scheduler-timeout",
        "--device",
        "--no-gpus",
    ):
        assert option in run.stdout, option


def test_run_end_to_end(small, tmp_path):
    out = tmp_path / "out.ome.zarr"
    proc = cli("run", small, out, *FAST, *CLUSTER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # One line first: what runs, with the options that are not defaults (the whole configuration on request).
    first = proc.stdout.splitlines()[0]
    assert first.endswith(
        "(--fwhm 3 --sparse-iters 10 --deconv-iters 3 --workers 1 --threads-per-worker 2; all: --print-config)"
    )
    assert "# configuration" not in proc.stdout
    assert "tasks (" in proc.stderr  # progress lines (not a TTY: plain lines)
    assert "voxel/s" in proc.stdout and f"napari --plugin napari-ome-zarr {out}" in proc.stdout
    # The plan printed before the run is the one that runs: one task count everywhere.
    planned = re.search(r"^Plan: (\d+) tasks", proc.stdout, re.M).group(1)
    assert f" {planned}/{planned} tasks (100%)" in proc.stderr
    assert re.search(rf"^Finished in .*, {planned} tasks$", proc.stdout, re.M), proc.stdout
    img = open_image(out)
    assert img.shape == (6, 64, 64) and img.axes == ("t", "y", "x")
    assert img.scale["y"] == pytest.approx(0.065)
    result = np.asarray(img.data.compute())
    assert np.isfinite(result).all() and result.max() > 0
    config = stored_config(out)
    assert config["sparse_iters"] == 10 and config["fwhm"] == [3.0] and config["input"] == str(small)
    # A second run to the same place is refused without --overwrite ...
    again = cli("run", small, out, *FAST, *CLUSTER)
    assert_usage_error(again, "exists", "--overwrite")
    assert open_image(out).shape == (6, 64, 64)  # ... and leaves the finished output alone


@pytest.mark.parametrize("fmt", ["toml", "yaml"])
def test_config_file_with_command_line_override(small, tmp_path, fmt):
    if fmt == "toml":
        text = 'fwhm = 3\nsparse_iters = 50\ndeconv_iters = 2\nchunks = "t=6,y=64,x=64"\nworkers = 1\n'
    else:
        text = "fwhm: [3, 3]\nsparse-iters: 50\ndeconv_iters: 2\nchunks: {t: 6, y: 64, x: 64}\nworkers: 1\n"
    config = tmp_path / f"options.{fmt}"
    config.write_text(text)
    out = tmp_path / "out.ome.zarr"
    proc = cli("run", small, out, "--config", config, "--sparse-iters", "5", "--threads-per-worker", "2", "-v")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stored = stored_config(out)
    assert stored["sparse_iters"] == 5  # the command line wins
    assert stored["deconv_iters"] == 2  # the file fills in the rest
    assert stored["fwhm"] == ([3.0] if fmt == "toml" else [3.0, 3.0])
    assert stored["chunks"] == {"t": 6, "y": 64, "x": 64}
    assert open_image(out).attrs["bigdecon"]["parameters"]["sparse_iters"] == 5
    if fmt == "toml":
        # The configuration printed at the start is itself a valid --config file.
        printed = proc.stdout.split("# configuration (reusable with --config)\n", 1)[1].split("\n\n", 1)[0]
        (tmp_path / "printed.toml").write_text(printed)
        info = cli("info", small, "--config", tmp_path / "printed.toml")
        assert info.returncode == 0, info.stderr


def test_info_reports_image_and_plan(small):
    proc = cli("info", small, "--fwhm", "3", "--chunks", "t=3,y=32,x=32")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in (
        "axes:        tyx",
        "6x64x64",
        "float32",
        "3x32x32",
        "y 0.065 micrometer",
        "t 2 second",
        "NGFF 0.5",
        "output shape",
        "overlap per axis",
        "tasks",
        "memory per task",
    ):
        assert text in out, (text, out)
    assert "t 6" in out and "y 16" in out  # the halo, named by axis


def test_info_on_tiff_without_fwhm(tmp_path, run_main):
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.ones((5, 32, 32), np.uint16), metadata={"axes": "ZYX"})
    proc = run_main("info", path)
    assert proc.returncode == 0, proc.stderr
    assert "TIFF" in proc.stdout and "uint16" in proc.stdout and "no --fwhm" in proc.stdout


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--fwhm", "3", "SMALL"], "PSF FWHM:         3 x 3 px"),  # options before INPUT: --fwhm takes only numbers
        (["--fwhm", "2", "3", "SMALL"], "PSF FWHM:         2 x 3 px"),
        (["SMALL", "--fwhm", "2,3"], "PSF FWHM:         2 x 3 px"),
        (["SMALL", "--resolution", "0.13"], "PSF FWHM:         2 x 2 px (from --resolution and the pixel size)"),
        (["SMALL", "--fwhm", "3", "--timepoints", "-2:"], "output shape:     2x64x64"),  # the last two time points
        (["SMALL", "--fwhm", "3", "--timepoints", "1:-1"], "output shape:     4x64x64"),
    ],
)
def test_info_argument_forms(small, argv, expected, run_main):
    proc = run_main("info", *[small if a == "SMALL" else a for a in argv])
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout, proc.stdout


def test_resolution_needs_pixel_sizes(tmp_path, run_main):
    import tifffile

    path = tmp_path / "no-sizes.tif"
    tifffile.imwrite(path, np.ones((5, 32, 32), np.uint16), metadata={"axes": "ZYX"})
    assert_usage_error(run_main("info", path, "--resolution", "0.2"), "resolution", "pixel size")


def test_tiff_run_relative_output_then_info(tmp_path):
    """A TIFF in, a relative OUTPUT: the summary names it absolutely; `info` describes the result."""
    import tifffile

    raw, _ = data.filaments_timelapse((6, 48, 48), seed=1)
    tifffile.imwrite(tmp_path / "in.tif", (raw * 100).astype(np.uint16), metadata={"axes": "TYX"})
    proc = cli("run", "in.tif", "out.ome.zarr", *FAST, *CLUSTER, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = (tmp_path / "out.ome.zarr").resolve()
    assert f"Output: {out} (shape 6x48x48)" in proc.stdout, proc.stdout
    info = cli("info", out)
    assert info.returncode == 0, info.stderr
    assert "made by:     bigdecon" in info.stdout and "PSF FWHM 3 x 3 px" in info.stdout, info.stdout


@pytest.mark.filterwarnings("ignore:.*stored as RGB with separate component planes:DeprecationWarning")
def test_run_on_a_tiff_stack_of_three_planes(tmp_path):
    """tifffile.imwrite(path, (3, y, x) stack) stores planar RGB: run reads the planes as channels, says so once."""
    import tifffile

    raw, _ = data.filaments_timelapse((3, 48, 48), seed=6)
    tifffile.imwrite(tmp_path / "three.tif", (raw * 100).astype(np.uint16))
    out = tmp_path / "out.ome.zarr"
    proc = cli("run", tmp_path / "three.tif", out, *FAST, *CLUSTER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    notes = [line for line in proc.stderr.splitlines() if line.startswith("bigdecon: note:")]
    assert len(notes) == 1 and "reading them as channels" in notes[0], proc.stderr
    assert "Input cyx 3x48x48 uint16" in proc.stdout, proc.stdout
    img = open_image(out)
    assert img.axes == ("c", "y", "x") and img.shape == (3, 48, 48)


@pytest.fixture(scope="module")
def two_channels(tmp_path_factory) -> Path:
    a, _ = data.filaments_timelapse((4, 48, 48), seed=4)
    b, _ = data.filaments_timelapse((4, 48, 48), fwhm=4.2, seed=5)
    return write_ome(tmp_path_factory.mktemp("c2") / "two.ome.zarr", np.stack([a, b], axis=1), axes="tcyx")


def test_per_channel_psf_sizes_end_to_end(two_channels, tmp_path, run_main):
    out = tmp_path / "out.ome.zarr"
    proc = cli(
        "run",
        two_channels,
        out,
        "--fwhm",
        "0=3",
        "1=4.2,4.2",
        "--sparse-iters",
        "5",
        "--deconv-iters",
        "2",
        *CLUSTER,
        "--print-config",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fwhm = {0 = [3.0], 1 = [4.2, 4.2]}" in proc.stdout
    config = stored_config(out)
    assert config["fwhm"] == {"0": [3.0], "1": [4.2, 4.2]}
    assert open_image(out).attrs["bigdecon"]["parameters"]["fwhm"] == {"0": [3.0, 3.0], "1": [4.2, 4.2]}
    # The printed configuration is a valid --config file with the same per-channel sizes.
    printed = proc.stdout.split("# configuration (reusable with --config)\n", 1)[1].split("\n\n", 1)[0]
    (tmp_path / "printed.toml").write_text(printed)
    info = cli("info", two_channels, "--config", tmp_path / "printed.toml")
    assert info.returncode == 0, info.stderr
    assert "channel 0: 3 x 3 px; channel 1: 4.2 x 4.2 px" in info.stdout, info.stdout
    # A channel the input does not have is bad input.
    assert_usage_error(run_main("info", two_channels, "--fwhm", "0=3", "5=4"), "fwhm", "5")


def test_no_arguments_and_version():
    proc = cli()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("bigdecon: error:") and "\n" not in proc.stderr.strip()
    version = cli("--version")
    assert version.returncode == 0 and re.fullmatch(r"bigdecon \d+\.\d+\.\d+\S*", version.stdout.strip())
    # python -m bigdecon is the same command
    module = subprocess.run([sys.executable, "-m", "bigdecon", "--version"], capture_output=True, text=True, timeout=60)
    assert module.returncode == 0 and module.stdout == version.stdout, module.stderr


def test_stdout_closed_early(small):
    """`bigdecon info X | head -1`: no error message, the exit status of a tool stopped by the pipe."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before anything is written
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bigdecon.cli", "info", str(small)],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


@pytest.mark.parametrize(
    "url, package, words",
    [
        ("gs://bigdecon-test-bucket/raw.ome.zarr", "gcsfs", ["gs:// needs gcsfs", "pip install gcsfs"]),
        (
            "s3://bigdecon-test-bucket/raw.ome.zarr",
            "s3fs",
            ["cannot open s3://bigdecon-test-bucket/raw.ome.zarr", "no credentials"],
        ),
    ],
)
def test_remote_store_problems_are_bad_input(url, package, words, tmp_path, monkeypatch, run_main):
    if package == "gcsfs" and importlib.util.find_spec("gcsfs") is not None:
        pytest.skip("gcsfs is installed")
    if package == "s3fs" and importlib.util.find_spec("s3fs") is None:
        pytest.skip("s3fs is not installed")
    for name in list(os.environ):
        if name.startswith("AWS_") and name != "AWS_CA_BUNDLE":
            monkeypatch.delenv(name)
    # No credentials anywhere, and no instance-metadata lookup: fails fast, offline.
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert_usage_error(run_main("info", url), *words)


@pytest.mark.slow
def test_demo(tmp_path):
    out = tmp_path / "demo-output"
    proc = cli("demo", out, "--workers", "2", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "demo.png").stat().st_size > 10_000
    for name in ("filaments", "beads"):
        for kind in ("raw", "truth", "rl", "sparse"):
            assert open_image(out / f"{name}_{kind}.ome.zarr").shape
    assert "PSNR" in proc.stdout and "napari --plugin napari-ome-zarr" in proc.stdout
    assert "CPU kernels ready (Numba, compiled once and cached on disk)" in proc.stdout  # not in the runs' times


def test_demo_psnr_ignores_gain_and_offset():
    """The demo's PSNR compares shapes: a scaled, shifted copy of the truth scores as perfect."""
    from bigdecon.demo import psnr

    raw, truth = data.filaments_timelapse((4, 64, 64), seed=2)
    assert psnr(300 * truth + 20, truth) > 100
    noisy = truth + 0.05 * np.random.default_rng(0).random(truth.shape)
    assert psnr(raw, truth) < psnr(noisy, truth) < 100


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    import zarr

    root = tmp_path_factory.mktemp("bad")
    (root / "notes.txt").write_text("not an image\n")
    (root / "folder").mkdir()
    (root / "folder" / "something.txt").write_text("x")
    zarr.create_array(str(root / "plain.zarr"), shape=(4, 16, 16), dtype="f4", zarr_format=3)
    nan = np.ones((6, 32, 32), np.float32)
    nan[2, 3, 4] = np.nan
    write_ome(root / "nan.ome.zarr", nan)
    inf = np.ones((6, 32, 32), np.float32)
    inf[1, 1, 1] = np.inf
    write_ome(root / "inf.ome.zarr", inf)
    group = zarr.open_group(
        str(root / "noyx.ome.zarr"),
        mode="w",
        zarr_format=3,
        attributes={
            "ome": {
                "version": "0.5",
                "multiscales": [
                    {
                        "axes": [{"name": "t", "type": "time"}, {"name": "z", "type": "space"}],
                        "datasets": [
                            {"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}
                        ],
                    }
                ],
            }
        },
    )
    group.create_array("s0", shape=(4, 8), dtype="f4")
    np.save(root / "big_psf.npy", np.ones((201, 201), np.float32))
    np.save(root / "psf_1d.npy", np.ones(9, np.float32))
    nan_psf = np.ones((9, 9), np.float32)
    nan_psf[4, 4] = np.nan
    np.save(root / "psf_nan.npy", nan_psf)
    np.save(root / "psf.npy", np.ones((9, 9), np.float32))
    return {p.name: p for p in root.iterdir()}


# (input, extra args, words the one-line error must contain)
BAD_INPUTS = {
    "missing path": ("missing.ome.zarr", [], ["not found", "missing.ome.zarr"]),
    "folder that is not OME-Zarr": ("folder", [], ["not an OME-Zarr", "folder"]),
    "plain zarr array": ("plain.zarr", [], ["OME", "plain.zarr"]),
    "text file": ("notes.txt", [], ["notes.txt"]),
    "axes without y/x": ("noyx.ome.zarr", [], ["axes", "y"]),
    "fwhm 0": ("SMALL", ["--fwhm", "0"], ["fwhm"]),
    "fwhm negative": ("SMALL", ["--fwhm", "-2"], ["fwhm"]),
    "fwhm NaN": ("SMALL", ["--fwhm", "nan"], ["fwhm", "nan"]),
    "fwhm not a number": ("SMALL", ["--fwhm", "three"], ["fwhm", "three"]),
    "no fwhm at all": ("SMALL", ["--fwhm-missing"], ["--fwhm"]),
    "negative sparse iterations": ("SMALL", ["--fwhm", "3", "--sparse-iters", "-5"], ["sparse_iters"]),
    "negative deconv iterations": ("SMALL", ["--fwhm", "3", "--deconv-iters", "-1"], ["deconv_iters"]),
    "fractional iterations": ("SMALL", ["--fwhm", "3", "--sparse-iters", "1.5"], ["sparse_iters"]),
    "background mode 9": ("SMALL", ["--fwhm", "3", "--background", "9"], ["background"]),
    "PSF larger than the image (fwhm)": ("SMALL", ["--fwhm", "60"], ["PSF", "larger"]),
    "PSF larger than the image (file)": ("SMALL", ["--psf", "BAD/big_psf.npy", "--psf-as-is"], ["PSF", "larger"]),
    "PSF file missing": ("SMALL", ["--psf", "BAD/nope.npy"], ["PSF", "nope.npy"]),
    "bad chunks": ("SMALL", ["--fwhm", "3", "--chunks", "q=4"], ["chunks"]),
    "timepoints out of range": ("SMALL", ["--fwhm", "3", "--timepoints", "4:99"], ["timepoints"]),
    "timepoints reversed": ("SMALL", ["--fwhm", "3", "--timepoints", "5:2"], ["timepoints 5:2", "empty or reversed"]),
    "timepoints empty": ("SMALL", ["--fwhm", "3", "--timepoints", "3:3"], ["timepoints 3:3", "empty or reversed"]),
    "timepoints not a range": ("SMALL", ["--fwhm", "3", "--timepoints", "2-4"], ["timepoints", "A:B"]),
    "chunks of 0": ("SMALL", ["--fwhm", "3", "--chunks", "t=0,y=32,x=32"], ["chunks", ">= 1"]),
    "negative chunks": ("SMALL", ["--fwhm", "3", "--chunks", "y=-4"], ["chunks", ">= 1"]),
    "1-D PSF file": ("SMALL", ["--psf", "BAD/psf_1d.npy"], ["psf_1d.npy", "2-D or 3-D"]),
    "NaN in PSF file": ("SMALL", ["--psf", "BAD/psf_nan.npy"], ["psf_nan.npy", "NaN"]),
    "PSF file and fwhm": ("SMALL", ["--psf", "BAD/psf.npy", "--fwhm", "3"], ["one of --fwhm, --resolution or --psf"]),
    "fwhm and resolution": ("SMALL", ["--fwhm", "3", "--resolution", "0.2"], ["one of --fwhm, --resolution or --psf"]),
    "output dtype not a dtype": ("SMALL", ["--fwhm", "3", "--output-dtype", "bogus"], ["output_dtype", "bogus"]),
    "output dtype complex": ("SMALL", ["--fwhm", "3", "--output-dtype", "complex64"], ["output_dtype", "complex64"]),
    "NGFF 0.3": ("SMALL", ["--fwhm", "3", "--ngff-version", "0.3"], ["ngff_version", "0.3"]),
    "memory limit 4 bytes": ("SMALL", ["--fwhm", "3", "--memory-limit", "4"], ["memory limit", "4 B", "less than"]),
    "memory limit 1kB": ("SMALL", ["--fwhm", "3", "--memory-limit", "1kB"], ["memory limit", "1000 B", "less than"]),
    "per-channel fwhm mixed with one value": ("SMALL", ["--fwhm", "3", "1=4"], ["fwhm", "C=VALUES"]),
    "unknown device": ("SMALL", ["--fwhm", "3", "--device", "tpu"], ["device", "tpu"]),
    "scheduler timeout 0": ("SMALL", ["--fwhm", "3", "--scheduler-timeout", "0"], ["scheduler_timeout", "> 0"]),
    "channels without c axis": ("SMALL", ["--fwhm", "3", "--channels", "1"], ["channels"]),
    "unknown option": ("SMALL", ["--fwhm", "3", "--bogus"], ["--bogus"]),
}


def bad_run_args(case: str, bad: dict[str, Path], small: Path, out: Path) -> tuple[list, list[str]]:
    """``bigdecon run`` arguments of a BAD_INPUTS case, and the words its error must contain."""
    source, extra, words = BAD_INPUTS[case]
    src = small if source == "SMALL" else bad.get(source, out.parent / source)
    extra = [a.replace("BAD/", str(next(iter(bad.values())).parent) + "/") for a in extra if a != "--fwhm-missing"]
    if source != "SMALL" and "--fwhm" not in extra:
        extra = ["--fwhm", "3", *extra]
    return ["run", src, out, *extra, *CLUSTER], words


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_in_one_line(case, bad, small, tmp_path, run_main):
    """Refused before any cluster starts: in this process, through bigdecon.cli.main."""
    out = tmp_path / "out.ome.zarr"
    argv, words = bad_run_args(case, bad, small, out)
    assert_usage_error(run_main(*argv), *words)
    assert_no_image(out)


@pytest.mark.parametrize("case", ["missing path", "fwhm NaN", "unknown option"])
def test_bad_input_in_a_real_process(case, bad, small, tmp_path):
    """The same refusals from the installed command: exit 2, one line, no traceback."""
    out = tmp_path / "out.ome.zarr"
    argv, words = bad_run_args(case, bad, small, out)
    assert_usage_error(cli(*argv, timeout=60), *words)
    assert_no_image(out)


@pytest.mark.parametrize("name", ["nan.ome.zarr", "inf.ome.zarr"])
def test_non_finite_pixels(name, bad, tmp_path):
    out = tmp_path / "out.ome.zarr"
    proc = cli("run", bad[name], out, "--fwhm", "3", *CLUSTER, timeout=120)
    assert_usage_error(proc, "NaN")
    assert_no_image(out)


@pytest.mark.parametrize("where, words", [("inside", ["inside"]), ("same", ["is the input"])])
def test_output_is_or_inside_input(small, where, words, run_main):
    out = small / "result.ome.zarr" if where == "inside" else small
    proc = run_main("run", small, out, *FAST, *CLUSTER, "--overwrite")
    assert_usage_error(proc, *words)
    assert not (small / "result.ome.zarr").exists()
    assert open_image(small).shape == (6, 64, 64)


def test_unwritable_output(small, tmp_path, run_main):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "out.ome.zarr"  # a file where a folder should be: unwritable even for root
    proc = run_main("run", small, out, *FAST, *CLUSTER)
    assert_usage_error(proc, "cannot write output")
    assert not os.path.exists(out)


@pytest.mark.parametrize("kind", ["read-only folder", "/proc"])
def test_read_only_output_folder(small, tmp_path, kind, run_main):
    if kind == "/proc":
        if not os.path.isdir("/proc/self"):
            pytest.skip("no /proc")
        # Nobody, root included, can create folders in /proc.
        proc = run_main("run", small, "/proc/bigdecon-test/out.ome.zarr", *FAST, *CLUSTER)
        assert_usage_error(proc, "cannot write output", "/proc")
        return
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        pytest.skip("root can write to a read-only folder (the /proc case covers root)")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        proc = run_main("run", small, folder / "out.ome.zarr", *FAST, *CLUSTER)
        assert_usage_error(proc, "cannot write output")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("where", ["/proc/bigdecon-demo", "FILE/demo-output"])
def test_demo_output_unwritable(tmp_path, where, run_main):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    start = time.monotonic()
    proc = run_main("demo", where.replace("FILE", str(blocker)))
    assert_usage_error(proc, "cannot write demo output")
    assert time.monotonic() - start < 20  # refused before any cluster starts


@pytest.fixture
def silent_server():
    """A port that accepts connections and never says anything (like a proxy or a dashboard)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []

    def serve():
        with contextlib.suppress(OSError):
            while True:
                accepted.append(server.accept()[0])

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_scheduler_that_does_not_answer(small, tmp_path, kind, request):
    if kind == "silent":
        port = request.getfixturevalue("silent_server")
    else:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    out = tmp_path / "out.ome.zarr"
    start = time.monotonic()
    proc = cli(
        "run", small, out, *FAST, "--scheduler", f"tcp://127.0.0.1:{port}", "--scheduler-timeout", "2", timeout=60
    )
    assert time.monotonic() - start < 2 + 8
    assert_usage_error(proc, f"no Dask scheduler answered at tcp://127.0.0.1:{port} within 2 s")
    assert_no_image(out)


@pytest.mark.parametrize(
    "text, words",
    [
        ("sparse_iters = [", ["cannot parse", "options.toml"]),
        ("no_such_option = 1\n", ["unknown option", "no_such_option"]),
        ("sparse_iters = 'many'\n", ["options.toml", "sparse_iters"]),
    ],
)
def test_bad_config_file(small, tmp_path, text, words, run_main):
    config = tmp_path / "options.toml"
    config.write_text(text)
    proc = run_main("run", small, tmp_path / "out.ome.zarr", "--fwhm", "3", "--config", config)
    assert_usage_error(proc, *words)


def test_missing_config_file(small, tmp_path, run_main):
    proc = run_main("run", small, tmp_path / "out.ome.zarr", "--fwhm", "3", "--config", tmp_path / "nope.yaml")
    assert_usage_error(proc, "config file not found")


def test_processing_failure_is_one_line(small, tmp_path):
    """A corrupt chunk of the input fails inside a worker: one line from the client, exit 1, no output."""
    broken = tmp_path / "broken.ome.zarr"
    shutil.copytree(small, broken)
    chunk = next(p for p in sorted((broken / "s0").rglob("*")) if p.is_file() and p.name != "zarr.json")
    chunk.write_bytes(os.urandom(300))
    out = tmp_path / "out.ome.zarr"
    proc = cli("run", broken, out, *FAST, *CLUSTER)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bigdecon: error:"), proc.stderr  # no worker log lines
    assert_no_image(out)


def _interruptible_run(args: list) -> subprocess.Popen:
    """The CLI in its own process group (so Ctrl-C can go to all of it), output captured, with no
    scheduler address or warning settings inherited from the test's environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("DASK_SCHEDULER_ADDRESS", "PYTHONWARNINGS")}
    cmd = [sys.executable, "-m", "bigdecon.cli", *map(str, args)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def test_ctrl_c_then_resume(tmp_path):
    """Ctrl-C reaches the whole process group, workers too: exit 130, no tracebacks; --resume finishes."""
    raw, _ = data.filaments_timelapse((12, 128, 128), seed=3)
    src = write_ome(tmp_path / "in.ome.zarr", raw, chunks=(6, 64, 64))
    out = tmp_path / "out.ome.zarr"
    args = ["run", src, out, *FAST, "--chunks", "t=6,y=64,x=64", *CLUSTER]
    proc = _interruptible_run(args)
    try:
        ledger = out / ".bigdecon-work" / "ledger"
        deadline = time.monotonic() + 120
        while not any(ledger.rglob("*.json")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # some tasks done: the progress shows work
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        stop_process_groups([proc])
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "leaked" not in stderr and "Warning" not in stderr, stderr  # workers killed mid-task: quiet
    assert stderr.strip().splitlines()[-1] == "bigdecon: interrupted (continue later with --resume)"
    assert_no_image(out)
    again = cli("run", *args[1:], "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed from an earlier run" in again.stdout, again.stdout
    assert open_image(out).shape == (12, 128, 128)


@pytest.mark.slow
def test_ctrl_c_while_the_cluster_starts(small, tmp_path):
    """Ctrl-C to the process group as the local cluster starts: held until it is up, then closed;
    the one line and exit 130, no tracebacks of workers hit as they start, no warnings."""
    proc = _interruptible_run(["run", small, tmp_path / "out.ome.zarr", *FAST, *CLUSTER])
    try:
        assert proc.stdout is not None
        while not (line := proc.stdout.readline()).startswith(("Input", "Dask")) and line:
            pass  # the cluster starts right after the Input line
        time.sleep(0.5)  # its processes are being started now
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        stop_process_groups([proc])
    assert proc.returncode == 130, (stdout, stderr)
    lines = [line for line in stderr.splitlines() if not line.startswith("[")]  # not the progress lines
    assert lines == ["bigdecon: interrupted (continue later with --resume)"], stderr


def test_debug_shows_the_traceback(tmp_path):
    proc = cli("run", tmp_path / "missing.ome.zarr", tmp_path / "out.ome.zarr", "--fwhm", "3", "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("bigdecon: error:")


def test_gpus_without_dask_cuda(small, tmp_path, run_main):
    try:
        import cupy  # noqa: F401
        import dask_cuda  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("dask-cuda and CuPy are installed")
    proc = run_main("run", small, tmp_path / "out.ome.zarr", *FAST, "--gpus")
    assert_usage_error(proc, "--gpus", "dask-cuda")


# --------------------------------------------------------------------------- in process


def test_run_argv_round_trip(tmp_path):
    from bigdecon.cli import build_parser, run_argv_from_args

    parser = build_parser()
    args = parser.parse_args(
        [
            "run",
            "in.zarr",
            "out.zarr",
            "--fwhm",
            "3",
            "--sparse-iters",
            "50",
            "--channels",
            "0,2",
            "--chunks",
            "t=8,y=512",
            "--resume",
            "--workers",
            "4",
            "--scheduler",
            "tcp://h:8786",
        ]
    )
    argv = run_argv_from_args(args)
    assert argv == ["--fwhm", "3", "--sparse-iters", "50", "--channels", "0,2", "--chunks", "t=8,y=512", "--resume"]
    # --scheduler-timeout travels with the run options (submit's job pod waits for its scheduler).
    args = parser.parse_args(["run", "in.zarr", "out.zarr", "--fwhm", "3", "--scheduler-timeout", "600"])
    assert run_argv_from_args(args) == ["--fwhm", "3", "--scheduler-timeout", "600"]
    # Fed back to the parser, it resolves to the same options.
    again = parser.parse_args(["run", "in.zarr", "out.zarr", *argv])
    assert run_argv_from_args(again) == argv

    config = tmp_path / "c.yaml"
    config.write_text("fidelity: 200\nfwhm: 2.5\n")
    args = parser.parse_args(["run", "i", "o", "--config", str(config), "--fwhm", "3"])
    assert run_argv_from_args(args) == ["--fwhm", "3", "--fidelity", "200"]


def test_per_channel_options_from_command_line_and_config_files(tmp_path):
    from bigdecon.cli import build_parser, format_config, resolve_options, run_argv_from_args

    parser = build_parser()
    args = parser.parse_args(["run", "--fwhm", "0=3", "1=4.2,4.2", "in.zarr", "out.zarr", "--psf-missing"][:-1])
    resolved = resolve_options(args, cluster=False)
    assert resolved["fwhm"] == {0: [3.0], 1: [4.2, 4.2]}
    assert run_argv_from_args(args) == ["--fwhm", "0=3", "1=4.2,4.2"]
    # The same from TOML (keys arrive as strings) and YAML (keys as ints), and the printed form round-trips.
    for name, text in (
        ("c.toml", "fwhm = {0 = 3.0, 1 = [4.2, 4.2]}\n"),
        ("c.yaml", "fwhm: {0: 3, 1: [4.2, 4.2]}\n"),
        ("printed.toml", format_config(resolved) + "\n"),
    ):
        (tmp_path / name).write_text(text)
        from_file = resolve_options(
            parser.parse_args(["run", "i", "o", "--config", str(tmp_path / name)]), cluster=False
        )
        assert from_file["fwhm"] == {0: [3.0], 1: [4.2, 4.2]}, name
    args = parser.parse_args(["run", "i", "o", "--psf", "0=a.tif", "1=b.npy", "--resolution", "0=0.25", "1=0.3"])
    resolved = resolve_options(args, cluster=False)
    assert resolved["psf"] == {0: "a.tif", 1: "b.npy"} and resolved["resolution"] == {0: [0.25], 1: [0.3]}
    assert parser.parse_args(["run", "--psf", "my psf.tif", "i", "o"]).psf == ["my psf.tif"]


def test_config_file_format_is_sniffed(tmp_path):
    from bigdecon.cli import load_config

    (tmp_path / "options.cfg").write_text("fwhm = 3\nsparse_iters = 50\n")  # TOML without .toml
    assert load_config(tmp_path / "options.cfg") == {"fwhm": 3, "sparse_iters": 50}
    (tmp_path / "options.conf").write_text("fwhm: 3\nsparse_iters: 50\n")
    assert load_config(tmp_path / "options.conf") == {"fwhm": 3, "sparse_iters": 50}


def test_psf_file_from_an_object_store():
    """--psf may name a URL (beside the data a cluster reads); here the in-process memory:// store."""
    import io

    import fsspec
    import numpy as np

    from bigdecon.cli._common import load_psf

    psf = np.outer(np.hanning(9), np.hanning(9)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, psf)
    fsspec.filesystem("memory").pipe_file("/psfs/a.npy", buf.getvalue())
    loaded = load_psf("memory://psfs/a.npy")
    assert loaded.shape == (9, 9) and np.allclose(loaded / loaded.sum(), psf / psf.sum())


@pytest.mark.slow  # nine CLI processes
def test_bad_inputs_get_at_most_three_lines(small, tmp_path):
    # Through the real CLI: everything is checked before anything is printed.
    (tmp_path / "existing.ome.zarr").mkdir()
    (tmp_path / "existing.ome.zarr" / "file").write_text("not bigdecon's")
    bad = [
        (["run", small, small / "out.ome.zarr", "--fwhm", "2"], "inside the input"),
        (["run", tmp_path / "missing.ome.zarr", tmp_path / "o.ome.zarr", "--fwhm", "2"], "not found"),
        (["run", small, tmp_path / "o.ome.zarr", "--fwhm", "-1"], "fwhm"),
        (["run", small, tmp_path / "o.ome.zarr"], "psf size"),
        (["run", small, tmp_path / "existing.ome.zarr", "--fwhm", "2"], "output exists"),
        (["run", small, tmp_path / "o.ome.zarr", "--fwhm", "2", "--deconv-type", "9"], "deconv_type"),
        # Abbreviated options are refused, not read as --background / --fidelity.
        (["run", small, tmp_path / "o.ome.zarr", "--fwhm", "2", "--back", "2", "--fid", "300"], "--back"),
        # An explicit Gaussian model with the optics: refused, not silently a widefield PSF.
        (
            ["run", small, tmp_path / "o.ome.zarr", "--na", "1.1", "--wavelength", "0.46", "--psf-model", "gaussian"],
            "gaussian",
        ),
        (["info", small, "--fwhm", "2", "--deconv-type", "9"], "deconv_type"),
    ]
    for args, word in bad:
        proc = cli(*args)
        lines = (proc.stdout + proc.stderr).splitlines()
        assert proc.returncode == 2 and len(lines) <= 3, (args, proc.stdout, proc.stderr)
        assert_usage_error(proc, word)
    assert not (tmp_path / "o.ome.zarr").exists()
    assert (tmp_path / "existing.ome.zarr" / "file").read_text() == "not bigdecon's"
