"""``cupy.fft`` of the stand-in: NumPy's FFTs on device arrays, and the plan cache's configuration."""

from __future__ import annotations

import types

import numpy as np

from . import wrap_module


class _PlanCache:
    def __init__(self) -> None:
        self.size = 16

    def get_size(self) -> int:
        return self.size

    def set_size(self, size: int) -> None:
        self.size = int(size)

    def clear(self) -> None:
        pass


_cache = _PlanCache()
config = types.SimpleNamespace(get_plan_cache=lambda: _cache)
__getattr__ = wrap_module("fft", np.fft)
