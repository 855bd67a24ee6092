"""The passes: sparse deconvolution of data far larger than memory, on Dask.

A run is a sequence of passes over the blocks of a :class:`~bigdecon.planner.Plan`
(see :mod:`bigdecon.planner` for how each step is chunked and how deep the
step-4 halo is): steps 1-3 on whole planes, step 4 on blocks with a halo,
steps 5-6 on whole planes (or volumes). Global statistics (the raw maximum and
mean per channel, the maximum after the background/up-sampling, the maximum
after step 4) are reductions over the whole data set, computed once and passed
to every block: a block never normalises itself.

Two drivers share the block functions (:mod:`bigdecon.passes.tasks`):

* :func:`sparse_deconvolve_dask` (:mod:`bigdecon.passes.lazy`) builds a lazy
  Dask array (``dask.array`` in, ``dask.array`` out) for data that fits in the
  cluster's memory;
* :func:`deconvolve` (:mod:`bigdecon.passes.run`) runs OME-Zarr/TIFF to
  OME-Zarr out of core: each pass is one task per output block that reads its
  own halo straight from a store and writes exactly the chunks it owns,
  recording completion in a ledger (:mod:`bigdecon.passes.ledger`), so the
  graph grows with the number of chunks, a worker's memory with the chunk size
  only, and a killed run resumes where it stopped. :mod:`bigdecon.passes.request`
  resolves what a run is asked to do before anything is read or written.
"""

from __future__ import annotations

from .lazy import sparse_deconvolve_dask
from .run import deconvolve, plan, run_sizing

__all__ = ["deconvolve", "plan", "run_sizing", "sparse_deconvolve_dask"]
