"""The napari plugin in a real (headless) napari: the Deconvolve widget, its preview, run, cancel and resume.

These tests need napari, pytest-qt and a display (CI starts Xvfb, see .ci/run). Without them they
skip with the reason, except under CI=true, where a missing piece fails the run.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest


def _missing() -> str | None:
    for module in ("napari", "pytestqt"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install '.[test]' brings napari[pyqt6] and pytest-qt)"
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        return "no display for Qt's OpenGL (run under xvfb-run -a, as .ci/run does)"
    return None


if (why := _missing()) is not None:
    if os.environ.get("CI"):
        pytest.fail(f"napari tests cannot run in CI: {why}", pytrace=False)
    pytest.skip(why, allow_module_level=True)

import zarr  # noqa: E402

from bigdecon.data import filaments_timelapse  # noqa: E402
from bigdecon.napari._widget import DeconvolveWidget, numeric_bounds  # noqa: E402
from bigdecon.params import PARAMETERS, InputError  # noqa: E402

FIGURE = os.environ.get("BIGDECON_NAPARI_FIGURE")  # where test_preview saves the README's screenshot


def _camera(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9 moved it


def _widget(make_napari_viewer, shape=(8, 128, 128)):
    viewer = make_napari_viewer()
    raw, _ = filaments_timelapse(shape, fwhm=3.0, seed=1)
    viewer.add_image(raw, name="raw", scale=(1.0, 0.065, 0.065), metadata={"bigdecon_axes": "tyx"})
    widget = DeconvolveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Deconvolve")
    widget.fields["fwhm"].value = "3"
    return viewer, widget


def test_widget_fields_come_from_the_parameter_model(make_napari_viewer, tmp_path):
    viewer, w = _widget(make_napari_viewer)
    assert w.fields["axes"].value == "tyx" and w.fields["voxel_size"].value == "0.065,0.065"  # from the layer
    assert w.index_fields["t"].native.isHidden() and w.index_fields["c"].native.isHidden()  # t: the third axis
    for name, field in w.fields.items():
        p = PARAMETERS[name]
        assert p.help_text() in field.tooltip and p.flag in field.tooltip
        bounds = numeric_bounds(p)
        if bounds is not None and hasattr(field, "min"):
            p.check(name, type(p.default)(field.min))  # the field's ends are values the model accepts
            with pytest.raises(InputError):
                p.check(
                    name,
                    type(p.default)(field.min - (1 if isinstance(p.default, int) else 1e-9)) if not bounds[2] else 0.0,
                )
    assert w.fields["sparse_iters"].value == 100 and w.fields["fidelity"].value == 150.0
    assert w.fields["psf_model"].choices == ("gaussian", "widefield", "confocal", "lightsheet")
    assert w.fields["deconv_type"].max == 3 and w.fields["background"].max == 5
    w.fields["sparse_iters"].value = 40
    w.config_path.value = str(tmp_path / "run.toml")
    assert w.save() == str(tmp_path / "run.toml")  # what `bigdecon run --config` reads (test_napari_core)
    text = (tmp_path / "run.toml").read_text()
    assert "fwhm = [3.0]" in text and "sparse_iters = 40" in text and 'axes = "tyx"' in text
    w.fields["fwhm"].value = "0=3 1=x"
    with pytest.raises(InputError, match="fwhm"):
        w.preview_options()
    assert w.save() is None and "fwhm" in w.status.value  # refused in the widget, one line


@pytest.mark.slow
def test_preview_live_compare_and_suggest(make_napari_viewer, qtbot, tmp_path):
    viewer, w = _widget(make_napari_viewer)
    w.fields["sparse_iters"].value = 20
    _camera(viewer).center = (0, 64 * 0.065, 64 * 0.065)
    _camera(viewer).zoom = 800 / (64 * 0.065)  # the canvas shows about 64 x 64 pixels around the centre
    with qtbot.waitSignal(w.preview().finished, timeout=60000):
        pass
    layer = viewer.layers["bigdecon preview A"]
    region, _ = w.region(viewer.layers["raw"])
    (y0, y1), (x0, x1) = region["y"], region["x"]
    assert layer.data.shape == (8, y1 - y0, x1 - x0) and 40 <= y1 - y0 <= 128
    np.testing.assert_allclose(layer.translate, [0, y0 * 0.065, x0 * 0.065])
    np.testing.assert_allclose(layer.scale, [1, 0.065, 0.065])
    first = np.array(layer.data)
    w.keep()  # A stays; B comes beside it with the next parameters
    qtbot.waitUntil(lambda: "bigdecon preview B" in viewer.layers, timeout=60000)
    assert (viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid).enabled  # napari 0.9 moved it
    w.fields["fidelity"].value = 60.0  # live: the change runs the preview again
    qtbot.waitUntil(
        lambda: viewer.layers["bigdecon preview B"].metadata["bigdecon_preview"]["options"]["fidelity"] == 60.0,
        timeout=60000,
    )
    assert not np.allclose(viewer.layers["bigdecon preview B"].data, first)
    if FIGURE:
        os.makedirs(os.path.dirname(FIGURE), exist_ok=True)
        viewer.screenshot(FIGURE, canvas_only=False)
    w.budget.value = "2"
    with qtbot.waitSignal(w.suggest().returned, timeout=60000):
        pass
    chosen = {k: v for k, v in w.suggestion.as_kwargs().items() if k in w.fields}
    assert chosen and all(w.preview_options()[k] == v for k, v in chosen.items())
    qtbot.waitUntil(lambda: w._workers.get("preview") is None, timeout=60000)  # the live preview it started


def _finish(qtbot, w, worker):
    """Wait for the run's thread, then for the widget to show what it returned."""
    with qtbot.waitSignal(worker.finished, timeout=120000):
        pass
    qtbot.waitUntil(lambda: not w.status.value.endswith("..."), timeout=10000)  # status: the outcome


def _run(qtbot, w, output):
    w.output.value = str(output)
    _finish(qtbot, w, w.run())


@pytest.mark.slow
def test_run_cancel_and_resume(make_napari_viewer, qtbot, tmp_path):
    """A run writes a valid OME-Zarr and opens it as a lazy layer; a cancelled run, resumed, gives the same bytes."""
    from distributed import LocalCluster
    from ome_zarr_models.v05 import Image

    viewer, w = _widget(make_napari_viewer, shape=(12, 160, 160))
    w.fields["sparse_iters"].value = 30
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        w.run_fields["scheduler"].value = cluster.scheduler_address
        _run(qtbot, w, tmp_path / "whole.ome.zarr")
        assert w.run_result is not None, w.status.value
        Image.from_zarr(zarr.open_group(str(tmp_path / "whole.ome.zarr"), mode="r"))
        layer = viewer.layers["whole.ome.zarr"]
        lazy = layer.data[0] if layer.multiscale else layer.data  # a pyramid once the output is large enough
        assert type(lazy).__module__.startswith("dask")
        assert "dashboard" in w.dashboard.value
        assert os.path.isdir(tmp_path / "whole-input.ome.zarr")  # the in-memory layer, written for the run
        with qtbot.waitSignal(w.preview().finished, timeout=60000):  # now with the statistics the run recorded
            pass
        qtbot.waitUntil(lambda: "statistics the run's" in w.status.value, timeout=10000)

        w.run_result = None
        w.output.value = str(tmp_path / "cut.ome.zarr")
        worker = w.run()
        qtbot.waitUntil(lambda: w._run_state.done >= 1, timeout=60000)
        w.cancel()
        _finish(qtbot, w, worker)
        assert w.run_result is None and "cancelled after" in w.status.value, w.status.value
        assert w._run_state.done < w._run_state.total
        w.run_fields["resume"].value = True
        _run(qtbot, w, tmp_path / "cut.ome.zarr")
        assert w.run_result is not None and w.run_result["resumed"] >= 1, w.status.value
    whole = zarr.open_group(str(tmp_path / "whole.ome.zarr"), mode="r")["s0"][...]
    resumed = zarr.open_group(str(tmp_path / "cut.ome.zarr"), mode="r")["s0"][...]
    assert whole.tobytes() == resumed.tobytes()


def test_sample_data_opens_with_truth(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("bigdecon", "beads")
    assert [layer.name for layer in viewer.layers] == ["beads raw", "beads truth"]
    assert viewer.layers["beads raw"].metadata["bigdecon_axes"] == "zyx"


def test_preview_of_a_lazy_multiscale_layer(make_napari_viewer, qtbot, tmp_path):
    """A multiscale Dask layer (what napari-ome-zarr opens): the preview reads its region of level 0."""
    import dask.array as da

    from bigdecon.io import write_image

    viewer = make_napari_viewer()
    raw, _ = filaments_timelapse((6, 96, 96), fwhm=3.0, seed=2)
    level0 = da.from_zarr(zarr.open_group(write_image(str(tmp_path / "raw.ome.zarr"), raw, "tyx"), mode="r")["s0"])
    viewer.add_image([level0, level0[:, ::2, ::2]], multiscale=True, name="lazy", metadata={"bigdecon_axes": "tyx"})
    w = DeconvolveWidget(viewer)
    w.fields["fwhm"].value, w.fields["sparse_iters"].value = "3", 5
    with qtbot.waitSignal(w.preview().finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: "bigdecon preview A" in viewer.layers, timeout=10000)
    region, _ = w.region(viewer.layers["lazy"])
    assert viewer.layers["bigdecon preview A"].data.shape == tuple(b - a for a, b in region.values())


@pytest.mark.slow
def test_time_point_and_channel_of_a_tczyx_layer(make_napari_viewer, qtbot):
    """A t/c/z/y/x layer: the time point and channel fields appear, follow napari's sliders, and the
    preview is that time point's and channel's z/y/x region, shown at their place (the core's preview)."""
    from bigdecon.data import beads_volume
    from bigdecon.napari._core import PreviewCache, image_source, preview_region

    viewer = make_napari_viewer()
    vols = [beads_volume((10, 48, 48), fwhm=(4.0, 2.0, 2.0), seed=s)[0] for s in range(6)]
    raw = np.stack(vols).reshape(3, 2, 10, 48, 48)
    viewer.add_image(raw, name="raw", metadata={"bigdecon_axes": "tczyx"})
    w = DeconvolveWidget(viewer)
    viewer.window.add_dock_widget(w, name="Deconvolve")
    assert w.fields["axes"].value == "tczyx"
    assert not w.index_fields["t"].native.isHidden() and not w.index_fields["c"].native.isHidden()
    assert (w.index_fields["t"].max, w.index_fields["c"].max) == (2, 1)
    w.fields["fwhm"].value, w.fields["sparse_iters"].value = "2", 5
    viewer.dims.current_step = (2, 1, 5, 24, 24)
    assert (w.index_fields["t"].value, w.index_fields["c"].value) == (2, 1)  # from the sliders
    region, index = w.region(viewer.layers["raw"])
    assert index == {"t": 2, "c": 1} and set(region) == {"z", "y", "x"}
    with qtbot.waitSignal(w.preview().finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: "bigdecon preview A" in viewer.layers, timeout=10000)
    layer = viewer.layers["bigdecon preview A"]
    (z0, z1), (y0, y1), (x0, x1) = region["z"], region["y"], region["x"]
    assert layer.data.shape == (1, 1, z1 - z0, y1 - y0, x1 - x0)
    np.testing.assert_allclose(layer.translate, [2, 1, z0, y0, x0])
    src = image_source(raw, "tczyx")
    opts = w.preview_options()
    expected = preview_region(src, opts, region, index, stats=w.last_preview.stats, cache=PreviewCache())
    np.testing.assert_array_equal(layer.data[0, 0], expected.data)
    other = preview_region(src, opts, region, {"t": 0, "c": 0}, stats=w.last_preview.stats)
    assert not np.allclose(other.data, expected.data)  # another time point and channel, other pixels


@pytest.mark.slow
def test_a_layer_opened_by_napari_ome_zarr(make_napari_viewer, qtbot, tmp_path):
    """An OME-Zarr opened by napari-ome-zarr: the widget reads its axes and voxel size, previews it (the
    core's preview of the file) and runs from the file itself (its ``source.path``, nothing written first)."""
    from bigdecon.io import open_image, write_image
    from bigdecon.napari._core import PreviewCache, preview_region

    raw, _ = filaments_timelapse((8, 96, 96), fwhm=3.0, seed=6)
    path = write_image(str(tmp_path / "raw.ome.zarr"), raw, "tyx", scale={"t": 1.0, "y": 0.1, "x": 0.1})
    viewer = make_napari_viewer()
    (layer,) = viewer.open(path, plugin="napari-ome-zarr")
    assert str(layer.source.path) == path and "bigdecon_axes" not in layer.metadata
    w = DeconvolveWidget(viewer)
    assert w.image.value is layer
    assert w.fields["axes"].value == "tyx" and w.fields["voxel_size"].value == "0.1,0.1"  # napari-ome-zarr's labels
    w.fields["fwhm"].value, w.fields["sparse_iters"].value = "3", 5
    with qtbot.waitSignal(w.preview().finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: "bigdecon preview A" in viewer.layers, timeout=10000)
    region, _ = w.region(layer)
    expected = preview_region(
        open_image(path), w.preview_options(), region, stats=w.last_preview.stats, cache=PreviewCache()
    )
    np.testing.assert_array_equal(viewer.layers["bigdecon preview A"].data, expected.data)
    w.run_fields["workers"].value, w.run_fields["threads_per_worker"].value = 1, 1
    _run(qtbot, w, tmp_path / "out.ome.zarr")
    assert w.run_result is not None, w.status.value
    assert not os.path.exists(tmp_path / "out-input.ome.zarr")  # read from the layer's file
    assert viewer.layers["out.ome.zarr"].data.shape == raw.shape


def test_preview_shows_the_first_look_then_the_region(make_napari_viewer, qtbot):
    """The widget shows the plane on screen first (at that plane), then the whole region in its place;
    a change while it runs stops it at its next stage and previews the newest parameters."""
    viewer = make_napari_viewer()
    raw, _ = filaments_timelapse((40, 64, 64), fwhm=3.0, seed=7)
    viewer.add_image(raw, name="raw", metadata={"bigdecon_axes": "tyx"})
    w = DeconvolveWidget(viewer)
    w.fields["fwhm"].value, w.fields["sparse_iters"].value = "3", 5
    w.planes.value = 32
    viewer.dims.current_step = (25, 32, 32)
    shown: list = []
    worker = w.preview()
    worker.yielded.connect(lambda p: shown.append((p.first_look, p.data.shape, dict(p.start))))
    with qtbot.waitSignal(worker.finished, timeout=60000):
        pass
    region, _ = w.region(viewer.layers["raw"])
    (t0, t1), (y0, y1), (x0, x1) = region["t"], region["y"], region["x"]
    assert t1 - t0 == 32
    assert shown == [
        (True, (1, y1 - y0, x1 - x0), {"t": 25.0, "y": float(y0), "x": float(x0)}),
        (False, (32, y1 - y0, x1 - x0), {"t": float(t0), "y": float(y0), "x": float(x0)}),
    ]
    qtbot.waitUntil(lambda: viewer.layers["bigdecon preview A"].data.shape[0] == 32, timeout=10000)
    # A change while a preview runs: it stops at its next stage, the newest parameters are what is shown.
    worker = w.preview()
    w.fields["sparsity"].value = 3.0
    w.fields["deconv_iters"].value = 9
    qtbot.waitUntil(
        lambda: (
            w._workers.get("preview") is None
            and viewer.layers["bigdecon preview A"].metadata["bigdecon_preview"]["options"]["deconv_iters"] == 9
            and viewer.layers["bigdecon preview A"].data.shape[0] == 32
        ),
        timeout=60000,
    )
    assert viewer.layers["bigdecon preview A"].metadata["bigdecon_preview"]["options"]["sparsity"] == 3.0
    # New data in the layer (the same statistics: mirrored) starts a new cache: the preview is the new data's.
    from bigdecon.napari._core import PreviewCache, image_source, preview_region

    viewer.layers["raw"].data = np.ascontiguousarray(raw[:, :, ::-1])
    with qtbot.waitSignal(w.preview().finished, timeout=60000):
        pass
    qtbot.waitUntil(lambda: w._workers.get("preview") is None, timeout=60000)
    p = w.last_preview
    src = image_source(viewer.layers["raw"].data, "tyx")
    expected = preview_region(src, w.preview_options(), region, stats=p.stats, cache=PreviewCache())
    np.testing.assert_array_equal(p.data, expected.data)
