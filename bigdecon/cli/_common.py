"""What the commands share: terminal output, the cluster, checks of OUTPUT, reading a PSF file.

The CLI's imports of the out-of-core layer are here, and in run.py (the run's Params + RunOptions).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from typing import Any

from ..errors import BigdeconNotice, BigdeconWarning, InputError
from .config import fmt_number, one_line
from .options import PROG, PSF_KEYS, method_kwargs

__all__ = [
    "check_output",
    "check_writable",
    "client_for",
    "fmt_size",
    "load_psf",
    "pipeline_kwargs",
    "say",
    "quiet_dask",
    "run_sizing",
    "shape_text",
]


def say(*lines: str) -> None:
    """Print lines on stdout, credentials in URLs redacted (:func:`bigdecon.io.paths.redact`)."""
    from ..io.paths import redact

    for line in lines:
        print(redact(line), flush=True)


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def fmt_size(values: Any) -> str:
    """``[3.0, 3.0]`` -> ``'3 x 3'``."""
    return " x ".join(fmt_number(float(v)) for v in values)


def _show_notice(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    from ..io.paths import redact

    if isinstance(category, type) and issubclass(category, BigdeconNotice):
        text = redact(one_line(message))
        if text not in _shown:  # the input is opened more than once in a run (plan, then the run)
            _shown.add(text)
            kind = "warning" if issubclass(category, BigdeconWarning) else "note"
            print(f"{PROG}: {kind}: {text}", file=sys.stderr, flush=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


_show_warning = warnings.showwarning
_shown: set[str] = set()


def quiet_dask(args: argparse.Namespace, debug: bool) -> None:
    """Keep Dask's own log lines and warnings off the terminal unless --debug; bigdecon's notices and
    warnings (:class:`~bigdecon.errors.BigdeconNotice`, :class:`~bigdecon.errors.BigdeconWarning`)
    show once, one line each."""
    args.debug = debug  # a --config file can turn it on too: main() reads it on errors
    if not debug:
        for name in ("distributed", "dask", "bokeh", "tornado"):
            # Failures reach the user once, as the one-line error main() prints.
            logging.getLogger(name).setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore")
    warnings.filterwarnings("always", category=BigdeconNotice)
    warnings.showwarning = _show_notice


def client_for(resolved: dict[str, Any], task_memory: int | None = None, *, gpus: bool = False) -> tuple[Any, Any]:
    """The client of ``run``: a local cluster whose processes leave Ctrl-C to this one, or a scheduler.

    A terminal's Ctrl-C reaches the whole process group. The workers ignore it once
    started (a preload, :func:`bigdecon.cluster.make_client`), but one hit while it
    started printed a traceback and left semaphores behind ("leaked semaphore" at
    exit), and this process, interrupted inside the cluster's start, printed another
    at exit. So the workers are forked by a server that ignores SIGINT (they inherit
    that from birth), and a Ctrl-C while the cluster starts is held until it is up,
    then closes it.
    """
    from ..cluster import SCHEDULER_TIMEOUT, close, make_client

    if resolved["scheduler"] or threading.current_thread() is not threading.main_thread():
        return _make_client(make_client, SCHEDULER_TIMEOUT, resolved, task_memory, gpus)
    _fork_workers_deaf_to_ctrl_c()
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        client, cluster = _make_client(make_client, SCHEDULER_TIMEOUT, resolved, task_memory, gpus)
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        close(client, cluster)
        raise KeyboardInterrupt
    return client, cluster


_TRACKER_QUIET = "ignore::UserWarning:multiprocessing.resource_tracker"


def _fork_workers_deaf_to_ctrl_c() -> None:
    """Worker processes from multiprocessing's fork server, started with SIGINT ignored.

    The server restores in each child the SIGINT handling it was started with, and
    an ignored signal stays ignored across exec: so every worker, a restarted one
    too, ignores Ctrl-C from its first instruction. The window with SIGINT ignored
    here is only the server's spawn (milliseconds); it loads its modules after.
    """
    import multiprocessing.forkserver

    import dask
    from distributed.utils import get_mp_context

    dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
    get_mp_context()  # sets the server's preloaded modules before it starts
    # Workers killed mid-task on Ctrl-C leave their queues' semaphores to multiprocessing's
    # resource tracker, which removes them at exit and warns "leaked semaphore objects"
    # while doing so. The tracker (started next, for the server) takes this process's -W
    # options: its warning, which asks nothing of the user, stays off the terminal.
    if _TRACKER_QUIET not in sys.warnoptions:
        sys.warnoptions.append(_TRACKER_QUIET)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def _make_client(
    make_client: Any, timeout: float, resolved: dict[str, Any], task_memory: int | None, gpus: bool
) -> tuple[Any, Any]:
    return make_client(
        workers=resolved["workers"],
        threads_per_worker=resolved["threads_per_worker"],
        memory_limit=resolved["memory_limit"],
        gpus=gpus,
        scheduler=resolved["scheduler"],
        dashboard_address=resolved["dashboard_address"],
        task_memory=task_memory,
        scheduler_timeout=resolved.get("scheduler_timeout") or timeout,
        log_level=logging.WARNING if resolved.get("debug") else logging.CRITICAL,
    )


def run_sizing(client: Any, resolved: dict[str, Any], output: str, device: str) -> dict[str, Any]:
    """``min_tasks`` and ``task_memory`` of this run, passed to both ``plan`` and ``deconvolve``,
    so that the plan printed before the run (``N tasks``) is the one that runs."""
    from ..passes import run_sizing as sizing

    return sizing(client, output, resume=resolved["resume"], chunks=resolved["chunks"], device=device)


def load_psf(path: str) -> Any:
    """A measured PSF from a ``.npy`` or ``.tif`` file, local or a URL, in its stored dtype (2-D or 3-D)."""
    from ..io.psf_file import read_psf

    return read_psf(path)[0]


def pipeline_kwargs(resolved: dict[str, Any], method: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``plan``/``deconvolve``; a ``--psf`` file goes as its path.

    ``plan``/``deconvolve`` read it with its voxel size and prepare it for the
    data (:func:`bigdecon.solvers.psf_prepare.prepare_psf`) unless ``--psf-as-is``.
    ``method``: what :func:`~bigdecon.cli.options.method_kwargs` (or
    ``check_parameters``) already returned for ``resolved``.
    """
    kwargs = dict(method) if method is not None else method_kwargs(resolved)
    psf = resolved.get("psf")
    if psf:
        kwargs["psf"] = psf
    return kwargs


def check_output(input_path: str, output: str, resolved: dict[str, Any], src: Any = None) -> str | None:
    """Cheap checks of OUTPUT before a cluster starts (the run repeats them); ``'cleanup'`` when
    ``--resume`` has only a finished run's work folder to remove (see :func:`bigdecon.passes.guard.check_run`).
    ``src``: the input, if already opened."""
    from ..io import open_image
    from ..io.paths import normalize
    from ..io.safety import LEASE_NAME
    from ..passes.guard import check_run

    state = check_run(
        open_image(input_path) if src is None else src,
        input_path,
        output,
        resume=resolved["resume"],
        overwrite=resolved["overwrite"],
        work_dir=resolved.get("work_dir"),
    )
    local, is_local = normalize(output)
    if not is_local:
        return state
    if os.path.lexists(local) and not (resolved["resume"] or resolved["overwrite"]):
        if not os.path.isdir(local) or [n for n in os.listdir(local) if n != LEASE_NAME]:
            raise InputError(f"output exists: {local} (use --overwrite to replace it or --resume to continue it)")
    check_writable(local, "output")
    return state


def check_writable(local: str, what: str) -> None:
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


def psf_keys_given(kwargs: dict[str, Any]) -> bool:
    return any(k in kwargs for k in PSF_KEYS)
