"""``--auto`` against plain Richardson-Lucy and the defaults on held-out phantoms.

The phantoms come from a generator written only for this benchmark (not
``bigdecon.data``, on whose phantoms the selection was developed): beads and
filaments, smooth textured nuclei-like blobs, and membranes (the sheets of a
3-D Voronoi tessellation), blurred with PSFs from ``psfmodels`` (an
independent PSF package: vectorial at NA 1.1 in water, scalar at NA 0.8 in
air), with Poisson photons at 50-1000 at the peak, a background, a camera
offset and read noise. The PSF is given to bigdecon as an array (as a PSF
file would be). Scores: Pearson r against the truth in the interior.

``psfmodels`` is GPL-3: it is used here only, never by the package. Install it with
``pip install psfmodels``.

Usage::

    python benchmarks/bench_auto.py            # every case, a table on stdout
    python benchmarks/bench_auto.py --quick    # two cases
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy import ndimage, signal

import bigdecon
from bigdecon.suggest import suggest_parameters

SHAPE = (40, 160, 160)
PAD = 12  # the truth is made larger and cropped after blurring: no artificial edges


def psf_for(kind: str) -> np.ndarray:
    """``vectorial``: NA 1.1 water, 520 nm, 0.1 um pixels, 0.25 um planes; ``scalar``: NA 0.8 air, 600 nm,
    0.15 um pixels, 0.4 um planes."""
    import psfmodels as pm

    if kind == "vectorial":
        p = pm.make_psf(31, 63, dxy=0.1, dz=0.25, NA=1.1, wvl=0.52, ni=1.33, ni0=1.33, ns=1.33, model="vectorial")
    else:
        p = pm.make_psf(21, 41, dxy=0.15, dz=0.4, NA=0.8, wvl=0.6, ni=1.0, ni0=1.0, ns=1.0, model="scalar")
    p = np.clip(p, 0, None).astype(np.float32)
    return p / p.sum()


def beads_filaments(shape, rng):
    t = np.zeros(shape, np.float32)
    n = int(np.prod(shape) / 40000)
    idx = tuple(rng.integers(0, s, n) for s in shape)
    t[idx] = rng.uniform(0.3, 1.0, n)
    for _ in range(max(12, n // 2)):
        p = rng.uniform([0, 0, 0], shape)
        d = rng.normal(size=3)
        bright = rng.uniform(0.15, 0.5)
        for _step in range(600):
            d = d / np.linalg.norm(d) + rng.normal(scale=0.08, size=3)
            d[0] *= 0.4  # filaments lie mostly in the plane
            p = p + 0.5 * d / np.linalg.norm(d)
            i = tuple(int(v) for v in p)
            if not all(0 <= a < s for a, s in zip(i, shape)):
                break
            t[i] = max(t[i], bright)
    return ndimage.gaussian_filter(t, 0.6)  # beads and filaments about 1.4 px wide


def nuclei(shape, rng):
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    t = np.zeros(shape, np.float32)
    texture = ndimage.gaussian_filter(rng.normal(size=shape).astype(np.float32), 2.0)
    texture = 0.6 + 0.4 * texture / (np.abs(texture).max() + 1e-9)
    for _ in range(int(np.prod(shape[1:]) / 2500)):
        c = rng.uniform([0, 0, 0], shape)
        r = rng.uniform([4, 10, 10], [8, 20, 20])
        dist = np.sqrt(((zz - c[0]) / r[0]) ** 2 + ((yy - c[1]) / r[1]) ** 2 + ((xx - c[2]) / r[2]) ** 2)
        t = np.maximum(t, rng.uniform(0.3, 1.0) / (1 + np.exp((dist - 1) * 12)))
    return t * texture


def membranes(shape, rng):
    seeds = rng.uniform([0, 0, 0], shape, size=(int(np.prod(shape) / 30000) + 4, 3))
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1).T * np.array([2.5, 1, 1], np.float32)
    from scipy.spatial import cKDTree

    d, _ = cKDTree(seeds * np.array([2.5, 1, 1])).query(grid, k=2)
    gap = (d[:, 1] - d[:, 0]).reshape(shape)
    sheet = np.exp(-((gap / 1.0) ** 2)).astype(np.float32)
    return sheet * (0.5 + 0.5 * ndimage.gaussian_filter(rng.random(shape).astype(np.float32), 6) * 2)


STRUCTURES = {"beads+filaments": beads_filaments, "nuclei": nuclei, "membranes": membranes}


def make_case(structure: str, psf: np.ndarray, photons: float, seed: int):
    rng = np.random.default_rng(seed)
    big = tuple(s + 2 * PAD for s in SHAPE)
    truth = STRUCTURES[structure](big, rng).astype(np.float32)
    truth /= truth.max()
    blurred = signal.fftconvolve(truth, psf, mode="same").clip(0, None)
    crop = (slice(PAD, -PAD),) * 3
    truth, blurred = truth[crop], blurred[crop]
    background = rng.uniform(5, 20)
    lam = blurred / blurred.max() * photons + background
    offset, read = rng.uniform(80, 120), rng.uniform(1.5, 4.0)
    raw = rng.poisson(lam).astype(np.float32) + offset + rng.normal(0, read, SHAPE).astype(np.float32)
    return raw.astype(np.float32), truth


def pearson(a, b):
    inner = (slice(4, -4), slice(12, -12), slice(12, -12))
    return float(np.corrcoef(a[inner].ravel(), b[inner].ravel())[0, 1])


CASES = [
    ("beads+filaments", "vectorial", 300),
    ("beads+filaments", "scalar", 80),
    ("nuclei", "scalar", 600),
    ("nuclei", "vectorial", 50),
    ("membranes", "vectorial", 1000),
    ("membranes", "scalar", 150),
]


def run_case(structure: str, kind: str, photons: float, seed: int) -> dict:
    psf = psf_for(kind)
    raw, truth = make_case(structure, psf, photons, seed)
    t0 = time.perf_counter()
    s = suggest_parameters(raw, psf=psf)
    tune_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    defaults = bigdecon.sparse_deconvolve(raw, psf=psf)
    defaults_s = time.perf_counter() - t0
    rl = bigdecon.sparse_deconvolve(raw, psf=psf, sparse_iters=0, background=0, deconv_iters=20)
    auto = bigdecon.sparse_deconvolve(raw, psf=psf, **s.as_kwargs())
    return dict(
        case=f"{structure}, {kind}, {photons:g} ph",
        raw=pearson(raw, truth),
        rl20=pearson(rl, truth),
        defaults=pearson(defaults, truth),
        auto=pearson(auto, truth),
        choice=s.winner,
        tune_s=round(tune_s, 1),
        defaults_s=round(defaults_s, 1),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two cases")
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    rows = []
    print("| case | raw | RL 20 | defaults | --auto | auto - RL | choice | tune s | defaults s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, (structure, kind, photons) in enumerate(CASES[:2] if args.quick else CASES):
        r = run_case(structure, kind, photons, args.seed + i)
        rows.append(r)
        print(
            f"| {r['case']} | {r['raw']:.3f} | {r['rl20']:.3f} | {r['defaults']:.3f} | **{r['auto']:.3f}** | "
            f"{r['auto'] - r['rl20']:+.3f} | {r['choice']} | {r['tune_s']} | {r['defaults_s']} |",
            flush=True,
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("raw", "rl20", "defaults", "auto")}
    print(
        f"| mean | {mean['raw']:.3f} | {mean['rl20']:.3f} | {mean['defaults']:.3f} | **{mean['auto']:.3f}** | "
        f"{mean['auto'] - mean['rl20']:+.3f} | | | |"
    )
    ok = all(r["auto"] >= r["rl20"] - 0.005 and r["auto"] >= r["defaults"] for r in rows)
    print(
        f"targets (auto >= RL20 - 0.005 and >= defaults on every case; mean above RL): "
        f"{ok and mean['auto'] > mean['rl20']}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
