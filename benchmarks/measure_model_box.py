"""Image quality against the optics model's box: how much of the widefield model a run needs (issue 21 item 5).

Data made with an independent, much larger PSF: ``psfmodels``' vectorial widefield PSF (NA 1.1,
520 nm, water, 0.3/0.1/0.1 µm) in a 121x255x255 box (±18 µm in z, where every plane still holds
half the light of the focal plane), on ``benchmarks/bench_auto.py``'s structures (beads+filaments,
nuclei, membranes) made larger than the data and cropped after blurring, Poisson noise at
``--photons`` over a background of 10, Gaussian read noise 2. Deconvolved in memory
(``bigdecon.sparse_deconvolve``, no sparse step, background 0) with bigdecon's own widefield model
as ``--na 1.1 --wavelength 0.52`` builds it, cut to ``--psf-energy`` E of its light above
``MODEL_FLOOR``: each model box is a truncation of the same truth. Pearson against the truth over
the interior (4 planes, 16 px from each face), and against the truth blurred by (0.5, 1, 1) voxels.

``psfmodels`` is GPL-3: a benchmark tool only, never imported by the package
(``pip install psfmodels``).

    python benchmarks/measure_model_box.py                  # ~6 min on 2 cores
    python benchmarks/measure_model_box.py --energy 0.99 0.9 --structures nuclei
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage, signal

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import bigdecon  # noqa: E402
from bigdecon.solvers import psf as optics  # noqa: E402
from bigdecon.solvers.psf_prepare import MODEL_FLOOR, energy_crop  # noqa: E402

SHAPE = (48, 192, 192)
MARGIN = (40, 64, 64)  # the truth reaches this far beyond the data on each side
SOLVERS = {"RL 7": (1, 7), "RL 20": (1, 20), "WB 2": (3, 2)}


def true_psf() -> np.ndarray:
    import psfmodels as pm

    p = pm.make_psf(121, 255, dxy=0.1, dz=0.3, NA=1.1, wvl=0.52, ni=1.33, ni0=1.33, ns=1.33, model="vectorial")
    p = np.clip(p, 0, None).astype(np.float32)
    return p / p.sum()


def model(energy: float) -> np.ndarray:
    """bigdecon's widefield model, cut as a run cuts it (passes.request.optics_psf)."""
    box = optics.psf_size_for(1.1, 0.52, 1.33, (0.1, 0.1), 0.3)
    psf = optics.widefield_psf(box, 1.1, 0.52, 1.33, (0.1, 0.1), 0.3)
    return energy_crop(np.asarray(psf, np.float32), energy, MODEL_FLOOR)[0]


def make_data(structure: str, psf: np.ndarray, photons: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from bench_auto import STRUCTURES

    rng = np.random.default_rng(seed)
    big = tuple(s + 2 * m for s, m in zip(SHAPE, MARGIN))
    truth = STRUCTURES[structure](big, rng).astype(np.float32)
    truth /= truth.max()
    blurred = signal.fftconvolve(truth, psf, mode="same").clip(0, None)
    crop = tuple(slice(m, m + s) for s, m in zip(SHAPE, MARGIN))
    truth, blurred = truth[crop], blurred[crop]
    lam = blurred / blurred.max() * photons + 10.0
    raw = rng.poisson(lam).astype(np.float32) + rng.normal(0, 2.0, SHAPE).astype(np.float32)
    return np.clip(raw, 0, None).astype(np.float32), truth


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    inner = (slice(4, -4), slice(16, -16), slice(16, -16))
    return float(np.corrcoef(a[inner].ravel(), b[inner].ravel())[0, 1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--energy", nargs="+", type=float, default=[0.99, 0.95, 0.9, 0.8, 0.7])
    parser.add_argument("--structures", nargs="+", default=["beads+filaments", "nuclei", "membranes"])
    parser.add_argument("--photons", type=float, default=1000.0)
    args = parser.parse_args(argv)
    truth_psf = true_psf()
    models = {e: model(e) for e in args.energy}
    for structure in args.structures:
        t0 = time.perf_counter()
        raw, truth = make_data(structure, truth_psf, args.photons, seed=3)
        soft = ndimage.gaussian_filter(truth, (0.5, 1, 1))
        print(f"{structure}, {args.photons:g} photons: raw {pearson(raw, truth):.4f} / {pearson(raw, soft):.4f}")
        for energy, psf in models.items():
            cells = []
            for name, (kind, iters) in SOLVERS.items():
                out = bigdecon.sparse_deconvolve(
                    raw, psf=psf, psf_as_is=True, sparse_iters=0, background=0, deconv_type=kind, deconv_iters=iters
                )
                cells.append(f"{name} {pearson(out, truth):.4f} / {pearson(out, soft):.4f}")
            print(f"  E {energy:g} box {psf.shape}: " + ", ".join(cells), flush=True)
        print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
