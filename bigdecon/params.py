"""Every parameter of bigdecon, in one table: name, type, default, allowed values, help and CLI flag.

:data:`PARAMETERS` is the single source of truth. The :class:`Params` dataclass
takes its defaults and range checks from it, and the command line
(:mod:`bigdecon.cli`) builds its options, its ``--config`` key check and the
options ``bigdecon submit`` forwards from it. The value parsers that more than
one layer needs live here too: :func:`parse_timepoints`, the per-channel
``C=VALUES`` forms of ``fwhm``/``resolution``/``psf`` (:func:`parse_psf_size`,
:func:`parse_psf_files`) and the output dtype rule (:func:`check_output_dtype`).

Every parser raises :class:`~bigdecon.errors.InputError` with one line naming
the parameter.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

__all__ = [
    "DEFAULTS",
    "PARAMETERS",
    "DECONV_ITERS_BY_TYPE",
    "PSF_MODELS",
    "Parameter",
    "Params",
    "check_output_dtype",
    "check_psf_size",
    "parse_budget",
    "parse_psf_files",
    "parse_psf_size",
    "parse_timepoints",
    "parse_voxel_size",
    "resolve_deconv_iters",
]


# --------------------------------------------------------------------------- value parsers


def _int(name: str) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool):
            raise InputError(f"{name} must be an integer, got {v!r}")
        if isinstance(v, (int, np.integer)):
            return int(v)
        if isinstance(v, float) and v.is_integer():
            return int(v)
        try:
            return int(str(v).strip())
        except ValueError:
            raise InputError(f"{name} must be an integer, got {v!r}") from None

    return conv


def _float(name: str) -> Callable[[Any], float]:
    def conv(v: Any) -> float:
        if isinstance(v, bool):
            raise InputError(f"{name} must be a number, got {v!r}")
        try:
            return float(str(v).strip()) if isinstance(v, str) else float(v)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be a number, got {v!r}") from None

    return conv


def _flatten(v: Any, split: Callable[[str], list[str]]) -> list[Any]:
    """A string, a list of strings and values, or one value -> a flat list; strings cut by ``split``."""
    if isinstance(v, str):
        return split(v)
    if isinstance(v, (list, tuple)):
        out: list[Any] = []
        for item in v:
            out.extend(split(item) if isinstance(item, str) else [item])
        return out
    return [v]


def _items(v: Any) -> list[Any]:
    """``'3,3'``, ``['3', '3']``, ``[3, 3]`` or ``3`` -> a flat list of items."""
    return _flatten(v, lambda text: text.replace(",", " ").split())


def _floats(name: str) -> Callable[[Any], list[float]]:
    one = _float(name)

    def conv(v: Any) -> list[float]:
        values = [one(x) for x in _items(v)]
        if not values:
            raise InputError(f"{name} needs at least one number")
        return values

    return conv


def _ints(name: str) -> Callable[[Any], list[int]]:
    one = _int(name)

    def conv(v: Any) -> list[int]:
        values = [one(x) for x in _items(v)]
        if not values:
            raise InputError(f"{name} needs at least one index, e.g. 0,2")
        return values

    return conv


def _timepoints_match(v: Any) -> tuple[str, int | None, int | None]:
    """``'a:b'`` -> (the text without spaces, a, b); a missing end is None."""
    if isinstance(v, (list, tuple)) and len(v) == 2:
        v = f"{'' if v[0] is None else v[0]}:{'' if v[1] is None else v[1]}"
    text = "".join(str(v).split())
    m = re.fullmatch(r"(-?\d+)?:(-?\d+)?", text)
    if not m:
        raise InputError(f"timepoints must look like A:B (time points A to B-1, e.g. 0:10, 5: or -10:), got {v!r}")
    a, b = (int(x) if x is not None else None for x in m.groups())
    return text, a, b


def _timepoints_text(v: Any) -> str:
    """Time points ``'a:b'``: a to b-1; either end may be left out, negative ends count from the last.

    Checked without the input: the form, and ends of one sign in order.
    """
    text, a, b = _timepoints_match(v)
    if a is not None and b is not None and (a < 0) == (b < 0) and a >= b:
        raise InputError(f"timepoints {text} select nothing (empty or reversed range: A:B is A to B-1)")
    return text


def parse_timepoints(span: Any, n: int) -> tuple[int, int]:
    """The time points ``a`` to ``b - 1`` that ``span`` selects from ``n``.

    Parameters
    ----------
    span : str or (int, int)
        ``"a:b"`` (either end may be left out) or a pair; negative ends count
        from the last time point, as in Python slicing.
    n : int
        Time points in the input.

    Returns
    -------
    a, b : int
        ``0 <= a < b <= n``.

    Raises
    ------
    InputError
        Not of the form ``a:b``, an empty or reversed range, or outside ``0:n``.

    Examples
    --------
    >>> parse_timepoints("2:-1", 10), parse_timepoints("-3:", 10), parse_timepoints((0, 4), 10)
    ((2, 9), (7, 10), (0, 4))
    """
    if isinstance(span, str):
        _, first, last = _timepoints_match(span)
        a = 0 if first is None else first
        b = n if last is None else last
    else:
        try:
            a, b = (int(v) for v in span)
        except (TypeError, ValueError):
            raise InputError(f"timepoints must look like A:B or a pair (a, b), got {span!r}") from None
    # Negative ends count from the last time point, as in Python slicing.
    a, b = (a + n if a < 0 else a), (b + n if b < 0 else b)
    if a >= b:
        shown = span if isinstance(span, str) else f"{a}:{b}"
        raise InputError(f"timepoints {shown} select nothing (empty or reversed range; the input has 0:{n})")
    if not (0 <= a and b <= n):
        raise InputError(f"timepoints {a}:{b} outside 0:{n}")
    return a, b


def _sizes(name: str, least: int = 1) -> Callable[[Any], Any]:
    """``'t=8,y=512,x=512'`` -> dict; ``'8,512,512'`` -> list; an int or dict/list from a config file."""
    integer = _int(name)

    def one(v: Any) -> int:
        value = integer(v)
        if value < least:
            raise InputError(f"{name} sizes must be >= {least}, got {value}")
        return value

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): one(x) for k, x in v.items()}
        items = _items(v)
        if items and all(isinstance(i, str) and "=" in i for i in items):
            out = {}
            for item in items:
                key, _, value = item.partition("=")
                key = key.strip().lower()
                if key not in ("t", "c", "z", "y", "x", "k"):
                    raise InputError(f"{name}: unknown axis {key!r} in {v!r} (use t, z, y, x)")
                out[key] = one(value)
            return out
        values = [one(i) for i in items]
        if not values:
            raise InputError(f"{name} needs sizes like t=8,y=512,x=512 or 8,512,512")
        return values

    return conv


def _depth(v: Any) -> Any:
    value = _sizes("depth", least=0)(v)
    if isinstance(value, list):
        # Positional halo: one value for every axis, (y, x), or (t|z, y, x).
        if len(value) == 1:
            return value[0]
        names = {2: ("y", "x"), 3: ("k", "y", "x")}.get(len(value))
        if names is None:
            raise InputError(f"depth takes 1, 2 (y, x) or 3 (t|z, y, x) values, got {len(value)}")
        return dict(zip(names, value))
    return value


def _choice(name: str, choices: Sequence[str]) -> Callable[[Any], str]:
    def conv(v: Any) -> str:
        text = str(v).strip()
        if text not in choices:
            raise InputError(f"{name} must be one of {', '.join(choices)}, got {v!r}")
        return text

    return conv


def _seconds(name: str) -> Callable[[Any], float]:
    one = _float(name)

    def conv(v: Any) -> float:
        value = one(v)
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a number of seconds > 0, got {v!r}")
        return value

    return conv


def parse_budget(budget: Any) -> tuple[float | None, int | None]:
    """``(seconds, candidates)`` from a budget: an int is a number of candidates, a float or ``"30s"`` seconds.

    Examples
    --------
    >>> parse_budget("30s"), parse_budget(8), parse_budget("8"), parse_budget(None)
    ((30.0, None), (None, 8), (None, 8), (None, None))
    """
    if budget is None:
        return None, None
    text = str(budget).strip().lower()
    try:
        if isinstance(budget, float) or text.endswith("s"):
            seconds = float(text.rstrip("s"))
            if seconds > 0:
                return seconds, None
        elif int(text) >= 1:
            return None, int(text)
    except ValueError:
        pass
    raise InputError(f"budget must be a number of candidates (e.g. 8) or seconds (e.g. 30s), got {budget!r}")


def _budget_text(v: Any) -> str:
    parse_budget(v)
    return str(v).strip()


def _text(v: Any) -> str:
    return str(v)


def _flag(name: str) -> Callable[[Any], bool]:
    def conv(v: Any) -> bool:
        if isinstance(v, bool):
            return v
        text = str(v).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise InputError(f"{name} must be true or false, got {v!r}")

    return conv


def _tristate(name: str) -> Callable[[Any], bool | None]:
    flag = _flag(name)

    def conv(v: Any) -> bool | None:
        if isinstance(v, str) and v.strip().lower() == "auto":
            return None
        return flag(v)

    return conv


def _cidrs(v: Any) -> list[str]:
    """IP ranges such as ``10.0.0.0/8,192.168.1.5/32`` (a bare address is one host)."""
    import ipaddress

    out = []
    for item in _items(v):
        try:
            out.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            raise InputError(f"dashboard_from takes IP ranges like 10.0.0.0/8, got {item!r}") from None
    return out


def _channel_key(name: str, key: Any) -> int:
    try:
        if isinstance(key, bool):
            raise ValueError
        c = int(str(key).strip())
    except ValueError:
        raise InputError(f"{name}: per-channel values need channel numbers, like 0=3 1=4.2,4.2; got {key!r}") from None
    if c < 0:
        raise InputError(f"{name}: channel numbers are >= 0, got {c}")
    return c


def _tokens(v: Any) -> list[Any]:
    """Whitespace-separated tokens (commas kept: they separate one channel's values)."""
    return _flatten(v, str.split)


def parse_psf_size(name: str) -> Callable[[Any], Any]:
    """The parser of a PSF size option (``fwhm`` or ``resolution``).

    ``3``, ``2,3,3``, ``"2 3 3"`` -> a list of floats; ``"0=3 1=4.2,4.2"``,
    ``["0=3", "1=4.2,4.2"]`` or a dict -> ``{channel: list}`` sorted by channel.

    Examples
    --------
    >>> parse_psf_size("fwhm")("0=3 1=4.2,4.2")
    {0: [3.0], 1: [4.2, 4.2]}
    >>> parse_psf_size("fwhm")(["2", "3,3"])
    [2.0, 3.0, 3.0]
    """
    values = _floats(name)

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            if not v:
                raise InputError(f"{name} per channel needs at least one channel")
            return {_channel_key(name, k): values(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
        tokens = _tokens(v)
        keyed = [t for t in tokens if isinstance(t, str) and "=" in t]
        if not keyed:
            return values(tokens)
        if len(keyed) != len(tokens):
            raise InputError(
                f"{name}: give one value for all channels or C=VALUES for each channel "
                f"(e.g. 0=3 1=4.2,4.2), not both: {' '.join(map(str, tokens))}"
            )
        out: dict[int, list[float]] = {}
        for token in keyed:
            key, _, value = token.partition("=")
            c = _channel_key(name, key)
            if c in out:
                raise InputError(f"{name}: channel {c} given twice")
            out[c] = values(value)
        return dict(sorted(out.items()))

    return conv


_CHANNEL_FILE = re.compile(r"\s*\d+\s*=")


def parse_psf_files(v: Any) -> str | dict[int, str]:
    """A ``psf`` file option: ``"a.tif"`` -> the path; ``"0=a.tif 1=b.npy"``, ``["0=a.tif", "1=b.npy"]``
    or a dict -> ``{channel: path}`` sorted by channel.

    A string is one path (it may hold spaces) unless every whitespace-separated
    token of it is a ``C=FILE`` token.

    Examples
    --------
    >>> parse_psf_files("my psf.tif"), parse_psf_files("0=a.tif 1=b.npy")
    ('my psf.tif', {0: 'a.tif', 1: 'b.npy'})
    """
    if isinstance(v, dict):
        if not v:
            raise InputError("psf per channel needs at least one channel")
        return {_channel_key("psf", k): str(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, (list, tuple)):
        items = [str(i) for i in v]
    else:
        tokens = str(v).split()
        per_channel = len(tokens) > 1 and all(_CHANNEL_FILE.match(t) for t in tokens)
        items = tokens if per_channel else [str(v)]
    keyed = [i for i in items if _CHANNEL_FILE.match(i)]
    if not keyed:
        if len(items) != 1:
            raise InputError(f"psf takes one file, or C=FILE per channel (e.g. 0=a.tif 1=b.npy), got {' '.join(items)}")
        return items[0]
    if len(keyed) != len(items):
        raise InputError(f"psf: give one file for all channels or C=FILE for each channel, not both: {' '.join(items)}")
    out: dict[int, str] = {}
    for item in keyed:
        key, _, path = item.partition("=")
        c = _channel_key("psf", key)
        if c in out:
            raise InputError(f"psf: channel {c} given twice")
        out[c] = path.strip()
    return dict(sorted(out.items()))


def check_output_dtype(v: Any) -> np.dtype:
    """The output dtype rule, the same for the CLI, :func:`bigdecon.deconvolve` and the OME-Zarr writer:
    float32, float64 or an integer type (float16 loses too much of a deconvolved image).

    Examples
    --------
    >>> check_output_dtype("uint16")
    dtype('uint16')
    """
    try:
        dtype = np.dtype(v.strip() if isinstance(v, str) else v)
    except TypeError:
        raise InputError(f"output_dtype {v!r} is not a NumPy dtype (use float32, uint16, ...)") from None
    if not (dtype in (np.float32, np.float64) or np.issubdtype(dtype, np.integer)):
        raise InputError(f"output_dtype must be float32, float64 or an integer type such as uint16, got {dtype}")
    return dtype


def _output_dtype(v: Any) -> str:
    return str(check_output_dtype(v))


def check_psf_size(name: str, value: Any, unit: str = "pixels") -> tuple[float, ...]:
    """One PSF size (``fwhm`` in pixels or ``resolution`` in physical units): 1, 2 (y, x) or 3 (z, y, x)
    finite values > 0, as a tuple (one value is returned twice: y and x).

    Examples
    --------
    >>> check_psf_size("fwhm", 3), check_psf_size("fwhm", [2, 3, 3])
    ((3.0, 3.0), (2.0, 3.0, 3.0))
    """
    values = [value] if np.ndim(value) == 0 else list(np.ravel(value))
    try:
        floats = [float(v) for v in values]
    except (TypeError, ValueError):
        raise InputError(f"{name} must be numbers of {unit} > 0, got {value!r}") from None
    if len(floats) not in (1, 2, 3):
        raise InputError(f"{name} takes 1, 2 (y, x) or 3 (z, y, x) values, got {len(floats)}")
    for f in floats:
        if not (math.isfinite(f) and f > 0):
            raise InputError(f"{name} must be a finite number of {unit} > 0, got {f}")
    return tuple(floats * 2 if len(floats) == 1 else floats)


# Length units a voxel size may be given in, in micrometres.
LENGTH_UNITS: dict[str, float] = {
    "nm": 1e-3,
    "nanometer": 1e-3,
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "micrometer": 1.0,
    "mm": 1e3,
    "millimeter": 1e3,
}


def parse_voxel_size(name: str) -> Callable[[Any], list[float]]:
    """The parser of a voxel size option: ``[Z,]Y,X`` in micrometres, or with a unit (``300,100,100nm``).

    Returns 2 (y, x) or 3 (z, y, x) sizes in micrometres; one value is y and x.

    Examples
    --------
    >>> parse_voxel_size("voxel_size")("0.3,0.1,0.1"), parse_voxel_size("voxel_size")("300, 65 nm")
    ([0.3, 0.1, 0.1], [0.3, 0.065])
    >>> parse_voxel_size("voxel_size")([0.2, 0.1])
    [0.2, 0.1]
    """

    def conv(v: Any) -> list[float]:
        factor = 1.0
        if isinstance(v, str):
            m = re.fullmatch(r"\s*(.*?)\s*([a-zA-Zµμ]+)?\s*", v)
            assert m is not None  # the pattern matches every string
            v, unit = m.group(1), m.group(2)
            if unit:
                if unit.lower() not in LENGTH_UNITS and unit not in LENGTH_UNITS:
                    raise InputError(f"{name}: unknown unit {unit!r} (use nm, um or mm; default micrometres)")
                factor = LENGTH_UNITS.get(unit, LENGTH_UNITS.get(unit.lower(), 1.0))
        values = _floats(name)(v)
        if len(values) not in (1, 2, 3) or any(not (math.isfinite(x) and x > 0) for x in values):
            raise InputError(f"{name} takes [Z,]Y,X: 1 to 3 sizes > 0 (micrometres unless a unit is given), got {v!r}")
        values = values * 2 if len(values) == 1 else values
        return [round(x * factor, 12) for x in values]

    return conv


def _axes_option(v: Any) -> str:
    """``tyx``, ``zyx``, ``tczyx``...: the letters t, c, z, y, x, each at most once, with y and x."""
    text = "".join(str(v).split()).lower()
    if not text or any(a not in "tczyx" for a in text) or len(set(text)) != len(text):
        raise InputError(f"axes must be letters of tczyx, each at most once (e.g. tyx or zyx), got {v!r}")
    if "y" not in text or "x" not in text:
        raise InputError(f"axes {text} lack y and x: an image needs both")
    return text


def _offset(v: Any) -> float | str:
    """A camera offset in counts (>= 0), or ``auto``."""
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    value = _float("offset")(v)
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"offset must be a number of counts >= 0 or auto, got {v!r}")
    return value


# --------------------------------------------------------------------------- range checks


def _integer_range(lo: int, hi: int | None = None) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo or (hi is not None and v > hi):
            allowed = f"an integer >= {lo}" if hi is None else f"one of {lo}-{hi}"
            raise InputError(f"{name} must be {allowed}, got {v!r}")

    return check


def _number_range(positive: bool) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        try:
            ok = math.isfinite(float(v)) and (float(v) > 0 if positive else float(v) >= 0)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise InputError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")

    return check


def _skew_angle(name: str, v: Any) -> None:
    if v is not None and not (math.isfinite(v) and abs(v) < 90):  # 0: not skewed, whatever the metadata say
        raise InputError(f"{name} must be between -90 and 90 degrees (0: not skewed), got {v!r}")


def _open_unit(name: str, v: Any) -> None:
    """A check: a number strictly between 0 and 1."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 < float(v) < 1:
        raise InputError(f"{name} must be a number between 0 and 1 (exclusive), got {v!r}")


def _open_unit_closed(name: str, v: Any) -> None:
    """A check: a number above 0 and at most 1."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 < float(v) <= 1:
        raise InputError(f"{name} must be a number above 0 and at most 1, got {v!r}")


PSF_MODELS = ("gaussian", "widefield", "confocal", "lightsheet")
DEFAULT_REFRACTIVE_INDEX = 1.33
"""The immersion medium's refractive index when ``refractive_index`` is not given (water)."""
"""The values of ``psf_model``: a Gaussian of ``fwhm`` or a PSF computed from the optics."""


def _wavelength(v: Any) -> float | dict[int, float]:
    """One wavelength, or ``{channel: wavelength}`` from ``0=0.52 1=0.61``."""
    value = parse_psf_size("wavelength")(v)
    items = value.items() if isinstance(value, dict) else [(None, value)]
    out: dict[Any, float] = {}
    for c, values in items:
        if len(values) != 1 or not (math.isfinite(values[0]) and values[0] > 0):
            where = f" for channel {c}" if c is not None else ""
            raise InputError(f"wavelength takes one number > 0{where}, got {values}")
        out[c] = values[0]
    if None in out:
        return out[None]
    return {int(c): w for c, w in out.items()}


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Parameter:
    """One parameter: the facts every layer (API, CLI, config files, submit) takes from here.

    ``convert`` turns a command-line or config-file value into the typed value;
    ``check`` (when given) accepts or refuses a typed value, so the API and the
    CLI apply one rule. ``help`` may name ``{default}``.
    """

    name: str
    default: Any
    convert: Callable[[Any], Any]
    help: str
    group: str  # "psf", "input", "method", "selection", "output", "general", "cluster", "security" (submit's cluster)
    metavar: str | None = None
    check: Callable[[str, Any], None] | None = None
    method: bool = False  # a keyword of sparse_deconvolve / deconvolve's method parameters
    commands: tuple[str, ...] = ("run", "info", "submit")
    form: str = "value"  # "value", "values" (several tokens), "switch" (store_true), "tristate" (--x/--no-x)
    explicit: bool = False  # submit states it even at its default (the image's defaults may differ)
    short: str | None = None  # a one-letter flag beside the long one, e.g. "-v"

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--sparse-iters``."""
        return "--" + self.name.replace("_", "-")

    @property
    def cluster(self) -> bool:
        """A Dask cluster option of ``run``/``demo``, or of the cluster ``submit`` makes (not part of a
        run's parameters)."""
        return self.group in ("cluster", "security")

    def parse(self, value: Any) -> Any:
        """A command-line or config-file value, converted and checked."""
        typed = self.convert(value)
        if self.check is not None:
            self.check(self.name, typed)
        return typed

    def help_text(self) -> str:
        return self.help.format(default=self.default)


_RUN = ("run", "info", "submit")
_CONNECT = ("run", "submit")  # options of commands that talk to a cluster
_LOCAL = ("run", "demo")  # cluster options: a local cluster or a running scheduler
_SUGGEST = (*_RUN, "suggest")  # the PSF and the channels: what `bigdecon suggest` measures with

PARAMETERS: dict[str, Parameter] = {
    p.name: p
    for p in [
        # PSF: one of the three (or deconv_type 0).
        Parameter(
            "fwhm",
            None,
            parse_psf_size("fwhm"),
            "PSF full width at half maximum in input pixels: one value (y and x), "
            "two (y x) or three (z y x: true 3-D deconvolution)",
            "psf",
            "PX",
            method=True,
            form="values",
            commands=_SUGGEST,
        ),
        Parameter(
            "resolution",
            None,
            parse_psf_size("resolution"),
            "PSF FWHM in the physical units of the metadata (e.g. 0.28 for 280 nm "
            "in micrometres); converted to pixels with the pixel size",
            "psf",
            "R",
            method=True,
            form="values",
            commands=_SUGGEST,
        ),
        Parameter(
            "psf",
            None,
            parse_psf_files,
            "measured PSF, 2-D or 3-D (.npy or .tif)",
            "psf",
            "FILE",
            method=True,
            form="values",
            commands=_SUGGEST,
        ),
        # A PSF computed from the optics (bigdecon.solvers.psf) with the metadata's pixel sizes.
        Parameter(
            "psf_model",
            "gaussian",
            _choice("psf_model", PSF_MODELS),
            "PSF from the optics: gaussian (use --fwhm/--resolution/--psf), widefield, confocal or "
            "lightsheet (computed from --na, --wavelength, --refractive-index and the pixel sizes; "
            "default {default}, or widefield when --na and --wavelength are given)",
            "psf",
            "MODEL",
            commands=_SUGGEST,
        ),
        Parameter(
            "na",
            None,
            _float("na"),
            "numerical aperture of the (detection) objective",
            "psf",
            "NA",
            _number_range(positive=True),
            commands=(*_SUGGEST, "psf"),
        ),
        Parameter(
            "wavelength",
            None,
            _wavelength,
            "emission wavelength in vacuum, in the metadata's unit (0.52 for 520 nm in micrometres); "
            "per channel: 0=0.52 1=0.61",
            "psf",
            "WL",
            form="values",
            commands=(*_SUGGEST, "psf"),
        ),
        Parameter(
            "refractive_index",
            None,
            _float("refractive_index"),
            "refractive index of the immersion medium (1.0 air, 1.33 water, 1.518 oil; default "
            f"{DEFAULT_REFRACTIVE_INDEX})",
            "psf",
            "N",
            _number_range(positive=True),
            commands=(*_SUGGEST, "psf"),
        ),
        Parameter(
            "sheet_thickness",
            None,
            _float("sheet_thickness"),
            "lightsheet: FWHM of the illumination sheet along z, in the metadata's unit",
            "psf",
            "T",
            _number_range(positive=True),
            commands=_SUGGEST,
        ),
        Parameter(
            "excitation_wavelength",
            None,
            _float("excitation_wavelength"),
            "confocal: excitation wavelength (default: the emission wavelength)",
            "psf",
            "WL",
            _number_range(positive=True),
            commands=_SUGGEST,
        ),
        Parameter(
            "psf_voxel_size",
            None,
            parse_voxel_size("psf_voxel_size"),
            "voxel size of the --psf file, [Z,]Y,X in micrometres (or with a unit: 100,65,65nm); "
            "default: its metadata, else the data's",
            "psf",
            "[Z,]Y,X",
            commands=(*_SUGGEST, "psf"),
        ),
        Parameter(
            "psf_as_is",
            False,
            _flag("psf_as_is"),
            "use the --psf file as it is: no pedestal or hot-pixel removal, centring, resampling to the "
            "data's voxel size or cropping (for a PSF prepared elsewhere; it is still normalised to sum 1)",
            "psf",
            commands=_SUGGEST,
            form="switch",
        ),
        Parameter(
            "psf_energy",
            0.99,
            _float("psf_energy"),
            "fraction of the PSF's light its box keeps: a --psf file and the optical models are cropped "
            "to the smallest centred box that holds it ({default:g}: 1 %% of the light, below the shot noise "
            "of most images, for a box several times smaller)",
            "psf",
            "E",
            _open_unit_closed,
            commands=(*_SUGGEST, "psf"),
        ),
        # What the input's metadata lacks or gets wrong.
        Parameter(
            "voxel_size",
            None,
            parse_voxel_size("voxel_size"),
            "voxel size of the input, [Z,]Y,X in micrometres (or with a unit: 300,100,100nm); overrides "
            "the metadata (needed by --resolution and --na/--wavelength)",
            "input",
            "[Z,]Y,X",
            commands=(*_SUGGEST, "psf"),
        ),
        Parameter(
            "axes",
            None,
            _axes_option,
            "the input's axes, e.g. tyx for a time-lapse TIFF that would be read as a z stack, or tczyx "
            "(default: from the metadata; a bare TIFF's leading axis is z)",
            "input",
            "AXES",
            commands=_SUGGEST,
        ),
        Parameter(
            "offset",
            0.0,
            _offset,
            "camera offset in counts, subtracted from the input before anything else (clipped at 0): "
            "Richardson-Lucy assumes offset-free counts. auto: estimated from the data's dark level "
            "(default {default:g})",
            "input",
            "VALUE|auto",
        ),
        # The published parameters (names and defaults as in the published code).
        Parameter(
            "sparse_iters",
            100,
            _int("sparse_iters"),
            "split-Bregman iterations, 0 = Richardson-Lucy only ({default})",
            "method",
            "N",
            _integer_range(0),
            method=True,
            explicit=True,
        ),
        Parameter(
            "fidelity",
            150.0,
            _float("fidelity"),
            "weight of the data term; higher keeps more of the raw image ({default:g})",
            "method",
            "F",
            _number_range(positive=True),
            method=True,
            explicit=True,
        ),
        Parameter(
            "sparsity",
            10.0,
            _float("sparsity"),
            "weight of the sparsity (L1) prior ({default:g})",
            "method",
            "S",
            _number_range(positive=False),
            method=True,
            explicit=True,
        ),
        Parameter(
            "tcontinuity",
            0.5,
            _float("tcontinuity"),
            "continuity along t or z ({default:g})",
            "method",
            "C",
            _number_range(positive=False),
            method=True,
            explicit=True,
        ),
        Parameter(
            "background",
            1,
            _int("background"),
            "background removal 0-5: 0 none, 1 weak, 2 strong (high SNR), 3/4/5 weak/medium/strong (low SNR) "
            "({default})",
            "method",
            "MODE",
            _integer_range(0, 5),
            method=True,
            explicit=True,
        ),
        Parameter(
            "deconv_iters",
            None,
            _int("deconv_iters"),
            "iterations of the final deconvolution (default: 7 for deconv_type 1 and 2, the published value; "
            "2 for deconv_type 3, which converges in 1-3)",
            "method",
            "N",
            _integer_range(0),
            method=True,
            explicit=True,
        ),
        Parameter(
            "deconv_type",
            1,
            _int("deconv_type"),
            "final deconvolution: 0 none, 1 Richardson-Lucy, 2 Landweber, 3 Richardson-Lucy with the "
            "Wiener-Butterworth back projector (converges in 1-3 iterations; its deconv_iters default is 2) "
            "({default})",
            "method",
            "T",
            _integer_range(0, 3),
            method=True,
            explicit=True,
        ),
        Parameter(
            "wb_alpha",
            0.001,
            _float("wb_alpha"),
            "deconv_type 3: Wiener parameter of the back projector ({default:g})",
            "method",
            "A",
            _number_range(positive=True),
            method=True,
        ),
        Parameter(
            "wb_beta",
            0.1,
            _float("wb_beta"),
            "deconv_type 3: gain of the Butterworth window at the resolution limit, 0 < beta < 1 ({default:g})",
            "method",
            "B",
            _open_unit,
            method=True,
        ),
        Parameter(
            "wb_order",
            20,
            _int("wb_order"),
            "deconv_type 3: order of the Butterworth window ({default})",
            "method",
            "N",
            _integer_range(1),
            method=True,
        ),
        Parameter(
            "up_sample",
            0,
            _int("up_sample"),
            "x2 up-sampling in y/x: 0 none, 1 Fourier, 2 spatial ({default})",
            "method",
            "U",
            _integer_range(0, 2),
            method=True,
            explicit=True,
        ),
        Parameter(
            "auto",
            False,
            _flag("auto"),
            "use the parameters 'bigdecon suggest' recommends for the data (given ones win); "
            "the suggestion is recorded in the output",
            "method",
            commands=("run", "submit"),
            form="switch",
        ),
        Parameter(
            "budget",
            None,
            _budget_text,
            "--auto / suggest: at most N candidates (e.g. 8) or seconds (e.g. 30s) (default: every candidate)",
            "method",
            "N|Ss",
            commands=("run", "submit", "suggest"),
        ),
        # What to process and how to cut it.
        Parameter(
            "channels",
            None,
            _ints("channels"),
            "channels to process, e.g. 0,2 (default all)",
            "selection",
            "LIST",
            commands=_SUGGEST,
        ),
        Parameter(
            "timepoints",
            None,
            _timepoints_text,
            "time points A to B-1, e.g. 0:100, 50: or -10: (negative: from the end; default all)",
            "selection",
            "A:B",
        ),
        Parameter(
            "chunks",
            None,
            _sizes("chunks"),
            "block size of the sparse step, e.g. t=8,y=512,x=512 or 8,512,512",
            "selection",
            "SIZES",
        ),
        Parameter(
            "depth",
            None,
            _depth,
            "overlap (halo) between blocks: one number, y,x, t|z,y,x or t=8,y=16 "
            "(default: measured safe value, see 'bigdecon info')",
            "selection",
            "SIZES",
        ),
        # Skewed light-sheet stacks (stage-scanned LLSM, OPM, diSPIM): bigdecon.solvers.deskew, docs/deskew.md.
        Parameter(
            "skew_angle",
            None,
            _float("skew_angle"),
            "the stack is skewed (stage-scanned lattice light-sheet, OPM): the angle in degrees between the "
            "scan and the light sheet (31.5 on a classic LLSM; negative mirrors); the stage step is the z pixel "
            "size; the output is deskewed, its z step dz*sin(angle) (default: the angle the input's metadata "
            "give, see docs/deskew.md, else not skewed; 0: not skewed)",
            "skew",
            "DEG",
            _skew_angle,
        ),
        Parameter(
            "skew_axis",
            "x",
            _choice("skew_axis", ("x", "y")),
            "the axis the planes move along in a skewed stack ({default})",
            "skew",
            "AXIS",
        ),
        Parameter(
            "psf_frame",
            "sample",
            _choice("psf_frame", ("sample", "skewed")),
            "frame of a 3-D PSF with --skew-angle: sample (measured by objective scan or from the optics, "
            "on the deskewed grid; sheared automatically) or skewed (a stage-scanned bead, used as is) ({default})",
            "skew",
            "FRAME",
        ),
        Parameter(
            "deskew_first",
            False,
            _flag("deskew_first"),
            "with --skew-angle: deskew the raw stack first, then deconvolve it (default: deconvolve the stack "
            "as recorded, with the PSF sheared into its frame, then deskew: fewer voxels, no interpolated input, "
            "higher scores in docs/deskew.md)",
            "skew",
            form="switch",
        ),
        Parameter(
            "skew_fill",
            None,
            _float("skew_fill"),
            "with --skew-angle: the value of the voids a deskew leaves (default: the median of the last "
            "recorded plane of each channel, the camera's offset on raw data, as pycudadecon)",
            "skew",
            "V",
        ),
        Parameter(
            "rotate",
            False,
            _flag("rotate"),
            "with --skew-angle: write the output in the coverslip frame (deskewed and rotated by the angle, "
            "isotropic voxels of the lateral pixel size; bilinear from the recorded stack) instead of the "
            "deskewed frame",
            "skew",
            form="switch",
        ),
        # The output.
        Parameter(
            "output_dtype",
            "float32",
            _output_dtype,
            "{default} (default), float64 or an integer type such as uint16 (clipped to its range)",
            "output",
            "DTYPE",
            explicit=True,
        ),
        Parameter(
            "ngff_version",
            "0.5",
            _choice("ngff_version", ("0.4", "0.5")),
            "OME-Zarr version of the output: 0.4 or 0.5 ({default})",
            "output",
            "V",
            explicit=True,
        ),
        Parameter("resume", False, _flag("resume"), "continue an interrupted run", "output", form="switch"),
        Parameter("overwrite", False, _flag("overwrite"), "replace an existing output", "output", form="switch"),
        Parameter(
            "work_dir",
            None,
            _text,
            "where the intermediates go (path or URL), e.g. a local disk while OUTPUT is on object storage "
            "(default: inside OUTPUT); removed at the end, and found again by --resume",
            "output",
            "PATH_OR_URL",
            commands=_CONNECT,
        ),
        Parameter(
            "debug",
            False,
            _flag("debug"),
            "show tracebacks and Dask's log messages",
            "general",
            commands=(*_RUN, "demo", "suggest"),
            form="switch",
        ),
        Parameter(
            "print_config",
            False,
            _flag("print_config"),
            "print the resolved configuration (TOML, reusable with --config) before the run; without it "
            "one line names the options that differ from the defaults (the output stores all of them)",
            "general",
            commands=("run",),
            form="switch",
            short="-v",
        ),
        # Not a cluster option: `submit` forwards it to the job that connects.
        Parameter(
            "scheduler_timeout",
            10.0,
            _seconds("scheduler_timeout"),
            "how long to wait for the --scheduler to answer; refused connections are "
            "retried until then (default {default:g}; e.g. 600 for a scheduler still starting)",
            "general",
            "SECONDS",
            commands=_CONNECT,
        ),
        Parameter(
            "device",
            "auto",
            _choice("device", ("auto", "cpu", "gpu")),
            "where workers compute: auto (a worker's GPU when it has one), cpu, or gpu (CuPy) (default {default})",
            "general",
            "{auto,cpu,gpu}",
            commands=_CONNECT,
        ),
        # The Dask cluster of `run` and `demo`.
        Parameter(
            "workers",
            None,
            _int("workers"),
            "worker processes (default: cores / threads per worker)",
            "cluster",
            "N",
            commands=_LOCAL,
        ),
        Parameter(
            "threads_per_worker",
            None,
            _int("threads_per_worker"),
            "threads per worker (default 1)",
            "cluster",
            "N",
            commands=_LOCAL,
        ),
        Parameter(
            "memory_limit",
            None,
            _text,
            "memory per worker, e.g. 8GiB (default: 90%% of RAM / workers)",
            "cluster",
            "SIZE",
            commands=_LOCAL,
        ),
        Parameter(
            "gpus",
            None,
            _tristate("gpus"),
            "--gpus: one worker per NVIDIA GPU (needs dask-cuda and CuPy: pip install 'bigdecon[gpu]'); "
            "--no-gpus: CPU workers computing on the CPU; default: GPUs when both are installed "
            "and a GPU is present",
            "cluster",
            commands=_LOCAL,
            form="tristate",
        ),
        Parameter(
            "scheduler",
            None,
            _text,
            "use a running Dask scheduler, e.g. tcp://host:8786",
            "cluster",
            "ADDRESS",
            commands=_LOCAL,
        ),
        # The cluster `submit` makes (Slurm/PBS/LSF, Kubernetes): its network security.
        Parameter(
            "tls",
            True,
            _flag("tls"),
            "TLS between the job's scheduler, workers and client, with a certificate made for the job "
            "(default); --no-tls: plain TCP, unsafe: anyone who reaches the scheduler's port (on a login "
            "node, every user of the cluster) can run code as you and read your data",
            "security",
            commands=("submit",),
            form="tristate",
        ),
        Parameter(
            "tls_dir",
            "~/.bigdecon/tls",
            _text,
            "Slurm/PBS/LSF: where the job's generated certificate and key are written (mode 0600, in a new "
            "0700 folder, removed at the end); the compute nodes must read it (default {default}: your home)",
            "security",
            "PATH",
            commands=("submit",),
        ),
        Parameter(
            "tls_ca_file",
            None,
            _text,
            "Slurm/PBS/LSF: your own CA certificate instead of a generated one (with --tls-cert and --tls-key; "
            "paths the compute nodes see)",
            "security",
            "PATH",
            commands=("submit",),
        ),
        Parameter("tls_cert", None, _text, "Slurm/PBS/LSF: your certificate", "security", "PATH", commands=("submit",)),
        Parameter("tls_key", None, _text, "Slurm/PBS/LSF: your private key", "security", "PATH", commands=("submit",)),
        Parameter(
            "dashboard_from",
            None,
            _cidrs,
            "Kubernetes: IP ranges admitted to the scheduler's dashboard (port 8787), e.g. 10.0.0.0/8 "
            "(default: none; use kubectl port-forward); the scheduler's comm port admits only the job's own pods",
            "security",
            "CIDR[,CIDR...]",
            commands=("submit",),
        ),
        Parameter(
            "dashboard_address",
            None,
            _text,
            "dashboard of the local cluster (default 127.0.0.1:8787: this machine only; "
            "e.g. 0.0.0.0:8787 to let other machines see it)",
            "cluster",
            "ADDR",
            commands=_LOCAL,
        ),
    ]
}
"""Every parameter, in the order the CLI shows and records them."""


def _default(name: str) -> Any:
    return PARAMETERS[name].default


DECONV_ITERS_BY_TYPE = {0: 7, 1: 7, 2: 7, 3: 2}
"""The default of ``deconv_iters`` for each ``deconv_type`` (``deconv_iters=None``): the published 7
for Richardson-Lucy and Landweber, 2 for the Wiener-Butterworth back projector (type 3), which
reaches in 1-3 iterations what plain RL reaches in 20 and over-sharpens with more."""


def resolve_deconv_iters(deconv_iters: Any, deconv_type: Any) -> Any:
    """``deconv_iters``, or its default for ``deconv_type`` when it is None (7 for a type outside the
    table, which the range check of ``deconv_type`` then names).

    Examples
    --------
    >>> resolve_deconv_iters(None, 1), resolve_deconv_iters(None, 3), resolve_deconv_iters(5, 3)
    (7, 2, 5)
    """
    if deconv_iters is not None:
        return deconv_iters
    return DECONV_ITERS_BY_TYPE.get(int(deconv_type), 7) if isinstance(deconv_type, (int, np.integer)) else 7


# --------------------------------------------------------------------------- the method's parameters


@dataclass(frozen=True)
class Params:
    """The published parameters (names and defaults as in the published code; see :data:`PARAMETERS`).

    ``fwhm`` is the PSF full width at half maximum in input pixels: one number
    (y and x), two (y, x) or three (z, y, x; true 3-D deconvolution).
    """

    fwhm: tuple[float, ...] | None = None
    sparse_iters: int = _default("sparse_iters")
    fidelity: float = _default("fidelity")
    sparsity: float = _default("sparsity")
    tcontinuity: float = _default("tcontinuity")
    background: int = _default("background")
    # None: the default for deconv_type (DECONV_ITERS_BY_TYPE), resolved on construction.
    deconv_iters: int = _default("deconv_iters")
    deconv_type: int = _default("deconv_type")
    up_sample: int = _default("up_sample")
    wb_alpha: float = _default("wb_alpha")
    wb_beta: float = _default("wb_beta")
    wb_order: int = _default("wb_order")
    psf: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Frozen: set the resolved value once, so every layer (and the recorded attributes) sees a number.
        object.__setattr__(self, "deconv_iters", resolve_deconv_iters(self.deconv_iters, self.deconv_type))

    @classmethod
    def from_kwargs(cls, fwhm: Any = None, psf: Any = None, **kwargs: Any) -> Params:
        """Build and validate; every problem is an :class:`InputError` naming the parameter."""
        unknown = set(kwargs) - {f for f in cls.__dataclass_fields__ if f not in ("fwhm", "psf")}
        if unknown:
            raise InputError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        if fwhm is not None and psf is not None:
            raise InputError("give either fwhm (a Gaussian PSF's size) or psf (a measured PSF), not both")
        if fwhm is not None:
            fwhm = check_psf_size("fwhm", fwhm)
        p = cls(fwhm=fwhm, psf=psf, **kwargs)
        p._check()
        return p

    def _check(self) -> None:
        for name in self.__dataclass_fields__:
            check = PARAMETERS[name].check
            if check is not None:
                check(name, getattr(self, name))
        if self.psf is not None:
            psf = np.asarray(self.psf)
            if psf.ndim not in (2, 3):
                raise InputError(f"psf must be a 2-D or 3-D array, got {psf.ndim}-D")
            if not np.all(np.isfinite(psf)) or psf.min() < 0 or psf.sum() <= 0:
                raise InputError("psf must be finite, non-negative and not all zero")
        if self.deconv_type and self.deconv_iters and self.fwhm is None and self.psf is None:
            raise InputError(
                "fwhm (PSF size in pixels) or psf is required for deconv_type 1, 2 or 3 (or set deconv_type=0)"
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
