"""Tests of bigdecon.hpc: batch scripts from dask-jobqueue, and the generated
worker command run locally against a real scheduler process."""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import dask_jobqueue  # noqa: F401  (the test extra)
import numpy as np
import pytest
from helpers import popen_logged, stopped_at_exit, wait_for_port

from bigdecon import hpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker_command(script: str) -> str:
    """The script's last non-empty line: the worker command jobqueue wrote."""
    return [line for line in script.splitlines() if line.strip()][-1]


def test_slurm_script_cpu() -> None:
    script = hpc.job_script(
        "slurm",
        cores=4,
        memory="16GiB",
        walltime="02:00:00",
        queue="gpu",
        account="proj42",
        job_extra=["--qos=high"],
        python="/opt/venv/bin/python",
    )
    lines = script.splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    for expected in (
        "#SBATCH -J bigdecon-worker",
        "#SBATCH -p gpu",
        "#SBATCH -A proj42",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16G",
        "#SBATCH -t 02:00:00",
        "#SBATCH --qos=high",
    ):
        assert expected in lines, (expected, script)
    assert not any("gres" in line for line in lines)
    # one single-threaded worker: its solver gets the job's 4 cores
    assert "export BIGDECON_THREADS=4" in lines
    assert lines.index("export BIGDECON_THREADS=4") < len(lines) - 1
    cmd = shlex.split(_worker_command(script))
    assert cmd[:3] == ["/opt/venv/bin/python", "-m", "distributed.cli.dask_worker"]
    assert cmd[3] == hpc.PLACEHOLDER_SCHEDULER
    assert cmd[cmd.index("--nthreads") + 1] == "1"
    assert "--nanny" in cmd
    # Dask gets 90 % of the job's memory
    assert cmd[cmd.index("--memory-limit") + 1] == "14.40GiB"


def test_slurm_script_gpu_uses_dask_cuda() -> None:
    script = hpc.job_script("slurm", cores=16, memory="64GiB", gpus_per_worker=2)
    assert "#SBATCH --gres=gpu:2" in script.splitlines()
    assert "#SBATCH --cpus-per-task=16" in script.splitlines()
    # two GPU workers share 16 cores: 8 for each one's host-side steps
    assert "export BIGDECON_THREADS=8" in script.splitlines()
    cmd = shlex.split(_worker_command(script))
    assert cmd[1:5] == ["-m", "dask", "cuda", "worker"]
    assert cmd[cmd.index("--nthreads") + 1] == "1"
    # one worker per GPU shares the job's memory
    assert cmd[cmd.index("--memory-limit") + 1] == "28.80GiB"


def test_pbs_and_lsf_scripts() -> None:
    pbs = hpc.job_script("pbs", cores=8, memory="32GiB", queue="q", account="a", gpus_per_worker=1)
    assert "#PBS -l select=1:ncpus=8:ngpus=1:mem=32GB" in pbs.splitlines()
    assert "#PBS -q q" in pbs and "#PBS -A a" in pbs
    assert "#PBS -l walltime=01:00:00" in pbs
    lsf = hpc.job_script("lsf", cores=8, memory="32GiB", walltime="02:30:00", account="p")
    lines = lsf.splitlines()
    assert "#BSUB -n 8" in lines and "#BSUB -W 02:30" in lines and '#BSUB -P "p"' in lines
    assert "distributed.cli.dask_worker" in _worker_command(lsf)
    assert "export BIGDECON_THREADS=8" in pbs.splitlines() and "export BIGDECON_THREADS=8" in lines
    with pytest.raises(ValueError, match="unknown batch system"):
        hpc.job_script("sge", cores=1, memory="1GiB")  # type: ignore[arg-type]
    assert [hpc.submit_program(k) for k in ("slurm", "pbs", "lsf")] == ["sbatch", "qsub", "bsub"]


@pytest.mark.parametrize(
    "cores, gpus, threads, expected", [(8, 0, 1, 8), (8, 0, 2, 4), (16, 2, 1, 8), (2, 4, 1, 1), (3, 2, 1, 1)]
)
def test_solver_threads(cores: int, gpus: int, threads: int, expected: int) -> None:
    assert hpc.solver_threads(cores, max(gpus, 1), threads) == expected
    script = hpc.job_script("slurm", cores=cores, memory="8GiB", gpus_per_worker=gpus, threads_per_worker=threads)
    assert f"export BIGDECON_THREADS={expected}" in script.splitlines()


def test_prologue_runs_after_the_export() -> None:
    script = hpc.job_script(
        "slurm", cores=4, memory="8GiB", job_script_prologue=["module load cuda", "export BIGDECON_THREADS=2"]
    )
    lines = script.splitlines()
    assert lines.index("export BIGDECON_THREADS=4") < lines.index("module load cuda")
    assert lines.index("export BIGDECON_THREADS=2") < len(lines) - 1


def test_job_script_equals_cluster_job_script(tmp_path: Path) -> None:
    options = dict(cores=4, memory="8GiB", queue="short", account="acct", job_extra=["--exclusive"])
    cluster = hpc.make_jobqueue_cluster(
        "slurm",
        workers=0,
        tls_dir=tmp_path,
        scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"},
        **options,
    )
    try:
        expected = cluster.job_script()
        address = cluster.scheduler_address
        security = cluster.security
    finally:
        cluster.close()
    assert address.startswith("tls://127.0.0.1:")  # TLS by default (issue 23)
    assert list(tmp_path.iterdir()) == []  # its generated certificate is gone with it
    assert hpc.job_script("slurm", scheduler_address=address, security=security, **options) == expected


def test_slurm_worker_command_registers_with_local_scheduler(tmp_path: Path) -> None:
    port, dash = _free_port(), _free_port()
    address = f"tcp://127.0.0.1:{port}"
    script = hpc.job_script(
        "slurm", cores=3, memory="2GiB", scheduler_address=address, python=sys.executable, tls=False
    )
    # The whole job script runs, as the batch system would run it; listening
    # options on the worker command are the only additions (loopback only).
    lines = script.rstrip("\n").splitlines()
    lines[-1] += " " + shlex.join(["--host", "127.0.0.1", "--dashboard-address", f"127.0.0.1:{_free_port()}"])
    job_file = tmp_path / "job.sh"
    job_file.write_text("\n".join(lines) + "\n")
    worker_argv = ["bash", str(job_file)]
    scheduler_argv = [
        sys.executable,
        "-m",
        "distributed.cli.dask_scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-address",
        f"127.0.0.1:{dash}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    procs: list[subprocess.Popen] = []
    logs = [tmp_path / "scheduler.log", tmp_path / "worker.log"]
    with stopped_at_exit(procs, logs):
        for argv, log in zip((scheduler_argv, worker_argv), logs):
            procs.append(popen_logged(argv, log, env=env))
            if argv is scheduler_argv:
                wait_for_port(port, procs[0], log)
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            (worker,) = client.scheduler_info(n_workers=-1)["workers"].values()
            assert worker["name"] == "dummy-name"
            assert worker["nthreads"] == 1
            assert worker["memory_limit"] == int(2 * 2**30 * 0.9)

            # (nested functions: pickled by value, the worker can't import this module)
            def getenv(name: str) -> str | None:
                import os

                return os.environ.get(name)

            def task_solver_threads() -> int:
                from bigdecon._backend import cpu_threads
                from bigdecon.passes import tasks as chunked

                chunked._one_thread_per_task()  # what every chunk task runs first
                return cpu_threads()

            # the script's export reaches the worker, and a chunk task's solver uses it
            assert list(client.run(getenv, "BIGDECON_THREADS").values()) == ["3"]
            assert client.submit(task_solver_threads, pure=False).result(timeout=30) == 3


def test_cli_slurm_dry_run_prints_script(capsys: pytest.CaptureFixture[str]) -> None:
    from bigdecon import cli

    rc = cli.main(
        [
            "submit",
            "/scratch/in.ome.zarr",
            "/scratch/out.ome.zarr",
            "--fwhm",
            "3",
            "--slurm",
            "--queue",
            "gpu",
            "--account",
            "proj",
            "--cores",
            "4",
            "--memory",
            "16GiB",
            "--gpus-per-worker",
            "1",
            "--dry-run",
        ]
    )
    assert rc in (0, None)
    out = capsys.readouterr().out
    assert "#SBATCH -p gpu" in out and "#SBATCH --gres=gpu:1" in out
    assert "dask cuda worker" in out


def test_cli_slurm_without_sbatch_fails_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bigdecon import cli

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no sbatch
    rc = cli.main(["submit", "/scratch/in.ome.zarr", "/scratch/out.ome.zarr", "--fwhm", "3", "--slurm"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "sbatch" in err and "\n" not in err


def test_cli_slurm_checks_parameters_first(capsys: pytest.CaptureFixture[str]) -> None:
    from bigdecon import cli

    rc = cli.main(["submit", "/scratch/in.ome.zarr", "/scratch/out.ome.zarr", "--slurm", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "give the PSF size" in err and "\n" not in err


# --------------------------------------------------------------------------- TLS (issue 23, item 9)


def _tls_dry_run(capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    from bigdecon import cli

    rc = cli.main(
        ["submit", "/scratch/in.ome.zarr", "/scratch/out.ome.zarr", "--fwhm", "3", "--slurm", *extra, "--dry-run"]
    )
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_job_script_uses_tls_by_default(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rc, out, err = _tls_dry_run(capsys, "--tls-dir", str(tmp_path))
    assert rc == 0 and err == "", err
    cmd = shlex.split(_worker_command(out))
    assert cmd[3].startswith("tls://") and cmd[cmd.index("--protocol") + 1] == "tls://"
    for flag, name in (("--tls-ca-file", "ca.pem"), ("--tls-cert", "cert.pem"), ("--tls-key", "key.pem")):
        assert cmd[cmd.index(flag) + 1] == str(tmp_path / "job-XXXXXXXX" / name)
    assert list(tmp_path.iterdir()) == []  # a dry run writes no key
    # --no-tls: plain TCP, with a warning that says why it is unsafe
    rc, out, err = _tls_dry_run(capsys, "--no-tls")
    cmd = shlex.split(_worker_command(out))
    assert rc == 0 and cmd[3].startswith("tcp://") and not any(a.startswith("--tls") for a in cmd)
    assert "--no-tls" in err and "run code as you" in err and err.count("\n") == 1
    # the user's own certificates: all three, or none
    rc, _, err = _tls_dry_run(capsys, "--tls-cert", "/x/cert.pem")
    assert rc == 2 and "--tls-ca-file, --tls-cert and --tls-key together" in err


def test_tls_files_are_private_and_removed(tmp_path: Path) -> None:
    import stat

    files = hpc.write_tls_files(tmp_path / "tls")
    folder = Path(files.folder)
    assert folder.parent == tmp_path / "tls"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in (files.ca_file, files.cert, files.key):
        assert stat.S_IMODE(os.stat(name).st_mode) == 0o600
    assert "PRIVATE KEY" in Path(files.key).read_text() and "CERTIFICATE" in Path(files.cert).read_text()
    other = hpc.write_tls_files(tmp_path / "tls")  # each submission its own key
    assert Path(other.key).read_text() != Path(files.key).read_text()
    files.remove()
    assert not folder.exists() and Path(other.key).exists()  # only its own folder
    other.remove()


def _raw_tls(address: str, ca_file: str, cert: tuple[str, str] | None = None) -> str:
    """A raw TLS client that trusts ``ca_file`` and shows ``cert`` (or none): whether the scheduler
    keeps the connection open ("accepted": it waits for a message) or drops it ("refused")."""
    import ssl

    host, port = address[len("tls://") :].rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(*cert)
    with socket.create_connection((host, int(port)), timeout=3) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"\0")
                return "refused" if tls.recv(1) == b"" else "answered"
        except TimeoutError:
            return "accepted"
        except OSError:  # ssl.SSLError: certificate required, or the connection reset
            return "refused"


@pytest.mark.slow
def test_tls_scheduler_admits_the_job_script_worker_and_refuses_others(tmp_path: Path) -> None:
    """The generated job script's worker joins the in-process scheduler over TLS; a client without
    the job's certificate (plain TCP, or another certificate) is refused."""
    import psutil
    from distributed import Client
    from distributed.security import Security

    def listening() -> set[tuple[str, int]]:
        conns = psutil.Process().net_connections(kind="inet")
        return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}

    files = hpc.write_tls_files(tmp_path / "tls")
    sec = hpc.tls_security(files)
    before = listening()
    cluster = hpc.make_jobqueue_cluster(
        "slurm",
        workers=0,
        cores=1,
        memory="2GiB",
        python=sys.executable,
        security=sec,
        scheduler_options={"host": "127.0.0.1"},  # here only; on a login node it listens on all
    )
    procs: list[subprocess.Popen] = []
    log = tmp_path / "worker.log"
    try:
        # the scheduler's comm port and, by default, its dashboard: on 127.0.0.1 (ssh -L to see it)
        opened = listening() - before
        assert len(opened) == 2 and {ip for ip, _ in opened} == {"127.0.0.1"}, opened
        address = cluster.scheduler_address
        assert address.startswith("tls://127.0.0.1:")
        script = cluster.job_script()
        lines = script.rstrip("\n").splitlines()
        lines[-1] += " " + shlex.join(["--host", "127.0.0.1", "--dashboard-address", f"127.0.0.1:{_free_port()}"])
        job = tmp_path / "job.sh"
        job.write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
        procs.append(popen_logged(["bash", str(job)], log, env=env))
        with Client(address, security=sec, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            (worker,) = client.scheduler_info(n_workers=-1)["workers"]
            assert worker.startswith("tls://")
            assert client.submit(sum, [1, 2]).result(timeout=30) == 3
        plain = "tcp://" + address[len("tls://") :]
        with pytest.raises((OSError, TimeoutError)):
            Client(plain, timeout=5)
        with pytest.raises((OSError, TimeoutError)):
            Client(address, security=Security.temporary(), timeout=5)  # TLS, but not the job's certificate
        # Trusting the job's CA is not enough: the scheduler asks for the job's certificate.
        other = Security.temporary()
        mine = {"tls_client_cert": other.tls_client_cert, "tls_client_key": other.tls_client_key}
        with pytest.raises((OSError, TimeoutError)):
            Client(address, security=Security(tls_ca_file=files.ca_file, **mine), timeout=5)
        assert _raw_tls(address, files.ca_file) == "refused"
        assert _raw_tls(address, files.ca_file, (files.cert, files.key)) != "refused"  # the control
    except BaseException:
        print(log.read_text(errors="replace") if log.exists() else "")
        raise
    finally:
        from helpers import stop_process_groups

        stop_process_groups(procs)
        cluster.close()
        files.remove()


def _fake_batch_system(folder: Path) -> Path:
    """``sbatch``/``scancel`` that run the job script here, in its own session (a stand-in for Slurm
    on this machine: the script and the worker it starts are the real ones)."""
    folder.mkdir()
    (folder / "sbatch").write_text(
        "#!/bin/bash\n"
        f'job="{folder}/job-$$.sh"; cp "$1" "$job"\n'
        'setsid bash "$job" > "$job.log" 2>&1 < /dev/null &\n'
        f'echo $! > "{folder}/$!.pid"\n'
        'echo "Submitted batch job $!"\n'
    )
    (folder / "scancel").write_text('#!/bin/bash\nkill -TERM -- "-$1" 2>/dev/null; exit 0\n')
    for name in ("sbatch", "scancel"):
        (folder / name).chmod(0o755)
    return folder


@pytest.mark.slow
def test_cli_submit_slurm_runs_over_tls(tmp_path: Path) -> None:
    """``bigdecon submit --slurm`` end to end: the job script's worker and this process's client use
    the generated certificate (tls://), the run finishes, and the certificate folder is removed."""
    import signal

    import zarr
    from ome_zarr.writer import write_image

    rng = np.random.default_rng(0)
    root = zarr.open_group(str(tmp_path / "in.ome.zarr"), mode="w")
    write_image(rng.poisson(5, (4, 32, 32)).astype("uint16"), root, scale_factors=(), axes="zyx")
    bin_dir = _fake_batch_system(tmp_path / "bin")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONWARNINGS": "ignore"}
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    argv = [sys.executable, "-m", "bigdecon.cli", "submit", tmp_path / "in.ome.zarr", tmp_path / "out.ome.zarr"]
    argv += ["--fwhm", "2", "--sparse-iters", "2", "--deconv-iters", "2", "--slurm", "--cores", "1"]
    argv += ["--memory", "2GiB", "--workers", "1", "--tls-dir", tmp_path / "tls"]
    try:
        proc = subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=300, env=env)
        logs = "".join(p.read_text() for p in bin_dir.glob("*.log"))
        assert proc.returncode == 0, proc.stderr[-3000:] + logs[-3000:]
        (script,) = bin_dir.glob("job-*.sh")
        cmd = shlex.split(_worker_command(script.read_text()))
        assert cmd[3].startswith("tls://") and cmd[cmd.index("--tls-key") + 1].startswith(str(tmp_path / "tls"))
        assert re.search(r"Registered to:\s+tls://", logs), logs[-3000:]  # the worker joined over TLS
        assert zarr.open_group(str(tmp_path / "out.ome.zarr"), mode="r").attrs.asdict()
        assert list((tmp_path / "tls").iterdir()) == []  # the job's key is gone with the run
    finally:
        for pid_file in bin_dir.glob("*.pid"):
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
