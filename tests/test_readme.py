"""README.md's code runs as written: its Python block, and its command lines on small samples made here.

The samples take the README's file names in a temporary folder (``raw.ome.zarr``,
``cells.ome.zarr``...); ``stack`` and ``dask_stack`` are put in the Python block's
namespace. Command lines that start a cluster run through the real CLI for the
cheap ones (``info``, ``suggest``, ``submit --dry-run``) and for one of each kind
of ``run``; the rest are parsed and checked as ``run`` would before it starts
(an S3 bucket or a TIFF with physical pixel sizes are not made here).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from helpers import cli

from bigdecon import data
from bigdecon.io import open_image, write_image

README = Path(__file__).resolve().parents[1] / "README.md"
MICROMETRE = {"y": "micrometer", "x": "micrometer"}


def blocks(text: str) -> list[tuple[str, str]]:
    """``(language, code)`` of every fenced block of a Markdown text."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)


def test_readme_blocks_found():
    found = blocks(README.read_text())
    languages = [lang for lang, _ in found]
    assert languages[0] == "bash" and "python" in languages and "" in languages, languages
    assert any(code.startswith("bigdecon run ") for lang, code in found if lang == ""), found


def _samples(folder: Path) -> np.ndarray:
    """The inputs the README's command lines name, small; returns the ``stack`` of its Python block."""
    stack, _ = data.filaments_timelapse((4, 64, 64), fwhm=4.3, seed=1)
    a, _ = data.filaments_timelapse((4, 48, 48), fwhm=3.0, seed=2)
    b, _ = data.filaments_timelapse((4, 48, 48), fwhm=4.2, seed=3)
    scale = {"y": 0.065, "x": 0.065}
    write_image(str(folder / "cells.ome.zarr"), np.stack([a, b], axis=1), "tcyx", scale=scale, units=MICROMETRE)
    write_image(str(folder / "stack.ome.zarr"), np.stack([a, b], axis=1), "tcyx", scale=scale, units=MICROMETRE)
    volume, _ = data.beads_volume((12, 48, 48), seed=4)
    write_image(
        str(folder / "volume.ome.zarr"),
        volume,
        "zyx",
        scale={"z": 0.2, **scale},
        units={"z": "micrometer", **MICROMETRE},
    )
    # A skewed light-sheet stack (0.4 um stage steps, 104 nm pixels) for the --skew-angle line.
    write_image(
        str(folder / "llsm.ome.zarr"),
        volume,
        "zyx",
        scale={"z": 0.4, "y": 0.104, "x": 0.104},
        units={"z": "micrometer", **MICROMETRE},
    )
    return stack


@pytest.mark.slow  # a local cluster and three out-of-core runs
def test_readme_python_block_runs_as_written(tmp_path, monkeypatch):
    (code,) = [code for lang, code in blocks(README.read_text()) if lang == "python"]
    monkeypatch.chdir(tmp_path)
    stack = _samples(tmp_path)
    namespace = {"stack": stack, "dask_stack": da.from_array(stack, chunks=(2, 64, 64))}
    try:
        exec(compile(code, str(README), "exec"), namespace)
    finally:
        client = namespace.get("client")
        if client is not None:
            cluster = client.cluster
            client.close()
            cluster.close()
    assert isinstance(namespace["sharp"], np.ndarray) and namespace["sharp"].shape == stack.shape
    assert isinstance(namespace["lazy"], da.Array)
    whole = namespace["bigdecon"].sparse_deconvolve(stack, fwhm=4.3)  # the lazy line's PSF size
    np.testing.assert_allclose(namespace["lazy"].compute(), whole, atol=1e-4 * float(whole.max()))
    assert open_image(tmp_path / "sharp.ome.zarr").shape == stack.shape
    assert open_image(tmp_path / "cells-sharp.ome.zarr").shape == (4, 2, 48, 48)


# The run line that runs for real; the other run lines on files made here are checked by
# `bigdecon info` with the same options (it plans the run: the PSF, channels, sizes), the rest parsed.
RUN = "bigdecon run raw.ome.zarr sharp.ome.zarr --fwhm 4.3"


def _command_lines() -> list[list[str]]:
    lines = []
    for lang, code in blocks(README.read_text()):
        if lang != "":
            continue
        for line in code.splitlines():
            if line.startswith("bigdecon "):
                lines.append(shlex.split(line, comments=True))
    return lines


def _info_argv(argv: list[str]) -> list[str]:
    """``bigdecon run IN OUT OPTIONS`` as ``bigdecon info IN OPTIONS`` (the cluster and output options left out)."""
    from bigdecon.params import PARAMETERS

    skip = {p.flag for p in PARAMETERS.values() if "info" not in p.commands}
    out, i = ["info", argv[2]], 4
    while i < len(argv):
        flag = argv[i]
        i += 1
        values = []
        while i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        if flag not in skip:
            out += [flag, *values]
    return out


@pytest.mark.slow  # a local cluster
def test_readme_command_lines(tmp_path):
    from bigdecon.cli import build_parser
    from bigdecon.cli.options import check_parameters, resolve_options

    stack = _samples(tmp_path)
    write_image(str(tmp_path / "raw.ome.zarr"), stack, "tyx", scale={"y": 0.065, "x": 0.065}, units=MICROMETRE)
    lines = _command_lines()
    assert len(lines) >= 10 and RUN.split() in lines, lines
    checked = 0
    for argv in lines:
        args = build_parser().parse_args(argv[1:])  # every line parses ...
        if args.command != "psf":  # bigdecon psf takes no run parameters
            check_parameters(resolve_options(args, cluster=args.command == "run"))  # ... and its options check
        if " ".join(argv) == RUN or argv[1] in ("info", "suggest") or "--dry-run" in argv:
            proc = cli(*argv[1:], cwd=tmp_path)
        elif argv[1] == "run" and (tmp_path / argv[2]).exists() and "--resume" not in argv:
            proc = cli(*_info_argv(argv), cwd=tmp_path)
        else:
            continue
        assert proc.returncode == 0, (argv, proc.stdout, proc.stderr)
        checked += 1
    assert open_image(tmp_path / "sharp.ome.zarr").shape == stack.shape
    assert checked >= 8, checked
