"""Resume after SIGKILL, and a worker that dies mid-run on a real distributed cluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import filaments, kill_when
from test_chunked import write_input

import bigdecon
from bigdecon.io import open_image

pytestmark = pytest.mark.slow

PARAMS = dict(fwhm=3, sparse_iters=100, background=1)
CHUNKS = {"t": 4, "y": 32, "x": 32}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    data = filaments((8, 96, 96), seed=7)[0]
    path = tmp_path_factory.mktemp("src") / "in.zarr"
    write_input(str(path), data, "tyx", (4, 48, 48))
    return str(path)


@pytest.fixture(scope="module")
def expected(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out.zarr"
    bigdecon.deconvolve(source, str(out), chunks=CHUNKS, **PARAMS)
    return open_image(str(out)).data.compute()


def ledger_count(output: Path, stage: str) -> int:
    """Blocks of ``stage`` recorded as done (records are written in batches)."""
    from bigdecon.errors import ProcessingError
    from bigdecon.passes.ledger import Ledger

    for _ in range(20):
        try:
            return len(Ledger(str(output / ".bigdecon-work")).done(stage))
        except (ProcessingError, ValueError):  # a batch merged (deleted) or written while we read
            time.sleep(0.01)
    raise AssertionError("could not read the ledger")


SCRIPT = """
import sys, bigdecon
bigdecon.deconvolve(sys.argv[1], sys.argv[2], chunks={chunks!r}, resume=sys.argv[3] == "resume", **{params!r})
"""


def test_kill_and_resume_gives_the_identical_result(source, expected, tmp_path):
    out = tmp_path / "out.zarr"
    script = SCRIPT.format(chunks=CHUNKS, params=PARAMS)
    env = dict(os.environ, BIGDECON_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", script, source, str(out), "fresh"], env=env)
    kill_when(proc, lambda: ledger_count(out, "sparse") >= 4)  # SIGKILL: no clean-up of any kind
    done_before = ledger_count(out, "sparse")
    total = 2 * 3 * 3
    assert 4 <= done_before < total
    # A killed run never looks complete.
    with pytest.raises(bigdecon.InputError, match="incomplete"):
        open_image(str(out))
    # Without --resume or --overwrite it is refused.
    with pytest.raises(bigdecon.InputError, match="exists"):
        bigdecon.deconvolve(source, str(out), chunks=CHUNKS, **PARAMS)
    seen = []
    bigdecon.deconvolve(
        source, str(out), chunks=CHUNKS, resume=True, progress=lambda d, t: seen.append((d, t)), **PARAMS
    )
    # Only unfinished blocks ran: the sparse pass opened with the recorded ones done
    # (after the 2 preprocessed plane groups), then one update per remaining block.
    n_tasks = seen[-1][1]
    assert (2 + done_before, n_tasks) in seen
    assert len(seen) == 3 + (total - done_before) + 2
    np.testing.assert_array_equal(open_image(str(out)).data.compute(), expected)
    assert not (out / ".bigdecon-work").exists()


SMALL_CHUNKS = {"t": 1, "y": 16, "x": 16}
SMALL_PARAMS = dict(fwhm=3, sparse_iters=5, background=1)


def test_kill_during_a_pass_of_many_small_tasks_resumes_byte_identical(source, tmp_path):
    """SIGKILL while 288 step-4 blocks are being recorded in batches; the resumed output is identical."""
    ref = tmp_path / "ref.zarr"
    bigdecon.deconvolve(source, str(ref), chunks=SMALL_CHUNKS, **SMALL_PARAMS)
    expected_small = open_image(str(ref)).data.compute()
    out = tmp_path / "out.zarr"
    script = SCRIPT.format(chunks=SMALL_CHUNKS, params=SMALL_PARAMS)
    env = dict(os.environ, BIGDECON_THREADS="1")
    total = 8 * 6 * 6
    proc = subprocess.Popen([sys.executable, "-c", script, source, str(out), "fresh"], env=env)
    kill_when(proc, lambda: ledger_count(out, "sparse") >= 40)
    done_before = ledger_count(out, "sparse")
    assert 40 <= done_before < total
    info = bigdecon.deconvolve(source, str(out), chunks=SMALL_CHUNKS, resume=True, **SMALL_PARAMS)
    assert info["resumed"] >= 8 + done_before
    got = open_image(str(out)).data.compute()
    assert got.tobytes() == expected_small.tobytes()
    assert not (out / ".bigdecon-work").exists()


def test_a_dead_worker_does_not_fail_or_corrupt_the_run(source, expected, tmp_path):
    from distributed import Client

    sched_file = tmp_path / "scheduler.json"
    env = dict(os.environ, BIGDECON_THREADS="1")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                ":0",
                "--scheduler-file",
                str(sched_file),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists():
            assert time.monotonic() < deadline, "scheduler did not start"
            time.sleep(0.1)
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        "--scheduler-file",
                        str(sched_file),
                        "--nthreads",
                        "1",
                        "--nworkers",
                        "1",
                        "--no-nanny",
                        "--name",
                        f"w{i}",
                        "--host",
                        "127.0.0.1",
                        "--dashboard-address",
                        ":0",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        with Client(scheduler_file=str(sched_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            victim = procs[1]
            killed = []

            def progress(done: int, total: int) -> None:
                if done >= 6 and not killed:
                    victim.send_signal(signal.SIGKILL)
                    killed.append(done)

            out = tmp_path / "out.zarr"
            bigdecon.deconvolve(source, str(out), chunks=CHUNKS, client=client, progress=progress, **PARAMS)
            assert killed and victim.wait(timeout=10) is not None
            assert len(client.scheduler_info()["workers"]) == 1
        np.testing.assert_array_equal(open_image(str(out)).data.compute(), expected)
    finally:
        for p in procs[::-1]:
            if p.poll() is None:
                p.kill()
            p.wait()
