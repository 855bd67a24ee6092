"""Step 5 split into passes of a few iterations, the solver state through scratch (issue 21 item 5).

When one pass of step 5 does not fit a task (the NA 1.1 widefield model at 7 RL iterations needs a
halo of 144/174/174 voxels), the planner splits the iterations into passes whose halo is the exact
light cone of their own iterations; the passes equal one pass, blocks equal the whole volume.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import filaments
from test_step5_blocks import seam_error

import bigdecon
from bigdecon import gaussian_psf
from bigdecon.io import open_image, write_image
from bigdecon.solvers.landweber import landweber, landweber_steps
from bigdecon.solvers.richardson_lucy import richardson_lucy, rl_schedule_steps
from bigdecon.solvers.wiener_butterworth import rl_wiener_butterworth

VOXEL = {"z": 0.8, "y": 0.4, "x": 0.4}
OPTICS = dict(na=1.1, wavelength=0.52)
# Bytes per task that one pass of step 5 cannot fit on the 16x160x160 store below (40 MiB of it
# is a task's reads and writes): the plan splits the iterations.
SMALL_TASK = 46 * 2**20
STEP5 = {
    "rl": dict(deconv_type=1, deconv_iters=7),
    "landweber": dict(deconv_type=2, deconv_iters=7),
    "wb": dict(deconv_type=3, deconv_iters=2),
}


def test_passes_of_k_iterations_equal_one_call():
    """The solvers run from a state and back to one: RL (schedule alpha) and Landweber in passes of 1,
    2, 3, 1 iterations and WB in two passes of 1 equal one call of 7 (2) iterations to the bit."""
    rng = np.random.default_rng(3)
    vol = (rng.random((20, 36, 40)) + 0.1).astype(np.float32)
    psf = gaussian_psf((4.0, 2.5, 2.5))
    state, first = None, 0
    for k in (1, 2, 3, 1):
        state = rl_schedule_steps(vol, psf, k, state, first)
        first += k
    assert np.array_equal(state[0], richardson_lucy(vol, psf, 7, alpha="schedule"))
    state, first = None, 0
    for k in (1, 2, 3, 1):
        state = landweber_steps(vol, psf, k, state, first)
        first += k
    assert np.array_equal(state[1], landweber(vol, psf, 7))
    x = rl_wiener_butterworth(vol, psf, 1)
    assert np.array_equal(rl_wiener_butterworth(vol, psf, 1, start=x), rl_wiener_butterworth(vol, psf, 2))
    with pytest.raises(ValueError, match="state"):
        rl_schedule_steps(vol, psf, 1, None, first=2)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Filaments (an independent generator) in a 16x160x160 OME-Zarr at 0.8/0.4/0.4 µm, and the
    optics model the run prepares for it."""
    from bigdecon.passes.request import optics_psf

    folder = tmp_path_factory.mktemp("passes")
    volume = filaments((16, 160, 160), seed=11)[0]
    units = {a: "micrometer" for a in "zyx"}
    src = write_image(str(folder / "in.ome.zarr"), volume, "zyx", chunks=(8, 48, 48), scale=VOXEL, units=units)
    psf = optics_psf("widefield", open_image(src), {**OPTICS, "refractive_index": 1.33}, 0.99)[0]
    return volume, src, psf


@pytest.fixture(scope="module")
def split_runs(store, tmp_path_factory):
    """Each step-5 type run out of core on the store with SMALL_TASK per task: its plan and output."""
    folder = tmp_path_factory.mktemp("split")
    out = {}
    for name, step5 in STEP5.items():
        params = dict(sparse_iters=0, background=0, task_memory=SMALL_TASK, min_tasks=2, **OPTICS, **step5)
        summary = bigdecon.plan(store[1], **params)
        info = bigdecon.deconvolve(store[1], str(folder / f"{name}.zarr"), **params)
        out[name] = (summary, info, open_image(info["output"]).data.compute())
    return out


@pytest.mark.slow  # ~6 s idle with the three runs of its fixture, 13 s on the loaded VM
@pytest.mark.parametrize("name", list(STEP5))
def test_split_step5_blocks_equal_the_whole_volume(store, split_runs, name):
    """With a task budget one pass cannot fit, RL 7 and Landweber 7 run as 7 passes of 1 iteration and
    WB 2 as 2, halo 2 (RL, Landweber) / 3 (WB) PSF half-supports; the output equals the whole-volume solver with the same
    model to 1e-5 of the maximum, and the state's scratch is gone with the work folder."""
    volume, _src, psf = store
    summary, info, result = split_runs[name]
    step5 = STEP5[name]
    half = [n // 2 for n in psf.shape]
    reach = 3 if name == "wb" else 2
    print(name, {k: v for k, v in summary.items() if k.startswith("deconv") or k.startswith("memory")})
    assert summary["deconv_passes"] == step5["deconv_iters"] and summary["deconv_iters_per_pass"] == 1
    assert list(summary["deconv_depth"].values()) == [min(reach * h, n) for h, n in zip(half, volume.shape)]
    whole = bigdecon.sparse_deconvolve(volume, psf=psf, psf_as_is=True, sparse_iters=0, background=0, **step5)
    err = seam_error(result, whole)
    print(f"{name}: {summary['deconv_passes']} passes, blocks vs whole {err:.1e}")
    assert err <= 1e-5
    assert not os.path.exists(os.path.join(info["output"], ".bigdecon-work"))


@pytest.mark.slow
def test_a_split_run_stopped_midway_resumes_to_the_same_bytes(store, split_runs, tmp_path):
    """Stopped in its fourth RL pass, the run resumes from the ledger (each pass its own records, the
    state arrays kept) and writes the same bytes as the run that was not stopped."""
    params = dict(sparse_iters=0, background=0, task_memory=SMALL_TASK, min_tasks=2, **OPTICS, **STEP5["rl"])
    blocks = split_runs["rl"][0]["deconv_tasks"] // 7
    out = str(tmp_path / "out.zarr")

    class Stop(Exception):
        pass

    def stop(done: int, total: int) -> None:
        if done == 3 * blocks + 2:
            raise Stop

    with pytest.raises(Stop):
        bigdecon.deconvolve(store[1], out, progress=stop, **params)
    info = bigdecon.deconvolve(store[1], out, resume=True, **params)
    print(f"resumed {info['resumed']} of {info['chunks']} tasks")
    assert info["resumed"] == 3 * blocks + 2
    assert np.array_equal(open_image(out).data.compute(), split_runs["rl"][2])
