"""Latency of the napari widget's preview: a 256 x 256 x 64 region with default parameters.

The preview is one block of a run (bigdecon.napari._core.preview_region): the region with its halo,
steps 1-6, cut back. Timed here without napari (the widget adds a worker thread and a layer update).
Cases: a time-lapse (t, y, x) and a volume (z, y, x, a 3-D Gaussian PSF), each a 256 x 256 x 64 region
in the middle of a larger data set, so the halo is read from real neighbours.

Usage::

    python benchmarks/bench_napari_preview.py                 # a GPU when CuPy sees one, else NumPy
    python benchmarks/bench_napari_preview.py --device cpu --repeat 3

CPU seconds are printed beside the wall time: on a shared machine they say what an idle one takes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bigdecon.data import beads_volume, filaments_timelapse
from bigdecon.napari._core import image_source, preview_region


def case(name: str, raw: np.ndarray, axes: str, fwhm: tuple, repeat: int, device: str) -> None:
    k = axes[0]
    mid = [s // 2 for s in raw.shape]
    region = {k: (max(0, mid[0] - 32), max(0, mid[0] - 32) + 64)}
    region.update({a: (m - 128, m + 128) for a, m in zip("yx", mid[1:])})
    src = image_source(raw, axes)
    preview_region(src, {"fwhm": fwhm, "sparse_iters": 1}, {a: (0, 64) for a in axes})  # compile numba kernels
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        p = preview_region(src, {"fwhm": fwhm}, region, device=device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    print(
        f"{name:10s} data {raw.shape} region {tuple(p.data.shape)} halo {p.halo} on {device}: "
        f"{min(times):.2f} s wall, {min(cpu):.2f} s CPU (best of {repeat})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    args = parser.parse_args()
    raw, _ = filaments_timelapse((96, 512, 512), fwhm=3.0, seed=0)
    case("time-lapse", raw, "tyx", (3.0,), args.repeat, args.device)
    raw, _ = beads_volume((96, 512, 512), fwhm=(6.0, 3.0, 3.0), seed=1)
    case("volume", raw, "zyx", (6.0, 3.0, 3.0), args.repeat, args.device)


if __name__ == "__main__":
    main()
