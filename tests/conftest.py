"""Shared fixtures: reference data of the published implementation, small synthetic inputs."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

# The published implementation's outputs on small inputs: a copy of ../shared/reference is
# committed under tests/data/reference so that a clean clone (and CI) tests equivalence too.
# BIGDECON_REFERENCE points the tests at another folder of the same files.
REFERENCE = Path(os.environ.get("BIGDECON_REFERENCE", Path(__file__).resolve().parent / "data" / "reference"))
SHARED_REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
# Small real microscope images (../shared/realdata, see its README): CI has shared/ beside the clone.
# BIGDECON_REALDATA points the tests at another folder of the same files.
REALDATA = Path(os.environ.get("BIGDECON_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))


@pytest.fixture(scope="session")
def reference():
    """Load ``name.npy`` from the reference folder."""
    if not REFERENCE.is_dir():
        pytest.fail(f"reference outputs not found at {REFERENCE} (set BIGDECON_REFERENCE)")

    def load(name: str) -> np.ndarray:
        return np.load(REFERENCE / f"{name}.npy")

    return load


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The folder of real images (``realdata / "cells3d_nuclei" / "nuclei.tif"``)."""
    if not REALDATA.is_dir():
        pytest.fail(f"real images not found at {REALDATA} (set BIGDECON_REALDATA)")
    return REALDATA


def filaments(shape=(6, 96, 96), fwhm=3.0, seed=0, noise=True):
    """Drifting curved filaments, blurred by a Gaussian PSF, with Poisson+Gaussian noise."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    t, h, w = shape
    truth = np.zeros(shape, np.float32)
    for _ in range(max(3, (h * w) // 1500)):
        y0, amp, period, phase = rng.uniform(0, h), rng.uniform(3, 12), rng.uniform(30, 120), rng.uniform(0, 6.3)
        bright = rng.uniform(0.5, 1.0)
        for k in range(t):
            xs = np.arange(w)
            ys = y0 + amp * np.sin(2 * np.pi * xs / period + phase + 0.05 * k) + 0.3 * k
            ok = (ys >= 0) & (ys < h - 1)
            truth[k, ys[ok].astype(int), xs[ok]] += bright
    sigma = fwhm / 2.3548
    blurred = gaussian_filter(truth, (0, sigma, sigma), mode="reflect").astype(np.float32)
    if not noise:
        return blurred * 1000 + 0, truth
    photons = rng.poisson(np.clip(blurred * 400 + 20, 0, None)).astype(np.float32)
    raw = photons + rng.normal(0, 3, shape).astype(np.float32)
    return np.clip(raw, 0, None).astype(np.float32), truth


@pytest.fixture(scope="session")
def stack():
    return filaments()[0]


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


def cli(*args: str, timeout: float = 180, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``bigdecon ARGS`` as a real subprocess (the CLI a user runs)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return subprocess.run(
        [sys.executable, "-m", "bigdecon.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


class Ran(NamedTuple):
    """What a command printed and returned, in the shape of subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run_main(capsys):
    """``bigdecon.cli.main(args)`` in this process: for commands that fail before any cluster starts.

    The loggers the CLI quiets are restored afterwards (pytest restores the warning filters).
    """
    from bigdecon.cli import main

    names = ("distributed", "dask", "bokeh", "tornado")
    levels = {name: logging.getLogger(name).level for name in names}

    def run(*args: str) -> Ran:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: usage errors, --help
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    yield run
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
