"""Parameters of sparse deconvolution, checked once at the public edge."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["Params", "DEFAULTS"]


@dataclass(frozen=True)
class Params:
    """The published parameters (names and defaults as in the published code).

    ``fwhm`` is the PSF full width at half maximum in input pixels: one number
    (y and x), two (y, x) or three (z, y, x; true 3-D deconvolution).
    """

    fwhm: tuple[float, ...] | None = None
    sparse_iters: int = 100
    fidelity: float = 150.0
    sparsity: float = 10.0
    tcontinuity: float = 0.5
    background: int = 1
    deconv_iters: int = 7
    deconv_type: int = 1
    up_sample: int = 0
    psf: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_kwargs(cls, fwhm=None, psf=None, **kwargs) -> Params:
        """Build and validate; every problem is an :class:`InputError` naming the parameter."""
        unknown = set(kwargs) - {f for f in cls.__dataclass_fields__ if f not in ("fwhm", "psf")}
        if unknown:
            raise InputError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        if fwhm is not None and psf is not None:
            raise InputError("give either fwhm (a Gaussian PSF's size) or psf (a measured PSF), not both")
        if fwhm is not None:
            values = [fwhm] if np.ndim(fwhm) == 0 else list(np.ravel(fwhm))
            try:
                values = [float(v) for v in values]
            except (TypeError, ValueError):
                raise InputError(f"fwhm must be numbers of pixels > 0, got {fwhm!r}") from None
            if len(values) not in (1, 2, 3):
                raise InputError(f"fwhm takes 1, 2 (y, x) or 3 (z, y, x) values, got {len(values)}")
            for v in values:
                if not (math.isfinite(v) and v > 0):
                    raise InputError(f"fwhm must be a finite number of pixels > 0, got {v}")
            fwhm = tuple(values * 2 if len(values) == 1 else values)
        p = cls(fwhm=fwhm, psf=psf, **kwargs)
        p._check()
        return p

    def _check(self) -> None:
        def integer(name: str, lo: int, hi: int | None = None) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
                allowed = f"an integer >= {lo}" if hi is None else f"one of {lo}-{hi}"
                raise InputError(f"{name} must be {allowed}, got {v!r}")

        def number(name: str, positive: bool) -> None:
            v = getattr(self, name)
            try:
                ok = math.isfinite(float(v)) and (float(v) > 0 if positive else float(v) >= 0)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise InputError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")

        integer("sparse_iters", 0)
        integer("deconv_iters", 0)
        integer("background", 0, 5)
        integer("deconv_type", 0, 2)
        integer("up_sample", 0, 2)
        number("fidelity", True)
        number("sparsity", False)
        number("tcontinuity", False)
        if self.psf is not None:
            psf = np.asarray(self.psf)
            if psf.ndim not in (2, 3):
                raise InputError(f"psf must be a 2-D or 3-D array, got {psf.ndim}-D")
            if not np.all(np.isfinite(psf)) or psf.min() < 0 or psf.sum() <= 0:
                raise InputError("psf must be finite, non-negative and not all zero")
        if self.deconv_type and self.deconv_iters and self.fwhm is None and self.psf is None:
            raise InputError(
                "fwhm (PSF size in pixels) or psf is required for deconv_type 1 or 2 (or set deconv_type=0)"
            )

    @property
    def deconvolves(self) -> bool:
        """Whether step 5 runs."""
        return bool(self.deconv_type and self.deconv_iters)

    @property
    def volumetric(self) -> bool:
        """Step 5 is true 3-D deconvolution (3 fwhm values or a 3-D PSF)."""
        if self.psf is not None:
            return np.ndim(self.psf) == 3
        return self.fwhm is not None and len(self.fwhm) == 3

    def to_dict(self) -> dict:
        """JSON-friendly record of the parameters (a measured PSF by its shape and checksum)."""
        d = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "psf"}
        d["fwhm"] = list(self.fwhm) if self.fwhm is not None else None
        d["psf_shape"] = list(np.shape(self.psf)) if self.psf is not None else None
        # The checksum tells two measured PSFs of one shape apart (a resume must not mix them).
        d["psf_sha256"] = (
            hashlib.sha256(np.ascontiguousarray(self.psf, dtype=np.float32).tobytes()).hexdigest()
            if self.psf is not None
            else None
        )
        return d


DEFAULTS = Params()
