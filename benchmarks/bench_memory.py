"""Out-of-core run: peak worker memory depends on the chunk size, not on the data size.

    python benchmarks/bench_memory.py            # ~8 min on 2 cores
    python benchmarks/bench_memory.py --small    # a quicker, smaller run (~1 min)
    python benchmarks/bench_memory.py --psf3d [--small]   # zyx volumes, 3-D PSF: step 5 on (z, y, x) blocks

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

``--psf3d``: zyx volumes instead (the larger 4x deeper in z, and at full size,
600x1024x1024 float32, 3.0x the summed memory limit of the two 400 MiB workers) with a 3-D Gaussian PSF (FWHM z 6,
y/x 3 px), so step 5 runs on (z, y, x) blocks with its halo; default
``deconv_iters`` (7) there, since the halo depends on it. ``--psf3d --workers 1
--frames 75`` is the same proof (300x1024x1024, 3.0x one worker's limit) with a
quarter of the voxels: ~1 h on one core of a loaded 2-core VM.
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
    is sampled too, and counted in ``restarts``.
    """

    def __init__(self, workers: int):
        import psutil

        self.me = psutil.Process()
        self.workers = workers
        self.peak = 0
        self.seen: set[int] = set()
        self._kind: dict[int, bool] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _is_worker(self, proc) -> bool:
        if proc.pid not in self._kind:  # a spawned worker, not the resource tracker
            self._kind[proc.pid] = "spawn_main" in " ".join(proc.cmdline())
        return self._kind[proc.pid]

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for proc in self.me.children(recursive=True):
                try:
                    if self._is_worker(proc):
                        self.peak = max(self.peak, proc.memory_info().rss)
                        self.seen.add(proc.pid)
                except psutil.Error:  # gone between the listing and the read
                    continue
            time.sleep(0.02)

    @property
    def restarts(self) -> int:
        return max(0, len(self.seen) - self.workers)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def worker_rss(client) -> int:
    """The largest resident memory among the (idle) workers."""
    import psutil

    client.run(lambda: __import__("gc").collect())
    return max(psutil.Process(pid).memory_info().rss for pid in client.run(os.getpid).values())


PARAMS_2D = dict(fwhm=3, sparse_iters=3, deconv_iters=3, background=1)
PARAMS_3D = dict(fwhm=(6, 3, 3), sparse_iters=3, background=1)


def run_case(client, src: str, dst: str, chunks: dict, params: dict | None = None) -> tuple[float, float, int, int]:
    """One run: (peak worker RSS, seconds, voxels, worker restarts)."""
    import bigdecon

    client.run(lambda: __import__("gc").collect())
    sampler = PeakRSS(len(client.scheduler_info()["workers"]))
    with sampler:
        t = time.perf_counter()
        summary = bigdecon.deconvolve(
            src,
            dst,
            **(params or PARAMS_2D),
            chunks=chunks,
            client=client,
            overwrite=True,
            task_memory=64 * 2**20,  # one plane per whole-plane task; the step-5 blocks fit it
        )
        seconds = time.perf_counter() - t
    return sampler.peak, seconds, summary["voxels"], sampler.restarts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="smaller data (quicker)")
    ap.add_argument("--memory-limit", default="400MiB", help="each worker's memory limit")
    ap.add_argument("--workers", type=int, default=2, help="single-threaded worker processes")
    ap.add_argument("--frames", type=int, default=None, help="frames of the smaller data set (the larger has 4x)")
    ap.add_argument("--psf3d", action="store_true", help="zyx volumes and a 3-D PSF (blockwise 3-D step 5)")
    args = ap.parse_args()
    from dask.utils import parse_bytes
    from distributed import Client, LocalCluster

    h = w = 512 if args.small else 1024
    t_small = args.frames or (16 if args.small else 64)
    axes, params = ("zyx", PARAMS_3D) if args.psf3d else ("tyx", PARAMS_2D)
    if args.psf3d and not args.frames:
        t_small = 16 if args.small else 150  # 4 x 150 x 1024 x 1024 float32: 3.0x two 400 MiB workers
    chunks = {axes[0]: 8, "y": 128, "x": 128}
    limit = parse_bytes(args.memory_limit)
    root = tempfile.mkdtemp(prefix="bigdecon-bench-")
    try:
        cases = []
        for factor in (1, 4):
            shape = (t_small * factor, h, w)
            path = os.path.join(root, f"in{factor}.zarr")
            write_timelapse(path, shape, 16, axes)
            cases.append((factor, shape, path))
        warm = os.path.join(root, "warm-in.zarr")
        write_timelapse(warm, (16, h, w), 16, axes)
        with (
            LocalCluster(
                n_workers=args.workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=limit,
                dashboard_address=":0",
                env={"BIGDECON_THREADS": "1"},
            ) as cluster,
            Client(cluster) as client,
        ):
            # Warm the workers once (imports, JIT) so both cases start from the same state.
            run_case(client, warm, os.path.join(root, "warm.zarr"), chunks, params)
            idle = worker_rss(client)
            results = []
            for factor, shape, path in cases:
                out = os.path.join(root, f"out{factor}.zarr")
                peak, seconds, voxels, restarts = run_case(client, path, out, chunks, params)
                results.append((factor, shape, peak, seconds, voxels, restarts))
                # Each case as it ends: a long run that is stopped still leaves its first figures.
                print(
                    f"done {shape}: peak RSS {peak / 2**20:.0f} MiB (idle {idle / 2**20:.0f}), {seconds:.1f} s, "
                    f"{restarts} worker restarts",
                    flush=True,
                )
        print(
            f"{args.workers} workers x 1 thread, each limited to {limit / 2**20:.0f} MiB; {axes}, {params}; "
            f"chunks {chunks}; idle worker RSS {idle / 2**20:.0f} MiB"
        )
        print(
            f"{'data':>22} {'size':>9} {'x limits':>9} {'peak RSS':>10} {'working set':>12} {'time':>8} {'Mvox/s':>8}"
            f" {'restarts':>9}"
        )
        for _factor, shape, peak, seconds, voxels, restarts in results:
            size = voxels * 4
            print(
                f"{str(shape):>22} {size / 2**20:7.0f}Mi {size / (limit * args.workers):9.1f} {peak / 2**20:8.0f}Mi "
                f"{(peak - idle) / 2**20:10.0f}Mi {seconds:7.1f}s {voxels / seconds / 1e6:8.2f} {restarts:9d}"
            )
        ratio = results[1][2] / results[0][2]
        ws_ratio = (results[1][2] - idle) / max(results[0][2] - idle, 1)
        print(f"4x the chunks: peak RSS x{ratio:.2f}, working set x{ws_ratio:.2f} (target <= 1.30)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
