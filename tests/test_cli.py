"""The ``bigdecon`` command line, run for real in a subprocess on real stores.

Bad input must give exit code 2, one line on stderr naming the problem, no
traceback, and no output that opens as an image.
"""

from __future__ import annotations

import contextlib
import io
import os
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

from bigdecon import data
from bigdecon.io import OmeZarrWriter, open_image, write_block
from conftest import stop_process_groups

# One small worker process: cluster start-up dominates these runs.
CLUSTER = ["--workers", "1", "--threads-per-worker", "2"]
FAST = ["--fwhm", "3", "--sparse-iters", "10", "--deconv-iters", "3"]


def cli(*args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "bigdecon.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
    )  # fmt: skip


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


def assert_usage_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    assert err.startswith("bigdecon: error:") and "\n" not in err, err
    for word in words:
        assert word.lower() in err.lower(), (word, err)


def assert_no_image(path: Path) -> None:
    if not os.path.lexists(path):
        return
    with pytest.raises(Exception):
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
    for option in ("--fwhm", "--resolution", "--psf", "--sparse-iters", "--fidelity", "--sparsity",
                   "--tcontinuity", "--background", "--deconv-iters", "--deconv-type", "--up-sample",
                   "--channels", "--timepoints", "--chunks", "--depth", "--workers", "--threads-per-worker",
                   "--memory-limit", "--gpus", "--scheduler", "--resume", "--overwrite", "--output-dtype",
                   "--ngff-version", "--dashboard-address", "--debug", "--config", "--scheduler-timeout"):  # fmt: skip
        assert option in run.stdout, option


def test_run_end_to_end(small, tmp_path):
    out = tmp_path / "out.ome.zarr"
    proc = cli("run", small, out, *FAST, *CLUSTER)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    # The resolved configuration comes first, as reusable TOML.
    assert "sparse_iters = 10" in proc.stdout and "fwhm = [3.0]" in proc.stdout
    assert "chunks" in proc.stderr  # progress lines (not a TTY: plain lines)
    assert "voxel/s" in proc.stdout and f"napari --plugin napari-ome-zarr {out}" in proc.stdout
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
    proc = cli("run", small, out, "--config", config, "--sparse-iters", "5", "--threads-per-worker", "2")
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
    for text in ("axes:        tyx", "6x64x64", "float32", "3x32x32", "y 0.065 micrometer", "t 2 second",
                 "NGFF 0.5", "output shape", "overlap per axis", "tasks", "memory per task"):  # fmt: skip
        assert text in out, (text, out)
    assert "t 6" in out and "y 16" in out  # the halo, named by axis


def test_info_on_tiff_without_fwhm(tmp_path):
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.ones((5, 32, 32), np.uint16), metadata={"axes": "ZYX"})
    proc = cli("info", path)
    assert proc.returncode == 0, proc.stderr
    assert "TIFF" in proc.stdout and "uint16" in proc.stdout and "no --fwhm" in proc.stdout


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
    group = zarr.open_group(str(root / "noyx.ome.zarr"), mode="w", zarr_format=3, attributes={"ome": {
        "version": "0.5",
        "multiscales": [{
            "axes": [{"name": "t", "type": "time"}, {"name": "z", "type": "space"}],
            "datasets": [{"path": "s0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}],
        }],
    }})  # fmt: skip
    group.create_array("s0", shape=(4, 8), dtype="f4")
    np.save(root / "big_psf.npy", np.ones((201, 201), np.float32))
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
    "PSF larger than the image (file)": ("SMALL", ["--psf", "BAD/big_psf.npy"], ["PSF", "larger"]),
    "PSF file missing": ("SMALL", ["--psf", "BAD/nope.npy"], ["PSF", "nope.npy"]),
    "bad chunks": ("SMALL", ["--fwhm", "3", "--chunks", "q=4"], ["chunks"]),
    "timepoints out of range": ("SMALL", ["--fwhm", "3", "--timepoints", "4:99"], ["timepoints"]),
    "channels without c axis": ("SMALL", ["--fwhm", "3", "--channels", "1"], ["channels"]),
    "unknown option": ("SMALL", ["--fwhm", "3", "--bogus"], ["--bogus"]),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_in_one_line(case, bad, small, tmp_path):
    source, extra, words = BAD_INPUTS[case]
    src = small if source == "SMALL" else bad.get(source, tmp_path / source)
    extra = [a.replace("BAD/", str(next(iter(bad.values())).parent) + "/") for a in extra if a != "--fwhm-missing"]
    if source != "SMALL" and "--fwhm" not in extra:
        extra = ["--fwhm", "3", *extra]
    out = tmp_path / "out.ome.zarr"
    proc = cli("run", src, out, *extra, *CLUSTER, timeout=60)
    assert_usage_error(proc, *words)
    assert_no_image(out)


@pytest.mark.parametrize("name", ["nan.ome.zarr", "inf.ome.zarr"])
def test_non_finite_pixels(name, bad, tmp_path):
    out = tmp_path / "out.ome.zarr"
    proc = cli("run", bad[name], out, "--fwhm", "3", *CLUSTER, timeout=120)
    assert_usage_error(proc, "NaN")
    assert_no_image(out)


def test_output_inside_input(small):
    out = small / "result.ome.zarr"
    proc = cli("run", small, out, *FAST, *CLUSTER)
    assert_usage_error(proc, "inside")
    assert not out.exists()
    assert open_image(small).shape == (6, 64, 64)


def test_unwritable_output(small, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    out = blocker / "out.ome.zarr"  # a file where a folder should be: unwritable even for root
    proc = cli("run", small, out, *FAST, *CLUSTER)
    assert_usage_error(proc, "cannot write output")
    assert not os.path.exists(out)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_output_folder(small, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        proc = cli("run", small, folder / "out.ome.zarr", *FAST, *CLUSTER)
        assert_usage_error(proc, "cannot write output")
    finally:
        folder.chmod(0o755)


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
    proc = cli("run", small, out, *FAST, "--scheduler", f"tcp://127.0.0.1:{port}", "--scheduler-timeout", "2",
               timeout=60)  # fmt: skip
    assert time.monotonic() - start < 2 + 8
    assert_usage_error(proc, f"no Dask scheduler answered at tcp://127.0.0.1:{port} within 2 s")
    assert_no_image(out)


@pytest.mark.parametrize("text, words", [
    ("sparse_iters = [", ["cannot parse", "options.toml"]),
    ("no_such_option = 1\n", ["unknown option", "no_such_option"]),
    ("sparse_iters = 'many'\n", ["options.toml", "sparse_iters"]),
])  # fmt: skip
def test_bad_config_file(small, tmp_path, text, words):
    config = tmp_path / "options.toml"
    config.write_text(text)
    proc = cli("run", small, tmp_path / "out.ome.zarr", "--fwhm", "3", "--config", config)
    assert_usage_error(proc, *words)


def test_missing_config_file(small, tmp_path):
    proc = cli("run", small, tmp_path / "out.ome.zarr", "--fwhm", "3", "--config", tmp_path / "nope.yaml")
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


def test_ctrl_c_then_resume(tmp_path):
    """Ctrl-C reaches the whole process group, workers too: exit 130, no tracebacks; --resume finishes."""
    raw, _ = data.filaments_timelapse((12, 128, 128), seed=3)
    src = write_ome(tmp_path / "in.ome.zarr", raw, chunks=(6, 64, 64))
    out = tmp_path / "out.ome.zarr"
    args = ["run", src, out, *FAST, "--chunks", "t=6,y=64,x=64", *CLUSTER]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    proc = subprocess.Popen([sys.executable, "-m", "bigdecon.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)  # fmt: skip
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
    assert stderr.strip().splitlines()[-1] == "bigdecon: interrupted (continue later with --resume)"
    assert_no_image(out)
    again = cli("run", *args[1:], "--resume")
    assert again.returncode == 0, again.stdout + again.stderr
    assert open_image(out).shape == (12, 128, 128)


def test_debug_shows_the_traceback(tmp_path):
    proc = cli("run", tmp_path / "missing.ome.zarr", tmp_path / "out.ome.zarr", "--fwhm", "3", "--debug")
    assert proc.returncode == 2
    assert "Traceback" in proc.stderr and proc.stderr.strip().splitlines()[-1].startswith("bigdecon: error:")


def test_gpus_without_dask_cuda(small, tmp_path):
    pytest.importorskip("distributed")
    try:
        import cupy  # noqa: F401
        import dask_cuda  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("dask-cuda and CuPy are installed")
    proc = cli("run", small, tmp_path / "out.ome.zarr", *FAST, "--gpus")
    assert_usage_error(proc, "--gpus", "dask-cuda")


# --------------------------------------------------------------------------- in process


def test_run_argv_round_trip(tmp_path):
    from bigdecon.cli import build_parser, run_argv_from_args

    parser = build_parser()
    args = parser.parse_args(["run", "in.zarr", "out.zarr", "--fwhm", "3", "--sparse-iters", "50",
                              "--channels", "0,2", "--chunks", "t=8,y=512", "--resume", "--workers", "4",
                              "--scheduler", "tcp://h:8786"])  # fmt: skip
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


def test_progress_plain_lines_are_throttled():
    from bigdecon.progress import ProgressReporter

    now = [0.0]
    stream = io.StringIO()
    report = ProgressReporter(10**6, stream=stream, tty=False, interval=2.0, clock=lambda: now[0])
    for done in range(0, 21):
        now[0] += 0.5
        report(done, 20)
    report(20, 20)  # repeated final call prints nothing new
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert 4 <= len(lines) <= 7  # 10 s of updates, one line per ~2 s, plus the last
    assert lines[-1].startswith("[####################] 20/20 chunks (100%)") and "done" in lines[-1]
    assert "voxel/s" in lines[-2] and "ETA" in lines[-2]


def test_progress_tty_redraws_one_line():
    from bigdecon.progress import ProgressReporter

    now = [0.0]
    stream = io.StringIO()
    report = ProgressReporter(1000, stream=stream, tty=True, clock=lambda: now[0])
    for done in range(4):
        now[0] += 1
        report(done, 3)
    text = stream.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n") and text.count("\n") == 1


def test_summary_lines():
    from bigdecon.progress import summary_lines

    lines = summary_lines({"output": "/data/out.ome.zarr", "shape": [6, 64, 64], "seconds": 2.0,
                           "voxels": 24576, "chunks": 3}, peak_memory=3 * 2**30)  # fmt: skip
    text = "\n".join(lines)
    assert "12.3 kvoxel/s" in text and "3.0 GiB" in text
    assert "napari --plugin napari-ome-zarr /data/out.ome.zarr" in text
