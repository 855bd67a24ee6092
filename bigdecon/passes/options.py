"""What a run is given besides the method: :class:`RunOptions`, and :func:`parse_run_options`.

The method's parameters are the model's :class:`~bigdecon.params.Params`.
Everything else :func:`~bigdecon.passes.run.deconvolve` and
:func:`~bigdecon.passes.run.plan` are asked (where the PSF comes from, which
part of the input, the blocks, the output, where the solvers run, a skewed
stack's geometry) is one frozen :class:`RunOptions`. Keyword arguments become
the pair once, at the public edge, in :func:`parse_run_options`; every layer
below takes the pair.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import InputError
from ..params import PARAMETERS, Params, check_output_dtype

__all__ = ["METHOD_KEYS", "RunOptions", "method_values", "parse_run_options"]

#: The method's parameters: the fields of :class:`~bigdecon.params.Params` but the PSF
#: (``fwhm``/``psf`` may be per channel or a file: they are options until resolved per channel).
METHOD_KEYS = tuple(f.name for f in fields(Params) if f.name not in ("fwhm", "psf"))


def _default(name: str) -> Any:
    return PARAMETERS[name].default


@dataclass(frozen=True)
class RunOptions:
    """The options of a run that are not the method's parameters; see :func:`bigdecon.deconvolve`.

    Made by :func:`parse_run_options` from keyword arguments, or directly;
    ``device``, ``ngff_version``, ``output_dtype``, ``axes``, ``voxel_size``,
    ``offset`` and ``psf_energy`` are checked and converted on construction. The PSF options may give one value for every channel or
    a dict from the input's channel number to that channel's value; a request
    resolves them into one :class:`~bigdecon.params.Params` per channel
    (:func:`~bigdecon.passes.request.prepare_request`).

    Examples
    --------
    >>> from bigdecon.passes.options import RunOptions
    >>> options = RunOptions(fwhm=3, chunks={"y": 256, "x": 256})
    >>> options.device, options.ngff_version, options.resume, options.psf_energy
    ('auto', '0.5', False, 0.99)
    >>> RunOptions(device="tpu")
    Traceback (most recent call last):
    ...
    bigdecon.errors.InputError: device must be one of auto, cpu, gpu, got 'tpu'
    """

    # The PSF: a Gaussian's size, a measured one (array or file), or the optics.
    fwhm: Any = None
    resolution: Any = None
    psf: Any = field(default=None, repr=False, compare=False)
    psf_model: str | None = None  # None: widefield with na/wavelength, else a Gaussian or measured PSF
    na: float | None = None
    wavelength: float | Mapping[int, float] | None = None
    refractive_index: float | None = None
    sheet_thickness: float | None = None
    excitation_wavelength: float | None = None
    psf_voxel_size: Any = None
    psf_as_is: bool = False
    psf_energy: float | None = None  # None: DEFAULT_ENERGY of psf_prepare
    # What the input's metadata lacks or gets wrong, and its camera offset.
    voxel_size: Any = None
    axes: str | None = None
    offset: float | str = 0.0
    # The part of the input, and the blocks.
    channels: Any = None
    timepoints: Any = None
    chunks: Any = None
    depth: Any = None
    task_memory: int | None = None
    min_tasks: int | None = None
    # The output.
    output_dtype: str = _default("output_dtype")
    ngff_version: str = _default("ngff_version")
    resume: bool = False
    overwrite: bool = False
    work_dir: str | os.PathLike[str] | None = None
    pyramid: bool = True
    # Where the solvers run.
    device: str = _default("device")
    # A skewed stack (stage-scanned light sheet, OPM): see bigdecon.passes.skewed.
    skew_angle: float | None = None
    skew_axis: str = _default("skew_axis")
    psf_frame: str = _default("psf_frame")
    deskew_first: bool = False
    skew_fill: float | None = None
    rotate: bool = False

    def __post_init__(self) -> None:
        # Frozen: the checked and converted values are set once, here (Params does the same),
        # by the parameter model's own parsers where it has them.
        converted = {
            "device": PARAMETERS["device"].parse(self.device),
            "ngff_version": PARAMETERS["ngff_version"].parse(self.ngff_version),
            "output_dtype": str(check_output_dtype(self.output_dtype)),
            "axes": None if self.axes is None else PARAMETERS["axes"].parse(self.axes),
            "voxel_size": None if self.voxel_size is None else PARAMETERS["voxel_size"].parse(self.voxel_size),
            "offset": _check_offset(self.offset),
            "psf_energy": _check_energy(self.psf_energy),
            "psf_as_is": bool(self.psf_as_is),
        }
        for name, value in converted.items():
            object.__setattr__(self, name, value)

    def as_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments (of :func:`bigdecon.deconvolve`)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


OPTION_KEYS = tuple(f.name for f in fields(RunOptions))


def parse_run_options(kwargs: Mapping[str, Any] | None = None) -> tuple[Params, RunOptions]:
    """Keyword arguments of :func:`bigdecon.deconvolve` or :func:`bigdecon.plan` as the method's
    :class:`~bigdecon.params.Params` and the run's :class:`RunOptions`, checked once.

    The PSF (``fwhm``, ``psf``) stays in the options: it may be per channel, or a
    file to prepare for the data. The method parameters' ranges are checked with
    the PSF, per channel, when a request is prepared.

    Raises
    ------
    InputError
        An unknown keyword, or an option that does not parse (the option named).

    Examples
    --------
    >>> from bigdecon.passes.options import parse_run_options
    >>> params, options = parse_run_options({"fwhm": 3, "sparse_iters": 50, "axes": "TYX", "offset": "auto"})
    >>> params.sparse_iters, params.deconv_iters, options.fwhm, options.axes, options.offset
    (50, 7, 3, 'tyx', 'auto')
    >>> parse_run_options({"fwhm": 3, "sparse_iter": 5})
    Traceback (most recent call last):
    ...
    bigdecon.errors.InputError: unknown parameter(s): sparse_iter
    """
    kwargs = dict(kwargs or {})
    unknown = sorted(set(kwargs) - set(METHOD_KEYS) - set(OPTION_KEYS))
    if unknown:
        raise InputError(f"unknown parameter(s): {', '.join(unknown)}")
    params = Params(**{k: kwargs[k] for k in METHOD_KEYS if k in kwargs})
    return params, RunOptions(**{k: kwargs[k] for k in OPTION_KEYS if k in kwargs})


def method_values(params: Params) -> dict[str, Any]:
    """The method's parameters of ``params`` as keyword arguments (its PSF left out).

    Examples
    --------
    >>> from bigdecon.params import DEFAULTS
    >>> method_values(DEFAULTS)["sparse_iters"]
    100
    """
    return {k: getattr(params, k) for k in METHOD_KEYS}


def _check_offset(value: Any) -> float | str:
    import math

    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        offset = float(value or 0.0)
    except (TypeError, ValueError):
        raise InputError(f"offset must be a number of counts >= 0 or 'auto', got {value!r}") from None
    if not (math.isfinite(offset) and offset >= 0):
        raise InputError(f"offset must be a number of counts >= 0 or 'auto', got {value!r}")
    return offset


def _check_energy(value: Any) -> float:
    from ..solvers.psf_prepare import DEFAULT_ENERGY

    if value is None:
        return DEFAULT_ENERGY
    return float(PARAMETERS["psf_energy"].parse(value))
