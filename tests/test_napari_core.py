"""The computations behind the napari widget (bigdecon.napari._core), without napari: a preview is one
block of a run, and a saved configuration is what `bigdecon run --config` reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import cli

import bigdecon
from bigdecon.data import filaments_timelapse
from bigdecon.errors import InputError
from bigdecon.io import open_image, write_image
from bigdecon.napari._core import PREVIEW_KEYS, Stats, image_source, preview_region, save_config


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """A whole out-of-core run (bigdecon.deconvolve, default parameters) of a filament time-lapse."""
    folder = tmp_path_factory.mktemp("napari-core")
    raw, _ = filaments_timelapse((10, 176, 176), fwhm=3.0, seed=3)
    source = write_image(str(folder / "raw.ome.zarr"), raw, "tyx")
    output = str(folder / "out.ome.zarr")
    bigdecon.deconvolve(source, output, fwhm=3)
    group = zarr.open_group(output, mode="r")
    return source, raw, np.asarray(group["s0"]), dict(group.attrs)["bigdecon"]


@pytest.mark.slow
def test_preview_equals_the_region_of_a_whole_run(whole_run):
    """With the run's statistics, the preview of an interior region (its halo inside the data) is the
    run's output there: 1 % of the maximum at most, the adaptive step of 2-D Richardson-Lucy being the
    one global thing a block cannot see (measured 4.1e-3)."""
    source, raw, whole, attrs = whole_run
    region = {"t": (2, 8), "y": (56, 120), "x": (64, 128)}
    p = preview_region(open_image(source), {"fwhm": 3}, region, stats=Stats.of_run(attrs))
    assert p.halo == {"t": 8, "y": 37, "x": 37}  # step 4's 16 + step 5's 21 in y and x
    cut = whole[2:8, 56:120, 64:128]
    assert p.data.shape == cut.shape and p.data.dtype == np.float32
    assert np.abs(p.data - cut).max() < 1e-2 * cut.max()
    # From a layer's array (what napari holds) the preview is the same as from the file.
    q = preview_region(image_source(raw, "tyx"), {"fwhm": 3}, region, stats=Stats.of_run(attrs))
    np.testing.assert_array_equal(q.data, p.data)
    # The data set's raw maximum and mean, computed as the run computes them (its own pass), are the run's.
    from bigdecon.napari._core import dataset_stats

    ds = dataset_stats(open_image(source), {"fwhm": 3})
    run = Stats.of_run(attrs)
    assert (ds.scale, ds.mean, ds.source) == (run.scale, run.mean, "data set")
    # Statistics estimated from the block alone: the same structures, another intensity scale.
    own = preview_region(image_source(raw, "tyx"), {"fwhm": 3}, region)
    assert np.corrcoef(own.data.ravel(), cut.ravel())[0, 1] > 0.98
    assert own.stats.scale <= attrs["statistics"]["raw_max"][0]


def test_preview_refuses_what_a_run_refuses():
    raw, _ = filaments_timelapse((4, 48, 48), fwhm=3.0, seed=1)
    with pytest.raises(InputError, match="fwhm"):
        preview_region(image_source(raw, "tyx"), {}, {"y": (0, 32)})
    with pytest.raises(InputError, match="empty along y"):
        preview_region(image_source(raw, "tyx"), {"fwhm": 3}, {"y": (40, 40)})
    assert "fwhm" in PREVIEW_KEYS and "sparse_iters" in PREVIEW_KEYS and "scheduler" not in PREVIEW_KEYS


def test_saved_config_is_read_by_the_cli(tmp_path):
    """A saved configuration is what `bigdecon info/run --config` read: the fidelity changes the planned halo."""
    source = write_image(str(tmp_path / "raw.ome.zarr"), np.ones((8, 64, 64), np.float32), "tyx")
    options = {"fwhm": [3.0], "sparse_iters": 50, "fidelity": 120.0, "background": 1, "voxel_size": [0.1, 0.1]}
    config = save_config(tmp_path / "run.toml", options)
    text = Path(config).read_text()
    assert "sparse_iters = 50" in text and "background" not in text  # defaults are left out
    out = cli("info", source, "--config", config)
    assert out.returncode == 0, out.stderr
    assert "overlap per axis: t 8, y 17, x 17" in out.stdout  # fidelity 120: ceil(16 * (150/120)**0.25)
    assert "y 0.1 micrometer (--voxel-size)" in out.stdout


def test_preview_takes_every_psf_source(tmp_path):
    """The PSF from the optics (a 3-D widefield model from NA, wavelength and the layer's voxel size) and
    from a file, resolved by the run's own request code; the halo follows the PSF."""
    from bigdecon.data import beads_volume
    from bigdecon.solvers import gaussian_psf

    raw, _ = beads_volume((24, 64, 64), fwhm=(6.0, 3.0, 3.0), seed=1)
    src = image_source(raw, "zyx", scale=(0.3, 0.1, 0.1))
    region = {"z": (8, 16), "y": (16, 48), "x": (16, 48)}
    optics = preview_region(src, {"na": 1.0, "wavelength": 0.52, "sparse_iters": 5}, region)
    np.save(tmp_path / "psf.npy", gaussian_psf((3.0, 3.0)).astype(np.float32))
    options = {"psf": str(tmp_path / "psf.npy"), "psf_voxel_size": [0.1, 0.1], "sparse_iters": 0}
    measured = preview_region(src, options, region)
    assert optics.data.shape == measured.data.shape == (8, 32, 32)
    assert optics.halo["z"] > 0 and measured.halo["z"] == 0  # a 3-D PSF reaches along z, a 2-D one does not
    assert np.isfinite(optics.data).all() and optics.data.max() > 0 and measured.data.max() > 0


def test_cached_stages_equal_uncached_ones():
    """A step-5 change runs step 5 only, a step-4 change steps 4 and 5 on the cached background, and
    every cached preview is bit for bit the preview computed from nothing."""
    from bigdecon.napari._core import PreviewCache, dataset_stats

    raw, _ = filaments_timelapse((24, 96, 96), fwhm=3.0, seed=4)
    src = image_source(raw, "tyx")
    region = {"t": (3, 11), "y": (24, 72), "x": (20, 68)}
    base = {"fwhm": 3, "sparse_iters": 8}
    stats = dataset_stats(src, base)
    assert stats.source == "data set" and stats.scale == float(raw.max())
    cache = PreviewCache()
    first = preview_region(src, base, region, stats=stats, cache=cache)
    assert set(first.ran) == {"background", "sparse", "deconv"}
    changes = [
        ({"deconv_iters": 12}, {"deconv"}),  # more iterations within the cached step-4 margin
        ({"deconv_type": 2}, {"deconv"}),
        ({"fidelity": 100.0}, {"sparse", "deconv"}),  # a deeper step-4 halo: one more plane of background
        ({"sparsity": 3.0}, {"sparse", "deconv"}),
    ]
    for change, stages in changes:
        options = {**base, **change}
        cached = preview_region(src, options, region, stats=stats, cache=cache)
        fresh = preview_region(src, options, region, stats=stats)
        assert set(cached.ran) - {"background"} == stages, (change, cached.ran)
        assert cached.planes == (1 if "fidelity" in change else 0)  # t 19: the deeper halo (t 0:19 -> 0:20)
        np.testing.assert_array_equal(cached.data, fresh.data)
        assert not np.array_equal(cached.data, first.data)


def test_first_look_is_that_plane_of_the_whole_preview():
    """The first look (one plane with its halo along t) is that plane of the whole region's preview
    that follows it, which is computed with the first look's statistics and its background planes."""
    from bigdecon.napari._core import PreviewCache, preview_steps

    raw, _ = filaments_timelapse((40, 96, 96), fwhm=3.0, seed=5)
    src = image_source(raw, "tyx")
    region = {"t": (4, 36), "y": (24, 72), "x": (24, 72)}
    cache = PreviewCache()
    first, whole = preview_steps(src, {"fwhm": 3, "sparse_iters": 10}, region, cache=cache, plane=20)
    assert first.first_look and not whole.first_look
    assert first.data.shape == (1, 48, 48) and first.start["t"] == 20 and whole.data.shape == (32, 48, 48)
    assert whole.stats == first.stats  # the same statistics: no jump in intensity when it is replaced
    assert (first.planes, whole.planes) == (17, 40 - 17)  # t 12:29 with the halo of 8; the rest of 0:40 after
    plane = whole.data[20 - 4]
    err = np.abs(first.data[0] - plane).max() / plane.max()
    assert err < 1e-4, err  # measured 1.4e-6 (default parameters, sparse_iters 10 here: 1.6e-6)


def test_no_first_look_where_it_would_cost_the_whole():
    """With a 3-D PSF the step-5 reach along z (36 planes for FWHM 6) makes one plane's block most of the
    region's: only the whole region is computed."""
    from bigdecon.data import beads_volume
    from bigdecon.napari._core import preview_steps

    raw, _ = beads_volume((40, 48, 48), fwhm=(6.0, 3.0, 3.0), seed=2)
    steps = list(preview_steps(image_source(raw, "zyx"), {"fwhm": (6, 3, 3), "sparse_iters": 3}, {"z": (12, 28)}))
    assert [p.first_look for p in steps] == [False] and steps[0].data.shape == (16, 48, 48)
