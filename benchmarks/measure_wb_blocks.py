"""3-D Wiener-Butterworth (deconv_type 3) on (z, y, x) blocks with a halo: block vs whole volume.

    python benchmarks/measure_wb_blocks.py                 # ~5 min on 2 shared cores
    python benchmarks/measure_wb_blocks.py --edge          # also the edge-padded FFT path
    python benchmarks/measure_wb_blocks.py --psf full --full --shape 48,256,256 --halos 3,4,5,6
                                                           # the Born-Wolf PSF at its full 61x69x69

On the phantom of ``measure_step5_halo.py`` (default 48 x 160 x 160; blocks of
16 x 64 x 64: a corner, an interior and two face blocks), max |block - whole| /
max(whole) over those blocks for halos of 2-6 PSF half-supports and 1-3
iterations, with :func:`bigdecon.solvers.rl_wiener_butterworth` as step 5 calls
it:

* ``mirror``: the default for a PSF symmetric along every axis (a Gaussian, the
  Born-Wolf widefield PSF): DCT-II, no padding, the back projector as the DCT
  eigenvalues of a finite kernel (:func:`bigdecon.solvers.mirror_backprojector`),
  so the ``kind="wb"`` halo (the light cone) makes blocks exact;
* ``edge`` (``--edge``): edge padding by the half-support and a periodic real
  FFT (what an asymmetric PSF gets), a block padded only at the data set's faces.

Then the error at :func:`bigdecon.solvers.richardson_lucy.deconv_halo`'s
``kind="wb"`` halo, the Pearson r of the whole-volume result against the truth
and its time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import measure_step5_halo as H  # noqa: E402

import bigdecon  # noqa: E402
from bigdecon.solvers import psf_size_for, widefield_psf  # noqa: E402
from bigdecon.solvers.richardson_lucy import deconv_halo, psf_half_support  # noqa: E402
from bigdecon.solvers.wiener_butterworth import rl_wiener_butterworth  # noqa: E402

OPTICS = dict(na=1.1, wavelength=0.52, refractive_index=1.33, pixel_size=0.1, z_step=0.25)


def psfs():
    return {
        "gaussian (6, 3, 3)": bigdecon.gaussian_psf((6.0, 3.0, 3.0)),
        # NA 1.1 water, 0.52 um, 0.1 um pixels, 0.25 um steps (tests/test_wiener_butterworth.py)
        "widefield NA 1.1": widefield_psf(
            (21, 31, 31), na=1.1, wavelength=0.52, refractive_index=1.33, pixel_size=0.1, z_step=0.25
        ),
        # The same optics at the size psf_size_for gives (61 x 69 x 69), what the CLI computes (--full).
        "full widefield NA 1.1": widefield_psf(psf_size_for(**OPTICS), **OPTICS),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", default="1,2,3")
    ap.add_argument("--halos", default="2,3,4,5,6")
    ap.add_argument("--shape", default="48,160,160")
    ap.add_argument("--edge", action="store_true", help="also the edge-padded FFT path")
    ap.add_argument("--psf", default="", help="only PSFs whose name contains this")
    ap.add_argument("--full", action="store_true", help="also the widefield PSF at its full size (61 x 69 x 69)")
    args = ap.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    block, which = (16, 64, 64), [(0, 0, 0), (1, 1, 1), (2, 2, 2), (1, 1, 0)]
    rules = ["mirror"] + (["edge"] if args.edge else [])
    for label, psf in psfs().items():
        if args.psf not in label or (label.startswith("full") and not args.full):
            continue
        truth, image = H.phantom(shape, psf, seed=1)
        half = psf_half_support(psf.shape)
        t = truth.astype(np.float64).ravel()
        print(f"{label}: PSF {psf.shape}, half-support {half}, image {shape}, blocks {block}", flush=True)
        for it in (int(i) for i in args.iterations.split(",")):
            for rule in rules:

                def solve(a, pad, it=it, rule=rule, psf=psf, half=half):
                    return rl_wiener_butterworth(a, psf, it, pad=half if pad is None else pad, boundary=rule)

                t0 = time.perf_counter()
                whole = solve(image, None)
                dt = time.perf_counter() - t0
                r = float(np.corrcoef(whole.astype(np.float64).ravel(), t)[0, 1])
                print(f"  {rule:6s} it {it}: Pearson {r:.4f} ({dt:.1f} s whole volume)", flush=True)
                peak = float(whole.max())
                halos = [
                    (f"{float(m):g} x half", tuple(int(np.ceil(float(m) * h)) for h in half))
                    for m in args.halos.split(",")
                ]
                halos.append(("deconv_halo wb", deconv_halo(psf.shape, it, "wb")))
                for name, halo in halos:
                    parts = H.blockwise(solve, image, block, halo, half, which)
                    err = max(float(np.abs(v - whole[s]).max()) for s, v in parts.values()) / peak
                    print(f"  {rule:6s} it {it} halo {name:>14} = {halo}: {err:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
