"""The ``bigdecon`` command line: ``run``, ``info``, ``suggest``, ``psf``, ``demo``, ``submit``, ``status`` and ``logs``.

Every option of ``bigdecon run`` can also come from a ``--config`` file (TOML or
YAML, keys are the option names with underscores); options on the command line
win over the file. Everything is checked before anything is printed; a run then
names the options that differ from the defaults in one line, and ``--print-config``
(``-v``) prints the whole resolved configuration (as TOML, so it can be saved and
reused); the output stores it either way. Abbreviated options are refused. The
options, their defaults and their checks come from :data:`bigdecon.params.PARAMETERS`.

Exit codes: 0 success; 2 bad usage or bad input (one line on stderr naming the
problem); 1 a failure while processing (one line; ``--debug`` adds the traceback);
130 interrupted (Ctrl-C; continue with ``--resume``); 141 stdout closed early
(``bigdecon info X | head -1``), quietly.

Modules: :mod:`~bigdecon.cli.options` (argparse from the parameter table, value
resolution), :mod:`~bigdecon.cli.config` (``--config`` files), one module per
command (:mod:`~bigdecon.cli.run`, :mod:`~bigdecon.cli.info`, :mod:`~bigdecon.cli.suggest`,
:mod:`~bigdecon.cli.demo`, :mod:`~bigdecon.cli.submit`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import traceback
from collections.abc import Sequence

from .. import __version__
from ..errors import BigdeconError, InputError
from . import demo, info, psf, run, submit, suggest
from .config import format_config, load_config, one_line
from .options import PROG, Parser, add_run_options, resolve_options, run_argv_from_args

__all__ = ["main", "build_parser", "add_run_options", "run_argv_from_args", "resolve_options", "load_config"]
__all__ += ["format_config"]


def build_parser() -> argparse.ArgumentParser:
    """The full ``bigdecon`` parser."""
    parser = Parser(
        prog=PROG,
        description="Sparse deconvolution (Zhao et al. 2022) and Richardson-Lucy for OME-Zarr data "
        "larger than memory, on Dask.",
        epilog="Start with 'bigdecon demo demo-output'. Help on a command: bigdecon COMMAND --help",
    )
    parser.add_argument("--version", action="version", version=f"bigdecon {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    run.add_parser(sub)
    info.add_parser(sub)
    suggest.add_parser(sub)
    psf.add_parser(sub)
    demo.add_parser(sub)
    submit.add_parser(sub)
    return parser


def _remote_problem(exc: BaseException, args: argparse.Namespace) -> InputError | None:
    """Object-store failures (no credentials, a missing fsspec backend, access denied) as bad input."""
    urls = [str(getattr(args, k)) for k in ("input", "path", "output") if "://" in str(getattr(args, k, "") or "")]
    chain: list[BaseException] = []
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
        return InputError(f"cannot open {urls[0]}: access denied ({one_line(exc)[:200]})")
    return None


def _report(exc: BaseException, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    from ..io.paths import redact

    msg = redact(one_line(str(exc)) or type(exc).__name__)
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
    except Exception as exc:
        debug = bool(getattr(args, "debug", False))
        remote = _remote_problem(exc, args)
        if remote is not None:
            if debug:
                traceback.print_exc()
            _report(remote, False)
            return remote.exit_code
        _report(exc, debug)
        return 1
