"""Seam error of step-5 blocks against the halo, one axis at a time, for the optics models (issue 21 item 5).

For the NA 1.1 widefield model as ``--na 1.1 --wavelength 0.52`` builds it at 0.3/0.1/0.1 µm (cut to
``--psf-energy``, default 0.99, above ``MODEL_FLOOR``), Richardson-Lucy with the schedule alpha (7
iterations, what a run does) and Wiener-Butterworth (2 iterations) on the mirror path: a slab cut
from a filament volume along one axis (the other two whole, so their faces are the whole volume's),
grown by ``halo`` on both sides and transformed at its own length as a run's block is, against the
same solver on the whole volume: max |slab - whole| / max(whole) over the slab's interior. The
planner's halo (``deconv_halo`` with ``psf_step``) is printed beside it.

    python benchmarks/measure_model_halo.py                          # ~6 min on 2 cores
    python benchmarks/measure_model_halo.py --energy 0.99 0.95 --kinds rl-schedule
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from helpers import filaments  # noqa: E402

from bigdecon.solvers import psf as optics  # noqa: E402
from bigdecon.solvers import richardson_lucy  # noqa: E402
from bigdecon.solvers.psf_prepare import MODEL_FLOOR, energy_crop  # noqa: E402
from bigdecon.solvers.richardson_lucy import deconv_halo, psf_step  # noqa: E402
from bigdecon.solvers.wiener_butterworth import rl_wiener_butterworth  # noqa: E402

ITERATIONS = {"rl-schedule": 7, "wb": 2}


def model(energy: float, pixel: float = 0.1, z_step: float = 0.3) -> np.ndarray:
    """The NA 1.1 widefield model, cut as a run cuts it (passes.request.optics_psf)."""
    shape = optics.psf_size_for(1.1, 0.52, 1.33, (pixel, pixel), z_step)
    psf = optics.widefield_psf(shape, 1.1, 0.52, 1.33, (pixel, pixel), z_step)
    return energy_crop(np.asarray(psf, np.float32), energy, MODEL_FLOOR)[0]


def solve(kind: str, g: np.ndarray, psf: np.ndarray) -> np.ndarray:
    if kind == "wb":
        return rl_wiener_butterworth(g, psf, ITERATIONS[kind])
    return richardson_lucy(g, psf, ITERATIONS[kind], alpha="schedule")


def seam_errors(kind: str, psf: np.ndarray, axis: int, halos: list[int], block: int, seed: int = 11) -> list[float]:
    """max |slab - whole| / max over a centred slab of ``block`` along ``axis``, per halo."""
    reach = max(halos)
    shape = [64, 112, 112]  # the other axes whole: a little wider than the PSF
    shape[axis] = block + 2 * reach + 2 * psf.shape[axis]
    volume = filaments(tuple(shape), seed=seed)[0]
    g = (volume / volume.max()).astype(np.float32)
    whole = solve(kind, g, psf)
    c = shape[axis] // 2
    lo, hi = c - block // 2, c - block // 2 + block
    want = np.take(whole, range(lo, hi), axis)
    out = []
    for h in halos:
        part = solve(kind, np.ascontiguousarray(np.take(g, range(lo - h, hi + h), axis)), psf)
        part = np.take(part, range(h, h + block), axis)
        out.append(float(np.abs(part - want).max() / whole.max()))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--energy", nargs="+", type=float, default=[0.99])
    parser.add_argument("--kinds", nargs="+", default=list(ITERATIONS), choices=list(ITERATIONS))
    parser.add_argument("--axes", nargs="+", default=["z", "y"], choices=["z", "y"])
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.25, 0.35, 0.5, 0.65, 0.8, 1.0])
    parser.add_argument("--seed", type=int, default=11, help="of the filament volume")
    parser.add_argument("--iterations", type=int, help="in place of RL 7 / WB 2 (e.g. 1: a pass of one iteration)")
    parser.add_argument("--halos", nargs="+", type=int, help="in place of --fractions of the planner's halo")
    args = parser.parse_args(argv)
    if args.iterations:
        ITERATIONS.update({k: args.iterations for k in ITERATIONS})
    for energy in args.energy:
        psf = model(energy)
        for kind in args.kinds:
            step = psf_step(psf) if kind != "wb" else None
            rule = deconv_halo(psf.shape, ITERATIONS[kind], kind, step)
            print(f"energy {energy:g}: PSF {psf.shape}, psf_step {psf_step(psf)}; {kind}: planner halo {rule}")
            for name in args.axes:
                axis = "zyx".index(name)
                halos = args.halos or sorted({max(1, round(f * rule[axis])) for f in args.fractions})
                t0 = time.perf_counter()
                errs = seam_errors(kind, psf, axis, halos, 16 if axis == 0 else 32, args.seed)
                cells = ", ".join(f"{h}: {e:.1e}" for h, e in zip(halos, errs))
                print(f"  {name} halo -> error  {cells}  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
