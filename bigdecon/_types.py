"""The array types of bigdecon's solvers, in one place.

The solvers are pure array-to-array functions that work on NumPy or CuPy arrays
(float32 on the data path). :data:`Array` names either; :data:`ArrayLike`
is what they accept (anything ``xp.asarray`` takes); :data:`NDArrayF32` is a
float32 NumPy array (what the CPU-only helpers return).

CuPy is optional: where it is not installed, type checkers see its array as
``Any``, so :data:`Array` checks as a NumPy array there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import cupy

__all__ = ["Array", "ArrayLike", "NDArrayF32", "Pad", "Shape"]

NDArrayF32: TypeAlias = npt.NDArray[np.float32]
"""A float32 NumPy array."""

Array: TypeAlias = "npt.NDArray[Any] | cupy.ndarray"
"""A NumPy or a CuPy array (a solver returns the kind it was given)."""

ArrayLike: TypeAlias = "npt.ArrayLike | cupy.ndarray"
"""What the solvers accept: a NumPy or CuPy array, or anything ``numpy.asarray`` takes."""

Pad: TypeAlias = "int | Sequence[int | tuple[int, int]] | None"
"""Edge padding of the iterative solvers: one width, one per deconvolved axis (or a ``(low, high)``
pair per axis), or ``None`` for the solver's own rule."""

Shape: TypeAlias = "tuple[int, ...]"
"""An array's shape."""
