"""Run ``bigdecon run`` on Kubernetes as a dask-kubernetes ``DaskJob``.

A ``DaskJob`` (operator group ``kubernetes.dask.org/v1``) holds three pod
templates built from one image:

* the **scheduler** (``dask scheduler``) behind a Service with the ports
  ``tcp-comm`` (8786) and ``http-dashboard`` (8787);
* ``workers`` **worker** pods (``dask worker`` or, with GPUs,
  ``dask cuda worker``, which starts one worker process per visible GPU);
* the **job runner** pod, which runs ``bigdecon run INPUT OUTPUT ...
  --scheduler $(DASK_SCHEDULER_ADDRESS)`` and whose exit ends the job.

The operator injects ``DASK_SCHEDULER_ADDRESS`` (job and workers) and
``DASK_WORKER_NAME`` (workers) into the containers' environment, and Kubernetes
expands ``$(VAR)`` references to them in ``args``; every user-given value in
``args`` is escaped (``$`` -> ``$$``) so that it reaches the program verbatim.
None of the pods need the Kubernetes API, so their service-account token is not
mounted.

Worker containers get ``BIGDECON_THREADS`` = the pod's CPUs per Dask thread, so
a single-threaded Dask worker's solver still uses every CPU the pod was given
(inside a Dask worker bigdecon defaults it to 1, and ``os.sched_getaffinity``
does not see a pod's CPU limit).

This module also registers the ``submit``, ``status`` and ``logs`` CLI
subcommands (see :func:`add_submit_parser`).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import math
import posixpath
import re
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

import yaml

__all__ = [
    "DASKJOB_GROUP",
    "DASKJOB_VERSION",
    "DASKJOB_PLURAL",
    "SCHEDULER_PORT",
    "DASHBOARD_PORT",
    "WORKER_DASHBOARD_PORT",
    "JOB_SCHEDULER_TIMEOUT",
    "scheduler_args",
    "worker_args",
    "worker_threads",
    "job_args",
    "k8s_escape",
    "default_job_name",
    "build_daskjob",
    "rbac_manifests",
    "to_yaml",
    "create_daskjob",
    "daskjob_status",
    "daskjob_logs",
    "EXPLICIT_RUN_OPTIONS",
    "psf_files",
    "psf_paths",
    "pod_path_problems",
    "looks_like_gpu_image",
    "add_submit_parser",
    "submit_command",
    "status_command",
    "logs_command",
]

DASKJOB_GROUP = "kubernetes.dask.org"
DASKJOB_VERSION = "v1"
DASKJOB_PLURAL = "daskjobs"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788
# The operator starts the job runner right after the DaskCluster, before the
# scheduler pod is up (image pull, scheduling): the runner keeps retrying this long.
JOB_SCHEDULER_TIMEOUT = 600.0

# Fraction of the pod memory limit handed to Dask: the nanny restarts a worker
# before the kernel OOM-kills the whole pod.
_DASK_MEMORY_FRACTION = 0.9
# "<name>-scheduler" must stay a DNS-1035 label (63 chars).
_MAX_NAME = 50
_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_PART_OF = {"app.kubernetes.io/part-of": "bigdecon"}


# --------------------------------------------------------------------------
# Container commands
# --------------------------------------------------------------------------
def scheduler_args() -> list[str]:
    """Command line of the scheduler container."""
    return [
        "dask",
        "scheduler",
        "--port",
        str(SCHEDULER_PORT),
        "--dashboard-address",
        f":{DASHBOARD_PORT}",
    ]


def worker_args(memory_limit: str, gpus_per_worker: int = 1) -> list[str]:
    """Command line of a worker container.

    Parameters
    ----------
    memory_limit
        Dask memory limit of each worker process (``dask`` byte string).
    gpus_per_worker
        GPUs in the pod; ``> 0`` uses ``dask cuda worker``, which starts one
        single-threaded worker per GPU (the image must have dask-cuda: use
        ``0`` with the CPU image).

    Returns
    -------
    list of str
        Arguments with the ``$(DASK_SCHEDULER_ADDRESS)`` and
        ``$(DASK_WORKER_NAME)`` references Kubernetes expands.
    """
    prog = ["dask", "cuda", "worker"] if gpus_per_worker > 0 else ["dask", "worker"]
    # Several worker processes in one pod cannot share one dashboard port: with
    # more than one GPU each picks a free port (the scheduler links to them).
    dashboard = str(WORKER_DASHBOARD_PORT) if gpus_per_worker <= 1 else ":0"
    return [
        *prog,
        "$(DASK_SCHEDULER_ADDRESS)",
        "--nthreads",
        "1",
        "--memory-limit",
        memory_limit,
        "--name",
        "$(DASK_WORKER_NAME)",
        "--dashboard-address",
        dashboard,
    ]


def worker_threads(worker_cpu: int | str, processes: int = 1, threads_per_process: int = 1) -> int:
    """``BIGDECON_THREADS`` for a worker pod: its CPUs per Dask thread, at least 1.

    Parameters
    ----------
    worker_cpu
        The pod's CPU limit as a Kubernetes quantity (``8``, ``"7.5"``, ``"500m"``).
    processes
        Dask worker processes in the pod (one per GPU, else 1).
    threads_per_process
        Dask threads per worker process.
    """
    from kubernetes.utils import parse_quantity

    cpus = parse_quantity(str(worker_cpu))
    return max(1, math.floor(cpus / (max(processes, 1) * max(threads_per_process, 1))))


def k8s_escape(value: str) -> str:
    """Escape ``value`` for a container's ``args``: Kubernetes expands ``$(VAR)``
    and turns ``$$`` into ``$``, so doubling every ``$`` passes it through verbatim."""
    return str(value).replace("$", "$$")


def job_args(
    input: str,
    output: str,
    run_argv: Sequence[str],
    scheduler_timeout: float | None = JOB_SCHEDULER_TIMEOUT,
) -> list[str]:
    """Command line of the job-runner container.

    ``--scheduler-timeout scheduler_timeout`` is added unless ``run_argv``
    has one (``None`` adds none): the runner pod is started before the
    scheduler is ready and is not restarted. User values are escaped with
    :func:`k8s_escape`; only ``$(DASK_SCHEDULER_ADDRESS)`` is expanded.
    """
    argv = [str(a) for a in run_argv]
    if scheduler_timeout is not None and "--scheduler-timeout" not in argv:
        argv += ["--scheduler-timeout", _fmt_number(scheduler_timeout)]
    return [
        "bigdecon",
        "run",
        k8s_escape(input),
        k8s_escape(output),
        *map(k8s_escape, argv),
        "--scheduler",
        "$(DASK_SCHEDULER_ADDRESS)",
    ]


def _fmt_number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------
# Manifest building
# --------------------------------------------------------------------------
def _quantity_bytes(quantity: str) -> int:
    """Bytes in a Kubernetes memory quantity such as ``32Gi`` or ``500M``."""
    from kubernetes.utils import parse_quantity

    return int(parse_quantity(str(quantity)))


def _dask_memory_limit(pod_memory: str, processes: int) -> str:
    """Per-process Dask memory limit for ``processes`` workers in one pod."""
    mib = int(_quantity_bytes(pod_memory) * _DASK_MEMORY_FRACTION / max(processes, 1))
    return f"{mib // 2**20}MiB"


def default_job_name(input: str, output: str) -> str:
    """Deterministic DaskJob name from the output's stem and a short hash.

    Deterministic so that ``submit --dry-run`` is reproducible.
    """
    stem = PurePosixPath(str(output).rstrip("/")).name
    for suffix in (".ome.zarr", ".zarr"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:24].strip("-")
    digest = hashlib.sha1(f"{input}\0{output}".encode()).hexdigest()[:6]
    return "-".join(p for p in ("bigdecon", slug, digest) if p)


def _check_name(name: str) -> None:
    if len(name) > _MAX_NAME or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid job name {name!r}: use lowercase letters, digits and '-', "
            f"start with a letter, at most {_MAX_NAME} characters"
        )


def _container(
    name: str,
    image: str,
    args: list[str],
    resources: dict[str, Any],
    *,
    ports: list[dict[str, Any]] | None = None,
    storage_secret: str | None = None,
    volume_mounts: list[dict[str, Any]] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "resources": resources,
    }
    if ports:
        c["ports"] = ports
    if env:
        # ``env`` wins over ``envFrom`` keys of the same name.
        c["env"] = [{"name": k, "value": str(v)} for k, v in env.items()]
    if storage_secret:
        c["envFrom"] = [{"secretRef": {"name": storage_secret}}]
    if volume_mounts:
        c["volumeMounts"] = volume_mounts
    return c


def _pod_spec(
    containers: list[dict[str, Any]],
    *,
    service_account: str | None,
    volumes: list[dict[str, Any]] | None = None,
    restart_policy: str | None = None,
    gpu: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": containers,
        # No pod talks to the Kubernetes API: don't hand it a token.
        "automountServiceAccountToken": False,
    }
    if service_account:
        spec["serviceAccountName"] = service_account
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    if volumes:
        spec["volumes"] = volumes
    if gpu:
        # GPU node pools are commonly tainted so that only GPU pods land there.
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    return spec


def build_daskjob(
    name: str | None,
    input: str,
    output: str,
    run_argv: Sequence[str],
    *,
    image: str,
    workers: int,
    gpus_per_worker: int = 1,
    namespace: str = "default",
    worker_memory: str = "32Gi",
    worker_cpu: int | str = 8,
    storage_secret: str | None = None,
    scheduler_memory: str = "4Gi",
    job_memory: str = "4Gi",
    service_account: str | None = None,
    pvc: str | None = None,
    pvc_mount: str = "/data",
    scheduler_timeout: float | None = JOB_SCHEDULER_TIMEOUT,
) -> dict[str, Any]:
    """Build a ``DaskJob`` manifest running ``bigdecon run`` on a Dask cluster.

    Parameters
    ----------
    name
        DaskJob name (also the Dask cluster's name); ``None`` derives one with
        :func:`default_job_name`.
    input, output
        Dataset locations as the pods see them (object-storage URLs, or paths
        under ``pvc_mount``).
    run_argv
        ``bigdecon run`` options, without INPUT/OUTPUT and ``--scheduler``.
        Give every parameter explicitly (``bigdecon submit`` does) so that the
        result does not depend on the defaults of the bigdecon in the image.
    image
        Container image with bigdecon installed (used by every pod).
    workers
        Number of worker pods.
    gpus_per_worker
        ``nvidia.com/gpu`` limit per worker pod; ``0`` runs CPU workers.
    namespace
        Namespace of the DaskJob.
    worker_memory, worker_cpu
        Requests and limits of each worker pod. The workers' solvers use
        ``worker_cpu`` / GPUs threads (``BIGDECON_THREADS``).
    storage_secret
        Secret whose keys become environment variables (``envFrom``) of the job
        and worker containers, e.g. ``AWS_ACCESS_KEY_ID``.
    scheduler_memory, job_memory
        Memory requests/limits of the scheduler and job-runner pods.
    service_account
        Optional ServiceAccount for all pods (see :func:`rbac_manifests`).
    pvc, pvc_mount
        Optional PersistentVolumeClaim mounted at ``pvc_mount`` in the job and
        worker pods, for data on a shared file system.
    scheduler_timeout
        Seconds the runner keeps trying to reach the scheduler (see
        :func:`job_args`).

    Returns
    -------
    dict
        The manifest, ready for :func:`to_yaml` or :func:`create_daskjob`.
    """
    name = name or default_job_name(input, output)
    _check_name(name)
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if gpus_per_worker < 0:
        raise ValueError("gpus_per_worker must be >= 0")

    volumes = volume_mounts = None
    if pvc:
        volumes = [{"name": "data", "persistentVolumeClaim": {"claimName": pvc}}]
        volume_mounts = [{"name": "data", "mountPath": pvc_mount}]

    scheduler = _container(
        "scheduler",
        image,
        scheduler_args(),
        {
            "requests": {"cpu": "1", "memory": scheduler_memory},
            "limits": {"memory": scheduler_memory},
        },
        ports=[
            {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
        ],
    )
    health = {"httpGet": {"path": "/health", "port": "http-dashboard"}}
    # Separate copies: a shared dict would become a YAML anchor/alias.
    scheduler["readinessProbe"] = {**copy.deepcopy(health), "initialDelaySeconds": 5, "periodSeconds": 10}
    scheduler["livenessProbe"] = {**copy.deepcopy(health), "initialDelaySeconds": 15, "periodSeconds": 20}

    cpu = str(worker_cpu)
    worker_limits: dict[str, Any] = {"cpu": cpu, "memory": worker_memory}
    if gpus_per_worker > 0:
        worker_limits["nvidia.com/gpu"] = str(gpus_per_worker)
    processes = max(gpus_per_worker, 1)
    worker = _container(
        "worker",
        image,
        worker_args(_dask_memory_limit(worker_memory, processes), gpus_per_worker),
        {"requests": {"cpu": cpu, "memory": worker_memory}, "limits": worker_limits},
        # One process: a fixed dashboard port; several pick free ports (see worker_args).
        ports=[{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD_PORT, "protocol": "TCP"}]
        if processes == 1
        else None,
        storage_secret=storage_secret,
        volume_mounts=copy.deepcopy(volume_mounts),
        env={"BIGDECON_THREADS": str(worker_threads(worker_cpu, processes))},
    )

    job = _container(
        "job",
        image,
        job_args(input, output, run_argv, scheduler_timeout),
        {
            "requests": {"cpu": "1", "memory": job_memory},
            "limits": {"memory": job_memory},
        },
        storage_secret=storage_secret,
        volume_mounts=copy.deepcopy(volume_mounts),
    )

    return {
        "apiVersion": f"{DASKJOB_GROUP}/{DASKJOB_VERSION}",
        "kind": "DaskJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(_PART_OF),
            "annotations": {"bigdecon/input": str(input), "bigdecon/output": str(output)},
        },
        "spec": {
            "job": {
                "metadata": {"labels": dict(_PART_OF)},
                "spec": _pod_spec(
                    [job],
                    service_account=service_account,
                    volumes=copy.deepcopy(volumes),
                    restart_policy="Never",
                ),
            },
            # No "metadata" here: the CRD has none at this level (it would be pruned).
            "cluster": {
                "spec": {
                    "worker": {
                        "replicas": int(workers),
                        "spec": _pod_spec(
                            [worker],
                            service_account=service_account,
                            volumes=copy.deepcopy(volumes),
                            gpu=gpus_per_worker > 0,
                        ),
                    },
                    "scheduler": {
                        "spec": _pod_spec([scheduler], service_account=service_account),
                        "service": {
                            "type": "ClusterIP",
                            "selector": {
                                "dask.org/cluster-name": name,
                                "dask.org/component": "scheduler",
                            },
                            "ports": [
                                {
                                    "name": "tcp-comm",
                                    "protocol": "TCP",
                                    "port": SCHEDULER_PORT,
                                    "targetPort": "tcp-comm",
                                },
                                {
                                    "name": "http-dashboard",
                                    "protocol": "TCP",
                                    "port": DASHBOARD_PORT,
                                    "targetPort": "http-dashboard",
                                },
                            ],
                        },
                    },
                },
            },
        },
    }


def rbac_manifests(
    namespace: str = "default",
    *,
    service_account: str = "bigdecon",
    submitter_group: str = "bigdecon-users",
) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding for running bigdecon jobs.

    The job-runner, scheduler and worker pods need **no** Kubernetes API rights:
    the runner reaches the scheduler through its Service and the operator does
    all the creating.  The ``ServiceAccount`` therefore only exists so that the
    pods do not run as the namespace's ``default`` account, and has its token
    mounting switched off.  The ``Role`` is for the *submitting users*
    (``bigdecon submit/status/logs``): create/inspect/delete ``daskjobs`` and
    read the runner pod's logs.  It is bound to the group ``submitter_group``;
    bind it to your users or groups as your cluster's authentication names them.

    Returns
    -------
    list of dict
        ``[ServiceAccount, Role, RoleBinding]``.
    """
    role = f"{service_account}-submitter"
    labels = dict(_PART_OF)
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service_account, "namespace": namespace, "labels": labels},
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": role, "namespace": namespace, "labels": labels},
            "rules": [
                {
                    "apiGroups": [DASKJOB_GROUP],
                    "resources": [DASKJOB_PLURAL],
                    "verbs": ["create", "get", "list", "watch", "delete"],
                },
                {
                    "apiGroups": [DASKJOB_GROUP],
                    "resources": ["daskclusters", "daskworkergroups"],
                    "verbs": ["get", "list", "watch"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["pods", "services"],
                    "verbs": ["get", "list", "watch"],
                },
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": role, "namespace": namespace, "labels": labels},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": role,
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": submitter_group,
                }
            ],
        },
    ]


class _NoAliasDumper(yaml.SafeDumper):
    """Writes a shared object out again instead of an anchor/alias (some tools reject them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(manifest: dict[str, Any] | Sequence[dict[str, Any]]) -> str:
    """YAML text of one manifest, or of several as a multi-document stream (no anchors)."""
    dump = lambda m: yaml.dump(  # noqa: E731
        m, Dumper=_NoAliasDumper, sort_keys=False, default_flow_style=False
    )
    if isinstance(manifest, dict):
        return dump(manifest)
    return "---\n".join(dump(m) for m in manifest)


# --------------------------------------------------------------------------
# Talking to the cluster
# --------------------------------------------------------------------------
def _api_client(kubeconfig: str | None = None) -> Any:
    """An ApiClient from ``kubeconfig`` (or the default one), else in-cluster."""
    import os

    from kubernetes import client, config

    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
        default = os.path.expanduser(os.environ.get("KUBECONFIG", "~/.kube/config"))
        if not os.path.exists(default):
            config.load_incluster_config()
            return client.ApiClient()
    return config.new_client_from_config(config_file=kubeconfig)


def create_daskjob(manifest: dict[str, Any], kubeconfig: str | None = None) -> dict[str, Any]:
    """Create the DaskJob through the Kubernetes API.

    Parameters
    ----------
    manifest
        Output of :func:`build_daskjob`.
    kubeconfig
        Path of a kubeconfig file; ``None`` uses ``$KUBECONFIG``/``~/.kube/config``.

    Returns
    -------
    dict
        The created object as returned by the API server.
    """
    from kubernetes import client

    namespace = manifest["metadata"].get("namespace", "default")
    with _api_client(kubeconfig) as api:
        return client.CustomObjectsApi(api).create_namespaced_custom_object(
            DASKJOB_GROUP, DASKJOB_VERSION, namespace, DASKJOB_PLURAL, manifest
        )


def daskjob_status(name: str, namespace: str = "default", kubeconfig: str | None = None) -> dict[str, Any]:
    """The DaskJob's ``status`` (``jobStatus``, ``jobRunnerPodName``, times)."""
    from kubernetes import client

    with _api_client(kubeconfig) as api:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            DASKJOB_GROUP, DASKJOB_VERSION, namespace, DASKJOB_PLURAL, name
        )
    return dict(obj.get("status") or {})


def daskjob_logs(
    name: str,
    namespace: str = "default",
    kubeconfig: str | None = None,
    tail_lines: int | None = None,
) -> str:
    """Logs of the DaskJob's job-runner pod (the ``bigdecon run`` output)."""
    from kubernetes import client

    with _api_client(kubeconfig) as api:
        obj = client.CustomObjectsApi(api).get_namespaced_custom_object(
            DASKJOB_GROUP, DASKJOB_VERSION, namespace, DASKJOB_PLURAL, name
        )
        # The operator names the runner "<name>-runner" and records it in status.
        pod = (obj.get("status") or {}).get("jobRunnerPodName") or f"{name}-runner"
        kwargs: dict[str, Any] = {}
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        return client.CoreV1Api(api).read_namespaced_pod_log(pod, namespace, **kwargs)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
_HPC_KINDS = ("slurm", "pbs", "lsf")


def add_submit_parser(
    subparsers: argparse._SubParsersAction,
    add_run_options: Callable[[argparse.ArgumentParser], Any],
) -> None:
    """Register the ``submit``, ``status`` and ``logs`` subcommands.

    Parameters
    ----------
    subparsers
        The object returned by ``ArgumentParser.add_subparsers``.
    add_run_options
        Adds every ``bigdecon run`` option to a parser (from ``bigdecon.cli``).
    """
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
    add_run_options(p)
    for action in p._actions:
        if action.dest == "scheduler_timeout":
            # The runner pod starts before the scheduler is up and is not restarted.
            action.help = (
                f"how long the job keeps trying to reach its scheduler (default "
                f"{_fmt_number(JOB_SCHEDULER_TIMEOUT)} on Kubernetes)"
            )

    g = p.add_argument_group("cluster")
    g.add_argument("--workers", type=int, default=1, help="worker pods / batch jobs (default 1)")
    g.add_argument(
        "--gpus-per-worker",
        type=int,
        default=None,
        metavar="G",
        help="GPUs per worker, one Dask worker per GPU (default: 1 on Kubernetes, 0 on HPC); "
        "use 0 with a CPU image (GPU workers need the CUDA image's dask-cuda)",
    )
    g.add_argument("--worker-memory", default="32Gi", help="memory per worker (default 32Gi)")
    g.add_argument("--worker-cpu", default="8", help="CPUs per worker (default 8)")
    g.add_argument("--dry-run", action="store_true", help="print the DaskJob YAML (or the batch job script) and exit")

    k = p.add_argument_group("Kubernetes")
    k.add_argument("--image", help="container image with bigdecon (required for Kubernetes)")
    k.add_argument("--namespace", default="default", help="namespace (default 'default')")
    k.add_argument("--name", help="DaskJob name (default: derived from OUTPUT)")
    k.add_argument(
        "--storage-secret", metavar="NAME", help="Secret with object-storage credentials, exposed as env vars"
    )
    k.add_argument("--service-account", metavar="NAME", help="ServiceAccount for the pods")
    k.add_argument("--pvc", metavar="CLAIM", help="PersistentVolumeClaim to mount in job/workers")
    k.add_argument("--pvc-mount", default="/data", help="mount path of --pvc (default /data)")
    k.add_argument("--scheduler-memory", default="4Gi", help="scheduler pod memory (default 4Gi)")
    k.add_argument("--job-memory", default="4Gi", help="job-runner pod memory (default 4Gi)")
    k.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig (default: $KUBECONFIG)")

    h = p.add_argument_group("HPC batch systems")
    kind = h.add_mutually_exclusive_group()
    for name in _HPC_KINDS:
        kind.add_argument(
            f"--{name}", dest="hpc", action="store_const", const=name, help=f"start workers as {name.upper()} jobs"
        )
    h.add_argument("--queue", help="queue / partition")
    h.add_argument("--account", help="account / project to charge")
    h.add_argument("--walltime", default="01:00:00", help="walltime per job (default 01:00:00)")
    h.add_argument("--cores", type=int, help="cores per job (default: --worker-cpu)")
    h.add_argument("--memory", help="memory per job (default: --worker-memory)")
    h.add_argument(
        "--job-extra",
        action="append",
        default=[],
        metavar="DIRECTIVE",
        help="extra batch directive, repeatable (e.g. '--qos=high')",
    )
    p.set_defaults(func=submit_command)

    for cmd, func, text in (
        ("status", status_command, "show the status of a submitted DaskJob"),
        ("logs", logs_command, "print the logs of a DaskJob's job-runner pod"),
    ):
        s = subparsers.add_parser(cmd, help=text, description=text)
        s.add_argument("name", metavar="NAME", help="DaskJob name")
        s.add_argument("--namespace", default="default", help="namespace (default 'default')")
        s.add_argument("--kubeconfig", metavar="PATH", help="kubeconfig (default: $KUBECONFIG)")
        if cmd == "logs":
            s.add_argument("--tail", type=int, default=None, metavar="N", help="last N lines")
        s.set_defaults(func=func)


def _error(cmd: str, exc: BaseException) -> int:
    # One line, no traceback: the usual causes are config/credential problems.
    msg = " ".join(str(exc).split()) or type(exc).__name__
    if len(msg) > 300:
        msg = msg[:297] + "..."
    print(f"bigdecon {cmd}: error: {type(exc).__name__}: {msg}", file=sys.stderr)
    return 1


# Parameters every submitted job states explicitly, even at their defaults, so that
# the result does not depend on the defaults of the bigdecon installed in the image.
EXPLICIT_RUN_OPTIONS = (
    "sparse_iters",
    "fidelity",
    "sparsity",
    "tcontinuity",
    "background",
    "deconv_iters",
    "deconv_type",
    "up_sample",
    "output_dtype",
    "ngff_version",
)


def _given(args: argparse.Namespace, key: str) -> bool:
    """Whether run option ``key`` was given on the command line or in ``--config``."""
    if getattr(args, key, None) is not None:
        return True
    path = getattr(args, "config", None)
    if not path:
        return False
    from bigdecon.cli import load_config

    return key in {str(k).replace("-", "_") for k in load_config(path)}


def _run_argv(args: argparse.Namespace) -> list[str]:
    """The ``bigdecon run`` options of ``args``, every pipeline parameter included.

    :func:`bigdecon.cli.run_argv_from_args` writes only the options that differ
    from this machine's defaults; the parameters in :data:`EXPLICIT_RUN_OPTIONS`
    (and ``--scheduler-timeout`` when it was given) are added at their resolved
    values, in the option table's order.
    """
    from bigdecon.cli import OPTIONS, resolve_options, run_argv_from_args

    resolved = resolve_options(args, cluster=False)
    groups: dict[str, list[str]] = {}
    current = None
    for token in run_argv_from_args(args):
        if token.startswith("--"):
            current = token
            groups[current] = []
        elif current is not None:
            groups[current].append(token)
    argv: list[str] = []
    for key, opt in OPTIONS.items():
        if key not in resolved:
            continue
        if opt.flag in groups:
            argv += [opt.flag, *groups.pop(opt.flag)]
        elif resolved[key] is not None and (
            key in EXPLICIT_RUN_OPTIONS or (key == "scheduler_timeout" and _given(args, key))
        ):
            argv += [opt.flag, _fmt_number(resolved[key])]
    for flag, values in groups.items():  # anything the option table does not name
        argv += [flag, *values]
    return argv


def _check_parameters(resolved: dict[str, Any]) -> None:
    """The checks ``bigdecon run`` makes of the parameters before it starts (raises InputError).

    A measured PSF is checked only for being given: the file is read in the job pod.
    """
    import numpy as np

    from bigdecon.errors import InputError
    from bigdecon.params import Params

    kwargs = {k: resolved[k] for k in EXPLICIT_RUN_OPTIONS[:8] if resolved.get(k) is not None}
    size = resolved.get("fwhm") or resolved.get("resolution")
    if kwargs.get("deconv_type", 1) and kwargs.get("deconv_iters", 7) and not (size or resolved.get("psf")):
        raise InputError(
            "give the PSF size: --fwhm PIXELS, --resolution in physical units, or "
            "--psf FILE (or --deconv-type 0 to skip the final deconvolution)"
        )
    psf = np.ones((3, 3), np.float32) if resolved.get("psf") else None
    # One size for every channel, or {channel: size} (--fwhm 0=3 1=4.2,4.2).
    for value in size.values() if isinstance(size, dict) else [size]:
        Params.from_kwargs(fwhm=value, psf=psf, **kwargs)


def psf_files(value: Any) -> list[tuple[int | None, str]]:
    """``(channel or None, path)`` of each file in a ``--psf`` value: ``PATH``,
    per-channel ``C=PATH`` tokens, or a ``{channel: path}`` dict."""
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        pairs = [(str(k), str(v)) for k, v in value.items()]
    else:
        if isinstance(value, (list, tuple)):
            items = [str(v) for v in value]
        else:
            tokens = str(value).split()
            per_channel = len(tokens) > 1 and all(re.match(r"^\d+=", t) for t in tokens)
            items = tokens if per_channel else [str(value)]
        pairs = []
        for item in items:
            m = re.match(r"^\s*(\d+)\s*=(.*)$", item)
            pairs.append((m.group(1), m.group(2).strip()) if m else (None, item))
    return [(int(c) if c is not None and c.strip().isdigit() else None, p) for c, p in pairs]


def psf_paths(value: Any) -> list[str]:
    """The file paths in a ``--psf`` value (see :func:`psf_files`)."""
    return [path for _channel, path in psf_files(value)]


def _local_path(path: str) -> str | None:
    """The file-system path of ``path``; ``None`` for a URL (``s3://``, ``gs://``...)."""
    text = str(path)
    if text.startswith("file://"):
        return text[len("file://") :]
    return None if "://" in text else text


def pod_path_problems(
    paths: Sequence[tuple[str, str]], pvc: str | None, pvc_mount: str = "/data"
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
    errors: list[str] = []
    warnings: list[str] = []
    mount = posixpath.normpath(pvc_mount or "/")
    for label, path in paths:
        local = _local_path(path)
        is_psf = label.startswith("PSF")
        if local is None:
            if is_psf:
                warnings.append(
                    f"{label} {path!r} is a URL: 'bigdecon run' reads --psf from a file "
                    "the job pod sees (put it on the --pvc volume)"
                )
            continue
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


def _warn(message: str) -> None:
    print(f"bigdecon submit: warning: {message}", file=sys.stderr)


def _refuse(message: str) -> int:
    print(f"bigdecon submit: error: {message}", file=sys.stderr)
    return 2


def submit_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon submit``."""
    from bigdecon.cli import resolve_options

    resolved = resolve_options(args, cluster=False)
    try:
        _check_parameters(resolved)
    except ValueError as exc:  # InputError is a ValueError too
        return _refuse(str(exc))
    if getattr(args, "hpc", None):
        return _submit_hpc(args)
    if not args.image:
        return _refuse("--image is required for Kubernetes")
    gpus = 1 if args.gpus_per_worker is None else args.gpus_per_worker
    paths = [("INPUT", args.input), ("OUTPUT", args.output)]
    paths += [("PSF" if c is None else f"PSF of channel {c}", p) for c, p in psf_files(resolved.get("psf"))]
    errors, warnings = pod_path_problems(paths, args.pvc, args.pvc_mount)
    if errors:
        return _refuse(errors[0])
    try:
        manifest = build_daskjob(
            args.name,
            args.input,
            args.output,
            _run_argv(args),
            image=args.image,
            workers=args.workers,
            gpus_per_worker=gpus,
            namespace=args.namespace,
            worker_memory=args.worker_memory,
            worker_cpu=args.worker_cpu,
            storage_secret=args.storage_secret,
            scheduler_memory=args.scheduler_memory,
            job_memory=args.job_memory,
            service_account=args.service_account,
            pvc=args.pvc,
            pvc_mount=args.pvc_mount,
        )
    except ValueError as exc:
        return _refuse(str(exc))
    for message in warnings:
        _warn(message)
    if gpus > 0 and not looks_like_gpu_image(args.image):
        # 'dask cuda worker' is only in the CUDA image: CPU-image workers would crash-loop.
        default = " (the default on Kubernetes)" if args.gpus_per_worker is None else ""
        _warn(
            f"{gpus} GPU(s) per worker{default} with image {args.image!r}, "
            "whose name has no 'cuda' or 'gpu': GPU workers run 'dask cuda worker', which "
            "only the CUDA image has; use --gpus-per-worker 0 with a CPU image"
        )
    if args.dry_run:
        sys.stdout.write(to_yaml(manifest))
        return 0
    try:
        create_daskjob(manifest, kubeconfig=args.kubeconfig)
    except Exception as exc:  # noqa: BLE001 - report any API/config failure in one line
        return _error("submit", exc)
    meta = manifest["metadata"]
    print(f"daskjob {meta['namespace']}/{meta['name']} created")
    print(f"  bigdecon status {meta['name']} --namespace {meta['namespace']}")
    print(f"  bigdecon logs {meta['name']} --namespace {meta['namespace']}")
    return 0


def _submit_hpc(args: argparse.Namespace) -> int:
    from bigdecon import hpc

    try:
        cores = args.cores or int(args.worker_cpu)
    except ValueError:
        print("bigdecon submit: error: give --cores N (whole CPUs) for batch jobs", file=sys.stderr)
        return 2
    options = dict(
        cores=cores,
        memory=args.memory or args.worker_memory,
        walltime=args.walltime,
        queue=args.queue,
        account=args.account,
        gpus_per_worker=args.gpus_per_worker or 0,
        job_extra=list(args.job_extra),
    )
    run_argv = _run_argv(args)
    if args.dry_run:
        sys.stdout.write(hpc.job_script(args.hpc, **options))
        return 0
    submit = hpc.submit_program(args.hpc)
    if shutil.which(submit) is None:
        # Without it jobqueue only logs the failure and the run would wait forever.
        print(f"bigdecon submit: error: '{submit}' not found; run this on a {args.hpc} login node", file=sys.stderr)
        return 1
    try:
        cluster = hpc.make_jobqueue_cluster(args.hpc, workers=args.workers, **options)
    except Exception as exc:  # noqa: BLE001
        return _error("submit", exc)
    try:
        from bigdecon.cli import main

        rc = main(["run", args.input, args.output, *run_argv, "--scheduler", cluster.scheduler_address])
        return int(rc or 0)
    finally:
        cluster.close()


def status_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon status``."""
    try:
        status = daskjob_status(args.name, args.namespace, kubeconfig=args.kubeconfig)
    except Exception as exc:  # noqa: BLE001
        return _error("status", exc)
    print(f"{args.namespace}/{args.name}: {status.get('jobStatus') or 'Pending'}")
    for key in ("clusterName", "jobRunnerPodName", "startTime", "endTime"):
        if status.get(key):
            print(f"  {key}: {status[key]}")
    return 0


def logs_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon logs``."""
    try:
        text = daskjob_logs(args.name, args.namespace, kubeconfig=args.kubeconfig, tail_lines=args.tail)
    except Exception as exc:  # noqa: BLE001
        return _error("logs", exc)
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return 0


def _rbac_main(argv: list[str] | None = None) -> int:
    """``python -m bigdecon.k8s rbac [NAMESPACE]`` prints :func:`rbac_manifests`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] != "rbac":
        print("usage: python -m bigdecon.k8s rbac [NAMESPACE]", file=sys.stderr)
        return 2
    sys.stdout.write(to_yaml(rbac_manifests(argv[1] if len(argv) > 1 else "default")))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_rbac_main())
