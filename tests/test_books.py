"""Task bookkeeping with thousands of tasks: bounded submission waves, batched records, a compacted ledger.

The solvers are replaced in the workers (a test-local worker plugin) by identities, so the
2,580 tasks cost only their reads, writes and bookkeeping, and the output must equal the
input exactly: a missing, doubled or misplaced block shows. (1e4 tasks take minutes on
2 cores, most of it the tasks' own small reads and writes: that size is measured by
``benchmarks/bench_bookkeeping.py``.)
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from test_chunked import write_input

import bigdecon
from bigdecon.io import open_image
from bigdecon.passes import ledger as ledger_module
from bigdecon.passes.ledger import Ledger, RecordBook
from bigdecon.passes.run import WAVE_MIN, WAVE_PER_THREAD

pytestmark = pytest.mark.slow

CHUNKS = {"t": 1, "y": 16, "x": 16}


class Interrupt(Exception):
    pass


def test_thousands_of_tasks_in_waves_then_resume_from_a_compacted_ledger(tmp_path):
    from distributed import Client, LocalCluster, WorkerPlugin
    from distributed.diagnostics.plugin import SchedulerPlugin

    class NoOpSolvers(WorkerPlugin):
        """Identity block functions in every worker (defined here: pickled by value)."""

        def setup(self, worker):
            import numpy as np

            import bigdecon.passes.tasks as tasks

            tasks._preprocess_block = lambda raw, *a: np.asarray(raw, np.float32)
            tasks._sparse_block = lambda h, n, p, c, interior, faces=None: np.ascontiguousarray(h[interior], np.float32)
            tasks._final_block = lambda g, *a: np.asarray(g, np.float32)

    class MostTasks(SchedulerPlugin):
        """The most bigdecon tasks (futures) the scheduler held at any transition, and the blocks they ran."""

        def __init__(self, scheduler):
            self.scheduler, self.most, self.seen = scheduler, 0, 0

        def transition(self, key, start, finish, *args, **kwargs):
            if str(key).startswith("bigdecon-"):
                if start == "released" and finish == "waiting":  # a new future: -x<blocks> in its key
                    self.seen += int(str(key).rsplit("-x", 1)[1].split("-")[0])
                held = sum(1 for k in self.scheduler.tasks if str(k).startswith("bigdecon-"))
                self.most = max(self.most, held)

    rng = np.random.default_rng(3)
    data = rng.integers(1, 1000, size=(10, 256, 256), dtype=np.uint16)
    src = write_input(str(tmp_path / "in.zarr"), data, "tyx", (1, 256, 256))
    out = str(tmp_path / "out.zarr")
    n_sparse = 10 * 16 * 16
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.register_plugin(NoOpSolvers())
        most = MostTasks(cluster.scheduler)
        cluster.scheduler.add_plugin(most)
        width = max(WAVE_MIN, WAVE_PER_THREAD * 2)

        def stop_after_step4(done, total):
            if done == 10 + n_sparse:
                raise Interrupt

        with pytest.raises(Interrupt):
            bigdecon.deconvolve(src, out, fwhm=3, chunks=CHUNKS, client=client, progress=stop_after_step4)
        assert most.seen >= 10 + n_sparse  # every block went through the scheduler
        # The scheduler held one wave of futures at a time (plus released keys the client had not
        # yet told it about), never the pass's 2,560 tasks.
        assert most.most <= 2 * width, (most.most, width)
        # The pass ended with its records compacted into one index segment.
        folder = tmp_path / "out.zarr" / ".bigdecon-work" / "ledger" / "sparse"
        assert [n.startswith("index-") for n in os.listdir(folder)] == [True]
        assert len(Ledger(str(tmp_path / "out.zarr" / ".bigdecon-work")).done("sparse")) == n_sparse

        t0 = time.perf_counter()
        opened = []

        def note(done, total):
            if done == 10 + n_sparse and not opened:
                opened.append(time.perf_counter() - t0)

        info = bigdecon.deconvolve(src, out, fwhm=3, chunks=CHUNKS, client=client, resume=True, progress=note)
    assert info["resumed"] == 10 + n_sparse
    assert opened[0] < 30, f"resume took {opened[0]:.1f} s to read 2,570 records"  # generous
    # Identity solvers: the output is the input, block for block.
    np.testing.assert_array_equal(open_image(out).data.compute(), data.astype(np.float32))


def test_record_book_batches_and_compacts(tmp_path, monkeypatch):
    ledger = Ledger(str(tmp_path / "work"))
    folder = tmp_path / "work" / "ledger" / "sparse"
    book = RecordBook(ledger, "sparse", batch=10, seconds=60, compact_every=3)
    for i in range(25):
        book.add(f"k{i}", {"max": float(i)})
    # Two full batches written, five records pending; nothing merged yet.
    assert len(os.listdir(folder)) == 2
    assert len(ledger.done("sparse")) == 20
    book.add("k25", {"max": 25.0})
    for i in range(26, 30):
        book.add(f"k{i}", {"max": float(i)})
    # The third batch triggered a compaction: one index segment with all 30.
    (segment,) = os.listdir(folder)
    assert segment.startswith("index-") and len(ledger.done("sparse")) == 30
    book.add("k30", {"max": 30.0})
    # A second book (a resumed run) sees the index; the pending record of the first is lost
    # (not yet due: a recomputation), which is allowed.
    assert set(RecordBook(ledger, "sparse").done) == {f"k{i}" for i in range(30)}
    book.close()
    assert os.listdir(folder) == [segment]
    assert ledger.done("sparse")["k30"] == {"max": 30.0}
    # Old single-record files (Ledger.record) and an index of before segments are read and merged too.
    ledger.record("sparse", "single", {"max": -1.0})
    (folder / "index.json").write_text('{"old": {"max": -2.0}}')
    again = RecordBook(ledger, "sparse")
    assert again.done["single"] == {"max": -1.0} and again.done["old"] == {"max": -2.0} and len(again.done) == 33
    again.close()
    assert "single.json" not in os.listdir(folder) and len(os.listdir(folder)) == 3
    assert len(ledger.done("sparse")) == 33


def test_record_book_closes_full_segments_and_holds_at_most_one(tmp_path):
    """The driver keeps no record per block: a pass of 20,000 records holds one segment's worth."""
    import tracemalloc

    ledger = Ledger(str(tmp_path / "work"))
    folder = tmp_path / "work" / "ledger" / "final"
    keys = [f"{i}-{i + 1}.0-2048.0-2048" for i in range(20_000)]
    value = {"max": 1.0}
    tracemalloc.start()
    try:
        book = RecordBook(ledger, "final", batch=100, seconds=60, compact_every=4, segment=1000)
        base = tracemalloc.get_traced_memory()[0]
        for key in keys:
            book.add(key, value)
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    book.close()
    names = os.listdir(folder)
    assert all(n.startswith("index-") for n in names) and len(names) == 20
    assert set(ledger.done("final")) == set(keys)
    # ~200 bytes a record in a dict: 20,000 held would be ~4 MB; one segment's ~0.2 MB.
    assert held < 1_000_000, held


def test_record_book_writes_a_late_record_from_its_timer(tmp_path):
    ledger = Ledger(str(tmp_path / "work"))
    book = RecordBook(ledger, "final", batch=1000, seconds=0.2)
    book.add("only", {"max": 2.0})
    deadline = time.monotonic() + 10
    while "only" not in ledger.done("final"):  # no other record arrives: the timer writes it
        assert time.monotonic() < deadline
        time.sleep(0.05)
    book.close()


def test_record_book_on_memory_filesystem():
    root = f"memory://books-{os.getpid()}-{time.monotonic_ns()}/out.zarr/.bigdecon-work"
    ledger = Ledger(root)
    book = RecordBook(ledger, "sparse", batch=100, compact_every=4)
    for i in range(1000):
        book.add(str(i), {"max": float(i)})
    book.close()
    assert ledger.fs.ls(ledger.path("ledger", "sparse"), detail=False)[-1].rsplit("/", 1)[-1].startswith("index-")
    assert len(ledger.fs.ls(ledger.path("ledger", "sparse"), detail=False)) == 1
    assert len(Ledger(root).done("sparse")) == 1000
    ledger.remove()
    assert ledger_module.BATCH_SECONDS <= 5  # a kill loses at most a few seconds of finished blocks
