"""Start (or connect to) the Dask cluster a run uses.

With no options, :func:`make_client` starts a local cluster sized to the
machine: worker *processes* (the solvers hold the GIL in places, and a crashed
or over-memory worker is restarted without taking the run down), as many as
there are cores divided by threads per worker, each allowed 90% of the RAM
divided by the number of workers. With NVIDIA GPUs and dask-cuda installed it
starts one worker per GPU instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from typing import Any

from .errors import InputError
from .params import DASHBOARD_PORT, PARAMETERS

__all__ = [
    "make_client",
    "close",
    "describe",
    "dashboard_available",
    "peak_worker_memory",
    "worker_choice",
    "expected_threads",
    "SCHEDULER_TIMEOUT",
]

# Seconds to wait for an existing scheduler (--scheduler-timeout) before a one-line error.
SCHEDULER_TIMEOUT: float = PARAMETERS["scheduler_timeout"].default
# Fraction of the machine's memory the local workers may use together.
MEMORY_FRACTION = 0.9
# The local cluster listens on the loopback interface only: its scheduler runs any
# code a client sends, and its dashboard shows the data's layout, to anyone who reaches it.
LOCAL_HOST = "127.0.0.1"
DEFAULT_DASHBOARD = f"{LOCAL_HOST}:{DASHBOARD_PORT}"
# Memory of an idle worker process (Python, NumPy, Numba, Dask) on top of its tasks.
WORKER_BASELINE = 256 * 2**20


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def _total_memory() -> int:
    # distributed's figure honours cgroup (container) limits, psutil's does not.
    try:
        from distributed.system import MEMORY_LIMIT

        return int(MEMORY_LIMIT)
    except Exception:  # pragma: no cover - distributed always provides it
        import psutil

        return int(psutil.virtual_memory().total)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((LOCAL_HOST, port))
        except OSError:
            return False
    return True


def _dashboard(address: str | None) -> str | None:
    """The given address, else 127.0.0.1:8787 (any free port when 8787 is taken), or none without bokeh.

    (8787 is :data:`bigdecon.params.DASHBOARD_PORT`.)
    """
    if address is not None:
        return address
    if not dashboard_available():
        return None  # distributed would only warn that it cannot serve one
    return DEFAULT_DASHBOARD if _port_free(DASHBOARD_PORT) else f"{LOCAL_HOST}:0"


def dashboard_available() -> bool:
    """Whether the Dask dashboard can be served (it needs bokeh >= 3.1)."""
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


def expected_threads(workers: int | None = None, threads_per_worker: int | None = None) -> int:
    """Worker threads of the local cluster :func:`make_client` would start (before any memory fit)."""
    cores = _cores()
    if workers is None:
        threads = int(threads_per_worker or 1)
        return max(1, cores // threads) * threads
    return int(workers) * int(threads_per_worker or max(1, cores // int(workers)))


def worker_choice(
    gpus: bool | None, device: str = PARAMETERS["device"].default, scheduler: str | None = None
) -> tuple[bool, str, str | None]:
    """Which local workers to start and where their tasks compute.

    Parameters
    ----------
    gpus
        ``True``: GPU workers (dask-cuda); ``False``: CPU workers computing on
        the CPU (unless ``device="gpu"``); ``None``: GPU workers when CuPy sees
        a GPU and dask-cuda is installed.
    device
        ``auto``, ``cpu`` or ``gpu``, as given to :func:`bigdecon.deconvolve`.
    scheduler
        With an existing scheduler nothing is started and ``device`` is kept.

    Returns
    -------
    gpus, device, note
        Whether to start GPU workers, the device for the tasks, and a line to
        show the user (or ``None``). With GPUs but no dask-cuda, CPU worker
        processes would all pick GPU 0 with blocks sized for the card: such a
        run computes on the CPU, unless ``device="gpu"`` asks for the GPU.
    """
    if scheduler:
        return False, device, None
    if gpus is not None:
        return bool(gpus), ("cpu" if gpus is False and device == "auto" else device), None
    if device == "cpu":
        return False, "cpu", None
    from ._backend import gpu_available

    if not gpu_available():
        return False, device, None
    if _has_dask_cuda():
        return True, device, None
    if device == "gpu":
        return False, "gpu", None
    return (
        False,
        "cpu",
        (
            "note: CuPy sees GPUs but dask-cuda is not installed, so this run uses the CPU "
            "(pip install dask-cuda for one worker per GPU, or --device gpu)"
        ),
    )


def _memory_bytes(limit: str | int | float | None) -> int | None:
    if limit is None:
        return None
    from dask.utils import parse_bytes

    try:
        value = int(parse_bytes(limit) if isinstance(limit, str) else int(limit))
    except (ValueError, TypeError):
        raise InputError(f"memory limit {limit!r} is not a size like '8GB' or '8GiB'") from None
    if value <= 0:
        raise InputError(f"memory limit must be > 0, got {limit!r}")
    return value


def _check_memory(mem: int, task_memory: int | None, label: str) -> None:
    """A worker below one task's need (plus the process itself) never finishes: refuse it."""
    from .progress import format_bytes

    need = WORKER_BASELINE + int(task_memory or 0)
    if mem < need:
        raise InputError(
            f"{label}: {format_bytes(mem)} per worker is less than one task needs "
            f"(~{format_bytes(task_memory or 0)} plus ~{format_bytes(WORKER_BASELINE)} for the worker process): "
            f"give at least {format_bytes(need)}, or smaller --chunks"
        )


def _identify(address: str, timeout: float) -> float:
    """Wait until a Dask scheduler answers at ``address``; :class:`InputError` after ``timeout`` seconds.

    ``Client(timeout=...)`` bounds only the TCP connect: a port that accepts and
    then says nothing (a dashboard, an HTTP server, a half-started pod) would
    hang the handshake forever. Here every step runs under the overall
    deadline, and refused or dropped connections are retried until it (a
    Kubernetes job pod may start before its scheduler listens).
    """
    import asyncio
    import time

    from distributed.comm import connect, parse_address

    deadline = time.monotonic() + timeout

    try:
        parse_address(address)
    except Exception as exc:
        raise InputError(f"not a Dask scheduler address: {address} ({_short(exc)})") from None
    try:
        from distributed.security import Security

        connection_args = Security().get_connection_args("client")
    except Exception:
        connection_args = {}

    async def once(left: float) -> dict:
        comm = await asyncio.wait_for(connect(address, timeout=left, **connection_args), left)
        try:
            await asyncio.wait_for(comm.write({"op": "identity", "n_workers": 0, "reply": True}), left)
            return await asyncio.wait_for(comm.read(), left)
        finally:
            comm.abort()

    async def until_deadline() -> str:
        why = "nothing answered"
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return why
            try:
                reply = await once(left)
            except TimeoutError:
                why = "it accepted the connection but did not answer as a Dask scheduler"
            except Exception as exc:
                why = _reason(exc)
            else:
                if isinstance(reply, dict) and reply.get("type") == "Scheduler":
                    return ""
                why = f"it answered as {reply.get('type') if isinstance(reply, dict) else type(reply).__name__}, not a scheduler"
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    why = asyncio.run(until_deadline())
    if why:
        raise InputError(f"no Dask scheduler answered at {address} within {_seconds(timeout)} ({why})")
    return deadline


def _reason(exc: BaseException) -> str:
    text = str(exc).lower()
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, ConnectionRefusedError) or "refused" in text or (cause and "refused" in str(cause).lower()):
        return "connection refused"
    if "timed out" in text:
        return "connection timed out" if not (cause and "refused" in str(cause).lower()) else "connection refused"
    return _short(exc)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}".rstrip(": ")


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _connect(address: str, timeout: float = SCHEDULER_TIMEOUT) -> Any:
    """A client of the scheduler at ``address``, or :class:`InputError` within ``timeout`` seconds."""
    import time

    from distributed import Client

    if not timeout > 0:
        raise InputError(f"scheduler timeout must be > 0 seconds, got {timeout!r}")
    deadline = _identify(address, float(timeout))
    left = max(1.0, deadline - time.monotonic())
    try:
        return Client(address, timeout=f"{left}s")
    except Exception as exc:
        raise InputError(
            f"no Dask scheduler answered at {address} within {_seconds(float(timeout))} ({_reason(exc)})"
        ) from None


# Run in every local worker process as it starts (a distributed "preload" given as
# the text of a module): worker processes ignore Ctrl-C, which a terminal sends to
# the whole process group (the client process tears them down), and log only at
# LEVEL, so a failing task is reported once, by the client, not by every retry.
_WORKER_SETUP = """
import logging
import signal


def dask_setup(worker):
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to do
        pass
    for name in ("distributed", "dask", "bokeh", "tornado", "asyncio"):
        logging.getLogger(name).setLevel({level})
"""


def _worker_options(log_level: int) -> dict[str, Any]:
    """LocalCluster keyword arguments: scheduler, nannies and workers on 127.0.0.1, quiet worker
    processes (see :data:`_WORKER_SETUP`)."""
    return {
        "host": LOCAL_HOST,
        "silence_logs": log_level,
        "preload": [_WORKER_SETUP.format(level=int(log_level))],
    }


def _gpu_cluster(workers: int | None, memory_limit: int | None, dashboard: str | None, log_level: int) -> Any:
    try:
        import cupy  # noqa: F401
        from dask_cuda import LocalCUDACluster
    except ImportError as exc:
        raise InputError(
            f"--gpus needs dask-cuda and CuPy ({exc.name or exc} is missing): pip install 'bigdecon[gpu]'"
        ) from None
    from ._backend import gpu_available

    if not gpu_available():
        raise InputError("--gpus given, but CuPy sees no CUDA device")
    kwargs: dict[str, Any] = {"threads_per_worker": 1, "dashboard_address": dashboard, **_worker_options(log_level)}
    if workers:
        kwargs["n_workers"] = workers
    if memory_limit:
        kwargs["memory_limit"] = memory_limit
    return LocalCUDACluster(**kwargs)


def make_client(
    workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str | int | None = None,
    gpus: bool | None = False,
    scheduler: str | None = None,
    dashboard_address: str | None = None,
    *,
    task_memory: int | None = None,
    scheduler_timeout: float = SCHEDULER_TIMEOUT,
    log_level: int = logging.ERROR,
) -> tuple[Any, Any | None]:
    """Connect to a Dask scheduler, or start a local cluster sized to this machine.

    Parameters
    ----------
    workers
        Worker processes (default: cores // threads_per_worker, fewer if a task
        would not fit in a worker's share of memory; with GPUs: one per GPU).
    threads_per_worker
        Threads per worker (default 1, or cores // workers when ``workers`` is given).
    memory_limit
        Memory per worker, bytes or a string like ``'8GiB'`` (default: 90% of
        the machine's memory divided by the number of workers).
    gpus
        ``True``: one worker per GPU with dask-cuda (error when it or CuPy is
        missing); ``None``: GPUs when they are present and dask-cuda is
        installed; ``False``: CPU workers (see :func:`worker_choice` for
        where their tasks compute).
    scheduler
        Address of a running scheduler (``tcp://host:8786``): connect to it
        and start nothing. An address where no Dask scheduler answers within
        ``scheduler_timeout`` seconds raises :class:`InputError`.
    dashboard_address
        Where the local cluster serves its dashboard (default ``127.0.0.1:8787``,
        or a free port when that one is taken). The scheduler, nannies and
        workers listen on 127.0.0.1 only; an address given here (``0.0.0.0:8787``)
        is used as given.
    task_memory
        Estimated peak memory of one task in bytes (``plan()['memory_per_task_bytes']``);
        used to keep the default number of workers low enough for it to fit.
    scheduler_timeout
        Seconds to wait for ``scheduler`` to answer (default
        :data:`SCHEDULER_TIMEOUT`); refused connections are retried until then,
        so a long value waits for a scheduler that is still starting.
    log_level
        Level of the local cluster's log messages, in this process and in the
        worker processes (``logging.CRITICAL`` leaves failures to the caller
        to report). Local worker processes also ignore SIGINT: Ctrl-C reaches
        the whole process group, and closing the cluster stops them.

    Returns
    -------
    client, cluster
        ``cluster`` is ``None`` when connected to an existing scheduler; close
        both when done (:func:`contextlib.closing` or ``client.close(); cluster.close()``).

    Raises
    ------
    InputError
        Bad sizes, a memory limit below one task's need, an unreachable
        scheduler, or ``gpus=True`` without dask-cuda/CuPy/GPU.
    """
    for name, value in (("workers", workers), ("threads per worker", threads_per_worker)):
        if value is not None and (isinstance(value, bool) or int(value) < 1):
            raise InputError(f"{name} must be >= 1, got {value!r}")
    if scheduler:
        return _connect(scheduler, scheduler_timeout), None
    from distributed import Client, LocalCluster

    mem = _memory_bytes(memory_limit)
    if mem is not None:
        _check_memory(mem, task_memory, "memory limit")
    dashboard = _dashboard(dashboard_address)
    if gpus is None:
        from ._backend import gpu_available

        gpus = gpu_available() and _has_dask_cuda()
    if gpus:
        cluster = _gpu_cluster(workers, mem, dashboard, log_level)
        return Client(cluster), cluster

    cores = _cores()
    if workers is None:
        threads = int(threads_per_worker or 1)
        workers = max(1, cores // threads)
        if task_memory and mem is None:
            # Each thread runs one task at a time: keep a worker's share >= its tasks' peak.
            fit = int(MEMORY_FRACTION * _total_memory() // max(1, threads * task_memory))
            workers = max(1, min(workers, fit))
    else:
        threads = int(threads_per_worker or max(1, cores // int(workers)))
    workers = int(workers)
    if mem is None:
        mem = int(MEMORY_FRACTION * _total_memory() / workers)
        _check_memory(mem, task_memory, f"this machine's memory shared by {workers} workers")
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        memory_limit=mem,
        dashboard_address=dashboard,
        **_worker_options(log_level),
    )
    return Client(cluster), cluster


def _has_dask_cuda() -> bool:
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        return False
    return True


def describe(client: Any, cluster: Any | None = None) -> str:
    """One line: where the work runs, how many workers/threads/memory, and the dashboard."""
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # older distributed: no n_workers argument
        info = client.scheduler_info()
    except Exception:
        info = {}
    from .progress import format_bytes

    workers = list((info.get("workers") or {}).values())
    kind = "local cluster" if cluster is not None else f"scheduler {client.scheduler.address}"
    if workers:
        threads = sorted({int(w.get("nthreads", 0)) for w in workers})
        mem = min(int(w.get("memory_limit") or 0) for w in workers)
        text = f"Dask {kind}: {len(workers)} worker(s) x {'/'.join(map(str, threads))} thread(s)" + (
            f", {format_bytes(mem)} each" if mem else ""
        )
    else:
        text = f"Dask {kind}: no workers yet (tasks wait until workers join)"
    if cluster is not None and not dashboard_available():
        return text + "; dashboard off (pip install 'bokeh>=3.1' to get it)"
    link = getattr(client, "dashboard_link", None)
    return text + (f"; dashboard {link}" if link else "")


def peak_worker_memory(client: Any) -> int | None:
    """Highest peak resident memory of any worker process so far, in bytes.

    Asks each worker for its own high-water mark (``ru_maxrss``); falls back on
    the scheduler's current memory metric where that is unavailable.
    """

    def maxrss() -> int:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss if sys.platform == "darwin" else rss * 1024)  # kB on Linux

    with contextlib.suppress(Exception):
        values = client.run(maxrss)
        if values:
            return max(int(v) for v in values.values())
    with contextlib.suppress(Exception):
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        values = [int(w["metrics"]["memory"]) for w in workers]
        return max(values) if values else None
    return None


def close(client: Any, cluster: Any | None) -> None:
    """Close the client and a cluster we started, quietly."""
    with contextlib.suppress(Exception):
        client.close()
    if cluster is not None:
        with contextlib.suppress(Exception):
            cluster.close()
