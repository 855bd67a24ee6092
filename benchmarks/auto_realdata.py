"""``--auto`` on the real images of ../shared/realdata (no truth): the choice, beside RL 20 and the defaults.

Writes ``docs/figures/auto_realdata.png`` (one row per image: raw, RL 20, the
defaults, the ``--auto`` choice; the plane with the most signal) and prints a
table of the choices with the held-out loss of each against RL 20.

Usage::

    python benchmarks/auto_realdata.py [--realdata ../shared/realdata] [--out docs/figures/auto_realdata.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tifffile

import bigdecon
from bigdecon.suggest import suggest_parameters

# (name, file, axes, PSF): FWHM in pixels from the publishers' voxel sizes, or the kernel shipped with the data.
IMAGES = [
    ("C. elegans Airyscan (2-D)", "sdeconv_celegans_airyscan/celegans.tif", "yx", {"fwhm": 3.3}),
    ("membranes, time-lapse", "mpicbg_membrane_timelapse/membrane_2d_timelapse.tif", "tyx", {"fwhm": 3.0}),
    ("nuclei, cells3d", "cells3d_nuclei/nuclei.tif", "zyx", {"fwhm": (3.0, 1.5, 1.5)}),
    ("confocal beads", "mpicbg_confocal_beads/Bead_Image1_crop.tif", "zyx", {"fwhm": (5.0, 9.0, 9.0)}),
    ("widefield bead (flowdec)", "flowdec_bead/data.tif", "zyx", {"psf": "flowdec_bead/kernel.tif"}),
]


def plane(a: np.ndarray) -> np.ndarray:
    return a if a.ndim == 2 else a[int(np.argmax([np.percentile(p, 99.9) for p in a]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", default=str(Path(__file__).resolve().parents[2] / "shared" / "realdata"))
    parser.add_argument("--out", default="docs/figures/auto_realdata.png")
    args = parser.parse_args()
    root = Path(args.realdata)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(len(IMAGES), 4, figsize=(12, 3.1 * len(IMAGES)))
    print("| image | --auto chose | why | loss of defaults / RL 20 | tune s |")
    print("|---|---|---|---|---|")
    for row, (name, file, axes, psf) in zip(axs, IMAGES):
        raw = tifffile.imread(root / file).astype(np.float32)
        if "psf" in psf:
            psf = {"psf": tifffile.imread(root / psf["psf"]).astype(np.float32)}
        t0 = time.perf_counter()
        s = suggest_parameters(raw, axes=axes, **psf)
        tune = time.perf_counter() - t0
        dflt = next((c["relative"] for c in s.candidates if c["name"].startswith("defaults")), float("nan"))
        print(f"| {name} | {s.winner} | {s.why} | {dflt:.4f} | {tune:.1f} |", flush=True)
        outs = [
            ("raw", raw),
            ("RL 20", bigdecon.sparse_deconvolve(raw, **psf, sparse_iters=0, background=0, deconv_iters=20)),
            ("defaults", bigdecon.sparse_deconvolve(raw, **psf)),
            (f"--auto: {s.winner}", bigdecon.sparse_deconvolve(raw, **psf, **s.as_kwargs())),
        ]
        index = int(np.argmax([np.percentile(p, 99.9) for p in raw])) if raw.ndim == 3 else None
        for ax, (title, img) in zip(row, outs):
            show = img[index] if index is not None else img
            ax.imshow(show, cmap="gray", vmin=float(np.percentile(show, 0.5)), vmax=float(np.percentile(show, 99.8)))
            ax.set_title(f"{name}: {title}" if title == "raw" else title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
