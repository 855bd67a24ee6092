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

Network security (issue 23): the scheduler runs any code a client sends it, and
the workers hold the storage credentials, so

* the job's pods speak **TLS** to each other (``tls://`` addresses; every pod
  mounts a certificate and key made for the job, from the Secret
  :func:`tls_secret` builds, and finds it through the ``DASK_DISTRIBUTED__COMM__*``
  variables), and accept only peers that present it;
* a **NetworkPolicy** (:func:`network_policy`) admits to the job's pods only the
  job's own pods; the scheduler's dashboard is open to the IP ranges given as
  ``dashboard_from`` and otherwise only through ``kubectl port-forward``.
  Probes run inside the container (``exec``), so the policy does not stop them.

The ``submit``, ``status`` and ``logs`` commands that call this module are
:mod:`bigdecon.cli.submit`.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
import sys
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import yaml

from .io.paths import redact

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
    "build_job",
    "tls_secret",
    "network_policy",
    "mask_secrets",
    "TLS_MOUNT",
    "rbac_manifests",
    "to_yaml",
    "create_daskjob",
    "create_job",
    "daskjob_status",
    "daskjob_logs",
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

# Where every pod mounts the job's TLS Secret (ca.crt, tls.crt, tls.key).
TLS_MOUNT = "/etc/bigdecon-tls"

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
def scheduler_args(tls: bool = True) -> list[str]:
    """Command line of the scheduler container (TLS: its certificate comes from the environment, see :func:`tls_env`)."""
    return [
        "dask",
        "scheduler",
        *(["--protocol", "tls"] if tls else []),
        "--port",
        str(SCHEDULER_PORT),
        "--dashboard-address",
        f":{DASHBOARD_PORT}",
    ]


def scheduler_address(name: str, namespace: str, tls: bool = True) -> str:
    """The scheduler's Service address (what the operator would inject, with ``tls://`` under TLS)."""
    return f"{'tls' if tls else 'tcp'}://{name}-scheduler.{namespace}.svc.cluster.local:{SCHEDULER_PORT}"


def tls_env(mount: str = TLS_MOUNT) -> dict[str, str]:
    """Dask configuration (environment variables) that makes every role use the job's certificate.

    One certificate and key serve the scheduler, the workers and the client
    (the job runner); the CA is the certificate itself, so only holders of the
    Secret are admitted.
    """
    env = {
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": f"{mount}/ca.crt",
    }
    for role in ("SCHEDULER", "WORKER", "CLIENT"):
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] = f"{mount}/tls.crt"
        env[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] = f"{mount}/tls.key"
    return env


def health_probe_command() -> list[str]:
    """The scheduler's readiness/liveness probe, run in its container (so no NetworkPolicy stops it)."""
    url = f"http://127.0.0.1:{DASHBOARD_PORT}/health"
    return ["python", "-c", f"import urllib.request; urllib.request.urlopen({url!r}, timeout=5)"]


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
    tls: bool = True,
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
    tls
        Every pod mounts the Secret ``<name>-tls`` (:func:`tls_secret`) at
        :data:`TLS_MOUNT` and speaks TLS with it; ``False``: plain TCP, which
        anyone who reaches the pods can use to run code with the storage
        credentials.

    Returns
    -------
    dict
        The manifest, ready for :func:`to_yaml` or :func:`create_daskjob`
        (:func:`build_job` adds the Secret and the NetworkPolicy).
    """
    name = name or default_job_name(input, output)
    _check_name(name)
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if gpus_per_worker < 0:
        raise ValueError("gpus_per_worker must be >= 0")

    volumes: list[dict[str, Any]] = []
    volume_mounts: list[dict[str, Any]] = []
    if pvc:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": pvc}})
        volume_mounts.append({"name": "data", "mountPath": pvc_mount})
    tls_volumes: list[dict[str, Any]] = []
    tls_mounts: list[dict[str, Any]] = []
    env: dict[str, str] = {}
    if tls:
        # 0444: the images run as a non-root user whose id differs between them (fsGroup would
        # also re-own the data volume); only this pod's one container sees the volume.
        tls_volumes = [{"name": "tls", "secret": {"secretName": f"{name}-tls", "defaultMode": 0o444}}]
        tls_mounts = [{"name": "tls", "mountPath": TLS_MOUNT, "readOnly": True}]
        # Set here, the operator does not inject its tcp:// address.
        env = {"DASK_SCHEDULER_ADDRESS": scheduler_address(name, namespace), **tls_env()}

    scheduler = _scheduler_container(image, tls, scheduler_memory, tls_mounts, env)

    worker = _worker_container(
        image, worker_cpu, worker_memory, gpus_per_worker, storage_secret, volume_mounts + tls_mounts, env
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
        volume_mounts=copy.deepcopy(volume_mounts + tls_mounts),
        env=env,
    )

    return {
        "apiVersion": f"{DASKJOB_GROUP}/{DASKJOB_VERSION}",
        "kind": "DaskJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": dict(_PART_OF),
            "annotations": {"bigdecon/input": redact(str(input)), "bigdecon/output": redact(str(output))},
        },
        "spec": {
            "job": {
                "metadata": {"labels": dict(_PART_OF)},
                "spec": _pod_spec(
                    [job],
                    service_account=service_account,
                    volumes=copy.deepcopy(volumes + tls_volumes),
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
                            volumes=copy.deepcopy(volumes + tls_volumes),
                            gpu=gpus_per_worker > 0,
                        ),
                    },
                    "scheduler": {
                        "spec": _pod_spec(
                            [scheduler], service_account=service_account, volumes=copy.deepcopy(tls_volumes)
                        ),
                        "service": _scheduler_service(name),
                    },
                },
            },
        },
    }


def _scheduler_container(
    image: str, tls: bool, memory: str, tls_mounts: list[dict[str, Any]], env: dict[str, str]
) -> dict[str, Any]:
    """The scheduler pod's container, with its health probes."""
    scheduler = _container(
        "scheduler",
        image,
        scheduler_args(tls),
        {
            "requests": {"cpu": "1", "memory": memory},
            "limits": {"memory": memory},
        },
        ports=[
            {"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
            {"name": "http-dashboard", "containerPort": DASHBOARD_PORT, "protocol": "TCP"},
        ],
        volume_mounts=copy.deepcopy(tls_mounts),
        env={k: v for k, v in env.items() if k != "DASK_SCHEDULER_ADDRESS"},
    )
    health = {"exec": {"command": health_probe_command()}}
    # Separate copies: a shared dict would become a YAML anchor/alias.
    scheduler["readinessProbe"] = {**copy.deepcopy(health), "initialDelaySeconds": 5, "periodSeconds": 10}
    scheduler["livenessProbe"] = {**copy.deepcopy(health), "initialDelaySeconds": 15, "periodSeconds": 20}
    return scheduler


def _worker_container(
    image: str,
    worker_cpu: int | str,
    worker_memory: str,
    gpus_per_worker: int,
    storage_secret: str | None,
    mounts: list[dict[str, Any]],
    env: dict[str, str],
) -> dict[str, Any]:
    """A worker pod's container: its CPU/memory/GPU requests and limits, processes and solver threads."""
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
        volume_mounts=copy.deepcopy(mounts),
        env={"BIGDECON_THREADS": str(worker_threads(worker_cpu, processes)), **env},
    )
    return worker


def _scheduler_service(name: str) -> dict[str, Any]:
    """The ClusterIP service in front of the scheduler: its comm port and dashboard."""
    return {
        "type": "ClusterIP",
        "selector": {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
        "ports": [
            {"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT, "targetPort": "tcp-comm"},
            {"name": "http-dashboard", "protocol": "TCP", "port": DASHBOARD_PORT, "targetPort": "http-dashboard"},
        ],
    }


def tls_secret(name: str, namespace: str = "default") -> dict[str, Any]:
    """The Secret ``<name>-tls`` with a fresh key and self-signed certificate for one job.

    Made by ``distributed.security.Security.temporary`` (2048-bit RSA, valid a
    year); the certificate is its own CA (``ca.crt``), so a peer is admitted
    only with this key. Each call makes a new key.

    Examples
    --------
    >>> secret = tls_secret("decon", "imaging")
    >>> secret["metadata"]["name"], sorted(secret["data"])
    ('decon-tls', ['ca.crt', 'tls.crt', 'tls.key'])
    """
    import base64

    from distributed.security import Security

    made = Security.temporary()
    files = {"ca.crt": made.tls_ca_file, "tls.crt": made.tls_client_cert, "tls.key": made.tls_client_key}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"{name}-tls",
            "namespace": namespace,
            "labels": {**_PART_OF, "dask.org/cluster-name": name},
        },
        "type": "Opaque",
        "data": {k: base64.b64encode(str(v).encode()).decode() for k, v in files.items()},
    }


def network_policy(name: str, namespace: str = "default", dashboard_from: Sequence[str] = ()) -> dict[str, Any]:
    """A NetworkPolicy that admits to the job's pods only the job's own pods.

    The operator labels the scheduler, worker and runner pods of the job with
    ``dask.org/cluster-name: <name>``; the policy selects them and allows
    ingress from the same label (any port: the workers' ports are random).
    ``dashboard_from`` IP ranges (CIDRs) may also reach the scheduler's
    dashboard port. Anything else is dropped, where the cluster's network
    plugin enforces NetworkPolicies (Calico, Cilium, ...; a plugin without
    policy support ignores it).

    Examples
    --------
    >>> policy = network_policy("decon", dashboard_from=["10.0.0.0/8"])
    >>> policy["spec"]["podSelector"], len(policy["spec"]["ingress"])
    ({'matchLabels': {'dask.org/cluster-name': 'decon'}}, 2)
    """
    job_pods = {"matchLabels": {"dask.org/cluster-name": name}}
    ingress: list[dict[str, Any]] = [{"from": [{"podSelector": copy.deepcopy(job_pods)}]}]
    if dashboard_from:
        ingress.append(
            {
                "from": [{"ipBlock": {"cidr": str(cidr)}} for cidr in dashboard_from],
                "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{name}-only-its-pods", "namespace": namespace, "labels": dict(_PART_OF)},
        "spec": {"podSelector": job_pods, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def build_job(
    name: str | None,
    input: str,
    output: str,
    run_argv: Sequence[str],
    *,
    tls: bool = True,
    dashboard_from: Sequence[str] = (),
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Everything one job needs: its TLS Secret (unless ``tls=False``), its NetworkPolicy and the DaskJob.

    ``kwargs`` are those of :func:`build_daskjob`; apply the list in its order
    (:func:`create_job`, or ``kubectl apply -f`` of :func:`to_yaml`'s stream).
    """
    name = name or default_job_name(input, output)
    job = build_daskjob(name, input, output, run_argv, tls=tls, **kwargs)
    namespace = job["metadata"]["namespace"]
    return [
        *([tls_secret(name, namespace)] if tls else []),
        network_policy(name, namespace, dashboard_from),
        job,
    ]


def mask_secrets(text: str) -> str:
    """A YAML stream with every Secret's ``data`` values replaced by a placeholder (for examples and diffs)."""
    docs = list(yaml.safe_load_all(text))
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "Secret":
            doc["data"] = {k: "GENERATED-AT-SUBMIT" for k in doc.get("data") or {}}
    return to_yaml(docs)


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
    (``bigdecon submit/status/logs``): create/inspect/delete ``daskjobs``,
    create each job's TLS Secret and NetworkPolicy, and read the runner pod's logs.  It is bound to the group ``submitter_group``;
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
                # Each job's TLS Secret and NetworkPolicy (owned by its DaskJob): create only,
                # no right to read or change Secrets.
                {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["create"]},
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


def create_job(manifests: Sequence[dict[str, Any]], kubeconfig: str | None = None) -> dict[str, Any]:
    """Create :func:`build_job`'s objects: the DaskJob, then its NetworkPolicy and its TLS Secret, both
    owned by the DaskJob (Kubernetes deletes them with it).

    No pod runs unprotected: each one mounts the Secret, and the kubelet starts
    no container before its Secret exists, which is created last. (With
    ``tls=False`` there is no Secret, and the pods may start a moment before
    their policy.) Setting the owner at creation needs no right to change Secrets.

    Returns
    -------
    dict
        The created DaskJob as returned by the API server.
    """
    from kubernetes import client

    *others, job = manifests
    namespace = job["metadata"].get("namespace", "default")
    with _api_client(kubeconfig) as api:
        created = client.CustomObjectsApi(api).create_namespaced_custom_object(
            DASKJOB_GROUP, DASKJOB_VERSION, namespace, DASKJOB_PLURAL, job
        )
        owner = {
            "apiVersion": f"{DASKJOB_GROUP}/{DASKJOB_VERSION}",
            "kind": "DaskJob",
            "name": created["metadata"]["name"],
            "uid": created["metadata"]["uid"],
        }
        core, net = client.CoreV1Api(api), client.NetworkingV1Api(api)
        for obj in sorted(others, key=lambda o: o["kind"] == "Secret"):  # the policy first
            owned = {**obj, "metadata": {**obj["metadata"], "ownerReferences": [owner]}}
            if obj["kind"] == "Secret":
                core.create_namespaced_secret(namespace, owned)
            else:
                net.create_namespaced_network_policy(namespace, owned)
    return created


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


def _rbac_main(argv: list[str] | None = None) -> int:
    """``python -m bigdecon.k8s rbac [NAMESPACE]`` prints :func:`rbac_manifests`."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mask-secrets"]:  # stdin -> stdout, for deploy/regenerate.sh
        sys.stdout.write(mask_secrets(sys.stdin.read()))
        return 0
    if not argv or argv[0] != "rbac":
        print("usage: python -m bigdecon.k8s rbac [NAMESPACE] | mask-secrets < YAML", file=sys.stderr)
        return 2
    sys.stdout.write(to_yaml(rbac_manifests(argv[1] if len(argv) > 1 else "default")))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(_rbac_main())
