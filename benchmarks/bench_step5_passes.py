"""Step 5 in one pass against step 5 split into passes (issue 21 item 5), with the NA 1.1 widefield model.

1. Plans (``bigdecon.plan``, what ``bigdecon info`` prints) on an empty 2000x2048x2048 zyx uint16
   OME-Zarr at 0.3 (0.5)/0.1/0.1 µm, ``--sparse-iters 0``, 2 worker threads: memory per task,
   passes, halo and voxels transformed per iteration per voxel of data, one pass (the planner's
   ``split=False``) against the split plan, at each ``--task-memory``.
2. A real run on a modest volume (filaments, 0.3/0.1/0.1 µm, a uint16 OME-Zarr): the same
   ``task_memory`` with step 5 in one pass and split; wall time, peak scratch, and max |diff| / max
   against the whole-volume solver with the same model.

    python benchmarks/bench_step5_passes.py                       # plans, then a 64x384x384 run
    python benchmarks/bench_step5_passes.py --no-plans --shape 32 1024 1024 --run-memory 192 --kinds RL
"""

from __future__ import annotations

import argparse
import functools
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from helpers import big_store, filaments  # noqa: E402

import bigdecon  # noqa: E402
from bigdecon.io import open_image, write_image  # noqa: E402
from bigdecon.passes import request  # noqa: E402
from bigdecon.planner import make_plan  # noqa: E402

OPTICS = dict(na=1.1, wavelength=0.52)
STEP5 = {
    "RL 7": dict(deconv_type=1, deconv_iters=7),
    "Landweber 7": dict(deconv_type=2, deconv_iters=7),
    "WB 2": dict(deconv_type=3, deconv_iters=2),
}
MiB = 2**20


def one_pass(enabled: bool) -> None:
    """Plan step 5 in one pass (the planner before passes) or let it split."""
    request.make_plan = make_plan if not enabled else functools.partial(make_plan, split=False)


def describe(plan: dict) -> str:
    passes = plan.get("deconv_passes", 1)
    halo = "/".join(str(v) for v in plan["deconv_depth"].values())
    block = "x".join(str(v) for v in plan["deconv_block"].values())
    return (
        f"{plan['memory_per_task_bytes'] / MiB:7.1f} MiB, {passes} pass(es), block {block}, halo {halo}, "
        f"{plan['deconv_transformed_per_iteration']:.1f}x per iteration"
    )


def plans(folder: Path, memories: list[int]) -> None:
    for z in (0.3, 0.5):
        src = big_store(folder, z)
        for name, step5 in STEP5.items():
            for mem in memories:
                kw = dict(sparse_iters=0, min_tasks=2, task_memory=mem * MiB, **OPTICS, **step5)
                one_pass(True)
                before = bigdecon.plan(src, **kw)
                one_pass(False)
                after = bigdecon.plan(src, **kw)
                print(f"{z} um {name:11s} {mem:5d} MiB  one pass: {describe(before)}")
                print(f"{'':28s}split:    {describe(after)}")


def run(folder: Path, shape: tuple[int, int, int], memory: int, kinds: list[str]) -> None:
    raw = filaments(shape, seed=3)[0]
    raw16 = np.clip(raw, 0, 65535).astype(np.uint16)
    units = {a: "micrometer" for a in "zyx"}
    src = write_image(str(folder / "in.ome.zarr"), raw16, "zyx", scale={"z": 0.3, "y": 0.1, "x": 0.1}, units=units)
    psf = request.optics_psf("widefield", open_image(src), {**OPTICS, "refractive_index": 1.33}, 0.99)[0]
    print(f"run: {shape} uint16 at 0.3/0.1/0.1 um, model {psf.shape}, task_memory {memory} MiB, 2 cores")
    for name, step5 in STEP5.items():
        if name.split()[0] not in kinds:
            continue
        kw = dict(sparse_iters=0, background=0, min_tasks=2, task_memory=memory * MiB, **OPTICS, **step5)
        t = time.perf_counter()
        whole = bigdecon.sparse_deconvolve(raw16, psf=psf, psf_as_is=True, sparse_iters=0, background=0, **step5)
        t_whole = time.perf_counter() - t
        outs = {}
        for label, single in (("one pass", True), ("split", False)):
            one_pass(single)
            plan = bigdecon.plan(src, **kw)
            out = folder / f"out-{name[:2]}-{label[0]}.zarr"
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            info = bigdecon.deconvolve(src, str(out), **kw)
            seconds = time.perf_counter() - t
            outs[label] = open_image(info["output"]).data.compute()
            err = float(np.abs(outs[label] - whole).max() / whole.max())
            print(
                f"  {name} {label:8s}: {seconds:6.1f} s, {plan['n_tasks']} tasks, {describe(plan)}, "
                f"peak scratch {info['peak_scratch_bytes'] / MiB:.0f} MiB, vs whole {err:.1e}"
            )
        err = float(np.abs(outs["one pass"] - outs["split"]).max() / whole.max())
        print(f"  {name} whole volume in memory: {t_whole:.1f} s; one pass vs split {err:.1e}")
    one_pass(False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memories", type=int, nargs="+", default=[512, 1024], help="task memory of the plans, MiB")
    ap.add_argument("--shape", type=int, nargs=3, default=[64, 384, 384])
    ap.add_argument("--run-memory", type=int, default=256, help="task memory of the run, MiB")
    ap.add_argument("--no-run", action="store_true")
    ap.add_argument("--no-plans", action="store_true")
    ap.add_argument("--kinds", nargs="+", default=["RL", "Landweber", "WB"], help="step-5 types of the run")
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp())
    try:
        if not args.no_plans:
            plans(folder, args.memories)
        if not args.no_run:
            run(folder, tuple(args.shape), args.run_memory, args.kinds)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
