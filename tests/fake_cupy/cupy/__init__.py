"""A strict CuPy stand-in for CI: the part of CuPy's API bigdecon uses, over NumPy, with CuPy's discipline.

It proves code paths and host/device discipline, not CUDA. A "device" array is a
:class:`ndarray`, NumPy memory behind an object that, like a CuPy array:

* refuses implicit conversion to NumPy: ``numpy.asarray(a)`` (``__array__``) raises
  ``TypeError``, so a SciPy or NumPy routine handed a device array fails;
* cannot meet a NumPy array in one expression (``a + numpy_array``, ``numpy.maximum(a, h)``):
  ``TypeError``; Python and NumPy scalars are fine;
* runs a NumPy function of device arrays on the device (``numpy.ndim(a)``, ``numpy.pad(a)``),
  as CuPy does through ``__array_function__``, but refuses one given a host array too.

Moving data is explicit: :func:`asarray`/:func:`array` (host to device), :func:`asnumpy`
and ``a.get()`` (device to host); each is counted in :data:`transfers`. Functions of
this module take device arrays (a NumPy array argument is refused, as CuPy refuses it)
and return device arrays. ``cuda.runtime`` reports one device of 16 GiB.

Put ``tests/fake_cupy`` first on ``sys.path`` (tests/test_fake_gpu.py's fixture does)
to make ``import cupy`` and ``import cupyx.scipy.fft`` find it.
"""

from __future__ import annotations

import collections
import functools
import types
from typing import Any

import numpy as _np
from numpy.lib.mixins import NDArrayOperatorsMixin

__version__ = "0.0-stand-in"
FAKE = True  # tests check that this, not a real CuPy, is what they run on

# Host <-> device copies: "h2d" and "d2h", counted for tests of transfers at task edges.
transfers: collections.Counter[str] = collections.Counter()


class ndarray(NDArrayOperatorsMixin):
    """A "device" array: NumPy memory behind an object that is not a NumPy array.

    Not an ``numpy.ndarray`` subclass: NumPy passes a subclass through
    ``numpy.asarray`` without asking ``__array__``, so a subclass could not refuse.
    Operators come from NumPy's mixin through :meth:`__array_ufunc__`; other
    methods and attributes (``astype``, ``reshape``, ``sum``, ``shape``...) are the
    NumPy array's, with device arrays in and out.
    """

    __slots__ = ("_a",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, a: _np.ndarray) -> None:
        self._a = a

    def __array__(self, dtype: Any = None, copy: Any = None) -> _np.ndarray:
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array "
            "explicitly. (fake cupy)"
        )

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        out = kwargs.get("out", ())
        if any(_is_host(x) for x in (*inputs, *out)):
            return NotImplemented  # NumPy raises TypeError: a host array in a device expression
        result = getattr(ufunc, method)(*_plain(inputs), **_plain(kwargs))
        if len(out) == 1:
            return out[0]  # in place (a += b): the same device array
        return _wrap(result)

    def __array_function__(self, func: Any, types: Any, args: Any, kwargs: Any) -> Any:
        # As CuPy: a NumPy function of device arrays runs on the device (numpy.ndim, numpy.pad...),
        # but not with a host array among its arguments (NumPy then raises TypeError).
        if any(_is_host(v) for x in (*args, *kwargs.values()) for v in (x if isinstance(x, (list, tuple)) else (x,))):
            return NotImplemented
        return _wrap(func(*_plain(args), **_plain(kwargs)))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_a":
            # __array_interface__ / __array_struct__ would hand NumPy the memory: not there.
            raise AttributeError(name)
        value = getattr(self._a, name)
        if callable(value):
            return device_function(f"ndarray.{name}", value)
        return _wrap(value)

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_plain(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        if _is_host(value):
            transfers["h2d"] += 1  # CuPy copies a host value in
        self._a[_plain(key)] = _plain(value)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self) -> Any:
        return (_wrap(row) for row in self._a)

    # Python numbers from one element: CuPy allows them (a synchronising copy to the host).
    def __bool__(self) -> bool:
        return bool(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __index__(self) -> int:
        return self._a.__index__()

    def __complex__(self) -> complex:
        return complex(self._a)

    def __repr__(self) -> str:
        return repr(self._a).replace("array(", "fake_cupy.array(", 1)

    def __reduce__(self) -> Any:
        return (ndarray, (self._a,))

    def get(self, stream: Any = None, out: Any = None) -> _np.ndarray:
        """Copy to the host (CuPy's ``ndarray.get``)."""
        transfers["d2h"] += 1
        return self._a.copy()

    def tolist(self) -> Any:
        transfers["d2h"] += 1
        return self._a.tolist()

    @property
    def device(self) -> Any:
        return cuda.Device(0)


def _is_host(x: Any) -> bool:
    return isinstance(x, _np.ndarray) and x.ndim > 0


def _plain(x: Any) -> Any:
    """A device array as the NumPy array under it (inside this module only); containers walked."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(v) for v in x)
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _wrap(x: Any) -> Any:
    """NumPy results as device arrays (0-d too: CuPy reductions return 0-d arrays, not scalars)."""
    if isinstance(x, _np.ndarray):
        return ndarray(x)
    if isinstance(x, _np.generic):
        return ndarray(_np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


def _refuse_host(name: str, args: Any, kwargs: Any) -> None:
    for x in (*args, *kwargs.values()):
        items = x if isinstance(x, (list, tuple)) else (x,)
        if any(_is_host(v) for v in items):
            raise TypeError(
                f"Unsupported type <class 'numpy.ndarray'> in cupy.{name} (fake cupy: move it with asarray)"
            )


def device_function(name: str, func: Any) -> Any:
    """``func`` (a NumPy/SciPy function) for device arrays: host arrays refused, results on the device."""

    @functools.wraps(func)
    def call(*args: Any, **kwargs: Any) -> Any:
        _refuse_host(name, args, kwargs)
        return _wrap(func(*_plain(args), **_plain(kwargs)))

    return call


def wrap_module(name: str, module: types.ModuleType) -> Any:
    """A module ``__getattr__`` that serves ``module``'s functions as :func:`device_function`\\ s."""

    def __getattr__(attr: str) -> Any:
        value = getattr(module, attr)
        if isinstance(value, (type, _np.dtype, types.ModuleType)) or not callable(value):
            return value  # dtypes (float32), constants (pi, newaxis)
        return device_function(f"{name}.{attr}" if name else attr, value)

    return __getattr__


# --------------------------------------------------------------------------- transfers


def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """Host to device (no copy for a device array of the same dtype)."""
    if isinstance(a, ndarray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    transfers["h2d"] += 1
    return ndarray(_np.array(a, dtype=dtype, order=order or "K", copy=True))


def array(a: Any, dtype: Any = None, copy: bool = True, order: Any = None) -> ndarray:
    if isinstance(a, ndarray):
        return a.astype(dtype or a.dtype, copy=True)
    return asarray(a, dtype=dtype, order=order)


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None) -> _np.ndarray:
    """Device to host (a host array passes through, as in CuPy)."""
    if isinstance(a, ndarray):
        return a.get()
    return _np.asarray(a, order=order)


def get_array_module(*args: Any) -> types.ModuleType:
    import sys

    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


# --------------------------------------------------------------------------- memory and the device


class _Pool:
    def __init__(self) -> None:
        self.freed = 0

    def free_all_blocks(self) -> None:
        self.freed += 1

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0

    def set_limit(self, size: int | None = None, fraction: float | None = None) -> None:
        pass

    def get_limit(self) -> int:
        return 0


_memory_pool, _pinned_pool = _Pool(), _Pool()


def get_default_memory_pool() -> _Pool:
    return _memory_pool


def get_default_pinned_memory_pool() -> _Pool:
    return _pinned_pool


from . import cuda, fft  # noqa: E402, F401  (they use the names above)

__getattr__ = wrap_module("", _np)  # zeros, maximum, pad, sqrt, ... as device functions
