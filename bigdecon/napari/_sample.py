"""File > Open Sample > bigdecon: the demo's phantoms (``bigdecon demo``) with their ground truth."""

from __future__ import annotations

from typing import Any

from .. import demo

__all__ = ["beads_volume", "filaments_timelapse"]

LayerData = tuple[Any, dict[str, Any], str]


def _layers(sample: dict[str, Any]) -> list[LayerData]:
    axes = sample["axes"]
    scale = [sample["scale"][a] for a in axes]
    fwhm = ",".join(f"{v:g}" for v in sample["fwhm"])
    # The axes ride along in the metadata: the widget reads them (a 3-D layer is z, y, x by default).
    meta = {"bigdecon_axes": axes, "bigdecon_fwhm": fwhm}
    raw = (sample["raw"], {"name": f"{sample['name']} raw", "scale": scale, "metadata": meta}, "image")
    truth = (
        sample["truth"],
        {"name": f"{sample['name']} truth", "scale": scale, "metadata": meta, "visible": False, "colormap": "magenta"},
        "image",
    )
    return [raw, truth]


def filaments_timelapse() -> list[LayerData]:
    """The demo's drifting-filament time-lapse (t, y, x) and its ground truth.

    Examples
    --------
    >>> [(props["name"], data.shape) for data, props, kind in filaments_timelapse()]
    [('filaments raw', (16, 256, 256)), ('filaments truth', (16, 256, 256))]
    """
    return _layers(demo._samples()[0])


def beads_volume() -> list[LayerData]:
    """The demo's volume of beads and rings (z, y, x) and its ground truth.

    Examples
    --------
    >>> [(props["name"], data.shape) for data, props, kind in beads_volume()]
    [('beads raw', (32, 128, 128)), ('beads truth', (32, 128, 128))]
    """
    return _layers(demo._samples()[1])
