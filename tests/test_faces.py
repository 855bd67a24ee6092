"""The faces of the volume on real data with an optical PSF (issue 21, item 6).

The real cells3d nuclei stack (``../shared/realdata``), its camera offset taken off, deconvolved with
the widefield model of the optics its gallery page assumes (NA 1.25, 0.46 µm, water, at the README's
voxel size): each face's mean against its neighbour's stays near the raw's, and the faces of a crop
match what a larger volume gives at the same voxels (there they are interior), for Richardson-Lucy,
Landweber, Wiener-Butterworth and the sparse defaults. A flat region stays flat at every face.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import face_ratios

import bigdecon
from bigdecon.solvers.psf import psf_size_for, widefield_psf
from bigdecon.solvers.psf_prepare import energy_crop

VOXEL = (0.29, 0.26, 0.26)  # the realdata README's
OPTICS = dict(na=1.25, wavelength=0.46, refractive_index=1.33)
STEP5 = {
    "rl": dict(sparse_iters=0, background=0, deconv_iters=10),
    "landweber": dict(sparse_iters=0, background=0, deconv_type=2, deconv_iters=10),
    "wb": dict(sparse_iters=0, background=0, deconv_type=3),
    "defaults": dict(sparse_iters=30),
}


def optics_psf(n_planes: int) -> np.ndarray:
    """The widefield PSF ``run --na 1.25 --wavelength 0.46`` builds for the nuclei (cut to the data)."""
    shape = psf_size_for(pixel_size=VOXEL[1:], z_step=VOXEL[0], **OPTICS)
    shape = (min(shape[0], n_planes - 1 + n_planes % 2), *shape[1:])
    psf = widefield_psf(shape, pixel_size=VOXEL[1:], z_step=VOXEL[0], **OPTICS)
    return energy_crop(np.asarray(psf, np.float32))[0]


@pytest.fixture(scope="module")
def nuclei(realdata) -> np.ndarray:
    import tifffile

    raw = tifffile.imread(realdata / "cells3d_nuclei" / "nuclei.tif").astype(np.float32)
    offset = float(np.percentile(raw, 0.5))  # as --offset auto: the dark level
    return np.clip(raw - offset, 0, None)


@pytest.mark.slow
@pytest.mark.parametrize("solver", ["rl", "landweber"])
def test_real_nuclei_faces_with_the_optical_psf_stay_near_the_raw_s(nuclei, solver):
    """The whole 60x256x256 stack, RL / Landweber alone, 10 iterations. The raw's outer planes are
    0.99-1.08 of their neighbours; deconvolution sharpens real differences (interior plane-to-plane
    contrast x2), so the faces cannot stay exactly as the raw's. A guard at the measured figures
    (worst face, mean over the 6): RL 0.172 (y-1 1.252 against the raw's 1.080), 0.104; Landweber
    0.119, 0.058 (docs/step5_blocks.md)."""
    out = bigdecon.sparse_deconvolve(nuclei, psf=optics_psf(nuclei.shape[0]), psf_as_is=True, **STEP5[solver])
    before, after = face_ratios(nuclei), face_ratios(out)
    dev = {k: after[k] - before[k] for k in before}
    print(solver, {k: (round(before[k], 3), round(after[k], 3)) for k in before})
    worst, mean = {"rl": (0.19, 0.115), "landweber": (0.13, 0.07)}[solver]
    assert max(abs(d) for d in dev.values()) <= worst, dev
    assert np.mean([abs(d) for d in dev.values()]) <= mean, dev


@pytest.mark.parametrize("solver", list(STEP5))
def test_real_objects_cut_by_the_faces_match_a_larger_volume(nuclei, solver):
    """A 24x80x80 crop of real nuclei (objects cut by every y/x face) against the same voxels of the
    24x128x128 volume around it, where they lie 24 px inside: each y/x face's ratio to its neighbour
    within the tolerance measured below, for every step-5 type and the sparse defaults."""
    big = nuclei[20:44, 100:228, 60:188]
    crop = (slice(None), slice(24, -24), slice(24, -24))
    psf = optics_psf(big.shape[0])
    whole = bigdecon.sparse_deconvolve(big, psf=psf, psf_as_is=True, **STEP5[solver])[crop]
    alone = bigdecon.sparse_deconvolve(big[crop], psf=psf, psf_as_is=True, **STEP5[solver])
    ref, got = face_ratios(whole), face_ratios(alone)
    dev = {k: round(got[k] - ref[k], 3) for k in ref if k[0] != "z"}
    print(solver, dev)
    assert max(abs(d) for d in dev.values()) <= TOLERANCE[solver], dev


# The crop's y/x faces against the larger volume's (worst of 4), measured: RL 0.083, Landweber 0.079,
# Wiener-Butterworth 0.081, the sparse defaults (30 sparse iterations) 0.146 (y0).
TOLERANCE = {"rl": 0.1, "landweber": 0.1, "wb": 0.1, "defaults": 0.17}


@pytest.mark.parametrize("solver", list(STEP5))
def test_a_flat_region_stays_flat_at_every_face(solver):
    """A flat, noisy region (Poisson, 200 counts) with the optical PSF: every face's mean within 2.5 % of
    the interior's (measured: at most 1.1 %, Wiener-Butterworth 2.0 %; the sparse defaults without
    their background removal, which takes a flat level away entirely)."""
    rng = np.random.default_rng(3)
    flat = rng.poisson(200, (24, 64, 64)).astype(np.float32)
    params = dict(STEP5[solver])
    if solver == "defaults":
        params["background"] = 0
    out = bigdecon.sparse_deconvolve(flat, psf=optics_psf(24), psf_as_is=True, **params)
    inner = float(out[8:-8, 16:-16, 16:-16].mean())
    faces = {
        f"{'zyx'[a]}{s}": float(np.take(out, i, a).mean()) / inner for a in range(3) for s, i in (("0", 0), ("-1", -1))
    }
    print(solver, {k: round(v, 4) for k, v in faces.items()})
    assert all(abs(v - 1) <= 0.025 for v in faces.values()), faces
