"""Speed and memory of the in-memory solvers, per step, in one run.

    python benchmarks/bench_solvers.py            # all cases (~9 min on 2 cores)
    python benchmarks/bench_solvers.py --quick    # the 5x256x256 reference point only
    python benchmarks/bench_solvers.py --gpu-only # GPU rows only (plus one CPU reference line)
    python benchmarks/bench_solvers.py --gpu-only --json gpu.json   # rows also as JSON

Prints voxel-iterations/s of each step, the peak memory of each step as a
multiple of the input's float32 size (NumPy allocations, via tracemalloc), and
the whole default pipeline on the issue's reference stack (5x256x256, background
0), where the published Python code takes ~17 s on this 2-core machine
(1.9e6 voxel-iterations/s in its sparse-Hessian step; the issue's figures, a
constant here, not re-measured). Times are the best (min) of ``--repeat`` warm
runs (default 5) at 5x256x256 and of one at the larger shapes: on a shared
machine other load only adds time, so the minimum is the figure closest to the
code's own cost, and the ratio to the 17 s is only as good as the machine is
quiet. It also prints the first call of a fresh process (the Numba kernels come
from the on-disk cache, or are compiled) against a warm one.

With CuPy and a GPU the same steps run on the GPU too. Each GPU row gives the
best of a few synchronised runs, the peak of the bytes the step allocated from
CuPy's memory pool (a ``cupy.cuda.MemoryHook``: arrays, cuFFT work areas), as a
multiple of the input's float32 size, and the fraction of the card's memory
bandwidth reached: nominal bandwidth = memory clock x bus width x 2 (DDR) / 8
from the device properties (``memoryClockRate`` kHz, ``memoryBusWidth`` bits),
and a measured device-to-device copy for comparison. Bytes moved per
voxel-iteration are estimated from the kernels the CuPy path launches
(:func:`gpu_traffic`; float32 = 4 bytes, one read or write of an array = one
access per voxel):

* every whole-array elementwise op: 2 accesses (``a *= s``) or 3 (``c = a + b``);
* a 2-D real FFT (rfftn/irfftn over y, x; cuFFT needs ~2 passes at these sizes)
  and a 2-D DCT-II (reorder, complex FFT, twiddle): ~4 and ~8 accesses per axis
  pair; the short-k DCT by a small matrix product: 2;
* sparse Hessian, per iteration: DCT forward + inverse (2 x (2 x 8), + 2 x 2 along
  k when k > 1), the denominator product (3), the rhs reset (2), and per penalty
  term ``D g + b`` / clip / ``t - 2b`` / ``D^T`` / weight / ``rhs +=``: 36
  (second difference), 39 (mixed), 16 (sparsity) -> 282 accesses (coupled
  3-D, 7 terms) or 164 (uncoupled, 4 terms);
* Richardson-Lucy, per iteration, on the edge-padded array: 2 convolutions
  (FFT 4 + OTF product 3 + inverse FFT 4 each) and 11 elementwise ops -> 55;
* Landweber, per iteration, padded: 2 convolutions + 6 ops -> 40;
* Fourier up-sampling x2, one call: 36 per mirror-padded input voxel (pad, FFT,
  zero-filled 4x spectrum, inverse FFT, scale) + 8 per input voxel (crop);
* wavelet background: runs on the host (PyWavelets); its bandwidth is not a GPU
  figure (two PCIe transfers of the array).

The estimate ignores caches (small arrays stay partly in the 50-60 MB L2 of
recent cards, so the fraction can exceed what DRAM alone would allow) and
cuFFT's internal passes for large sizes; it is a guide to how far a step is
from the memory roof, not a measurement of DRAM traffic.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import bigdecon
from bigdecon._backend import gpu_available
from bigdecon.solvers.background import estimate_background
from bigdecon.solvers.richardson_lucy import published_pad
from bigdecon.solvers.sparse_hessian import sparse_hessian_terms

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


# ----------------------------------------------------------------------------- GPU


def gpu_traffic(step: str, shape, iters: int = 1) -> int:
    """Estimated bytes one call of ``step`` moves to and from GPU memory (see the module doc)."""
    k, h, w = (1, *shape) if len(shape) == 2 else shape
    n = k * h * w
    if step == "sparse":
        coupled = k >= 3
        terms = sparse_hessian_terms(0.5, coupled)
        per_term = sum(36 if len(axes) == 1 else 39 for _name, axes, _w in terms) + 16
        k_axis = 0 if k == 1 else (2 if k <= 32 else 8)
        dct = 2 * (16 + k_axis) + 3
        return 4 * n * iters * (dct + 2 + per_term)
    if step in ("rl", "landweber"):
        p = published_pad((h, w))
        padded = k * (h + 2 * p) * (w + 2 * p)
        return 4 * padded * iters * (55 if step == "rl" else 40)
    if step == "fourier":
        p = max(8, min(h, w) // 4)
        padded = k * (h + 2 * p) * (w + 2 * p)
        return 4 * (36 * padded + 8 * n)
    raise ValueError(step)


def gpu_bandwidth():
    """(nominal bytes/s or None, how it was found) for device 0."""
    import cupy as cp

    rt = cp.cuda.runtime
    props = rt.getDeviceProperties(0)
    clock_khz, bus_bits = props.get("memoryClockRate"), props.get("memoryBusWidth")
    source = "device properties"
    if not (clock_khz and bus_bits):  # CUDA 13 dropped memoryClockRate from cudaDeviceProp
        try:
            clock_khz = rt.deviceGetAttribute(getattr(rt, "cudaDevAttrMemoryClockRate", 36), 0)
            bus_bits = rt.deviceGetAttribute(getattr(rt, "cudaDevAttrGlobalMemoryBusWidth", 37), 0)
            source = "device attributes"
        except Exception:
            clock_khz = bus_bits = None
    if not (clock_khz and bus_bits):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            clock_khz = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM) * 1000
            bus_bits = pynvml.nvmlDeviceGetMemoryBusWidth(handle)
            source = "NVML"
        except Exception:
            return None, "unknown (no memory clock in the device properties, attributes or NVML)"
    bandwidth = clock_khz * 1e3 * bus_bits * 2 / 8
    return bandwidth, f"{clock_khz / 1e3:.0f} MHz x {bus_bits} bit x 2 / 8 ({source})"


def gpu_copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Measured device-to-device copy, bytes read + written per second (best of 10)."""
    import cupy as cp

    a = cp.ones(nbytes // 4, cp.float32)
    b = cp.empty_like(a)
    cp.copyto(b, a)
    best = float("inf")
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    for _ in range(10):
        start.record()
        cp.copyto(b, a)
        stop.record()
        stop.synchronize()
        best = min(best, cp.cuda.get_elapsed_time(start, stop) / 1e3)
    del a, b
    cp.get_default_memory_pool().free_all_blocks()
    return 2 * nbytes / best


def _peak_hook():
    import cupy as cp

    class PeakHook(cp.cuda.MemoryHook):
        """Peak of the bytes handed out by CuPy's pool while active (arrays, FFT work areas)."""

        name = "bigdecon-peak"

        def __init__(self):
            super().__init__()
            self.current = self.peak = 0

        def malloc_postprocess(self, **kw):
            self.current += kw["mem_size"]
            self.peak = max(self.peak, self.current)

        def free_postprocess(self, **kw):
            self.current -= kw["mem_size"]

    return PeakHook()


def gpu_measure(fn, *args, repeat=3, **kwargs):
    """(best seconds, peak pool bytes) of ``fn(*args, **kwargs)`` on the GPU."""
    import cupy as cp

    dev = cp.cuda.Device()
    fn(*args, **kwargs)  # warm: kernel compilation, FFT plans
    dev.synchronize()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        dev.synchronize()
        best = min(best, time.perf_counter() - t)
        del out
    # Memory: from a cold plan cache, so cuFFT's work areas are counted.
    pool = cp.get_default_memory_pool()
    try:
        cp.fft.config.get_plan_cache().clear()
    except Exception:
        pass
    pool.free_all_blocks()
    hook = _peak_hook()
    with hook:
        out = fn(*args, **kwargs)
        dev.synchronize()
    del out
    return best, hook.peak


def gpu_row(results, name, shape, iters, seconds, peak, traffic=None, bandwidth=None, copy_bw=None):
    voxels = int(np.prod(shape))
    rate = voxels * iters / seconds
    mult = peak / (voxels * 4)
    line = f"  {name:<34} {str(tuple(shape)):<18} {seconds:8.4f} s  {rate:10.3e} vox-it/s  peak {mult:5.1f}x input"
    record = {
        "step": name,
        "shape": list(shape),
        "iterations": iters,
        "seconds": seconds,
        "voxel_iterations_per_s": rate,
        "peak_gpu_bytes": int(peak),
        "peak_x_input": mult,
    }
    if traffic:
        achieved = traffic / seconds
        line += f"  {achieved / 1e9:7.0f} GB/s"
        record["estimated_bytes"] = int(traffic)
        record["achieved_bytes_per_s"] = achieved
        if bandwidth:
            line += f" = {achieved / bandwidth:5.1%} of nominal"
            record["fraction_of_nominal_bandwidth"] = achieved / bandwidth
        if copy_bw:
            line += f", {achieved / copy_bw:5.1%} of copy"
            record["fraction_of_copy_bandwidth"] = achieved / copy_bw
    print(line, flush=True)
    results.append(record)
    return record


def gpu_steps(shape, results, bandwidth=None, copy_bw=None, repeat=3):
    import cupy as cp

    raw = cp.asarray(sample(shape))
    f = raw / raw.max()
    psf = cp.asarray(bigdecon.gaussian_psf(3.0))
    name = cp.cuda.runtime.getDeviceProperties(0)["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    print(f"\nGPU steps on {shape} ({name}):", flush=True)
    cases = [
        ("sparse Hessian (100 it)", 100, "sparse", bigdecon.sparse_hessian, (f,), {}),
        ("Richardson-Lucy (7 it, accel.)", 7, "rl", bigdecon.richardson_lucy, (f, psf, 7), {}),
        ("Landweber (7 it)", 7, "landweber", bigdecon.landweber, (f, psf, 7), {}),
        ("wavelet background (3 it, host)", 3, None, estimate_background, (f, 1), {}),
        ("Fourier up-sampling x2", 1, "fourier", bigdecon.fourier_upsample, (f,), {}),
        ("whole pipeline (defaults, bg 0)", 1, None, bigdecon.sparse_deconvolve, (raw,), dict(fwhm=3, background=0)),
    ]
    for label, iters, kind, fn, args, kwargs in cases:
        if fn is estimate_background and shape[0] > 8:
            continue  # a host-side step (PyWavelets): ~1 min per many-plane shape, no GPU figure
        seconds, peak = gpu_measure(fn, *args, repeat=repeat, **kwargs)
        traffic = gpu_traffic(kind, shape, iters) if kind else None
        gpu_row(results, label, shape, iters, seconds, peak, traffic, bandwidth, copy_bw)
    del raw, f, psf
    cp.get_default_memory_pool().free_all_blocks()


def gpu_report(quick: bool, json_path: str | None, cpu_reference: bool) -> None:
    import cupy as cp

    results: list[dict] = []
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    free, total = cp.cuda.runtime.memGetInfo()
    bandwidth, how = gpu_bandwidth()
    copy_bw = gpu_copy_bandwidth()
    info = {
        "device": name,
        "memory_bytes": int(total),
        "free_bytes": int(free),
        "cupy": cp.__version__,
        "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
        "cuda_driver": cp.cuda.runtime.driverGetVersion(),
        "nominal_bandwidth": bandwidth,
        "nominal_bandwidth_from": how,
        "copy_bandwidth": copy_bw,
    }
    print(
        f"\nGPU: {name}, {total / 2**30:.1f} GiB, CuPy {cp.__version__}, CUDA runtime "
        f"{info['cuda_runtime']}, driver {info['cuda_driver']}"
    )
    nominal = f"{bandwidth / 1e9:.0f} GB/s = {how}" if bandwidth else how
    print(f"  memory bandwidth: nominal {nominal}; measured copy {copy_bw / 1e9:.0f} GB/s (read + write)")

    def save():
        if json_path:
            with open(json_path, "w") as fh:
                json.dump({"gpu": info, "rows": results}, fh, indent=1)

    if cpu_reference:
        # One CPU line for the speed-up, on this machine's cores (all of them).
        ref = sample((5, 256, 256))
        s_cpu, _, _ = measure(bigdecon.sparse_hessian, ref / ref.max(), repeat=1)
        p_cpu, _, _ = measure(bigdecon.sparse_deconvolve, ref, fwhm=3, background=0, repeat=1)
        info["cpu_reference"] = {
            "shape": [5, 256, 256],
            "sparse_seconds": s_cpu,
            "pipeline_seconds": p_cpu,
            "cpus": os.cpu_count(),
        }
        print(f"  CPU reference ({os.cpu_count()} CPUs, 5x256x256): sparse step {s_cpu:.3f} s, pipeline {p_cpu:.3f} s")
    shapes = [((5, 256, 256), 3)]
    if not quick:
        shapes += [((256, 256, 256), 2), ((5, 1024, 1024), 2), ((16, 2048, 2048), 1)]
    for shape, repeat in shapes:
        gpu_steps(shape, results, bandwidth, copy_bw, repeat=repeat)
        save()
    if cpu_reference and results:
        ref = info["cpu_reference"]
        sparse = next(r for r in results if r["shape"] == [5, 256, 256] and r["step"].startswith("sparse"))
        whole = next(r for r in results if r["shape"] == [5, 256, 256] and r["step"].startswith("whole"))
        print(
            f"\nGPU vs CPU, 5x256x256: sparse step {ref['sparse_seconds'] / sparse['seconds']:.1f}x, "
            f"whole pipeline {ref['pipeline_seconds'] / whole['seconds']:.1f}x"
        )
    save()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the 5x256x256 reference point")
    ap.add_argument(
        "--gpu-only", action="store_true", help="skip the CPU rows (one CPU reference line is kept for the speed-up)"
    )
    ap.add_argument("--json", metavar="PATH", help="also write the GPU rows to PATH as JSON")
    ap.add_argument("--repeat", type=int, default=5, help="warm runs at 5x256x256; the best is reported")
    args = ap.parse_args()
    print(f"bigdecon {bigdecon.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    if not args.gpu_only:
        cpu_report(args.quick, args.repeat)
    if gpu_available():
        gpu_report(args.quick, args.json, cpu_reference=args.gpu_only)
    else:
        print("\nGPU: no CUDA device with CuPy here; GPU figures not measured")


def first_call_seconds(shape=(5, 256, 256)) -> tuple[float, float]:
    """(first, warm) seconds of ``sparse_hessian`` in a fresh interpreter: the first call loads
    the Numba kernels from their on-disk cache (or compiles them when there is none)."""
    code = (
        "import sys, time, numpy as np; sys.path.insert(0, 'tests'); import bigdecon; "
        f"from conftest import filaments; f = filaments({tuple(shape)!r}, seed=0)[0]; f = f / f.max(); "
        "t = time.perf_counter(); bigdecon.sparse_hessian(f); a = time.perf_counter() - t; "
        "t = time.perf_counter(); bigdecon.sparse_hessian(f); b = time.perf_counter() - t; print(a, b)"
    )
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    first, warm = (float(v) for v in out.stdout.split())
    return first, warm


def _threads(value):
    if value is None:
        os.environ.pop("BIGDECON_THREADS", None)
    else:
        os.environ["BIGDECON_THREADS"] = value


def cpu_report(quick: bool, repeat: int) -> None:
    results = {}
    saved = os.environ.get("BIGDECON_THREADS")
    cores = str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    print(f"\ntimes: best (min) of {repeat} warm runs at 5x256x256, of 1 at the larger shapes (other load only adds)")
    # default: bigdecon's own choice (one thread per 2**20 voxels, at most every core).
    for label, threads in (("default", None), ("1 thread", "1"), (f"{cores} threads", cores)):
        _threads(threads)
        print(f"\n[{label}]", end="")
        results[label] = steps((5, 256, 256), repeat=repeat)
    _threads(None)
    first, warm = first_call_seconds()
    print("\nreference point (issue #2): 5x256x256, default parameters, background 0")
    print(
        f"  published Python code      {PUBLISHED_SECONDS:6.2f} s   sparse step {PUBLISHED_RATE:.2e} vox-it/s "
        "(the issue's figures for this 2-core VM, not re-measured here)"
    )
    for label, (sparse_rate, sparse_mem, total_s, total_mem) in results.items():
        print(
            f"  bigdecon, {label:<10}      {total_s:6.3f} s   sparse step {sparse_rate:.2e} vox-it/s   "
            f"speed-up {PUBLISHED_SECONDS / total_s:5.1f}x pipeline (target >= 60x), "
            f"{sparse_rate / PUBLISHED_RATE:5.1f}x sparse step; peak {sparse_mem:.1f}x step (target <= 12x) / "
            f"{total_mem:.1f}x pipeline"
        )
    print(
        f"  sparse step in a fresh process: first call {first:.2f} s (Numba kernels from the disk cache, "
        f"or compiled), second {warm:.2f} s"
    )
    if not quick:
        for shape in ((256, 256, 256), (5, 1024, 1024)):
            for label, threads in (("default", None), ("1 thread", "1")):
                _threads(threads)
                print(f"\n[{label}]", end="")
                sparse_rate, sparse_mem, _, _ = steps(shape, repeat=1)
                if shape == (256, 256, 256):
                    print(
                        f"  -> sparse step {sparse_rate:.2e} vox-it/s (target >= 6e7), peak {sparse_mem:.1f}x (<= 12x)"
                    )
    if saved is None:
        os.environ.pop("BIGDECON_THREADS", None)
    else:
        os.environ["BIGDECON_THREADS"] = saved


if __name__ == "__main__":
    main()
