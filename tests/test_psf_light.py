"""Step 5 follows the PSF's light, not its box; the faces of the volume stay as the data are.

Halo and memory from the box holding ``1 - ENERGY_EPS`` of a PSF's light (issue 21 item 5), and
faces without a bright frame or a brightened last plane (item 6), on real zarr stores and on the
real nuclei stack of ``../shared/realdata``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import big_store, face_ratios, filaments
from test_chunked import write_input
from test_step5_blocks import seam_error

import bigdecon
from bigdecon.io import open_image
from bigdecon.params import Params
from bigdecon.solvers import landweber, richardson_lucy
from bigdecon.solvers.psf import ENERGY_EPS, energy_crop, energy_reach, gaussian_psf
from bigdecon.stages import output_psf


def bead_psf(shape=(61, 128, 128), fwhm=(4.0, 2.0, 2.0), off=(2, 3, -2), tail=0.005) -> np.ndarray:
    """A bead PSF as a measured box holds it: a compact core that widens faster below focus than
    above, off the box centre by ``off``, plus a small pedestal-free exponential tail (``tail`` of
    the light); most of the box is dark. Not from bigdecon's PSF code."""
    grids = np.meshgrid(*[np.arange(n) - n // 2 - o for n, o in zip(shape, off)], indexing="ij")
    z, r = grids[0], np.hypot(grids[1], grids[2])
    s = fwhm[1] / 2.3548 * np.sqrt(1 + (z / np.where(z < 0, 3.0, 6.0)) ** 2)
    core = np.exp(-(r**2) / (2 * s * s)) / s**2
    halo = np.exp(-r / (2 * s)) / s**2
    axial = np.exp(-(z**2) / (2 * (fwhm[0] / 2.3548) ** 2))
    out = axial * ((1 - tail) * core / core.sum() + tail * halo / halo.sum())
    return (out / out.sum()).astype(np.float32)


def test_energy_crop_keeps_the_light_not_the_box():
    psf = bead_psf()
    reach = energy_reach(psf)
    cut = energy_crop(psf)
    print(f"61x128x128 bead PSF: light within +-{reach} px, cut to {cut.shape}")
    assert all(2 * r + 1 <= n // 2 for r, n in zip(reach, psf.shape))  # a small core in a large box
    assert cut.shape == tuple(2 * r + 1 for r in reach) and abs(float(cut.sum()) - 1) < 1e-5
    # The cut holds the light, centred where the box was (the origin of the convolution).
    c = [n // 2 for n in psf.shape]
    kept = psf[tuple(slice(ci - r, ci + r + 1) for ci, r in zip(c, reach))]
    assert float(kept.sum()) >= 1 - ENERGY_EPS
    np.testing.assert_allclose(cut, kept / kept.sum(), rtol=1e-6)
    # Step 5 cuts PSFs given as arrays; a Gaussian of fwhm keeps its published box.
    assert output_psf(Params.from_kwargs(psf=psf), 3).shape == cut.shape
    gauss = output_psf(Params.from_kwargs(fwhm=(6, 3, 3)), 3)
    np.testing.assert_array_equal(gauss, gaussian_psf((6.0, 3.0, 3.0)))


def real_style_bead(path) -> None:
    """A 61x128x128 bead stack as a microscope saves it, at 0.1 µm: a scalar widefield bead (NA 1.0,
    test_psf_prepare's Debye integral, not bigdecon's model) 7 px off centre in y, a camera pedestal of
    140 under a ~7,800-count peak, shot and read noise, 5 hot pixels."""
    import tifffile
    from test_psf_prepare import scalar_widefield

    rng = np.random.default_rng(1)
    shape = (61, 128, 128)
    psf = scalar_widefield(shape, 0.1, 0.1, centre=(0.0, 0.7, 0.0))
    counts = rng.poisson(psf / psf.max() * 7660 + 140) + rng.normal(0, 3, shape)
    for _ in range(5):
        counts[tuple(int(rng.integers(0, n)) for n in shape)] = 3000
    stack = np.clip(counts, 0, 65535).astype(np.uint16)
    tifffile.imwrite(
        path, stack, imagej=True, resolution=(10, 10), metadata={"spacing": 0.1, "unit": "um", "axes": "ZYX"}
    )


def info_gib(run_main, src: str, *args) -> float:
    """`bigdecon info`'s memory per task, in GiB (the CLI's main in this process: info starts no cluster)."""
    res = run_main("info", src, "--sparse-iters", "0", *args)
    assert res.returncode == 0, res.stderr
    line = next(s for s in res.stdout.splitlines() if "memory per task" in s)
    value, unit = line.split("~")[1].split()
    return float(value) * {"KiB": 2**-20, "MiB": 2**-10, "GiB": 1.0}[unit]


# Issue 21 item 5 on a 2000x2048x2048 volume (0.3/0.1/0.1 µm; 0.5 for the issue's other example),
# `bigdecon info` (2 worker threads), GiB per task: (arguments, z step, measured, target met).
TARGETS = [
    (["--psf", "{bead}", "--deconv-iters", "10"], 0.3, 0.49, True),
    (["--psf", "{bead}", "--deconv-iters", "10"], 0.5, 0.49, True),
    (["--psf", "{tail}", "--deconv-iters", "10"], 0.3, 0.49, True),
    (["--na", "1.1", "--wavelength", "0.52", "--deconv-iters", "7"], 0.3, 0.49, True),  # 7 passes of 1 iteration
    (["--na", "1.1", "--wavelength", "0.52", "--deconv-type", "3"], 0.3, 0.50, True),  # 2 passes of 1 iteration
    (["--na", "1.1", "--wavelength", "0.52", "--deconv-type", "3"], 0.5, 0.49, True),
    (["--na", "1.1", "--wavelength", "0.52", "--deconv-type", "2"], 0.3, 0.49, True),  # Landweber: 7 passes
]


@pytest.fixture(scope="module")
def target_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("targets")
    real_style_bead(folder / "bead.tif")
    np.save(folder / "tail.npy", bead_psf())
    stores = {dz: big_store(folder, dz) for dz in (0.3, 0.5)}
    return {"bead": str(folder / "bead.tif"), "tail": str(folder / "tail.npy")}, stores


@pytest.mark.slow
@pytest.mark.parametrize("args, z_step, measured, met", TARGETS, ids=[f"{t[0][1]}-{t[0][-1]}-{t[1]}" for t in TARGETS])
def test_info_plans_the_issue_targets(target_files, run_main, args, z_step, measured, met):
    """The memory per task `bigdecon info` plans for issue 21's targets, with halos that keep blocks equal
    to the whole volume (tests below): <= 1 GiB with a real-style 61x128x128 bead stack at 10 RL
    iterations (prepared: 21x41x41) and with the tests' 0.5 %-tail bead PSF; the NA 1.1 widefield model
    at 7 RL iterations (2.5 GiB in one pass: its light fills every plane of its box, halo 144/174/174)
    and with Wiener-Butterworth (2.1 GiB) once step 5 is split into passes of one iteration, each with
    the exact light cone of its iteration as its halo (test_step5_passes.py); Landweber likewise
    (3.1 GiB in one pass). docs/step5_blocks.md, "step 5 split into passes"."""
    files, stores = target_files
    gib = info_gib(run_main, stores[z_step], *[a.format(**files) for a in args])
    print(f"{' '.join(args[:2])} {args[-2:]} at {z_step} um: {gib:.2f} GiB per task")
    assert gib <= (1.0 if met else measured * 1.05)
    assert (gib <= 1.0) == met  # a model case that comes under 1 GiB: record it as met


@pytest.mark.slow
def test_out_of_core_blocks_with_a_bead_psf_equal_the_whole_volume(tmp_path):
    """A 61x128x128 bead PSF as given (not centred, a tail, most of the box dark): the halo comes
    from its light, blocks (halos read from the store) equal the whole volume to 1e-5 of the
    maximum, and the whole volume equals the solver with the uncut box inside the volume."""
    psf = bead_psf()
    volume = filaments((24, 144, 144), seed=7)[0]
    params = dict(psf=psf, psf_as_is=True, sparse_iters=0, background=0)
    src = write_input(str(tmp_path / "in.zarr"), volume, "zyx", (8, 48, 48))
    summary = bigdecon.plan(src, min_tasks=9, **params)
    from bigdecon.solvers.richardson_lucy import deconv_halo

    boxed = deconv_halo(psf.shape, 7, "rl-schedule")
    print("halo from the light", summary["deconv_depth"], "from the box", boxed, summary["deconv_tasks"], "tasks")
    assert summary["deconv_tasks"] >= 4 and summary["deconv_depth"]["y"] < boxed[1] / 3
    out = bigdecon.deconvolve(src, str(tmp_path / "out.zarr"), min_tasks=9, **params)
    whole = bigdecon.sparse_deconvolve(volume, **params)
    err = seam_error(open_image(out["output"]).data.compute(), whole)
    g = volume / volume.max()
    uncut = richardson_lucy(g, psf, 7, alpha="schedule") * volume.max()
    inner = (slice(None), slice(24, -24), slice(24, -24))
    cut_err = seam_error(whole[inner], uncut[inner])
    print(f"blocks vs whole {err:.1e}; light box vs whole box, inside {cut_err:.1e}")
    assert err <= 1e-5 and cut_err <= 1e-5


def flat_with_pedestal_psf():
    psf = bead_psf((21, 33, 33), fwhm=(3.0, 1.5, 1.5), off=(1, 3, -2))
    psf = psf + 0.02 * psf.max()  # a camera pedestal left in the file: light up to every face of the box
    return psf / psf.sum()


@pytest.mark.parametrize("solver", ["rl", "landweber"])
def test_a_flat_volume_stays_flat_at_its_faces(solver):
    """With a measured PSF (off centre, pedestal: the padded real-FFT path) a flat volume stays flat to
    1e-3 at every face; it showed a bright frame (x3 on plane 0) when the faces' padding was data."""
    psf = flat_with_pedestal_psf()
    flat = np.full((24, 48, 48), 0.5, np.float32)
    out = richardson_lucy(flat, psf, 7, alpha="schedule") if solver == "rl" else landweber(flat, psf, 7)
    err = float(np.abs(out - 0.5).max() / 0.5)
    print(f"{solver}: flat volume, max deviation {err:.1e}")
    assert err <= 1e-3


def face_slabs(a) -> dict[str, float]:
    """Mean of the two outer planes on each face over the volume's mean."""
    a = np.asarray(a, np.float64)
    out = {}
    for axis, name in enumerate("zyx"):
        n = a.shape[axis]
        out[name + "0"] = float(np.take(a, range(2), axis).mean() / a.mean())
        out[name + "-1"] = float(np.take(a, range(n - 2, n), axis).mean() / a.mean())
    return out


@pytest.mark.parametrize("pedestal", [False, True], ids=["bead", "bead-pedestal"])
def test_objects_touching_every_face_get_no_frame(pedestal):
    """Objects everywhere, cut by every face (the object goes on beyond the volume), blurred with an
    off-centre bead PSF, with and without a pedestal: Richardson-Lucy's outer planes stay within
    0.25 of the raw's (relative to the volume's mean). With the padding taken as data, the
    pedestal gave x3.6 to x4.2 on every face."""
    from scipy.ndimage import gaussian_filter
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(3)
    psf = bead_psf((21, 33, 33), fwhm=(3.0, 1.5, 1.5), off=(1, 3, -2))
    if pedestal:
        psf = psf + 0.02 * psf.max()
        psf /= psf.sum()
    big = np.zeros((56, 112, 112), np.float32)
    big[tuple(rng.integers(0, s, 4000) for s in big.shape)] = rng.uniform(0.3, 1, 4000)
    blurred = np.clip(fftconvolve(gaussian_filter(big, 1.0), psf, mode="same"), 0, None) + 0.001
    raw = blurred[16:-16, 24:-24, 24:-24].astype(np.float32)  # every face cuts objects
    out = richardson_lucy(raw / raw.max(), psf, 10, alpha="schedule")
    before, after = face_slabs(raw), face_slabs(out)
    print({k: (round(before[k], 3), round(after[k], 3)) for k in before})
    for k in before:
        assert abs(after[k] - before[k]) <= 0.25, (k, before[k], after[k])


@pytest.mark.slow
def test_real_nuclei_faces_stay_as_the_raw_faces(realdata):
    """The real nuclei stack (cells3d; 60x96x96 of it, at the last x face): the defaults (background,
    sparse step, Richardson-Lucy) keep each outer plane's ratio to its neighbour within 0.05 of the
    raw's (measured: at most 0.043 off; with the sparse step's plain mirror the last x column was
    1.098 against the raw's 1.010, plane 0 1.085 against 1.022); RL alone keeps plane 0's share."""
    import tifffile

    raw = tifffile.imread(realdata / "cells3d_nuclei" / "nuclei.tif")[:, :96, -96:]
    out = bigdecon.sparse_deconvolve(raw, fwhm=(3, 1.5, 1.5))
    rl = bigdecon.sparse_deconvolve(raw, fwhm=(3, 1.5, 1.5), sparse_iters=0, background=0)
    before, after, alone = face_ratios(raw), face_ratios(out), face_ratios(rl)
    print({k: (round(before[k], 3), round(after[k], 3), round(alone[k], 3)) for k in before})
    for k in before:
        assert abs(after[k] - before[k]) <= 0.05 and abs(alone[k] - before[k]) <= 0.1, k
    share = [float(a[0].mean() / a.mean()) for a in (raw.astype(np.float64), rl)]
    print(f"plane 0 / mean: raw {share[0]:.3f}, RL {share[1]:.3f}")
    assert abs(share[1] - share[0]) <= 0.1


# --------------------------------------------------------------------------- every step-5 type x every PSF source

# 0.8 / 0.4 / 0.4 µm voxels: the NA 1.1 widefield model is 15x17x17 after its energy crop, so blocks of
# 48 px with the halos below (RL/Landweber up to 48 px, Wiener-Butterworth's light cone 48 px) stay inside
# the 160-px planes and the test can fail.
SMALL_VOXEL = {"z": 0.8, "y": 0.4, "x": 0.4}
STEP5_TYPES = {1: 7, 2: 7, 3: 2}  # deconv_type: iterations (Richardson-Lucy, Landweber, Wiener-Butterworth)


@pytest.fixture(scope="module")
def small_case(tmp_path_factory):
    """Filaments on a 0.8/0.4/0.4 µm grid in an OME-Zarr, and a bead stack file at 0.4 µm (a third of a
    box off centre, pedestal 2 % of the peak, noise; scalar Debye PSF of test_psf_prepare, not bigdecon's)."""
    import tifffile
    from test_psf_prepare import scalar_widefield

    from bigdecon.io import write_image

    folder = tmp_path_factory.mktemp("small")
    volume = filaments((16, 160, 160), seed=11)[0]
    src = write_image(
        str(folder / "in.ome.zarr"),
        volume,
        "zyx",
        chunks=(8, 48, 48),
        scale=SMALL_VOXEL,
        units={a: "micrometer" for a in "zyx"},
    )
    rng = np.random.default_rng(2)
    bead = scalar_widefield((31, 32, 32), 0.4, 0.4, centre=(0.0, 0.8, 0.0))
    counts = rng.poisson(bead / bead.max() * 5000 + 100) + rng.normal(0, 3, bead.shape)
    path = folder / "bead.tif"
    tifffile.imwrite(
        path,
        np.clip(counts, 0, 65535).astype(np.uint16),
        imagej=True,
        resolution=(2.5, 2.5),
        metadata={"spacing": 0.4, "unit": "um", "axes": "ZYX"},
    )
    return volume, src, path


def _source_psf(source: str, case) -> tuple[dict, dict]:
    """The run's PSF options, and the same PSF as the run prepares it, for the whole-volume solver."""
    from bigdecon.passes.request import measured_psf, optics_psf

    volume, src, path = case
    if source == "fwhm":
        return dict(fwhm=(2.5, 3, 3)), dict(fwhm=(2.5, 3, 3))
    image = open_image(src)
    if source == "optics":
        optics = {"na": 1.1, "wavelength": 0.52, "refractive_index": 1.33}
        return dict(na=1.1, wavelength=0.52), dict(psf=optics_psf("widefield", image, optics, 0.99)[0], psf_as_is=True)
    return dict(psf=str(path)), dict(psf=measured_psf(str(path), None, image, False, 0.99)[0], psf_as_is=True)


@pytest.mark.slow
@pytest.mark.parametrize("source", ["fwhm", "optics", "file"])
def test_every_step5_type_and_psf_source_blocks_equal_the_whole_volume(tmp_path, small_case, source):
    """Step-5 blocks (halos read from the store) equal the whole-volume solver with the same prepared
    PSF to 1e-5 of the maximum, for Richardson-Lucy, Landweber and Wiener-Butterworth, with a Gaussian
    of fwhm, the NA 1.1 widefield model and a bead file (prepared: an asymmetric PSF, so
    Wiener-Butterworth keeps the volume whole). deconv_type 0 runs no step 5."""
    volume = small_case[0]
    given, prepared = _source_psf(source, small_case)
    for deconv_type, iterations in STEP5_TYPES.items():
        params = dict(sparse_iters=0, background=0, deconv_type=deconv_type, deconv_iters=iterations)
        summary = bigdecon.plan(small_case[1], min_tasks=9, **given, **params)
        out = bigdecon.deconvolve(
            small_case[1], str(tmp_path / f"out{deconv_type}.zarr"), min_tasks=9, **given, **params
        )
        whole = bigdecon.sparse_deconvolve(volume, **prepared, **params)
        err = seam_error(open_image(out["output"]).data.compute(), whole)
        blocked = summary["deconv_tasks"] > 1
        print(
            f"{source} type {deconv_type}: {summary['deconv_tasks']} blocks, halo {summary['deconv_depth']}, {err:.1e}"
        )
        assert err <= 1e-5
        # Blocks wherever the PSF allows them, and halos that leave a face block's far side out of reach.
        assert blocked == (deconv_type != 3 or source != "file")
        if blocked:
            assert summary["deconv_block"]["y"] + summary["deconv_depth"]["y"] < volume.shape[1]
