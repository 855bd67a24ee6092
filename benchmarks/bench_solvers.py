"""Speed and memory of the in-memory solvers, per step, in one run.

    python benchmarks/bench_solvers.py            # all cases (~2 min on 2 cores)
    python benchmarks/bench_solvers.py --quick    # the 5x256x256 reference point only

Prints voxel-iterations/s of each step, the peak memory of each step as a
multiple of the input's float32 size (NumPy allocations, via tracemalloc), and
the whole default pipeline on the issue's reference stack (5x256x256, background
0), where the published Python code takes ~17 s on this 2-core machine
(1.9e6 voxel-iterations/s in its sparse-Hessian step). With CuPy and a GPU the
same cases run on the GPU too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import bigdecon  # noqa: E402
from bigdecon._backend import gpu_available  # noqa: E402
from bigdecon.solvers.background import estimate_background  # noqa: E402

PUBLISHED_SECONDS = 17.0  # published Python code, 5x256x256, defaults, background 0 (issue #2)
PUBLISHED_RATE = 1.9e6  # its sparse-Hessian voxel-iterations/s


def sample(shape, seed=0):
    from conftest import filaments

    if len(shape) == 3 and shape[0] > 64:  # a volume: filaments in every z plane, shifted
        return filaments((shape[0], shape[1], shape[2]), seed=seed)[0]
    return filaments(shape, seed=seed)[0]


def measure(fn, *args, repeat=1, **kwargs):
    """(best seconds, peak traced bytes, result)."""
    fn(*args, **kwargs)  # warm: JIT compile, FFT plans
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        best = min(best, time.perf_counter() - t)
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn(*args, **kwargs)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return best, peak, out


def row(name, shape, iters, seconds, peak):
    voxels = int(np.prod(shape))
    rate = voxels * iters / seconds
    mult = peak / (voxels * 4)
    print(f"  {name:<34} {str(tuple(shape)):<18} {seconds:8.3f} s  {rate:10.3e} vox-it/s  peak {mult:5.1f}x input")
    return rate, mult


def steps(shape, repeat):
    raw = sample(shape)
    f = raw / raw.max()
    psf = bigdecon.gaussian_psf(3.0)
    print(f"\nsteps on {shape}:")
    s, p, _ = measure(bigdecon.sparse_hessian, f, repeat=repeat)
    sparse_rate, sparse_mem = row("sparse Hessian (100 it)", shape, 100, s, p)
    s, p, _ = measure(bigdecon.richardson_lucy, f, psf, 7, repeat=repeat)
    row("Richardson-Lucy (7 it, accel.)", shape, 7, s, p)
    s, p, _ = measure(bigdecon.landweber, f, psf, 7, repeat=repeat)
    row("Landweber (7 it)", shape, 7, s, p)
    s, p, _ = measure(estimate_background, f, 1, repeat=1)
    row("wavelet background (3 it)", shape, 3, s, p)
    s, p, _ = measure(bigdecon.fourier_upsample, f, repeat=repeat)
    row("Fourier up-sampling x2", shape, 1, s, p)
    s, p, _ = measure(bigdecon.sparse_deconvolve, raw, fwhm=3, background=0, repeat=repeat)
    _, total_mem = row("whole pipeline (defaults, bg 0)", shape, 1, s, p)
    return sparse_rate, sparse_mem, s, total_mem


def gpu_steps(shape):
    import cupy as cp

    raw = cp.asarray(sample(shape))
    f = raw / raw.max()
    psf = bigdecon.gaussian_psf(3.0)

    def timed(fn, *a, **k):
        fn(*a, **k)
        cp.cuda.Device().synchronize()
        t = time.perf_counter()
        fn(*a, **k)
        cp.cuda.Device().synchronize()
        return time.perf_counter() - t

    print(f"\nGPU steps on {shape} ({cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}):")
    n = int(np.prod(shape))
    s = timed(bigdecon.sparse_hessian, f)
    # Bytes moved per voxel-iteration: ~2 transforms + 2 passes per term over ~3 arrays, float32.
    print(f"  sparse Hessian (100 it)            {s:8.3f} s  {n * 100 / s:10.3e} vox-it/s")
    s = timed(bigdecon.richardson_lucy, f, cp.asarray(psf), 7)
    print(f"  Richardson-Lucy (7 it)             {s:8.3f} s  {n * 7 / s:10.3e} vox-it/s")
    s = timed(bigdecon.sparse_deconvolve, raw, fwhm=3, background=0)
    print(f"  whole pipeline (defaults, bg 0)    {s:8.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the 5x256x256 reference point")
    args = ap.parse_args()
    print(f"bigdecon {bigdecon.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    results = {}
    default_threads = os.environ.get("BIGDECON_THREADS")
    for label, threads in (("all cores", default_threads), ("1 thread", "1")):
        if threads is None:
            os.environ.pop("BIGDECON_THREADS", None)
        else:
            os.environ["BIGDECON_THREADS"] = threads
        print(f"\n[{label}]", end="")
        results[label] = steps((5, 256, 256), repeat=3)
    if default_threads is None:
        os.environ.pop("BIGDECON_THREADS", None)
    else:
        os.environ["BIGDECON_THREADS"] = default_threads
    print("\nreference point (issue #2): 5x256x256, default parameters, background 0")
    print(f"  published Python code      {PUBLISHED_SECONDS:6.2f} s   sparse step {PUBLISHED_RATE:.2e} vox-it/s")
    for label, (sparse_rate, sparse_mem, total_s, total_mem) in results.items():
        print(f"  bigdecon, {label:<10}      {total_s:6.2f} s   sparse step {sparse_rate:.2e} vox-it/s   "
              f"speed-up {PUBLISHED_SECONDS / total_s:5.1f}x pipeline, {sparse_rate / PUBLISHED_RATE:5.1f}x sparse step "
              f"(target >= 20x); peak {sparse_mem:.1f}x / {total_mem:.1f}x input (target <= 20x)")
    if not args.quick:
        steps((256, 256, 256), repeat=1)
        steps((5, 1024, 1024), repeat=1)
    if gpu_available():
        gpu_steps((5, 256, 256))
        if not args.quick:
            gpu_steps((256, 256, 256))
            gpu_steps((5, 1024, 1024))
    else:
        print("\nGPU: no CUDA device with CuPy here; GPU figures not measured")


if __name__ == "__main__":
    main()
