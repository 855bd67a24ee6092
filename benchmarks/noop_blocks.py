"""Benchmark-only stand-in solvers: every block function returns its input's data unchanged.

``bench_bookkeeping.py`` measures what the out-of-core driver costs per task
(planning, submission, the ledger, progress, resume), so the solvers must cost
nothing while the tasks still read their halo and write their chunks. This
module replaces the three block functions of :mod:`bigdecon.passes.tasks` by
identities of the right shape and dtype (non-zero data, so every chunk is
really written). It is part of the benchmark, not of the product.

Use it as a Dask worker preload (``dask worker --preload benchmarks/noop_blocks.py``),
or call :func:`install` in a process that runs blocks itself (``client=None``).
"""

from __future__ import annotations

import numpy as np


def _preprocess_identity(raw, scale, mean, params):
    out = np.asarray(raw, dtype=np.float32)
    if params.up_sample:  # the shape a real step 1-3 would return
        out = out.repeat(2, axis=-2).repeat(2, axis=-1)
    return out


def _sparse_identity(h, norm, params, coupled, interior, faces=None):
    return np.ascontiguousarray(np.asarray(h, dtype=np.float32)[interior])


def _final_identity(g, norm, scale, params, psf):
    return np.asarray(g, dtype=np.float32)


def install() -> None:
    """Replace the solvers of this process's task functions by identities."""
    import bigdecon.passes.tasks as tasks

    tasks._preprocess_block = _preprocess_identity
    tasks._sparse_block = _sparse_identity
    tasks._final_block = _final_identity


def dask_setup(worker) -> None:  # called by ``dask worker --preload``
    install()
