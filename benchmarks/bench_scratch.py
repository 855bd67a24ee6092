"""Scratch space of a run: the most disk a ``bigdecon run`` holds, against its finished output.

    python benchmarks/bench_scratch.py                 # 64 x 512 x 512 uint16, ~10 min on 2 loaded cores
    python benchmarks/bench_scratch.py --small         # 32 x 256 x 256, ~2 min
    python benchmarks/bench_scratch.py --code /work/main   # the same with another checkout (before/after)
    python benchmarks/bench_scratch.py --shape 64,1024,1024 --modes "all passes"   # a larger data set

Writes a generated uint16 time-lapse as OME-Zarr, then runs the CLI
(``bigdecon run``, a subprocess: float32 output, default arguments apart from
the pass being switched off) once per mode: every pass (background 1 ->
``h``, sparse -> ``g``, Richardson-Lucy -> output), without the background
pass (``--background 0``: no ``h``), without the sparse pass
(``--sparse-iters 0``: no ``g``) and without the final deconvolution
(``--deconv-iters 0``). A thread sums the sizes of the files under the output
folder (which holds the work folder) every 0.2 s; the script prints the peak,
the finished output's size, their ratio (target <= 1.6), the floor (the
largest intermediate, whole once the pass writing it ends, over the output:
no schedule goes below it) and, where the code reports it, the run's own
``Peak scratch`` line (sampled as tasks finish, before their inputs are freed,
so it sees peaks a 0.2 s sampler can miss), and what the folders held at the sampled peak
(``h``, ``g``, the output's ``s0`` and the rest: pyramid levels, ledger, PSFs, metadata). ``--iters`` cuts both
iteration counts to keep the run short (the scratch use is the same
intermediates either way; only their compressibility could move a little).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from bigdecon.passes.scratch import folder_bytes  # the run's own measure of a folder

MODES = {
    "all passes": [],
    "no background": ["--background", "0"],
    "no sparse": ["--sparse-iters", "0"],
    "no deconv": ["--deconv-iters", "0"],
}


def write_input(path: str, shape: tuple[int, int, int]) -> None:
    """Drifting blurred ridges with Poisson noise, uint16, written in plane groups."""
    from scipy.ndimage import gaussian_filter

    from bigdecon.io import write_image

    rng = np.random.default_rng(0)
    t, h, w = shape
    base = np.zeros((h, w), np.float32)
    for _ in range(h * w // 2000):
        y0, amp, period = rng.uniform(0, h), rng.uniform(3, 12), rng.uniform(40, 120)
        xs = np.arange(w)
        ys = (y0 + amp * np.sin(2 * np.pi * xs / period)).astype(int) % h
        base[ys, xs] += rng.uniform(0.5, 1.0)
    planes = np.empty(shape, np.uint16)
    for k in range(t):
        plane = gaussian_filter(np.roll(base, k, axis=0), 1.3) * 3000 + 100
        planes[k] = np.clip(rng.poisson(plane), 0, 65535)
    write_image(path, planes, "tyx", chunks=(8, 256, 256))


# The step-4 blocks a 2-thread run gets (the CLI's local cluster here: 2 workers x 1 thread), and the
# voxels they solve (halo included) per data voxel: the step-4 work of the plan.
STEP4 = """
import json, math, sys
import bigdecon
source = sys.argv[1]
chunks = dict((a, int(v)) for a, v in (p.split("=") for p in sys.argv[2].split(","))) if sys.argv[2] else None
s = bigdecon.plan(source, fwhm=3, min_tasks=2, chunks=chunks)
k, y, x = (s["shape"][i] for i in range(3))
block, depth = s["sparse_block"], s["depth"]
grown = 1.0
for n, name in ((k, "k"), (y, "y"), (x, "x")):
    b, d = block[name], depth[name]
    grown *= sum(min(n, a + b + d) - max(0, a - d) for a in range(0, n, b)) / n
n = math.prod(-(-m // block[a]) for m, a in ((k, "k"), (y, "y"), (x, "x")))
print(f"step 4: {n} blocks of {block['k']}x{block['y']}x{block['x']} ({-(-n // 2)} waves of 2), solving {grown:.3f}x the voxels")
"""


def step4_line(source: str, chunks: str | None, code: str) -> str:
    """What the plan of ``code`` gives step 4 at 2 threads (one line)."""
    env = dict(os.environ, PYTHONPATH=code)
    cmd = [sys.executable, "-c", STEP4, source, chunks or ""]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code)
    return proc.stdout.strip() or f"(plan not available: {proc.stderr.strip().splitlines()[-1:]})"


def run_mode(source: str, out: str, extra: list[str], code: str) -> tuple[int, int, int, float, str, str]:
    """One CLI run: (peak bytes sampled, largest intermediate, finished output bytes, seconds, the run's own
    line, what the folders held at the sampled peak)."""
    peak = [0, 0]
    at_peak = [""]
    stop = threading.Event()
    work = os.path.join(out, ".bigdecon-work")

    def sample() -> None:
        while not stop.is_set():
            parts = {n: folder_bytes(os.path.join(work, n)) for n in ("h.zarr", "g.zarr")}
            parts["s0"] = folder_bytes(os.path.join(out, "s0"))
            total = folder_bytes(out)
            if total > peak[0]:
                peak[0] = total
                rest = total - sum(parts.values())  # pyramid levels s1.., ledger, PSFs, metadata
                at_peak[0] = " ".join(f"{n.split('.')[0]} {b / 2**20:.1f}" for n, b in parts.items())
                at_peak[0] += f" other {rest / 2**20:.1f}"
            peak[1] = max(peak[1], parts["h.zarr"], parts["g.zarr"])
            stop.wait(0.2)

    env = dict(os.environ, PYTHONPATH=code)
    cmd = [sys.executable, "-m", "bigdecon", "run", source, out, "--fwhm", "3", "--overwrite", *extra]
    sampler = threading.Thread(target=sample, daemon=True)
    t0 = time.perf_counter()
    sampler.start()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code)
    finally:
        stop.set()
        sampler.join()
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"bigdecon run failed ({' '.join(extra)}):\n{proc.stdout}\n{proc.stderr}")
    size = folder_bytes(out)
    own = re.search(r"Peak scratch: .*", proc.stdout)
    own_line = own.group(0) if own else "(not reported by this code)"
    return max(peak[0], size), peak[1], size, seconds, own_line, at_peak[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="32 x 256 x 256 instead of 64 x 512 x 512")
    parser.add_argument("--code", default=os.getcwd(), help="checkout whose bigdecon runs (PYTHONPATH)")
    parser.add_argument("--iters", type=int, default=None, help="sparse and deconv iterations (default: defaults)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
    parser.add_argument("--chunks", default=None, help="the run's --chunks (step-4 block size), e.g. t=32,y=64,x=64")
    parser.add_argument(
        "--shape", default=None, help="t,y,x of the generated input, e.g. 64,1024,1024 (overrides --small)"
    )
    args = parser.parse_args()
    shape = (32, 256, 256) if args.small else (64, 512, 512)
    if args.shape is not None:
        t, y, x = (int(v) for v in args.shape.split(","))
        shape = (t, y, x)
    folder = tempfile.mkdtemp(prefix="bench-scratch-")
    try:
        source = os.path.join(folder, "in.ome.zarr")
        write_input(source, shape)
        raw = np.prod(shape) * 2
        print(f"input {'x'.join(map(str, shape))} uint16 ({raw / 2**20:.1f} MiB raw), float32 output, code {args.code}")
        print(step4_line(source, args.chunks, args.code), flush=True)
        cut = ["--sparse-iters", str(args.iters), "--deconv-iters", str(args.iters)] if args.iters is not None else []
        if args.chunks is not None:
            cut += ["--chunks", args.chunks]
        print(
            f"{'mode':<15} {'peak MiB':>9} {'output MiB':>10} {'ratio':>6} {'floor':>6} {'seconds':>8}  run's own report"
        )
        for mode in args.modes.split(","):
            extra = cut + MODES[mode]  # a mode's own option comes last and wins
            out = os.path.join(folder, "out.ome.zarr")
            peak, largest, size, seconds, own, at_peak = run_mode(source, out, extra, args.code)
            print(
                f"{mode:<15} {peak / 2**20:>9.1f} {size / 2**20:>10.1f} {peak / size:>5.2f}x "
                f"{max(size, largest) / size:>5.2f}x {seconds:>8.1f}  {own}",
                flush=True,
            )
            print(f"{'':<15} at the sampled peak, MiB: {at_peak}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
        print(
            "target: peak <= 1.6x the finished output (before chunk freeing: 2.8x with every pass). floor: the\n"
            "largest intermediate (h or g, whole at the end of the pass writing it) / the output: no run goes below"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
