"""Dask workers on HPC batch systems (Slurm, PBS, LSF) through dask-jobqueue.

Each batch job runs one worker process per GPU (``dask cuda worker``) or, for
CPU jobs, one single-threaded ``python -m distributed.cli.dask_worker``
process: bigdecon's chunk tasks are large and use threaded FFTs internally.
The job script exports ``BIGDECON_THREADS`` = the job's cores per Dask thread,
so each task's solver uses every core the job asked for (inside a Dask worker
bigdecon otherwise uses one thread per task).
The batch resource request (CPUs, memory, GPUs) is set explicitly so that it is
independent of how many Dask threads run in the job.

The scheduler runs in the submitting process (as dask-jobqueue does);
``bigdecon submit --slurm ...`` then runs ``bigdecon run`` against it.

The scheduler listens on every interface of the login node (the compute nodes
connect back to it), so by default it speaks TLS and accepts only peers that
present the job's certificate: :func:`write_tls_files` makes a fresh key and
self-signed certificate (``distributed.security.Security.temporary``) for each
submission and writes them, mode 0600 in a new 0700 folder, under a directory
the workers read too (default :data:`TLS_DIRECTORY`, in the home directory that
batch nodes share); the job scripts name those files (``--tls-ca-file`` ...).
Without TLS anyone who reaches that port could run code as the submitting user.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import params

__all__ = [
    "Kind",
    "JOB_CLASSES",
    "TLS_DIRECTORY",
    "TLSFiles",
    "write_tls_files",
    "tls_security",
    "tls_config",
    "jobqueue_kwargs",
    "solver_threads",
    "make_jobqueue_cluster",
    "slurm_cluster",
    "job_script",
    "submit_program",
]

Kind = Literal["slurm", "pbs", "lsf"]

# kind -> (Job class, Cluster class) in dask_jobqueue.<kind>
JOB_CLASSES: dict[str, tuple[str, str]] = {
    "slurm": ("SLURMJob", "SLURMCluster"),
    "pbs": ("PBSJob", "PBSCluster"),
    "lsf": ("LSFJob", "LSFCluster"),
}

# Shown in dry-run scripts, where no scheduler is running yet.
PLACEHOLDER_SCHEDULER = "tls://SCHEDULER-ADDRESS:8786"
PLACEHOLDER_SCHEDULER_TCP = "tcp://SCHEDULER-ADDRESS:8786"
# Where a submission's generated certificate and key go (a folder the compute nodes read).
TLS_DIRECTORY = params.PARAMETERS["tls_dir"].default


@dataclass(frozen=True)
class TLSFiles:
    """The CA, certificate and key files every peer of a job uses (one set for all roles).

    ``folder`` is the folder :func:`write_tls_files` made for them (removed by
    :meth:`remove`), ``None`` for the user's own files (never removed).
    """

    ca_file: str
    cert: str
    key: str
    folder: str | None = None

    def remove(self) -> None:
        """Delete the generated files and their folder (nothing for the user's own files)."""
        if self.folder is None or not Path(self.folder).is_dir():
            return  # the user's own files, or removed already
        for name in (self.ca_file, self.cert, self.key):
            Path(name).unlink(missing_ok=True)
        Path(self.folder).rmdir()


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (never through an existing file or link)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def write_tls_files(directory: str | os.PathLike = TLS_DIRECTORY) -> TLSFiles:
    """A fresh self-signed certificate and key for one job, as 0600 files in a new 0700 folder of ``directory``.

    Examples
    --------
    >>> import stat, tempfile
    >>> files = write_tls_files(tempfile.mkdtemp())
    >>> oct(stat.S_IMODE(os.stat(files.key).st_mode)), oct(stat.S_IMODE(os.stat(files.folder).st_mode))
    ('0o600', '0o700')
    >>> files.remove()
    """
    from distributed.security import Security

    made = Security.temporary()
    base = Path(directory).expanduser()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="job-", dir=base))  # mode 0700
    files = TLSFiles(str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem"), str(folder))
    try:
        _write_private(Path(files.ca_file), str(made.tls_ca_file))
        _write_private(Path(files.cert), str(made.tls_client_cert))
        _write_private(Path(files.key), str(made.tls_client_key))
    except BaseException:
        shutil.rmtree(folder)  # the folder made just above, nothing else
        raise
    return files


def tls_security(files: TLSFiles) -> Any:
    """A ``distributed.security.Security`` for every role from ``files``, encryption required."""
    from distributed.security import Security

    kw: dict[str, Any] = {"tls_ca_file": files.ca_file, "require_encryption": True}
    for role in ("client", "scheduler", "worker"):
        kw[f"tls_{role}_cert"] = files.cert
        kw[f"tls_{role}_key"] = files.key
    return Security(**kw)


def tls_config(files: TLSFiles) -> dict[str, Any]:
    """The dask configuration that makes this process's clients use ``files`` (``dask.config.set``)."""
    return {
        "distributed.comm.require-encryption": True,
        "distributed.comm.tls.ca-file": files.ca_file,
        "distributed.comm.tls.client.cert": files.cert,
        "distributed.comm.tls.client.key": files.key,
    }


def _classes(kind: str) -> tuple[Any, Any]:
    import importlib

    try:
        job_name, cluster_name = JOB_CLASSES[kind]
    except KeyError:
        raise ValueError(f"unknown batch system {kind!r}; use one of {sorted(JOB_CLASSES)}") from None
    module = importlib.import_module(f"dask_jobqueue.{kind}")
    return getattr(module, job_name), getattr(module, cluster_name)


def submit_program(kind: Kind) -> str:
    """Name of the batch system's submit program (``sbatch``, ``qsub``, ``bsub``)."""
    job_cls, _ = _classes(kind)
    return str(job_cls.submit_command).split()[0]


def _lsf_walltime(walltime: str) -> str:
    """LSF's ``-W`` takes ``[hours:]minutes``; drop the seconds of ``HH:MM:SS``."""
    parts = walltime.split(":")
    return ":".join(parts[:2]) if len(parts) == 3 else walltime


def solver_threads(cores: int, processes: int = 1, threads_per_worker: int = 1) -> int:
    """``BIGDECON_THREADS`` of a batch job: its cores per Dask thread, at least 1."""
    return max(1, int(cores) // (max(processes, 1) * max(threads_per_worker, 1)))


def jobqueue_kwargs(
    kind: Kind,
    *,
    cores: int = int(params.PARAMETERS["worker_cpu"].default),
    memory: str | int = params.PARAMETERS["worker_memory"].default,
    walltime: str = params.PARAMETERS["walltime"].default,
    queue: str | None = None,
    account: str | None = None,
    gpus_per_worker: int = params.GPUS_PER_WORKER["hpc"],
    job_extra: Sequence[str] = (),
    python: str | None = None,
    threads_per_worker: int = 1,
    job_script_prologue: Sequence[str] = (),
    local_directory: str | None = None,
    log_directory: str | None = None,
    job_name: str = "bigdecon-worker",
) -> dict[str, Any]:
    """Keyword arguments for a dask-jobqueue Job/Cluster class.

    Parameters
    ----------
    kind
        ``"slurm"``, ``"pbs"`` or ``"lsf"``.
    cores, memory
        CPUs and memory requested from the batch system per job (``memory``:
        :func:`bigdecon.params.parse_memory`, e.g. ``"32GiB"``, ``"32Gi"`` or bytes).
    walltime
        ``HH:MM:SS`` (converted to ``HH:MM`` for LSF).
    queue, account
        Queue/partition and account/project to charge.
    gpus_per_worker
        GPUs per job; ``> 0`` runs ``dask cuda worker`` (one worker per GPU) and
        adds ``--gres=gpu:G`` (Slurm), ``ngpus=G`` (PBS) or ``-gpu "num=G"`` (LSF).
    job_extra
        Extra batch directives, without the ``#SBATCH``/``#PBS``/``#BSUB`` prefix.
    python
        Python executable on the compute nodes (default: this interpreter).
    threads_per_worker
        Dask threads per worker process. Each task's solver gets ``cores`` /
        (processes x threads) threads (``export BIGDECON_THREADS=...``).
    job_script_prologue
        Shell lines run before the worker (``module load ...``, ``source venv``),
        after the ``BIGDECON_THREADS`` export (so they may override it).
    local_directory, log_directory
        Worker scratch directory and batch log directory.
    job_name
        Batch job name.

    Returns
    -------
    dict
        Arguments accepted by both ``<Kind>Job`` and ``<Kind>Cluster``.
    """
    _classes(kind)  # validates kind
    if cores < 1 or threads_per_worker < 1 or gpus_per_worker < 0:
        raise ValueError("cores and threads_per_worker must be >= 1, gpus_per_worker >= 0")
    processes = max(gpus_per_worker, 1)
    nbytes = params.parse_memory(memory)
    extra = list(job_extra)
    kw: dict[str, Any] = dict(
        # jobqueue derives --nthreads from cores/processes and --memory-limit
        # from memory/processes; the batch request is set separately below.
        cores=processes * threads_per_worker,
        processes=processes,
        # Dask gets 90 % so the nanny restarts a worker before the batch
        # system kills the whole job for exceeding its memory request.
        memory=f"{int(nbytes * 0.9)}B",
        walltime=walltime,
        queue=queue,
        python=python,
        job_name=job_name,
        job_script_prologue=[
            f"export BIGDECON_THREADS={solver_threads(cores, processes, threads_per_worker)}",
            *job_script_prologue,
        ],
        local_directory=local_directory,
        log_directory=log_directory,
    )
    if gpus_per_worker > 0:
        # ``python -m dask cuda worker``: the dask CLI dispatches to dask-cuda.
        kw["worker_command"] = "dask cuda worker"
    if kind == "slurm":
        from dask_jobqueue.slurm import slurm_format_bytes_ceil

        kw.update(account=account, job_cpu=cores, job_mem=slurm_format_bytes_ceil(nbytes))
        if gpus_per_worker > 0:
            extra.append(f"--gres=gpu:{gpus_per_worker}")
    elif kind == "pbs":
        from dask_jobqueue.pbs import pbs_format_bytes_ceil

        spec = f"select=1:ncpus={cores}"
        if gpus_per_worker > 0:
            spec += f":ngpus={gpus_per_worker}"
        kw.update(account=account, resource_spec=f"{spec}:mem={pbs_format_bytes_ceil(nbytes)}")
    else:  # lsf
        kw.update(project=account, ncpus=cores, mem=nbytes, walltime=_lsf_walltime(walltime))
        if gpus_per_worker > 0:
            extra.append(f'-gpu "num={gpus_per_worker}"')
    kw["job_extra_directives"] = extra
    return kw


def make_jobqueue_cluster(
    kind: Kind,
    workers: int = 0,
    cores: int = int(params.PARAMETERS["worker_cpu"].default),
    memory: str | int = params.PARAMETERS["worker_memory"].default,
    walltime: str = params.PARAMETERS["walltime"].default,
    queue: str | None = None,
    account: str | None = None,
    gpus_per_worker: int = params.GPUS_PER_WORKER["hpc"],
    job_extra: Sequence[str] = (),
    python: str | None = None,
    *,
    scheduler_options: dict[str, Any] | None = None,
    security: Any = None,
    tls: bool = params.PARAMETERS["tls"].default,
    tls_dir: str | os.PathLike = TLS_DIRECTORY,
    **kwargs: Any,
) -> Any:
    """Start a dask-jobqueue cluster and submit ``workers`` batch jobs.

    Parameters
    ----------
    kind, cores, memory, walltime, queue, account, gpus_per_worker, job_extra, python
        See :func:`jobqueue_kwargs`.
    workers
        Batch jobs to submit now (``cluster.scale(jobs=workers)``); 0 submits none.
    scheduler_options
        Passed to the in-process scheduler, e.g. ``{"host": "10.0.0.5"}`` or
        ``{"dashboard_address": ":8787"}`` (default: the dashboard on
        127.0.0.1 only; reach it through ``ssh -L``).
    security
        A ``distributed.security.Security`` with certificate *files*
        (:func:`tls_security`); by default one made for this cluster by
        :func:`write_tls_files` under ``tls_dir`` (removed when the cluster is
        closed or collected). The scheduler and the workers speak TLS
        (``tls://``), the job scripts name the files, and ``Client(cluster)``
        uses them.
    tls
        ``False`` (and no ``security``): plain TCP, unsafe: anyone who reaches
        the scheduler's port can run code as you.
    tls_dir
        Where the generated files go: a folder the compute nodes read.
    **kwargs
        More :func:`jobqueue_kwargs` options (``threads_per_worker``, ...).

    Returns
    -------
    dask_jobqueue.JobQueueCluster
        Close it (or use it as a context manager) to cancel the jobs.
    """
    _, cluster_cls = _classes(kind)
    kw = jobqueue_kwargs(
        kind,
        cores=cores,
        memory=memory,
        walltime=walltime,
        queue=queue,
        account=account,
        gpus_per_worker=gpus_per_worker,
        job_extra=job_extra,
        python=python,
        **kwargs,
    )
    from .cluster import _dashboard

    options = {"dashboard_address": _dashboard(None) or "127.0.0.1:0", **(scheduler_options or {})}
    files = write_tls_files(tls_dir) if security is None and tls else None
    if files is not None:
        security = tls_security(files)
    if security is not None:
        kw.update(security=security, protocol="tls://")
    try:
        cluster = cluster_cls(scheduler_options=options, **kw)
    except BaseException:
        if files is not None:
            files.remove()
        raise
    if files is not None:
        weakref.finalize(cluster, files.remove)
        _remove_on_close(cluster, files)
    if workers:
        cluster.scale(jobs=workers)
    return cluster


def _remove_on_close(cluster: Any, files: TLSFiles) -> None:
    """Delete the cluster's generated certificate files once it is closed (the workers have gone)."""
    close = cluster.close

    def close_and_remove(*args: Any, **kwargs: Any) -> Any:
        try:
            return close(*args, **kwargs)
        finally:
            files.remove()

    cluster.close = close_and_remove


def slurm_cluster(workers: int = 0, **kwargs: Any) -> Any:
    """:func:`make_jobqueue_cluster` for Slurm."""
    return make_jobqueue_cluster("slurm", workers, **kwargs)


def job_script(
    kind: Kind,
    *,
    scheduler_address: str | None = None,
    security: Any = None,
    tls: bool = params.PARAMETERS["tls"].default,
    tls_dir: str | os.PathLike = TLS_DIRECTORY,
    **kwargs: Any,
) -> str:
    """Text of the batch script one worker job would be submitted with.

    Same text as ``cluster.job_script()`` of :func:`make_jobqueue_cluster` with
    these options, but without starting a scheduler.

    Parameters
    ----------
    kind
        ``"slurm"``, ``"pbs"`` or ``"lsf"``.
    scheduler_address
        Address written into the worker command; default a placeholder.
    security, tls, tls_dir
        As for :func:`make_jobqueue_cluster`; without ``security`` the script
        names the files a cluster would generate (``job-XXXXXXXX`` standing for
        the folder's random name). Nothing is written.
    **kwargs
        :func:`jobqueue_kwargs` options.
    """
    job_cls, _ = _classes(kind)
    kw = jobqueue_kwargs(kind, **kwargs)
    placeholder = PLACEHOLDER_SCHEDULER_TCP
    if security is None and tls:
        folder = os.path.join(os.fspath(tls_dir), "job-XXXXXXXX")
        security = tls_security(TLSFiles(*(os.path.join(folder, n) for n in ("ca.pem", "cert.pem", "key.pem"))))
    if security is not None:
        kw.update(security=security, protocol="tls://")
        placeholder = PLACEHOLDER_SCHEDULER
    # jobqueue names workers "<cluster name>-<n>"; show the first one.
    job = job_cls(scheduler=scheduler_address or placeholder, name="dummy-name", **kw)
    return job.job_script()
