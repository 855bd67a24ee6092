"""``bigdecon submit`` (a Kubernetes DaskJob, or Dask workers as Slurm/PBS/LSF jobs), ``status`` and ``logs``.

The manifests and the Kubernetes API calls are :mod:`bigdecon.k8s`; the batch
systems are :mod:`bigdecon.hpc`. This module turns command-line arguments into
their calls: it checks the run's parameters and the paths the pods will see
first, and forwards every run option to the job's ``bigdecon run``.
"""

from __future__ import annotations

import argparse
import os
import posixpath
import re
import shutil
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..io.paths import redact
from ..params import GPUS_PER_WORKER, PARAMETERS, SUBMIT_GROUPS, SUBMIT_WORKERS, parse_psf_files
from .config import fmt_number
from .options import (
    Parser,
    add_cluster_options,
    add_run_options,
    check_parameters,
    given,
    resolve_options,
    run_argv_from_args,
)

__all__ = [
    "EXPLICIT_RUN_OPTIONS",
    "add_parser",
    "logs_command",
    "looks_like_gpu_image",
    "pod_path_problems",
    "psf_files",
    "psf_paths",
    "run_argv",
    "status_command",
    "submit_command",
]

# Parameters every submitted job states explicitly, even at their defaults, so that
# the result does not depend on the defaults of the bigdecon installed in the image.
EXPLICIT_RUN_OPTIONS = tuple(p.name for p in PARAMETERS.values() if p.explicit)

# The options k8s.build_daskjob takes as they are resolved.
_K8S_JOB_KEYS = (
    "image",
    "workers",
    "namespace",
    "worker_memory",
    "worker_cpu",
    "storage_secret",
    "scheduler_memory",
    "job_memory",
    "service_account",
    "pvc",
    "pvc_mount",
    "tls",
)


def add_parser(subparsers: Any) -> None:
    """Register the ``submit``, ``status`` and ``logs`` subcommands."""
    from ..k8s import JOB_SCHEDULER_TIMEOUT

    p = subparsers.add_parser(
        "submit",
        help="run a job on Kubernetes (DaskJob) or an HPC batch system",
        description=(
            "Submit 'bigdecon run INPUT OUTPUT ...' to a Kubernetes cluster with the "
            "dask-kubernetes operator (default), or run it here against Dask workers "
            "started through Slurm/PBS/LSF (--slurm/--pbs/--lsf)."
        ),
    )
    p.add_argument("input", metavar="INPUT", help="input OME-Zarr (as the workers see it)")
    p.add_argument("output", metavar="OUTPUT", help="output OME-Zarr (as the workers see it)")
    add_run_options(p, "submit")
    for action in p._actions:
        if action.dest == "scheduler_timeout":
            # The runner pod starts before the scheduler is up and is not restarted.
            action.help = (
                f"how long the job keeps trying to reach its scheduler (default "
                f"{fmt_number(JOB_SCHEDULER_TIMEOUT)} on Kubernetes)"
            )

    # The job's workers, its network security, Kubernetes and Slurm/PBS/LSF: all from the parameter model.
    add_cluster_options(p, "submit")
    p.set_defaults(func=submit_command)

    for cmd, func, text in (
        ("status", status_command, "show the status of a submitted DaskJob"),
        ("logs", logs_command, "print the logs of a DaskJob's job-runner pod"),
    ):
        s = subparsers.add_parser(cmd, help=text, description=text)
        s.add_argument("name", metavar="NAME", help="DaskJob name")
        add_cluster_options(s, cmd)  # --namespace, --kubeconfig (and logs' --tail)
        s.set_defaults(func=func)


# --------------------------------------------------------------------------- what the job runs


def run_argv(args: argparse.Namespace) -> list[str]:
    """The ``bigdecon run`` options of ``args``, every parameter of :data:`EXPLICIT_RUN_OPTIONS` included.

    The others are written when they differ from this machine's defaults
    (``--scheduler-timeout`` also when it was given), in the parameter
    table's order.
    """
    explicit = [*EXPLICIT_RUN_OPTIONS, *(["scheduler_timeout"] if given(args, "scheduler_timeout") else [])]
    return run_argv_from_args(args, explicit=explicit)


# --------------------------------------------------------------------------- paths the pods see


def psf_files(value: Any) -> list[tuple[int | None, str]]:
    """``(channel or None, path)`` of each file in a ``--psf`` value: ``PATH``,
    per-channel ``C=PATH`` tokens, or a ``{channel: path}`` dict (in its order)."""
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        return [(int(k), str(v)) for k, v in value.items()]
    parsed = parse_psf_files(value)
    if isinstance(parsed, dict):
        return list(parsed.items())
    return [(None, parsed)]


def psf_paths(value: Any) -> list[str]:
    """The file paths in a ``--psf`` value (see :func:`psf_files`)."""
    return [path for _channel, path in psf_files(value)]


def pod_path_problems(
    paths: Sequence[tuple[str, str]], pvc: str | None, pvc_mount: str = PARAMETERS["pvc_mount"].default
) -> tuple[list[str], list[str]]:
    """Paths the pods will not see, as ``(errors, warnings)``.

    Parameters
    ----------
    paths
        ``(label, path)`` pairs, e.g. ``("INPUT", "s3://b/in.zarr")``; a label
        starting with ``PSF`` is a measured PSF, which ``bigdecon run`` reads
        from a file of the job pod (not from object storage).
    pvc, pvc_mount
        The claim mounted in the pods, and where.

    Returns
    -------
    errors, warnings
        Errors are certainly wrong (a relative path with ``--pvc``: the pods'
        working directory is not on the claim); warnings may be right (a path
        inside the image, say).
    """
    from ..io.paths import is_url  # (bigdecon.io loads zarr and dask: only when needed)

    errors: list[str] = []
    warnings: list[str] = []
    mount = posixpath.normpath(pvc_mount or "/")
    for label, path in paths:
        is_psf = label.startswith("PSF")
        if is_url(path):
            if is_psf:
                warnings.append(
                    f"{label} {path!r} is a URL: 'bigdecon run' reads --psf from a file "
                    "the job pod sees (put it on the --pvc volume)"
                )
            continue
        # As given (not made absolute here): the pods' working directory is not ours.
        local = str(path)[len("file://") :] if str(path).startswith("file://") else str(path)
        if not pvc:
            # Pods don't see the submitting machine's files.
            where = "put it on a volume (--pvc)" if is_psf else "use object storage or --pvc"
            warnings.append(f"{label} {path!r} is not a URL; the pods must see it ({where})")
            continue
        if not local.startswith("/"):
            errors.append(
                f"{label} {path!r} is a relative path; with --pvc give the path the pods "
                f"see, under --pvc-mount {pvc_mount}"
            )
            continue
        norm = posixpath.normpath(local)
        if norm != mount and not norm.startswith(mount.rstrip("/") + "/"):
            warnings.append(
                f"{label} {path!r} is outside --pvc-mount {pvc_mount}; the pods see only their image's files there"
            )
    return errors, warnings


def looks_like_gpu_image(image: str) -> bool:
    """Whether an image reference names CUDA or a GPU (``...:0.1.0-cuda``, ``.../bigdecon-gpu``)."""
    return re.search(r"cuda|gpu", str(image), re.IGNORECASE) is not None


# --------------------------------------------------------------------------- commands


def _error(cmd: str, exc: BaseException) -> int:
    # One line, no traceback: the usual causes are config/credential problems.
    msg = redact(" ".join(str(exc).split()) or type(exc).__name__)
    if len(msg) > 300:
        msg = msg[:297] + "..."
    print(f"bigdecon {cmd}: error: {type(exc).__name__}: {msg}", file=sys.stderr)
    return 1


def _warn(message: str) -> None:
    print(f"bigdecon submit: warning: {redact(message)}", file=sys.stderr)


def _refuse(message: str) -> int:
    print(f"bigdecon submit: error: {redact(message)}", file=sys.stderr)
    return 2


def submit_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon submit``."""
    try:
        resolved = resolve_options(args, cluster=False)
        check_parameters(resolved)
    except InputError as exc:
        return _refuse(str(exc))
    args.debug = resolved["debug"]  # main() reads it on errors
    try:
        job = _job_options(args)
    except InputError as exc:
        return _refuse(str(exc))
    if not job["tls"]:
        _warn(
            "--no-tls: the job's scheduler accepts plain TCP from anyone who reaches its port, "
            "who can then run code as you and read your data"
        )
    if job["hpc"]:
        return _submit_hpc(args, job)
    if not job["image"]:
        return _refuse("--image is required for Kubernetes")
    from .. import k8s

    gpus = GPUS_PER_WORKER["kubernetes"] if job["gpus_per_worker"] is None else job["gpus_per_worker"]
    paths = [("INPUT", args.input), ("OUTPUT", args.output)]
    paths += [("PSF" if c is None else f"PSF of channel {c}", p) for c, p in psf_files(resolved.get("psf"))]
    errors, warnings = pod_path_problems(paths, job["pvc"], job["pvc_mount"])
    if errors:
        return _refuse(errors[0])
    try:
        manifests = k8s.build_job(
            job["name"],
            args.input,
            args.output,
            run_argv(args),
            gpus_per_worker=gpus,
            dashboard_from=job["dashboard_from"] or (),
            **{key: job[key] for key in _K8S_JOB_KEYS},
        )
    except ValueError as exc:
        return _refuse(str(exc))
    if job["tls_ca_file"]:
        _warn("--tls-ca-file/--tls-cert/--tls-key are for Slurm/PBS/LSF; on Kubernetes each job gets its own Secret")
    for message in warnings:
        _warn(message)
    for what, path in (("INPUT", args.input), ("OUTPUT", args.output)):
        if redact(path) != path:  # the annotations are redacted; the runner's arguments cannot be
            _warn(
                f"{what} carries credentials in its URL: they travel in the job's arguments, readable by "
                "anyone who can read the DaskJob; give them through --storage-secret instead"
            )
    if gpus > 0 and not looks_like_gpu_image(job["image"]):
        # 'dask cuda worker' is only in the CUDA image: CPU-image workers would crash-loop.
        default = " (the default on Kubernetes)" if job["gpus_per_worker"] is None else ""
        _warn(
            f"{gpus} GPU(s) per worker{default} with image {job['image']!r}, "
            "whose name has no 'cuda' or 'gpu': GPU workers run 'dask cuda worker', which "
            "only the CUDA image has; use --gpus-per-worker 0 with a CPU image"
        )
    if job["dry_run"]:
        # The job's Secret (its TLS key), NetworkPolicy and DaskJob: apply them in this order.
        sys.stdout.write(k8s.to_yaml(manifests))
        return 0
    try:
        k8s.create_job(manifests, kubeconfig=job["kubeconfig"])
    except Exception as exc:
        return _error("submit", exc)
    meta = manifests[-1]["metadata"]
    print(f"daskjob {meta['namespace']}/{meta['name']} created")
    print(f"  bigdecon status {meta['name']} --namespace {meta['namespace']}")
    print(f"  bigdecon logs {meta['name']} --namespace {meta['namespace']}")
    return 0


def _job_options(args: argparse.Namespace) -> dict[str, Any]:
    """The job's own options (``SUBMIT_GROUPS``: ``tls``, ``image``, ``walltime`` ...; and ``workers``), checked."""
    resolved = resolve_options(args)
    out = {key: resolved[key] for key, p in PARAMETERS.items() if p.group in SUBMIT_GROUPS and key in resolved}
    out["workers"] = SUBMIT_WORKERS if resolved["workers"] is None else resolved["workers"]
    own = [out[k] for k in ("tls_ca_file", "tls_cert", "tls_key")]
    if any(own) and not all(own):
        raise InputError("give --tls-ca-file, --tls-cert and --tls-key together (or none: a generated certificate)")
    if any(own) and not out["tls"]:
        raise InputError("--no-tls with TLS certificates: choose one")
    return out


def _tls_files(security: dict[str, Any]) -> Any:
    """The job's TLS files: the user's, or generated under --tls-dir (None with --no-tls)."""
    from .. import hpc

    if not security["tls"]:
        return None
    if security["tls_ca_file"]:
        for key in ("tls_ca_file", "tls_cert", "tls_key"):
            if not os.path.isfile(os.path.expanduser(security[key])):
                raise InputError(f"--{key.replace('_', '-')} {security[key]}: no such file")
        return hpc.TLSFiles(*(os.path.expanduser(security[k]) for k in ("tls_ca_file", "tls_cert", "tls_key")))
    if security["dry_run"]:  # nothing is written: hpc.job_script names where the files would go
        return None
    try:
        return hpc.write_tls_files(security["tls_dir"])
    except OSError as exc:
        raise InputError(
            f"cannot write the job's TLS certificate under --tls-dir {security['tls_dir']}: {exc}"
        ) from None


def _submit_hpc(args: argparse.Namespace, job: dict[str, Any]) -> int:
    from .. import hpc

    try:
        cores = job["cores"] or int(job["worker_cpu"])
    except ValueError:
        print("bigdecon submit: error: give --cores N (whole CPUs) for batch jobs", file=sys.stderr)
        return 2
    gpus = job["gpus_per_worker"]
    options = dict(
        cores=cores,
        memory=job["memory"] or job["worker_memory"],
        walltime=job["walltime"],
        queue=job["queue"],
        account=job["account"],
        gpus_per_worker=GPUS_PER_WORKER["hpc"] if gpus is None else gpus,
        job_extra=list(job["job_extra"]),
    )
    forwarded = run_argv(args)
    submit = hpc.submit_program(job["hpc"])
    if not job["dry_run"] and shutil.which(submit) is None:
        # Without it jobqueue only logs the failure and the run would wait forever.
        print(f"bigdecon submit: error: '{submit}' not found; run this on a {job['hpc']} login node", file=sys.stderr)
        return 1
    try:
        files = _tls_files(job)
    except InputError as exc:
        return _refuse(str(exc))
    sec = hpc.tls_security(files) if files is not None else None
    if job["dry_run"]:
        script = hpc.job_script(job["hpc"], security=sec, tls=job["tls"], tls_dir=job["tls_dir"], **options)
        sys.stdout.write(script)
        return 0
    try:
        return _run_on_jobqueue(args, job, options, forwarded, files, sec)
    finally:
        if files is not None:
            files.remove()


def _run_on_jobqueue(
    args: argparse.Namespace, job: dict[str, Any], options: dict[str, Any], forwarded: list[str], files: Any, sec: Any
) -> int:
    """Start the batch workers and run the job against them from this process (with the job's TLS)."""
    import contextlib

    import dask

    from .. import hpc
    from .run import add_arguments, run_command

    try:
        cluster = hpc.make_jobqueue_cluster(
            job["hpc"], workers=job["workers"], security=sec, tls=sec is not None, **options
        )
    except Exception as exc:
        return _error("submit", exc)
    client_tls = dask.config.set(hpc.tls_config(files)) if files is not None else contextlib.nullcontext()
    try:
        # This process runs the job against the batch workers; its errors reach main() as run's would.
        parser = Parser(prog="bigdecon run")
        add_arguments(parser)
        run_args = parser.parse_args([args.input, args.output, *forwarded, "--scheduler", cluster.scheduler_address])
        with client_tls:
            return run_command(run_args)
    finally:
        cluster.close()


def status_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon status``."""
    from ..k8s import daskjob_status

    job = resolve_options(args)
    try:
        status = daskjob_status(args.name, job["namespace"], kubeconfig=job["kubeconfig"])
    except Exception as exc:
        return _error("status", exc)
    print(f"{job['namespace']}/{args.name}: {status.get('jobStatus') or 'Pending'}")
    for key in ("clusterName", "jobRunnerPodName", "startTime", "endTime"):
        if status.get(key):
            print(f"  {key}: {status[key]}")
    return 0


def logs_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon logs``."""
    from ..k8s import daskjob_logs

    job = resolve_options(args)
    try:
        text = daskjob_logs(args.name, job["namespace"], kubeconfig=job["kubeconfig"], tail_lines=job["tail"])
    except Exception as exc:
        return _error("logs", exc)
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return 0
