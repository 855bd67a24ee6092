"""The ``bigdecon`` command line: ``run``, ``info``, ``demo`` (and ``submit``/``status``/``logs``).

Every option of ``bigdecon run`` can also come from a ``--config`` file (TOML or
YAML, keys are the option names with underscores); options on the command line
win over the file. The resolved configuration is printed at the start (as TOML,
so it can be saved and reused) and stored with the output.

Exit codes: 0 success; 2 bad usage or bad input (one line on stderr naming the
problem); 1 a failure while processing (one line; ``--debug`` adds the traceback);
130 interrupted (Ctrl-C; continue with ``--resume``); 141 stdout closed early
(``bigdecon info X | head -1``), quietly.

Values of ``--fwhm``, ``--resolution`` and ``--psf`` are separated by spaces or
commas and stop at the first token that is not one (so ``--fwhm 3 IN OUT``
works); ``C=VALUES`` tokens give one channel's value (``--fwhm 0=3 1=4.2,4.2``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import __version__
from .errors import BigdeconError, InputError

__all__ = ["main", "build_parser", "add_run_options", "run_argv_from_args", "resolve_options", "load_config"]

PROG = "bigdecon"


# --------------------------------------------------------------------------- option table


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _int(name: str) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool):
            raise InputError(f"{name} must be an integer, got {v!r}")
        if isinstance(v, int):
            return v
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


_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)"


def _span(v: Any) -> str:
    """Time points ``'a:b'``: a to b-1; either end may be left out, negative ends count from the last."""
    if isinstance(v, (list, tuple)) and len(v) == 2:
        v = f"{'' if v[0] is None else v[0]}:{'' if v[1] is None else v[1]}"
    text = "".join(str(v).split())
    m = re.fullmatch(r"(-?\d+)?:(-?\d+)?", text)
    if not m:
        raise InputError(f"timepoints must look like A:B (time points A to B-1, e.g. 0:10, 5: or -10:), got {v!r}")
    a, b = (int(x) if x is not None else None for x in m.groups())
    if a is not None and b is not None and (a < 0) == (b < 0) and a >= b:
        raise InputError(f"timepoints {text} select nothing (empty or reversed range: A:B is A to B-1)")
    return text


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


def _positive(name: str) -> Callable[[Any], float]:
    one = _float(name)

    def conv(v: Any) -> float:
        value = one(v)
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"{name} must be a number of seconds > 0, got {v!r}")
        return value

    return conv


def _text(v: Any) -> str:
    return str(v)


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


def _psf_size(name: str) -> Callable[[Any], Any]:
    """``3``, ``2,3,3``, ``2 3 3`` -> a list; ``0=3 1=4.2,4.2`` or a dict -> {channel: list}."""
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


def _psf_files(v: Any) -> Any:
    """``a.tif`` -> the path; ``0=a.tif 1=b.npy`` or a dict -> {channel: path}."""
    if isinstance(v, dict):
        if not v:
            raise InputError("psf per channel needs at least one channel")
        return {_channel_key("psf", k): str(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    items = list(v) if isinstance(v, (list, tuple)) else [v]
    items = [str(i) for i in items]
    keyed = [i for i in items if re.match(r"\s*\d+\s*=", i)]
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
        out[c] = path
    return dict(sorted(out.items()))


def _dtype(v: Any) -> str:
    import numpy as np

    try:
        dtype = np.dtype(str(v).strip())
    except TypeError:
        raise InputError(f"output_dtype {v!r} is not a NumPy dtype (use float32, uint16, ...)") from None
    if not (dtype in (np.float32, np.float64) or np.issubdtype(dtype, np.integer)):
        raise InputError(f"output_dtype must be float32, float64 or an integer type such as uint16, got {dtype}")
    return str(dtype)


def _tristate(name: str) -> Callable[[Any], bool | None]:
    flag = _flag(name)

    def conv(v: Any) -> bool | None:
        if isinstance(v, str) and v.strip().lower() == "auto":
            return None
        return flag(v)

    return conv


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


@dataclass(frozen=True)
class Option:
    """One ``bigdecon run`` option: its key, default and converter (shared by CLI and config files)."""

    key: str
    default: Any
    convert: Callable[[Any], Any]
    cluster: bool = False  # cluster options are not part of the run's parameters

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")


OPTIONS: dict[str, Option] = {
    o.key: o
    for o in [
        Option("fwhm", None, _psf_size("fwhm")),
        Option("resolution", None, _psf_size("resolution")),
        Option("psf", None, _psf_files),
        Option("sparse_iters", 100, _int("sparse_iters")),
        Option("fidelity", 150.0, _float("fidelity")),
        Option("sparsity", 10.0, _float("sparsity")),
        Option("tcontinuity", 0.5, _float("tcontinuity")),
        Option("background", 1, _int("background")),
        Option("deconv_iters", 7, _int("deconv_iters")),
        Option("deconv_type", 1, _int("deconv_type")),
        Option("up_sample", 0, _int("up_sample")),
        Option("channels", None, _ints("channels")),
        Option("timepoints", None, _span),
        Option("chunks", None, _sizes("chunks")),
        Option("depth", None, _depth),
        Option("output_dtype", "float32", _dtype),
        Option("ngff_version", "0.5", _choice("ngff_version", ("0.4", "0.5"))),
        Option("resume", False, _flag("resume")),
        Option("overwrite", False, _flag("overwrite")),
        Option("debug", False, _flag("debug")),
        # Not a cluster option: `submit` forwards it to the job that connects.
        Option("scheduler_timeout", 10.0, _positive("scheduler_timeout")),
        Option("device", "auto", _choice("device", ("auto", "cpu", "gpu"))),
        Option("workers", None, _int("workers"), cluster=True),
        Option("threads_per_worker", None, _int("threads_per_worker"), cluster=True),
        Option("memory_limit", None, _text, cluster=True),
        Option("gpus", None, _tristate("gpus"), cluster=True),
        Option("scheduler", None, _text, cluster=True),
        Option("dashboard_address", None, _text, cluster=True),
    ]
}

# Keyword arguments of bigdecon.deconvolve / plan that come straight from options.
_PIPELINE_KEYS = (
    "fwhm",
    "resolution",
    "sparse_iters",
    "fidelity",
    "sparsity",
    "tcontinuity",
    "background",
    "deconv_iters",
    "deconv_type",
    "up_sample",
    "channels",
    "timepoints",
    "chunks",
    "depth",
)
_WRITE_KEYS = ("output_dtype", "ngff_version", "resume", "overwrite")
_PSF_KEYS = ("fwhm", "resolution", "psf")


# --------------------------------------------------------------------------- parser


# Options whose values argparse must not take greedily or mistake for options.
# ``--fwhm 3 IN OUT``: after the first value, --fwhm/--resolution take only
# further tokens that are numbers or C=VALUES, and --psf only C=FILE tokens,
# so INPUT and OUTPUT stay positional; ``--timepoints -2:`` is a value.
_VALUE_OPTIONS = {"--fwhm": "numbers", "--resolution": "numbers", "--psf": "files", "--timepoints": "span"}


def _more_values(token: str, kind: str) -> bool:
    if re.fullmatch(r"\d+=.*", token):
        return kind in ("numbers", "files")
    if kind == "numbers":
        return all(
            re.fullmatch(_NUMBER, piece.strip(), re.IGNORECASE) for piece in token.split(",") if piece.strip()
        ) and bool(token.strip(", "))
    return False


def split_values(argv: Sequence[str]) -> list[str]:
    """``--fwhm 2 3 3 IN OUT`` -> ``--fwhm=2 --fwhm=3 --fwhm=3 IN OUT`` (see :data:`_VALUE_OPTIONS`)."""
    argv = list(argv)
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out.extend(argv[i:])
            break
        kind = _VALUE_OPTIONS.get(token)
        if kind is None or i + 1 >= len(argv) or (argv[i + 1].startswith("--") and kind != "span"):
            out.append(token)
            i += 1
            continue
        out.append(f"{token}={argv[i + 1]}")
        i += 2
        while kind != "span" and i < len(argv) and _more_values(argv[i], kind):
            out.append(f"{token}={argv[i]}")
            i += 1
    return out


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other bigdecon error, and :func:`split_values`."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {_one_line(message)} (see '{self.prog} --help')\n")

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(split_values(args), namespace)


def add_run_options(parser: argparse.ArgumentParser, *, connect: bool = True) -> None:
    """Add every ``bigdecon run`` processing option (not the cluster ones) to ``parser``.

    Values are kept as given (``None`` when absent) so that a ``--config`` file
    can fill in what the command line leaves out; :func:`resolve_options`
    converts and checks them. ``connect=False`` leaves out
    ``--scheduler-timeout`` (for commands that start no cluster).
    """
    psf = parser.add_argument_group(
        "PSF (give one of --fwhm, --resolution, --psf)",
        "Values are separated by spaces or commas (--fwhm 2 3 3 or --fwhm 2,3,3; INPUT and OUTPUT may "
        "follow). Per channel, give C=VALUES with the input's channel numbers: --fwhm 0=3 1=4.2,4.2, "
        "--psf 0=a.tif 1=b.npy (every processed channel needs one).",
    )
    psf.add_argument(
        "--fwhm",
        nargs="+",
        action="extend",
        metavar="PX",
        help="PSF full width at half maximum in input pixels: one value (y and x), "
        "two (y x) or three (z y x: true 3-D deconvolution)",
    )
    psf.add_argument(
        "--resolution",
        nargs="+",
        action="extend",
        metavar="R",
        help="PSF FWHM in the physical units of the metadata (e.g. 0.28 for 280 nm "
        "in micrometres); converted to pixels with the pixel size",
    )
    psf.add_argument(
        "--psf", nargs="+", action="extend", metavar="FILE", help="measured PSF, 2-D or 3-D (.npy or .tif)"
    )

    sp = parser.add_argument_group("sparse deconvolution (Zhao et al. 2022; published names and defaults)")
    sp.add_argument("--sparse-iters", metavar="N", help="split-Bregman iterations, 0 = Richardson-Lucy only (100)")
    sp.add_argument("--fidelity", metavar="F", help="weight of the data term; higher keeps more of the raw image (150)")
    sp.add_argument("--sparsity", metavar="S", help="weight of the sparsity (L1) prior (10)")
    sp.add_argument("--tcontinuity", metavar="C", help="continuity along t or z (0.5)")
    sp.add_argument(
        "--background",
        metavar="MODE",
        help="background removal 0-5: 0 none, 1 weak, 2 strong (high SNR), 3/4/5 weak/medium/strong (low SNR) (1)",
    )
    sp.add_argument("--deconv-iters", metavar="N", help="iterations of the final deconvolution (7)")
    sp.add_argument(
        "--deconv-type", metavar="T", help="final deconvolution: 0 none, 1 Richardson-Lucy, 2 Landweber (1)"
    )
    sp.add_argument("--up-sample", metavar="U", help="x2 up-sampling in y/x: 0 none, 1 Fourier, 2 spatial (0)")

    sel = parser.add_argument_group("data selection and chunking")
    sel.add_argument("--channels", metavar="LIST", help="channels to process, e.g. 0,2 (default all)")
    sel.add_argument(
        "--timepoints",
        metavar="A:B",
        help="time points A to B-1, e.g. 0:100, 50: or -10: (negative: from the end; default all)",
    )
    sel.add_argument(
        "--chunks", metavar="SIZES", help="block size of the sparse step, e.g. t=8,y=512,x=512 or 8,512,512"
    )
    sel.add_argument(
        "--depth",
        metavar="SIZES",
        help="overlap (halo) between blocks: one number, y,x, t|z,y,x or t=8,y=16 "
        "(default: measured safe value, see 'bigdecon info')",
    )

    out = parser.add_argument_group("output")
    out.add_argument(
        "--output-dtype",
        metavar="DTYPE",
        help="float32 (default), float64 or an integer type such as uint16 (clipped to its range)",
    )
    out.add_argument("--ngff-version", metavar="V", help="OME-Zarr version of the output: 0.4 or 0.5 (0.5)")
    out.add_argument("--resume", action="store_true", default=None, help="continue an interrupted run")
    out.add_argument("--overwrite", action="store_true", default=None, help="replace an existing output")

    gen = parser.add_argument_group("general")
    gen.add_argument(
        "--config",
        metavar="FILE",
        help="TOML or YAML file of options (keys as above with underscores, "
        "e.g. sparse_iters = 50); command-line options win",
    )
    gen.add_argument("--debug", action="store_true", default=None, help="show tracebacks and Dask's log messages")
    if connect:
        gen.add_argument(
            "--device",
            metavar="{auto,cpu,gpu}",
            help="where workers compute: auto (a worker's GPU when it has one), cpu, or gpu (CuPy) (default auto)",
        )
        gen.add_argument(
            "--scheduler-timeout",
            metavar="SECONDS",
            help="how long to wait for the --scheduler to answer; refused connections are "
            "retried until then (default 10; e.g. 600 for a scheduler still starting)",
        )


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Dask cluster (default: a local cluster sized to this machine)")
    g.add_argument("--workers", metavar="N", help="worker processes (default: cores / threads per worker)")
    g.add_argument("--threads-per-worker", metavar="N", help="threads per worker (default 1)")
    g.add_argument(
        "--memory-limit", metavar="SIZE", help="memory per worker, e.g. 8GiB (default: 90%% of RAM / workers)"
    )
    g.add_argument(
        "--gpus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--gpus: one worker per NVIDIA GPU (needs dask-cuda and CuPy: pip install 'bigdecon[gpu]'); "
        "--no-gpus: CPU workers computing on the CPU; default: GPUs when both are installed "
        "and a GPU is present",
    )
    g.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. tcp://host:8786")
    g.add_argument("--dashboard-address", metavar="ADDR", help="dashboard of the local cluster (default :8787)")


def build_parser() -> argparse.ArgumentParser:
    """The full ``bigdecon`` parser."""
    parser = _Parser(
        prog=PROG,
        description="Sparse deconvolution (Zhao et al. 2022) and Richardson-Lucy for OME-Zarr data "
        "larger than memory, on Dask.",
        epilog="Start with 'bigdecon demo demo-output'. Help on a command: bigdecon COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=f"bigdecon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser(
        "run",
        help="deconvolve an OME-Zarr or TIFF into a new OME-Zarr",
        description="Deconvolve INPUT (OME-Zarr, local or URL, or TIFF) into the OME-Zarr OUTPUT.",
        epilog="Example: bigdecon run cells.ome.zarr cells-decon.ome.zarr --fwhm 3",
    )
    run.add_argument("input", metavar="INPUT", help="OME-Zarr (path or URL such as s3://...) or TIFF")
    run.add_argument("output", metavar="OUTPUT", help="OME-Zarr to create (path or URL)")
    add_run_options(run)
    _add_cluster_options(run)
    run.set_defaults(func=_cmd_run)

    info = sub.add_parser(
        "info",
        help="describe an image and what a run on it would do",
        description="Show axes, shape, dtype, chunks, pixel sizes, channels and NGFF version of PATH, "
        "and the plan of a run with the given options (overlap, tasks, memory per task).",
    )
    info.add_argument("path", metavar="PATH", help="OME-Zarr or TIFF")
    add_run_options(info, connect=False)
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser(
        "demo",
        help="make synthetic data, deconvolve it and show the result",
        description="Write a synthetic time-lapse and volume with known ground truth to OUTPUT_DIR, "
        "deconvolve them (Richardson-Lucy only and sparse), report PSNR against the truth "
        "and save a side-by-side PNG. Takes about a minute.",
    )
    demo.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder for the demo's files")
    _add_cluster_options(demo)
    demo.add_argument("--debug", action="store_true", default=None, help="show tracebacks and Dask's log messages")
    demo.set_defaults(func=_cmd_demo)

    try:  # Kubernetes / HPC submission is optional: `run` must work without its deps.
        from .k8s import add_submit_parser
    except Exception:  # noqa: BLE001 - any import failure just hides those commands
        pass
    else:
        add_submit_parser(sub, add_run_options)
    return parser


# --------------------------------------------------------------------------- configuration


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file of run options; other names: either.

    Raises
    ------
    InputError
        Missing or unreadable file, a syntax error, or a top level that is not a table.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"config file not found: {path}")
    import tomllib

    import yaml

    lower = path.lower()
    kinds = ["toml"] if lower.endswith(".toml") else ["yaml"] if lower.endswith((".yaml", ".yml")) else ["toml", "yaml"]
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    data: Any = None
    for i, kind in enumerate(kinds):
        try:
            data = tomllib.loads(raw.decode("utf-8")) if kind == "toml" else yaml.safe_load(raw)
            break
        except Exception as exc:  # noqa: BLE001 - TOML/YAML syntax errors of any kind
            if i == len(kinds) - 1:
                what = f" as {kind.upper()}" if len(kinds) == 1 else " as TOML or YAML"
                raise InputError(f"cannot parse config file {path}{what}: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        hint = " (TOML needs a .toml name)" if " = " in raw.decode("utf-8", "replace") and kinds == ["yaml"] else ""
        raise InputError(
            f"config file {path} must hold options as key = value (TOML) or key: value (YAML), "
            f"got a {type(data).__name__}{hint}"
        )
    return data


def resolve_options(args: argparse.Namespace, *, cluster: bool = True) -> dict[str, Any]:
    """Command-line options over ``--config`` file values over defaults, converted and checked.

    Parameters
    ----------
    args
        Parsed arguments (options absent from the command line are ``None``).
    cluster
        Include the cluster options (``workers``, ``scheduler``...).

    Returns
    -------
    dict
        One entry per option key, in the order of :data:`OPTIONS`.
    """
    config_path = getattr(args, "config", None)
    from_file: dict[str, Any] = {}
    if config_path:
        raw = load_config(config_path)
        from_file = {str(k).replace("-", "_"): v for k, v in raw.items()}
        # INPUT and OUTPUT are always given on the command line; a configuration
        # saved from a run's output (which records them) is still a valid file.
        from_file = {k: v for k, v in from_file.items() if k not in ("input", "output")}
        unknown = sorted(set(from_file) - set(OPTIONS))
        if unknown:
            raise InputError(f"config file {config_path}: unknown option(s) {', '.join(unknown)}")
    resolved: dict[str, Any] = {}
    for key, opt in OPTIONS.items():
        if opt.cluster and not cluster:
            continue
        value = getattr(args, key, None)
        where = ""
        if value is None and key in from_file:
            value, where = from_file[key], f"config file {config_path}: "
        if value is None:
            resolved[key] = opt.default
            continue
        try:
            resolved[key] = opt.convert(value)
        except InputError as exc:
            raise InputError(where + str(exc)) from None
    return resolved


def _fmt_number(v: Any) -> str:
    if isinstance(v, float) and v.is_integer() and math.isfinite(v):
        return str(int(v))
    return str(v)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v) if isinstance(v, float) and math.isfinite(v) else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    text = str(v).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def format_config(resolved: dict[str, Any]) -> str:
    """The resolved options as TOML (unset ones commented out), ready to reuse with ``--config``."""
    lines = []
    for key, value in resolved.items():
        if key in ("input", "output"):
            lines.append(f"# {key} = {_toml_value(value)}")
        elif value is None:
            lines.append(f"# {key} = (not set)")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines)


def run_argv_from_args(args: argparse.Namespace) -> list[str]:
    """The run options of ``args`` (``--config`` file applied) as ``bigdecon run`` arguments.

    Only options that differ from their defaults are written, so the command
    stays short; INPUT/OUTPUT and the cluster options (``--workers``,
    ``--scheduler``...) are left out, and a ``--config`` file is expanded
    into options (the workers that run the command may not see the file).
    """
    resolved = resolve_options(args, cluster=False)
    argv: list[str] = []
    for key, value in resolved.items():
        opt = OPTIONS[key]
        if value is None or value == opt.default:
            continue
        if isinstance(value, bool):
            if value:
                argv.append(opt.flag)
            continue
        argv.append(opt.flag)
        if key in _PSF_KEYS and isinstance(value, dict):
            # Per channel: --fwhm 0=3 1=4.2,4.2 / --psf 0=a.tif 1=b.npy
            argv.extend(
                f"{c}={','.join(_fmt_number(x) for x in v) if isinstance(v, list) else v}" for c, v in value.items()
            )
        elif key in ("fwhm", "resolution"):
            argv.extend(_fmt_number(v) for v in value)
        elif isinstance(value, dict):
            argv.append(",".join(f"{k}={v}" for k, v in value.items()))
        elif isinstance(value, list):
            argv.append(",".join(str(v) for v in value))
        else:
            argv.append(_fmt_number(value))
    return argv


def _load_psf(path: str) -> Any:
    import io

    import numpy as np

    lower = path.lower()
    if not lower.endswith((".npy", ".tif", ".tiff")):
        raise InputError(f"PSF file must be .npy or .tif, got {path}")
    try:
        if _is_url(path):  # e.g. s3://bucket/psf.tif, beside the data a cluster reads
            import fsspec

            with fsspec.open(path, "rb") as fh:
                raw: Any = io.BytesIO(fh.read())
        elif os.path.isfile(path):
            raw = path
        else:
            raise InputError(f"PSF file not found: {path}")
        if lower.endswith(".npy"):
            psf = np.load(raw, allow_pickle=False)
        else:
            import tifffile

            psf = tifffile.imread(raw)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(f"cannot read PSF file {path}: {_one_line(exc)}") from None
    psf = np.squeeze(np.asarray(psf))
    if psf.dtype.kind not in "iuf":
        raise InputError(f"PSF file {path} must hold real numbers, got dtype {psf.dtype}")
    if psf.ndim not in (2, 3):
        raise InputError(f"PSF file {path} must hold a 2-D or 3-D PSF, got shape {psf.shape}")
    psf = psf.astype(np.float32)
    if not np.isfinite(psf).all():
        raise InputError(f"PSF file {path} contains NaN or infinite values")
    return psf


def _pipeline_kwargs(resolved: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: resolved[k] for k in _PIPELINE_KEYS if resolved.get(k) is not None}
    given = [k for k in _PSF_KEYS if resolved.get(k) is not None]
    if len(given) > 1:
        raise InputError(f"give one of --fwhm, --resolution or --psf, not {' and '.join('--' + k for k in given)}")
    psf = resolved.get("psf")
    if psf:
        kwargs["psf"] = {c: _load_psf(f) for c, f in psf.items()} if isinstance(psf, dict) else _load_psf(psf)
    deconvolves = kwargs.get("deconv_type", 1) and kwargs.get("deconv_iters", 7)
    if deconvolves and not any(k in kwargs for k in _PSF_KEYS):
        raise InputError(
            "give the PSF size: --fwhm PIXELS, --resolution in physical units, or --psf FILE "
            "(or --deconv-type 0 to skip the final deconvolution)"
        )
    return kwargs


# --------------------------------------------------------------------------- checks


def _is_url(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _check_output(input_path: str, output: str, resolved: dict[str, Any]) -> None:
    """Cheap checks of OUTPUT before a cluster starts (the writer repeats them)."""
    from .io import check_output_path

    check_output_path(input_path, output)
    if _is_url(output):
        return
    local = os.path.abspath(os.path.expanduser(output[len("file://") :] if output.startswith("file://") else output))
    if os.path.lexists(local) and not (resolved["resume"] or resolved["overwrite"]):
        if not os.path.isdir(local) or os.listdir(local):
            raise InputError(f"output exists: {local} (use --overwrite to replace it or --resume to continue it)")
    _check_writable(local, "output")


def _check_writable(local: str, what: str) -> None:
    """Whether the folder ``local`` can be created or written: a real attempt, so root sees /proc's limits too."""
    import tempfile

    parent = local
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise InputError(f"cannot write {what}: {local} ({parent} is a file, not a folder)")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".bigdecon-write-check-", dir=parent))
    except OSError as exc:
        raise InputError(
            f"cannot write {what}: {local} (cannot create folders in {parent}: {exc.strerror or type(exc).__name__})"
        ) from None


# --------------------------------------------------------------------------- commands


def _print(*lines: str) -> None:
    for line in lines:
        print(line, flush=True)


def _quiet_dask(args: argparse.Namespace, debug: bool) -> None:
    """Keep Dask's own log lines and warnings off the terminal unless --debug."""
    args.debug = debug  # a --config file can turn it on too: main() reads it on errors
    if debug:
        return
    for name in ("distributed", "dask", "bokeh", "tornado"):
        # Failures reach the user once, as the one-line error main() prints.
        logging.getLogger(name).setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore")


def _client_for(resolved: dict[str, Any], task_memory: int | None = None, *, gpus: bool = False) -> tuple[Any, Any]:
    from .cluster import SCHEDULER_TIMEOUT, make_client

    return make_client(
        workers=resolved["workers"],
        threads_per_worker=resolved["threads_per_worker"],
        memory_limit=resolved["memory_limit"],
        gpus=gpus,
        scheduler=resolved["scheduler"],
        dashboard_address=resolved["dashboard_address"],
        task_memory=task_memory,
        scheduler_timeout=resolved.get("scheduler_timeout") or SCHEDULER_TIMEOUT,
        log_level=logging.WARNING if resolved.get("debug") else logging.CRITICAL,
    )


def _sizing(client: Any, resolved: dict[str, Any], output: str, device: str) -> dict[str, Any]:
    """``min_tasks`` and ``task_memory`` of this run, passed to both ``plan`` and ``deconvolve``,
    so that the plan printed before the run (``N tasks``) is the one that runs."""
    from .passes import run_sizing

    return run_sizing(client, output, resume=resolved["resume"], chunks=resolved["chunks"], device=device)


def _check_cheap(resolved: dict[str, Any]) -> None:
    """Checks that need neither the input nor a cluster."""
    if resolved["resume"] and resolved["overwrite"]:
        raise InputError("give --resume (continue the output) or --overwrite (replace it), not both")


def _cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    import bigdecon

    from .cluster import close, describe, expected_threads, peak_worker_memory, worker_choice
    from .progress import ProgressReporter, format_bytes

    resolved = resolve_options(args)
    _quiet_dask(args, resolved["debug"])
    _check_cheap(resolved)
    record = {"input": args.input, "output": args.output, **{k: v for k, v in resolved.items() if k != "debug"}}
    _print(
        f"bigdecon {__version__}: {args.input} -> {args.output}",
        "# configuration (reusable with --config)",
        format_config(record),
        "",
    )
    kwargs = _pipeline_kwargs(resolved)
    # Everything about the input and the output is checked before any cluster starts;
    # the memory estimate assumes the blocks a local cluster of this size would get.
    threads = expected_threads(resolved["workers"], resolved["threads_per_worker"]) if not resolved["scheduler"] else 1
    plan = bigdecon.plan(args.input, **kwargs, min_tasks=2 * threads)
    _check_output(args.input, args.output, resolved)
    gpus, device, note = worker_choice(resolved["gpus"], resolved["device"], resolved["scheduler"])
    _print(
        f"Input {plan['axes']} {_shape(plan['shape'])} {plan['dtype']} -> output "
        f"{_shape(plan['output_shape'])} {resolved['output_dtype']}"
    )
    if note:
        _print(note)

    client, cluster = _client_for(resolved, plan["memory_per_task_bytes"], gpus=gpus)
    reporter = None
    try:
        _print(describe(client, cluster))
        sizing = _sizing(client, resolved, args.output, device)
        plan = bigdecon.plan(args.input, **kwargs, **sizing)
        _print(f"Plan: {plan['n_tasks']} tasks, ~{format_bytes(plan['memory_per_task_bytes'])} per task")
        reporter = ProgressReporter(int(np.prod(plan["shape"])), memory_probe=lambda: _current_memory(client))
        result = bigdecon.deconvolve(
            args.input,
            args.output,
            **kwargs,
            **{k: resolved[k] for k in _WRITE_KEYS},
            client=client,
            progress=reporter,
            config=record,
            device=device,
            **sizing,
        )
        reporter.close()
        _print(*reporter.summary(result, peak_memory=peak_worker_memory(client)))
    finally:
        if reporter is not None:
            reporter.close()
        close(client, cluster)
    return 0


def _current_memory(client: Any) -> int | None:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    values = [int(w.get("metrics", {}).get("memory", 0)) for w in workers]
    return max(values) if values else None


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def _fmt_size(values: Any) -> str:
    """``[3.0, 3.0]`` -> ``'3 x 3'``."""
    return " x ".join(_fmt_number(float(v)) for v in values)


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    import bigdecon

    from .cluster import expected_threads
    from .io import open_image
    from .progress import format_bytes

    resolved = resolve_options(args, cluster=False)
    _quiet_dask(args, resolved["debug"])
    src = open_image(args.path)
    fmt = f"OME-Zarr (NGFF {src.ngff_version})" if src.ngff_version else "TIFF"
    # The chunks on disk (the Dask array may group several into one read).
    stored = [int(c) for c in getattr(src, "stored_chunks", None) or [c[0] for c in src.data.chunks]]
    sizes = []
    for ax in src.axes:
        if ax == "c":
            continue
        unit = src.units.get(ax)
        sizes.append(
            f"{ax} {src.scale.get(ax, 1.0):g} {unit}" if unit else f"{ax} {src.scale.get(ax, 1.0):g} (no unit)"
        )
    _print(
        f"{src.path or args.path}",
        f"  format:      {fmt}",
        f"  axes:        {''.join(src.axes)}",
        f"  shape:       {_shape(src.shape)}  ({', '.join(f'{a}={n}' for a, n in zip(src.axes, src.shape))})",
        f"  dtype:       {src.dtype}",
        f"  chunks:      {_shape(stored)}",
        f"  pixel size:  {', '.join(sizes)}",
        f"  size:        {format_bytes(int(np.prod(src.shape)) * np.dtype(src.dtype).itemsize)}",
    )
    n_channels = src.shape[src.axes.index("c")] if "c" in src.axes else 1
    labels = [str(c.get("label", "")) for c in (src.channels or [])]
    if "c" in src.axes or labels:
        shown = [f"{i} {labels[i]!r}" if i < len(labels) and labels[i] else str(i) for i in range(n_channels)]
        _print(f"  channels:    {', '.join(shown)}")
    made = (src.attrs or {}).get("bigdecon") if isinstance(getattr(src, "attrs", None), dict) else None
    if isinstance(made, dict) and made.get("parameters"):
        params = made["parameters"]
        fwhm = params.get("fwhm")
        what = (
            ", ".join(f"channel {c}: {_fmt_size(v)} px" for c, v in fwhm.items())
            if isinstance(fwhm, dict)
            else f"{_fmt_size(fwhm)} px"
            if fwhm
            else "measured PSF"
            if params.get("psf_shape")
            else "none"
        )
        _print(
            f"  made by:     bigdecon {made.get('version', '?')} (sparse_iters {params.get('sparse_iters')}, "
            f"PSF FWHM {what})"
        )

    kwargs = {k: resolved[k] for k in _PIPELINE_KEYS if resolved.get(k) is not None}
    if any(resolved.get(k) is not None for k in _PSF_KEYS):
        kwargs = _pipeline_kwargs(resolved)
    note = ""
    if not any(k in kwargs for k in _PSF_KEYS) and kwargs.get("deconv_type", 1):
        kwargs["deconv_type"] = 0  # plan without the PSF; say so below
        note = "  (no --fwhm/--resolution/--psf given: planned without the PSF size check)"
    threads = expected_threads(None, None)
    plan = bigdecon.plan(args.path, **kwargs, min_tasks=2 * threads)
    depth = plan.get("depth") or {}
    k_name = next((a for a in ("z", "t") if a in plan["axes"]), None)
    overlap = ", ".join(f"{k_name if n == 'k' else n} {v}" for n, v in depth.items()) or "none (no sparse step)"
    _print(
        "planned run:" + note,
        f"  output shape:     {_shape(plan['output_shape'])} ({plan['axes']}), {resolved['output_dtype']}",
        f"  overlap per axis: {overlap}",
        f"  tasks:            {plan['n_tasks']} (for a local cluster of this machine's {threads} worker "
        f"thread{'s' if threads != 1 else ''}: blocks are split until each thread has two)",
        f"  memory per task:  ~{format_bytes(plan['memory_per_task_bytes'])}",
    )
    fwhm_px = plan.get("fwhm_px") or []
    if any(v is not None for v in fwhm_px) and any(k in kwargs for k in ("fwhm", "resolution")):
        ids = resolved["channels"] or list(range(len(fwhm_px)))
        if len({tuple(v) for v in fwhm_px if v is not None}) <= 1:
            text = f"{_fmt_size(fwhm_px[0])} px"
        else:
            text = "; ".join(f"channel {c}: {_fmt_size(v)} px" for c, v in zip(ids, fwhm_px) if v is not None)
        _print(
            f"  PSF FWHM:         {text}"
            + (" (from --resolution and the pixel size)" if "resolution" in kwargs else "")
        )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .cluster import close, describe, worker_choice
    from .demo import run_demo

    resolved = resolve_options(args)
    _quiet_dask(args, resolved["debug"])
    out = os.path.abspath(os.path.expanduser(args.output_dir))
    if os.path.lexists(out) and not os.path.isdir(out):
        raise InputError(f"cannot write demo output: {out} is a file, not a folder")
    _check_writable(out, "demo output")
    gpus, device, note = worker_choice(resolved["gpus"], "auto", resolved["scheduler"])
    if note:
        _print(note)
    client, cluster = _client_for(resolved, gpus=gpus)
    try:
        _print(describe(client, cluster))
        run_demo(out, client=client, log=_print, device=device)
    finally:
        close(client, cluster)
    return 0


# --------------------------------------------------------------------------- entry point


def _remote_problem(exc: BaseException, args: argparse.Namespace) -> InputError | None:
    """Object-store failures (no credentials, a missing fsspec backend, access denied) as bad input."""
    urls = [str(getattr(args, k)) for k in ("input", "path", "output") if "://" in str(getattr(args, k, "") or "")]
    chain = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)

    def url_for(*schemes: str) -> str:
        return next((u for u in urls if u.split("://", 1)[0] in schemes), urls[0] if urls else "the store")

    if names & {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}:
        return InputError(
            f"cannot open {url_for('s3', 's3a')}: no credentials found (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE; for a public bucket set anon in fsspec's config)"
        )
    if names & {"DefaultCredentialsError", "RefreshError"}:
        return InputError(
            f"cannot open {url_for('gs', 'gcs')}: no Google Cloud credentials found "
            "(set GOOGLE_APPLICATION_CREDENTIALS or run 'gcloud auth application-default login')"
        )
    if isinstance(exc, ImportError):
        m = re.search(r"install (['\"]?)([A-Za-z0-9_.-]+)\1", text, re.IGNORECASE)
        if m and urls:
            package = m.group(2)
            scheme = next(
                (
                    u.split("://", 1)[0]
                    for u in urls
                    if u.split("://", 1)[0] in text.lower() or package.lower().startswith(u.split("://", 1)[0][:2])
                ),
                urls[0].split("://", 1)[0],
            )
            return InputError(f"{scheme}:// needs {package}: pip install {package}")
    if urls and ("AccessDenied" in text or "403" in text or isinstance(exc, PermissionError)):
        return InputError(f"cannot open {urls[0]}: access denied ({_one_line(exc)[:200]})")
    return None


def _report(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    msg = _one_line(str(exc)) or type(exc).__name__
    if not isinstance(exc, BigdeconError):
        msg = f"{type(exc).__name__}: {msg}"
    if len(msg) > 500:
        msg = msg[:497] + "..."
    print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)


def _stdout_gone() -> int:
    """The reader of stdout went away (``bigdecon info X | head -1``): stop quietly, as Unix tools do."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the final flush at exit must not fail again
    return 141  # 128 + SIGPIPE, what a shell reports for a tool killed by the closed pipe


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bigdecon`` command line and return its exit code.

    Parameters
    ----------
    argv
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success, 1 processing failure, 2 bad usage or input, 130 interrupted,
        141 stdout closed early (a pipe into ``head``).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))  # --help, --version print here
    except BrokenPipeError:
        return _stdout_gone()
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        return _stdout_gone()
    except BigdeconError as exc:
        _report(exc, bool(getattr(args, "debug", False)))
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (continue later with --resume)", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - anything unexpected: one line, exit 1
        debug = bool(getattr(args, "debug", False))
        remote = _remote_problem(exc, args)
        if remote is not None:
            if debug:
                traceback.print_exc()
            _report(remote, False)
            return remote.exit_code
        _report(exc, debug)
        return 1


if __name__ == "__main__":
    sys.exit(main())
