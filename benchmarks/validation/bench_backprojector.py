"""Wiener-Butterworth back projector against plain Richardson-Lucy on 3-D phantoms.

    python benchmarks/validation/bench_backprojector.py            # the table in docs/backprojector.md
    python benchmarks/validation/bench_backprojector.py --quick    # 24x96x96, a smoke run

Scene: beads and filaments (``phantoms.volume``), 100 nm pixels and 250 nm planes,
blurred by the widefield PSF of a 1.1 NA water objective at 520 nm
(:func:`bigdecon.solvers.widefield_psf`, sized by :func:`psf_size_for`) with zero
boundaries, then Poisson noise at a peak of ~300 and ~3000 photons. Every method
runs with its default arguments (padding included) on that same PSF:

* raw: the noisy image;
* RL: :func:`bigdecon.richardson_lucy` (Biggs-Andrews accelerated, the default) and
  ``accelerate=False`` (textbook RL), at 5, 10, 20 and 40 iterations;
* WB: :func:`bigdecon.solvers.rl_wiener_butterworth` at 1, 2, 3 and 5 iterations;
  ``--sweep`` adds other back projector settings (the published code's defaults
  ``beta=None, order=10``, its light-sheet example's ``alpha=0.05``, and others).

Scores against the truth: Pearson correlation, and the relative RMS error
``||a r - t|| / ||t||`` after the least-squares scale ``a``. Times are wall-clock
on this machine, per call and per iteration (the back projector's set-up is
inside the WB call).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from scipy.signal import fftconvolve

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from metrics import match_scale, pearson
from phantoms import add_noise, volume

from bigdecon import richardson_lucy
from bigdecon.solvers import psf_size_for, rl_wiener_butterworth, widefield_psf

OPTICS = dict(na=1.1, wavelength=0.52, refractive_index=1.33, pixel_size=0.1, z_step=0.25)
SWEEP = (
    dict(beta=None, order=10),
    dict(alpha=0.05, beta=None, order=10),
    dict(alpha=0.01),
    dict(beta=0.3),
    dict(order=10),
)


def scores(result: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    scaled = match_scale(result, truth)
    rms = float(np.linalg.norm(scaled - truth) / np.linalg.norm(truth))
    return pearson(result, truth), rms


def psf_shape(quick: bool) -> tuple[int, ...]:
    # The quick volume is too small for the full PSF even padded: cap its planes.
    return psf_size_for(**OPTICS, max_planes=31) if quick else psf_size_for(**OPTICS)


def scene(shape, photons: float, psf_shape, seed: int = 0):
    truth, _, _ = volume(shape=shape, n_filaments=max(4, shape[1] // 16), n_beads=max(6, shape[1] // 8), seed=4)
    psf = widefield_psf(psf_shape, **OPTICS)
    blurred = np.clip(fftconvolve(truth.astype(np.float64), psf, mode="same"), 0, None)
    return truth, psf, add_noise(blurred.astype(np.float32), gaussian=0.0, photons=photons, seed=seed)


def methods(rl_counts, wb_counts, sweep: bool) -> list:
    """``(label, fn(image, psf), iterations)`` for every method of the table."""
    out = [("raw", lambda f, psf: f, 0)]
    for n in rl_counts:
        out.append(("RL (accelerated, default)", lambda f, psf, n=n: richardson_lucy(f, psf, n), n))
    for n in rl_counts:
        out.append(("RL (plain)", lambda f, psf, n=n: richardson_lucy(f, psf, n, accelerate=False), n))
    for n in wb_counts:
        out.append(("WB (default)", lambda f, psf, n=n: rl_wiener_butterworth(f, psf, n), n))
    for kw in SWEEP if sweep else ():
        label = "WB " + ", ".join(f"{k}={v}" for k, v in kw.items())
        for n in wb_counts:
            out.append((label, lambda f, psf, n=n, kw=kw: rl_wiener_butterworth(f, psf, n, **kw), n))
    return out


def run(name: str, fn, image: np.ndarray, psf: np.ndarray, iterations: int, truth: np.ndarray) -> dict:
    t0 = time.perf_counter()
    out = fn(image, psf)
    seconds = time.perf_counter() - t0
    r, rms = scores(out, truth)
    return dict(method=name, iterations=iterations, pearson=r, rel_rms=rms, seconds=seconds)


def table(rows: list[dict]) -> str:
    lines = [
        "| photons | method | iterations | Pearson | rel. RMS | time (s) | s / iteration |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        per = f"{row['seconds'] / row['iterations']:.2f}" if row["iterations"] else "-"
        lines.append(
            f"| {row['photons']:g} | {row['method']} | {row['iterations']} | {row['pearson']:.4f} | "
            f"{row['rel_rms']:.4f} | {row['seconds']:.2f} | {per} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="24x96x96 and fewer iteration counts")
    ap.add_argument("--photons", type=float, nargs="+", default=[300.0, 3000.0])
    ap.add_argument("--sweep", action="store_true", help="also WB at other alpha / beta / order settings")
    args = ap.parse_args(argv)

    shape = (24, 96, 96) if args.quick else (48, 192, 192)
    rl_counts = (5, 20) if args.quick else (5, 10, 20, 40)
    wb_counts = (1, 2, 3) if args.quick else (1, 2, 3, 5)
    print(f"volume {shape}, PSF {psf_shape(args.quick)} from {OPTICS}")
    rows = []
    for photons in args.photons:
        truth, psf, noisy = scene(shape, photons, psf_shape(args.quick))
        runs = methods(rl_counts, wb_counts, args.sweep)
        for name, fn, n in runs:
            row = run(name, fn, noisy, psf, n, truth)
            row["photons"] = photons
            rows.append(row)
            print(
                f"{photons:6g} {name:28s} {n:3d}  pearson {row['pearson']:.4f}  rel_rms {row['rel_rms']:.4f}"
                f"  {row['seconds']:.2f} s",
                flush=True,
            )
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
