"""Throughput of the out-of-core ``bigdecon.deconvolve`` (OME-Zarr in, OME-Zarr out).

    python benchmarks/bench_scaling.py              # about 2-4 minutes on 2 cores
    python benchmarks/bench_scaling.py --json out.json

Writes a (t, y, x) = (16, 256, 256) uint16 drifting-filament time-lapse as
OME-Zarr (``bigdecon.io.OmeZarrWriter`` + ``write_block`` + ``finalize``), then runs
``bigdecon.deconvolve`` with the default parameters (FWHM 3 px, background 1,
100 split-Bregman iterations, 7 RL iterations):

1. vs chunk size (step-4 blocks of 8 frames x 64/128/256 px), in this process
   (no cluster: blocks one after the other, each solver call threaded);
2. vs workers: ``distributed.LocalCluster`` with 1 and 2 single-threaded worker
   processes (strong scaling on this machine), 128 px blocks;
3. a projection to N workers from the per-task cost measured with one worker.

Projection model (stated, not measured): each pass (preprocess, sparse,
final) is a set of independent tasks; with N single-threaded workers on N
cores a pass takes ``ceil(tasks / N)`` times the measured mean task time; the
serial part (global statistics, output pyramid and metadata, scheduling
between passes) is the measured remainder of the 1-worker run and does not
shrink. It ignores storage bandwidth and scheduler limits, which a shared
file system or object store will impose well before thousands of workers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bigdecon
from bigdecon.io import OmeZarrWriter, write_block

SHAPE = (16, 256, 256)
FWHM = 3.0


def make_input(path: str, shape=SHAPE, seed: int = 0) -> None:
    """Drifting curved filaments blurred by a Gaussian (FWHM 3 px), Poisson noise, uint16 OME-Zarr."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    t, h, w = shape
    data = np.zeros(shape, np.float32)
    xs = np.arange(w)
    for _ in range(24):
        y0, amp, period, phase = rng.uniform(0, h), rng.uniform(3, 20), rng.uniform(40, 200), rng.uniform(0, 6.3)
        bright = rng.uniform(0.5, 1.0)
        for k in range(t):
            ys = np.round(y0 + amp * np.sin(2 * np.pi * xs / period + phase + 0.05 * k) + 0.3 * k).astype(int)
            ok = (ys >= 0) & (ys < h)
            data[k, ys[ok], xs[ok]] = np.maximum(data[k, ys[ok], xs[ok]], bright)
    sigma = FWHM / (2 * math.sqrt(2 * math.log(2)))
    data = ndimage.gaussian_filter(data, (0, sigma, sigma))
    data = data / data.max() * 2000 + 100  # photons + a background
    data = rng.poisson(data).astype(np.uint16)
    writer = OmeZarrWriter(
        path,
        shape=shape,
        axes="tyx",
        chunks=(1, h, w),
        dtype="uint16",
        scale={"t": 1.0, "y": 0.065, "x": 0.065},
        units={"y": "micrometer", "x": "micrometer"},
        overwrite=True,
    )
    for k in range(t):
        write_block(path, (slice(k, k + 1), slice(0, h), slice(0, w)), data[k : k + 1])
    writer.finalize()


class Recorder:
    """``progress`` callback that keeps the time of every completion."""

    def __init__(self):
        self.events = []

    def __call__(self, done: int, total: int) -> None:
        self.events.append((time.perf_counter(), done, total))


def run(src: str, dst: str, chunks: dict, client=None) -> dict:
    rec = Recorder()
    t0 = time.perf_counter()
    res = bigdecon.deconvolve(src, dst, fwhm=FWHM, chunks=chunks, client=client, overwrite=True, progress=rec)
    wall = time.perf_counter() - t0
    plan = bigdecon.plan(src, fwhm=FWHM, chunks=chunks)
    return {
        "wall_s": wall,
        "voxels": res["voxels"],
        "tasks": res["chunks"],
        "events": rec.events,
        "t0": t0,
        "plan": plan,
    }


def stage_costs(r: dict) -> dict:
    """Per-pass task counts and mean task times from a run whose tasks ran one at a time."""
    plan = r["plan"]
    lay_shape = plan["shape"]
    sb = plan["sparse_block"]
    n_sparse = math.ceil(lay_shape[0] / sb["k"]) * math.ceil(lay_shape[1] / sb["y"]) * math.ceil(lay_shape[2] / sb["x"])
    n_plane = (r["tasks"] - n_sparse) // 2
    # completion times, in order; a stage's first task starts at the stage's opening call
    ev = r["events"]
    times = {}
    stages = [("preprocess", n_plane), ("sparse", n_sparse), ("final", n_plane)]
    idx = 0
    prev_done = 0
    durations = {name: [] for name, _ in stages}
    # Walk the events: a call with an unchanged count opens a stage.
    si, left = 0, stages[0][1]
    last_t = ev[0][0] if ev else r["t0"]
    for t, done, _total in ev:
        if done == prev_done:
            last_t = t
            continue
        durations[stages[si][0]].append(t - last_t)
        last_t = t
        prev_done = done
        left -= 1
        if left == 0 and si + 1 < len(stages):
            si += 1
            left = stages[si][1]
    del idx, times
    tasks_total = sum(sum(v) for v in durations.values())
    return {
        "n": {name: n for name, n in stages},
        "mean_s": {name: (float(np.mean(v)) if v else 0.0) for name, v in durations.items()},
        "serial_s": r["wall_s"] - tasks_total,
    }


def project(costs: dict, workers: int) -> float:
    t = costs["serial_s"]
    for name, n in costs["n"].items():
        t += math.ceil(n / workers) * costs["mean_s"][name]
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the numbers here")
    ap.add_argument("--workdir", help="where to put the OME-Zarr files (default: a temporary folder)")
    args = ap.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bigdecon-scaling-"))
    work.mkdir(parents=True, exist_ok=True)
    src, dst = str(work / "in.ome.zarr"), str(work / "out.ome.zarr")
    t_start = time.perf_counter()
    make_input(src)
    nvox = int(np.prod(SHAPE))
    # warm up (Numba compile, imports) on a small run
    bigdecon.deconvolve(src, dst, fwhm=FWHM, chunks={"t": 8, "y": 256, "x": 256}, overwrite=True, timepoints="0:4")
    rows = []
    log("chunk size, in process ...")
    for size in (64, 128, 256):
        chunks = {"t": 8, "y": size, "x": size}
        r = run(src, dst, chunks)
        rows.append(
            {
                "setting": f"in process, blocks 8x{size}x{size}",
                "chunks": chunks,
                "workers": "none (2 threads)",
                "wall_s": r["wall_s"],
                "tasks": r["tasks"],
                "mvox_s": nvox / r["wall_s"] / 1e6,
                "depth": r["plan"]["depth"],
            }
        )
        log(f"  {rows[-1]['setting']}: {r['wall_s']:.1f} s, {r['tasks']} tasks")
    from distributed import Client, LocalCluster

    costs = None
    for n in (1, 2):
        chunks = {"t": 8, "y": 128, "x": 128}
        with (
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            client.run(lambda: __import__("bigdecon").sparse_hessian(np.ones((3, 32, 32), np.float32), iterations=3))
            r = run(src, dst, chunks, client=client)
        rows.append(
            {
                "setting": f"LocalCluster {n} worker(s) x 1 thread, blocks 8x128x128",
                "chunks": chunks,
                "workers": n,
                "wall_s": r["wall_s"],
                "tasks": r["tasks"],
                "mvox_s": nvox / r["wall_s"] / 1e6,
                "depth": r["plan"]["depth"],
            }
        )
        log(f"  {rows[-1]['setting']}: {r['wall_s']:.1f} s")
        if n == 1:
            costs = stage_costs(r)
    one = next(r for r in rows if r["workers"] == 1)
    for r in rows:
        if isinstance(r["workers"], int):
            r["speedup_vs_1_worker"] = one["wall_s"] / r["wall_s"]
    proj = [
        {"workers": n, "projected_s": project(costs, n), "mvox_s": nvox / project(costs, n) / 1e6}
        for n in (1, 2, 4, 8, 16, 32)
    ]
    # A larger data set with the same blocks: 100 frames x 2048 x 2048 (the per-task costs scale with the
    # number of blocks; whole-plane tasks with the plane area).
    big = (100, 2048, 2048)
    # Per-voxel work of each pass from the measured run, spread over the big data set's tasks:
    # one task per plane for the whole-plane passes, one per 8x128x128 block for the sparse pass.
    vox_big = float(np.prod(big))
    n_big = {
        "preprocess": big[0],
        "final": big[0],
        "sparse": math.ceil(big[0] / 8) * math.ceil(big[1] / 128) * math.ceil(big[2] / 128),
    }
    big_costs = {
        "n": n_big,
        "mean_s": {k: costs["mean_s"][k] * costs["n"][k] / nvox * vox_big / n_big[k] for k in n_big},
        "serial_s": costs["serial_s"] * vox_big / nvox,  # statistics + pyramid: pessimistically serial
    }
    big_proj = [{"workers": n, "projected_s": project(big_costs, n)} for n in (1, 16, 64, 256)]

    L = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; bigdecon {bigdecon.__version__}; "
        f"data {SHAPE[0]}x{SHAPE[1]}x{SHAPE[2]} uint16 (t, y, x), {nvox / 1e6:.2f} Mvoxel, defaults, FWHM {FWHM} px\n",
        "| setting | tasks | wall (s) | Mvoxel/s | speed-up vs 1 worker |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        sp = f"{r['speedup_vs_1_worker']:.2f}x" if "speedup_vs_1_worker" in r else ""
        L.append(f"| {r['setting']} | {r['tasks']} | {r['wall_s']:.1f} | {r['mvox_s']:.3f} | {sp} |")
    L.append("")
    L.append(
        "Measured per-task cost (1 worker, 1 thread, blocks 8x128x128, halo "
        f"{rows[-1]['depth']}): "
        + ", ".join(
            f"{k} {costs['n'][k]} tasks x {costs['mean_s'][k]:.2f} s" for k in ("preprocess", "sparse", "final")
        )
        + f"; serial remainder {costs['serial_s']:.1f} s\n"
    )
    L.append("| workers (1 thread each, 1 per core) | projected wall (s) | projected Mvoxel/s |")
    L.append("|---|---|---|")
    for p in proj:
        L.append(f"| {p['workers']} | {p['projected_s']:.1f} | {p['mvox_s']:.3f} |")
    L.append("")
    L.append(f"Projected for {big[0]}x{big[1]}x{big[2]} ({np.prod(big) / 1e9:.2f} Gvoxel), same blocks:")
    L.append("")
    L.append("| workers | projected wall (h) |")
    L.append("|---|---|")
    for p in big_proj:
        L.append(f"| {p['workers']} | {p['projected_s'] / 3600:.2f} |")
    text = "\n".join(L)
    print(text)
    log(f"total {time.perf_counter() - t_start:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"rows": rows, "costs": costs, "projection": proj, "big_projection": big_proj}, indent=1, default=str
            )
        )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
