"""Deskew of skewed light-sheet stacks: geometry, blocks, the pass, skewed-space deconvolution."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from bigdecon.solvers.deskew import SkewGeometry, deskew, deskew_block, skew_psf, source_span


def reference_deskew(raw: np.ndarray, angle: float, dz: float, dx: float, fill: float = 0.0) -> np.ndarray:
    """An independent deskew: each plane padded with ``fill`` and moved by scipy.ndimage.shift."""
    nz, _, nx = raw.shape
    step = dz * math.cos(math.radians(abs(angle))) / dx
    width = nx + math.ceil((nz - 1) * step - 1e-9)
    out = np.empty((nz, raw.shape[1], width), np.float32)
    for k in range(nz):
        move = k * step if angle > 0 else (nz - 1 - k) * step
        padded = np.pad(raw[k].astype(np.float64), ((0, 0), (1, width - nx + 1)), constant_values=fill)
        moved = ndimage.shift(padded, (0, move), order=1, mode="constant", cval=fill)
        out[k] = moved[:, 1 : 1 + width]
    return out


@pytest.mark.parametrize("angle", [31.5, -31.5, 60.0])
def test_deskew_equals_an_independent_plane_by_plane_shift(angle):
    rng = np.random.default_rng(3)
    raw = rng.uniform(100, 1000, (12, 9, 40)).astype(np.float32)
    got = deskew(raw, angle, 0.4, 0.104, fill=7.0)
    want = reference_deskew(raw, angle, 0.4, 0.104, fill=7.0)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-5 * raw.max()


def test_negative_angle_mirrors_and_y_axis_transposes():
    rng = np.random.default_rng(4)
    raw = rng.uniform(0, 1, (6, 5, 20)).astype(np.float32)
    pos = deskew(raw, 60.0, 2.0, 0.5)  # 2 px per plane: the mirror is exact on whole pixels
    neg = deskew(raw[:, :, ::-1], -60.0, 2.0, 0.5)
    np.testing.assert_allclose(neg[:, :, ::-1], pos, atol=1e-6)
    along_y = deskew(np.swapaxes(raw, 1, 2), 60.0, 2.0, 0.5, axis="y")
    np.testing.assert_array_equal(np.swapaxes(along_y, 1, 2), pos)


def test_blocks_with_their_sheared_halo_equal_the_whole_volume():
    rng = np.random.default_rng(5)
    raw = rng.uniform(0, 1, (17, 4, 50)).astype(np.float32)
    for angle in (31.5, -31.5):
        g = SkewGeometry(angle, 0.4, 0.104, 17, 50)
        whole = deskew(raw, angle, 0.4, 0.104)
        for ka in range(0, 17, 5):
            kb = min(17, ka + 5)
            for ja in range(0, g.out_width, 13):
                jb = min(g.out_width, ja + 13)
                lo, hi = source_span(g, (ka, kb), (ja, jb))
                block = deskew_block(raw[ka:kb, :, lo:hi], g, (ka, kb), (ja, jb), lo)
                np.testing.assert_array_equal(block, whole[ka:kb, :, ja:jb])


def test_skewed_psf_deskews_back_to_the_sample_frame_psf():
    from bigdecon.solvers import gaussian_psf

    p = gaussian_psf((5, 3, 3))
    q = skew_psf(p, 31.5, 0.4, 0.104)
    assert abs(float(q.sum()) - 1) < 1e-5
    # Deskewing the skewed PSF lines its planes up again: the peak of every plane at one column.
    back = deskew(q, 31.5, 0.4, 0.104)
    peaks = {int(np.argmax(back[k, back.shape[1] // 2])) for k in range(q.shape[0] // 2 - 4, q.shape[0] // 2 + 5)}
    assert max(peaks) - min(peaks) <= 1


# --------------------------------------------------------------------------- the pass, on real stores

UNITS = {a: "micrometer" for a in "zyx"}
SCALE = {"z": 0.4, "y": 0.104, "x": 0.104}


def write_skewed(path, data, axes):
    from bigdecon.io import write_image

    return write_image(str(path), data, axes, scale=SCALE, units=UNITS)


DESKEW_ONLY = dict(skew_angle=31.5, sparse_iters=0, background=0, deconv_type=0)


@pytest.mark.parametrize("axis", ["x", "y"])
def test_deskew_pass_blocks_equal_the_whole_volume_with_t_and_c(tmp_path, axis):
    import bigdecon
    from bigdecon.io import open_image

    rng = np.random.default_rng(6)
    raw = rng.uniform(0, 4000, (2, 2, 14, 30, 36)).astype(np.uint16)
    src = write_skewed(tmp_path / "raw.ome.zarr", raw, "tczyx")
    out = tmp_path / "out.ome.zarr"
    info = bigdecon.deconvolve(src, str(out), **DESKEW_ONLY, skew_axis=axis, task_memory=20_000)
    assert info["chunks"] > 2 * 2 * 8  # several blocks per volume, along every axis
    img = open_image(str(out))
    got = img.data.compute()
    swap = (lambda a: np.swapaxes(a, 1, 2)) if axis == "y" else (lambda a: a)
    # The voids: the median of each channel's last recorded plane (of the first time point), as pycudadecon.
    fill = [float(np.median(raw[0, c, -1])) for c in range(2)]
    want = np.stack(
        [np.stack([swap(deskew(swap(raw[t, c]), 31.5, 0.4, 0.104, fill=fill[c])) for c in range(2)]) for t in range(2)]
    )
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-6 * want.max()
    assert img.scale["z"] == pytest.approx(0.4 * math.sin(math.radians(31.5)))
    deskew_attrs = img.attrs["bigdecon"]["deskew"]
    assert deskew_attrs["angle"] == 31.5 and deskew_attrs["axis"] == axis and deskew_attrs["fill"] == fill


def test_bad_skew_input_is_one_line(tmp_path):
    import bigdecon
    from bigdecon.io import write_image

    plane = write_image(str(tmp_path / "p.ome.zarr"), np.ones((3, 16, 16), np.float32), "tyx")
    with pytest.raises(bigdecon.InputError, match="needs a z axis"):
        bigdecon.deconvolve(plane, str(tmp_path / "o.zarr"), **DESKEW_ONLY)
    vol = write_image(str(tmp_path / "v.ome.zarr"), np.ones((3, 16, 16), np.float32), "zyx")
    with pytest.raises(bigdecon.InputError, match="physical pixel size along z"):
        bigdecon.deconvolve(vol, str(tmp_path / "o.zarr"), **DESKEW_ONLY)
    with pytest.raises(bigdecon.InputError, match="skew_angle must be between"):
        bigdecon.deconvolve(vol, str(tmp_path / "o.zarr"), **{**DESKEW_ONLY, "skew_angle": 95})
    assert not (tmp_path / "o.zarr").exists()


@pytest.mark.slow  # a CLI run with its local cluster: 14-18 s here
@pytest.mark.parametrize("offset", ["100", "auto"])
def test_deskew_only_subtracts_the_offset_and_the_voids_are_0(tmp_path, offset):
    """Through the CLI: a deskew-only run subtracts --offset (a number, or auto estimated once from the
    stack), clipped at 0, before the deskew; the voids hold 0 after it; the output records the offset."""
    from helpers import cli

    from bigdecon.io import open_image
    from bigdecon.passes.request import estimate_offset

    rng = np.random.default_rng(12)
    raw = (150 + rng.normal(0, 3, (10, 12, 30))).round().astype(np.uint16)
    raw[4:6, 3:9, 10:20] += 900  # signal on a dark level of ~150
    src = write_skewed(tmp_path / "raw.ome.zarr", raw, "zyx")
    out = tmp_path / "view.ome.zarr"
    flags = ("--sparse-iters", "0", "--background", "0", "--deconv-type", "0", "--skew-angle", "31.5")
    ran = cli("run", src, out, *flags, "--offset", offset)
    assert ran.returncode == 0, ran.stderr
    img = open_image(str(out))
    import dask.array as da

    counts = 100.0 if offset == "100" else estimate_offset(da.from_array(raw, chunks=raw.shape))
    assert 130 <= counts <= 150 or offset == "100"
    want = deskew(np.maximum(raw.astype(np.float32) - np.float32(counts), 0), 31.5, 0.4, 0.104, fill=0.0)
    got = img.data.compute()
    assert np.abs(got - want).max() <= 1e-5 * want.max()
    assert got[0, :, -5:].max() == 0 and got[-1, :, :5].max() == 0  # the void triangles
    assert img.attrs["bigdecon"]["offset"] == {"counts": counts, "estimated": offset == "auto"}
    assert img.attrs["bigdecon"]["deskew"]["fill"] == [0.0]


RESUME_SCRIPT = """
import sys, bigdecon
bigdecon.deconvolve(sys.argv[1], sys.argv[2], skew_angle=31.5, sparse_iters=0, background=0, deconv_type=0,
                    task_memory=15000, resume=sys.argv[3] == "resume")
"""


@pytest.mark.slow
def test_deskew_pass_resumes_after_a_kill(tmp_path):
    import os
    import subprocess
    import sys

    from helpers import kill_when

    import bigdecon
    from bigdecon.io import open_image
    from bigdecon.passes.ledger import Ledger

    rng = np.random.default_rng(8)
    raw = rng.uniform(0, 1000, (1, 2, 32, 32, 48)).astype(np.float32)
    src = write_skewed(tmp_path / "raw.ome.zarr", raw, "tczyx")
    out = tmp_path / "out.ome.zarr"

    def recorded() -> int:
        try:
            return len(Ledger(str(out / ".bigdecon-work")).done("deskew"))
        except (bigdecon.ProcessingError, ValueError, OSError):  # a batch being merged
            return 0

    proc = subprocess.Popen([sys.executable, "-c", RESUME_SCRIPT, src, str(out), "fresh"], env=dict(os.environ))
    kill_when(proc, lambda: recorded() >= 20)
    before = recorded()
    with pytest.raises(bigdecon.InputError, match="incomplete"):
        open_image(str(out))
    with pytest.warns(bigdecon.errors.BigdeconNotice, match="taking over the lease"):  # the killed run's
        info = bigdecon.deconvolve(
            src, str(out), skew_angle=31.5, sparse_iters=0, background=0, deconv_type=0, task_memory=15000, resume=True
        )
    assert 20 <= before <= info["resumed"] <= info["chunks"]  # only what was not recorded ran again
    fill = [float(np.median(raw[0, c, -1])) for c in range(2)]
    want = np.stack([np.stack([deskew(raw[t, c], 31.5, 0.4, 0.104, fill=fill[c]) for c in range(2)]) for t in range(1)])
    np.testing.assert_array_equal(open_image(str(out)).data.compute(), want)
    assert not (out / ".bigdecon-work").exists()


# --------------------------------------------------------------------------- skewed-space deconvolution

ANGLE, DZ, DX = 31.5, 0.4, 0.104
SHEAR = DZ * math.cos(math.radians(ANGLE)) / DX
FWHM = (4.0, 2.5, 2.5)  # sample pixels (z on the deskewed grid)


@pytest.fixture(scope="module")
def llsm(tmp_path_factory):
    """A skewed stack from an independent forward model: beads and a filament on the sample grid,
    blurred there by scipy's Gaussian, sampled on the skewed grid by map_coordinates, Poisson noise."""
    rng = np.random.default_rng(11)
    nz, ny, nx = 16, 24, 72
    width = nx + math.ceil((nz - 1) * SHEAR)
    truth = np.zeros((nz, ny, width + 4), np.float32)
    for _ in range(40):
        truth[rng.integers(2, nz - 2), rng.integers(2, ny - 2), rng.integers(2, width)] = rng.uniform(0.5, 1)
    xs = np.arange(width)
    truth[(nz // 2 + 3 * np.sin(xs / 15)).astype(int), (ny // 2 + 8 * np.cos(xs / 20)).astype(int), xs] = 0.6
    sigma = [f / 2.3548 for f in FWHM]
    blurred = ndimage.gaussian_filter(truth.astype(np.float64), sigma, mode="constant")
    k, y, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    skewed = ndimage.map_coordinates(blurred, np.stack([k, y, i + k * SHEAR]), order=3, mode="constant")
    raw = rng.poisson(np.clip(skewed / skewed.max(), 0, None) * 400 + 5).astype(np.float32)
    folder = tmp_path_factory.mktemp("llsm")
    src = write_skewed(folder / "raw.ome.zarr", raw, "zyx")
    j = np.arange(width)[None, :]
    kk = np.arange(nz)[:, None]
    mask = np.broadcast_to(((j >= kk * SHEAR + 1) & (j <= kk * SHEAR + nx - 2))[:, None, :], (nz, ny, width))
    return src, truth[:, :, :width], mask, folder


def _pearson(a, b, mask):
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


@pytest.mark.slow
def test_skewed_space_and_deskew_first_deconvolution_beat_the_raw(llsm):
    import bigdecon
    from bigdecon.io import open_image

    src, truth, mask, folder = llsm
    bigdecon.deconvolve(
        src, str(folder / "deskewed.zarr"), skew_angle=ANGLE, sparse_iters=0, background=0, deconv_type=0
    )
    raw_r = _pearson(open_image(str(folder / "deskewed.zarr")).data.compute(), truth, mask)
    scores = {}
    runs = [
        ("skewed", {}),
        ("first", {"deskew_first": True}),
        ("sparse", {"sparse_iters": 10}),
    ]
    for name, extra in runs:
        out = folder / f"{name}.zarr"
        options = {"skew_angle": ANGLE, "fwhm": FWHM, "background": 0, "sparse_iters": 0, "deconv_iters": 10}
        info = bigdecon.deconvolve(src, str(out), **{**options, **extra})
        img = open_image(str(out))
        assert img.shape == truth.shape and img.scale["z"] == pytest.approx(DZ * math.sin(math.radians(ANGLE)))
        scores[name] = (_pearson(img.data.compute(), truth, mask), info["voxels_processed"])
    print(f"Pearson with the truth (raw deskewed {raw_r:.4f}):", {k: round(v[0], 4) for k, v in scores.items()})
    for name, (r, _) in scores.items():
        assert r > raw_r + 0.05, (name, r, raw_r)
    # Skewed space deconvolves only the recorded voxels: 59% of the deskewed volume here.
    assert scores["skewed"][1] < 0.65 * scores["first"][1]
    assert not list(folder.glob(".first.zarr-deskewed*"))  # the intermediate of deskew-first is gone


def test_info_plans_the_deskew_pass(tmp_path):
    from helpers import cli

    src = write_skewed(tmp_path / "raw.ome.zarr", np.ones((20, 24, 40), np.uint16), "zyx")
    ran = cli("info", src, "--skew-angle", "31.5", "--fwhm", "4,2.5,2.5")
    assert ran.returncode == 0, ran.stderr
    assert "output shape:     20x24x103 (zyx)" in ran.stdout
    assert "deskew:           skewed; 3.279 px per plane, output z step 0.209" in ran.stdout


def test_rotate_puts_beads_where_the_optics_put_them_and_blocks_equal_the_whole(tmp_path):
    """A recorded voxel (k, i) lies at x = i cos(theta) + k dz / dx and z = -i sin(theta) (pixels of dx) in the
    coverslip frame: the stage moves along x, the sheet rises at theta. Beads land there; blocks equal one block."""
    import bigdecon
    from bigdecon.io import open_image

    nz, ny, nx = 30, 6, 40
    raw = np.zeros((nz, ny, nx), np.float32)
    beads = [(3, 2, 5), (15, 3, 20), (27, 4, 33), (8, 1, 37)]
    for k, y, i in beads:
        raw[k, y, i] = 1000
    src = write_skewed(tmp_path / "beads.ome.zarr", raw, "zyx")
    runs = {}
    for name, memory in (("one", 2**30), ("many", 40_000)):
        out = tmp_path / f"{name}.zarr"
        info = bigdecon.deconvolve(src, str(out), **DESKEW_ONLY, rotate=True, task_memory=memory)
        runs[name] = (open_image(str(out)), info)
    assert runs["many"][1]["chunks"] > 4 * runs["one"][1]["chunks"]
    img = runs["one"][0]
    got = img.data.compute()
    np.testing.assert_allclose(runs["many"][0].data.compute(), got, atol=1e-6 * got.max())
    assert img.scale["z"] == img.scale["x"] == pytest.approx(DX)
    c, s = math.cos(math.radians(ANGLE)), math.sin(math.radians(ANGLE))
    z_top = (nx - 1) * s  # the highest recorded column, i = 0, is the output's plane 0
    for k, y, i in beads:
        x, z = i * c + k * DZ / DX, z_top - i * s
        zz, xx = np.unravel_index(np.argmax(got[:, y]), got[:, y].shape)
        assert abs(zz - z) <= 1 and abs(xx - x) <= 1, ((k, y, i), (zz, xx), (z, x))


def test_wiener_butterworth_with_a_sheared_psf_runs_on_blocks_equal_to_the_whole():
    """A sheared PSF gets a finite back projector (designed in the sample frame, sheared like the PSF):
    blocks with the halo of deconv_halo(kind="wb") equal the whole volume, faces included."""
    from scipy.signal import fftconvolve

    from bigdecon.solvers import gaussian_psf
    from bigdecon.solvers.richardson_lucy import deconv_halo
    from bigdecon.solvers.wiener_butterworth import blocks_allowed, rl_wiener_butterworth, sheared_drift
    from bigdecon.stages import deconv_pad

    q = skew_psf(gaussian_psf((3.0, 1.5, 1.5)), 31.5, 0.4, 0.104)
    drift = sheared_drift(q)
    assert drift is not None and drift[1] == pytest.approx(-SHEAR, abs=0.01) and blocks_allowed(q)
    rng = np.random.default_rng(21)
    truth = 20 + 800 * (rng.random((14, 12, 300)) > 0.99)
    image = np.clip(fftconvolve(truth, q, mode="same"), 1, None).astype(np.float32)
    half = deconv_pad(image.shape, q)
    whole = rl_wiener_butterworth(image, q, 2, pad=half)
    halo = deconv_halo(q.shape, 2, "wb")[2]
    n, step = image.shape[2], 75
    for x0 in range(0, n, step):
        lo, hi = max(0, x0 - halo), min(n, x0 + step + halo)
        pad = ((half[0], half[0]), (half[1], half[1]), (half[2] if lo == 0 else 0, half[2] if hi == n else 0))
        block = rl_wiener_butterworth(image[:, :, lo:hi], q, 2, pad=pad)
        got = block[:, :, x0 - lo : x0 - lo + step]
        assert np.abs(got - whole[:, :, x0 : x0 + step]).max() <= 1e-5 * whole.max(), x0


def test_skewed_space_wiener_butterworth_runs_on_blocks_equal_to_one_block(tmp_path):
    """Through the passes on real stores: skewed-space WB (--deconv-type 3) in 8 step-5 blocks equals one."""
    import bigdecon
    from bigdecon.io import open_image

    rng = np.random.default_rng(2)
    raw = rng.poisson(20 + 300 * (rng.random((24, 40, 400)) > 0.995)).astype(np.uint16)
    src = write_skewed(tmp_path / "raw.ome.zarr", raw, "zyx")
    options = dict(skew_angle=31.5, fwhm=(3, 1.5, 1.5), sparse_iters=0, background=0, deconv_type=3)
    assert bigdecon.plan(src, **options, task_memory=4 * 2**20, min_tasks=8)["deconv_tasks"] == 8
    outs = []
    for name, memory, tasks in (("one", 2**31, 1), ("many", 4 * 2**20, 8)):
        info = bigdecon.deconvolve(src, str(tmp_path / f"{name}.zarr"), **options, task_memory=memory, min_tasks=tasks)
        outs.append(open_image(info["output"]).data.compute())
    assert np.abs(outs[0] - outs[1]).max() <= 1e-5 * outs[0].max()


@pytest.mark.slow
def test_info_plans_every_step5_type_of_a_2000x2048x2048_skewed_stack_under_1_gib(tmp_path):
    """The issue's bound for a 2000-plane 2048 x 2048 stage scan at 31.5 degrees, through `bigdecon info`: every
    step-5 type, with and without the sparse step, and deskew only, plan <= 1 GiB per task (no data written)."""
    import zarr
    from helpers import cli

    src = write_skewed(tmp_path / "big.ome.zarr", np.zeros((8, 8, 8), np.uint16), "zyx")
    zarr.create_array(src + "/s0", shape=(2000, 2048, 2048), dtype="uint16", chunks=(64, 256, 256), overwrite=True)
    runs = [["--deconv-type", str(t), "--sparse-iters", "0"] for t in (0, 1, 2, 3)]
    runs += [["--deconv-type", "3"], ["--deconv-type", "1"]]  # with the sparse step (its default iterations)
    runs.append(["--deconv-type", "0", "--sparse-iters", "0", "--background", "0"])  # deskew only
    for args in runs:
        ran = cli("info", src, "--skew-angle", "31.5", "--fwhm", "5,2.5,2.5", *args)
        assert ran.returncode == 0, ran.stderr
        lines = {ln.split(":")[0].strip(): ln for ln in ran.stdout.splitlines() if ":" in ln}
        for key in ("memory per task", "deskew"):
            figure = lines[key].split("~")[1].split()[:2]
            value = float(figure[0]) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[figure[1].rstrip(",")]
            print(args, key, figure)
            assert value <= 2**30, (args, lines[key])


# --------------------------------------------------------------------------- the angle from metadata

SETTINGS_TXT = """***** ***** *****   General   ***** ***** *****
Date :\t12/13/2017 11:57:17 AM
Acq Mode :\tZ stack
Version :\tv 4.04505.Development

***** ***** *****   Notes   ***** ***** *****


***** ***** *****   Waveform   ***** ***** *****
Waveform type :\tLinear
Cycle lasers :\tper Z
Z motion :\tSample piezo

Excitation Filter, Laser, Power (%), Exp(ms) (0) :\tN/A\t488\t10\t20
S PZT Offset, Interval (um), # of Pixels for Excitation (0) :\t50\t0.4\t14
Z PZT Offset, Interval (um), # of Pixels for Excitation (0) :\t11\t0\t14
# of stacks (0) :\t1

***** ***** *****   Camera   ***** ***** *****
Model=C11440-22C
Serial=100469
Exp(s)=0.02000
ROI=Left=897 Top=897 Right=1152 Bot=1152

***** ***** *****   .ini File   ***** ***** *****
[General]
Camera type = Orca4.0
Twin cam mode? = FALSE

[Sample stage]
Angle between stage and bessel beam (deg) = 31.5

[Detection optics]
Magnification = 62.5
"""


@pytest.mark.slow
def test_a_janelia_settings_txt_beside_a_tiff_gives_the_angle_and_voxel_size(tmp_path):
    """A bare TIFF with the Janelia acquisition software's Settings.txt beside it (the format LLSpy reads):
    a run with no --skew-angle and no --voxel-size deskews it at the file's 31.5 degrees, 0.4 um stage step
    and 6.5 um / 62.5 pixels; info says where the angle came from; --skew-angle 0 turns the skew off."""
    import tifffile
    from helpers import cli

    from bigdecon.io import open_image

    rng = np.random.default_rng(13)
    raw = rng.integers(100, 1000, (14, 10, 30)).astype(np.uint16)
    tiff = tmp_path / "cell1_ch0_stack0000_488nm_0000000msec_0001234567msecAbs.tif"
    tifffile.imwrite(tiff, raw)
    (tmp_path / "cell1_Settings.txt").write_text(SETTINGS_TXT)
    (tmp_path / "other_Settings.txt").write_text(SETTINGS_TXT.replace("= 31.5", "= 45"))  # not this data set's
    ran = cli("info", tiff)
    assert ran.returncode == 0, ran.stderr
    assert "skew angle:       31.5 deg (cell1_Settings.txt ([Sample stage]))" in ran.stdout
    assert "output shape:     14x10x" in ran.stdout
    out = tmp_path / "view.ome.zarr"
    ran = cli("run", tiff, out, "--sparse-iters", "0", "--background", "0", "--deconv-type", "0")
    assert ran.returncode == 0, ran.stderr
    img = open_image(str(out))
    fill = float(np.median(raw[-1]))
    np.testing.assert_allclose(img.data.compute(), deskew(raw, 31.5, 0.4, 0.104, fill=fill), atol=1e-3)
    assert img.scale["z"] == pytest.approx(0.4 * math.sin(math.radians(31.5))) and img.scale["x"] == 0.104
    assert img.attrs["bigdecon"]["deskew"]["angle_from"] == "cell1_Settings.txt ([Sample stage])"
    plain = cli("info", tiff, "--skew-angle", "0")
    assert plain.returncode == 0 and "output shape:     14x10x30" in plain.stdout and "skew angle" not in plain.stdout


def test_an_objective_scan_settings_txt_says_not_skewed(tmp_path, run_main):
    """Z motion other than Sample piezo (an objective scan): info says the stack is not skewed, and plans
    no deskew."""
    import tifffile

    tiff = tmp_path / "cell2_ch0_stack0000.tif"
    tifffile.imwrite(tiff, np.ones((6, 8, 12), np.uint16))
    (tmp_path / "cell2_Settings.txt").write_text(SETTINGS_TXT.replace("Sample piezo", "Z objective piezo"))
    ran = run_main("info", tiff)
    assert ran.returncode == 0, ran.stderr
    assert (
        "skew:        not skewed (objective scan); angle 31.5 deg (cell2_Settings.txt ([Sample stage]))" in ran.stdout
    )
    assert "output shape:     6x8x12" in ran.stdout and "skew angle" not in ran.stdout


def test_the_angle_round_trips_through_bigdecons_omezarr_attributes(tmp_path):
    """write_image(skew_angle=..., skew_axis=...) records a skewed stack; a run with no angle deskews it
    along that axis; its output says it is deskewed, and running on the output deskews nothing again."""
    import bigdecon
    from bigdecon.io import open_image, write_image
    from bigdecon.io.skew_meta import read_skew

    rng = np.random.default_rng(14)
    raw = rng.uniform(0, 100, (8, 30, 12)).astype(np.float32)
    src = write_image(str(tmp_path / "raw.ome.zarr"), raw, "zyx", scale=SCALE, units=UNITS, skew_angle=-40.0,
                      skew_axis="y")  # fmt: skip
    out = str(tmp_path / "view.ome.zarr")
    bigdecon.deconvolve(src, out, **{**DESKEW_ONLY, "skew_angle": None}, skew_fill=0.0)
    img = open_image(out)
    want = np.swapaxes(deskew(np.swapaxes(raw, 1, 2), -40.0, 0.4, 0.104), 1, 2)
    np.testing.assert_allclose(img.data.compute(), want, atol=1e-5)
    found = read_skew(img)
    assert found is not None and not found.skewed and found.angle == -40.0 and found.axis == "y"
    assert img.attrs["bigdecon"]["deskew"]["angle_from"] == "OME-Zarr attributes (bigdecon.skew)"
    assert bigdecon.plan(out, sparse_iters=0, background=0, deconv_type=0)["output_shape"] == list(want.shape)
