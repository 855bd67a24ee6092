"""How far step 5 couples voxels with PSFs whose light reaches their box's faces (docs/step5_blocks.md).

For each PSF, the solver on an interior block (z whole, 48 px in y and x) grown by a halo of
``factor`` times the half-support rule of ``deconv_halo``, against the same solver on the whole
volume: max |block - whole| / max(whole) inside the block. The ``psf_step`` rule's halo is printed
beside it. PSFs: the NA 1.1 widefield model as ``--na 1.1 --wavelength 0.52`` builds it (at
0.3/0.1 µm and at 0.8/0.4 µm), and the real-style 61x128x128 bead stack of tests/test_psf_light.py
prepared for 0.3 µm data.

    python benchmarks/measure_light_halo.py                       # every case, ~3 min on 2 cores
    python benchmarks/measure_light_halo.py --cases model-0.8 --factors 1 1.5 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from helpers import filaments  # noqa: E402

from bigdecon.solvers import landweber, richardson_lucy  # noqa: E402
from bigdecon.solvers import psf as optics  # noqa: E402
from bigdecon.solvers.psf import energy_crop as light_cut  # noqa: E402
from bigdecon.solvers.psf_prepare import MODEL_FLOOR, energy_crop, prepare_psf  # noqa: E402
from bigdecon.solvers.richardson_lucy import deconv_halo, psf_half_support, psf_step  # noqa: E402


def model(pixel: float, z_step: float) -> np.ndarray:
    """The NA 1.1 widefield model, cropped as a run crops it."""
    shape = optics.psf_size_for(1.1, 0.52, 1.33, (pixel, pixel), z_step)
    psf = optics.widefield_psf(shape, 1.1, 0.52, 1.33, (pixel, pixel), z_step)
    return light_cut(energy_crop(psf, 0.99, MODEL_FLOOR)[0])


def bead() -> np.ndarray:
    import tifffile
    from test_psf_light import real_style_bead

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bead.tif"
        real_style_bead(path)
        psf, _ = prepare_psf(tifffile.imread(path), (0.1, 0.1, 0.1), (0.3, 0.1, 0.1))
    return light_cut(psf)


CASES = {
    "model-0.3": (lambda: model(0.1, 0.3), (40, 480, 480), 7, ("rl-schedule",)),
    "model-0.8": (lambda: model(0.4, 0.8), (32, 200, 200), 7, ("rl-schedule", "landweber")),
    "bead-0.3": (bead, (40, 400, 400), 10, ("rl-schedule",)),
}


def solve(kind: str, g: np.ndarray, psf: np.ndarray, iterations: int, pad) -> np.ndarray:
    if kind == "landweber":
        return landweber(g, psf, iterations, pad=pad)
    return richardson_lucy(g, psf, iterations, alpha="schedule", pad=pad)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--factors", nargs="+", type=float, default=[1.0, 1.25, 1.5, 2.0])
    args = parser.parse_args(argv)
    for name in args.cases:
        make, shape, iterations, kinds = CASES[name]
        psf = make()
        volume = filaments(shape, seed=11)[0]
        g = (volume / volume.max()).astype(np.float32)
        z_pad = ((psf_half_support(psf.shape)[0],) * 2, (0, 0), (0, 0))  # the z faces are the volume's
        c = shape[1] // 2
        for kind in kinds:
            rule = deconv_halo(psf.shape, iterations, kind)
            step = deconv_halo(psf.shape, iterations, kind, psf_step(psf))
            print(f"{name} {psf.shape} {kind} {iterations} it: half-support rule {rule}, psf_step rule {step}")
            whole = solve(kind, g, psf, iterations, None)
            for factor in args.factors:
                h = int(rule[1] * factor)
                block = g[:, c - 24 - h : c + 24 + h, c - 24 - h : c + 24 + h]
                part = solve(kind, block, psf, iterations, z_pad)[:, h:-h, h:-h]
                err = float(np.abs(part - whole[:, c - 24 : c + 24, c - 24 : c + 24]).max() / whole.max())
                print(f"  halo {factor:g} x rule = {h} px: {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
