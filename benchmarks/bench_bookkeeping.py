"""What the out-of-core driver costs per task, and what ``bigdecon run`` adds to the solvers.

    python benchmarks/bench_bookkeeping.py --tasks 10000            # ~2-3 min on 2 cores
    python benchmarks/bench_bookkeeping.py --tasks 10000 100000     # + ~10-15 min
    python benchmarks/bench_bookkeeping.py --pipeline               # part 2 only: ~5 min
    python benchmarks/bench_bookkeeping.py --psf3d                  # part 2 with a 3-D PSF: ~5 min
    python benchmarks/bench_bookkeeping.py --tasks 10000 --pipeline --json out.json

Part 1, bookkeeping (``--tasks N ...``). The real driver path, ``bigdecon.deconvolve``
with a ``distributed.Client``, against a real ``dask scheduler`` and ``dask worker``
subprocesses (``--workers`` processes of ``--threads`` threads, each with a nanny),
on a (t, 512, 512) uint16 OME-Zarr stored in 1 x 16 x 16 chunks, cut into
1 x 16 x 16 step-4 blocks (``chunks=``) so a run has about N tasks. The solvers are
replaced, in the workers only, by identities (``benchmarks/noop_blocks.py``, a
worker preload): every task still reads its block and halo and writes its chunks,
so what remains is planning, submission, the scheduler, the ledger, progress and
the tasks' own small reads and writes. For each N it prints

* wall time per task of the step-4 pass, and the CPU time per task spent by the
  driver process and by the scheduler process (the part that does not shrink with
  more workers: the target is <= 2 ms per task together);
* peak RSS of the scheduler and of the driver, and the most tasks the scheduler
  held at once (sampled every 0.5 s);
* the futures of each pass and the blocks each ran (tiny tasks go out in
  batches: one block per future first, then as many as take ~0.5 s), read by a
  scheduler plugin from the futures' keys;
* resume start-up: the run is interrupted (an exception from its progress
  callback) once the step-4 pass is done, then resumed; start-up is the time from
  the call to the opening of the final pass (input opened, plan, ledger read);
* the statistics pass (run.py ``_source_stats``) over the N stored input chunks,
  grouped in ~64 MiB Dask chunks: its graph size and time;
* resume start-up on an fsspec ``memory://`` output: the ledger of N finished
  step-4 blocks written and read back with the product's own calls, in this
  process (``memory://`` is private to a process, so no worker can write there);
* each figure projected linearly to 1e6 tasks.

Part 2, the pipeline's own overhead (``--pipeline``): a 64 x 512 x 512 uint16
OME-Zarr (drifting filaments, FWHM 3 px), default parameters, real solvers:
in-memory :func:`bigdecon.sparse_deconvolve` of the array vs ``bigdecon run``
(the CLI in a subprocess, default arguments: it starts its own local cluster) vs
``bigdecon.deconvolve`` on a cluster started like the CLI's, with the time of each
phase (cluster start, statistics and set-up, each pass, finalize and pyramid);
the CLI's own time is split at the lines it prints (imports, checks and plan,
cluster start, sizing, the run, summary and exit), and the voxels each pass
solves (blocks grown by their halo) per voxel of the data are printed.
``--psf3d``: the same on a zyx volume of beads with a 3-D PSF (FWHM 6,3,3 px;
step 5 on (z, y, x) blocks with a halo).

Timings on a shared 2-core VM drift by +-20% between runs; ratios are measured
within one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

import bigdecon
from bigdecon.io import write_image

HERE = Path(__file__).resolve().parent
BLOCK = (1, 16, 16)
SIDE = 512
FWHM_3D = (6, 3, 3)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- cluster


class Cluster:
    """``dask scheduler`` + ``dask worker`` subprocesses (with nannies) on this machine."""

    def __init__(self, folder: Path, workers: int, threads: int) -> None:
        self.file = folder / "scheduler.json"
        env = dict(os.environ, BIGDECON_THREADS="1")
        quiet = dict(env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        py = sys.executable
        self.scheduler = subprocess.Popen(
            [py, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0"]
            + ["--dashboard-address", ":0", "--scheduler-file", str(self.file)],
            **quiet,
        )
        deadline = time.monotonic() + 60
        while not self.file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("scheduler did not start")
            time.sleep(0.1)
        self.workers = subprocess.Popen(
            [py, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(self.file)]
            + ["--nworkers", str(workers), "--nthreads", str(threads), "--host", "127.0.0.1"]
            + ["--dashboard-address", ":0", "--preload", str(HERE / "noop_blocks.py")],
            **quiet,
        )
        self.n = workers

    def client(self):
        from distributed import Client

        client = Client(scheduler_file=str(self.file), timeout=60)
        client.wait_for_workers(self.n, timeout=120)
        return client

    def close(self) -> None:
        for p in (self.workers, self.scheduler):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in (self.workers, self.scheduler):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class Sampler(threading.Thread):
    """Peak RSS of processes and the scheduler's task count, every ``period`` s."""

    def __init__(self, procs: dict[str, int], client=None, period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.procs = {k: psutil.Process(pid) for k, pid in procs.items()}
        self.peak = {k: p.memory_info().rss for k, p in self.procs.items()}
        self.start_rss = dict(self.peak)
        self.client, self.period = client, period
        self.max_tasks = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period):
            for k, p in self.procs.items():
                self.peak[k] = max(self.peak[k], p.memory_info().rss)
            if self.client is not None:
                try:
                    n = self.client.run_on_scheduler(_count_tasks)
                    self.max_tasks = max(self.max_tasks, n)
                except Exception:  # the client is closing
                    pass

    def finish(self) -> None:
        self.stop.set()
        self.join()


def _count_tasks(dask_scheduler=None) -> int:
    return sum(1 for k in dask_scheduler.tasks if str(k).startswith("bigdecon-"))


def _watch_futures(dask_scheduler=None) -> None:
    """Install a scheduler plugin that notes each bigdecon future's pass and blocks (from its key)."""
    import re

    from distributed.diagnostics.plugin import SchedulerPlugin

    # bigdecon-<stage>-<first block>[-x<blocks>]-<pid>-<ns>: no -x<n> before batching (one block each).
    pattern = re.compile(r"^bigdecon-([a-z]+)-.*?(?:-x(\d+))?-\d+-\d+$")

    class Futures(SchedulerPlugin):
        def __init__(self) -> None:
            self.sizes: dict[str, list[int]] = {}

        def transition(self, key, start, finish, *args, **kwargs) -> None:
            if start == "released" and finish == "waiting" and str(key).startswith("bigdecon-"):
                m = pattern.match(str(key))
                if m:
                    self.sizes.setdefault(m[1], []).append(int(m[2] or 1))

    dask_scheduler.add_plugin(Futures(), name="bench-futures")


def _take_futures(dask_scheduler=None) -> dict:
    """The blocks of every future noted since the last call, per pass."""
    plugin = dask_scheduler.plugins["bench-futures"]
    sizes, plugin.sizes = plugin.sizes, {}
    return sizes


def batch_summary(sizes: dict[str, list[int]]) -> dict:
    """Per pass: futures, blocks, and blocks per future (first, median, max)."""
    return {
        stage: {
            "futures": len(v),
            "blocks": sum(v),
            "first": v[0],
            "median": float(np.median(v)),
            "max": max(v),
        }
        for stage, v in sizes.items()
    }


IDLE_SECONDS = 15


def idle_rates(client, sched_pid: int) -> dict[str, float]:
    """CPU ms per second of wall of the scheduler and of this (driver) process with nothing to run:
    heartbeats, event loops and this script's own sampler, over IDLE_SECONDS."""
    pids = {"scheduler": sched_pid, "driver": os.getpid()}
    sampler = Sampler(pids, client)
    cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
    t0 = time.perf_counter()
    sampler.start()
    time.sleep(IDLE_SECONDS)
    sampler.finish()
    wall = time.perf_counter() - t0
    return {k: 1e3 * (cpu_seconds(pid) - cpu0[k]) / wall for k, pid in pids.items()}


def cpu_seconds(pid: int) -> float:
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


# --------------------------------------------------------------------------- bookkeeping


class Stop(Exception):
    """Raised from the progress callback to interrupt a run at a chosen point."""


class Events:
    """Progress callback: keeps (time, done) and can interrupt the run at ``stop_at`` done tasks."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.events: list[tuple[float, int, int]] = []
        self.stop_at = stop_at

    def __call__(self, done: int, total: int) -> None:
        self.events.append((time.perf_counter(), done, total))
        if self.stop_at is not None and done >= self.stop_at:
            raise Stop

    def first(self, done: int) -> float:
        return next(t for t, d, _ in self.events if d >= done)


class Marks:
    """Progress callback of the bookkeeping runs: the time of the first and last call and
    of the first call at or past each of ``marks`` done tasks (a list of every call would
    be the driver's largest per-task memory); interrupts the run at ``stop_at`` done tasks."""

    def __init__(self, marks: list[int], stop_at: int | None = None) -> None:
        self.todo = sorted(marks)
        self.at: dict[int, float] = {}
        self.start = self.end = 0.0
        self.stop_at = stop_at

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        self.start = self.start or now
        self.end = now
        while self.todo and done >= self.todo[0]:
            self.at[self.todo.pop(0)] = now
        if self.stop_at is not None and done >= self.stop_at:
            raise Stop

    def first(self, done: int) -> float:
        return self.at[done]


def make_input(path: str, t: int, chunks=BLOCK) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(100, 2000, size=(t, SIDE, SIDE), dtype=np.uint16)
    write_image(path, data, "tyx", chunks=(1, SIDE, SIDE), overwrite=True)
    # Level 0 again in tiny stored chunks: zarr writes them concurrently, much faster
    # than one Dask task per chunk (the metadata does not name the chunks).
    import zarr

    zarr.create_array(f"{path}/s0", shape=data.shape, chunks=chunks, dtype=data.dtype, overwrite=True)[:] = data


def bookkeeping(n_tasks: int, work: Path, workers: int, threads: int) -> dict:
    from bigdecon.io import open_image
    from bigdecon.passes.run import _source_stats
    from bigdecon.planner import Layout

    t = max(1, round(n_tasks / (SIDE // BLOCK[1]) ** 2))
    src, dst = str(work / f"in-{t}.ome.zarr"), str(work / f"out-{t}.ome.zarr")
    t0 = time.perf_counter()
    if not Path(src).exists():  # kept in --workdir between runs
        make_input(src, t)
    log(f"[{n_tasks}] input {t}x{SIDE}x{SIDE} in {BLOCK} chunks written in {time.perf_counter() - t0:.0f} s")
    chunks = {"t": BLOCK[0], "y": BLOCK[1], "x": BLOCK[2]}
    kw = dict(fwhm=3, chunks=chunks, overwrite=True)
    plan = bigdecon.plan(src, fwhm=3, chunks=chunks)
    n_pre = n_final = t  # one whole-plane task per plane (plane groups of a k block: 1 plane)
    n_sparse = plan["n_tasks"] - n_pre - n_final
    total = n_pre + n_sparse + n_final
    cluster = Cluster(work, workers, threads)
    out: dict = {"tasks": total, "step4_tasks": n_sparse, "input": [t, SIDE, SIDE], "load_start": os.getloadavg()}
    try:
        client = cluster.client()
        # Warm the workers (imports, the preload) with a small run of the same data.
        bigdecon.deconvolve(src, dst, fwhm=3, client=client, overwrite=True, timepoints="0:1")
        ref = Marks([])
        t0 = time.perf_counter()
        info = bigdecon.deconvolve(src, dst, fwhm=3, client=client, overwrite=True, progress=ref)
        out["reference"] = {"tasks": info["chunks"], "wall_s": time.perf_counter() - t0}
        log(f"[{n_tasks}] reference run, default blocks: {info['chunks']} tasks, {out['reference']['wall_s']:.1f} s")

        sched_pid = cluster.scheduler.pid
        out["idle_cpu_ms_per_s"] = idle_rates(client, sched_pid)
        log(f"[{n_tasks}] idle CPU (ms per s of wall): {out['idle_cpu_ms_per_s']}")
        client.run_on_scheduler(_watch_futures)
        sampler = Sampler({"scheduler": sched_pid, "driver": os.getpid()}, client)
        cpu0 = {"scheduler": cpu_seconds(sched_pid), "driver": cpu_seconds(os.getpid())}
        ev = Marks([n_pre, n_pre + n_sparse], stop_at=n_pre + n_sparse)
        sampler.start()
        t0 = time.perf_counter()
        try:
            bigdecon.deconvolve(src, dst, client=client, progress=ev, **kw)
            raise RuntimeError("the run was not interrupted")
        except Stop:
            pass
        t_int = time.perf_counter()
        sampler.finish()
        cpu = {k: (cpu_seconds(pid) - cpu0[k]) for k, pid in (("scheduler", sched_pid), ("driver", os.getpid()))}
        step4_s = ev.first(n_pre + n_sparse) - ev.first(n_pre)
        done_tasks = n_pre + n_sparse
        out["run"] = {
            "startup_s": ev.start - t0,
            "preprocess_s": ev.first(n_pre) - ev.start,
            "step4_s": step4_s,
            "step4_wall_ms_per_task": 1e3 * step4_s / n_sparse,
            "wall_to_interrupt_s": t_int - t0,
            "driver_cpu_ms_per_task": 1e3 * cpu["driver"] / done_tasks,
            "scheduler_cpu_ms_per_task": 1e3 * cpu["scheduler"] / done_tasks,
            "scheduler_rss_mib": sampler.peak["scheduler"] / 2**20,
            "scheduler_rss_start_mib": sampler.start_rss["scheduler"] / 2**20,
            "driver_rss_mib": sampler.peak["driver"] / 2**20,
            "driver_rss_start_mib": sampler.start_rss["driver"] / 2**20,
            "max_scheduler_tasks": sampler.max_tasks,
            # CPU that grows with the wall time, not with the tasks: the idle rates x the run's wall.
            "background_ms_per_task": sum(out["idle_cpu_ms_per_s"].values()) * (t_int - t0) / done_tasks,
        }
        log(f"[{n_tasks}] run: {json.dumps({k: round(v, 3) for k, v in out['run'].items()})}")
        out["batches"] = batch_summary(client.run_on_scheduler(_take_futures))
        log(f"[{n_tasks}] futures per pass (blocks per future): {out['batches']}")
        # Resume: everything but the final pass is recorded.
        ev = Marks([n_pre + n_sparse])
        t0 = time.perf_counter()
        info = bigdecon.deconvolve(src, dst, client=client, progress=ev, resume=True, **{**kw, "overwrite": False})
        t1 = time.perf_counter()
        out["resume"] = {
            "startup_s": ev.first(n_pre + n_sparse) - t0,
            "final_pass_s": ev.end - ev.first(n_pre + n_sparse),
            "finalize_s": t1 - ev.end,
            "resumed": info["resumed"],
        }
        log(f"[{n_tasks}] resume: {json.dumps({k: round(v, 3) for k, v in out['resume'].items()})}")
        # The statistics pass over the input's stored chunks, as a run computes it (on the cluster).
        data = open_image(src).data
        a, b, c = da_stats(data)
        graph = sum(len(x.__dask_graph__()) for x in (a, b, c))
        t0 = time.perf_counter()
        _source_stats(data, Layout(("t", "y", "x"), data.shape))
        out["stats"] = {
            "input_chunks": math.prod(-(-n // c) for n, c in zip(data.shape, BLOCK)),
            "dask_chunks": data.npartitions,
            "graph_tasks": graph,
            "seconds": time.perf_counter() - t0,
        }
        log(f"[{n_tasks}] statistics: {out['stats']}")
        client.close()
    finally:
        cluster.close()
        shutil.rmtree(dst, ignore_errors=True)
    out["memory_resume"] = memory_resume(n_sparse, src)
    out["load_end"] = os.getloadavg()
    shutil.rmtree(src, ignore_errors=True)
    return out


def da_stats(data):
    import dask.array as da

    return da.isfinite(data).all(), data.max(axis=(0, 1, 2)), data.sum(axis=(0, 1, 2), dtype=np.float64)


def memory_resume(n: int, src: str) -> dict:
    """The ledger of ``n`` finished step-4 blocks on ``memory://``: written and read back as a run does."""
    from bigdecon.passes import ledger as L
    from bigdecon.passes.scratch import work_root

    root = work_root(f"memory://bench-{n}/out.zarr")
    keys = [f"0-{i // 1024}-{i // 1024 + 1}.1-{(i % 1024) * 16}-{(i % 1024) * 16 + 16}" for i in range(n)]
    ledger = L.Ledger(root)
    t0 = time.perf_counter()
    if hasattr(L, "RecordBook"):  # batched records (after issue 14)
        book = L.RecordBook(ledger, "sparse")
        for k in keys:
            book.add(k, {"max": 1.0})
        book.close()
    else:  # one object per record
        for k in keys:
            ledger.record("sparse", k, {"max": 1.0})
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    done = L.Ledger(root).done("sparse")
    read_s = time.perf_counter() - t0
    assert len(done) == n, len(done)
    # The rest of a resume's start-up (open the input, plan) on the same input.
    t0 = time.perf_counter()
    bigdecon.plan(src, fwhm=3, chunks={"t": BLOCK[0], "y": BLOCK[1], "x": BLOCK[2]})
    plan_s = time.perf_counter() - t0
    ledger.remove()
    res = {"records": n, "write_s": write_s, "read_s": read_s, "plan_s": plan_s, "startup_s": read_s + plan_s}
    log(f"[{n}] memory:// ledger: {res}")
    return res


# --------------------------------------------------------------------------- pipeline


def _pipeline_input(src: str, shape: tuple[int, int, int], psf3d: bool) -> np.ndarray:
    """The run's input, written to ``src``; returns the array (uint16)."""
    from bigdecon.io import open_image

    if psf3d:
        from bigdecon.data import beads_volume

        raw, _ = beads_volume(shape, FWHM_3D, seed=0)
        data = np.clip(np.rint(raw * (2000 / max(float(raw.max()), 1e-6)) + 100), 0, 65535).astype(np.uint16)
        write_image(src, data, "zyx", chunks=(1, shape[1], shape[2]), overwrite=True)
        return data
    sys.path.insert(0, str(HERE))
    from bench_scaling import make_input as filaments

    filaments(src, shape=shape)
    return open_image(src).data.compute()


def _solved_voxels(src: str, fwhm: Any, sizing: dict) -> dict[str, Any]:
    """Voxels the passes transform (blocks grown by their halo) per voxel of the data, for the
    default blocks of a run with ``sizing`` (what ``run_sizing`` derives from the cluster)."""
    from bigdecon.io import open_image
    from bigdecon.passes.options import parse_run_options
    from bigdecon.passes.request import prepare_request

    request = prepare_request(open_image(src), *parse_run_options(dict(fwhm=fwhm, **sizing)))
    plan, lay = request.plan, request.layout
    n = math.prod(lay.shape)
    axes = [a for a in (lay.k, lay.y, lay.x) if a is not None]

    def volume(region):
        return math.prod(region[a][1] - region[a][0] for a in axes)

    out: dict[str, Any] = {"step4": sum(volume(plan.halo(r)) for r in plan.sparse_tasks()) / n}
    if plan.deconv_block is not None:
        out["step5"] = sum(volume(plan.deconv_halo(r)) for r in plan.final_tasks()) / n
    out["sparse_block"] = dict(plan.sparse_block)
    out["deconv_block"] = dict(plan.deconv_block or {})
    return out


# What the CLI prints when each phase ends (start of its stdout lines): phase name.
CLI_MARKS = (
    ("bigdecon ", "Python start, imports, options (+ a z stack's parameter note)"),
    ("Input ", "input checks + plan"),
    ("Dask ", "local cluster start"),
    ("Plan: ", "sizing + plan on the cluster"),
    ("Finished in", "run (statistics, passes, finalize + pyramid)"),
)


def _run_cli(cmd: list[str]) -> tuple[float, dict[str, float]]:
    """Run the CLI; its wall time and the time between the lines that end each phase."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    stamps: list[tuple[float, str]] = []
    for line in proc.stdout:
        stamps.append((time.perf_counter(), line))
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed")
    wall = time.perf_counter() - t0
    phases: dict[str, float] = {}
    last = t0
    for mark, name in CLI_MARKS:
        hit = next((t for t, line in stamps if line.startswith(mark) and t >= last), None)
        if hit is None:
            continue
        phases[name] = hit - last
        last = hit
    phases["summary + cluster close + exit"] = wall - (last - t0)
    return wall, phases


def pipeline(work: Path, psf3d: bool = False, shape: tuple[int, int, int] = (64, 512, 512)) -> dict:
    from bigdecon.cluster import close, make_client

    fwhm: Any = FWHM_3D if psf3d else 3
    src = str(work / ("pipe3d-in.ome.zarr" if psf3d else "pipe-in.ome.zarr"))
    raw = _pipeline_input(src, shape, psf3d)
    log("pipeline: warm-up (Numba caches) ...")
    bigdecon.sparse_deconvolve(raw[:8, :64, :64], fwhm=fwhm)
    res: dict = {"shape": list(shape), "fwhm": fwhm, "load_before": os.getloadavg()}
    t0 = time.perf_counter()
    bigdecon.sparse_deconvolve(raw, fwhm=fwhm)
    res["in_memory_s"] = time.perf_counter() - t0
    log(f"pipeline: in memory {res['in_memory_s']:.1f} s")

    exe = shutil.which("bigdecon")
    cmd = [exe] if exe else [sys.executable, "-c", "import sys; from bigdecon.cli import main; sys.exit(main())"]
    dst = str(work / "pipe-cli.ome.zarr")
    fwhm_arg = ",".join(map(str, fwhm)) if psf3d else str(fwhm)
    res["cli_s"], res["cli_phases_s"] = _run_cli(cmd + ["run", src, dst, "--fwhm", fwhm_arg])
    log(f"pipeline: bigdecon run {res['cli_s']:.1f} s: {res['cli_phases_s']}")
    shutil.rmtree(dst, ignore_errors=True)

    dst = str(work / "pipe-api.ome.zarr")
    t0 = time.perf_counter()
    client, cluster = make_client()
    t_cluster = time.perf_counter() - t0
    try:
        from bigdecon.passes.run import run_sizing

        res["solved"] = _solved_voxels(src, fwhm, run_sizing(client, dst))
        log(f"pipeline: voxels solved per data voxel (default blocks): {res['solved']}")
        ev = Events()
        t0 = time.perf_counter()
        info = bigdecon.deconvolve(src, dst, fwhm=fwhm, client=client, progress=ev)
        t1 = time.perf_counter()
    finally:
        close(client, cluster)
    # Phase boundaries: a pass opens with a progress call that does not advance the count.
    opens = [i for i, (_, d, _) in enumerate(ev.events) if i == 0 or d == ev.events[i - 1][1]]
    names = ["preprocess", "sparse", "final"][-len(opens) :]
    phases = {"cluster start": t_cluster, "statistics + set-up": ev.events[0][0] - t0}
    for j, (name, i) in enumerate(zip(names, opens)):
        end = ev.events[opens[j + 1]][0] if j + 1 < len(opens) else ev.events[-1][0]
        phases[f"pass {name} ({info['chunks'] and _count(ev, i, opens, j)} tasks)"] = end - ev.events[i][0]
    phases["finalize + pyramid"] = t1 - ev.events[-1][0]
    res["api_s"] = t1 - t0 + t_cluster
    res["api_phases_s"] = phases
    res["tasks"] = info["chunks"]
    res["load_after"] = os.getloadavg()
    log(f"pipeline: API {res['api_s']:.1f} s: {phases}")
    shutil.rmtree(dst, ignore_errors=True)
    return res


def _count(ev: Events, i: int, opens: list[int], j: int) -> int:
    end = opens[j + 1] if j + 1 < len(opens) else len(ev.events)
    return ev.events[end - 1][1] - ev.events[i][1]


# --------------------------------------------------------------------------- report


def report(rows: list[dict], pipes: list[dict]) -> str:
    L = []
    if rows:
        L += [
            "Bookkeeping (no-op solvers in the workers; real scheduler and driver):",
            "",
            "| tasks | step-4 wall / task | driver CPU / task | scheduler CPU / task "
            "| of which time-proportional (idle rates x wall) | scheduler RSS peak (start) "
            "| driver RSS peak (start) | most tasks on the scheduler | resume start-up | memory:// ledger read "
            "| statistics: chunks -> graph, time | step-4 futures (blocks per future: first, median, max) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            u, s, m = r["run"], r["stats"], r["memory_resume"]
            L.append(
                f"| {r['tasks']} | {u['step4_wall_ms_per_task']:.2f} ms | {u['driver_cpu_ms_per_task']:.2f} ms "
                f"| {u['scheduler_cpu_ms_per_task']:.2f} ms | {u.get('background_ms_per_task', float('nan')):.2f} ms "
                f"| {u['scheduler_rss_mib']:.0f} ({u['scheduler_rss_start_mib']:.0f}) MiB "
                f"| {u['driver_rss_mib']:.0f} ({u['driver_rss_start_mib']:.0f}) MiB | {u['max_scheduler_tasks']} "
                f"| {r['resume']['startup_s']:.1f} s | {m['read_s']:.2f} s (+ plan {m['plan_s']:.2f} s) "
                f"| {s['input_chunks']} -> {s['graph_tasks']} tasks, {s['seconds']:.1f} s "
                f"| {_batches(r.get('batches', {}).get('sparse'))} |"
            )
        L += [
            "",
            "Load average (1, 5, 15 min) at the start and end of each row: "
            + "; ".join(f"{r['tasks']}: {_load(r['load_start'])} -> {_load(r['load_end'])}" for r in rows),
        ]
        big = max(rows, key=lambda r: r["tasks"])
        f = 1e6 / big["tasks"]
        u = big["run"]
        cpu = u["driver_cpu_ms_per_task"] + u["scheduler_cpu_ms_per_task"]
        L += [
            "",
            f"Projected to 1e6 tasks (linear from the {big['tasks']}-task row): driver + scheduler CPU "
            f"{cpu * 1e6 / 1e3 / 60:.1f} min ({cpu:.2f} ms/task, "
            f"{cpu - u.get('background_ms_per_task', 0.0):.2f} ms net of the time-proportional share); step-4 wall at this machine's rate "
            f"{u['step4_wall_ms_per_task'] * 1e6 / 1e3 / 60:.1f} min; scheduler RSS "
            f"{u['scheduler_rss_start_mib'] + (u['scheduler_rss_mib'] - u['scheduler_rss_start_mib']) * (f if u['max_scheduler_tasks'] > 1000 else 1):.0f} MiB; "
            f"driver RSS {u['driver_rss_start_mib'] + (u['driver_rss_mib'] - u['driver_rss_start_mib']) * f:.0f} MiB "
            "(pessimistic: all growth taken as per task); "
            f"resume start-up {big['resume']['startup_s'] * f:.0f} s local, "
            f"{big['memory_resume']['startup_s'] * f:.0f} s memory://; statistics over 1e6 stored chunks "
            f"{big['stats']['seconds'] * f:.0f} s, graph ~{big['stats']['graph_tasks'] * f:.0f} tasks.",
        ]
    for pipe in pipes:
        L += ["", *pipeline_report(pipe)]
    return "\n".join(L)


def pipeline_report(pipe: dict) -> list[str]:
    """The ratio to the in-memory call, and where the time goes (CLI lines, API phases)."""
    m = pipe["in_memory_s"]
    fwhm = pipe["fwhm"]
    psf = f"3-D PSF FWHM {','.join(map(str, fwhm))} px" if isinstance(fwhm, (list, tuple)) else f"FWHM {fwhm} px"
    solved = pipe["solved"]
    L = [
        f"Pipeline overhead, {'x'.join(map(str, pipe['shape']))} uint16, defaults ({psf}), {pipe['tasks']} tasks; "
        f"load average {pipe['load_before'][0]:.1f} before, {pipe['load_after'][0]:.1f} after:",
        "",
        f"**bigdecon run / in memory: {pipe['cli_s'] / m:.2f}x** ({pipe['cli_s']:.1f} s vs {m:.1f} s). "
        f"Voxels solved per data voxel with the default blocks: step 4 {solved['step4']:.3f}x "
        f"(blocks {solved['sparse_block']})"
        + (f", step 5 {solved['step5']:.3f}x (blocks {solved['deconv_block']})" if "step5" in solved else "")
        + ".",
        "",
        "| what | seconds | vs in memory |",
        "|---|---|---|",
        f"| in-memory sparse_deconvolve | {m:.1f} | 1.00x |",
        f"| bigdecon run (CLI subprocess, default arguments) | {pipe['cli_s']:.1f} | {pipe['cli_s'] / m:.2f}x |",
    ]
    for k, v in pipe["cli_phases_s"].items():
        L.append(f"| - {k} | {v:.1f} | {v / m:.2f}x |")
    L.append(f"| bigdecon.deconvolve on a CLI-like local cluster | {pipe['api_s']:.1f} | {pipe['api_s'] / m:.2f}x |")
    for k, v in pipe["api_phases_s"].items():
        L.append(f"| - {k} | {v:.1f} | {v / m:.2f}x |")
    return L


def _load(avg) -> str:
    return "/".join(f"{x:.1f}" for x in avg)


def _batches(b: dict | None) -> str:
    if not b:
        return "-"
    return f"{b['futures']} for {b['blocks']} blocks ({b['first']}, {b['median']:.0f}, {b['max']})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=float, nargs="*", default=[], help="task counts of part 1 (e.g. 1e4 1e5)")
    ap.add_argument("--workers", type=int, default=2, help="dask worker processes (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="threads per worker (default 2)")
    ap.add_argument("--pipeline", action="store_true", help="run part 2 (pipeline overhead), 2-D PSF")
    ap.add_argument("--psf3d", action="store_true", help="run part 2 on a zyx volume with a 3-D PSF (FWHM 6,3,3)")
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 512, 512], help="part 2's input (default 64 512 512)")
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--workdir", help="where to put the files (default: a temporary folder)")
    args = ap.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bigdecon-books-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [bookkeeping(int(n), work, args.workers, args.threads) for n in args.tasks]
    pipes = [pipeline(work, psf3d=False, shape=tuple(args.shape))] if args.pipeline else []
    if args.psf3d:
        pipes.append(pipeline(work, psf3d=True, shape=tuple(args.shape)))
    text = report(rows, pipes)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "pipeline": pipes}, indent=1, default=str))
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
