"""Nothing lost, nothing exposed: overwrite, resume, the owner lease, credentials (docs/safety.md).

Each test sets up a real state on a real store (a local folder, ``memory://``,
an HTTP server on 127.0.0.1) with bigdecon itself (an interrupted run is a real
run stopped part-way), then runs the CLI on it. Refusals happen before any
cluster starts, so they run in this process (``run_main``); the runs that must
finish run as real processes (``cli``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import cli, stop_process_groups, wait_for_port

import bigdecon
from bigdecon import data
from bigdecon.io import open_image, write_image

LEASE_NAME = ".bigdecon-lease.json"  # bigdecon.io.safety.LEASE_NAME, spelled out: a stray lease must be found

FAST = ["--fwhm", "3", "--sparse-iters", "10", "--deconv-iters", "3", "--chunks", "t=2,y=64,x=64"]
CLUSTER = ["--workers", "1", "--threads-per-worker", "1"]
# The same run through the API (3 blocks per pass: preprocess, step 4, step 5).
API = dict(fwhm=3, sparse_iters=10, deconv_iters=3, chunks={"t": 2, "y": 64, "x": 64})


def assert_refused(proc, *words: str) -> None:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert err.startswith("bigdecon: error:") and "\n" not in err, err
    for word in words:
        assert word.lower() in err.lower(), (word, err)


@pytest.fixture(scope="module")
def raw_array() -> np.ndarray:
    return data.filaments_timelapse((6, 64, 64), seed=0)[0]


@pytest.fixture
def raw(tmp_path, raw_array) -> Path:
    return Path(write_image(str(tmp_path / "raw.ome.zarr"), raw_array, "tyx", chunks=(3, 32, 32)))


@pytest.fixture(scope="module")
def expected(tmp_path_factory, raw_array) -> np.ndarray:
    """The uninterrupted result of the API run."""
    folder = tmp_path_factory.mktemp("expected")
    src = write_image(str(folder / "raw.ome.zarr"), raw_array, "tyx", chunks=(3, 32, 32))
    bigdecon.deconvolve(src, str(folder / "out.ome.zarr"), **API)
    return np.asarray(open_image(folder / "out.ome.zarr").data)


class Stop(KeyboardInterrupt):
    pass


def interrupted(source: str, out: Path, after: int) -> Path:
    """A real run stopped (as by Ctrl-C) once ``after`` of its 9 blocks are recorded."""

    def progress(done: int, total: int) -> None:
        if done >= after:
            raise Stop

    with pytest.raises(Stop):
        bigdecon.deconvolve(source, str(out), progress=progress, **API)
    return out


def tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- 1, 7: paths


@pytest.mark.parametrize(
    "spelling",
    [
        "local://{abs}",
        "file://{abs}/",
        "simplecache::file://{abs}",
        "{parent}/./sub/../raw.ome.zarr",
        "{link}",
        "local://{parent}",  # contains the input
        "file://{abs}/out.ome.zarr",  # inside the input
    ],
)
def test_overwrite_never_reaches_the_input_under_another_spelling(spelling, raw, tmp_path, run_main):
    """Before: local://, file://, simplecache:: and symlinked spellings passed, and --overwrite deleted the input."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to(raw)
    before = tree(raw)
    out = spelling.format(abs=raw, parent=tmp_path, link=tmp_path / "link")
    assert_refused(run_main("run", raw, out, *FAST, *CLUSTER, "--overwrite"), "input")
    assert tree(raw) == before


def test_memory_store_spellings_are_one_place(raw_array, run_main):
    """memory://b/x and memory:///b//x/ are one object store location (fsspec folds them)."""
    src = write_image("memory://safety-bucket/raw.ome.zarr", raw_array, "tyx", chunks=(3, 32, 32))
    try:
        assert_refused(
            run_main("run", src, "memory:///safety-bucket//raw.ome.zarr/", *FAST, "--overwrite"), "is the input"
        )
        assert open_image(src).shape == (6, 64, 64)
    finally:
        import fsspec

        fsspec.filesystem("memory").rm("/safety-bucket", recursive=True)


def test_protocol_aliases_name_one_store():
    """s3a/s3, gcs/gs, credentials and cache wrappers: the comparison sees one place."""
    from bigdecon.io.paths import canonical, same_or_nested

    assert same_or_nested("s3://b/raw.zarr", "s3a://b/raw.zarr/") == "same"
    assert same_or_nested("gs://b/raw.zarr", "simplecache::gcs://b//raw.zarr/out") == "inside"
    assert same_or_nested("https://u:p@Host/d/raw.zarr", "http://host/d") == "contains"
    assert same_or_nested("s3://b/raw.zarr", "s3://b/raw.zarr2") is None
    assert canonical("s3://b/x") != canonical("gs://b/x")


@pytest.mark.parametrize("where", ["{raw}/scratch", "file://{raw}"])
def test_work_dir_inside_the_input_is_refused(where, raw, tmp_path, run_main):
    """Before: accepted, and the run left its intermediates in the user's dataset."""
    before = tree(raw)
    proc = run_main("run", raw, tmp_path / "out.ome.zarr", *FAST, "--work-dir", where.format(raw=raw))
    assert_refused(proc, "work_dir", "input")
    assert tree(raw) == before and not (tmp_path / "out.ome.zarr").exists()


def test_a_work_folder_linked_into_the_input_is_refused(raw, tmp_path, run_main):
    """A resumed run would write and free its intermediates through the link, in the user's dataset."""
    out = interrupted(str(raw), tmp_path / "out.ome.zarr", after=4)
    shutil.rmtree(out / ".bigdecon-work")
    (out / ".bigdecon-work").symlink_to(raw)
    before = tree(raw)
    assert_refused(run_main("run", raw, out, *FAST, *CLUSTER, "--resume"), "work folder", "input")
    assert tree(raw) == before


# --------------------------------------------------------------------------- 2: overwrite removes only bigdecon's


def foreign_image(path: Path, raw_array: np.ndarray) -> Path:
    """An OME-Zarr that another tool wrote: multiscales, labels and a note, no bigdecon stamp."""
    group = zarr.open_group(str(path), mode="w")
    group.create_array("0", shape=raw_array.shape, chunks=(3, 32, 32), dtype="float32")[:] = raw_array
    axes = [{"name": a, "type": "time" if a == "t" else "space"} for a in "tyx"]
    ds = [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0, 1.0]}]}]
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{"axes": axes, "datasets": ds}]}
    group.create_group("labels").attrs["note"] = "hand-drawn"
    (path / "NOTES.txt").write_text("irreplaceable")
    return path


def test_overwrite_refuses_an_image_bigdecon_did_not_write(raw, raw_array, tmp_path, run_main):
    """Before: any folder with multiscales was removed whole, labels and notes with it."""
    out = foreign_image(tmp_path / "theirs.ome.zarr", raw_array)
    before = tree(out)
    assert_refused(run_main("run", raw, out, *FAST, *CLUSTER, "--overwrite"), "did not write", str(out))
    assert tree(out) == before


def test_overwrite_refuses_a_foreign_image_on_an_object_store(raw, raw_array, run_main):
    """The same on memory:// (an fsspec object store the CLI reaches in this process)."""
    import uuid

    import fsspec

    url = f"memory://theirs-{uuid.uuid4().hex}/img.ome.zarr"
    group = zarr.open_group(url, mode="w")
    group.create_array("0", shape=raw_array.shape, chunks=(3, 32, 32), dtype="float32")[:] = raw_array
    group.attrs["multiscales"] = [{"axes": ["t", "y", "x"], "datasets": [{"path": "0"}]}]
    group.create_group("labels")
    fs = fsspec.filesystem("memory")
    before = sorted(fs.find(url))
    try:
        assert_refused(run_main("run", raw, url, *FAST, "--overwrite"), "did not write")
        assert sorted(fs.find(url)) == before
    finally:
        fs.rm(url.rsplit("/", 1)[0], recursive=True)


def test_overwrite_refuses_what_the_user_added_to_a_bigdecon_output(raw, tmp_path, run_main):
    out = tmp_path / "out.ome.zarr"
    bigdecon.deconvolve(str(raw), str(out), **API)
    (out / "labels").mkdir()
    (out / "labels" / "cells.json").write_text("{}")
    before = tree(out)
    assert_refused(run_main("run", raw, out, *FAST, *CLUSTER, "--overwrite"), "labels", "did not write")
    assert tree(out) == before


# --------------------------------------------------------------------------- 3: lost intermediates


def test_single_lost_chunk_of_g_stops_the_run(raw, tmp_path):
    """Before: step 5 read the missing chunk as zeros and wrote a wrong image without a word."""
    out = interrupted(str(raw), tmp_path / "out.ome.zarr", after=6)  # step 4 done, step 5 not started
    chunk = next(p for p in (out / ".bigdecon-work" / "g.zarr" / "c").rglob("*") if p.is_file())
    chunk.unlink()
    with pytest.raises(bigdecon.errors.ProcessingError, match=r"work array g.zarr lost chunks .*--overwrite"):
        bigdecon.deconvolve(str(raw), str(out), resume=True, **API)
    assert "multiscales" not in json.dumps(zarr.open_group(str(out), mode="r").attrs.asdict())


# --------------------------------------------------------------------------- 4: resume fingerprint


@pytest.mark.parametrize("change", ["pixels", "version"])
def test_resume_refuses_a_changed_input_or_version(change, raw, raw_array, tmp_path, run_main):
    """Before: only the input's path was compared; a rewritten input resumed into a mixed image."""
    out = interrupted(str(raw), tmp_path / "out.ome.zarr", after=4)
    if change == "pixels":
        arr = zarr.open_array(str(raw / "s0"), mode="r+")
        arr[:, :32, :32] = raw_array[:, :32, :32] * 2  # same shape and dtype, other pixels
        words = ["input changed", "chunk"]
    else:
        meta = json.loads((out / "zarr.json").read_text())
        meta["attributes"]["bigdecon"]["config"]["version"] = "0.0.1"
        (out / "zarr.json").write_text(json.dumps(meta))
        words = ["started by bigdecon 0.0.1"]
    assert_refused(run_main("run", raw, out, *FAST, *CLUSTER, "--resume"), *words, "--overwrite")


def test_resume_refuses_a_touched_tiff(tmp_path, raw_array, run_main):
    import tifffile

    tif = tmp_path / "raw.tif"
    tifffile.imwrite(tif, raw_array, metadata={"axes": "TYX"}, imagej=True)
    out = interrupted(str(tif), tmp_path / "out.ome.zarr", after=4)
    os.utime(tif, (time.time() + 5, time.time() + 5))
    assert_refused(run_main("run", tif, out, *FAST, *CLUSTER, "--resume"), "input changed", "file size or time")


# --------------------------------------------------------------------------- 5: recoverable states


def test_kill_after_finalising_is_finished_by_resume(raw, tmp_path, run_main):
    """Before: '--resume' said 'nothing to resume: already complete' and the work folder stayed forever."""
    out = interrupted(str(raw), tmp_path / "out.ome.zarr", after=7)
    saved = tmp_path / "work-at-kill"
    shutil.copytree(out / ".bigdecon-work", saved)
    bigdecon.deconvolve(str(raw), str(out), resume=True, **API)
    shutil.copytree(saved, out / ".bigdecon-work")  # as if killed between finalize and the removal
    image = np.asarray(open_image(out).data)
    assert_refused(run_main("run", raw, out, *FAST, *CLUSTER), "is complete but still has the work folder", "--resume")
    proc = run_main("run", raw, out, *FAST, *CLUSTER, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "already complete: removed the work folder" in proc.stdout
    assert not (out / ".bigdecon-work").exists() and not (out / LEASE_NAME).exists()
    np.testing.assert_array_equal(np.asarray(open_image(out).data), image)


def test_interrupted_overwrite_names_the_command_that_recovers(raw, tmp_path, run_main, expected):
    """Before: an output without root metadata could be neither resumed nor overwritten."""
    out = interrupted(str(raw), tmp_path / "out.ome.zarr", after=4)
    (out / "zarr.json").unlink()  # an --overwrite killed after removing the root metadata
    assert_refused(run_main("run", raw, out, *FAST, *CLUSTER, "--resume"), "root metadata is missing", "--overwrite")
    assert_refused(run_main("run", raw, out, *FAST, *CLUSTER), "lost its root metadata", "use --overwrite")
    bigdecon.deconvolve(str(raw), str(out), overwrite=True, **API)  # the command named: allowed now
    np.testing.assert_array_equal(np.asarray(open_image(out).data), expected)


# --------------------------------------------------------------------------- 6: owner lease


def lease(out: Path, *, host: str | None = None, pid: int | None = None, age: float = 0.0) -> None:
    out.mkdir(exist_ok=True)
    now = time.time()
    doc = {"host": host or socket.gethostname(), "pid": pid or os.getpid(), "started": now - age}
    (out / LEASE_NAME).write_text(json.dumps({**doc, "heartbeat": now - age, "token": "other"}))


@pytest.mark.parametrize("flag", ["--resume", "--overwrite"])
def test_a_live_lease_refuses_a_second_run(flag, raw, tmp_path, run_main):
    """Before: two runs on one output raced (and --overwrite deleted the other's output under it)."""
    out = interrupted(str(raw), tmp_path / "out.ome.zarr", after=4)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lease(out, pid=sleeper.pid)
        before = tree(out)
        assert_refused(run_main("run", raw, out, *FAST, *CLUSTER, flag), "in use by another bigdecon run")
        assert tree(out) == before
        lease(out, host="another-node", age=5)  # a fresh heartbeat elsewhere: live too
        assert_refused(run_main("run", raw, out, *FAST, *CLUSTER, flag), "in use", "another-node")
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("holder", ["dead pid", "old heartbeat"])
def test_a_stale_lease_is_taken_over_with_a_notice(holder, raw, tmp_path, run_main):
    out = interrupted(str(raw), tmp_path / "out.ome.zarr", after=7)
    saved = tmp_path / "work-at-kill"
    shutil.copytree(out / ".bigdecon-work", saved)
    bigdecon.deconvolve(str(raw), str(out), resume=True, **API)
    shutil.copytree(saved, out / ".bigdecon-work")
    if holder == "dead pid":
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        lease(out, pid=int(gone.stdout))
    else:
        from bigdecon.io.safety import STALE_SECONDS

        lease(out, host="another-node", age=STALE_SECONDS + 60)
    proc = run_main("run", raw, out, *FAST, *CLUSTER, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "bigdecon: note: taking over the lease" in proc.stderr and "gone" in proc.stderr
    assert not (out / LEASE_NAME).exists() and not (out / ".bigdecon-work").exists()


def test_a_run_whose_lease_was_taken_over_deletes_and_finishes_nothing(raw, tmp_path, monkeypatch):
    """A run presumed dead (its lease taken over by another) stops deleting work chunks and never finalises."""
    import bigdecon.io.safety as safety

    monkeypatch.setattr(safety, "HEARTBEAT_SECONDS", 0.05)
    out = tmp_path / "out.ome.zarr"
    taken = {}

    def progress(done: int, total: int) -> None:
        if done == 4 and not taken:  # step 4 under way: another run takes the output over
            lease(out, host="another-node")
            time.sleep(0.5)  # the heartbeat notices
            taken["work"] = tree(out / ".bigdecon-work")

    with pytest.raises(bigdecon.errors.ProcessingError, match="another bigdecon run took over"):
        bigdecon.deconvolve(str(raw), str(out), progress=progress, **API)
    work = tree(out / ".bigdecon-work")
    assert set(taken["work"]) - set(work) <= {n for n in taken["work"] if "/ledger/" in f"/{n}"}  # no chunk freed
    assert json.loads((out / LEASE_NAME).read_text())["host"] == "another-node"
    assert "multiscales" not in (out / "zarr.json").read_text()


# --------------------------------------------------------------------------- 11, 13: what is printed and stored


def test_redact_helper():
    from bigdecon.io.paths import redact

    assert redact("s3://KEY:SECRET@bucket/x.zarr") == "s3://***@bucket/x.zarr"
    assert redact("https://h/x.zarr?X-Amz-Signature=abc&token=t") == "https://h/x.zarr?X-Amz-Signature=***&token=***"
    assert redact("plain text = fine?") == "plain text = fine?"


def test_scheduler_credentials_are_not_printed(raw, tmp_path, run_main):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    proc = run_main(
        "run",
        raw,
        tmp_path / "out.ome.zarr",
        *FAST,
        "--scheduler",
        f"tcp://admin:hunter2@127.0.0.1:{port}",
        "--scheduler-timeout",
        "1",
    )
    assert proc.returncode == 2 and "127.0.0.1" in proc.stderr, proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr


def test_k8s_manifest_annotations_are_redacted(run_main):
    proc = run_main(
        "submit",
        "https://alice:s3cret@data.example/raw.ome.zarr?token=abc",
        "s3://bucket/out.ome.zarr",
        "--fwhm",
        "2",
        "--image",
        "img:1",
        "--gpus-per-worker",
        "0",
        "--dry-run",
    )
    assert proc.returncode == 0, proc.stderr
    import yaml

    manifest = next(m for m in yaml.safe_load_all(proc.stdout) if m and m.get("kind") == "DaskJob")
    notes = manifest["metadata"]["annotations"]
    assert notes["bigdecon/input"] == "https://***@data.example/raw.ome.zarr?token=***"
    assert "INPUT carries credentials in its URL" in proc.stderr and "s3cret" not in proc.stderr


@pytest.fixture
def http_server(raw, tmp_path):
    """``python -m http.server`` on 127.0.0.1 serving the folder of ``raw`` (it ignores the credentials)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "http.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
            cwd=raw.parent,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(port, proc, log)
        yield f"http://alice:s3cret@127.0.0.1:{port}/{raw.name}"
    finally:
        stop_process_groups([proc])


@pytest.mark.slow
def test_resume_after_losing_g_over_http_with_credentials(http_server, tmp_path, expected):
    """Item 3 and 11 in one real run. Before: the resume recreated g empty and step 5 deconvolved
    zeros (a wrong image, exit 0); the input's credentials were printed and stored in the output."""
    out = interrupted(http_server, tmp_path / "out.ome.zarr", after=7)  # one step-5 block done
    shutil.rmtree(out / ".bigdecon-work" / "g.zarr")
    proc = cli("run", http_server, out, *FAST, *CLUSTER, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bigdecon: note: the work array g.zarr is missing" in proc.stderr
    np.testing.assert_allclose(np.asarray(open_image(out).data), expected, rtol=1e-5, atol=1e-4)
    stored = "".join(p.read_text(errors="replace") for p in out.rglob("*.json"))
    assert "s3cret" not in proc.stdout + proc.stderr and "s3cret" not in stored
    assert "alice" not in stored and "http://***@127.0.0.1" in proc.stdout
    info = cli("info", http_server, "--fwhm", "3")
    assert info.returncode == 0 and "s3cret" not in info.stdout + info.stderr, info.stderr


@pytest.mark.slow
def test_own_warnings_are_shown_without_debug(raw, tmp_path, expected):
    """Before: every warning was hidden without --debug, 'could not free N work chunks' too."""
    out = interrupted(str(raw), tmp_path / "out.ome.zarr", after=7)  # a step-5 block freed its g chunk
    g = out / ".bigdecon-work" / "g.zarr"
    arr = zarr.open_array(str(g), mode="r")
    freed = [
        g / arr.metadata.encode_chunk_key(i)
        for i in np.ndindex(*(-(-n // c) for n, c in zip(arr.shape, arr.chunks)))
        if not (g / arr.metadata.encode_chunk_key(i)).exists()
    ]
    freed[0].mkdir(parents=True)  # the resumed run frees it again, and the store refuses
    (freed[0] / "keep").write_text("x")
    proc = cli("run", raw, out, *FAST, *CLUSTER, "--resume")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "could not free" in line]
    assert len(lines) == 1 and lines[0].startswith("bigdecon: warning: could not free 1 work chunks"), proc.stderr
    assert "Warning" not in proc.stderr and "distributed" not in proc.stderr  # third-party noise stays hidden
    np.testing.assert_allclose(np.asarray(open_image(out).data), expected, rtol=1e-5, atol=1e-4)
