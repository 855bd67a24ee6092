"""bigdecon's deskew against an established tool's: pyclesperanto (clEsperanto, the deskew of napari-lattice).

pyclesperanto runs here on the CPU through an OpenCL driver (pocl, shipped in
the pyopencl wheel). It is not a dependency of bigdecon: give a Python that has
it with ``--cle-python`` (and, for pocl, ``OCL_ICD_FILENAMES`` pointing at
pocl's library). Two comparisons on one synthetic skewed stack (blurred beads,
independent of both tools):

* **deskew (shear only)**: ``bigdecon.deskew`` against ``cle.affine_transform``
  with the shear matrix, linear interpolation, on the input padded to
  bigdecon's width. clesperanto shears about voxel centres (plane k moves by
  ``(k + 1/2) * shear``), cudaDecon and bigdecon by ``k * shear``; the script
  reports both, as is and with clesperanto's half-plane shift taken out.
* **deskew + rotate to the coverslip frame**: bigdecon's ``--rotate``
  (:func:`~bigdecon.solvers.deskew.rotate_block` on the whole stack) against
  ``cle.deskew_x`` (isotropic voxels of the lateral pixel size): output shapes,
  where each bead lands, and the correlation over the common region.

    OCL_ICD_FILENAMES=/path/to/libpocl.so python benchmarks/bench_deskew_tools.py --cle-python /venv-cle/bin/python
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from scipy import ndimage

ANGLE, DZ, DX = 31.5, 0.4, 0.104

CLE_SCRIPT = r"""
import json, sys, time
import numpy as np
import pyclesperanto as cle

stack = np.load(sys.argv[1])
width, shear, angle, dz, dx = json.loads(sys.argv[2])
padded = np.zeros(stack.shape[:2] + (width,), np.float32)
padded[..., : stack.shape[2]] = stack
out = {}
for name, shift in (("as_is", 0.0), ("centred", -0.5 * shear)):
    matrix = np.array([[1, 0, shear, shift], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float64)
    t0 = time.perf_counter()
    result = np.asarray(cle.affine_transform(padded, transform_matrix=matrix, interpolate=True, resize=False))
    out[name] = time.perf_counter() - t0
    np.save(sys.argv[3] + f"_shear_{name}.npy", result)
t0 = time.perf_counter()
rotated = np.asarray(cle.deskew_x(stack, angle=angle, voxel_size_x=dx, voxel_size_y=dx, voxel_size_z=dz))
out["rotate"] = time.perf_counter() - t0
np.save(sys.argv[3] + "_rotate.npy", rotated)
print(json.dumps({"seconds": out, "device": str(cle.select_device().name)}))
"""


def skewed_beads(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Blurred beads placed on the recorded (skewed) grid: what a deskew must move, not a model of optics."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    stack = np.zeros(shape, np.float32)
    beads = [
        (int(rng.integers(3, nz - 3)), int(rng.integers(3, ny - 3)), int(rng.integers(4, nx - 4))) for _ in range(25)
    ]
    for k, y, i in beads:
        stack[k, y, i] += 1000
    return ndimage.gaussian_filter(stack, (0.8, 1.2, 1.2)).astype(np.float32) + 10, beads


def centroid(image: np.ndarray, at: tuple[float, float, float], r: int = 3) -> np.ndarray:
    """Intensity centroid (background removed) in a box of radius ``r`` around ``at``."""
    lo = [max(0, int(round(a)) - r) for a in at]
    box = image[tuple(slice(a, a + 2 * r + 1) for a in lo)].astype(np.float64)
    box = np.clip(box - np.median(image), 0, None)
    grids = np.meshgrid(*[np.arange(n) for n in box.shape], indexing="ij")
    return np.array([float((g * box).sum() / box.sum()) + a for g, a in zip(grids, lo)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cle-python", default=os.environ.get("BIGDECON_CLE_PYTHON", ""), help="a Python with pyclesperanto"
    )
    parser.add_argument("--shape", default="60,48,128", help="planes, rows, columns of the recorded stack")
    args = parser.parse_args()
    if not args.cle_python:
        sys.exit("give --cle-python (a Python with pyclesperanto and an OpenCL driver)")
    from bigdecon import deskew
    from bigdecon.solvers.deskew import RotateGeometry, SkewGeometry, rotate_block

    shape = tuple(int(v) for v in args.shape.split(","))
    stack, beads = skewed_beads(shape, 3)  # type: ignore[arg-type]
    g = SkewGeometry(ANGLE, DZ, DX, shape[0], shape[2])
    t0 = time.perf_counter()
    ours = deskew(stack, ANGLE, DZ, DX)
    t_ours = time.perf_counter() - t0
    r = RotateGeometry(g)
    nz_r, nx_r = r.out_size
    t0 = time.perf_counter()
    ours_rot = rotate_block(stack, r, (0, nz_r), (0, nx_r), (0, 0))
    t_rot = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:
        np.save(os.path.join(folder, "stack.npy"), stack)
        ran = subprocess.run(
            [args.cle_python, "-c", CLE_SCRIPT, os.path.join(folder, "stack.npy"),
             json.dumps([g.out_width, g.shear, ANGLE, DZ, DX]), os.path.join(folder, "cle")],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        info = json.loads(ran.stdout.strip().splitlines()[-1])
        cle = {n: np.load(os.path.join(folder, f"cle_shear_{n}.npy")) for n in ("as_is", "centred")}
        cle_rot = np.load(os.path.join(folder, "cle_rotate.npy"))
    peak = float(ours.max())
    print(f"stack {shape} (z, y, x as recorded), {ANGLE} deg, dz {DZ} um, dx {DX} um: {g.shear:.4f} px per plane")
    print(f"pyclesperanto on {info['device']}")
    print("\n1. deskew (shear only), linear interpolation along x")
    print(f"   bigdecon.deskew: {ours.shape}, {t_ours:.3f} s")
    interior = (slice(None), slice(None), slice(2, -2))
    for name, label in (("as_is", "as is (clesperanto: plane k moved by (k + 1/2) * shear)"),
                        ("centred", "clesperanto with its half-plane shift taken out (plane k by k * shear)")):  # fmt: skip
        diff = np.abs(cle[name] - ours)[interior]
        # clesperanto's voids hold 0; bigdecon's the fill (here the default 0 of the solver call)
        print(f"   {label}: max |diff| {diff.max() / peak:.2e} of the maximum, mean {diff.mean() / peak:.2e}, "
              f"{info['seconds'][name]:.3f} s")  # fmt: skip
    print("\n2. deskew + rotate to the coverslip frame (isotropic voxels of dx)")
    print(f"   bigdecon --rotate: {ours_rot.shape} (z, y, x), {t_rot:.3f} s")
    print(f"   cle.deskew_x:      {cle_rot.shape} (z, y, x), {info['seconds']['rotate']:.3f} s")
    c, s = math.cos(math.radians(ANGLE)), math.sin(math.radians(ANGLE))
    z_top = (shape[2] - 1) * s
    offsets = []
    for k, y, i in beads:
        want = (z_top - i * s, y, i * c + k * DZ / DX)
        if not (3 <= want[0] < min(nz_r, cle_rot.shape[0]) - 4 and 4 <= want[2] < min(nx_r, cle_rot.shape[2]) - 4):
            continue
        offsets.append(centroid(cle_rot, want) - centroid(ours_rot, want))
    off = np.array(offsets)
    print(f"   bead centroids, clesperanto minus bigdecon over {len(off)} beads (z, y, x px): "
          f"mean {np.round(off.mean(axis=0), 3).tolist()}, max |.| {np.round(np.abs(off).max(axis=0), 3).tolist()}")  # fmt: skip
    nz, nx = min(nz_r, cle_rot.shape[0]), min(nx_r, cle_rot.shape[2])
    a, b = ours_rot[:nz, :, :nx].ravel(), cle_rot[:nz, :, :nx].ravel()
    print(f"   Pearson over the common {nz} x {shape[1]} x {nx} voxels: {np.corrcoef(a, b)[0, 1]:.4f}")


if __name__ == "__main__":
    main()
