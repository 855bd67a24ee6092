"""Latency of the napari widget's preview: a 256 x 256 x 64 region with default parameters.

The preview is one block of a run (bigdecon.napari._preview): the region with its halo, steps 1-6,
cut back. Timed here without napari (the widget adds a worker thread and a layer update). Cases: a
time-lapse (t, y, x) and a volume (z, y, x, a 3-D Gaussian PSF), each a 256 x 256 x 64 region in the
middle of a 96 x 512 x 512 data set, so the halo is read from real neighbours. For each case:

- the data set's statistics (once per layer: the run's statistics pass over the whole layer);
- one uncached preview of the whole region, all threads, and with one thread (BIGDECON_THREADS=1);
- what the widget does (preview_steps, a fresh cache): the first look (the current plane with its
  halo along t or z) and then the whole region;
- the same after a step-5 change (deconv_iters 7 -> 10) and after a step-4 change (sparsity 2 -> 3),
  with the cache of the first.

Usage::

    python benchmarks/bench_napari_preview.py                 # a GPU when CuPy sees one, else NumPy
    python benchmarks/bench_napari_preview.py --device cpu

Wall and CPU seconds are printed; on a shared machine CPU seconds say what an idle one takes.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bigdecon.data import beads_volume, filaments_timelapse
from bigdecon.napari._core import PreviewCache, dataset_stats, image_source, preview_region, preview_steps


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def steps(src: Any, options: dict, region: dict, stats: Any, cache: PreviewCache, device: str) -> list[tuple]:
    """preview_steps, timed at each result it gives: (preview, wall, CPU) since the start."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = []
    for p in preview_steps(src, options, region, stats=stats, cache=cache, device=device):
        out.append((p, time.perf_counter() - t0, time.process_time() - c0))
    return out


def line(what: str, wall: float, cpu: float, ref: tuple[float, float] | None = None) -> None:
    ratio = f"  {ref[0] / wall:6.1f}x wall, {ref[1] / cpu:6.1f}x CPU below uncached" if ref else ""
    print(f"  {what:52s} {wall:6.2f} s wall {cpu:6.2f} s CPU (CPU/wall {cpu / wall:4.2f}){ratio}")


def case(name: str, raw: np.ndarray, axes: str, fwhm: tuple, device: str) -> None:
    k = axes[0]
    mid = [s // 2 for s in raw.shape]
    region = {k: (mid[0] - 32, mid[0] + 32)}
    region.update({a: (m - 128, m + 128) for a, m in zip("yx", mid[1:])})
    src = image_source(raw, axes)
    opts = {"fwhm": fwhm}
    stats, wall, cpu = timed(lambda: dataset_stats(src, opts))
    print(f"{name}: data {raw.shape}, region {region}, on {device}")
    line("data set statistics (once per layer)", wall, cpu)
    p, *ref = timed(lambda: preview_region(src, opts, region, stats=stats, device=device))
    print(f"  halo {p.halo}; stages (wall/CPU s): " + ", ".join(f"{s} {p.ran[s]:.2f}/{p.cpu[s]:.2f}" for s in p.ran))
    line("whole region, uncached", *ref)
    os.environ["BIGDECON_THREADS"] = "1"
    try:
        q, wall, cpu = timed(lambda: preview_region(src, opts, region, stats=stats, device=device))
    finally:
        del os.environ["BIGDECON_THREADS"]
    print("  one thread, stages (wall/CPU s): " + ", ".join(f"{s} {q.ran[s]:.2f}/{q.cpu[s]:.2f}" for s in q.ran))
    line("whole region, uncached, one thread", wall, cpu)
    cache = PreviewCache()
    for change in ({}, {"deconv_iters": 10}, {"sparsity": 3.0}):
        *first, (whole, w2, c2) = steps(src, {**opts, **change}, region, stats, cache, device)
        what = f"after {change}" if change else "widget, fresh cache"
        ran = "+".join(
            s for s in ("background", "sparse", "deconv") if s in whole.ran or (first and s in first[0][0].ran)
        )
        if first:
            line(f"{what}: first look {first[0][0].data.shape}", first[0][1], first[0][2], tuple(ref))
        else:
            print(f"  {what}: no first look (its block would have over half the planes)")
        line(f"{what}: whole region (total; ran {ran})", w2, c2, tuple(ref))
        if not change:
            assert np.array_equal(whole.data, p.data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    args = parser.parse_args()
    small, _ = filaments_timelapse((24, 96, 96), fwhm=3.0, seed=0)
    preview_region(image_source(small, "tyx"), {"fwhm": 3, "sparse_iters": 1}, {})  # compile the numba kernels
    raw, _ = filaments_timelapse((96, 512, 512), fwhm=3.0, seed=0)
    case("time-lapse", raw, "tyx", (3.0,), args.device)
    raw, _ = beads_volume((96, 512, 512), fwhm=(6.0, 3.0, 3.0), seed=1)
    case("volume", raw, "zyx", (6.0, 3.0, 3.0), args.device)


if __name__ == "__main__":
    main()
