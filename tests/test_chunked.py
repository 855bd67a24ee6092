"""Chunked results equal whole-array results: every parameter mode, awkward chunkings."""

from __future__ import annotations

import numpy as np
import pytest

import dask.array as da

import bigdecon
from bigdecon.chunked import default_depth
from bigdecon.io import OmeZarrWriter, open_image, write_block
from bigdecon.params import Params
from bigdecon.pipeline import deconv_stage, output_psf, preprocess, sparse_stage

from conftest import filaments

TOLERANCE = 1e-3  # of the image maximum, everywhere, edges included (ALGORITHM.md)

MODES = {
    "defaults": dict(fwhm=3),
    "bg0": dict(fwhm=3, background=0),
    "bg2": dict(fwhm=3, background=2),
    "bg3": dict(fwhm=3, background=3),
    "bg4": dict(fwhm=3, background=4),
    "bg5": dict(fwhm=3, background=5),
    "sparse_only": dict(fwhm=3, sparse_iters=50, fidelity=120, sparsity=8, tcontinuity=0.8, background=0, deconv_type=0),
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
    chunked = bigdecon.sparse_deconvolve(da.from_array(data, chunks=(5, 33, 50)), fwhm=3, sparse_iters=40, chunks=chunks)
    assert seam_error(chunked.compute(), whole) <= TOLERANCE


def test_2d_image_and_3d_psf(data):
    plane = data[0]
    whole = bigdecon.sparse_deconvolve(plane, fwhm=3, sparse_iters=40)
    chunked = bigdecon.sparse_deconvolve(da.from_array(plane), fwhm=3, sparse_iters=40, chunks=(24, 20)).compute()
    assert seam_error(chunked, whole) <= TOLERANCE
    vol = np.concatenate([data, data[::-1]])  # 20 planes for a z FWHM of 4
    whole = bigdecon.sparse_deconvolve(vol, fwhm=(4, 3, 3), sparse_iters=30, background=0)
    chunked = bigdecon.sparse_deconvolve(da.from_array(vol), fwhm=(4, 3, 3), sparse_iters=30, background=0, chunks=(6, 36, 40))
    assert seam_error(chunked.compute(), whole) <= TOLERANCE


def test_halo_depth_is_what_makes_it_exact(data):
    """A shallow halo leaves visible seams; the default depth does not."""
    params = dict(fwhm=3, background=0, deconv_type=0, sparse_iters=100)
    whole = bigdecon.sparse_deconvolve(data, **params)
    shallow = bigdecon.sparse_deconvolve(da.from_array(data), chunks=(3, 24, 24), depth={"t": 1, "y": 1, "x": 1}, **params)
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
    writer = OmeZarrWriter(
        path,
        shape=array.shape,
        axes=axes,
        chunks=chunks,
        dtype=str(array.dtype),
        scale={"y": 0.065, "x": 0.065, "z": 0.2, "t": 2.0},
        units={"y": "micrometer", "x": "micrometer", "z": "micrometer", "t": "second"},
        channels=channels,
        ngff_version=ngff,
    )
    write_block(path, tuple(slice(None) for _ in array.shape), array)
    writer.finalize()
    return path


@pytest.mark.parametrize("mode", ["defaults", "sparse_only", "fourier_x2"])
def test_deconvolve_omezarr_equals_whole(tmp_path, data, mode):
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
    assert np.abs(out.data.compute().astype(np.float32) - np.clip(np.round(whole), 0, 65535)).max() <= 1 + TOLERANCE * whole.max()


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
    from bigdecon.chunked import Layout, make_plan

    layout = Layout(("t", "y", "x"), (12, 256, 256))
    params = Params.from_kwargs(fwhm=3)
    assert len(make_plan(layout, params).sparse_tasks()) == 1
    plan = make_plan(layout, params, min_tasks=8)
    assert len(plan.sparse_tasks()) >= 8 and min(plan.sparse_block.values()) >= 1
    assert len(plan.plane_tasks()) >= 8
    # Explicit chunks win.
    assert len(make_plan(layout, params, chunks=(12, 256, 256), min_tasks=8).sparse_tasks()) == 1


def test_block_size_follows_the_memory_budget():
    from bigdecon.chunked import WORKSET_FACTOR, Layout, make_plan

    layout = Layout(("t", "y", "x"), (64, 2048, 2048))
    params = Params.from_kwargs(fwhm=3)
    cpu = make_plan(layout, params)
    gpu = make_plan(layout, params, task_memory=32 * 2**30)  # 40% of an 80 GB card
    assert cpu.sparse_block["y"] == 256 and gpu.sparse_block["y"] >= 1024
    k, y, x = (gpu.sparse_block[a] + 2 * gpu.depth[a] for a in ("k", "y", "x"))
    assert 4 * WORKSET_FACTOR * k * y * x <= 32 * 2**30
