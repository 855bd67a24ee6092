"""Chunked results equal whole-array results: every parameter mode, awkward chunkings."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from helpers import filaments

import bigdecon
from bigdecon.io import open_image, write_image
from bigdecon.params import Params
from bigdecon.planner import default_depth
from bigdecon.stages import deconv_stage, output_psf, preprocess, sparse_stage

TOLERANCE = 1e-3  # of the image maximum, everywhere, edges included (ALGORITHM.md)

MODES = {
    "defaults": dict(fwhm=3),
    "bg0": dict(fwhm=3, background=0),
    "bg2": dict(fwhm=3, background=2),
    "bg3": dict(fwhm=3, background=3),
    "bg4": dict(fwhm=3, background=4),
    "bg5": dict(fwhm=3, background=5),
    "sparse_only": dict(
        fwhm=3, sparse_iters=50, fidelity=120, sparsity=8, tcontinuity=0.8, background=0, deconv_type=0
    ),
    "rl_only": dict(fwhm=3, sparse_iters=0),
    "landweber": dict(fwhm=3, deconv_type=2, background=0),
    "fourier_x2": dict(fwhm=3, up_sample=1, sparse_iters=30),
    "spatial_x2": dict(fwhm=3, up_sample=2, fidelity=60, sparsity=4, sparse_iters=30),
    "no_continuity": dict(fwhm=3, tcontinuity=0, background=0, sparse_iters=40),
    "low_fidelity": dict(fwhm=3, fidelity=40, sparse_iters=60, background=0),
}


@pytest.fixture(scope="module")
def data():
    return filaments((10, 72, 80), seed=4)[0]


def seam_error(chunked, whole) -> float:
    return float(np.abs(chunked - whole).max() / np.abs(whole).max())


@pytest.mark.parametrize("mode", list(MODES), ids=list(MODES))
def test_lazy_chunked_equals_whole(data, mode):
    params = MODES[mode]
    whole = bigdecon.sparse_deconvolve(data, **params)
    lazy = bigdecon.sparse_deconvolve(da.from_array(data, chunks=(4, 40, 40)), chunks=(3, 24, 32), **params)
    assert isinstance(lazy, da.Array)
    chunked = lazy.compute()
    assert chunked.shape == whole.shape and chunked.dtype == np.float32
    assert seam_error(chunked, whole) <= TOLERANCE


@pytest.mark.parametrize(
    "chunks",
    [(1, 72, 80), (10, 16, 16), (7, 71, 13), (2, 9, 80)],
    ids=["one-plane", "small-yx", "prime", "thinner-than-halo"],
)
def test_awkward_chunkings(data, chunks):
    whole = bigdecon.sparse_deconvolve(data, fwhm=3, sparse_iters=40)
    chunked = bigdecon.sparse_deconvolve(
        da.from_array(data, chunks=(5, 33, 50)), fwhm=3, sparse_iters=40, chunks=chunks
    )
    assert seam_error(chunked.compute(), whole) <= TOLERANCE


def test_2d_image_and_3d_psf(data):
    plane = data[0]
    whole = bigdecon.sparse_deconvolve(plane, fwhm=3, sparse_iters=40)
    chunked = bigdecon.sparse_deconvolve(da.from_array(plane), fwhm=3, sparse_iters=40, chunks=(24, 20)).compute()
    assert seam_error(chunked, whole) <= TOLERANCE
    vol = np.concatenate([data, data[::-1]])  # 20 planes for a z FWHM of 4
    whole = bigdecon.sparse_deconvolve(vol, fwhm=(4, 3, 3), sparse_iters=30, background=0)
    chunked = bigdecon.sparse_deconvolve(
        da.from_array(vol), fwhm=(4, 3, 3), sparse_iters=30, background=0, chunks=(6, 36, 40)
    )
    assert seam_error(chunked.compute(), whole) <= TOLERANCE


def test_halo_depth_is_what_makes_it_exact(data):
    """A shallow halo leaves visible seams; the default depth does not."""
    params = dict(fwhm=3, background=0, deconv_type=0, sparse_iters=100)
    whole = bigdecon.sparse_deconvolve(data, **params)
    shallow = bigdecon.sparse_deconvolve(
        da.from_array(data), chunks=(3, 24, 24), depth={"t": 1, "y": 1, "x": 1}, **params
    )
    deep = bigdecon.sparse_deconvolve(da.from_array(data), chunks=(3, 24, 24), **params)
    assert seam_error(shallow.compute(), whole) > 3e-3
    assert seam_error(deep.compute(), whole) < 1e-4


def test_default_depth_follows_the_solver():
    d = default_depth(Params.from_kwargs(fwhm=3))
    assert d == {"k": 8, "y": 16, "x": 16}
    low = default_depth(Params.from_kwargs(fwhm=3, fidelity=15))
    assert low["y"] > d["y"] and low["k"] > d["k"]


# ----------------------------------------------------------------------------- OME-Zarr to OME-Zarr


def write_input(path, array, axes, chunks, ngff="0.5", channels=None):
    scale = {"y": 0.065, "x": 0.065, "z": 0.2, "t": 2.0}
    units = {"y": "micrometer", "x": "micrometer", "z": "micrometer", "t": "second"}
    return write_image(path, array, axes, chunks=chunks, scale=scale, units=units, channels=channels, ngff_version=ngff)


@pytest.mark.parametrize("mode", list(MODES), ids=list(MODES))
def test_deconvolve_omezarr_equals_whole(tmp_path, data, mode):
    """Out of core (tasks reading their halos from stores) equals the whole-array result, every mode."""
    params = MODES[mode]
    src = write_input(str(tmp_path / "in.zarr"), data, "tyx", (3, 32, 32))
    summary = bigdecon.deconvolve(src, str(tmp_path / "out.zarr"), chunks={"t": 4, "y": 40, "x": 32}, **params)
    out = open_image(summary["output"])
    whole = bigdecon.sparse_deconvolve(data, **params)
    assert out.data.shape == whole.shape
    assert seam_error(out.data.compute(), whole) <= TOLERANCE
    factor = 2 if params.get("up_sample") else 1
    assert out.scale["y"] == pytest.approx(0.065 / factor) and out.units["x"] == "micrometer"
    assert out.attrs["bigdecon"]["parameters"]["fidelity"] == params.get("fidelity", 150)


def test_channels_and_volumes_are_independent(tmp_path):
    """tczyx: each channel normalised by its own maximum, each time point's volume solved alone."""
    a = filaments((6, 40, 48), seed=1)[0]
    b = filaments((6, 40, 48), seed=2)[0] * 7
    array = np.stack([np.stack([a, b]), np.stack([a[::-1], b[::-1]])])  # t=2, c=2, z=6
    channels = [{"label": "GFP", "color": "00FF00"}, {"label": "RFP", "color": "FF0000"}]
    src = write_input(str(tmp_path / "in.zarr"), array, "tczyx", (1, 1, 3, 20, 48), channels=channels)
    params = dict(fwhm=3, sparse_iters=30, background=2)
    bigdecon.deconvolve(src, str(tmp_path / "out.zarr"), chunks={"z": 3, "y": 24, "x": 24}, **params)
    out = open_image(str(tmp_path / "out.zarr"))
    assert out.axes == ("t", "c", "z", "y", "x")
    assert [c["label"] for c in out.channels] == ["GFP", "RFP"]
    got = out.data.compute()
    # Whole-array reference from the same stages, unchunked: statistics over all
    # of a channel (both time points), each time point's volume solved whole.
    p = Params.from_kwargs(**params)
    for c, vol in enumerate((np.stack([a, a[::-1]]), np.stack([b, b[::-1]]))):
        scale = float(vol.max())
        mean = float(vol.mean(dtype=np.float64)) / scale
        h = [preprocess(v, scale, mean, p) for v in vol]
        h_max = max(float(x.max()) for x in h)
        g = [sparse_stage(x, h_max, p, coupled=True) for x in h]
        g_max = max(float(x.max()) for x in g)
        expected = np.stack([deconv_stage(x, g_max, scale, p, output_psf(p, 3)) for x in g])
        assert seam_error(got[:, c], expected) <= TOLERANCE


def test_integer_output_and_ngff_04(tmp_path, data):
    src = write_input(str(tmp_path / "in.zarr"), np.round(data).astype(np.uint16), "tyx", (5, 72, 80), ngff="0.4")
    out_path = str(tmp_path / "out.zarr")
    bigdecon.deconvolve(src, out_path, fwhm=3, sparse_iters=20, output_dtype="uint16", ngff_version="0.4")
    out = open_image(out_path)
    assert out.ngff_version == "0.4" and out.data.dtype == np.uint16
    import zarr
    from ome_zarr_models.v04 import Image

    Image.from_zarr(zarr.open_group(out_path, mode="r"))
    whole = bigdecon.sparse_deconvolve(data.round(), fwhm=3, sparse_iters=20)
    assert (
        np.abs(out.data.compute().astype(np.float32) - np.clip(np.round(whole), 0, 65535)).max()
        <= 1 + TOLERANCE * whole.max()
    )


def test_output_validates_as_ngff_05(tmp_path, data):
    import zarr
    from ome_zarr_models.v05 import Image

    src = write_input(str(tmp_path / "in.zarr"), data, "tyx", (5, 72, 80))
    out_path = str(tmp_path / "out.zarr")
    bigdecon.deconvolve(src, out_path, fwhm=3, sparse_iters=10, timepoints="2:8")
    Image.from_zarr(zarr.open_group(out_path, mode="r"))
    assert open_image(out_path).data.shape == (6, 72, 80)
    with pytest.raises(bigdecon.InputError, match="output exists"):
        bigdecon.deconvolve(src, out_path, fwhm=3, sparse_iters=10)


def test_default_blocks_give_every_worker_work():
    from bigdecon.planner import Layout, make_plan

    layout = Layout(("t", "y", "x"), (12, 256, 256))
    params = Params.from_kwargs(fwhm=3)
    assert len(make_plan(layout, params).sparse_tasks()) == 1
    plan = make_plan(layout, params, min_tasks=8)
    assert len(plan.sparse_tasks()) >= 8 and min(plan.sparse_block.values()) >= 1
    assert len(plan.plane_tasks()) >= 8
    # Explicit chunks win.
    assert len(make_plan(layout, params, chunks=(12, 256, 256), min_tasks=8).sparse_tasks()) == 1


def test_block_size_follows_the_memory_budget():
    from bigdecon.planner import WORKSET_FACTOR, Layout, make_plan

    layout = Layout(("t", "y", "x"), (64, 2048, 2048))
    params = Params.from_kwargs(fwhm=3)
    cpu = make_plan(layout, params)
    gpu = make_plan(layout, params, task_memory=32 * 2**30)  # 40% of an 80 GB card
    assert cpu.sparse_block["y"] == 256 and gpu.sparse_block["y"] >= 1024
    k, y, x = (gpu.sparse_block[a] + 2 * gpu.depth[a] for a in ("k", "y", "x"))
    assert 4 * WORKSET_FACTOR * k * y * x <= 32 * 2**30


@pytest.mark.parametrize(
    "chunks",
    [{"t": 1, "y": 72, "x": 80}, {"t": 2, "y": 9, "x": 80}, {"t": 7, "y": 71, "x": 13}],
    ids=["one-plane", "thinner-than-halo", "prime"],
)
def test_deconvolve_awkward_chunkings(tmp_path, data, chunks):
    src = write_input(str(tmp_path / "in.zarr"), data, "tyx", (5, 36, 40))
    bigdecon.deconvolve(src, str(tmp_path / "out.zarr"), chunks=chunks, fwhm=3, sparse_iters=40)
    whole = bigdecon.sparse_deconvolve(data, fwhm=3, sparse_iters=40)
    assert seam_error(open_image(str(tmp_path / "out.zarr")).data.compute(), whole) <= TOLERANCE


def test_deconvolve_2d_images_and_psfs(tmp_path, data):
    """A (y, x) image; a (z, y, x) volume with a 3-value fwhm and with a measured 3-D PSF; a measured 2-D PSF."""
    plane = data[0]
    src = write_input(str(tmp_path / "plane.zarr"), plane, "yx", (36, 40))
    bigdecon.deconvolve(src, str(tmp_path / "plane-out.zarr"), chunks={"y": 24, "x": 20}, fwhm=3, sparse_iters=40)
    whole = bigdecon.sparse_deconvolve(plane, fwhm=3, sparse_iters=40)
    assert seam_error(open_image(str(tmp_path / "plane-out.zarr")).data.compute(), whole) <= TOLERANCE

    vol = np.concatenate([data, data[::-1]])  # 20 planes for a z FWHM of 4
    src = write_input(str(tmp_path / "vol.zarr"), vol, "zyx", (5, 36, 40))
    rng = np.random.default_rng(0)
    measured_3d = bigdecon.gaussian_psf((4, 3, 3))[1:-1] * rng.uniform(0.8, 1.2, (17, 15, 15))
    measured_2d = bigdecon.gaussian_psf(3.5)[2:-2, 2:-2]
    cases = {
        "fwhm3": dict(fwhm=(4, 3, 3)),
        "psf3": dict(psf=measured_3d, psf_as_is=True),  # as given on both paths
        "psf2": dict(psf=measured_2d, psf_as_is=True),
    }
    for name, psf_args in cases.items():
        params = dict(sparse_iters=30, background=0, **psf_args)
        out = str(tmp_path / f"vol-{name}.zarr")
        bigdecon.deconvolve(src, out, chunks={"z": 6, "y": 36, "x": 40}, **params)
        whole = bigdecon.sparse_deconvolve(vol, **params)
        assert seam_error(open_image(out).data.compute(), whole) <= TOLERANCE, name
        recorded = open_image(out).attrs["bigdecon"]["parameters"]
        if "psf" in psf_args:
            assert recorded["psf_shape"] == list(psf_args["psf"].shape) and len(recorded["psf_sha256"]) == 64


def test_3d_psf_keeps_whole_plane_steps_small():
    """3-D step 5 runs on its own (z, y, x) blocks; the background/up-sampling tasks stay plane-sized."""
    from bigdecon.planner import Layout, make_plan

    layout = Layout(("z", "y", "x"), (64, 512, 512))
    plan = make_plan(layout, Params.from_kwargs(fwhm=(4, 3, 3), up_sample=1))
    assert len(plan.final_tasks()) > 1 and plan.deconv_task_bytes() <= 512 * 2**20
    assert len(plan.plane_tasks()) > 1 and max(b - a for a, b in (t[0] for t in plan.plane_tasks())) < 64


def test_task_context_stays_small_with_large_measured_psfs(tmp_path):
    """Every task carries the run's context: measured PSFs travel through the work folder, not in it."""
    import pickle

    from bigdecon.io import open_image
    from bigdecon.passes.ledger import Ledger, load_array
    from bigdecon.passes.options import parse_run_options
    from bigdecon.passes.request import prepare_request
    from bigdecon.passes.run import _task_context

    rng = np.random.default_rng(0)
    src = write_input(tmp_path / "in.zarr", rng.random((3, 40, 64, 64), np.float32), "czyx", (1, 8, 64, 64))
    sizes = {}
    for n in (9, 31):  # a 31^3 float32 PSF alone is 119 kB, and there is one per channel
        psfs = {c: rng.random((n, n, n)).astype(np.float32) for c in range(3)}
        request = prepare_request(open_image(src), *parse_run_options(dict(psf=psfs, sparse_iters=10)))
        ledger = Ledger(str(tmp_path / f"work-{n}"))
        ctx = _task_context(request, {"scale": [1.0] * 3, "mean": [0.5] * 3}, ledger, str(tmp_path / "out"), "cpu")
        sizes[n] = len(pickle.dumps(ctx))
        kernel = load_array(ctx.psf[2], ctx.run_id)  # what a task reads instead
        np.testing.assert_allclose(kernel, psfs[2] / psfs[2].sum(), rtol=1e-6)
    assert sizes[31] < 8 * 2**10 and sizes[31] - sizes[9] < 256, sizes


def test_per_channel_psf_sizes(tmp_path):
    """Each channel deconvolved with its own FWHM (and its own statistics)."""
    a = filaments((6, 40, 48), seed=1)[0]
    b = filaments((6, 40, 48), seed=2, fwhm=4.5)[0] * 3
    src = write_input(str(tmp_path / "in.zarr"), np.stack([a, b]), "czyx", (1, 3, 40, 48))
    fwhm = {0: 3.0, 1: (4.5, 4.5)}
    out = str(tmp_path / "out.zarr")
    bigdecon.deconvolve(src, out, fwhm=fwhm, sparse_iters=30, chunks={"z": 3, "y": 24, "x": 24})
    got = open_image(out)
    for c, (image, w) in enumerate(((a, 3.0), (b, 4.5))):
        whole = bigdecon.sparse_deconvolve(image, fwhm=w, sparse_iters=30)
        assert seam_error(got.data[c].compute(), whole) <= TOLERANCE
    assert got.attrs["bigdecon"]["parameters"]["fwhm"] == {"0": [3.0, 3.0], "1": [4.5, 4.5]}
    # Only the chosen channels need a value; a channel without one is named.
    with pytest.raises(bigdecon.InputError, match="channel 1: fwhm"):
        bigdecon.plan(src, fwhm={0: 3.0})
    assert bigdecon.plan(src, fwhm={1: 4.5}, channels=[1])["fwhm_px"] == [[4.5, 4.5]]
    with pytest.raises(bigdecon.InputError, match=r"channel\(s\) \[5\]"):
        bigdecon.plan(src, fwhm={0: 3, 5: 3})


class Stop(Exception):
    """Raised by :func:`stop_after` to interrupt a run in this process."""


def stop_after(n: int):
    """A progress callback that interrupts the run once ``n`` tasks are done."""

    def progress(done, total):
        if done >= n:
            raise Stop

    return progress


def test_resume_refuses_another_psf_of_the_same_shape(tmp_path, data, monkeypatch):
    src = write_input(str(tmp_path / "in.zarr"), data, "tyx", (5, 72, 80))
    out = str(tmp_path / "out.zarr")
    psf_a = bigdecon.gaussian_psf(3.0)
    psf_b = np.zeros_like(psf_a)
    psf_b[psf_b.shape[0] // 2, psf_b.shape[1] // 2] = 1
    with pytest.raises(Stop):
        bigdecon.deconvolve(src, out, psf=psf_a, sparse_iters=10, chunks={"t": 2}, progress=stop_after(2))
    with pytest.raises(bigdecon.InputError, match=r"params\.psf_sha256"):
        bigdecon.deconvolve(src, out, psf=psf_b, sparse_iters=10, chunks={"t": 2}, resume=True)
    with pytest.raises(bigdecon.InputError, match=r"params\.fidelity: stored 150\.0, requested 100"):
        bigdecon.deconvolve(src, out, psf=psf_a, sparse_iters=10, chunks={"t": 2}, fidelity=100, resume=True)
    # The same PSF resumes, from a relative spelling of the same source too.
    monkeypatch.chdir(tmp_path)
    bigdecon.deconvolve("in.zarr", out, psf=psf_a, sparse_iters=10, chunks={"t": 2}, resume=True)
    assert open_image(out).attrs["bigdecon"]["status"] == "complete"


def test_object_store_output_and_resume(data):
    """An fsspec URL output (here memory://) keeps its work folder in the store and resumes."""
    import fsspec

    fs = fsspec.filesystem("memory")
    src = write_input("memory://bucket/in.ome.zarr", data, "tyx", (5, 36, 40))
    params = dict(fwhm=3, sparse_iters=20, background=1, chunks={"t": 5, "y": 36, "x": 40})
    bigdecon.deconvolve(src, "memory://bucket/ref.ome.zarr", **params)
    expected = open_image("memory://bucket/ref.ome.zarr").data.compute()
    assert not fs.exists("/bucket/ref.ome.zarr/.bigdecon-work")  # intermediates gone from the bucket
    with pytest.raises(Stop):
        bigdecon.deconvolve(src, "memory://bucket/out.ome.zarr", progress=stop_after(5), **params)
    assert fs.exists("/bucket/out.ome.zarr/.bigdecon-work/ledger")
    result = bigdecon.deconvolve(src, "memory://bucket/out.ome.zarr", resume=True, **params)
    assert result["resumed"] >= 5
    assert np.array_equal(open_image("memory://bucket/out.ome.zarr").data.compute(), expected)
    fs.rm("/bucket", recursive=True)


def test_timepoints_shift_the_time_origin(tmp_path, data):
    src = write_input(str(tmp_path / "in.zarr"), data, "tyx", (5, 72, 80))
    out = str(tmp_path / "out.zarr")
    bigdecon.deconvolve(src, out, fwhm=3, sparse_iters=10, timepoints="2:-1")
    got = open_image(out)
    assert got.shape == (7, 72, 80) and got.translation["t"] == pytest.approx(2 * 2.0)
    whole = bigdecon.sparse_deconvolve(data[2:9], fwhm=3, sparse_iters=10)
    assert seam_error(got.data.compute(), whole) <= TOLERANCE


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(chunks={"q": 2}), "chunks names axis 'q'"),
        (dict(chunks={"c": 1}), "chunks along c cannot be set"),
        (dict(depth={"t": 1}), "depth along t cannot be set: each t is a separate problem"),
        (dict(fwhm=(2, 3, 3), axes="tyx"), "needs a z axis|deconvolves along z"),
        (dict(channels=[0, 0]), "name a channel twice"),
        (dict(psf=np.ones((3, 3))), "either fwhm .* or psf"),
        (dict(timepoints="4:2"), "empty or reversed"),
    ],
    ids=[
        "unknown-axis",
        "channel-axis",
        "outer-axis-depth",
        "3d-psf-on-t",
        "duplicate-channel",
        "fwhm-and-psf",
        "reversed-time",
    ],
)
def test_impossible_requests_are_named(tmp_path, kwargs, message):
    kwargs = dict(kwargs)
    axes = kwargs.pop("axes", "tczyx")
    shape = {"tyx": (4, 32, 32), "tczyx": (2, 1, 4, 32, 32)}[axes]
    src = write_input(str(tmp_path / "in.zarr"), np.ones(shape, np.float32), axes, shape)
    kwargs.setdefault("fwhm", 3)
    with pytest.raises(bigdecon.InputError, match=message):
        bigdecon.plan(src, **kwargs)


def test_resolution_in_the_wrong_unit_is_caught(tmp_path):
    src = write_input(str(tmp_path / "in.zarr"), np.ones((4, 32, 32), np.float32), "tyx", (4, 32, 32))
    assert bigdecon.plan(src, resolution=0.26)["fwhm_px"] == [[4.0, 4.0]]  # 0.26 um / 0.065 um
    with pytest.raises(bigdecon.InputError, match="gives a FWHM of 0.0154 px .* give the resolution in micrometer"):
        bigdecon.plan(src, resolution=0.001)
