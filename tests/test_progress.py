"""Progress lines, bars and the summary of a run (bigdecon.progress), in process."""

from __future__ import annotations

import io
import os


def test_progress_counts_resumed_tasks_apart():
    from bigdecon.progress import ProgressReporter

    now = [0.0]
    stream = io.StringIO()
    report = ProgressReporter(2000, stream=stream, tty=False, interval=0.0, clock=lambda: now[0])
    report(15, 20)  # a resumed run: an earlier one had finished 15 tasks
    for done in range(16, 21):
        now[0] += 1.0
        report(done, 20)
    lines = stream.getvalue().splitlines()
    assert "15 resumed" in lines[0] and "voxel/s" not in lines[0]
    assert "100 voxel/s" in lines[2]  # 2 new tasks of 20 (200 voxels) in 2 s, not 17 tasks in 2 s
    summary = "\n".join(
        report.summary({"output": "o.zarr", "shape": [4], "seconds": 5.0, "voxels": 2000, "chunks": 20})
    )
    assert "500 voxels, 100 voxel/s, 20 tasks (15 resumed from an earlier run)" in summary
    assert f"Output: {os.path.abspath('o.zarr')}" in summary


def test_notebook_progress_outside_jupyter(capsys):
    from bigdecon.progress import NotebookProgress

    bar = NotebookProgress(1000, interval=0.0)
    for done in range(4):
        bar(done, 3)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("bigdecon: 3/3 tasks (100%)") and "done" in out


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
    assert lines[-1].startswith("[####################] 20/20 tasks (100%)") and "done" in lines[-1]
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

    lines = summary_lines(
        {"output": "/data/out.ome.zarr", "shape": [6, 64, 64], "seconds": 2.0, "voxels": 24576, "chunks": 3},
        peak_memory=3 * 2**30,
    )
    text = "\n".join(lines)
    assert "12.3 kvoxel/s" in text and "3.0 GiB" in text
    assert "napari --plugin napari-ome-zarr /data/out.ome.zarr" in text
