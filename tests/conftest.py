"""Fixtures: reference data of the published implementation, the real images, small synthetic inputs.

Helpers that tests import by name (``cli``, ``filaments``, process handling) live in ``helpers.py``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import REFERENCE, Ran, filaments

# Small real microscope images (../shared/realdata, see its README): CI has shared/ beside the clone.
# BIGDECON_REALDATA points the tests at another folder of the same files.
REALDATA = Path(os.environ.get("BIGDECON_REALDATA", Path(__file__).resolve().parents[2] / "shared" / "realdata"))


@pytest.fixture(scope="session")
def reference():
    """Load ``name.npy`` from the reference folder."""
    if not REFERENCE.is_dir():
        pytest.fail(f"reference outputs not found at {REFERENCE} (set BIGDECON_REFERENCE)")

    def load(name: str) -> np.ndarray:
        return np.load(REFERENCE / f"{name}.npy")

    return load


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The folder of real images (``realdata / "cells3d_nuclei" / "nuclei.tif"``)."""
    if not REALDATA.is_dir():
        pytest.fail(f"real images not found at {REALDATA} (set BIGDECON_REALDATA)")
    return REALDATA


@pytest.fixture(scope="session")
def stack():
    return filaments()[0]


@pytest.fixture
def run_main(capsys):
    """``bigdecon.cli.main(args)`` in this process: for commands that fail before any cluster starts.

    The loggers the CLI quiets are restored afterwards (pytest restores the warning filters).
    """
    from bigdecon.cli import main

    names = ("distributed", "dask", "bokeh", "tornado")
    levels = {name: logging.getLogger(name).level for name in names}

    def run(*args: str) -> Ran:
        capsys.readouterr()
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse: usage errors, --help
            code = exc.code if isinstance(exc.code, int) else 2
        out, err = capsys.readouterr()
        return Ran(code, out, err)

    yield run
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
