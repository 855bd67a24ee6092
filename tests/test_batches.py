"""Tiny tasks go out in batches: one Dask future runs several consecutive blocks.

A real LocalCluster, real zarr stores and the real solvers on 1x16x16 step-4 blocks
(a few ms each): the driver sizes its futures from the measured seconds per block,
records every block on its own, resumes from a partial batched run, and names the
failing block of a batch. The in-process run (no cluster, one block at a time) is
the reference, byte for byte.
"""

from __future__ import annotations

import re
import time

import pytest
from helpers import filaments
from test_chunked import write_input

import bigdecon
from bigdecon.errors import ProcessingError
from bigdecon.io import open_image
from bigdecon.passes.ledger import Ledger
from bigdecon.passes.run import BATCH_MAX
from bigdecon.passes.tasks import _region_key

pytestmark = pytest.mark.slow

PARAMS = dict(fwhm=3, sparse_iters=5, background=1)
CHUNKS = {"t": 1, "y": 16, "x": 16}
T, SIDE = 4, 128
N_PRE = T  # one whole-plane task per plane
N_SPARSE = T * (SIDE // 16) ** 2  # 256 step-4 blocks
BATCH = re.compile(r"^bigdecon-(\w+)-.*-x(\d+)-\d+-\d+$")


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    data = filaments((T, SIDE, SIDE), seed=5)[0]
    path = tmp_path_factory.mktemp("src") / "in.zarr"
    return write_input(str(path), data, "tyx", (1, SIDE, SIDE))


@pytest.fixture(scope="module")
def expected(source, tmp_path_factory):
    """The in-process run: no cluster, one block at a time."""
    out = tmp_path_factory.mktemp("ref") / "out.zarr"
    bigdecon.deconvolve(source, str(out), chunks=CHUNKS, **PARAMS)
    return open_image(str(out)).data.compute()


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        yield cluster, client


def futures_seen(cluster):
    """A scheduler plugin that keeps the key of every bigdecon future and the keys that erred."""
    from distributed.diagnostics.plugin import SchedulerPlugin

    class Keys(SchedulerPlugin):
        def __init__(self):
            self.keys, self.erred = [], []

        def transition(self, key, start, finish, *args, **kwargs):
            if not str(key).startswith("bigdecon-"):
                return
            if start == "released" and finish == "waiting":
                self.keys.append(str(key))
            if finish == "erred":
                self.erred.append(str(key))

        def sizes(self, stage):
            return [int(m[2]) for m in map(BATCH.match, self.keys) if m and m[1] == stage]

    plugin = Keys()
    cluster.scheduler.add_plugin(plugin, name=f"keys-{time.monotonic_ns()}")
    return plugin


def records(out) -> dict:
    return Ledger(str(out / ".bigdecon-work")).done("sparse")


def test_tiny_blocks_run_in_batches_and_resume_byte_identical(source, expected, cluster, tmp_path):
    cluster, client = cluster
    out = tmp_path / "out.zarr"
    keys = futures_seen(cluster)
    half = N_PRE + N_SPARSE // 2

    def stop_at(n):
        def progress(done, total):
            if done == n:
                raise Interrupt

        return progress

    # A first run stopped half-way through step 4: exactly the blocks it reported are recorded.
    with pytest.raises(Interrupt):
        bigdecon.deconvolve(source, str(out), chunks=CHUNKS, client=client, progress=stop_at(half), **PARAMS)
    assert len(records(out)) == N_SPARSE // 2
    sizes = keys.sizes("sparse")
    # The first wave is one block per future; then blocks of a few ms go out many per future.
    assert sizes[0] == 1 and max(sizes) > 1 and max(sizes) <= BATCH_MAX, sizes
    assert len(sizes) < N_SPARSE // 2, sizes

    # Resumed and stopped again once step 4 is done: every block has its own record.
    keys.keys.clear()
    info_stop = stop_at(N_PRE + N_SPARSE)
    with pytest.raises(Interrupt):
        bigdecon.deconvolve(source, str(out), chunks=CHUNKS, client=client, resume=True, progress=info_stop, **PARAMS)
    plan = bigdecon.plan(source, chunks=CHUNKS, **PARAMS)
    assert plan["n_tasks"] == N_PRE + N_SPARSE + T
    done = records(out)
    assert len(done) == N_SPARSE and all(set(v) == {"max"} for v in done.values())
    # Only the unrecorded half ran, in fewer futures than blocks.
    assert sum(keys.sizes("sparse")) <= N_SPARSE - N_SPARSE // 2 + 2 * BATCH_MAX
    assert len(keys.sizes("sparse")) < N_SPARSE // 2

    seen = []
    info = bigdecon.deconvolve(
        source, str(out), chunks=CHUNKS, client=client, resume=True, progress=lambda d, t: seen.append(d), **PARAMS
    )
    assert info["resumed"] == N_PRE + N_SPARSE
    # Each pass opens with its count; then one update per block.
    assert seen == [N_PRE, N_PRE + N_SPARSE] + list(range(N_PRE + N_SPARSE, N_PRE + N_SPARSE + T + 1)), seen
    assert open_image(str(out)).data.compute().tobytes() == expected.tobytes()


def test_an_error_in_a_batch_names_its_block(source, cluster, tmp_path):
    from distributed import WorkerPlugin

    cluster, client = cluster
    bad = _region_key(sparse_regions(source)[N_SPARSE // 2])  # past the first wave, before the tail

    class FailOne(WorkerPlugin):
        """Step 4 fails on one block, in every worker (defined here: pickled by value)."""

        def __init__(self, key):
            self.key = key

        def setup(self, worker):
            import bigdecon.passes.tasks as tasks

            original = self.original = tasks._task_sparse
            key = self.key

            def failing(ctx, region):
                if tasks._region_key(region) == key:
                    raise ValueError("a corrupt chunk")
                return original(ctx, region)

            tasks._task_sparse = failing

        def teardown(self, worker):
            import bigdecon.passes.tasks as tasks

            tasks._task_sparse = self.original

    keys = futures_seen(cluster)
    client.register_plugin(FailOne(bad), name="fail-one")
    try:
        with pytest.raises(
            ProcessingError, match=rf"^sparse failed on block {re.escape(bad)}: ValueError: a corrupt chunk"
        ):
            bigdecon.deconvolve(source, str(tmp_path / "out.zarr"), chunks=CHUNKS, client=client, **PARAMS)
    finally:
        client.unregister_worker_plugin("fail-one")
    # The block failed inside a batch of several, and the run left nothing on the cluster.
    assert keys.erred and all(int(BATCH.match(k)[2]) > 1 for k in keys.erred), keys.erred
    deadline = time.monotonic() + 30
    while running := [
        k for k, t in cluster.scheduler.tasks.items() if str(k).startswith("bigdecon-") and t.state != "erred"
    ]:
        assert time.monotonic() < deadline, f"tasks of the failed run are still on the scheduler: {running}"
        time.sleep(0.1)


def sparse_regions(source):
    from bigdecon.io import open_image as open_
    from bigdecon.passes.options import parse_run_options
    from bigdecon.passes.request import prepare_request

    return prepare_request(open_(source), *parse_run_options(dict(chunks=CHUNKS, **PARAMS))).plan.sparse_tasks()
