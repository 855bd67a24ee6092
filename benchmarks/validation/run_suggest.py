"""Parameters from the data: the sweep that the rule of :mod:`bigdecon.suggest` is fitted to, and its check.

    python benchmarks/validation/run_suggest.py --out docs            # table + figure (held-out phantoms)
    python benchmarks/validation/run_suggest.py --sweep                # the grid the rule was fitted to

Phantoms (one per kind and photon count; ``--sweep`` uses seed 0, the table
seed 1, so the table is a hold-out check of a rule fitted on other noise and
structure draws):

* ``sim2d``: a SIM-like 2-D time-lapse, :func:`bigdecon.data.filaments_timelapse`,
  8 x 128 x 128, PSF FWHM 3.5 px, background 10 photons;
* ``wf3d``: a widefield-like volume, :func:`bigdecon.data.widefield_volume`,
  24 x 96 x 96, NA 1.1 water, 0.52 um, 0.1 um pixels, 0.25 um planes:
  Gaussian PSF FWHM (z, y, x) = (3.14, 2.41, 2.41) px, background 10 photons;

both with Poisson noise at a peak of 30, 100, 300, 1000, 3000 photons plus
Gaussian read noise of 2 photons. Scores: Pearson r against the truth, and
SSIM (scikit-image, 7-pixel window) of the result brought to the truth's units
by one least-squares factor (per frame and averaged for a time-lapse, over the
volume for a z-stack).

The grid (``--sweep``): background 0 and 1; fidelity 50, 150, 500; sparsity
0.5, 2, 5, 10 (background 1 only at fidelity 150, sparsity 2 and 10); each
followed by 7 and 20 Richardson-Lucy iterations; and Richardson-Lucy alone
(``sparse_iters=0, background=0``) at 7, 20 and 40 iterations. The stages are
run with the public solvers so one sparse solve serves both iteration counts;
a check at the start confirms that this equals :func:`bigdecon.sparse_deconvolve`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import metrics as M  # noqa: E402

import bigdecon  # noqa: E402
from bigdecon.data import filaments_timelapse, widefield_volume  # noqa: E402
from bigdecon.suggest import suggest_parameters, would_differ  # noqa: E402

PHOTONS = (30, 100, 300, 1000, 3000)
READ_NOISE = 2.0
BACKGROUND = 10.0
SIM_FWHM = 3.5
# NA 1.1 water (n 1.33), 0.52 um emission, 0.1 um pixels, 0.25 um planes.
NA, N_IMM, WAVELENGTH, PIXEL, ZSTEP = 1.1, 1.33, 0.52, 0.1, 0.25
WF_FWHM = (
    round(0.88 * WAVELENGTH / (N_IMM - np.sqrt(N_IMM**2 - NA**2)) / ZSTEP, 2),
    round(0.51 * WAVELENGTH / NA / PIXEL, 2),
    round(0.51 * WAVELENGTH / NA / PIXEL, 2),
)
# The PSF that blurs the widefield phantom: None is the Gaussian of WF_FWHM. One-line
# switch to a Born-Wolf model, e.g. bigdecon.widefield_psf(...), when it exists.
WF_PSF = None
SIM_SHAPE = (8, 128, 128)
WF_SHAPE = (24, 96, 96)

FIDELITY = (50.0, 150.0, 500.0)
SPARSITY = (0.5, 2.0, 5.0, 10.0)
ITERS = (7, 20)
RL_ITERS = (7, 20, 40)
DEFAULTS = dict(sparse_iters=100, fidelity=150.0, sparsity=10.0, tcontinuity=0.5, background=1, deconv_iters=7)
RL_ONLY = dict(sparse_iters=0, background=0, deconv_iters=20)


def phantom(kind: str, photons: float, seed: int):
    """``(raw, truth, fwhm, axes)`` of one phantom."""
    if kind == "sim2d":
        raw, truth = filaments_timelapse(
            SIM_SHAPE, SIM_FWHM, photons=photons, background=BACKGROUND, noise=READ_NOISE, seed=seed
        )
        return raw, truth, SIM_FWHM, "tyx"
    raw, truth = widefield_volume(
        WF_SHAPE, WF_FWHM, psf=WF_PSF, photons=photons, background=BACKGROUND, noise=READ_NOISE, seed=seed
    )
    return raw, truth, WF_FWHM, "zyx"


def score(result: np.ndarray, truth: np.ndarray, axes: str) -> tuple[float, float]:
    """Pearson r and SSIM (after a least-squares intensity factor) against the truth."""
    t = truth.astype(np.float64) / truth.max()
    r = M.match_scale(result, t)
    if axes == "tyx":
        s = float(np.mean([M.ssim(r[i], t[i], data_range=1.0) for i in range(t.shape[0])]))
    else:
        s = M.ssim(r, t, data_range=1.0)
    return M.pearson(result, t), s


def staged(raw, fwhm, *, background, fidelity, sparsity, sparse_iters=100, tcontinuity=0.5, iters=(7,)):
    """The pipeline with the public solvers, one result per RL iteration count."""
    scale = float(raw.max())
    f = raw.astype(np.float32) / np.float32(scale)
    if background:
        f = f - bigdecon.estimate_background(f, background, mean=float(f.mean(dtype=np.float64)))
        np.maximum(f, 0, out=f)
    f = f / np.float32(f.max())
    if sparse_iters:
        f = bigdecon.sparse_hessian(
            f,
            iterations=sparse_iters,
            fidelity=fidelity,
            sparsity=sparsity,
            tcontinuity=tcontinuity,
            coupled=f.ndim == 3 and f.shape[0] >= 3 and tcontinuity > 0,
        )
        f = np.maximum(f, 0) / np.float32(f.max())
    psf = bigdecon.gaussian_psf(fwhm)
    yx = min(f.shape[-2:]) // 6
    pad = (psf.shape[0], yx, yx) if psf.ndim == 3 else yx
    return {n: bigdecon.richardson_lucy(f, psf, n, pad=pad) * np.float32(scale) for n in iters}


def sweep(seed: int = 0) -> list[dict]:
    """Every grid point on every phantom: a list of records."""
    raw, truth, fwhm, axes = phantom("sim2d", 300, seed)
    ref = bigdecon.sparse_deconvolve(raw, fwhm=fwhm, **DEFAULTS)
    mine = staged(raw, fwhm, background=1, fidelity=150.0, sparsity=10.0)[7]
    err = float(np.abs(ref - mine).max() / ref.max())
    print(f"staged vs sparse_deconvolve (defaults, sim2d 300): max |diff| / max = {err:.1e}")
    if err > 1e-4:
        raise SystemExit("the staged pipeline does not match sparse_deconvolve")
    records = []
    for kind in ("sim2d", "wf3d"):
        for photons in PHOTONS:
            t0 = time.perf_counter()
            raw, truth, fwhm, axes = phantom(kind, photons, seed)
            est = suggest_parameters(raw, fwhm=fwhm, axes=axes)
            base = dict(kind=kind, photons=photons, seed=seed, **est.estimates())

            def add(setting, result, base=base, truth=truth, axes=axes):
                p, s = score(result, truth, axes)
                records.append(dict(base, **setting, pearson=round(p, 4), ssim=round(s, 4)))

            add(dict(sparse_iters=0, background=0, deconv_iters=0, fidelity=0, sparsity=0), raw)
            for n, out in staged(
                raw, fwhm, background=0, fidelity=0, sparsity=0, sparse_iters=0, iters=RL_ITERS
            ).items():
                add(dict(sparse_iters=0, background=0, deconv_iters=n, fidelity=0, sparsity=0), out)
            for bg in (0, 1):
                for fid in FIDELITY:
                    for sp in SPARSITY:
                        if bg and not (fid == 150.0 and sp in (2.0, 10.0)):
                            continue
                        outs = staged(raw, fwhm, background=bg, fidelity=fid, sparsity=sp, iters=ITERS)
                        for n, out in outs.items():
                            add(dict(sparse_iters=100, background=bg, deconv_iters=n, fidelity=fid, sparsity=sp), out)
            rows = [r for r in records if r["kind"] == kind and r["photons"] == photons]
            best = max(rows, key=lambda r: r["pearson"] + r["ssim"])
            rl = next(r for r in rows if r["sparse_iters"] == 0 and r["deconv_iters"] == 20)
            print(
                f"{kind} {photons:5d} ph: RL20 {rl['pearson']:.3f}/{rl['ssim']:.3f}  best "
                f"bg{best['background']} fid {best['fidelity']:g} sp {best['sparsity']:g} it {best['deconv_iters']}"
                f" {best['pearson']:.3f}/{best['ssim']:.3f}  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs", help="folder for suggest.md and figures/ (default docs)")
    ap.add_argument("--sweep", action="store_true", help="run the fitting grid instead of the table")
    ap.add_argument("--json", default=None, help="where to write the numbers (default next to this script)")
    args = ap.parse_args(argv)
    if args.sweep:
        records = sweep(seed=0)
        path = Path(args.json or HERE / "suggest_sweep.json")
        path.write_text(json.dumps(records, indent=1))
        print(f"wrote {path} ({len(records)} records)")
        return 0
    from table import table_main  # noqa: PLC0415

    return table_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
