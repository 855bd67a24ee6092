"""``cupyx.scipy.fft`` of the CuPy stand-in: SciPy's transforms on device arrays (host arrays refused)."""

from __future__ import annotations

import scipy.fft
from cupy import wrap_module

__getattr__ = wrap_module("cupyx.scipy.fft", scipy.fft)
