"""The README's napari screenshot: the Deconvolve widget beside previews A and B of the demo's filaments.

Usage (a display is needed; headless: ``xvfb-run -a``)::

    python benchmarks/napari_figure.py docs/figures/napari-widget.png
"""

from __future__ import annotations

import sys
import time

import napari
from qtpy.QtWidgets import QApplication

from bigdecon.napari._widget import DeconvolveWidget


def wait(widget: DeconvolveWidget, timeout: float = 900) -> None:
    """Let Qt run until the widget's preview is shown."""
    end = time.time() + timeout
    while widget._workers.get("preview") is not None or widget._again:
        QApplication.processEvents()
        time.sleep(0.05)
        if time.time() > end:
            raise TimeoutError("preview took too long")


def _camera(viewer):
    return viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9 moved it


def main(path: str) -> None:
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1800, 1000)
    viewer.open_sample("bigdecon", "filaments")
    viewer.layers.remove("filaments truth")  # a grid cell of its own otherwise
    widget = DeconvolveWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Deconvolve (bigdecon)")
    viewer.dims.set_point(0, 8)
    _camera(viewer).center = (0, 128 * 0.065, 128 * 0.065)
    _camera(viewer).zoom = 6.0 / 0.065  # about 130 x 100 pixels of the 256 x 256 frame in view
    widget.preview()
    wait(widget)
    widget.live.value = False
    widget.fields["sparsity"].value = 30.0
    widget.keep()
    wait(widget)
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
    viewer.screenshot(path, canvas_only=False)
    print(f"wrote {path}; {widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/figures/napari-widget.png")
