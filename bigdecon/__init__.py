"""bigdecon: sparse deconvolution and Richardson-Lucy for data far larger than memory.

In memory: :func:`sparse_deconvolve` and the solvers in :mod:`bigdecon.solvers`.
Out of core: :func:`deconvolve` (OME-Zarr or TIFF in, OME-Zarr out, on a Dask cluster).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

from .errors import BigdeconError, InputError, ProcessingError
from .pipeline import sparse_deconvolve
from .solvers import (
    deskew,
    estimate_background,
    fourier_upsample,
    gaussian_psf,
    landweber,
    richardson_lucy,
    skew_psf,
    sparse_hessian,
    spatial_upsample,
)

if TYPE_CHECKING:  # what __getattr__ loads on first use, for type checkers and editors
    from . import cli as cli
    from . import cluster as cluster
    from . import data as data
    from . import demo as demo
    from . import hpc as hpc
    from . import io as io
    from . import k8s as k8s
    from . import params as params
    from . import passes as passes
    from . import planner as planner
    from . import progress as progress
    from . import stages as stages
    from . import suggest as suggest
    from .passes import deconvolve, plan
    from .passes.options import RunOptions, parse_run_options
    from .suggest import suggest_parameters

# Subpackages and modules reachable as attributes (``bigdecon.io.write_image``), imported on first use.
_SUBMODULES = frozenset(
    ("cli", "cluster", "data", "demo", "hpc", "io", "k8s", "params", "passes", "pipeline", "planner", "progress")
    + ("solvers", "stages", "suggest")
)


def __getattr__(name: str):
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    # The out-of-core layer pulls in distributed and zarr: load it on first use.
    if name in ("deconvolve", "plan"):
        from . import passes

        return getattr(passes, name)
    if name in ("RunOptions", "parse_run_options"):
        from .passes import options

        return getattr(options, name)
    if name == "suggest_parameters":
        from .suggest import suggest_parameters

        return suggest_parameters
    raise AttributeError(f"module 'bigdecon' has no attribute {name!r}")


__all__ = [
    "BigdeconError",
    "InputError",
    "ProcessingError",
    "RunOptions",
    "__version__",
    "deconvolve",
    "deskew",
    "estimate_background",
    "fourier_upsample",
    "gaussian_psf",
    "landweber",
    "parse_run_options",
    "plan",
    "richardson_lucy",
    "sparse_deconvolve",
    "skew_psf",
    "sparse_hessian",
    "spatial_upsample",
    "suggest_parameters",
]
