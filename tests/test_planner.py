"""Default blocks: they fit the task memory and solve as few voxels per worker thread as the cut allows."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bigdecon
from bigdecon.io import open_image
from bigdecon.params import Params
from bigdecon.planner import WORKSET_FACTOR, Layout, _makespan, _plane_group, make_plan


def solved(plan, regions, grow) -> list[int]:
    """Voxels each task solves: its block grown by the halo, clipped at the faces."""
    lay = plan.layout
    axes = [a for a in (lay.k, lay.y, lay.x) if a is not None]
    return [math.prod(b - a for a, b in (grow(r)[ax] for ax in axes)) for r in regions]


def list_schedule(durations: list[float], threads: int) -> float:
    """When the last of ``durations`` ends, run in this order on ``threads`` threads (what Dask does)."""
    free = [0.0] * threads
    for d in durations:
        i = int(np.argmin(free))
        free[i] += d
    return max(free)


def step4_time(plan, threads: int) -> float:
    return list_schedule([float(v) for v in solved(plan, plan.sparse_tasks(), plan.halo)], threads)


def previous_default(shape, threads: int) -> dict[str, int]:
    """The step-4 block of the previous planner: 32 x 256 x 256, halved (y/x to 64, then k to the halo)
    until there were two blocks per worker thread (default task memory, 8/16 px halo)."""
    k, y, x = (min(n, b) for n, b in zip(shape, (32, 256, 256)))
    blocks = lambda k, y, x: math.prod(-(-n // b) for n, b in zip(shape, (k, y, x)))  # noqa: E731
    while blocks(k, y, x) < 2 * threads:
        if max(y, x) > 64:
            if y >= x:
                y = max(64, -(-y // 2))
            else:
                x = max(64, -(-x // 2))
        elif k > 8:
            k = max(8, -(-k // 2))
        else:
            break
    return {"k": k, "y": y, "x": x}


SHAPES = [(64, 512, 512), (12, 256, 256), (100, 700, 900), (64, 2048, 2048), (300, 1024, 1024), (5, 96, 2000)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threads", [1, 2, 4, 8])
def test_step4_blocks_fit_and_cost_no_more_than_before(shape, threads):
    params = Params.from_kwargs(fwhm=3)
    layout = Layout(("t", "y", "x"), shape)
    plan = make_plan(layout, params, min_tasks=threads)
    d = plan.depth
    grown = [min(n, plan.sparse_block[a] + 2 * d[a]) for n, a in zip(shape, "kyx")]
    assert 4 * WORKSET_FACTOR * math.prod(grown) <= 512 * 2**20
    tasks = plan.sparse_tasks()
    assert len(tasks) >= min(threads, math.prod(shape))
    # Each voxel is owned by one block.
    assert sum(math.prod(b - a for a, b in r.values()) for r in tasks) == math.prod(shape)
    before = make_plan(layout, params, chunks=previous_default(shape, threads))
    assert step4_time(plan, threads) <= step4_time(before, threads) * 1.001


def test_a_small_time_lapse_is_cut_once_per_thread_with_little_halo():
    """64 x 512 x 512 on 2 threads (the CLI on this 2-core VM): 2 blocks, 6% more voxels than the data
    (the previous 8 blocks of 32 x 256 x 256 solved 41% more)."""
    layout = Layout(("t", "y", "x"), (64, 512, 512))
    plan = make_plan(layout, Params.from_kwargs(fwhm=3), min_tasks=2)
    volumes = solved(plan, plan.sparse_tasks(), plan.halo)
    assert len(volumes) == 2 and max(volumes) == min(volumes)
    assert sum(volumes) / math.prod(layout.shape) < 1.07
    before = make_plan(layout, Params.from_kwargs(fwhm=3), chunks=previous_default(layout.shape, 2))
    assert sum(solved(before, before.sparse_tasks(), before.halo)) / math.prod(layout.shape) > 1.4
    # Whole-plane tasks: 4 of 16 planes, not 20, 20, 20 and 4.
    assert [r[0] for r in plan.plane_tasks()] == [(0, 16), (16, 32), (32, 48), (48, 64)]


@pytest.mark.parametrize("memory", [16 * 2**20, 64 * 2**20, 2**30, 32 * 2**30])
def test_step4_blocks_follow_the_task_memory(memory):
    layout = Layout(("t", "y", "x"), (200, 2048, 2048))
    plan = make_plan(layout, Params.from_kwargs(fwhm=3), task_memory=memory, min_tasks=4)
    k, y, x = (min(n, plan.sparse_block[a] + 2 * plan.depth[a]) for n, a in zip(layout.shape, "kyx"))
    assert 4 * WORKSET_FACTOR * k * y * x <= memory


def test_step4_blocks_when_none_fits():
    """A budget below the smallest block: the block needing the least memory, not an error."""
    plan = make_plan(Layout(("t", "y", "x"), (64, 512, 512)), Params.from_kwargs(fwhm=3), task_memory=2**20)
    assert plan.sparse_block == {"k": 8, "y": 64, "x": 64}


@pytest.mark.parametrize(
    "planes, most, threads, outer", [(64, 20, 2, 1), (64, 20, 1, 1), (7, 3, 4, 1), (10, 2, 3, 2), (1, 5, 4, 3)]
)
def test_plane_groups_balance_the_threads(planes, most, threads, outer):
    group = _plane_group(planes, most, threads, outer)
    assert 1 <= group <= most
    tasks = outer * -(-planes // group)
    assert tasks >= min(threads, outer * planes)
    sizes = [min(group, planes - s) for _ in range(outer) for s in range(0, planes, group)]
    best = min(
        list_schedule([min(g, planes - s) for _ in range(outer) for s in range(0, planes, g)], threads)
        for g in range(1, most + 1)
        if outer * -(-planes // g) >= min(threads, outer * planes)
    )
    assert list_schedule(sizes, threads) == best


def test_makespan_is_exact_for_equal_tasks_and_bounded_otherwise():
    assert _makespan(4, 4 * 10.0, 10.0, 2) == 20  # two waves
    assert _makespan(3, 30.0, 10.0, 2) == 20  # the third task waits
    assert _makespan(1000, 1000.0, 1.0, 8) == 125
    rng = np.random.default_rng(0)
    for _ in range(20):
        d = rng.uniform(1, 10, size=int(rng.integers(1, 40)))
        est = _makespan(len(d), d.sum(), d.max(), 3)
        assert list_schedule(list(d), 3) <= est + 1e-9


def test_3d_step5_blocks_come_in_whole_waves():
    """64 x 512 x 512 zyx with FWHM (6, 3, 3) on 2 threads: an even number of step-5 blocks of one size
    (the least total work, the previous rule, gave 3 blocks of 64 x 208 x 512: one thread idle for the last)."""
    layout = Layout(("z", "y", "x"), (64, 512, 512))
    plan = make_plan(layout, Params.from_kwargs(fwhm=(6, 3, 3)), min_tasks=2)
    volumes = solved(plan, plan.final_tasks(), plan.deconv_halo)
    assert len(volumes) % 2 == 0 and max(volumes) == min(volumes)
    assert 0 < plan.deconv_task_bytes() <= 512 * 2**20


@pytest.mark.slow
def test_a_run_with_the_default_blocks_equals_the_whole_array(tmp_path):
    """The default blocks of a 2-thread cluster, end to end (read, halo, write), equal the in-memory call."""
    from distributed import Client, LocalCluster
    from helpers import filaments
    from test_chunked import write_input

    data = filaments((20, 160, 176), seed=8)[0]
    src = write_input(str(tmp_path / "in.zarr"), data, "tyx", (4, 160, 176))
    plan = bigdecon.plan(src, fwhm=3, sparse_iters=30, min_tasks=2)
    assert plan["n_tasks"] > 3  # blocks in the sparse pass, and more than one whole-plane task per pass
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        info = bigdecon.deconvolve(src, str(tmp_path / "out.zarr"), fwhm=3, sparse_iters=30, client=client)
    assert info["chunks"] == plan["n_tasks"]
    out = open_image(info["output"]).data.compute()
    whole = bigdecon.sparse_deconvolve(data, fwhm=3, sparse_iters=30)
    assert np.abs(out - whole).max() <= 1e-3 * np.abs(whole).max()


def test_the_tasks_of_a_terabyte_plan_are_made_as_they_are_asked_for():
    """100x2x500x2048x2048 tczyx (1.6 TB as float32): ~10^5 step-4 blocks, held as per-axis spans
    (a list of region dicts would cost the driver ~300 bytes a block), and indexable like a list."""
    import itertools
    import pickle

    layout = Layout(("t", "c", "z", "y", "x"), (100, 2, 500, 2048, 2048))
    plan = make_plan(layout, Params(fwhm=(3.0, 3.0)), min_tasks=64)
    tasks = plan.sparse_tasks()
    assert len(tasks) > 50_000
    assert len(pickle.dumps(tasks)) < 20_000
    head = list(itertools.islice(tasks, 1000))
    assert head == tasks[:1000] and tasks[-1] == list(tasks)[-1] and tasks[-len(tasks)] == head[0]
    assert len({tuple(sorted(r.items())) for r in head}) == 1000
    # Every voxel in exactly one block: the block volumes add up to the data set's.
    total = sum(math.prod(b - a for a, b in r.values()) for r in tasks)
    assert total == math.prod(layout.shape)
    with pytest.raises(IndexError):
        tasks[len(tasks)]
