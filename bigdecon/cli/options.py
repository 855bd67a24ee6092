"""The options of ``run``, ``info`` and ``submit``, built from :data:`bigdecon.params.PARAMETERS`.

Values of ``--fwhm``, ``--resolution`` and ``--psf`` are separated by spaces or
commas and stop at the first token that is not one (so ``--fwhm 3 IN OUT``
works); ``C=VALUES`` tokens give one channel's value (``--fwhm 0=3 1=4.2,4.2``).
Options absent from the command line stay ``None`` so that a ``--config`` file
can fill them in; :func:`resolve_options` converts and checks them with the
parameter table's own parsers.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .. import params
from ..errors import InputError
from ..params import Parameter, check_psf_size, resolve_deconv_iters
from .config import fmt_number, load_config, one_line

__all__ = [
    "PROG",
    "Parser",
    "add_cluster_options",
    "add_run_options",
    "check_parameters",
    "given",
    "given_keys",
    "method_kwargs",
    "options_argv",
    "parameters",
    "resolve_options",
    "run_argv_from_args",
    "split_values",
    "uses_optics",
]

PROG = "bigdecon"

# Keyword arguments of bigdecon.deconvolve / plan that come straight from options.
PIPELINE_KEYS = (
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
    "wb_alpha",
    "wb_beta",
    "wb_order",
    "psf_model",
    "na",
    "wavelength",
    "refractive_index",
    "sheet_thickness",
    "excitation_wavelength",
    "channels",
    "timepoints",
    "chunks",
    "depth",
    "psf_voxel_size",
    "psf_as_is",
    "psf_energy",
    "voxel_size",
    "axes",
    "offset",
    "skew_angle",
    "skew_axis",
    "psf_frame",
    "deskew_first",
    "skew_fill",
    "rotate",
)
SKEW_KEYS = ("skew_angle", "skew_axis", "psf_frame", "deskew_first", "skew_fill", "rotate")
WRITE_KEYS = ("output_dtype", "ngff_version", "resume", "overwrite", "work_dir")
PSF_KEYS = ("fwhm", "resolution", "psf")
OPTICS_KEYS = ("psf_model", "na", "wavelength", "refractive_index", "sheet_thickness", "excitation_wavelength")

_GROUPS = {
    "psf": (
        "PSF (give one of --fwhm, --resolution, --psf, or the optics: --na and --wavelength)",
        "Values are separated by spaces or commas (--fwhm 2 3 3 or --fwhm 2,3,3; INPUT and OUTPUT may "
        "follow). Per channel, give C=VALUES with the input's channel numbers: --fwhm 0=3 1=4.2,4.2, "
        "--psf 0=a.tif 1=b.npy (every processed channel needs one).",
    ),
    "input": ("input (what its metadata lacks or gets wrong)", None),
    "method": ("sparse deconvolution (Zhao et al. 2022; published names and defaults)", None),
    "selection": ("data selection and chunking", None),
    "skew": ("skewed light-sheet stacks (stage-scanned LLSM, OPM; docs/deskew.md)", None),
    "output": ("output", None),
    "general": ("general", None),
    "cluster": ("Dask cluster (default: a local cluster sized to this machine)", None),
    "security": ("network security of the job's Dask cluster", None),
}


def parameters() -> dict[str, Parameter]:
    """The parameter table (looked up on every call: a test may swap in other defaults)."""
    return params.PARAMETERS


# --------------------------------------------------------------------------- parser


# Options whose values argparse must not take greedily or mistake for options.
# ``--fwhm 3 IN OUT``: after the first value, --fwhm/--resolution take only
# further tokens that are numbers or C=VALUES, and --psf only C=FILE tokens,
# so INPUT and OUTPUT stay positional; ``--timepoints -2:`` is a value.
_VALUE_OPTIONS = {
    "--fwhm": "numbers",
    "--resolution": "numbers",
    "--wavelength": "numbers",
    "--psf": "files",
    "--timepoints": "span",
}
_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf|infinity)"


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


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors, like every other bigdecon error, and :func:`split_values`.

    Abbreviated options are refused (``--back 2`` is not ``--background 2``): a
    later option that shares the prefix would silently change their meaning.
    Subcommands' parsers are of this class too (argparse's ``parser_class``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {one_line(message)} (see '{self.prog} --help')\n")

    def parse_known_args(  # type: ignore[override]  # argparse's overloads; this one takes a list
        self, args: Sequence[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(split_values(args), namespace)


def _add(group: Any, p: Parameter) -> None:
    text = p.help_text()
    flags = [p.short, p.flag] if p.short else [p.flag]
    if p.form == "values":
        group.add_argument(*flags, nargs="+", action="extend", metavar=p.metavar, help=text)
    elif p.form == "switch":
        group.add_argument(*flags, action="store_true", default=None, help=text)
    elif p.form == "tristate":
        group.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None, help=text)
    else:
        group.add_argument(*flags, metavar=p.metavar, help=text)


def _add_groups(parser: argparse.ArgumentParser, command: str, groups: Sequence[str]) -> dict[str, Any]:
    made: dict[str, Any] = {}
    for p in parameters().values():
        if p.group not in groups or command not in p.commands:
            continue
        if p.group not in made:
            title, description = _GROUPS[p.group]
            made[p.group] = parser.add_argument_group(title, description)
            if p.group == "general" and command in ("run", "info", "submit"):
                made[p.group].add_argument(
                    "--config",
                    metavar="FILE",
                    help="TOML or YAML file of options (keys as above with underscores, "
                    "e.g. sparse_iters = 50); command-line options win",
                )
        _add(made[p.group], p)
    return made


def add_run_options(parser: argparse.ArgumentParser, command: str = "run") -> None:
    """Add every processing option of ``command`` (``run``, ``info`` or ``submit``; not the cluster ones).

    Values are kept as given (``None`` when absent) so that a ``--config`` file
    can fill in what the command line leaves out; :func:`resolve_options`
    converts and checks them.
    """
    _add_groups(parser, command, ("psf", "input", "method", "selection", "skew", "output", "general"))


def add_cluster_options(parser: argparse.ArgumentParser, command: str = "run") -> None:
    """The options of the local Dask cluster (or the running scheduler) of ``run`` and ``demo``,
    or of the cluster ``submit`` makes (its network security)."""
    _add_groups(parser, command, ("cluster", "security"))


# --------------------------------------------------------------------------- resolving


def _config_values(args: argparse.Namespace) -> dict[str, Any]:
    config_path = getattr(args, "config", None)
    if not config_path:
        return {}
    raw = load_config(config_path)
    from_file = {str(k).replace("-", "_"): v for k, v in raw.items()}
    # INPUT and OUTPUT are always given on the command line; a configuration
    # saved from a run's output (which records them) is still a valid file.
    from_file = {k: v for k, v in from_file.items() if k not in ("input", "output")}
    unknown = sorted(set(from_file) - set(parameters()))
    if unknown:
        raise InputError(f"config file {config_path}: unknown option(s) {', '.join(unknown)}")
    return from_file


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
        One entry per option key, in the order of :data:`bigdecon.params.PARAMETERS`.
    """
    from_file = _config_values(args)
    config_path = getattr(args, "config", None)
    resolved: dict[str, Any] = {}
    for key, p in parameters().items():
        if p.cluster and not cluster:
            continue
        if p.group == "security" and not hasattr(args, key):
            continue  # submit's options: not part of what run or demo record
        value = getattr(args, key, None)
        where = ""
        if value is None and key in from_file:
            value, where = from_file[key], f"config file {config_path}: "
        if value is None:
            resolved[key] = p.default
            continue
        try:
            resolved[key] = p.parse(value)
        except InputError as exc:
            raise InputError(where + str(exc)) from None
    if "deconv_iters" in resolved:  # its default depends on deconv_type: state the number everywhere
        resolved["deconv_iters"] = resolve_deconv_iters(resolved["deconv_iters"], resolved.get("deconv_type"))
    model_given = getattr(args, "psf_model", None) is not None or "psf_model" in from_file
    if not model_given and any(resolved.get(k) is not None for k in ("na", "wavelength")):
        resolved["psf_model"] = "widefield"  # the model that runs, so that the record says so
    return resolved


def given(args: argparse.Namespace, key: str) -> bool:
    """Whether option ``key`` was given on the command line or in ``--config``."""
    return getattr(args, key, None) is not None or key in _config_values(args)


def given_keys(args: argparse.Namespace) -> frozenset[str]:
    """The options given on the command line or in ``--config`` (the file read once)."""
    stated = {k for k in parameters() if getattr(args, k, None) is not None}
    return frozenset(stated | set(_config_values(args)))


def _option_values(key: str, value: Any) -> list[str]:
    """A resolved value as the tokens that follow its flag."""
    if key == "wavelength" and isinstance(value, dict):
        return [f"{c}={fmt_number(v)}" for c, v in value.items()]
    if key in PSF_KEYS and isinstance(value, dict):
        # Per channel: --fwhm 0=3 1=4.2,4.2 / --psf 0=a.tif 1=b.npy
        return [f"{c}={','.join(fmt_number(x) for x in v) if isinstance(v, list) else v}" for c, v in value.items()]
    if key in ("fwhm", "resolution"):
        return [fmt_number(v) for v in value]
    if isinstance(value, dict):
        return [",".join(f"{k}={v}" for k, v in value.items())]
    if isinstance(value, list):
        return [",".join(str(v) for v in value)]
    return [fmt_number(value)]


def run_argv_from_args(args: argparse.Namespace, *, explicit: Sequence[str] = ()) -> list[str]:
    """The run options of ``args`` (``--config`` file applied) as ``bigdecon run`` arguments.

    Only options that differ from their defaults are written, so the command
    stays short, and those named in ``explicit`` (at their resolved values).
    INPUT/OUTPUT and the cluster options (``--workers``, ``--scheduler``...)
    are left out, and a ``--config`` file is expanded into options (the
    workers that run the command may not see the file).
    """
    return options_argv(resolve_options(args, cluster=False), explicit=explicit)


def options_argv(resolved: dict[str, Any], *, explicit: Sequence[str] = ()) -> list[str]:
    """Resolved options as command-line arguments: those that differ from their defaults, and ``explicit``.

    Examples
    --------
    >>> from bigdecon.params import PARAMETERS
    >>> resolved = {k: p.default for k, p in PARAMETERS.items()}
    >>> options_argv({**resolved, "fwhm": [3.0], "sparse_iters": 50})
    ['--fwhm', '3', '--sparse-iters', '50']
    """
    argv: list[str] = []
    for key, value in resolved.items():
        p = parameters()[key]
        default = p.default
        if key == "deconv_iters":  # resolved above; its default is the one of the deconv_type
            default = resolve_deconv_iters(None, resolved.get("deconv_type"))
        if key == "psf_model" and key not in explicit and resolved.get("na") is not None:
            default = "widefield"  # what --na and --wavelength choose without it
        if value is None or (value == default and key not in explicit):
            continue
        if isinstance(value, bool):
            if value:
                argv.append(p.flag)
            continue
        argv += [p.flag, *_option_values(key, value)]
    return argv


# --------------------------------------------------------------------------- checks before a run


def method_kwargs(resolved: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``plan``/``deconvolve`` given by options (not the PSF file's content).

    Raises
    ------
    InputError
        More than one of fwhm/resolution/psf, or none while step 5 runs.
    """
    kwargs = {k: resolved[k] for k in PIPELINE_KEYS if resolved.get(k) is not None}
    if kwargs.get("skew_angle") is None:  # the other skew options mean nothing without it
        for key in SKEW_KEYS:
            kwargs.pop(key, None)
    if kwargs.get("psf_model") == "gaussian":
        stated = [f"--{k}" for k in ("na", "wavelength") if resolved.get(k) is not None]
        if stated:
            raise InputError(
                f"--psf-model gaussian takes --fwhm, --resolution or --psf, not {' and '.join(stated)} "
                "(leave --psf-model out for the widefield model)"
            )
        del kwargs["psf_model"]  # a Gaussian of --fwhm/--resolution, or --psf
    given_psf = [k for k in PSF_KEYS if resolved.get(k) is not None]
    if len(given_psf) > 1:
        raise InputError(f"give one of --fwhm, --resolution or --psf, not {' and '.join('--' + k for k in given_psf)}")
    optics = uses_optics(resolved)
    if optics and given_psf:
        raise InputError(f"give --{given_psf[0]} or a PSF from the optics (--na, --wavelength), not both")
    deconvolves = resolved["deconv_type"] and resolved["deconv_iters"]
    if deconvolves and not given_psf and not optics:
        raise InputError(
            "give the PSF size: --fwhm PIXELS, --resolution in physical units, --psf FILE, or the optics "
            "(--na and --wavelength) (or --deconv-type 0 to skip the final deconvolution)"
        )
    if optics:
        missing = [f"--{k.replace('_', '-')}" for k in ("na", "wavelength") if resolved.get(k) is None]
        if resolved.get("psf_model") == "lightsheet" and resolved.get("sheet_thickness") is None:
            missing.append("--sheet-thickness")
        if missing:
            raise InputError(f"--psf-model {resolved.get('psf_model') or 'widefield'} needs {' and '.join(missing)}")
    return kwargs


def uses_optics(resolved: dict[str, Any]) -> bool:
    """Whether the PSF is computed from the optics: a non-Gaussian ``--psf-model``, or ``--na``/``--wavelength``."""
    return resolved.get("psf_model") not in (None, "gaussian") or any(
        resolved.get(k) is not None for k in ("na", "wavelength")
    )


def check_parameters(resolved: dict[str, Any]) -> dict[str, Any]:
    """Every check of the parameters that needs neither the input nor a PSF file (raises InputError).

    ``bigdecon submit`` runs it before it builds a job; ``bigdecon run`` too,
    before it opens the input, and keeps what it returns: the checked
    :func:`method_kwargs`.
    """
    # The scalar parameters were range-checked as they were read (resolve_options).
    kwargs = method_kwargs(resolved)
    for key, unit in (("fwhm", "pixels"), ("resolution", "physical units")):
        value = resolved.get(key)
        if value is None:
            continue
        # One size for every channel, or {channel: size} (--fwhm 0=3 1=4.2,4.2).
        for c, size in value.items() if isinstance(value, dict) else [(None, value)]:
            try:
                check_psf_size(key, size, unit)
            except InputError as exc:
                raise InputError(f"channel {c}: {exc}" if c is not None else str(exc)) from None
    return kwargs
