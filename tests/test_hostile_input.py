"""Declared sizes and metadata that no real image has (issue 23, item 12), through the real CLI.

Each store or TIFF is a few KB that *declares* an absurd shape, scale or nesting.
The CLI runs under a 2 GiB address-space limit, so code that builds something per
declared chunk or plane fails fast here instead of eating the machine.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
import zarr
from helpers import cli

MEMORY_LIMIT = 2 * 2**30


def _cli(*args: Any) -> subprocess.CompletedProcess:
    """``bigdecon ARGS`` in a subprocess limited to 2 GiB of address space."""
    return cli(*args, timeout=120, memory_limit=MEMORY_LIMIT)


def _store(path: Path, shape: tuple, chunks: tuple, axes: str = "zyx", scale: list | None = None) -> Path:
    """An NGFF 0.5 image whose level declares ``shape`` (no chunk is written: a few KB on disk)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    group.create_array("s0", shape=shape, chunks=chunks, dtype="uint16", fill_value=0)
    transforms = [{"type": "scale", "scale": scale if scale is not None else [1.0] * len(axes)}]
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {"axes": [{"name": a} for a in axes], "datasets": [{"path": "s0", "coordinateTransformations": transforms}]}
        ],
    }
    return path


def _edit_json(path: Path, edit: Any) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def _huge_tiff(path: Path) -> Path:
    """A 4-page TIFF of 33 KB whose pages declare 2e9 x 2e9 pixels."""
    tifffile.imwrite(path, np.zeros((4, 64, 64), np.uint16), rowsperstrip=64, photometric="minisblack", metadata=None)
    with tifffile.TiffFile(path, mode="r+b") as tif:
        for page in tif.pages:
            for tag in ("ImageWidth", "ImageLength", "RowsPerStrip"):
                page.tags[tag].overwrite(2_000_000_000)
    assert path.stat().st_size < 40_000
    return path


def _case(name: str, tmp: Path) -> Path:
    if name == "1e9^3 voxels":
        return _store(tmp / "a.ome.zarr", (10**9,) * 3, (64, 256, 256))
    if name == "1e9 planes":
        return _store(tmp / "a.ome.zarr", (10**9, 64, 64), (1, 64, 64))
    if name == "1e6 channels":
        return _store(tmp / "a.ome.zarr", (10**6, 8, 64, 64), (1, 8, 64, 64), axes="czyx")
    if name == "TIFF 4x2e9x2e9":
        return _huge_tiff(tmp / "a.tif")
    if name.endswith("scale"):
        value = {"NaN scale": float("nan"), "zero scale": 0.0, "negative scale": -0.5, "text scale": "big"}
        return _store(tmp / "a.ome.zarr", (4, 64, 64), (4, 64, 64), scale=[value[name], 1.0, 1.0])
    if name == "ImageJ spacing text":
        tifffile.imwrite(
            tmp / "a.tif", np.zeros((3, 16, 16), np.uint16), imagej=True, metadata={"spacing": 1.5, "axes": "ZYX"}
        )
        data = (tmp / "a.tif").read_bytes()
        assert data.count(b"spacing=1.5") == 1
        (tmp / "a.tif").write_bytes(data.replace(b"spacing=1.5", b"spacing=abc"))
        return tmp / "a.tif"
    path = _store(tmp / "a.ome.zarr", (4, 64, 64), (4, 64, 64))
    if name == "datasets not objects":
        _edit_json(path / "zarr.json", lambda m: m["attributes"]["ome"]["multiscales"][0].update(datasets=["path"]))
    elif name == "negative chunks":
        _edit_json(
            path / "s0" / "zarr.json", lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[-4, 64, 64])
        )
    elif name == "deeply nested JSON":
        text = (path / "zarr.json").read_text().rstrip().rstrip("}")
        (path / "zarr.json").write_text(text + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif name == "nested 200 deep":
        deep: Any = 1
        for _ in range(200):
            deep = {"a": deep}
        _edit_json(path / "zarr.json", lambda m: m["attributes"].update(extra=deep))
    return path


CASES = {
    # case: what the one-line error names
    "1e9^3 voxels": "declares shape 1000000000x1000000000x1000000000",
    "1e9 planes": "declares shape 1000000000x64x64",
    "1e6 channels": "1e+06 channels, more than bigdecon reads",
    "TIFF 4x2e9x2e9": "declares shape 4x2000000000x2000000000",
    "NaN scale": "pixel size of axis z is nan",
    "zero scale": "pixel size of axis z is 0",
    "negative scale": "pixel size of axis z is -0.5",
    "text scale": "scale ['big', 1.0, 1.0] is not a list of numbers",
    "ImageJ spacing text": "ImageJ metadata has a pixel size that is not a number",
    "datasets not objects": "'multiscales' lists no datasets",
    "negative chunks": "level 's0'",
    "deeply nested JSON": "nested too deeply",
    "nested 200 deep": "metadata nested deeper than 64 levels",
}


@pytest.mark.parametrize("name", list(CASES))
def test_info_refuses_in_one_line(tmp_path: Path, name: str) -> None:
    path = _case(name, tmp_path)
    proc = _cli("info", path)
    err = proc.stderr.strip()
    assert proc.returncode == 2, (name, proc.returncode, err[-2000:])
    assert err.startswith("bigdecon: error:") and "\n" not in err, err[-2000:]
    assert CASES[name] in err, err
    assert "Error:" not in err and "Traceback" not in err  # a message, not an exception's name


def test_run_refuses_before_writing(tmp_path: Path) -> None:
    path = _case("1e9 planes", tmp_path)
    out = tmp_path / "out.ome.zarr"
    proc = _cli("run", path, out, "--fwhm", "3")
    assert proc.returncode == 2 and "declares shape 1000000000x64x64" in proc.stderr, proc.stderr[-2000:]
    assert not out.exists()


@pytest.mark.slow
def test_large_declarations_within_the_limits_stay_lazy(tmp_path: Path) -> None:
    """2**26 planes (65,536 channels x 1,024 time points) and 2**22 planes along one axis: planned
    within the 2 GiB limit, as the declared-size limits promise for everything they admit."""
    wide = _store(tmp_path / "wide.ome.zarr", (2**10, 2**16, 1, 8, 8), (1, 1, 1, 8, 8), axes="tczyx")
    proc = _cli("info", wide)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1024x65536x1x8x8" in proc.stdout and "tasks:" in proc.stdout
    long = _store(tmp_path / "long.ome.zarr", (2**22, 64, 64), (1, 64, 64))
    proc = _cli("info", long, "--fwhm", "3", "3", "3")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "4194304x64x64" in proc.stdout
