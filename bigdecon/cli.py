"""The ``bigdecon`` command line: ``run``, ``info``, ``demo`` (and ``submit``/``status``/``logs``).

Every option of ``bigdecon run`` can also come from a ``--config`` file (TOML or
YAML, keys are the option names with underscores); options on the command line
win over the file. The resolved configuration is printed at the start (as TOML,
so it can be saved and reused) and stored with the output.

Exit codes: 0 success; 2 bad usage or bad input (one line on stderr naming the
problem); 1 a failure while processing (one line; ``--debug`` adds the traceback);
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
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


def _items(v: Any) -> list[Any]:
    """``'3,3'``, ``['3', '3']``, ``[3, 3]`` or ``3`` -> a flat list of items."""
    if isinstance(v, str):
        return [p for p in v.replace(",", " ").split() if p]
    if isinstance(v, (list, tuple)):
        out: list[Any] = []
        for item in v:
            out.extend(_items(item) if isinstance(item, str) else [item])
        return out
    return [v]


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


def _span(v: Any) -> str:
    """Time points ``'a:b'`` (either end may be left out)."""
    if isinstance(v, (list, tuple)) and len(v) == 2:
        v = f"{v[0]}:{v[1]}"
    text = str(v).strip()
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts if p.strip()):
        raise InputError(f"timepoints must look like a:b (e.g. 0:10), got {v!r}")
    return text


def _sizes(name: str) -> Callable[[Any], Any]:
    """``'t=8,y=512,x=512'`` -> dict; ``'8,512,512'`` -> list; an int or dict/list from a config file."""
    one = _int(name)

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
    value = _sizes("depth")(v)
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
        Option("fwhm", None, _floats("fwhm")),
        Option("resolution", None, _floats("resolution")),
        Option("psf", None, _text),
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
        Option("output_dtype", "float32", _text),
        Option("ngff_version", "0.5", _choice("ngff_version", ("0.4", "0.5"))),
        Option("resume", False, _flag("resume")),
        Option("overwrite", False, _flag("overwrite")),
        Option("debug", False, _flag("debug")),
        # Not a cluster option: `submit` forwards it to the job that connects.
        Option("scheduler_timeout", 10.0, _positive("scheduler_timeout")),
        Option("workers", None, _int("workers"), cluster=True),
        Option("threads_per_worker", None, _int("threads_per_worker"), cluster=True),
        Option("memory_limit", None, _text, cluster=True),
        Option("gpus", False, _flag("gpus"), cluster=True),
        Option("scheduler", None, _text, cluster=True),
        Option("dashboard_address", None, _text, cluster=True),
    ]
}

# Keyword arguments of bigdecon.deconvolve / plan that come straight from options.
_PIPELINE_KEYS = (
    "fwhm", "resolution", "sparse_iters", "fidelity", "sparsity", "tcontinuity", "background",
    "deconv_iters", "deconv_type", "up_sample", "channels", "timepoints", "chunks", "depth",
)  # fmt: skip
_WRITE_KEYS = ("output_dtype", "ngff_version", "resume", "overwrite")


# --------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other bigdecon error."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{PROG}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def add_run_options(parser: argparse.ArgumentParser, *, connect: bool = True) -> None:
    """Add every ``bigdecon run`` processing option (not the cluster ones) to ``parser``.

    Values are kept as given (``None`` when absent) so that a ``--config`` file
    can fill in what the command line leaves out; :func:`resolve_options`
    converts and checks them. ``connect=False`` leaves out
    ``--scheduler-timeout`` (for commands that start no cluster).
    """
    psf = parser.add_argument_group("PSF (give one of --fwhm, --resolution, --psf)")
    psf.add_argument("--fwhm", nargs="+", metavar="PX",
                     help="PSF full width at half maximum in input pixels: one value (y and x), "
                          "two (y x) or three (z y x: true 3-D deconvolution)")  # fmt: skip
    psf.add_argument("--resolution", nargs="+", metavar="R",
                     help="PSF FWHM in the physical units of the metadata (e.g. 0.28 for 280 nm "
                          "in micrometres); converted to pixels with the pixel size")  # fmt: skip
    psf.add_argument("--psf", metavar="FILE", help="measured PSF, 2-D or 3-D (.npy or .tif)")

    sp = parser.add_argument_group("sparse deconvolution (Zhao et al. 2022; published names and defaults)")
    sp.add_argument("--sparse-iters", metavar="N", help="split-Bregman iterations, 0 = Richardson-Lucy only (100)")
    sp.add_argument("--fidelity", metavar="F", help="weight of the data term; higher keeps more of the raw image (150)")
    sp.add_argument("--sparsity", metavar="S", help="weight of the sparsity (L1) prior (10)")
    sp.add_argument("--tcontinuity", metavar="C", help="continuity along t or z (0.5)")
    sp.add_argument("--background", metavar="MODE",
                    help="background removal 0-5: 0 none, 1 weak, 2 strong (high SNR), "
                         "3/4/5 weak/medium/strong (low SNR) (1)")  # fmt: skip
    sp.add_argument("--deconv-iters", metavar="N", help="iterations of the final deconvolution (7)")
    sp.add_argument("--deconv-type", metavar="T", help="final deconvolution: 0 none, 1 Richardson-Lucy, 2 Landweber (1)")
    sp.add_argument("--up-sample", metavar="U", help="x2 up-sampling in y/x: 0 none, 1 Fourier, 2 spatial (0)")

    sel = parser.add_argument_group("data selection and chunking")
    sel.add_argument("--channels", metavar="LIST", help="channels to process, e.g. 0,2 (default all)")
    sel.add_argument("--timepoints", metavar="A:B", help="time points A to B-1, e.g. 0:100 (default all)")
    sel.add_argument("--chunks", metavar="SIZES",
                     help="block size of the sparse step, e.g. t=8,y=512,x=512 or 8,512,512")  # fmt: skip
    sel.add_argument("--depth", metavar="SIZES",
                     help="overlap (halo) between blocks: one number, y,x, t|z,y,x or t=8,y=16 "
                          "(default: measured safe value, see 'bigdecon info')")  # fmt: skip

    out = parser.add_argument_group("output")
    out.add_argument("--output-dtype", metavar="DTYPE", help="float32 (default) or an integer type such as uint16")
    out.add_argument("--ngff-version", metavar="V", help="OME-Zarr version of the output: 0.4 or 0.5 (0.5)")
    out.add_argument("--resume", action="store_true", default=None, help="continue an interrupted run")
    out.add_argument("--overwrite", action="store_true", default=None, help="replace an existing output")

    gen = parser.add_argument_group("general")
    gen.add_argument("--config", metavar="FILE",
                     help="TOML or YAML file of options (keys as above with underscores, "
                          "e.g. sparse_iters = 50); command-line options win")  # fmt: skip
    gen.add_argument("--debug", action="store_true", default=None,
                     help="show tracebacks and Dask's log messages")  # fmt: skip
    if connect:
        gen.add_argument("--scheduler-timeout", metavar="SECONDS",
                         help="how long to wait for the --scheduler to answer; refused connections are "
                              "retried until then (default 10; e.g. 600 for a scheduler still starting)")  # fmt: skip


def _add_cluster_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("Dask cluster (default: a local cluster sized to this machine)")
    g.add_argument("--workers", metavar="N", help="worker processes (default: cores / threads per worker)")
    g.add_argument("--threads-per-worker", metavar="N", help="threads per worker (default 1)")
    g.add_argument("--memory-limit", metavar="SIZE", help="memory per worker, e.g. 8GiB (default: 90%% of RAM / workers)")
    g.add_argument("--gpus", action="store_true", default=None,
                   help="one worker per NVIDIA GPU (needs dask-cuda and CuPy: pip install 'bigdecon[gpu]'); "
                        "used automatically when both are installed and a GPU is present")  # fmt: skip
    g.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. tcp://host:8786")
    g.add_argument("--dashboard-address", metavar="ADDR", help="dashboard of the local cluster (default :8787)")


def build_parser() -> argparse.ArgumentParser:
    """The full ``bigdecon`` parser."""
    parser = _Parser(
        prog=PROG,
        description="Sparse deconvolution (Zhao et al. 2022) and Richardson-Lucy for OME-Zarr data "
                    "larger than memory, on Dask.",
        epilog="Start with 'bigdecon demo demo-output'. Help on a command: bigdecon COMMAND --help",
    )  # fmt: skip
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
    )  # fmt: skip
    info.add_argument("path", metavar="PATH", help="OME-Zarr or TIFF")
    add_run_options(info, connect=False)
    info.set_defaults(func=_cmd_info)

    demo = sub.add_parser(
        "demo",
        help="make synthetic data, deconvolve it and show the result",
        description="Write a synthetic time-lapse and volume with known ground truth to OUTPUT_DIR, "
                    "deconvolve them (Richardson-Lucy only and sparse), report PSNR against the truth "
                    "and save a side-by-side PNG. Takes about a minute.",
    )  # fmt: skip
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
    """Read a TOML (``.toml``) or YAML (anything else) file of run options.

    Raises
    ------
    InputError
        Missing or unreadable file, a syntax error, or a top level that is not a table.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError(f"config file not found: {path}")
    try:
        if path.lower().endswith(".toml"):
            import tomllib

            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        else:
            import yaml

            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh)
    except OSError as exc:
        raise InputError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - TOML/YAML syntax errors of any kind
        raise InputError(f"cannot parse config file {path}: {_one_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"config file {path} must hold key = value options, got a {type(data).__name__}")
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
        if key in ("fwhm", "resolution"):
            argv.extend(_fmt_number(v) for v in value)
        elif isinstance(value, dict):
            argv.append(",".join(f"{k}={v}" for k, v in value.items()))
        elif isinstance(value, list):
            argv.append(",".join(str(v) for v in value))
        else:
            argv.append(_fmt_number(value))
    return argv


def _load_psf(path: str) -> Any:
    import numpy as np

    if not os.path.isfile(path):
        raise InputError(f"PSF file not found: {path}")
    lower = path.lower()
    try:
        if lower.endswith(".npy"):
            psf = np.load(path, allow_pickle=False)
        elif lower.endswith((".tif", ".tiff")):
            import tifffile

            psf = tifffile.imread(path)
        else:
            raise InputError(f"PSF file must be .npy or .tif, got {path}")
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a bad file
        raise InputError(f"cannot read PSF file {path}: {_one_line(exc)}") from None
    psf = np.squeeze(np.asarray(psf))
    if psf.dtype.kind not in "iuf":
        raise InputError(f"PSF file {path} must hold real numbers, got dtype {psf.dtype}")
    return psf.astype(np.float32)


def _pipeline_kwargs(resolved: dict[str, Any]) -> dict[str, Any]:
    kwargs = {k: resolved[k] for k in _PIPELINE_KEYS if resolved.get(k) is not None}
    if resolved.get("psf"):
        kwargs["psf"] = _load_psf(resolved["psf"])
    deconvolves = kwargs.get("deconv_type", 1) and kwargs.get("deconv_iters", 7)
    if deconvolves and not any(k in kwargs for k in ("fwhm", "resolution", "psf")):
        raise InputError("give the PSF size: --fwhm PIXELS, --resolution in physical units, or --psf FILE "
                         "(or --deconv-type 0 to skip the final deconvolution)")  # fmt: skip
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
    local = os.path.abspath(os.path.expanduser(output[len("file://"):] if output.startswith("file://") else output))
    if os.path.lexists(local) and not (resolved["resume"] or resolved["overwrite"]):
        if not os.path.isdir(local) or os.listdir(local):
            raise InputError(f"output exists: {local} (use --overwrite to replace it or --resume to continue it)")
    parent = local
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if os.path.exists(local) and os.path.isdir(local):
        parent = local
    if not os.path.isdir(parent):
        raise InputError(f"cannot write output: {local} ({parent} is a file, not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"cannot write output: {local} (no write permission in {parent})")


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


def _client_for(resolved: dict[str, Any], task_memory: int | None = None) -> tuple[Any, Any]:
    from .cluster import SCHEDULER_TIMEOUT, make_client

    return make_client(
        workers=resolved["workers"],
        threads_per_worker=resolved["threads_per_worker"],
        memory_limit=resolved["memory_limit"],
        gpus=True if resolved["gpus"] else None,
        scheduler=resolved["scheduler"],
        dashboard_address=resolved["dashboard_address"],
        task_memory=task_memory,
        scheduler_timeout=resolved.get("scheduler_timeout") or SCHEDULER_TIMEOUT,
        log_level=logging.WARNING if resolved.get("debug") else logging.CRITICAL,
    )


def _cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    import bigdecon

    from .cluster import close, describe, peak_worker_memory
    from .progress import ProgressReporter, format_bytes

    resolved = resolve_options(args)
    _quiet_dask(args, resolved["debug"])
    record = {"input": args.input, "output": args.output, **{k: v for k, v in resolved.items() if k != "debug"}}
    _print(f"bigdecon {__version__}: {args.input} -> {args.output}",
           "# configuration (reusable with --config)", format_config(record), "")  # fmt: skip
    kwargs = _pipeline_kwargs(resolved)
    plan = bigdecon.plan(args.input, **kwargs)  # checks the input before any cluster starts
    _check_output(args.input, args.output, resolved)
    _print(f"Input {plan['axes']} {_shape(plan['shape'])} {plan['dtype']} -> output {_shape(plan['output_shape'])}; "
           f"{plan['n_tasks']} tasks, ~{format_bytes(plan['memory_per_task_bytes'])} per task")  # fmt: skip

    client, cluster = _client_for(resolved, plan["memory_per_task_bytes"])
    reporter = None
    try:
        _print(describe(client, cluster))
        reporter = ProgressReporter(int(np.prod(plan["shape"])), memory_probe=lambda: _current_memory(client))
        result = bigdecon.deconvolve(
            args.input,
            args.output,
            **kwargs,
            **{k: resolved[k] for k in _WRITE_KEYS},
            client=client,
            progress=reporter,
            config=record,
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


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np

    import bigdecon

    from .io import open_image
    from .progress import format_bytes

    resolved = resolve_options(args, cluster=False)
    _quiet_dask(args, resolved["debug"])
    src = open_image(args.path)
    fmt = f"OME-Zarr (NGFF {src.ngff_version})" if src.ngff_version else "TIFF"
    stored = [int(c[0]) for c in src.data.chunks]
    sizes = []
    for ax in src.axes:
        if ax == "c":
            continue
        unit = src.units.get(ax)
        sizes.append(f"{ax} {src.scale.get(ax, 1.0):g} {unit}" if unit else f"{ax} {src.scale.get(ax, 1.0):g} (no unit)")
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

    kwargs = {k: resolved[k] for k in _PIPELINE_KEYS if resolved.get(k) is not None}
    if resolved.get("psf"):
        kwargs["psf"] = _load_psf(resolved["psf"])
    note = ""
    if not any(k in kwargs for k in ("fwhm", "resolution", "psf")) and kwargs.get("deconv_type", 1):
        kwargs["deconv_type"] = 0  # plan without the PSF; say so below
        note = "  (no --fwhm/--resolution/--psf given: planned without the PSF size check)"
    plan = bigdecon.plan(args.path, **kwargs)
    depth = plan.get("depth") or {}
    k_name = next((a for a in ("z", "t") if a in plan["axes"]), None)
    overlap = ", ".join(f"{k_name if n == 'k' else n} {v}" for n, v in depth.items()) or "none (no sparse step)"
    _print(
        "planned run:" + note,
        f"  output shape:     {_shape(plan['output_shape'])} ({plan['axes']}), {resolved['output_dtype']}",
        f"  overlap per axis: {overlap}",
        f"  tasks:            {plan['n_tasks']}",
        f"  memory per task:  ~{format_bytes(plan['memory_per_task_bytes'])}",
    )
    if "fwhm" in kwargs or "resolution" in kwargs:
        _print(f"  PSF FWHM:         {kwargs.get('fwhm') or kwargs.get('resolution')}"
               + (" (physical units)" if "resolution" in kwargs else " px"))  # fmt: skip
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .cluster import close, describe
    from .demo import run_demo

    resolved = resolve_options(args)
    _quiet_dask(args, resolved["debug"])
    client, cluster = _client_for(resolved)
    try:
        _print(describe(client, cluster))
        run_demo(args.output_dir, client=client, log=_print)
    finally:
        close(client, cluster)
    return 0


# --------------------------------------------------------------------------- entry point


def _report(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    msg = _one_line(str(exc)) or type(exc).__name__
    if not isinstance(exc, BigdeconError):
        msg = f"{type(exc).__name__}: {msg}"
    if len(msg) > 500:
        msg = msg[:497] + "..."
    print(f"{PROG}: error: {msg}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``bigdecon`` command line and return its exit code.

    Parameters
    ----------
    argv
        Arguments without the program name (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success, 1 processing failure, 2 bad usage or input, 130 interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        return int(args.func(args) or 0)
    except BigdeconError as exc:
        _report(exc, bool(getattr(args, "debug", False)))
        return int(getattr(exc, "exit_code", 1))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted (continue later with --resume)", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - anything unexpected: one line, exit 1
        _report(exc, bool(getattr(args, "debug", False)))
        return 1


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
