"""Scratch space of a run: intermediates freed chunk by chunk, work_dir elsewhere, the peak reported."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr
from helpers import filaments
from test_chunked import write_input

import bigdecon
from bigdecon.io import open_image
from bigdecon.passes.scratch import folder_bytes, work_root
from bigdecon.progress import summary_lines

pytestmark = pytest.mark.slow

PARAMS = dict(fwhm=3, sparse_iters=20, background=1, deconv_iters=3)
CHUNKS = {"t": 4, "y": 32, "x": 32}
# 2 preprocess tasks (4 planes each), 18 sparse blocks (2 x 3 x 3), 2 final tasks.
N_PRE, N_SPARSE, N_FINAL = 2, 18, 2
# Progress calls in order: the opening one, 2 preprocess tasks, the sparse pass's opening one,
# then its 18 tasks: these are the calls made while sparse tasks remain.
SPARSE_UNDERWAY = slice(N_PRE + 1, N_PRE + 1 + N_SPARSE)


class Interrupted(Exception):
    """Raised from a progress callback: the run stops right after a record, as a kill would."""


def filament_store(folder, shape, seed, chunks) -> str:
    """A uint16 tyx OME-Zarr of drifting filaments in ``folder``."""
    data = filaments(shape, seed=seed)[0]
    return write_input(str(folder / "in.zarr"), np.clip(data, 0, 65535).astype(np.uint16), "tyx", chunks)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return filament_store(tmp_path_factory.mktemp("src"), (8, 96, 96), 3, (4, 48, 48))


@pytest.fixture(scope="module")
def expected(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "out.zarr"
    result = bigdecon.deconvolve(source, str(out), chunks=CHUNKS, **PARAMS)
    return open_image(str(out)).data.compute(), result


def chunk_files(array: Path) -> int:
    folder = array / "c"
    return sum(len(files) for _, _, files in os.walk(folder)) if folder.is_dir() else 0


def test_chunks_are_freed_during_the_run_and_the_peak_is_reported(source, expected, tmp_path):
    out = tmp_path / "out.zarr"
    work = out / ".bigdecon-work"
    seen: list[tuple[int, int, int, int]] = []  # done, h chunks, g chunks, bytes of the output folder

    def progress(done, total):
        seen.append((done, chunk_files(work / "h.zarr"), chunk_files(work / "g.zarr"), folder_bytes(str(out))))

    result = bigdecon.deconvolve(source, str(out), chunks=CHUNKS, progress=progress, **PARAMS)
    np.testing.assert_array_equal(open_image(str(out)).data.compute(), expected[0])
    assert not work.exists()
    h_during = {d: h for d, h, _, _ in seen}
    g_during = {d: g for d, _, g, _ in seen}
    # After steps 1-3 all 18 h chunks exist; the sparse pass frees them before it ends ...
    assert h_during[N_PRE] == 18
    assert min(h_during[d] for d in range(N_PRE + 1, N_PRE + N_SPARSE)) < 18
    # ... h is gone once the sparse pass is, and the first final task frees the half of g it read.
    assert h_during[N_PRE + N_SPARSE + 1] == 0
    assert g_during[N_PRE + N_SPARSE] == 18 and g_during[N_PRE + N_SPARSE + 1] == 9
    # The reported peak is one the folder really reached, and the output's size is the finished folder's.
    assert result["output_bytes"] == folder_bytes(str(out))
    most = max(b for *_, b in seen)
    assert result["output_bytes"] <= result["peak_scratch_bytes"] < 2.0 * result["output_bytes"]
    # Before chunks were freed the same run held h, g and the output together (~2.8x); now < 2x.
    assert most < 2.0 * result["output_bytes"]


def test_intermediates_use_blosc_shuffle_zstd_and_the_result_is_bit_identical(source, expected, tmp_path, monkeypatch):
    """h and g are stored with Blosc (byte shuffle, zstd 1), the output with zstd; lossless: a run whose
    intermediates use zarr's default codec instead writes the same bytes, and holds a larger h."""
    from zarr.codecs import BloscCodec, ZstdCodec

    from bigdecon.passes import tasks

    def run(out):
        work = out / ".bigdecon-work"
        codecs: dict[str, tuple] = {}
        h_bytes: list[int] = []

        def progress(done, total):
            for name in ("h", "g"):
                if (work / f"{name}.zarr").exists():
                    codecs[name] = tuple(zarr.open_array(str(work / f"{name}.zarr"), mode="r").compressors)
            if done == N_PRE:  # steps 1-3 done, h whole, nothing freed yet
                h_bytes.append(folder_bytes(str(work / "h.zarr")))

        bigdecon.deconvolve(source, str(out), chunks=CHUNKS, progress=progress, **PARAMS)
        return open_image(str(out)).data.compute(), codecs, h_bytes[0]

    blosc = (BloscCodec(typesize=4, cname="zstd", clevel=1, shuffle="shuffle"),)
    result, codecs, h_blosc = run(tmp_path / "blosc.zarr")
    assert codecs == {"h": blosc, "g": blosc}
    assert tuple(zarr.open_array(str(tmp_path / "blosc.zarr" / "s0"), mode="r").compressors) == (ZstdCodec(level=0),)
    np.testing.assert_array_equal(result, expected[0])

    monkeypatch.setattr(tasks, "work_compressor", lambda: ZstdCodec(level=0))  # zarr's default, as before
    before, codecs, h_zstd = run(tmp_path / "zstd.zarr")
    assert codecs == {"h": (ZstdCodec(level=0),), "g": (ZstdCodec(level=0),)}
    assert result.dtype == before.dtype == np.float32
    assert np.array_equal(result.view(np.uint32), before.view(np.uint32))
    assert h_blosc < h_zstd


@pytest.mark.parametrize("stop_at", [N_PRE + 16, N_PRE + N_SPARSE + 1], ids=["mid-sparse", "mid-final"])
def test_resume_after_freeing_gives_the_identical_result(source, expected, tmp_path, stop_at):
    """A resumed run never needs a chunk freed before the interrupt: same bytes as one run."""
    out = tmp_path / "out.zarr"

    def stop(done, total):
        if done >= stop_at:
            raise Interrupted

    with pytest.raises(Interrupted):
        bigdecon.deconvolve(source, str(out), chunks=CHUNKS, progress=stop, **PARAMS)
    if stop_at > N_PRE + N_SPARSE:
        assert not (out / ".bigdecon-work" / "h.zarr").exists()
        assert chunk_files(out / ".bigdecon-work" / "g.zarr") == 9
    result = bigdecon.deconvolve(source, str(out), chunks=CHUNKS, resume=True, **PARAMS)
    assert result["resumed"] == stop_at
    np.testing.assert_array_equal(open_image(str(out)).data.compute(), expected[0])
    assert not (out / ".bigdecon-work").exists()


def test_work_dir_on_a_separate_local_folder(source, expected, tmp_path):
    out, scratch = tmp_path / "out.zarr", tmp_path / "nvme"
    work = Path(work_root(str(out), str(scratch)))
    inside: list[bool] = []

    def stop(done, total):
        inside.append((out / ".bigdecon-work").exists())
        assert (work / "stats.json").is_file()
        if done == N_PRE + 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        bigdecon.deconvolve(source, str(out), chunks=CHUNKS, progress=stop, work_dir=str(scratch), **PARAMS)
    assert inside and not any(inside)
    # A resume naming another work folder is refused in one line; without one it finds the stored one.
    with pytest.raises(bigdecon.InputError, match="cannot resume with work_dir") as err:
        bigdecon.deconvolve(source, str(out), chunks=CHUNKS, resume=True, work_dir=str(tmp_path / "other"), **PARAMS)
    assert "\n" not in str(err.value)
    result = bigdecon.deconvolve(source, str(out), chunks=CHUNKS, resume=True, **PARAMS)
    assert result["resumed"] == N_PRE + 5
    np.testing.assert_array_equal(open_image(str(out)).data.compute(), expected[0])
    # The run's own folder is gone; the user's folder stays.
    assert not work.exists() and scratch.is_dir()
    # A fresh run over an old output with --overwrite never trusts the old run's records.
    again = bigdecon.deconvolve(source, str(out), chunks=CHUNKS, overwrite=True, work_dir=str(scratch), **PARAMS)
    assert again["resumed"] == 0


def test_work_dir_on_an_object_store(source, expected, tmp_path):
    out = tmp_path / "out.zarr"
    url = f"memory://scratch-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    root = work_root(str(out), url)
    h_objects: list[int] = []

    def progress(done, total):
        assert not (out / ".bigdecon-work").exists()
        h = f"{root}/h.zarr/c"
        h_objects.append(len(fs.find(h)) if fs.exists(h) else 0)

    result = bigdecon.deconvolve(source, str(out), chunks=CHUNKS, progress=progress, work_dir=url, **PARAMS)
    np.testing.assert_array_equal(open_image(str(out)).data.compute(), expected[0])
    assert h_objects[N_PRE] == 18 and min(h_objects[SPARSE_UNDERWAY]) < 18
    assert not fs.exists(root)
    assert result["peak_scratch_bytes"] >= result["output_bytes"] == folder_bytes(str(out))


def test_chunks_are_freed_on_a_local_cluster(source, expected, tmp_path):
    from distributed import Client, LocalCluster

    out = tmp_path / "out.zarr"
    work = out / ".bigdecon-work"
    h_files: list[int] = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        result = bigdecon.deconvolve(
            source,
            str(out),
            chunks=CHUNKS,
            client=client,
            progress=lambda d, t: h_files.append(chunk_files(work / "h.zarr")),
            **PARAMS,
        )
    np.testing.assert_array_equal(open_image(str(out)).data.compute(), expected[0])
    assert max(h_files) == 18 and min(h_files[SPARSE_UNDERWAY]) < 18
    assert not work.exists()
    assert result["output_bytes"] <= result["peak_scratch_bytes"]


def test_summary_reports_the_peak_scratch(expected):
    result = expected[1]
    lines = summary_lines(result)
    ratio = result["peak_scratch_bytes"] / result["output_bytes"]
    assert any(line.startswith("Peak scratch: ") and f"{ratio:.2f}x the output's" in line for line in lines)
    line = summary_lines({**result, "peak_scratch_bytes": 3 * 2**30, "output_bytes": 2 * 2**30})[2]
    assert line == "Peak scratch: 3.0 GiB (1.50x the output's 2.0 GiB)"


def test_cli_work_dir_and_summary(source, tmp_path):
    """``bigdecon run --work-dir``: intermediates elsewhere, the summary's scratch line; submit forwards it."""
    import subprocess
    import sys

    from bigdecon.cli import build_parser, run_argv_from_args

    out, scratch = tmp_path / "out.zarr", tmp_path / "nvme"
    fast = ["--fwhm", "3", "--sparse-iters", "5", "--deconv-iters", "2", "--workers", "1"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bigdecon", "run", source, str(out), *fast, "--work-dir", str(scratch)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("Peak scratch: "))
    assert "x the output's" in line
    assert not (out / ".bigdecon-work").exists() and scratch.is_dir() and not os.listdir(scratch)
    args = build_parser().parse_args(["submit", "in.zarr", "out.zarr", "--fwhm", "3", "--work-dir", "/nvme/w"])
    argv = run_argv_from_args(args)
    assert argv[argv.index("--work-dir") + 1] == "/nvme/w"


def _sweepers() -> list:
    import threading

    return [t for t in threading.enumerate() if t.name == "bigdecon-scratch"]


def test_chunks_are_freed_in_the_background_on_a_cluster_with_an_object_store(source, expected, tmp_path, monkeypatch):
    """On a cluster the driver thread only queues the freed chunks; a background thread deletes them (one
    batched ``rm`` per batch on an object store) and samples the peak. An in-process cluster shares the
    ``memory://`` work folder with the driver. The progress call of the last step-4 block blocks the driver:
    the step-4 pass's chunks still go, so the deletions run on another thread."""
    from distributed import Client, LocalCluster

    from bigdecon.passes import run

    monkeypatch.setattr(run, "FREE_EVERY_SECONDS", 0.0)  # records that free chunks are written at once
    out = tmp_path / "out.zarr"
    url = f"memory://sweep-{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    root = work_root(str(out), url)
    h_objects: list[int] = []
    rm_calls: list[int] = []
    rm = type(fs).rm

    def counting_rm(self, path, *args, **kwargs):
        if isinstance(path, list) and all(".zarr/c/" in p for p in path):  # work chunks, not ledger files
            rm_calls.append(len(path))
        return rm(self, path, *args, **kwargs)

    monkeypatch.setattr(type(fs), "rm", counting_rm)

    def h_count() -> int:
        h = f"{root}/h.zarr/c"
        return len(fs.find(h)) if fs.exists(h) else 0

    def progress(done, total):
        h_objects.append(h_count())
        if done == N_PRE + N_SPARSE:  # every h chunk is free: wait here, in the driver thread
            deadline = time.monotonic() + 30
            while h_count():
                assert time.monotonic() < deadline, f"{h_count()} h chunks left"
                time.sleep(0.01)
            assert len(_sweepers()) == 1

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        result = bigdecon.deconvolve(
            source, str(out), chunks=CHUNKS, client=client, progress=progress, work_dir=url, **PARAMS
        )
    np.testing.assert_array_equal(open_image(str(out)).data.compute(), expected[0])
    assert h_objects[N_PRE] == 18
    assert max(rm_calls) > 1  # several chunks in one call
    assert not fs.exists(root)
    assert result["output_bytes"] <= result["peak_scratch_bytes"] < 2.0 * result["output_bytes"]
    assert not _sweepers()  # joined at the end of each pass


def test_an_error_in_the_background_sweeper_surfaces(source, tmp_path, monkeypatch):
    """An error deleting chunks on the sweeper thread fails the run with one line at the pass's end (a store's
    OSError only warns: it costs space, not the run); no thread is left behind either way. Worker processes:
    in-process workers' threads enter ``warnings.catch_warnings`` (not thread-safe) and could hide the warning."""
    from distributed import Client, LocalCluster

    from bigdecon.passes import scratch

    def broken(paths):
        if paths:
            raise ValueError("a bug in the sweeper")

    def unreachable(paths):
        if paths:
            raise ConnectionError("store went away")

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        monkeypatch.setattr(scratch, "_delete", broken)
        with pytest.raises(
            bigdecon.ProcessingError, match="^freeing work chunks failed: ValueError: a bug in the sweeper$"
        ):
            bigdecon.deconvolve(source, str(tmp_path / "a.zarr"), chunks=CHUNKS, client=client, **PARAMS)
        assert not _sweepers()
        monkeypatch.setattr(scratch, "_delete", unreachable)
        with pytest.warns(UserWarning, match=r"could not free \d+ work chunks \(store went away\)"):
            result = bigdecon.deconvolve(source, str(tmp_path / "b.zarr"), chunks=CHUNKS, client=client, **PARAMS)
    assert result["output_bytes"] > 0
    assert not _sweepers()


# Two step-4 blocks (y halves) of 16 planes: h is cut into four 32-px bands, so each block's
# outer band lies out of the other's halo (16 px) and is freed as soon as the block has read it.
WIDE_CHUNKS = {"t": 16, "y": 64, "x": 128}


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    return filament_store(tmp_path_factory.mktemp("wide"), (16, 128, 128), 5, (8, 64, 64))


def test_a_block_frees_the_h_it_alone_reads_and_a_rerun_computes_it_again(wide, tmp_path):
    """A step-4 block deletes the chunks of h no other block reads once it has read them; when
    its record is then lost (a kill before the batch reached disk), the resumed block finds
    them gone and computes its h again from the input: same bytes as an uninterrupted run."""
    ref, out = tmp_path / "ref.zarr", tmp_path / "out.zarr"
    own = Path(".bigdecon-work") / "h.zarr" / "c" / "0" / "0" / "0"  # y 0-32: only the first block reads it
    files: dict[int, tuple[int, bool]] = {}

    def watch(done, total):
        files[done] = (chunk_files(ref / ".bigdecon-work" / "h.zarr"), (ref / own).exists())

    bigdecon.deconvolve(wide, str(ref), chunks=WIDE_CHUNKS, progress=watch, **PARAMS)
    assert zarr.open_array(str(ref / "s0"), mode="r").shape == (16, 128, 128)
    assert files[1] == (4, True)  # steps 1-3 done: four bands of h
    assert files[2] == (3, False)  # the first block done: its own band gone, the shared ones kept
    expected = open_image(str(ref)).data.compute()

    def stop(done, total):
        if done >= 2:
            raise Interrupted

    with pytest.raises(Interrupted):
        bigdecon.deconvolve(wide, str(out), chunks=WIDE_CHUNKS, progress=stop, **PARAMS)
    assert not (out / own).exists()
    shutil.rmtree(out / ".bigdecon-work" / "ledger" / "sparse")  # the block's record never reached disk
    result = bigdecon.deconvolve(wide, str(out), chunks=WIDE_CHUNKS, resume=True, **PARAMS)
    assert result["resumed"] == 1  # steps 1-3 only: both blocks ran again
    got = open_image(str(out)).data.compute()
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_the_reaper_frees_each_chunk_once_and_keeps_nothing_per_task(tmp_path):
    """40,960 step-4 blocks with a halo over a chunked work array: every chunk is freed exactly
    when its last reader is recorded, and the reaper's memory is its chunk grid, not a list per task."""
    import tracemalloc

    import zarr

    from bigdecon.passes.scratch import ChunkReaper
    from bigdecon.planner import Blocks

    shape, chunks, block, halo = (10, 512, 2048), (1, 64, 64), 16, 24
    path = str(tmp_path / "h.zarr")
    zarr.create_array(path, shape=shape, chunks=chunks, dtype="float32", fill_value=0.0)
    spans = [tuple((a, min(a + block, n)) for a in range(0, n, block)) for n in shape[1:]]
    tasks = Blocks((0, 1, 2), (tuple((t, t + 1) for t in range(shape[0])), *spans))

    def read(region):
        return {0: region[0], **{i: (max(0, a - halo), min(shape[i], b + halo)) for i, (a, b) in region.items() if i}}

    assert len(tasks) == 10 * 32 * 128
    tracemalloc.start()
    try:
        reaper = ChunkReaper(path, tasks, read)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    grid = 10 * 8 * 32
    # Two int32 counts a chunk (~20 kB here); a list of chunk ids per task was ~6 kB a task (~240 MB).
    assert held < 8 * grid + 100_000, held
    freed: list[str] = []
    last = None
    for i, task in enumerate(tasks):  # row by row: a chunk row is free once the blocks a halo past it are
        key = str(i)
        reaper.finished(key, task)
        got = reaper.freed([key])
        freed += got
        if got:
            last = i
    assert len(freed) == len(set(freed)) == grid
    assert last == len(tasks) - 1
    # The first chunk (0, 0, 0) is read by the blocks of row 0 within 24 px: freed after block (0, 1, 1).
    assert freed[0].endswith("c/0/0/0") and freed.index(freed[0]) == 0
