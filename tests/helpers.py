"""Helpers the tests import by name: the CLI as a subprocess, a small time-lapse, process handling."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest

from bigdecon import data

# The published implementation's outputs on small inputs: a copy of ../shared/reference is
# committed under tests/data/reference so that a clean clone (and CI) tests equivalence too.
# BIGDECON_REFERENCE points the tests at another folder of the same files.
REFERENCE = Path(os.environ.get("BIGDECON_REFERENCE", Path(__file__).resolve().parent / "data" / "reference"))
SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def filaments(shape=(6, 96, 96), fwhm=3.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Drifting curved filaments, blurred by a Gaussian PSF, with Poisson+Gaussian noise: ``(raw, truth)``.

    :func:`bigdecon.data.filaments_timelapse` at 400 photons over a background of 20, read noise 3.
    """
    return data.filaments_timelapse(shape, fwhm, photons=400.0, background=20.0, noise=3.0, seed=seed)


def face_ratios(a) -> dict[str, float]:
    """Mean of each outer plane over the mean of the plane next to it."""
    a = np.asarray(a, np.float64)
    out = {}
    for axis, name in enumerate("zyx"):
        for side, i, j in (("0", 0, 1), ("-1", -1, -2)):
            out[name + side] = float(np.take(a, i, axis).mean() / np.take(a, j, axis).mean())
    return out


def big_store(folder: Path, z_step: float) -> str:
    """An empty 2000x2048x2048 zyx uint16 OME-Zarr at z_step/0.1/0.1 µm (no chunk written): the volume of
    issue 21's memory targets, for `bigdecon info` (tests/test_psf_light.py, benchmarks/bench_step5_passes.py)."""
    import zarr

    from bigdecon.io import write_image

    src = write_image(
        str(folder / f"big{z_step}.ome.zarr"),
        np.zeros((8, 8, 8), np.uint16),
        "zyx",
        scale={"z": z_step, "y": 0.1, "x": 0.1},
        units={a: "micrometer" for a in "zyx"},
    )
    zarr.create_array(src + "/s0", shape=(2000, 2048, 2048), dtype="uint16", chunks=(64, 256, 256), overwrite=True)
    return src


def face_slab_errors(got, ref, raw, axes: str = "zyx", depth: int = 2) -> dict[str, tuple[float, float, float]]:
    """Each face slab (the first / last ``depth`` planes of each axis in ``axes``) of a crop deconvolved
    alone (``got``) against the larger volume's deconvolution at the same voxels (``ref``):
    ``(mean |got - ref|, mean(got) - mean(ref), mean |ref - raw|)``, each over ``mean(ref)``. The last
    is what deconvolution does at those voxels, the scale an error is judged against."""
    out = {}
    for axis, name in enumerate("zyx"):
        if name not in axes:
            continue
        for side in ("0", "-1"):
            index = [slice(None)] * 3
            index[axis] = slice(0, depth) if side == "0" else slice(-depth, None)
            g, r, w = (np.asarray(a, np.float64)[tuple(index)] for a in (got, ref, raw))
            m = r.mean()
            out[name + side] = (
                float(np.abs(g - r).mean() / m),
                float(g.mean() / m - 1),
                float(np.abs(r - w).mean() / m),
            )
    return out


def wait_for_port(port: int, proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """Wait until something listens on 127.0.0.1:port; fail with the process's log if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"process exited early:\n{log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"port {port} never opened:\n{log.read_text()}")


def stop_process_groups(procs: list[subprocess.Popen]) -> None:
    """End processes started with ``start_new_session=True``, children included."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, 15)
            except ProcessLookupError:
                pass
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)
            p.wait(timeout=10)


@contextlib.contextmanager
def stopped_at_exit(procs: list[subprocess.Popen], logs: list[Path]):
    """Around a test that starts processes: their logs are printed if it fails, and
    their process groups are stopped however it ends."""
    try:
        yield
    except BaseException:
        for log in logs:
            if log.exists():
                print(log.name, log.read_text(errors="replace"), sep="\n")
        raise
    finally:
        stop_process_groups(procs)


def popen_logged(argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(argv)`` with its stdout and stderr in ``log``, in its own session (so its
    process group can be stopped); this process's copy of the log file is closed at once."""
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kwargs)


def cli(
    *args: Any, timeout: float = 180, cwd: Path | None = None, memory_limit: int | None = None
) -> subprocess.CompletedProcess:
    """``bigdecon ARGS`` as a real subprocess (the CLI a user runs); ``memory_limit``: its address
    space in bytes, so that a regression that allocates without bound fails fast."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run(
        [sys.executable, "-m", "bigdecon.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        preexec_fn=limited if memory_limit is not None else None,
    )


class Ran(NamedTuple):
    """What a command printed and returned, in the shape of subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds; it must still be running then."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, "the run finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
