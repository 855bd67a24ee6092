"""Tests of bigdecon.k8s: DaskJob/RBAC manifests, CLI hooks, and the pods'
commands run as local processes."""

from __future__ import annotations

import functools
import itertools
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes  # noqa: F401
import kubernetes_validate
import pytest
import yaml
from helpers import popen_logged, stop_process_groups, wait_for_port

from bigdecon import k8s, params
from bigdecon.cli.submit import EXPLICIT_RUN_OPTIONS, pod_path_problems, psf_files, psf_paths
from bigdecon.params import PARAMETERS

K8S_VERSION = "1.37.0"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _cpu_manifest(**kw: Any) -> dict[str, Any]:
    args = dict(image="registry.example.org/bigdecon:0.1.0", workers=3, gpus_per_worker=0)
    args.update(kw)
    return k8s.build_daskjob(
        "decon-test",
        "s3://bucket/in.ome.zarr",
        "s3://bucket/out.ome.zarr",
        ["--deconv-iters", "5"],
        **args,
    )


def _gpu_manifest() -> dict[str, Any]:
    return k8s.build_daskjob(
        None,
        "s3://bucket/in.ome.zarr",
        "s3://bucket/out.ome.zarr",
        ["--fwhm", "2.0"],
        image="registry.example.org/bigdecon:0.1.0-cuda",
        workers=4,
        gpus_per_worker=2,
        namespace="imaging",
        storage_secret="s3-credentials",
        service_account="bigdecon",
        pvc="scratch",
        worker_memory="64Gi",
        worker_cpu="16",
    )


MANIFESTS = {"cpu": _cpu_manifest, "gpu": _gpu_manifest}


@functools.lru_cache(maxsize=1)
def _crd_validator() -> Any:
    schema = _strict(_crd_schema())
    # apiVersion/kind/metadata are implicit in CRD schemas.
    schema["properties"].update(
        apiVersion={"type": "string", "enum": ["kubernetes.dask.org/v1"]},
        kind={"type": "string", "enum": ["DaskJob"]},
        metadata={"type": "object"},
    )
    return jsonschema.Draft7Validator(schema)


def _crd_schema() -> dict[str, Any]:
    """openAPIV3Schema of the DaskJob CRD as shipped (fully resolved) by dask-kubernetes."""
    import dask_kubernetes

    path = Path(dask_kubernetes.__file__).parent / "operator/deployment/helm/dask-kubernetes-operator/crds/daskjob.yaml"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    crd = yaml.load(path.read_text(), Loader=loader)
    assert crd["spec"]["names"]["kind"] == "DaskJob"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


def _strict(schema: Any) -> Any:
    """Reject unknown fields like the API server's strict field validation does."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _validate_crd(manifest: dict[str, Any]) -> None:
    _crd_validator().validate(manifest)


def _embedded_objects(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The Pods and Service the operator will create, as standalone objects."""
    name = manifest["metadata"]["name"]
    spec = manifest["spec"]
    cluster = spec["cluster"]["spec"]

    def pod(suffix: str, pod_spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"{name}-{suffix}", "labels": {"a": "b"}},
            "spec": pod_spec,
        }

    return {
        "job": pod("runner", spec["job"]["spec"]),
        "scheduler": pod("scheduler", cluster["scheduler"]["spec"]),
        "worker": pod("worker", cluster["worker"]["spec"]),
        "service": {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{name}-scheduler"},
            "spec": cluster["scheduler"]["service"],
        },
        # The DaskJob's own metadata, checked as ObjectMeta.
        "metadata": {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": manifest["metadata"],
        },
    }


def _args(manifest: dict[str, Any], which: str) -> list[str]:
    spec = manifest["spec"]
    pod_spec = {
        "job": spec["job"]["spec"],
        "scheduler": spec["cluster"]["spec"]["scheduler"]["spec"],
        "worker": spec["cluster"]["spec"]["worker"]["spec"],
    }[which]
    (container,) = pod_spec["containers"]
    return list(container["args"])


def _env(manifest: dict[str, Any], which: str) -> dict[str, str]:
    """The container's literal ``env`` entries."""
    spec = manifest["spec"]
    pod_spec = {
        "job": spec["job"]["spec"],
        "worker": spec["cluster"]["spec"]["worker"]["spec"],
        "scheduler": spec["cluster"]["spec"]["scheduler"]["spec"],
    }[which]
    (container,) = pod_spec["containers"]
    return {e["name"]: e["value"] for e in container.get("env", [])}


def _tls_env(name: str = "decon-test", namespace: str = "default") -> dict[str, str]:
    """What the job runner's and workers' containers get for TLS (issue 23)."""
    return {"DASK_SCHEDULER_ADDRESS": f"tls://{name}-scheduler.{namespace}.svc.cluster.local:8786", **k8s.tls_env()}


def _write_secret(secret: dict[str, Any], folder: Path) -> Path:
    """The Secret's files, as the kubelet mounts them."""
    import base64

    folder.mkdir()
    for key, value in secret["data"].items():
        (folder / key).write_bytes(base64.b64decode(value))
    return folder


def _kubelet_expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of ``$(VAR)`` in container args, step by step as the
    kubelet does it (k8s third_party/forked/golang/expansion): ``$$`` -> ``$``,
    ``$(NAME)`` -> its value when NAME is defined, anything else verbatim."""
    out: list[str] = []
    checkpoint = cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == "$":
                read, is_var, advance = "$", False, 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close < 0:
                    read, is_var, advance = "$(", False, 1
                else:
                    read, is_var, advance = rest[1:close], True, close + 1
            else:
                read, is_var, advance = "$" + rest[0], False, 1
            out.append((env[read] if read in env else f"$({read})") if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    return "".join(out) + text[checkpoint:]


def _container_env(
    manifest: dict[str, Any], which: str, injected: dict[str, str], tls_dir: Path | None = None
) -> dict[str, str]:
    """The process environment of a container: ours, the operator's variables, its ``env``.

    Run here, the Service's name is ``injected``'s scheduler address (127.0.0.1) and the
    Secret's mount is ``tls_dir``.
    """
    env = {**_bin_env(), **injected, **_env(manifest, which)}
    if "DASK_SCHEDULER_ADDRESS" in injected:
        env["DASK_SCHEDULER_ADDRESS"] = injected["DASK_SCHEDULER_ADDRESS"]
    if tls_dir is not None:
        env = {k: v.replace(k8s.TLS_MOUNT, str(tls_dir)) for k, v in env.items()}
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_main():
    from bigdecon import cli

    return cli


def _run_default(key: str) -> Any:
    """Default of a ``bigdecon run`` option on this machine."""
    return PARAMETERS[key].default


# --------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_daskjob_validates_against_operator_crd(kind: str) -> None:
    _validate_crd(MANIFESTS[kind]())


def test_crd_validation_is_not_vacuous() -> None:
    bad = _cpu_manifest()
    del bad["spec"]["cluster"]["spec"]["scheduler"]["service"]
    with pytest.raises(jsonschema.ValidationError, match="service"):
        _validate_crd(bad)
    bad = _cpu_manifest()
    bad["spec"]["job"]["spec"]["containers"][0]["comand"] = ["typo"]
    with pytest.raises(jsonschema.ValidationError, match="comand"):
        _validate_crd(bad)


@pytest.mark.parametrize("kind", sorted(MANIFESTS))
def test_embedded_objects_validate_strict(kind: str) -> None:
    for part, obj in _embedded_objects(MANIFESTS[kind]()).items():
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover
            pytest.fail(f"{kind} {part}: {exc}")


def test_k8s_strict_validation_is_not_vacuous() -> None:
    pod = _embedded_objects(_cpu_manifest())["worker"]
    pod["spec"]["containers"][0]["resurces"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_rbac_validates_strict() -> None:
    objs = k8s.rbac_manifests("imaging")
    assert [o["kind"] for o in objs] == ["ServiceAccount", "Role", "RoleBinding"]
    for obj in objs:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    role = objs[1]
    rules = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert ("kubernetes.dask.org", "daskjobs") in rules
    assert ("", "pods/log") in rules
    assert objs[0]["automountServiceAccountToken"] is False


def test_committed_rbac_yaml_matches() -> None:
    committed = list(yaml.safe_load_all((REPO / "deploy/rbac.yaml").read_text()))
    assert committed == k8s.rbac_manifests("bigdecon")


def test_manifest_contents_cpu() -> None:
    m = _cpu_manifest(storage_secret="creds")
    assert m["apiVersion"] == "kubernetes.dask.org/v1" and m["kind"] == "DaskJob"
    assert _args(m, "scheduler") == [
        "dask",
        "scheduler",
        "--protocol",
        "tls",
        "--port",
        "8786",
        "--dashboard-address",
        ":8787",
    ]
    w = _args(m, "worker")
    assert w[:3] == ["dask", "worker", "$(DASK_SCHEDULER_ADDRESS)"]
    assert w[w.index("--nthreads") + 1] == "1"
    assert w[w.index("--name") + 1] == "$(DASK_WORKER_NAME)"
    assert w[w.index("--dashboard-address") + 1] == "8788"
    # 90 % of 32Gi, leaving head room under the pod limit
    assert w[w.index("--memory-limit") + 1] == f"{int(32 * 1024 * 0.9)}MiB"
    # one single-threaded Dask worker: its solver gets all 8 CPUs of the pod
    assert _env(m, "worker") == {"BIGDECON_THREADS": "8", **_tls_env()}
    assert _env(m, "job") == _tls_env()
    # the runner waits up to 600 s for a scheduler that is still starting
    assert _args(m, "job") == [
        "bigdecon",
        "run",
        "s3://bucket/in.ome.zarr",
        "s3://bucket/out.ome.zarr",
        "--deconv-iters",
        "5",
        "--scheduler-timeout",
        "600",
        "--scheduler",
        "$(DASK_SCHEDULER_ADDRESS)",
    ]
    job = m["spec"]["job"]["spec"]
    assert job["restartPolicy"] == "Never"
    worker = m["spec"]["cluster"]["spec"]["worker"]
    assert worker["replicas"] == 3
    res = worker["spec"]["containers"][0]["resources"]
    assert res == {
        "requests": {"cpu": "8", "memory": "32Gi"},
        "limits": {"cpu": "8", "memory": "32Gi"},
    }
    for pod in (job, worker["spec"]):
        assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "creds"}}]
    svc = m["spec"]["cluster"]["spec"]["scheduler"]["service"]
    assert {(p["name"], p["port"]) for p in svc["ports"]} == {
        ("tcp-comm", 8786),
        ("http-dashboard", 8787),
    }
    assert svc["selector"]["dask.org/cluster-name"] == "decon-test"
    assert "envFrom" not in m["spec"]["cluster"]["spec"]["scheduler"]["spec"]["containers"][0]


def test_manifest_contents_gpu() -> None:
    m = _gpu_manifest()
    assert m["metadata"]["namespace"] == "imaging"
    assert m["metadata"]["name"] == k8s.default_job_name("s3://bucket/in.ome.zarr", "s3://bucket/out.ome.zarr")
    w = _args(m, "worker")
    assert w[:4] == ["dask", "cuda", "worker", "$(DASK_SCHEDULER_ADDRESS)"]
    # one worker per GPU: the pod memory is split between them
    assert w[w.index("--memory-limit") + 1] == f"{int(64 * 1024 * 0.9 / 2)}MiB"
    # two worker processes cannot share one dashboard port: each picks a free one
    assert w[w.index("--dashboard-address") + 1] == ":0"
    spec = m["spec"]["cluster"]["spec"]["worker"]["spec"]
    assert "ports" not in spec["containers"][0]
    # 16 CPUs for 2 GPU workers: 8 threads for each one's host-side steps
    assert _env(m, "worker")["BIGDECON_THREADS"] == "8"
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/data"},
        {"name": "tls", "mountPath": k8s.TLS_MOUNT, "readOnly": True},
    ]
    assert spec["serviceAccountName"] == "bigdecon"
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"


# --------------------------------------------------------------------------
# TLS and NetworkPolicy (issue 23, item 10)
# --------------------------------------------------------------------------
def _operator_pods(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The scheduler, worker and runner pods as dask-kubernetes' operator builds them from the DaskJob."""
    from dask_kubernetes.operator.controller import controller as op

    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    cluster = manifest["spec"]["cluster"]["spec"]
    sched = op.build_scheduler_deployment_spec(name, cluster["scheduler"]["spec"], {}, {})
    worker = op.build_worker_deployment_spec("default", namespace, name, "abc", cluster["worker"]["spec"], {}, {})
    job = op.build_job_pod_spec(name, name, namespace, manifest["spec"]["job"]["spec"], {}, {})
    return {
        "scheduler": sched["spec"]["template"],
        "worker": worker["spec"]["template"],
        "job-runner": {"metadata": job["metadata"], "spec": job["spec"]},
    }


@pytest.mark.slow
def test_job_objects_validate_and_tie_together() -> None:
    secret, policy, job = k8s.build_job(
        "decon-test", "s3://b/i.zarr", "s3://b/o.zarr", [], image="i", workers=2, gpus_per_worker=0, namespace="imaging"
    )
    for obj in (secret, policy):
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    _validate_crd(job)
    for obj in _embedded_objects(job).values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    assert secret["metadata"]["name"] == "decon-test-tls" and sorted(secret["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    pods = _operator_pods(job)
    selector = policy["spec"]["podSelector"]["matchLabels"]
    peers = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
    for role, pod in pods.items():
        labels = pod["metadata"]["labels"]
        # the policy covers, and admits, each of the job's pods (the labels the operator gives them)
        assert selector.items() <= labels.items() and peers.items() <= labels.items(), role
        spec = pod["spec"]
        (container,) = spec["containers"]
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        assert {"name": "tls", "secret": {"secretName": "decon-test-tls", "defaultMode": 0o444}} in spec["volumes"]
        assert {"name": "tls", "mountPath": k8s.TLS_MOUNT, "readOnly": True} in container["volumeMounts"]
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
        for key in ("CA_FILE", "SCHEDULER__CERT", "WORKER__KEY", "CLIENT__CERT"):
            assert env[f"DASK_DISTRIBUTED__COMM__TLS__{key}"].startswith(k8s.TLS_MOUNT + "/")
        if role != "scheduler":  # the operator keeps our tls:// address (it injects tcp:// otherwise)
            assert env["DASK_SCHEDULER_ADDRESS"] == "tls://decon-test-scheduler.imaging.svc.cluster.local:8786"
    assert pods["scheduler"]["spec"]["containers"][0]["args"][2:4] == ["--protocol", "tls"]
    # nothing but the job's pods: one rule, no port or IP range open to others
    assert policy["spec"]["policyTypes"] == ["Ingress"] and len(policy["spec"]["ingress"]) == 1
    assert list(policy["spec"]["ingress"][0]) == ["from"]


def test_dashboard_from_and_no_tls(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli_main()
    argv = ["submit", "s3://b/i.zarr", "s3://b/o.zarr", "--fwhm", "3", "--image", "img:1-cuda", "--name", "d"]
    assert cli.main([*argv, "--dashboard-from", "10.1.0.0/16,192.168.1.7", "--dry-run"]) == 0
    secret, policy, job = yaml.safe_load_all(capsys.readouterr().out)
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)
    assert policy["spec"]["ingress"][1] == {
        "from": [{"ipBlock": {"cidr": "10.1.0.0/16"}}, {"ipBlock": {"cidr": "192.168.1.7/32"}}],
        "ports": [{"protocol": "TCP", "port": 8787}],
    }
    assert cli.main([*argv, "--dashboard-from", "everyone", "--dry-run"]) == 2
    assert "dashboard_from takes IP ranges" in capsys.readouterr().err
    # --no-tls: no Secret, plain TCP (the operator's address), a warning; the NetworkPolicy stays
    assert cli.main([*argv, "--no-tls", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    policy, job = yaml.safe_load_all(out)
    assert policy["kind"] == "NetworkPolicy" and "--no-tls" in err and "run code as you" in err
    assert "--protocol" not in _args(job, "scheduler") and "DASK_SCHEDULER_ADDRESS" not in _env(job, "job")
    assert _operator_pods(job)["worker"]["spec"]["containers"][0]["env"][-1]["value"].startswith("tcp://")


def test_each_submission_gets_its_own_key(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli_main()
    argv = ["submit", "s3://b/i.zarr", "s3://b/o.zarr", "--fwhm", "3", "--image", "img:1-cuda", "--dry-run"]
    keys = []
    for _ in range(2):
        assert cli.main(argv) == 0
        secret = next(yaml.safe_load_all(capsys.readouterr().out))
        keys.append(secret["data"]["tls.key"])
    assert keys[0] != keys[1]
    masked = k8s.mask_secrets(k8s.to_yaml([k8s.tls_secret("x"), k8s.network_policy("x")]))
    assert "PRIVATE" not in masked and "GENERATED-AT-SUBMIT" in masked


def test_bad_names_and_sizes_rejected() -> None:
    for name in ("Upper", "1abc", "x" * 51, "a_b"):
        with pytest.raises(ValueError, match="invalid job name"):
            k8s.build_daskjob(name, "i", "o", [], image="i", workers=1)
    with pytest.raises(ValueError):
        k8s.build_daskjob("ok", "i", "o", [], image="i", workers=0)
    assert k8s.default_job_name("a", "s3://b/My_Data.ome.zarr/").startswith("bigdecon-my-data-")


def test_to_yaml_round_trips() -> None:
    m = _gpu_manifest()
    assert yaml.safe_load(k8s.to_yaml(m)) == m
    objs = k8s.rbac_manifests()
    assert list(yaml.safe_load_all(k8s.to_yaml(objs))) == objs


def test_yaml_has_no_anchors_or_aliases() -> None:
    for manifest in (_cpu_manifest(), _gpu_manifest()):
        text = k8s.to_yaml(manifest)
        events = list(yaml.parse(text))
        assert not any(isinstance(e, yaml.AliasEvent) for e in events)
        assert not any(getattr(e, "anchor", None) for e in events)
        assert yaml.safe_load(text) == manifest
    # also when the caller's manifest shares an object (to_yaml writes it out twice)
    shared = {"path": "/health"}
    text = k8s.to_yaml({"a": shared, "b": shared})
    assert "&" not in text and "*" not in text and yaml.safe_load(text) == {"a": shared, "b": shared}
    committed = (REPO / "deploy/daskjob-example.yaml").read_text()
    assert not any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) for e in yaml.parse(committed))


@pytest.mark.parametrize(
    "cpu, processes, expected",
    [(8, 1, 8), ("16", 2, 8), ("7.5", 2, 3), ("500m", 1, 1), ("2", 4, 1), ("64", 8, 8)],
)
def test_worker_threads_from_cpu_quantity(cpu: Any, processes: int, expected: int) -> None:
    assert k8s.worker_threads(cpu, processes) == expected
    m = _cpu_manifest(worker_cpu=cpu, gpus_per_worker=processes if processes > 1 else 0)
    assert _env(m, "worker")["BIGDECON_THREADS"] == str(expected)


def test_dollar_escaping_round_trips_through_kubelet_expansion() -> None:
    env = {"a": "EXPANDED", "DASK_SCHEDULER_ADDRESS": "tcp://x:1", "HOME": "/root"}
    # the expansion helper is Kubernetes' own rules
    assert _kubelet_expand("$(a)-$$(a)-$(b)-$x-$", env) == "EXPANDED-$(a)-$(b)-$x-$"
    # every string over these characters, up to 6 long, comes back verbatim
    for n in range(7):
        for chars in itertools.product("$()a", repeat=n):
            text = "".join(chars)
            assert _kubelet_expand(k8s.k8s_escape(text), env) == text, text
    tricky = ["s3://b/$(HOME)/in.zarr", "/data/a$$(a)b", "/data/cost$5", "$(DASK_SCHEDULER_ADDRESS)"]
    m = k8s.build_daskjob(
        "esc",
        tricky[0],
        tricky[1],
        ["--psf", tricky[2], "--chunks", tricky[3]],
        image="i",
        workers=1,
        gpus_per_worker=0,
    )
    job = _substitute(_args(m, "job"), env)
    assert job[2:4] == tricky[:2]
    assert job[job.index("--psf") + 1] == tricky[2]
    assert job[job.index("--chunks") + 1] == tricky[3]
    # only the operator's reference is expanded
    assert job[-2:] == ["--scheduler", "tcp://x:1"]


def test_job_args_scheduler_timeout() -> None:
    base = ["bigdecon", "run", "i", "o"]
    tail = ["--scheduler", "$(DASK_SCHEDULER_ADDRESS)"]
    assert k8s.job_args("i", "o", []) == base + ["--scheduler-timeout", "600"] + tail
    assert k8s.job_args("i", "o", ["--scheduler-timeout", "30"]) == (base + ["--scheduler-timeout", "30"] + tail)
    assert k8s.job_args("i", "o", [], scheduler_timeout=None) == base + tail
    assert k8s.job_args("i", "o", [], scheduler_timeout=90.5) == (base + ["--scheduler-timeout", "90.5"] + tail)


# --------------------------------------------------------------------------
# API calls against an unreachable server (real client, real sockets)
# --------------------------------------------------------------------------
@pytest.fixture
def dead_kubeconfig(tmp_path: Path) -> str:
    port = _free_port()  # nothing listens there once the socket is closed
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "x"}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_api_errors_raise(dead_kubeconfig: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - the client library's connection error
        k8s.create_daskjob(_cpu_manifest(), kubeconfig=dead_kubeconfig)
    with pytest.raises(Exception):  # noqa: B017
        k8s.daskjob_status("decon-test", kubeconfig=dead_kubeconfig)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def test_cli_dry_run_prints_valid_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli_main()
    rc = cli.main(
        [
            "submit",
            "s3://bucket/in.ome.zarr",
            "s3://bucket/out.ome.zarr",
            "--fwhm",
            "2",
            "--image",
            "img:1-cuda",
            "--workers",
            "2",
            "--gpus-per-worker",
            "1",
            "--storage-secret",
            "s3",
            "--namespace",
            "imaging",
            "--dry-run",
        ]
    )
    assert rc in (0, None)
    *others, m = yaml.safe_load_all(capsys.readouterr().out)
    assert [o["kind"] for o in others] == ["Secret", "NetworkPolicy"]
    _validate_crd(m)
    assert m["metadata"]["namespace"] == "imaging"
    job = _args(m, "job")
    assert job[:4] == ["bigdecon", "run", "s3://bucket/in.ome.zarr", "s3://bucket/out.ome.zarr"]
    assert job[-2:] == ["--scheduler", "$(DASK_SCHEDULER_ADDRESS)"]


def test_cli_submit_status_logs_errors_are_one_line(dead_kubeconfig: str, capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli_main()
    for argv in (
        ["submit", "s3://b/i.zarr", "s3://b/o.zarr", "--fwhm", "3", "--image", "img:1-cuda"],
        ["status", "decon-test"],
        ["logs", "decon-test"],
    ):
        rc = cli.main([*argv, "--kubeconfig", dead_kubeconfig])
        err = capsys.readouterr().err.strip()
        assert rc == 1, argv
        assert err.startswith(f"bigdecon {argv[0]}: error:") and "\n" not in err, err


def test_cli_submit_requires_image(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli_main()
    assert cli.main(["submit", "s3://b/i.zarr", "s3://b/o.zarr", "--fwhm", "3", "--dry-run"]) == 2
    assert "--image" in capsys.readouterr().err


def _dry_run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict | None, str]:
    cli = _cli_main()
    rc = cli.main(["submit", *argv, "--dry-run"])
    out, err = capsys.readouterr()
    return rc, (list(yaml.safe_load_all(out))[-1] if rc == 0 else None), err


def test_cli_job_states_every_parameter(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The job's command gives the same parameters to an image with other defaults."""
    import dataclasses

    cli = _cli_main()
    config = tmp_path / "run.toml"
    config.write_text("fidelity = 200\nbackground = 2\n")
    rc, m, _ = _dry_run(
        capsys,
        "s3://b/in.zarr",
        "s3://b/out.zarr",
        "--fwhm",
        "3",
        "3.5",
        "--deconv-iters",
        "9",
        "--chunks",
        "t=8,y=256,x=256",
        "--config",
        str(config),
        "--image",
        "img:1-cuda",
    )
    assert rc == 0
    job = _args(m, "job")
    for key in EXPLICIT_RUN_OPTIONS:
        assert PARAMETERS[key].flag in job, key
    submitted = cli.resolve_options(
        cli.build_parser().parse_args(
            [
                "run",
                "s3://b/in.zarr",
                "s3://b/out.zarr",
                "--fwhm",
                "3",
                "3.5",
                "--deconv-iters",
                "9",
                "--chunks",
                "t=8,y=256,x=256",
                "--config",
                str(config),
            ]
        ),
        cluster=False,
    )
    assert submitted["fidelity"] == 200 and submitted["background"] == 2  # from the file

    # The runner parses the job's command with its own parser: with every default
    # different from this machine's, it still resolves the submitted parameters.
    other = {
        "sparse_iters": 50,
        "fidelity": 99.0,
        "sparsity": 3.0,
        "tcontinuity": 0.1,
        "background": 4,
        "deconv_iters": 2,
        "deconv_type": 2,
        "up_sample": 1,
        "output_dtype": "uint16",
        "ngff_version": "0.4",
    }
    options = dict(PARAMETERS)
    for key, value in other.items():
        options[key] = dataclasses.replace(options[key], default=value)
    monkeypatch.setattr(params, "PARAMETERS", options)
    runner = cli.resolve_options(cli.build_parser().parse_args(job[1:]), cluster=False)
    for key in (*EXPLICIT_RUN_OPTIONS, "fwhm", "chunks"):
        assert runner[key] == submitted[key], key
    assert runner["scheduler_timeout"] == 600
    assert "--config" not in job  # expanded: the pods do not see the file


def test_cli_per_channel_sizes_pass_through(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli_main()
    rc, m, err = _dry_run(
        capsys, "s3://b/in.zarr", "s3://b/out.zarr", "--fwhm", "0=3", "1=4.2,4.2", "--image", "img:1-cuda"
    )
    assert rc == 0, err
    job = _args(m, "job")
    runner = cli.resolve_options(cli.build_parser().parse_args(job[1:]), cluster=False)
    assert runner["fwhm"] == {0: [3.0], 1: [4.2, 4.2]}
    rc, _, err = _dry_run(capsys, "s3://b/in.zarr", "s3://b/out.zarr", "--fwhm", "0=3", "1=-1", "--image", "img:1-cuda")
    assert rc == 2 and "fwhm" in err


def test_cli_scheduler_timeout_default_and_override(capsys: pytest.CaptureFixture[str]) -> None:
    common = ("s3://b/in.zarr", "s3://b/out.zarr", "--fwhm", "3", "--image", "img:1-cuda")

    def timeouts(*extra: str) -> list[str]:
        rc, m, _ = _dry_run(capsys, *common, *extra)
        assert rc == 0
        job = _args(m, "job")
        return [job[i + 1] for i, a in enumerate(job) if a == "--scheduler-timeout"]

    assert timeouts() == ["600"]
    assert timeouts("--scheduler-timeout", "45") == ["45"]
    # the run default, given explicitly, is kept too
    assert timeouts("--scheduler-timeout", str(_run_default("scheduler_timeout"))) == ["10"]


def test_psf_paths_forms() -> None:
    assert psf_paths(None) == []
    assert psf_paths("/data/psf.tif") == ["/data/psf.tif"]
    assert psf_paths(["0=/data/a.tif", "1=b.npy"]) == ["/data/a.tif", "b.npy"]
    assert psf_paths("0=/data/a.tif 1=/data/b.npy") == ["/data/a.tif", "/data/b.npy"]
    assert psf_paths({0: "/data/a.tif", "1": "s3://b/p.npy"}) == ["/data/a.tif", "s3://b/p.npy"]
    assert psf_paths("/data/x=1.npy") == ["/data/x=1.npy"]  # not a channel token
    assert psf_files({1: "/b", 0: "/a"}) == [(1, "/b"), (0, "/a")]
    assert psf_files(["2=/c.tif"]) == [(2, "/c.tif")] and psf_files("/p.npy") == [(None, "/p.npy")]


@pytest.mark.parametrize(
    "argv, rc, message",
    [
        # relative paths with --pvc: certainly not on the claim
        (["in.zarr", "/data/out.zarr", "--pvc", "c"], 2, "INPUT 'in.zarr' is a relative path"),
        (["/data/in.zarr", "out/x.zarr", "--pvc", "c"], 2, "OUTPUT 'out/x.zarr' is a relative path"),
        (["/data/in.zarr", "/data/o.zarr", "--pvc", "c", "--psf", "psf.npy"], 2, "PSF 'psf.npy' is a relative path"),
        # outside the mount, or a local file without --pvc: warned
        (
            ["/data/in.zarr", "/scratch/o.zarr", "--pvc", "c"],
            0,
            "OUTPUT '/scratch/o.zarr' is outside --pvc-mount /data",
        ),
        (
            ["/mnt/x/../in.zarr", "/mnt/x/o.zarr", "--pvc", "c", "--pvc-mount", "/mnt/x"],
            0,
            "INPUT '/mnt/x/../in.zarr' is outside --pvc-mount /mnt/x",
        ),
        (
            ["s3://b/in.zarr", "s3://b/o.zarr", "--psf", "/home/me/psf.npy"],
            0,
            "PSF '/home/me/psf.npy' is not a URL; the pods must see it",
        ),
        (["s3://b/in.zarr", "s3://b/o.zarr", "--psf", "s3://b/psf.npy"], 0, "PSF 's3://b/psf.npy' is a URL"),
        (["s3://b/in.zarr", "s3://b/o.zarr", "--fwhm", "3"], 0, None),
        (["/data/in.zarr", "/data/o.zarr", "--pvc", "c", "--psf", "/data/p.tif"], 0, None),
        (["file:///data/in.zarr", "/data/o.zarr", "--pvc", "c", "--fwhm", "3"], 0, None),
        # per-channel PSF files: each one is checked
        (
            ["/data/in.zarr", "/data/o.zarr", "--pvc", "c", "--psf", "0=/data/a.tif", "1=b.npy"],
            2,
            "PSF of channel 1 'b.npy' is a relative path",
        ),
        (
            ["/data/in.zarr", "/data/o.zarr", "--pvc", "c", "--psf", "0=/data/a.tif", "1=/x/b.npy"],
            0,
            "PSF of channel 1 '/x/b.npy' is outside --pvc-mount /data",
        ),
        (["/data/in.zarr", "/data/o.zarr", "--pvc", "c", "--psf", "0=/data/a.tif", "1=/data/b.npy"], 0, None),
    ],
)
def test_cli_paths_the_pods_cannot_see(
    capsys: pytest.CaptureFixture[str], argv: list[str], rc: int, message: str | None
) -> None:
    if "--psf" not in argv and "--fwhm" not in argv:
        argv = [*argv, "--fwhm", "3"]
    got, m, err = _dry_run(capsys, *argv, "--image", "img:1-cuda")
    assert got == rc, err
    if message is None:
        assert err == ""
    else:
        assert message in err and err.count("\n") == 1, err
        assert err.startswith("bigdecon submit: " + ("error" if rc else "warning"))
    if rc == 0 and "--psf" in argv:
        job = _args(m, "job")
        given = argv[argv.index("--psf") + 1 :]
        assert job[job.index("--psf") + 1 : job.index("--psf") + 1 + len(given)] == given


def test_psf_tokens_checked_per_channel() -> None:
    errors, warnings = pod_path_problems(
        [(f"PSF {i}", p) for i, p in enumerate(psf_paths(["0=/data/a.tif", "1=b.npy", "2=/x/c.npy"]))],
        pvc="c",
        pvc_mount="/data",
    )
    assert errors == [
        "PSF 1 'b.npy' is a relative path; with --pvc give the path the pods see, under --pvc-mount /data"
    ]
    assert warnings == ["PSF 2 '/x/c.npy' is outside --pvc-mount /data; the pods see only their image's files there"]


@pytest.mark.parametrize(
    "image, gpus, warned",
    [
        ("reg/bigdecon:0.1.0", None, True),
        ("reg/bigdecon:0.1.0", "2", True),
        ("reg/bigdecon:0.1.0", "0", False),
        ("reg/bigdecon:0.1.0-cuda", None, False),
        ("reg/bigdecon-gpu:1", "1", False),
    ],
)
def test_cli_warns_gpu_workers_on_a_cpu_image(
    capsys: pytest.CaptureFixture[str], image: str, gpus: str | None, warned: bool
) -> None:
    extra = ["--gpus-per-worker", gpus] if gpus else []
    rc, m, err = _dry_run(capsys, "s3://b/i.zarr", "s3://b/o.zarr", "--fwhm", "3", "--image", image, *extra)
    assert rc == 0
    assert ("--gpus-per-worker 0" in err) is warned, err
    assert ("(the default on Kubernetes)" in err) is (warned and gpus is None)
    prog = _args(m, "worker")[:3]
    assert prog == (["dask", "worker", "$(DASK_SCHEDULER_ADDRESS)"] if gpus == "0" else ["dask", "cuda", "worker"])


def test_cli_submit_checks_parameters_before_anything(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _dry_run(capsys, "s3://b/i.zarr", "s3://b/o.zarr", "--image", "img:1-cuda")
    assert rc == 2 and "give the PSF size" in err
    rc, _, err = _dry_run(
        capsys, "s3://b/i.zarr", "s3://b/o.zarr", "--fwhm", "3", "--background", "9", "--image", "img:1-cuda"
    )
    assert rc == 2 and "background" in err
    rc, _, err = _dry_run(capsys, "s3://b/i.zarr", "s3://b/o.zarr", "--deconv-type", "0", "--image", "img:1-cuda")
    assert rc == 0, err


def test_committed_example_matches_dry_run() -> None:
    _cli_main()
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "bigdecon").exists():
        pytest.skip("bigdecon console script not installed")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        ["bash", str(REPO / "deploy/regenerate.sh"), "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *others, job = yaml.safe_load_all((REPO / "deploy/daskjob-example.yaml").read_text())
    assert [o["kind"] for o in others] == ["Secret", "NetworkPolicy"]
    _validate_crd(job)


# --------------------------------------------------------------------------
# The pods' commands, run locally
# --------------------------------------------------------------------------
def _substitute(args: list[str], env: dict[str, str]) -> list[str]:
    """Expand $(VAR) references the way the kubelet does."""
    return [_kubelet_expand(a, env) for a in args]


def _set_option(args: list[str], option: str, value: str) -> list[str]:
    """Replace the value of ``option`` (pods use fixed ports; tests need free ones)."""
    args = list(args)
    args[args.index(option) + 1] = value
    return args


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return popen_logged(argv, log, env=env)  # its own session: the nanny's child ends with it


def _bin_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


@pytest.mark.slow
def test_scheduler_and_worker_commands_start_and_register(tmp_path: Path) -> None:
    """The exact scheduler/worker args and environment (ports moved to free 127.0.0.1 ones, the
    Secret's files in a folder): they talk TLS with the job's certificate and refuse others."""
    from distributed import Client
    from distributed.security import Security

    m = _cpu_manifest()
    tls_dir = _write_secret(k8s.tls_secret("decon-test"), tmp_path / "tls")
    port, dash = _free_port(), _free_port()
    address = f"tls://127.0.0.1:{port}"
    env = _container_env(m, "scheduler", {}, tls_dir)
    sched = _set_option(_args(m, "scheduler"), "--port", str(port))
    sched = _set_option(sched, "--dashboard-address", f"127.0.0.1:{dash}") + ["--host", "127.0.0.1"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start(sched, tmp_path / "scheduler.log", env))
        wait_for_port(port, procs[0], tmp_path / "scheduler.log")
        for i in range(2):
            injected = {"DASK_SCHEDULER_ADDRESS": address, "DASK_WORKER_NAME": f"w{i}"}
            wenv = _container_env(m, "worker", injected, tls_dir)
            argv = _substitute(_args(m, "worker"), wenv)
            argv = _set_option(argv, "--dashboard-address", f"127.0.0.1:{_free_port()}")
            procs.append(_start(argv + ["--host", "127.0.0.1"], tmp_path / f"w{i}.log", wenv))
        # the scheduler's readiness/liveness probe, run as the kubelet runs it (in the container)
        container = m["spec"]["cluster"]["spec"]["scheduler"]["spec"]["containers"][0]
        probe = [
            a.replace(f":{k8s.DASHBOARD_PORT}/", f":{dash}/") for a in container["readinessProbe"]["exec"]["command"]
        ]
        assert subprocess.run(probe, env=env, timeout=60).returncode == 0
        with urllib.request.urlopen(f"http://127.0.0.1:{dash}/health", timeout=10) as r:
            assert r.status == 200 and r.read() == b"ok"
        # without the Secret's certificate: refused (plain TCP, or another certificate)
        with pytest.raises((OSError, TimeoutError)):
            Client(f"tcp://127.0.0.1:{port}", timeout=5)
        with pytest.raises((OSError, TimeoutError)):
            Client(address, security=Security.temporary(), timeout=5)
        files = {k: str(tls_dir / f) for k, f in (("ca", "ca.crt"), ("cert", "tls.crt"), ("key", "tls.key"))}
        job = Security(tls_ca_file=files["ca"], tls_client_cert=files["cert"], tls_client_key=files["key"])
        with Client(address, security=job, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            info = client.scheduler_info(n_workers=-1)["workers"].values()
            assert sorted(w["name"] for w in info) == ["w0", "w1"]
            assert all(w["nthreads"] == 1 for w in info)
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6

            # The worker processes carry the pod's BIGDECON_THREADS, and a chunk
            # task's solver uses that many threads (not bigdecon's 1 per task).
            # (nested functions: pickled by value, the workers can't import this module)
            def getenv(name: str) -> str | None:
                import os

                return os.environ.get(name)

            def task_solver_threads(_: int) -> int:
                from bigdecon._backend import cpu_threads
                from bigdecon.passes import tasks as chunked

                chunked._one_thread_per_task()  # what every chunk task runs first
                return cpu_threads()

            assert set(client.run(getenv, "BIGDECON_THREADS").values()) == {"8"}
            threads = [client.submit(task_solver_threads, i, pure=False) for i in range(4)]
            assert client.gather(threads) == [8] * 4
    finally:
        stop_process_groups(procs)


def _write_input(path: Path) -> tuple[int, ...]:
    """A small 3-D OME-Zarr image with a few bright spots."""
    import numpy as np
    import zarr
    from ome_zarr.writer import write_image

    rng = np.random.default_rng(0)
    img = rng.poisson(5, size=(8, 48, 48)).astype("uint16")
    img[4, 10:13, 10:13] += 500
    img[3, 30:32, 20:23] += 800
    root = zarr.open_group(str(path), mode="w")
    write_image(img, root, scale_factors=(), axes="zyx", storage_options={"chunks": (8, 24, 24)})
    return img.shape


@pytest.mark.slow
def test_daskjob_commands_process_ome_zarr_end_to_end(tmp_path: Path) -> None:
    """Scheduler, two workers and the job runner, each from the manifest's args."""
    # "$(DASK_SCHEDULER_ADDRESS)" in the output's name: defined in the pods, so it
    # would be expanded if the manifest did not escape it.
    inp, out = tmp_path / "in.ome.zarr", tmp_path / "out$(DASK_SCHEDULER_ADDRESS).ome.zarr"
    shape = _write_input(inp)
    m = k8s.build_daskjob(
        "e2e",
        str(inp),
        str(out),
        ["--fwhm", "2.0", "--sparse-iters", "3", "--deconv-iters", "3"],
        image="unused",
        workers=2,
        gpus_per_worker=0,
        worker_memory="2Gi",
        worker_cpu="2",
    )
    port, dash = _free_port(), _free_port()
    address = f"tls://127.0.0.1:{port}"
    tls_dir = _write_secret(k8s.tls_secret("e2e"), tmp_path / "tls")
    env = _container_env(m, "scheduler", {}, tls_dir)
    sched = _set_option(_args(m, "scheduler"), "--port", str(port))
    sched = _set_option(sched, "--dashboard-address", f"127.0.0.1:{dash}") + ["--host", "127.0.0.1"]
    procs: list[subprocess.Popen] = []
    job_log = tmp_path / "job.log"
    try:
        # Like the operator: the runner starts first and the scheduler only later,
        # here after longer than `bigdecon run`'s own default connect timeout.
        jenv = _container_env(m, "job", {"DASK_SCHEDULER_ADDRESS": address}, tls_dir)
        job = _start(_substitute(_args(m, "job"), jenv), job_log, jenv)
        procs.append(job)
        time.sleep(_run_default("scheduler_timeout") + 2)
        assert job.poll() is None, job_log.read_text()
        procs.append(_start(sched, tmp_path / "scheduler.log", env))
        wait_for_port(port, procs[-1], tmp_path / "scheduler.log")
        for i in range(2):
            injected = {"DASK_SCHEDULER_ADDRESS": address, "DASK_WORKER_NAME": f"w{i}"}
            wenv = _container_env(m, "worker", injected, tls_dir)
            argv = _substitute(_args(m, "worker"), wenv)
            argv = _set_option(argv, "--dashboard-address", f"127.0.0.1:{_free_port()}")
            procs.append(_start(argv + ["--host", "127.0.0.1"], tmp_path / f"w{i}.log", wenv))
        assert job.wait(timeout=180) == 0, job_log.read_text()
    finally:
        stop_process_groups(procs)

    import zarr

    group = zarr.open_group(str(out), mode="r")
    attrs = group.attrs.asdict()
    ome = attrs.get("ome", attrs)
    first = ome["multiscales"][0]["datasets"][0]["path"]
    result = group[first]
    assert result.shape[-3:] == shape[-3:]
    assert float(abs(result[...]).sum()) > 0
