"""The GPU code paths in CI, on a strict CuPy stand-in (``tests/fake_cupy``): no GPU, no CUDA.

The stand-in's device arrays refuse NumPy: ``numpy.asarray`` (so every SciPy
routine), NumPy functions and expressions that mix them with NumPy arrays raise
``TypeError``, as with CuPy. So these tests prove that the GPU path runs through
(every solver, the pipeline, an out-of-core ``device="gpu"`` run on a ``distributed``
cluster) and that data cross between host and device only where bigdecon moves them,
at a task's edges; they do not prove anything about CUDA, cuFFT or speed. The same
tests run on a real GPU in ``tests/test_gpu.py`` (``bash benchmarks/gpu_check.sh``).

The solver tests are tests/test_gpu.py's own, imported here and given this module's
``cp`` fixture: the stand-in, put on ``sys.path`` and into ``bigdecon._backend`` for
this module only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import filaments
from test_gpu import (  # noqa: F401 - collected here, on the stand-in
    f,
    test_background,
    test_big_endian_block_to_device,
    test_landweber,
    test_richardson_lucy,
    test_sparse_hessian,
    test_upsample,
    test_whole_pipeline_float32_in_and_out,
)
from test_solvers import test_cupy_matches_numpy as test_pipeline_modes_on_device  # noqa: F401

import bigdecon
from bigdecon import _backend

FAKE = Path(__file__).resolve().parent / "fake_cupy"


def _cupy_modules() -> dict[str, object]:
    return {k: v for k, v in sys.modules.items() if k in ("cupy", "cupyx") or k.startswith(("cupy.", "cupyx."))}


@pytest.fixture(scope="module", autouse=True)
def cp():
    """The stand-in as ``cupy`` (and ``cupyx``) for this module; a real CuPy, if any, is put back after."""
    saved = _cupy_modules()
    for name in saved:
        del sys.modules[name]
    sys.path.insert(0, str(FAKE))
    try:
        import cupy

        assert getattr(cupy, "FAKE", False), cupy.__file__
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(_backend, "_cupy", cupy)
            yield cupy
    finally:
        sys.path.remove(str(FAKE))
        for name in _cupy_modules():
            del sys.modules[name]
        sys.modules.update(saved)


def test_the_stand_in_refuses_numpy_on_device_arrays(cp):
    import scipy.ndimage

    d = cp.asarray(np.ones((4, 8, 8), np.float32))
    host = np.ones((4, 8, 8), np.float32)
    for call in (
        lambda: np.asarray(d),  # implicit conversion
        lambda: scipy.ndimage.gaussian_filter(d, 1.0),  # SciPy takes it through numpy.asarray
        lambda: np.pad(d, [(0, 0), (1, 1), (1, 1)]) + host,  # NumPy functions run on the device...
        lambda: np.concatenate([d, host]),  # ... but take no host array
        lambda: d + host,  # a host array in a device expression, either side
        lambda: host * d,
        lambda: cp.maximum(d, host),  # a host array into a device function
    ):
        with pytest.raises(TypeError):
            call()
    # What CuPy allows: scalars, device functions, explicit copies.
    assert isinstance(d * np.float32(2) + 1.0, cp.ndarray)
    assert float(cp.sqrt(d).sum()) == 256.0
    np.testing.assert_array_equal(cp.asnumpy(d), host)


def test_a_numpy_call_on_a_device_array_fails_the_gpu_tests(cp, f, monkeypatch):  # noqa: F811 - test_gpu's f
    """What the stand-in is for: a solver that used NumPy on a device array would fail here."""
    device = cp.asarray(f)
    psf = bigdecon.gaussian_psf(3.0)
    bigdecon.richardson_lucy(device, psf, 2)  # the solvers as they are: fine
    # The array-module lookup broken as a slip would break it: NumPy calls on device arrays.
    import importlib

    for name in ("richardson_lucy", "sparse_hessian", "landweber"):
        monkeypatch.setattr(importlib.import_module(f"bigdecon.solvers.{name}"), "get_xp", lambda array: np)
    for call in (
        lambda: bigdecon.richardson_lucy(device, psf, 2),
        lambda: bigdecon.sparse_hessian(device, iterations=2),
        lambda: bigdecon.landweber(device, psf, 2),
    ):
        with pytest.raises(TypeError):
            call()


def test_wiener_butterworth_on_device(cp):
    from bigdecon.solvers.wiener_butterworth import rl_wiener_butterworth, wiener_butterworth_backprojector

    image = filaments((24, 48, 48), seed=3)[0]
    psf = bigdecon.gaussian_psf((3.0, 2.0, 2.0))
    cpu = rl_wiener_butterworth(image, psf, 2)
    gpu = rl_wiener_butterworth(cp.asarray(image), cp.asarray(psf), 2)
    assert isinstance(gpu, cp.ndarray) and gpu.dtype == np.float32
    assert wiener_butterworth_backprojector(cp.asarray(psf), (24, 48, 48)).dtype == np.complex64
    np.testing.assert_allclose(cp.asnumpy(gpu), cpu, rtol=0, atol=1e-4 * float(cpu.max()))


def test_wiener_butterworth_with_a_sheared_psf_on_device(cp):
    """Skewed space: the sheared back projector (finite kernel, guard, padding as object) on the device."""
    from bigdecon.solvers.deskew import skew_psf
    from bigdecon.solvers.wiener_butterworth import rl_wiener_butterworth

    image = filaments((10, 24, 64), seed=5)[0]
    q = skew_psf(bigdecon.gaussian_psf((3.0, 1.5, 1.5)), 31.5, 0.4, 0.104)
    h = bigdecon.stages.deconv_pad(image.shape, q)
    pad = ((h[0], h[0]), (h[1], h[1]), (0, h[2]))  # a block on the high x face (the transform lengths differ)
    cpu = rl_wiener_butterworth(image, q, 2, pad=pad)
    gpu = rl_wiener_butterworth(cp.asarray(image), cp.asarray(q), 2, pad=pad)
    assert isinstance(gpu, cp.ndarray) and gpu.dtype == np.float32
    np.testing.assert_allclose(cp.asnumpy(gpu), cpu, rtol=0, atol=1e-4 * float(cpu.max()))


@pytest.mark.slow  # two out-of-core runs, one on the stand-in's array expressions
def test_out_of_core_gpu_run_moves_blocks_at_task_edges(cp, tmp_path):
    """``deconvolve(..., device="gpu")`` on a ``distributed`` cluster equals the CPU run; blocks cross once each way."""
    from distributed import Client, LocalCluster

    from bigdecon.io import open_image, write_image

    raw = filaments((8, 96, 96), seed=4)[0]
    src = write_image(str(tmp_path / "in.ome.zarr"), (raw * 20).astype(np.uint16), "tyx", chunks=(2, 48, 48))
    params = dict(fwhm=3, sparse_iters=30, deconv_iters=5, chunks={"t": 4, "y": 48, "x": 48})
    cpu_out, gpu_out = str(tmp_path / "cpu.ome.zarr"), str(tmp_path / "gpu.ome.zarr")
    # Worker threads in this process: they see the stand-in (worker processes would import a real CuPy or none).
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        bigdecon.deconvolve(src, cpu_out, device="cpu", client=client, **params)
        before = dict(cp.transfers)
        freed = cp.get_default_memory_pool().freed
        result = bigdecon.deconvolve(src, gpu_out, device="gpu", client=client, **params)
    tasks = result["chunks"]
    moved_in = cp.transfers["h2d"] - before.get("h2d", 0)
    moved_out = cp.transfers["d2h"] - before.get("d2h", 0)
    # Every task moved its block to the device and its result back, and gave the pool back.
    assert cp.get_default_memory_pool().freed - freed == tasks
    # (12 tasks here: 40 copies in, the blocks and their PSFs; 14 out, the results and the host background.)
    assert moved_in >= tasks and tasks <= moved_out <= 2 * tasks, (tasks, moved_in, moved_out)
    a = open_image(cpu_out).data.compute()
    b = open_image(gpu_out).data.compute()
    assert a.shape == b.shape == raw.shape and a.dtype == b.dtype == np.float32
    scale = float(np.abs(a).max())
    assert scale > 0 and float(np.abs(a - b).max()) <= 1e-4 * scale


def test_napari_preview_on_device(cp):
    """The napari widget's preview (bigdecon.napari._core) moves its block to the device once and back."""
    from bigdecon.napari._core import image_source, preview_region

    raw, _ = filaments((6, 72, 72))
    region = {"y": (16, 56), "x": (20, 60)}
    on_gpu = preview_region(image_source(raw, "tyx"), {"fwhm": 3, "sparse_iters": 10}, region, device="gpu")
    on_cpu = preview_region(image_source(raw, "tyx"), {"fwhm": 3, "sparse_iters": 10}, region, device="cpu")
    assert isinstance(on_gpu.data, np.ndarray) and on_gpu.data.shape == (6, 40, 40)
    np.testing.assert_allclose(on_gpu.data, on_cpu.data, rtol=1e-4, atol=1e-4 * on_cpu.data.max())
