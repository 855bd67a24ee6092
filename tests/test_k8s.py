"""Tests of bigdecon.k8s: DaskJob/RBAC manifests, CLI hooks, and the pods'
commands run as local processes."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from bigdecon import k8s

from conftest import stop_process_groups, wait_for_port

pytest.importorskip("kubernetes")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
jsonschema = pytest.importorskip("jsonschema")

K8S_VERSION = "1.37.0"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _cpu_manifest(**kw: Any) -> dict[str, Any]:
    args = dict(image="registry.example.org/bigdecon:0.1.0", workers=3, gpus_per_worker=0)
    args.update(kw)
    return k8s.build_daskjob(
        "decon-test", "s3://bucket/in.ome.zarr", "s3://bucket/out.ome.zarr",
        ["--deconv-iters", "5"], **args,
    )  # fmt: skip


def _gpu_manifest() -> dict[str, Any]:
    return k8s.build_daskjob(
        None, "s3://bucket/in.ome.zarr", "s3://bucket/out.ome.zarr", ["--fwhm", "2.0"],
        image="registry.example.org/bigdecon:0.1.0-cuda", workers=4, gpus_per_worker=2,
        namespace="imaging", storage_secret="s3-credentials", service_account="bigdecon",
        pvc="scratch", worker_memory="64Gi", worker_cpu="16",
    )  # fmt: skip


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

    path = (
        Path(dask_kubernetes.__file__).parent
        / "operator/deployment/helm/dask-kubernetes-operator/crds/daskjob.yaml"
    )
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli_main():
    cli = pytest.importorskip("bigdecon.cli", reason="bigdecon.cli not written yet")
    if not hasattr(cli, "main"):
        pytest.skip("bigdecon.cli has no main yet")
    return cli


def _has_run_command() -> bool:
    try:
        import bigdecon.cli as cli
    except ImportError:
        return False
    try:
        cli.main(["run", "--help"])
    except SystemExit as exc:
        return exc.code == 0
    except Exception:
        return False
    return True


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
        "dask", "scheduler", "--port", "8786", "--dashboard-address", ":8787",
    ]  # fmt: skip
    w = _args(m, "worker")
    assert w[:3] == ["dask", "worker", "$(DASK_SCHEDULER_ADDRESS)"]
    assert w[w.index("--nthreads") + 1] == "1"
    assert w[w.index("--name") + 1] == "$(DASK_WORKER_NAME)"
    assert w[w.index("--dashboard-address") + 1] == "8788"
    # 90 % of 32Gi, leaving head room under the pod limit
    assert w[w.index("--memory-limit") + 1] == f"{int(32 * 1024 * 0.9)}MiB"
    assert _args(m, "job") == [
        "bigdecon", "run", "s3://bucket/in.ome.zarr", "s3://bucket/out.ome.zarr",
        "--deconv-iters", "5", "--scheduler", "$(DASK_SCHEDULER_ADDRESS)",
    ]  # fmt: skip
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
        ("tcp-comm", 8786), ("http-dashboard", 8787),
    }  # fmt: skip
    assert svc["selector"]["dask.org/cluster-name"] == "decon-test"
    assert "envFrom" not in m["spec"]["cluster"]["spec"]["scheduler"]["spec"]["containers"][0]


def test_manifest_contents_gpu() -> None:
    m = _gpu_manifest()
    assert m["metadata"]["namespace"] == "imaging"
    assert m["metadata"]["name"] == k8s.default_job_name(
        "s3://bucket/in.ome.zarr", "s3://bucket/out.ome.zarr"
    )
    w = _args(m, "worker")
    assert w[:4] == ["dask", "cuda", "worker", "$(DASK_SCHEDULER_ADDRESS)"]
    # one worker per GPU: the pod memory is split between them
    assert w[w.index("--memory-limit") + 1] == f"{int(64 * 1024 * 0.9 / 2)}MiB"
    spec = m["spec"]["cluster"]["spec"]["worker"]["spec"]
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert spec["containers"][0]["volumeMounts"] == [{"name": "data", "mountPath": "/data"}]
    assert spec["serviceAccountName"] == "bigdecon"
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"


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
    with pytest.raises(Exception):
        k8s.create_daskjob(_cpu_manifest(), kubeconfig=dead_kubeconfig)
    with pytest.raises(Exception):
        k8s.daskjob_status("decon-test", kubeconfig=dead_kubeconfig)


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def test_cli_dry_run_prints_valid_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli_main()
    rc = cli.main([
        "submit", "s3://bucket/in.ome.zarr", "s3://bucket/out.ome.zarr",
        "--image", "img:1", "--workers", "2", "--gpus-per-worker", "1",
        "--storage-secret", "s3", "--namespace", "imaging", "--dry-run",
    ])  # fmt: skip
    assert rc in (0, None)
    m = yaml.safe_load(capsys.readouterr().out)
    _validate_crd(m)
    assert m["metadata"]["namespace"] == "imaging"
    job = _args(m, "job")
    assert job[:4] == ["bigdecon", "run", "s3://bucket/in.ome.zarr", "s3://bucket/out.ome.zarr"]
    assert job[-2:] == ["--scheduler", "$(DASK_SCHEDULER_ADDRESS)"]


def test_cli_submit_status_logs_errors_are_one_line(
    dead_kubeconfig: str, capsys: pytest.CaptureFixture[str]
) -> None:
    cli = _cli_main()
    for argv in (
        ["submit", "s3://b/i.zarr", "s3://b/o.zarr", "--image", "img:1"],
        ["status", "decon-test"],
        ["logs", "decon-test"],
    ):
        rc = cli.main([*argv, "--kubeconfig", dead_kubeconfig])
        err = capsys.readouterr().err.strip()
        assert rc == 1, argv
        assert err.startswith(f"bigdecon {argv[0]}: error:") and "\n" not in err, err


def test_cli_submit_requires_image(capsys: pytest.CaptureFixture[str]) -> None:
    cli = _cli_main()
    assert cli.main(["submit", "s3://b/i.zarr", "s3://b/o.zarr", "--dry-run"]) == 2
    assert "--image" in capsys.readouterr().err


def test_committed_example_matches_dry_run() -> None:
    _cli_main()
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "bigdecon").exists():
        pytest.skip("bigdecon console script not installed")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        ["bash", str(REPO / "deploy/regenerate.sh"), "--check"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _validate_crd(yaml.safe_load((REPO / "deploy/daskjob-example.yaml").read_text()))


# --------------------------------------------------------------------------
# The pods' commands, run locally
# --------------------------------------------------------------------------
def _substitute(args: list[str], env: dict[str, str]) -> list[str]:
    """Expand $(VAR) references the way the kubelet does."""
    out = []
    for a in args:
        for key, value in env.items():
            a = a.replace(f"$({key})", value)
        assert "$(" not in a, a
        out.append(a)
    return out


def _set_option(args: list[str], option: str, value: str) -> list[str]:
    """Replace the value of ``option`` (pods use fixed ports; tests need free ones)."""
    args = list(args)
    args[args.index(option) + 1] = value
    return args


def _start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
        start_new_session=True,  # so the nanny's child can be ended with it
    )  # fmt: skip


def _bin_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    return env


def test_scheduler_and_worker_commands_start_and_register(tmp_path: Path) -> None:
    """The exact scheduler/worker args (ports moved to free 127.0.0.1 ones)."""
    from distributed import Client

    m = _cpu_manifest()
    port, dash = _free_port(), _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = _bin_env()
    sched = _set_option(_args(m, "scheduler"), "--port", str(port))
    sched = _set_option(sched, "--dashboard-address", f"127.0.0.1:{dash}") + ["--host", "127.0.0.1"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start(sched, tmp_path / "scheduler.log", env))
        wait_for_port(port, procs[0], tmp_path / "scheduler.log")
        for i in range(2):
            wenv = {**env, "DASK_SCHEDULER_ADDRESS": address, "DASK_WORKER_NAME": f"w{i}"}
            argv = _substitute(_args(m, "worker"), wenv)
            argv = _set_option(argv, "--dashboard-address", f"127.0.0.1:{_free_port()}")
            procs.append(_start(argv + ["--host", "127.0.0.1"], tmp_path / f"w{i}.log", wenv))
        # what the scheduler's readiness/liveness probes ask for
        with urllib.request.urlopen(f"http://127.0.0.1:{dash}/health", timeout=10) as r:
            assert r.status == 200 and r.read() == b"ok"
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
            info = client.scheduler_info(n_workers=-1)["workers"].values()
            assert sorted(w["name"] for w in info) == ["w0", "w1"]
            assert all(w["nthreads"] == 1 for w in info)
            assert client.submit(sum, [1, 2, 3]).result(timeout=30) == 6
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
@pytest.mark.skipif(not _has_run_command(), reason="bigdecon.cli has no 'run' subcommand yet")
def test_daskjob_commands_process_ome_zarr_end_to_end(tmp_path: Path) -> None:
    """Scheduler, two workers and the job runner, each from the manifest's args."""
    inp, out = tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr"
    shape = _write_input(inp)
    m = k8s.build_daskjob(
        "e2e", str(inp), str(out),
        ["--fwhm", "2.0", "--sparse-iters", "3", "--deconv-iters", "3"],
        image="unused", workers=2, gpus_per_worker=0, worker_memory="2Gi",
    )  # fmt: skip
    port, dash = _free_port(), _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = _bin_env()
    sched = _set_option(_args(m, "scheduler"), "--port", str(port))
    sched = _set_option(sched, "--dashboard-address", f"127.0.0.1:{dash}") + ["--host", "127.0.0.1"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_start(sched, tmp_path / "scheduler.log", env))
        wait_for_port(port, procs[0], tmp_path / "scheduler.log")
        for i in range(2):
            wenv = {**env, "DASK_SCHEDULER_ADDRESS": address, "DASK_WORKER_NAME": f"w{i}"}
            argv = _substitute(_args(m, "worker"), wenv)
            argv = _set_option(argv, "--dashboard-address", f"127.0.0.1:{_free_port()}")
            procs.append(_start(argv + ["--host", "127.0.0.1"], tmp_path / f"w{i}.log", wenv))
        jenv = {**env, "DASK_SCHEDULER_ADDRESS": address}
        job = subprocess.run(
            _substitute(_args(m, "job"), jenv), env=jenv, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert job.returncode == 0, job.stdout + job.stderr
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
