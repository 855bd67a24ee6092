"""``cupyx.scipy.ndimage`` of the CuPy stand-in: SciPy's filters on device arrays (host arrays refused)."""

from __future__ import annotations

import scipy.ndimage
from cupy import wrap_module

__getattr__ = wrap_module("cupyx.scipy.ndimage", scipy.ndimage)
