"""The skew angle of a stage-scanned stack, where its files carry it.

What is read, from where (docs/deskew.md, "Where the angle comes from"):

* **bigdecon's OME-Zarr attributes**: ``attrs["bigdecon"]["skew"] = {"angle", "axis"}``
  marks a stack stored skewed (:func:`bigdecon.io.write_image` with ``skew_angle``
  writes it); ``attrs["bigdecon"]["deskew"]`` marks a bigdecon output that is
  already deskewed (its angle is reported, nothing is deskewed again).
* **A Janelia lattice light-sheet ``*Settings.txt``** beside a TIFF (the file the
  Janelia acquisition software writes with every data set, which LLSpy reads):
  the angle is ``Angle between stage and bessel beam (deg)`` of its
  ``[Sample stage]`` section (in the SPIM project ini at its end); the stack is
  skewed only when ``Z motion`` is ``Sample piezo`` (a stage scan; an objective
  scan is not skewed); the stage step is the interval of its ``S PZT`` waveform
  line, and the pixel size the camera's 6.5 um pitch (Hamamatsu C11440 and
  C13440) over ``Magnification`` of ``[Detection optics]``.

No other format bigdecon reads carries the angle: OME-XML (OME-TIFF) has no
field for it, ImageJ TIFFs neither; Zeiss LLS 7 CZI files are not read by
bigdecon (napari-lattice takes their angle, 30 degrees, as a parameter too).
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["SkewMeta", "parse_lls_settings", "read_skew", "settings_beside"]

# Sensor pitch (um) of the cameras of Janelia's lattice light-sheet (Hamamatsu ORCA-Flash4.0 models).
_CAMERA_PITCH = {"C11440": 6.5, "C13440": 6.5}
_HEADING = re.compile(r"^\s*\*{5}[\s*]*(.*?)[\s*]*$", re.MULTILINE)


@dataclass(frozen=True)
class SkewMeta:
    """What an input's metadata says about its skew.

    ``skewed`` False with an ``angle``: already deskewed (by bigdecon), or an
    objective scan; ``stage_step`` and ``pixel`` in micrometres where known.
    """

    angle: float | None
    axis: str
    source: str
    skewed: bool
    stage_step: float | None = None
    pixel: float | None = None


def parse_lls_settings(text: str) -> dict[str, Any]:
    """The skew of a Janelia lattice light-sheet ``Settings.txt``.

    Returns ``angle`` (degrees, or None), ``sample_scan`` (bool), ``stage_step``
    and ``pixel`` (um, or None).

    Examples
    --------
    >>> text = '''***** ***** *****   General   ***** ***** *****
    ... Date :	6/12/2019 3:05:26 PM
    ... ***** ***** *****   Waveform   ***** ***** *****
    ... Z motion :	Sample piezo
    ... S PZT Offset, Interval (um), # of Pixels for Excitation (0) :	50	0.4	101
    ... ***** ***** *****   Camera   ***** ***** *****
    ... Model=C11440-22C
    ... ***** ***** *****   .ini File   ***** ***** *****
    ... [Sample stage]
    ... Angle between stage and bessel beam (deg) = 31.5
    ... [Detection optics]
    ... Magnification = 62.5
    ... '''
    >>> parse_lls_settings(text)
    {'angle': 31.5, 'sample_scan': True, 'stage_step': 0.4, 'pixel': 0.104}
    """
    parts = _HEADING.split(text)
    sections = {name.strip(): body for name, body in zip(parts[1::2], parts[2::2])}
    waveform, camera = sections.get("Waveform", ""), sections.get("Camera", "")
    ini = configparser.ConfigParser(strict=False, interpolation=None)
    ini.optionxform = str  # type: ignore[assignment,method-assign]  # keys as written
    try:
        ini.read_string(sections.get(".ini File", ""))
    except configparser.Error:
        ini = configparser.ConfigParser()
    angle = _ini_float(ini, "Sample stage", "Angle between stage and bessel beam (deg)")
    motion = re.search(r"^\s*Z motion\s*:\s*(.+?)\s*$", waveform, re.MULTILINE)
    step = re.search(r"^\s*S PZT Offset,[^:]*\(0\)\s*:\s*(\S+)\s+(\S+)", waveform, re.MULTILINE)
    model = re.search(r"^\s*Model\s*[=:]\s*(\S+)", camera, re.MULTILINE)
    magnification = _ini_float(ini, "Detection optics", "Magnification")
    interval = _number(step.group(2)) if step else None
    pitch = _CAMERA_PITCH.get(model.group(1).split("-")[0]) if model else None
    return {
        "angle": angle,
        "sample_scan": bool(motion and motion.group(1).lower() == "sample piezo"),
        "stage_step": abs(interval) if interval else None,
        "pixel": round(pitch / magnification, 4) if pitch and magnification else None,
    }


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _ini_float(ini: configparser.ConfigParser, section: str, key: str) -> float | None:
    if not ini.has_option(section, key):
        return None
    return _number(ini.get(section, key).strip().strip('"'))


def settings_beside(path: str) -> str | None:
    """The Janelia ``*Settings.txt`` of a local TIFF: in its folder, the one whose name (before
    ``Settings.txt``) begins the TIFF's name, else the only one there; None if none fits."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        found = sorted(f for f in os.listdir(folder) if f.endswith("Settings.txt"))
    except OSError:
        return None
    for f in found:
        stem = f[: -len("Settings.txt")].rstrip("_")
        if stem and name.startswith(stem):
            return os.path.join(folder, f)
    return os.path.join(folder, found[0]) if len(found) == 1 else None


def read_skew(src: Any) -> SkewMeta | None:
    """What an opened input's metadata says about its skew (see the module's text), or None.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from bigdecon.io import open_image, write_image
    >>> path = write_image(os.path.join(tempfile.mkdtemp(), "raw.ome.zarr"), np.ones((4, 8, 8), np.uint16), "zyx",
    ...                    skew_angle=31.5)
    >>> read_skew(open_image(path))
    SkewMeta(angle=31.5, axis='x', source='OME-Zarr attributes (bigdecon.skew)', skewed=True, stage_step=None, pixel=None)
    """
    made = (getattr(src, "attrs", None) or {}).get("bigdecon")
    if isinstance(made, dict):
        skew, done = made.get("skew"), made.get("deskew")
        if isinstance(done, dict) and done.get("angle") is not None:
            return SkewMeta(float(done["angle"]), str(done.get("axis", "x")), "deskewed by bigdecon", False)
        if isinstance(skew, dict) and skew.get("angle") is not None:
            where = "OME-Zarr attributes (bigdecon.skew)"
            return SkewMeta(float(skew["angle"]), str(skew.get("axis", "x")), where, True)
    level = getattr(src, "level", ())
    if not level or level[0] != "tiff":
        return None
    settings = settings_beside(str(level[1]))
    if settings is None:
        return None
    with open(settings, encoding="utf-8", errors="replace") as f:
        found = parse_lls_settings(f.read())
    if found["angle"] is None:
        return None
    where = f"{os.path.basename(settings)} ([Sample stage])"
    return SkewMeta(found["angle"], "x", where, found["sample_scan"], found["stage_step"], found["pixel"])
