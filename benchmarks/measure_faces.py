"""Objects cut by the volume's faces against the same voxels deep inside a larger volume (issue 21, item 6).

For each real 3-D set of ``../shared/realdata`` and an independent synthetic one, a crop whose faces lie
inside the volume is deconvolved alone and the larger volume around it is deconvolved too; at the crop's
faces the larger volume's result is the right answer (there they are interior). Printed per face (the
first/last ``--depth`` planes): ``err`` = mean |crop - larger| / mean(larger) over the face slab,
``bias`` = mean(crop) / mean(larger) - 1, and ``change`` = mean |larger - raw| / mean(larger) there (what
deconvolution does at those voxels: the scale an error is judged against). Run it with the bigdecon to
measure first on ``PYTHONPATH``::

    PYTHONPATH=. python benchmarks/measure_faces.py [--only nuclei-asym] [--stability]

``--stability``: the whole nuclei stack, 100 accelerated (adaptive) iterations, plane 0 / mean and max.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
import scipy.signal

import bigdecon
from bigdecon.solvers import rl_wiener_butterworth
from bigdecon.solvers.landweber import landweber
from bigdecon.solvers.psf import psf_size_for, widefield_psf
from bigdecon.solvers.psf_prepare import energy_crop, prepare_psf
from bigdecon.solvers.richardson_lucy import richardson_lucy

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from helpers import face_slab_errors

REAL = Path(os.environ.get("BIGDECON_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))
VOXEL = (0.29, 0.26, 0.26)
OPTICS = dict(na=1.25, wavelength=0.46, refractive_index=1.33)


def optics_psf(n_planes: int) -> np.ndarray:
    """The nuclei's widefield model (as tests/test_faces.py), symmetric: the mirror path."""
    shape = psf_size_for(pixel_size=VOXEL[1:], z_step=VOXEL[0], **OPTICS)
    shape = (min(shape[0], n_planes - 1 + n_planes % 2), *shape[1:])
    psf = widefield_psf(shape, pixel_size=VOXEL[1:], z_step=VOXEL[0], **OPTICS)
    return energy_crop(np.asarray(psf, np.float32))[0]


def comatic(psf: np.ndarray, shift: float = 0.08) -> np.ndarray:
    """``psf`` with each plane moved ``shift * (k - centre)**2 / centre`` px in x and 0.5 px in y: an
    asymmetric (measured-like) PSF, which takes the edge path."""
    c = psf.shape[0] // 2
    out = np.stack([ndi.shift(p, (0.5, shift * (k - c) ** 2 / max(c, 1)), order=1) for k, p in enumerate(psf)])
    out = np.clip(out, 0, None)
    return (out / out.sum()).astype(np.float32)


def nuclei() -> np.ndarray:
    import tifffile

    raw = tifffile.imread(REAL / "cells3d_nuclei" / "nuclei.tif").astype(np.float32)
    return np.clip(raw - np.percentile(raw, 0.5), 0, None)


def beads() -> tuple[np.ndarray, np.ndarray]:
    """The confocal bead stack less its dark level, and a PSF prepared from its brightest bead."""
    import tifffile

    raw = tifffile.imread(REAL / "mpicbg_confocal_beads" / "Bead_Image1_crop.tif").astype(np.float32)
    k, y, x = np.unravel_index(int(np.argmax(ndi.uniform_filter(raw, 3))), raw.shape)
    box = raw[max(0, k - 12) : k + 13, max(0, y - 20) : y + 21, max(0, x - 20) : x + 21]
    psf, _ = prepare_psf(box)
    return np.clip(raw - np.percentile(raw, 1), 0, None), np.asarray(psf, np.float32)


def flowdec() -> tuple[np.ndarray, np.ndarray]:
    import tifffile

    data = tifffile.imread(REAL / "flowdec_bead" / "data.tif").astype(np.float32)
    psf, _ = prepare_psf(tifffile.imread(REAL / "flowdec_bead" / "kernel.tif"))
    return data, np.asarray(psf, np.float32)


def synthetic(psf: np.ndarray, shape=(64, 160, 160), seed=0) -> np.ndarray:
    """Independent of bigdecon's generators: random ellipsoids and rods over a larger field, blurred
    there by ``scipy.signal.fftconvolve``, then Poisson noise (about 300 photons at the brightest)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape, dtype=np.float32)
    obj = np.zeros(shape, np.float32)
    for _ in range(60):
        c = rng.uniform(0, shape)
        r = rng.uniform((2, 3, 3), (6, 12, 12))
        obj += rng.uniform(0.3, 1.0) * (sum(((g - ci) / ri) ** 2 for g, ci, ri in zip(grid, c, r)) < 1)
    for _ in range(20):
        p = np.round(rng.uniform(0, shape)).astype(int)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        for t in range(-60, 60):
            q = np.round(p + t * d).astype(int)
            if all(0 <= qi < n for qi, n in zip(q, shape)):
                obj[tuple(q)] += 1.5
    blurred = np.clip(scipy.signal.fftconvolve(obj, psf, mode="same"), 0, None)
    return rng.poisson(blurred * 300 / blurred.max() + 2).astype(np.float32)


def solvers(psf: np.ndarray) -> dict:
    return {
        "RL 7 schedule": lambda f: richardson_lucy(f, psf, 7, alpha="schedule"),
        "RL 10 adaptive": lambda f: richardson_lucy(f, psf, 10),
        "RL 10 schedule": lambda f: richardson_lucy(f, psf, 10, alpha="schedule"),
        "RL 30 schedule": lambda f: richardson_lucy(f, psf, 30, alpha="schedule"),
        "Landweber 10": lambda f: landweber(f, psf, 10),
        "WB 2": lambda f: rl_wiener_butterworth(f, psf, 2),
    }


def cases(only: str | None):
    n = nuclei()
    sym = optics_psf(60)
    asym = comatic(sym)
    lateral = (slice(None), slice(40, 152), slice(40, 152))
    zcrop = (slice(12, 48), slice(None), slice(None))
    found = {
        "nuclei, optics (mirror path), y/x faces": (n[:, 32:224, 32:224], lateral, sym, "yx"),
        "nuclei, optics (mirror path), z faces": (n[:, 64:192, 64:192], zcrop, sym, "z"),
        "nuclei, comatic optics (edge path), y/x faces": (n[:, 32:224, 32:224], lateral, asym, "yx"),
        "nuclei, comatic optics (edge path), z faces": (n[:, 64:192, 64:192], zcrop, asym, "z"),
    }
    b, bpsf = beads()
    found["confocal beads, bead PSF (edge path), all faces"] = (
        b,
        (slice(6, -6), slice(30, -30), slice(30, -30)),
        bpsf,
        "zyx",
    )
    d, dpsf = flowdec()
    found["flowdec bead, its kernel (edge path), all faces"] = (
        d,
        (slice(12, -12), slice(12, -12), slice(12, -12)),
        dpsf,
        "zyx",
    )
    spsf = comatic(optics_psf(31))
    found["synthetic, comatic optics (edge path), all faces"] = (
        synthetic(spsf),
        (slice(14, -14), slice(32, -32), slice(32, -32)),
        spsf,
        "zyx",
    )
    for name, case in found.items():
        if only is None or only in name:
            yield name, case


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only")
    ap.add_argument("--solver")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--stability", action="store_true")
    args = ap.parse_args()
    print("bigdecon from", Path(bigdecon.__file__).parent)
    if args.stability:
        n = nuclei()
        for label, psf in (("comatic (edge)", comatic(optics_psf(60))), ("optics (mirror)", optics_psf(60))):
            t = time.time()
            out = richardson_lucy(n, psf, 100)
            print(
                f"{label}: RL 100 adaptive plane 0 / mean {out[0].mean() / out.mean():.3f} (raw {n[0].mean() / n.mean():.3f}),"
                f" max / raw max {out.max() / n.max():.2f}, {time.time() - t:.0f} s",
                flush=True,
            )
        return
    for name, (vol, crop, psf, axes) in cases(args.only):
        print(f"\n{name}: {vol.shape} -> crop {vol[crop].shape}, PSF {psf.shape}")
        for sname, fn in solvers(psf).items():
            if args.solver and args.solver not in sname:
                continue
            t = time.time()
            ref, got = fn(vol)[crop], fn(vol[crop])
            tab = face_slab_errors(got, ref, vol[crop], axes, args.depth)
            cells = " ".join(f"{k} {e:.3f}/{b:+.3f}/{c:.2f}" for k, (e, b, c) in tab.items())
            print(f"  {sname:15s} err/bias/change: {cells}  ({time.time() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
