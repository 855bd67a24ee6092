"""The computations behind the napari widget (bigdecon.napari._core), without napari: a preview is one
block of a run, and a saved configuration is what `bigdecon run --config` reads."""

from __future__ import annotations

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
    text = open(config).read()
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
