"""Every Examples section in bigdecon's docstrings runs and prints what it says."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import pkgutil

import pytest

import bigdecon

MODULES = sorted(m.name for m in pkgutil.walk_packages(bigdecon.__path__, "bigdecon."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name == "bigdecon.napari._widget" and importlib.util.find_spec("magicgui") is None and not os.environ.get("CI"):
        pytest.skip("the napari plugin needs napari: pip install '.[test]'")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (printed above)"


def test_public_functions_have_examples():
    """The public API documents itself with runnable examples (scikit-image style)."""
    public = [
        n for n in bigdecon.__all__ if callable(getattr(bigdecon, n)) and not isinstance(getattr(bigdecon, n), type)
    ]
    missing = [n for n in public if ">>>" not in (getattr(bigdecon, n).__doc__ or "")]
    assert not missing, f"public functions without an Examples section: {missing}"
