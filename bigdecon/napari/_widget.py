"""The Deconvolve dock widget: fields from the parameter model, preview, compare, suggest, run, save.

Every field is made from its :class:`~bigdecon.params.Parameter` (name, default, range, help as
the tooltip) and read back through ``Parameter.parse``, so the widget accepts and refuses what the
command line does. The work runs in napari's worker threads; the widget only reads and shows.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, LineEdit, PushButton, SpinBox

from ..errors import BigdeconError
from ..params import PARAMETERS, Parameter
from ._core import (
    PREVIEW_KEYS,
    RUN_KEYS,
    PreviewCache,
    RunState,
    Stats,
    guess_axes,
    image_source,
    preview_steps,
    run_job,
    save_config,
    suggest_region,
)
from ._preview import PreviewCancelled

__all__ = ["DeconvolveWidget", "field_for", "numeric_bounds"]

BOX_LAYER = "bigdecon box"  # a Shapes layer of this name: its last rectangle is the preview's region
MAX_SIDE = 512  # the most pixels a preview takes in y and x around the view's centre
BIG = 1e9  # the upper end of a spin box whose parameter has none


def numeric_bounds(p: Parameter) -> tuple[float, float, bool] | None:
    """``(low, high, low_excluded)`` of a number parameter's range check, read from the check itself.

    The checks of :mod:`bigdecon.params` are closures over their limits (``_integer_range(lo, hi)``,
    ``_number_range(positive)``) or fixed ranges (``_open_unit``, ``_open_unit_closed``).
    """
    check = p.check
    if check is None:
        return None
    cells = dict(zip(check.__code__.co_freevars, (c.cell_contents for c in check.__closure__ or ())))
    if "lo" in cells:
        hi = cells.get("hi")
        return float(cells["lo"]), float(hi) if hi is not None else BIG, False
    if "positive" in cells:
        return 0.0, BIG, bool(cells["positive"])
    if check.__name__ in ("_open_unit", "_open_unit_closed"):
        return 0.0, 1.0, True
    return None


def _choices(p: Parameter) -> tuple[str, ...] | None:
    cells = dict(zip(p.convert.__code__.co_freevars, (c.cell_contents for c in p.convert.__closure__ or ())))
    choices = cells.get("choices")
    return tuple(choices) if choices is not None else None


def field_for(p: Parameter) -> Any:
    """The magicgui widget of one parameter: a check box, a spin box within its range, a choice, or text."""
    common: dict[str, Any] = {
        "name": p.name,
        "label": p.name.replace("_", " "),
        "tooltip": f"{p.flag}: {p.help_text()}",
    }
    if p.form == "switch":
        return CheckBox(value=bool(p.default), **common)
    bounds = numeric_bounds(p)
    choices = _choices(p)
    if choices is not None:
        return ComboBox(choices=choices, value=p.default, **common)
    if bounds is not None and isinstance(p.default, bool) is False and isinstance(p.default, int):
        lo, hi, _ = bounds
        return SpinBox(value=p.default, min=int(lo), max=int(min(hi, 2**31 - 1)), **common)
    if bounds is not None and isinstance(p.default, float):
        lo, hi, excluded = bounds
        step = 10 ** math.floor(math.log10(abs(p.default))) if p.default else 0.1
        low = lo + (step / 10 if excluded else 0.0)
        box = FloatSpinBox(value=p.default, min=lo, max=hi, step=step, **common)
        # Qt rounds to the decimals the step implies: one more, so an open lower end stays above it.
        box.native.setDecimals(max(2, 1 - math.floor(math.log10(step))))
        box.min, box.value = low, p.default
        return box
    text = "" if p.default is None else str(p.default)
    return LineEdit(value=text, **common)


def _value(p: Parameter, widget: Any) -> Any:
    """A field's value through the parameter's own parser (``None`` for an empty text field)."""
    value = widget.value
    if isinstance(widget, LineEdit):
        value = value.strip()
        if not value:
            return None
    if p.name == "deconv_iters" and value is None:
        return None
    return p.parse(value)


class DeconvolveWidget(Container):
    """Deconvolve the selected image layer: preview a region, compare, suggest, run, save a config."""

    def __init__(self, viewer: Any) -> None:
        super().__init__(labels=True, scrollable=True)
        self.viewer = viewer
        self.image = ComboBox(label="image", choices=self._image_layers, tooltip="the image layer to deconvolve")
        self.fields = {name: field_for(PARAMETERS[name]) for name in PREVIEW_KEYS}
        self.run_fields = {name: field_for(PARAMETERS[name]) for name in RUN_KEYS}
        self.planes = SpinBox(
            label="preview planes",
            value=64,
            min=1,
            max=4096,
            tooltip="planes (t or z) the preview takes around the current one",
        )
        # The position on the axes the preview does not cover (a tczyx layer's time point and channel),
        # shown for a layer that has them; they follow napari's sliders and can be typed.
        self.index_fields = {
            "t": SpinBox(label="time point", value=0, min=0, max=0, visible=False, tooltip="the time point to preview"),
            "c": SpinBox(label="channel", value=0, min=0, max=0, visible=False, tooltip="the channel to preview"),
        }
        self.live = CheckBox(text="preview again when a parameter changes", value=True)
        self.preview_button = PushButton(text="Preview")
        self.keep_button = PushButton(text="Keep as A, compare")
        self.suggest_button = PushButton(text="Suggest")
        self.budget = field_for(PARAMETERS["budget"])
        self.output = LineEdit(label="output", tooltip="the OME-Zarr to write (a path or a URL such as s3://...)")
        self.config_path = LineEdit(
            label="config file", tooltip="where Save config writes (TOML for bigdecon run --config)"
        )
        self.save_button = PushButton(text="Save config")
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.dashboard = Label(value="")
        self.extend([self.image, *self.fields.values(), self.planes, *self.index_fields.values(), self.live])
        self.extend([self.preview_button, self.keep_button])
        self.extend(
            [
                self.budget,
                self.suggest_button,
                self.output,
                *self.run_fields.values(),
                self.run_button,
                self.cancel_button,
            ]
        )
        self.extend([self.config_path, self.save_button, self.dashboard, self.status])
        self.native.setMinimumWidth(460)  # the labels and fields whole, without a horizontal scroll bar
        self.slot = "A"
        self.last_preview: Any = None
        self.run_result: dict[str, Any] | None = None
        self.suggestion: Any = None
        self._workers: dict[str, Any] = {}
        self._again = False
        self._stats: dict[int, dict[str, Any]] = {}  # per layer: the attributes its last run recorded
        # Per layer and data array: its previews' stages and statistics (new data, e.g. a replaced
        # layer.data, starts a new cache).
        self._caches: dict[int, tuple[int, PreviewCache]] = {}
        self._run_state: RunState | None = None
        self._timer: Any = None
        self._cancel = threading.Event()  # set: the running preview stops at its next stage
        self._progress_bar: Any = None
        self._connect()
        self._layer_changed()

    def _connect(self) -> None:
        """Buttons to their actions; fields to the live preview; the viewer's layer list to the image choice."""
        viewer = self.viewer
        self.image.changed.connect(self._layer_changed)
        self.preview_button.changed.connect(lambda: self.preview())
        self.keep_button.changed.connect(lambda: self.keep())
        self.suggest_button.changed.connect(lambda: self.suggest())
        self.save_button.changed.connect(lambda: self.save())
        self.run_button.changed.connect(lambda: self.run())
        self.cancel_button.changed.connect(lambda: self.cancel())
        for w in self.fields.values():
            w.changed.connect(self._field_changed)
        for w in self.index_fields.values():
            w.changed.connect(self._field_changed)
        viewer.dims.events.current_step.connect(self._dims_changed)
        viewer.layers.events.inserted.connect(self._layers_changed)
        viewer.layers.events.removed.connect(self._layers_changed)

    # ------------------------------------------------------------------ the layer and the options

    def _image_layers(self, _widget: Any = None) -> list[tuple[str, Any]]:
        from napari.layers import Image

        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image) and not _ours(layer)]

    def _layers_changed(self, _event: Any = None) -> None:
        try:
            self.image.reset_choices()
        except RuntimeError:  # the dock widget was closed: Qt deleted its fields
            self.viewer.layers.events.inserted.disconnect(self._layers_changed)
            self.viewer.layers.events.removed.disconnect(self._layers_changed)

    def _layer_changed(self, _value: Any = None) -> None:
        """Axes, voxel size (from the layer's scale) and a PSF size the layer carries, into the fields."""
        layer = self.image.value
        if layer is None:
            return
        axes = _layer_axes(layer)
        self.fields["axes"].value = axes
        sizes = [f"{float(s):g}" for a, s in zip(axes, layer.scale) if a in "zyx"]
        self.fields["voxel_size"].value = ",".join(sizes)
        if layer.metadata.get("bigdecon_fwhm") and not self.fields["fwhm"].value:
            self.fields["fwhm"].value = layer.metadata["bigdecon_fwhm"]
        shape = _shape(layer)
        for a, w in self.index_fields.items():
            w.visible = shown = a in _index_axes(axes) and len(axes) == len(shape)
            w.max = shape[axes.index(a)] - 1 if shown else 0
        self._dims_changed()

    def _dims_changed(self, _event: Any = None) -> None:
        """napari's sliders into the time point and channel fields (one preview after both are set)."""
        try:
            layer = self.image.value
        except RuntimeError:  # the dock widget was closed: Qt deleted its fields
            self.viewer.dims.events.current_step.disconnect(self._dims_changed)
            return
        if layer is None or layer not in self.viewer.layers:  # e.g. the viewer closing, its layers removed
            return
        axes = self.fields["axes"].value or guess_axes(layer.ndim)
        if len(axes) != layer.ndim:
            return
        point = np.asarray(layer.world_to_data(self.viewer.dims.point), dtype=float)
        live, self.live.value = self.live.value, False
        changed = False
        for a in _index_axes(axes):
            value = int(np.clip(round(point[axes.index(a)]), 0, self.index_fields[a].max))
            changed |= value != self.index_fields[a].value
            self.index_fields[a].value = value
        self.live.value = live
        if changed:
            self._field_changed()

    def preview_options(self) -> dict[str, Any]:
        """The preview's options, parsed and checked as the command line does (InputError names a field)."""
        return {name: _value(PARAMETERS[name], w) for name, w in self.fields.items()}

    def run_options(self) -> dict[str, Any]:
        return {name: _value(PARAMETERS[name], w) for name, w in self.run_fields.items()}

    def _source(self, layer: Any) -> Any:
        data = layer.data[0] if layer.multiscale else layer.data
        return image_source(data, self.fields["axes"].value or guess_axes(layer.ndim), layer.scale, layer.translate)

    def _inputs(
        self, layer: Any, what: str
    ) -> tuple[dict[str, Any], Any, dict[str, tuple[int, int]], dict[str, int]] | None:
        """The fields' options, the layer's data and the region to work on; ``None``, said in the status line, if refused."""
        try:
            opts, src = self.preview_options(), self._source(layer)
            region, index = self.region(layer)
        except BigdeconError as e:
            self.status.value = f"{what}: {e}"
            return None
        return opts, src, region, index

    def region(self, layer: Any) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        """The region to preview, in the layer's pixels: a drawn box, else what the view shows."""
        axes = self.fields["axes"].value or guess_axes(layer.ndim)
        point = np.asarray(layer.world_to_data(self.viewer.dims.point), dtype=float)
        spans = _box_spans(self.viewer, layer) or _view_spans(self.viewer, layer)
        k = "z" if "z" in axes else "t" if "t" in axes else None
        region: dict[str, tuple[int, int]] = {}
        index: dict[str, int] = {}
        for i, a in enumerate(axes):
            n = layer.data[0].shape[i] if layer.multiscale else layer.data.shape[i]
            if a in "yx":
                lo, hi = spans[a]
                mid, half = (lo + hi) / 2, min(hi - lo, MAX_SIDE) / 2
                region[a] = (max(0, math.floor(mid - half)), min(n, math.ceil(mid + half)))
            elif a == k:
                c = int(round(point[i]))
                half = self.planes.value // 2
                a0 = max(0, min(c - half, n - self.planes.value))
                region[a] = (a0, min(n, a0 + self.planes.value))
            elif a in self.index_fields:
                index[a] = int(np.clip(self.index_fields[a].value, 0, n - 1))
            else:
                index[a] = int(np.clip(round(point[i]), 0, n - 1))
        return region, index

    # ------------------------------------------------------------------ preview and compare

    def _field_changed(self, _value: Any = None) -> None:
        if self.live.value and self.last_preview is not None:
            self.preview()

    def preview(self) -> Any:
        """Deconvolve the region in a worker thread: the current plane first, then the whole region, each
        replacing this slot's preview layer. A newer request stops the running one at its next stage."""
        from napari.qt.threading import create_worker

        running = self._workers.get("preview")
        if running is not None:
            self._again = True  # one preview at a time: the newest parameters run next
            self._cancel.set()
            return None
        layer = self.image.value
        inputs = self._inputs(layer, "preview")
        if inputs is None:
            return None
        opts, src, region, index = inputs
        device = self.run_fields["device"].value
        recorded = self._stats.get(id(layer))
        stats = Stats.of_run(recorded, index.get("c", 0)) if recorded is not None else None
        data_id, cache = self._caches.get(id(layer), (None, None))
        if data_id != id(layer.data) or cache is None:
            cache = PreviewCache()
            self._caches[id(layer)] = (id(layer.data), cache)
        self._cancel = threading.Event()
        plane = self._plane(layer)
        args = (src, opts, region, index, stats, device, cache, plane, self._cancel)
        worker = create_worker(_guarded_steps, preview_steps, *args)
        slot = self.slot
        where = (layer, slot, index, opts)
        worker.yielded.connect(lambda p: self._say("preview", p) if _failed(p) else self._show(where, p))
        worker.finished.connect(self._preview_done)
        self._workers["preview"] = worker
        self.status.value = f"preview {slot}: {_spans_text(region)}..."
        worker.start()
        return worker

    def _plane(self, layer: Any) -> int | None:
        """The plane on screen along the preview's third axis (z, else t), in the layer's pixels."""
        axes = self.fields["axes"].value or guess_axes(layer.ndim)
        k = "z" if "z" in axes else "t" if "t" in axes else None
        if k is None or len(axes) != layer.ndim:
            return None
        return int(round(np.asarray(layer.world_to_data(self.viewer.dims.point), dtype=float)[axes.index(k)]))

    def _preview_done(self) -> None:
        self._workers["preview"] = None
        if self._again:
            self._again = False
            self.preview()

    def _show(self, where: tuple[Any, str, dict[str, int], dict[str, Any]], p: Any) -> None:
        """The preview as a layer of the image's dimensions: the region at its place, one time point or
        channel of the axes it does not cover at theirs; its metadata records the options it was made with."""
        layer, slot, index, opts = where
        axes = self.fields["axes"].value or guess_axes(layer.ndim)
        data, scale, translate = p.data, [], []
        for i, a in enumerate(axes):
            if a in p.axes:
                # An up-sampled pixel's centre lies a quarter of an input pixel before the input's.
                start = p.start[a] + (-0.25 if p.step[a] < 1 else 0.0)
                scale.append(layer.scale[i] * p.step[a])
            else:
                start, data = float(index.get(a, 0)), np.expand_dims(data, i)
                scale.append(layer.scale[i])
            translate.append(layer.translate[i] + start * layer.scale[i])
        name = f"bigdecon preview {slot}"
        if name in self.viewer.layers:
            out = self.viewer.layers[name]
            out.data, out.scale, out.translate = data, scale, translate
        else:
            out = self.viewer.add_image(data, name=name, scale=scale, translate=translate, colormap="gray")
        out.metadata["bigdecon_preview"] = {
            "options": opts,
            "seconds": p.seconds,
            "first_look": p.first_look,
            "stages": sorted(p.ran),
        }
        out.contrast_limits = (float(p.data.min()), float(p.data.max()) or 1.0)
        self.last_preview = p
        what = "first look (1 plane; the whole region follows)" if p.first_look else f"{p.data.shape}"
        ran = "+".join(s for s in ("background", "sparse", "deconv") if s in p.ran) or "cached"
        stats = {"run": "the run's", "data set": "the layer's raw max/mean"}.get(p.stats.source, "the block's")
        self.status.value = f"preview {slot}: {what} in {p.seconds:.1f} s ({ran}), halo {p.halo}, statistics {stats}"

    def keep(self) -> None:
        """Keep the current preview as A; the next previews go to B, shown beside it (napari's grid)."""
        if "bigdecon preview A" not in self.viewer.layers:
            self.status.value = "compare: make a preview first"
            return
        self.slot = "B"
        canvas = getattr(self.viewer, "canvas", None)  # napari 0.9 moved the grid to viewer.canvas
        grid = canvas.grid if canvas is not None and hasattr(canvas, "grid") else self.viewer.grid
        grid.shape = (1, -1)  # one row: raw, A and B side by side at one zoom
        if hasattr(grid, "spacing"):  # napari >= 0.6
            grid.spacing = 8  # screen pixels between the cells
        grid.enabled = True
        self.preview()

    # ------------------------------------------------------------------ suggest, save, run

    def suggest(self) -> Any:
        """``bigdecon suggest`` on the region: the chosen parameters into the fields."""
        from napari.qt.threading import create_worker

        layer = self.image.value
        inputs = self._inputs(layer, "suggest")
        if inputs is None:
            return None
        opts, src, region, index = inputs
        try:
            budget = _value(PARAMETERS["budget"], self.budget)
        except BigdeconError as e:
            self.status.value = f"suggest: {e}"
            return None
        worker = create_worker(_guarded, suggest_region, src, opts, region, index, budget)
        worker.returned.connect(lambda s: self._say("suggest", s) if _failed(s) else self._suggested(s))
        self.status.value = "suggest: measuring candidates on the region..."
        self._workers["suggest"] = worker
        worker.start()
        return worker

    def _suggested(self, s: Any) -> None:
        live, self.live.value = self.live.value, False  # one preview after all fields are set, not one per field
        for name, value in s.as_kwargs().items():
            if name in self.fields:
                field = self.fields[name]
                field.value = str(value) if isinstance(field, LineEdit) else value
        self.live.value = live
        self.suggestion = s
        self._field_changed()
        self.status.value = f"suggest chose {s.winner}: {s.why}"

    def save(self) -> str | None:
        path = self.config_path.value.strip()
        if not path:
            self.status.value = "save: give a config file name"
            return None
        try:
            written = save_config(path, {**self.preview_options(), **_run_saved(self.run_options())})
        except (BigdeconError, OSError) as e:
            self.status.value = f"save: {e}"
            return None
        self.status.value = f"saved {written}: bigdecon run --config {written} INPUT OUTPUT"
        return written

    def run(self) -> Any:
        """The whole out-of-core run on a local cluster or a scheduler; the result opens as a lazy layer."""
        from napari.qt.threading import create_worker
        from qtpy.QtCore import QTimer

        layer = self.image.value
        output = self.output.value.strip()
        try:
            if not output:
                raise BigdeconError("run: give an output path")
            opts, run_opts = self.preview_options(), self.run_options()
        except BigdeconError as e:
            self.status.value = str(e)
            return None
        self._run_state = state = RunState()
        source = _layer_input(layer, self._source(layer), output)
        worker = create_worker(_guarded, run_job, source, output, opts, run_opts, state)
        done = (layer, source, run_opts)
        worker.returned.connect(lambda info: self._say("run", info) if _failed(info) else self._run_done(done, info))
        worker.finished.connect(self._run_finished)
        self._workers["run"] = worker
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = f"run: {output}..."
        self._timer = QTimer()
        self._timer.timeout.connect(self._tick)
        self._timer.start(200)
        worker.start()
        return worker

    def _tick(self) -> None:
        from napari.utils import progress

        state = self._run_state
        if state is None:
            return
        if state.dashboard and not self.dashboard.value:
            self.dashboard.value = f'<a href="{state.dashboard}">Dask dashboard</a>'
            self.dashboard.native.setOpenExternalLinks(True)
        if state.total:
            if self._progress_bar is None:
                self._progress_bar = progress(total=state.total, desc="bigdecon run")
            self._progress_bar.n = state.done
            self._progress_bar.refresh()

    def cancel(self) -> None:
        """Stop the run at the next finished block; the output stays resumable (tick resume, Run)."""
        if self._run_state is not None:
            self._run_state.cancel.set()
            self.status.value = "run: cancelling..."

    def _run_finished(self) -> None:
        self._tick()
        if self._timer is not None:
            self._timer.stop()
        if self._progress_bar is not None:
            self._progress_bar.close()
            self._progress_bar = None
        self._workers["run"] = None
        self.run_button.enabled, self.cancel_button.enabled = True, False

    def _run_done(self, done: tuple[Any, str, dict[str, Any]], info: dict[str, Any]) -> None:
        """The output as a lazy layer over the image: at the image's place, moved by the first time point
        selected (the output's translation less the input's); its statistics kept for later previews."""
        import dask.array as da
        import zarr

        from ..io import open_image

        layer, source, run_opts = done
        self.run_result = info
        group = zarr.open_group(info["output"], mode="r")
        levels = sorted((k for k in group.array_keys() if k.startswith("s")), key=lambda k: int(k[1:]))
        data = [da.from_zarr(group[k]) for k in levels]
        attrs: dict[str, Any] = dict(group.attrs)
        if run_opts.get("channels") is None and run_opts.get("timepoints") is None:  # the whole layer's statistics
            self._stats[id(layer)] = attrs.get("bigdecon") or attrs.get("ome", {}).get("bigdecon")
        axes = self.fields["axes"].value or guess_axes(layer.ndim)
        shape = _shape(layer)
        step = [2.0 if (a in "yx" and data[0].shape[i] != shape[i]) else 1.0 for i, a in enumerate(axes)]
        moved = open_image(info["output"]).translation, open_image(source).translation
        self.viewer.add_image(
            data if len(data) > 1 else data[0],
            multiscale=len(data) > 1,
            name=os.path.basename(info["output"].rstrip("/")),
            scale=[s / f for s, f in zip(layer.scale, step)],
            translate=[t + moved[0].get(a, 0.0) - moved[1].get(a, 0.0) for t, a in zip(layer.translate, axes)],
        )
        self.status.value = f"run: {info['output']} in {info['seconds']:.1f} s ({info['chunks']} tasks)"

    def _say(self, what: str, e: BaseException) -> None:
        self.status.value = f"{what}: {e}"


def _guarded_steps(fn: Any, *args: Any) -> Any:
    """``fn(*args)``'s results one by one in a worker thread, a refusal as the last (see :func:`_guarded`);
    a preview stopped for a newer one ends quietly."""
    try:
        yield from fn(*args)
    except PreviewCancelled:
        return
    except BigdeconError as e:
        yield _Refused(e)


def _guarded(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` in a worker thread; bigdecon's one-line refusals (and a cancel) come back as the result,
    to be shown in the widget, while anything else is a bug napari reports with its traceback."""
    try:
        return fn(*args)
    except BigdeconError as e:
        return _Refused(e)  # not the exception itself: superqt raises an exception a worker returns


class _Refused:
    def __init__(self, error: BigdeconError) -> None:
        self.error = error

    def __str__(self) -> str:
        return str(self.error)


def _failed(result: Any) -> bool:
    return isinstance(result, _Refused)


def _layer_axes(layer: Any) -> str:
    """The layer's axis names: bigdecon's metadata, else napari's axis labels when they are t, c, z, y, x
    (napari-ome-zarr sets them from the file), else a guess from the number of dimensions."""
    if layer.metadata.get("bigdecon_axes"):
        return str(layer.metadata["bigdecon_axes"])
    labels = [str(a).lower() for a in getattr(layer, "axis_labels", ())]
    if len(labels) == layer.ndim and set(labels) <= set("tczyx") and len(set(labels)) == len(labels):
        return "".join(labels)
    return guess_axes(layer.ndim)


def _shape(layer: Any) -> tuple[int, ...]:
    return tuple(layer.data[0].shape if layer.multiscale else layer.data.shape)


def _index_axes(axes: str) -> list[str]:
    """The axes a preview takes one position of: t and c, unless t is the third solver axis (no z)."""
    k = "z" if "z" in axes else "t" if "t" in axes else None
    return [a for a in ("t", "c") if a in axes and a != k]


def _ours(layer: Any) -> bool:
    return layer.name.startswith("bigdecon preview")


def _spans_text(region: dict[str, tuple[int, int]]) -> str:
    return ", ".join(f"{a} {lo}:{hi}" for a, (lo, hi) in region.items())


def _run_saved(run_opts: dict[str, Any]) -> dict[str, Any]:
    """The run options a config file keeps (not resume/overwrite: those are per run)."""
    return {k: v for k, v in run_opts.items() if k not in ("resume", "overwrite")}


def _layer_input(layer: Any, src: Any, output: str) -> str:
    """What the run reads: the layer's file when it came from one bigdecon opens, else the layer written
    beside the output as ``<output>-input.ome.zarr`` (written once; a resume reads it again)."""
    from ..io import open_image, write_image

    path = getattr(layer.source, "path", None)
    if path:
        try:
            open_image(path)
            return str(path)
        except BigdeconError:
            pass
    target = output.rstrip("/").removesuffix(".ome.zarr").removesuffix(".zarr") + "-input.ome.zarr"
    try:
        open_image(target)  # written by an earlier run of this output (a resume reads it again)
    except BigdeconError:
        write_image(target, np.asarray(src.data), "".join(src.axes), scale=src.scale, units=src.units)
    return target


def _box_spans(viewer: Any, layer: Any) -> dict[str, tuple[float, float]] | None:
    """The y and x extent of the last rectangle of the ``bigdecon box`` Shapes layer, in ``layer``'s pixels."""
    if BOX_LAYER not in viewer.layers or not len(viewer.layers[BOX_LAYER].data):
        return None
    box = viewer.layers[BOX_LAYER]
    corners = []
    for v in box.data[-1]:
        world = list(viewer.dims.point)
        w = box.data_to_world(v)
        world[-len(w) :] = list(w)
        corners.append(layer.world_to_data(world))
    c = np.asarray(corners, dtype=float)
    return {"y": (c[:, -2].min(), c[:, -2].max() + 1), "x": (c[:, -1].min(), c[:, -1].max() + 1)}


def _view_spans(viewer: Any, layer: Any) -> dict[str, tuple[float, float]]:
    """The y and x extent the canvas shows, in ``layer``'s pixels."""
    height, width = viewer.canvas.size
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9 moved it
    zoom = camera.zoom
    cy, cx = camera.center[-2:]
    lo, hi = list(viewer.dims.point), list(viewer.dims.point)
    lo[-2:] = [cy - height / zoom / 2, cx - width / zoom / 2]
    hi[-2:] = [cy + height / zoom / 2, cx + width / zoom / 2]
    a, b = np.asarray(layer.world_to_data(lo), dtype=float), np.asarray(layer.world_to_data(hi), dtype=float)
    return {"y": (min(a[-2], b[-2]), max(a[-2], b[-2])), "x": (min(a[-1], b[-1]), max(a[-1], b[-1]))}
