"""GPU tests: every solver on CuPy against NumPy, an out-of-core run on dask-cuda
workers against the CPU result, and the Kubernetes GPU worker command.

All of them are marked ``gpu`` and skip cleanly without CuPy and a CUDA device
(CI has none; there tests/test_fake_gpu.py runs the solver tests on a strict CuPy
stand-in). On a machine with a GPU: ``pytest -m gpu -q tests/`` or, with
the benchmark rows too, ``bash benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import filaments, popen_logged, stopped_at_exit, wait_for_port

import bigdecon
from bigdecon._backend import gpu_available

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA GPU"),
]

RTOL = 1e-4  # of the CPU result's maximum


@pytest.fixture(scope="module")
def cp():
    import cupy

    return cupy


@pytest.fixture(scope="module")
def f() -> np.ndarray:
    """A normalised (t, y, x) stack, the solvers' input."""
    raw = filaments((6, 96, 96), seed=1)[0]
    return (raw / raw.max()).astype(np.float32)


def _same(gpu, cpu: np.ndarray, cp, rtol: float = RTOL) -> None:
    """CuPy in, CuPy float32 out, equal to the NumPy result to ``rtol`` of its maximum."""
    assert isinstance(gpu, cp.ndarray), type(gpu)
    assert gpu.dtype == np.float32 and gpu.shape == cpu.shape, (gpu.dtype, gpu.shape, cpu.shape)
    got = cp.asnumpy(gpu)
    scale = float(np.abs(cpu).max())
    err = float(np.abs(got - cpu).max())
    assert scale > 0 and err <= rtol * scale, f"max |gpu - cpu| = {err:.3g} = {err / scale:.3g} of the max"


# --------------------------------------------------------------------------- solvers


@pytest.mark.parametrize(
    "shape, kwargs",
    [
        ((6, 96, 96), {}),  # coupled 3-D, short k: the DCT along k by a matrix product
        ((96, 96), {}),  # one plane
        ((2, 96, 96), {}),  # uncoupled (fewer than 3 planes)
        ((40, 48, 48), dict(iterations=30)),  # k > 32: a real DCT along k
        ((6, 96, 96), dict(iterations=50, fidelity=80.0, sparsity=4.0, tcontinuity=1.0)),
    ],
)
def test_sparse_hessian(cp, shape, kwargs) -> None:
    raw = filaments((shape[0] if len(shape) == 3 else 1, *shape[-2:]), seed=2)[0]
    f = (raw / raw.max()).astype(np.float32).reshape(shape)
    _same(bigdecon.sparse_hessian(cp.asarray(f), **kwargs), bigdecon.sparse_hessian(f, **kwargs), cp)


@pytest.mark.parametrize("accelerate", [True, False])
@pytest.mark.parametrize("psf_fwhm", [3.0, (2.0, 3.0, 3.0)])
def test_richardson_lucy(cp, f, accelerate, psf_fwhm) -> None:
    psf = bigdecon.gaussian_psf(psf_fwhm)  # 2-D: plane by plane; 3-D: as a volume
    cpu = bigdecon.richardson_lucy(f, psf, 7, accelerate)
    _same(bigdecon.richardson_lucy(cp.asarray(f), psf, 7, accelerate), cpu, cp)
    # a CuPy PSF too
    _same(bigdecon.richardson_lucy(cp.asarray(f), cp.asarray(psf), 7, accelerate), cpu, cp)


@pytest.mark.parametrize("psf_fwhm", [3.0, (2.0, 3.0, 3.0)])
def test_landweber(cp, f, psf_fwhm) -> None:
    psf = bigdecon.gaussian_psf(psf_fwhm)
    _same(bigdecon.landweber(cp.asarray(f), psf, 7), bigdecon.landweber(f, psf, 7), cp)


@pytest.mark.parametrize("mode", [0, 1, 2, 3, 4, 5])
def test_background(cp, f, mode) -> None:
    if mode == 0:
        out = bigdecon.estimate_background(cp.asarray(f), 0)
        assert isinstance(out, cp.ndarray) and not bool(out.any())
        return
    _same(bigdecon.estimate_background(cp.asarray(f), mode), bigdecon.estimate_background(f, mode), cp)


@pytest.mark.parametrize("shape", [(6, 96, 96), (3, 95, 97), (64, 80)])
def test_upsample(cp, shape) -> None:
    img = np.random.default_rng(3).random(shape, dtype=np.float32)
    _same(bigdecon.fourier_upsample(cp.asarray(img)), bigdecon.fourier_upsample(img), cp)
    _same(bigdecon.spatial_upsample(cp.asarray(img)), bigdecon.spatial_upsample(img), cp, rtol=0)


def test_whole_pipeline_float32_in_and_out(cp, f) -> None:
    raw = (f * 1000).astype(np.uint16)
    cpu = bigdecon.sparse_deconvolve(raw, fwhm=3)
    _same(bigdecon.sparse_deconvolve(cp.asarray(raw), fwhm=3), cpu, cp)


def test_big_endian_block_to_device(cp) -> None:
    """Zarr may hand out big-endian blocks ('>u2', '>f4'); they must reach the GPU intact."""
    from bigdecon._backend import to_device

    block = np.arange(24, dtype=">u2").reshape(2, 3, 4)
    moved = to_device(block, "gpu")
    assert isinstance(moved, cp.ndarray)
    np.testing.assert_array_equal(cp.asnumpy(moved), block.astype("=u2"))


# --------------------------------------------------------------------------- out of core


def test_out_of_core_on_dask_cuda_workers(cp, tmp_path: Path) -> None:
    """``deconvolve(..., device="gpu")`` on LocalCUDACluster workers equals the CPU run."""
    dask_cuda = pytest.importorskip("dask_cuda")
    from distributed import Client

    from bigdecon.io import open_image, write_image

    raw = filaments((8, 96, 96), seed=4)[0]
    src = write_image(str(tmp_path / "in.ome.zarr"), (raw * 20).astype(np.uint16), "tyx", chunks=(2, 48, 48))
    # 2 x 2 x 2 sparse blocks with halos, whole-plane tasks for the other steps
    params = dict(fwhm=3, sparse_iters=30, deconv_iters=5, chunks={"t": 4, "y": 48, "x": 48})
    cpu_out, gpu_out = str(tmp_path / "cpu.ome.zarr"), str(tmp_path / "gpu.ome.zarr")
    bigdecon.deconvolve(src, cpu_out, device="cpu", **params)
    with (
        dask_cuda.LocalCUDACluster(
            n_workers=1, threads_per_worker=1, dashboard_address=":0", protocol="tcp"
        ) as cluster,
        Client(cluster) as client,
    ):

        def visible_gpus() -> int:
            import cupy

            return cupy.cuda.runtime.getDeviceCount()

        assert all(n >= 1 for n in client.run(visible_gpus).values())
        result = bigdecon.deconvolve(src, gpu_out, device="gpu", client=client, **params)
    assert result is not None
    a = open_image(cpu_out).data.compute()
    b = open_image(gpu_out).data.compute()
    assert a.shape == b.shape == raw.shape and a.dtype == b.dtype == np.float32
    scale = float(np.abs(a).max())
    err = float(np.abs(a - b).max())
    assert scale > 0 and err <= RTOL * scale, f"max |gpu - cpu| = {err / scale:.3g} of the max"


# --------------------------------------------------------------------------- Kubernetes GPU worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_k8s_gpu_worker_command_registers(tmp_path: Path) -> None:
    """The GPU worker pod's exact ``dask cuda worker`` args (2 GPUs per pod: free dashboard
    ports) start one worker per visible GPU, with the pod's BIGDECON_THREADS."""
    pytest.importorskip("dask_cuda")
    pytest.importorskip("kubernetes")
    from distributed import Client

    from bigdecon import k8s

    m = k8s.build_daskjob(
        "gpu-test",
        "s3://b/i.zarr",
        "s3://b/o.zarr",
        ["--fwhm", "3"],
        image="img:cuda",
        workers=1,
        gpus_per_worker=2,
        worker_cpu="8",
        worker_memory="8Gi",
    )
    (container,) = m["spec"]["cluster"]["spec"]["worker"]["spec"]["containers"]
    port, dash = _free_port(), _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "DASK_SCHEDULER_ADDRESS"}
    wenv = {
        **env,
        "DASK_SCHEDULER_ADDRESS": address,
        "DASK_WORKER_NAME": "gpu-w",
        **{e["name"]: e["value"] for e in container["env"]},
    }
    args = [
        a.replace("$(DASK_SCHEDULER_ADDRESS)", address).replace("$(DASK_WORKER_NAME)", "gpu-w")
        for a in container["args"]
    ]
    assert args[:3] == ["dask", "cuda", "worker"]
    argv = [sys.executable, "-m", *args, "--host", "127.0.0.1"]  # the image has `dask` on PATH
    sched = [
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
    logs = [tmp_path / "scheduler.log", tmp_path / "worker.log"]
    procs: list[subprocess.Popen] = []
    with stopped_at_exit(procs, logs):
        procs.append(popen_logged(sched, logs[0], env=env))
        wait_for_port(port, procs[0], logs[0])
        procs.append(popen_logged(argv, logs[1], env=wenv))
        import cupy

        n_gpus = cupy.cuda.runtime.getDeviceCount()
        with Client(address, timeout=30) as client:
            client.wait_for_workers(n_gpus, timeout=120)
            info = list(client.scheduler_info(n_workers=-1)["workers"].values())
            assert len(info) == n_gpus and all(w["nthreads"] == 1 for w in info)

            def threads() -> str | None:
                import os

                return os.environ.get("BIGDECON_THREADS")

            assert set(client.run(threads).values()) == {"4"}  # 8 CPUs / 2 GPU workers
