"""Out-of-core run: peak worker memory depends on the chunk size, not on the data size.

    python benchmarks/bench_memory.py            # ~8 min on 2 cores
    python benchmarks/bench_memory.py --small    # a quicker, smaller run (~1 min)
    python benchmarks/bench_memory.py --psf3d    # zyx volumes, 3-D PSF, 3x the limit: ~15 min on a loaded VM
    python benchmarks/bench_memory.py --psf3d --small    # the same code path on small volumes (a check)

Writes two generated time-lapses as OME-Zarr, the second 4x longer than the
first (so 4x more chunks of the same size), the larger 2.6x bigger than one
worker's memory limit (1.3x both together), and runs ``bigdecon.deconvolve`` on each
with two single-threaded worker processes, every pass included (background
mode 1, so the whole-plane pass and its intermediate run too). Prints each
case's peak worker RSS (sampled every 20 ms), the same minus the idle worker's
RSS (the working set; the interpreter, NumPy, SciPy and Numba take a fixed
~200 MiB), throughput, and the ratio of the peaks (target <= 1.3). The
iteration counts are cut (3 + 3) to keep the run short: a task's working set
does not depend on them, only its duration does.

``--psf3d``: zyx volumes instead, with a 3-D Gaussian PSF (FWHM z 3, y/x 1.5 px), so
step 5 runs on (z, y, x) blocks with a halo in z, y and x. One single-threaded
worker limited to 400 MiB by default; the larger volume (4x deeper in z) is
>= 3x the summed memory limit of the workers (512-px planes: 304 and 1216 of
them). Both runs get the same blocks through ``task_memory`` (56 MiB, a
keyword of ``bigdecon.deconvolve``; the planner chooses the blocks), and the bench checks that the planner chose the same step-4 and step-5 blocks
for both before it runs them. 1 sparse + 2 Richardson-Lucy iterations: a
task's working set does not depend on the iteration count (its arrays are
allocated once per block), only its duration and, for step 5, its halo.
Background mode 0 (no whole-plane pass: the 2-D run measures that one; it
would double the time): the statistics pass, step 4 and step 5 on blocks.
Peak RSS there is also the workers' own high-water mark (``VmHWM``, reset per
case), so a peak between two samples is not missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time

import numpy as np


def write_timelapse(path: str, shape: tuple[int, int, int], chunk_t: int, axes: str = "tyx") -> None:
    """A drifting texture of filament-like ridges, written plane group by plane group."""
    from scipy.ndimage import gaussian_filter

    from bigdecon.io import OmeZarrWriter, write_block

    t, h, w = shape
    rng = np.random.default_rng(0)
    tile = np.zeros((256, 256), np.float32)
    for _ in range(40):
        y0, amp, period = rng.uniform(0, 256), rng.uniform(3, 12), rng.uniform(40, 120)
        xs = np.arange(256)
        ys = (y0 + amp * np.sin(2 * np.pi * xs / period)).astype(int) % 256
        tile[ys, xs] += 1.0
    tile = gaussian_filter(tile, 1.3, mode="wrap") * 800 + 50
    big = np.tile(tile, (h // 256 + 1, w // 256 + 1))
    writer = OmeZarrWriter(path, shape=shape, axes=axes, chunks=(chunk_t, 256, 256), dtype="float32")
    for t0 in range(0, t, chunk_t):
        n = min(chunk_t, t - t0)
        block = np.stack([np.roll(big, k + t0, axis=1)[:h, :w] for k in range(n)])
        block = block + rng.normal(0, 5, block.shape).astype(np.float32)
        write_block(path, (slice(t0, t0 + n), slice(None), slice(None)), block.astype(np.float32))
    writer.finalize(pyramid=False)


class PeakRSS:
    """Sample the resident memory of this process's worker processes in a thread; keep the maximum.

    Follows the processes, not the pids a run started with: a worker the nanny
    restarts (memory over 95% of its limit) is replaced by a new process, which
    is sampled too, and counted in ``restarts``. Each sample also reads the
    process's own high-water mark (``VmHWM``, reset on entry where Linux
    allows it), so a peak shorter than the 20 ms between samples counts too.
    """

    def __init__(self, workers: int):
        import psutil

        self.me = psutil.Process()
        self.workers = workers
        self.peak = 0
        self.hwm = 0  # the largest VmHWM read (0 where /proc has none)
        self.use_hwm = False
        self.seen: set[int] = set()
        self._kind: dict[int, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _is_worker(self, proc) -> bool:
        if proc.pid not in self._kind:  # a spawned worker, not the resource tracker
            self._kind[proc.pid] = "spawn_main" in " ".join(proc.cmdline())
        return self._kind[proc.pid]

    def _workers(self):
        import psutil

        for proc in self.me.children(recursive=True):
            try:
                if self._is_worker(proc):
                    yield proc
            except psutil.Error:  # gone between the listing and the read
                continue

    def _sample(self) -> None:
        import psutil

        for proc in self._workers():
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            hwm = _vm_hwm(proc.pid) if self.use_hwm else 0
            self.hwm = max(self.hwm, hwm)
            self.peak = max(self.peak, rss, hwm)
            self.seen.add(proc.pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.02)

    @property
    def restarts(self) -> int:
        return max(0, len(self.seen) - self.workers)

    def __enter__(self):
        # Without a reset, VmHWM would carry the last case's peak into this one: then only RSS counts.
        self.use_hwm = all([_reset_hwm(proc.pid) for proc in self._workers()])
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()


def _vm_hwm(pid: int) -> int:
    """A process's peak resident memory since start (or since its last reset), 0 where unknown."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # gone, or no /proc
        return 0
    return 0


def _reset_hwm(pid: int) -> bool:
    """Reset a process's VmHWM to its current RSS (Linux: ``5`` into ``clear_refs``); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def worker_rss(client) -> int:
    """The largest resident memory among the (idle) workers."""
    import psutil

    client.run(lambda: __import__("gc").collect())
    return max(psutil.Process(pid).memory_info().rss for pid in client.run(os.getpid).values())


PARAMS_2D = dict(fwhm=3, sparse_iters=3, deconv_iters=3, background=1)
PARAMS_3D = dict(fwhm=(3, 1.5, 1.5), sparse_iters=1, deconv_iters=2, background=0)


def run_case(
    client, src: str, dst: str, chunks: dict | None, params: dict, task_memory: int
) -> tuple[float, float, int, int, int]:
    """One run: (peak worker RSS, seconds, voxels, worker restarts, largest VmHWM)."""
    import bigdecon

    client.run(lambda: __import__("gc").collect())
    sampler = PeakRSS(len(client.scheduler_info()["workers"]))
    with sampler:
        t = time.perf_counter()
        summary = bigdecon.deconvolve(
            src, dst, **params, chunks=chunks, client=client, overwrite=True, task_memory=task_memory
        )
        seconds = time.perf_counter() - t
    return sampler.peak, seconds, summary["voxels"], sampler.restarts, sampler.hwm


def describe_plan(path: str, chunks: dict | None, params: dict, task_memory: int, threads: int) -> dict:
    """The blocks ``bigdecon.deconvolve`` will use, as ``bigdecon.plan`` reports them."""
    import bigdecon

    info = bigdecon.plan(path, **params, chunks=chunks, task_memory=task_memory, min_tasks=threads)
    keys = ("sparse_block", "depth", "planes_per_task", "deconv_block", "deconv_depth", "deconv_tasks", "chunks")
    return {k: info.get(k) for k in keys} | {"n_tasks": info["n_tasks"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="smaller data (quicker)")
    ap.add_argument("--memory-limit", default="400MiB", help="each worker's memory limit")
    ap.add_argument("--workers", type=int, default=None, help="single-threaded worker processes (2; 1 with --psf3d)")
    ap.add_argument(
        "--frames", type=int, default=None, help="frames (planes) of the smaller data set (the larger has 4x)"
    )
    ap.add_argument("--size", type=int, default=None, help="y and x size (1024; 512 with --psf3d)")
    ap.add_argument(
        "--task-memory", default=None, help="task memory of the runs (64MiB; 56MiB with --psf3d, 12MiB with both)"
    )
    ap.add_argument("--psf3d", action="store_true", help="zyx volumes and a 3-D PSF (blockwise 3-D step 5)")
    args = ap.parse_args()
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    workers = args.workers or (1 if args.psf3d else 2)
    limit = parse_bytes(args.memory_limit)
    if args.psf3d:
        axes, params, chunks = "zyx", PARAMS_3D, None  # the planner's blocks for this task memory
        task_memory = parse_bytes(args.task_memory or ("12MiB" if args.small else "56MiB"))
        h = w = args.size or (256 if args.small else 512)
        # The larger volume >= 3x the summed limit, in whole 16-plane write chunks (--small: a quick check).
        t_small = args.frames or (112 if args.small else 16 * -(-3 * limit * workers // (4 * 4 * h * w * 16)))
    else:
        axes, params = "tyx", PARAMS_2D
        task_memory = parse_bytes(args.task_memory or "64MiB")  # one plane per whole-plane task
        h = w = args.size or (512 if args.small else 1024)
        t_small = args.frames or (16 if args.small else 64)
        chunks = {"t": 8, "y": 128, "x": 128}
    root = tempfile.mkdtemp(prefix="bigdecon-bench-")
    try:
        cases = []
        plans = []
        for factor in (1, 4):
            shape = (t_small * factor, h, w)
            path = os.path.join(root, f"in{factor}.zarr")
            write_timelapse(path, shape, 16, axes)
            cases.append((factor, shape, path))
            plans.append(describe_plan(path, chunks, params, task_memory, workers))
            print(f"plan {shape}: {plans[-1]}", flush=True)
        same = ("sparse_block", "depth", "planes_per_task", "deconv_block", "deconv_depth")
        if any(plans[0][k] != plans[1][k] for k in same):
            raise SystemExit("the two data sets got different blocks: choose --frames/--size/--task-memory again")
        warm = os.path.join(root, "warm-in.zarr")
        write_timelapse(warm, (16, h, w), 16, axes)
        with (
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=limit,
                dashboard_address=":0",
                env={"BIGDECON_THREADS": "1"},
            ) as cluster,
            Client(cluster) as client,
        ):
            # Warm the workers once (imports, JIT) so both cases start from the same state.
            run_case(client, warm, os.path.join(root, "warm.zarr"), chunks, params, task_memory)
            idle = worker_rss(client)
            results = []
            for factor, shape, path in cases:
                out = os.path.join(root, f"out{factor}.zarr")
                load0 = os.getloadavg()[0]
                peak, seconds, voxels, restarts, hwm = run_case(client, path, out, chunks, params, task_memory)
                load = (load0, os.getloadavg()[0])
                results.append((factor, shape, peak, seconds, voxels, restarts, hwm, load))
                # Each case as it ends: a long run that is stopped still leaves its first figures.
                print(
                    f"done {shape}: peak RSS {peak / 2**20:.0f} MiB (VmHWM {hwm / 2**20:.0f}, idle "
                    f"{idle / 2**20:.0f}), {seconds:.1f} s, {restarts} worker restarts, "
                    f"load average {load[0]:.1f} -> {load[1]:.1f}",
                    flush=True,
                )
        print(
            f"{workers} worker(s) x 1 thread, each limited to {limit / 2**20:.0f} MiB; {axes}, {params}; "
            f"task memory {task_memory / 2**20:.0f} MiB; idle worker RSS {idle / 2**20:.0f} MiB"
        )
        print(
            f"{'data':>22} {'size':>9} {'x limits':>9} {'peak RSS':>10} {'working set':>12} {'time':>8} {'Mvox/s':>8}"
            f" {'restarts':>9} {'load':>10}"
        )
        for _factor, shape, peak, seconds, voxels, restarts, _hwm, load in results:
            size = voxels * 4
            print(
                f"{str(shape):>22} {size / 2**20:7.0f}Mi {size / (limit * workers):9.2f} {peak / 2**20:8.0f}Mi "
                f"{(peak - idle) / 2**20:10.0f}Mi {seconds:7.1f}s {voxels / seconds / 1e6:8.2f} {restarts:9d}"
                f" {load[0]:4.1f}-{load[1]:4.1f}"
            )
        ratio = results[1][2] / results[0][2]
        ws_ratio = (results[1][2] - idle) / max(results[0][2] - idle, 1)
        clean = "" if not any(r[5] for r in results) else " -- NOT a clean pass: workers restarted"
        print(f"4x the data, same blocks: peak RSS x{ratio:.2f}, working set x{ws_ratio:.2f} (target <= 1.30){clean}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
