"""The one place where bigdecon chooses between NumPy and CuPy.

Every solver takes its array module from :func:`get_xp` and its transforms from
:func:`fft_module`, so the same code runs on the CPU and on an NVIDIA GPU.
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from ._types import Array, ArrayLike

try:  # CuPy is optional: the CPU path never needs it.
    import cupy as _cupy  # type: ignore[import-not-found]
except Exception:  # ImportError, or a CuPy without a usable CUDA runtime
    _cupy = None

__all__ = [
    "get_xp",
    "fft_module",
    "gpu_available",
    "to_numpy",
    "to_device",
    "fft_workers",
    "cpu_threads",
    "release_device_memory",
]


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def get_xp(array: object) -> ModuleType:
    """Return ``cupy`` for a CuPy array and ``numpy`` for anything else."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy
    return np


def fft_module(xp: ModuleType) -> ModuleType:
    """``scipy.fft`` for NumPy arrays, ``cupyx.scipy.fft`` for CuPy arrays."""
    if xp is np:
        import scipy.fft

        return scipy.fft
    import cupyx.scipy.fft  # type: ignore[import-not-found]

    return cupyx.scipy.fft


# Voxels per solver thread on the CPU. Below this a second thread costs more
# (start-up of 13 short parallel loops and two transforms per iteration, a
# shared cache) than it gives: measured on the 2-core development VM, a
# 5x256x256 sparse-Hessian step ran 0.45-0.6 s on one thread and 0.85-1.3 s
# on two (benchmarks/bench_solvers.py prints both).
THREAD_GRAIN = 2**20


def cpu_threads(size: int | None = None) -> int:
    """Threads one solver call may use on the CPU.

    ``BIGDECON_THREADS`` overrides; inside a Dask worker the passes' tasks set
    it to 1 per task so that tasks, not threads within a task, fill the cores.
    Otherwise all cores, but one per :data:`THREAD_GRAIN` voxels of an array of
    ``size`` voxels at most.
    """
    n = int(os.environ.get("BIGDECON_THREADS", "0") or 0)
    if n > 0:
        return n
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if size is None:
        return cores
    return max(1, min(cores, int(size) // THREAD_GRAIN))


def fft_workers(xp: ModuleType, size: int | None = None) -> dict:
    """Keyword arguments giving scipy.fft its threads (CuPy takes none)."""
    if xp is np:
        return {"workers": cpu_threads(size)}
    return {}


def to_numpy(array: ArrayLike) -> np.ndarray:
    """Bring an array to host memory (no copy for NumPy input)."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def to_device(array: ArrayLike, device: str) -> Array:
    """Move an array to ``"cpu"`` or ``"gpu"``."""
    if device == "gpu":
        if _cupy is None:
            raise RuntimeError("device='gpu' needs CuPy: pip install 'bigdecon[gpu]'")
        if isinstance(array, np.ndarray) and not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))  # CuPy takes native byte order only
        return _cupy.asarray(array)
    return to_numpy(array)


# cuFFT plans kept per device between blocks (CuPy's default is 16, each with its work area).
PLAN_CACHE_SIZE = 4


def release_device_memory() -> None:
    """Return CuPy's pooled GPU memory and cached FFT plans to the card (no-op without CuPy).

    A long-lived worker runs blocks of several shapes; without this, the pool
    and cuFFT's plan cache keep the work areas of every shape it has seen.
    """
    if _cupy is None:
        return
    _cupy.get_default_memory_pool().free_all_blocks()
    _cupy.get_default_pinned_memory_pool().free_all_blocks()
    try:
        # Keep the plans of the few shapes a run repeats (its interior blocks and
        # whole-plane tasks), not one per edge-block shape it ever met.
        cache = _cupy.fft.config.get_plan_cache()
        if cache.get_size() > PLAN_CACHE_SIZE:
            cache.set_size(PLAN_CACHE_SIZE)
    except Exception:  # older CuPy without a per-device plan cache
        pass
