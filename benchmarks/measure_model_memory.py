"""Peak memory of one 3-D step-5 block task per voxel of its transform, with the optics model's PSF.

Each case runs in a fresh process: a float32 block of ``shape`` (what a task reads, grown by its
halo: on the mirror path the transform is the block itself) through the task's own function
(``passes.tasks._deconv_block``: the solver, then the interior copied out) with the NA 1.1
widefield model at 0.3/0.1/0.1 µm (41x61x61, ``--na 1.1 --wavelength 0.52``) or ``--psf gaussian``
(``--fwhm 6,3,3``), Richardson-Lucy 7 (schedule alpha), Landweber 7 and Wiener-Butterworth 2. Peak resident memory (``VmHWM``, reset after the imports)
minus the resident memory before the block exists, per voxel of the block; the planner charges
``planner.DECONV_BYTES`` per voxel (printed beside it).

    python benchmarks/measure_model_memory.py            # ~3 min on 2 cores
    python benchmarks/measure_model_memory.py --shapes 96,256,256
    python benchmarks/measure_model_memory.py --task     # one real task of a run: store, read, solve, write
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

_CODE = """
import resource, sys, numpy as np
sys.path.insert(0, {root!r})
from bigdecon.params import Params
from bigdecon.passes.tasks import _deconv_block
from bigdecon.solvers import psf as optics
from bigdecon.solvers.psf_prepare import MODEL_FLOOR, energy_crop
from bigdecon import gaussian_psf
shape, kind, energy, source = {shape}, {kind!r}, {energy!r}, {source!r}
if source == "gaussian":
    psf = gaussian_psf((6.0, 3.0, 3.0))
else:
    box = optics.psf_size_for(1.1, 0.52, 1.33, (0.1, 0.1), 0.3)
    psf = energy_crop(optics.widefield_psf(box, 1.1, 0.52, 1.33, (0.1, 0.1), 0.3), energy, MODEL_FLOOR)[0]
deconv_type = {{"wb": 3, "rl-schedule": 1, "landweber": 2}}[kind]
params = Params.from_kwargs(psf=psf, sparse_iters=0, background=0, deconv_type=deconv_type,
                            deconv_iters=2 if kind == "wb" else 7)
interior = tuple(slice(n // 4, n - n // 4) for n in shape)
small = np.random.default_rng(0).random((8, 64, 64), dtype=np.float32)
_deconv_block(small, 1.0, 1.0, params, psf, ((0, 0),) * 3, (slice(None),) * 3)  # plans, caches, imports
base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024
try:
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
g = np.random.default_rng(0).random(shape, dtype=np.float32) + np.float32(0.1)
out = _deconv_block(g, 1.0, 1.0, params, psf, ((0, 0),) * 3, interior)
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
peak = int(hwm[0].split()[1])
print("MEM", (peak - base) * 1024, int(np.prod(shape)), psf.shape)
"""


# One real task of a run: a uint16 OME-Zarr of ``shape`` on disk, its plan with one step-5 block (the
# whole volume: on the mirror path its transform), the run's own TaskContext and output store, and
# ``passes.tasks._task_final`` (read, cast, solve, write the block).
_TASK_CODE = """
import resource, sys, tempfile, numpy as np
sys.path.insert(0, {root!r})
from bigdecon.io import OmeZarrWriter, open_image, write_image
from bigdecon.passes.ledger import Ledger
from bigdecon.passes.options import parse_run_options
from bigdecon.passes.request import prepare_request
from bigdecon.passes.run import _task_context
from bigdecon.passes.tasks import _deconv_block, _task_final
from bigdecon.solvers import widefield_psf
shape, deconv_type, iters = {shape}, {deconv_type}, {iters}
psf = widefield_psf((41, 61, 61), 1.1, 0.52, 1.33, pixel_size=0.1, z_step=0.3)  # --na 1.1's box at 0.3/0.1 um
if {asymmetric!r}:  # 1 px off centre in x, as a measured bead is: the edge path (padded real FFTs)
    psf = np.ascontiguousarray(np.roll(np.pad(psf, ((0, 0), (0, 0), (0, 2))), 1, axis=2)[:, :, :61])
folder = tempfile.mkdtemp()
data = (np.random.default_rng(0).random(shape) * 1000 + 100).astype(np.uint16)
src = write_image(folder + "/in.zarr", data, "zyx", chunks=(32, 128, 128))
del data
kwargs = dict(psf=psf, psf_as_is=True, sparse_iters=0, background=0, deconv_type=deconv_type, deconv_iters=iters,
              task_memory=8 * 2**30, min_tasks=1)  # one block: the whole volume
request = prepare_request(open_image(src), *parse_run_options(kwargs))
plan = request.plan
writer = OmeZarrWriter(folder + "/out.zarr", shape=plan.out_shape, axes="zyx", chunks=plan.out_chunks, dtype="float32")
ledger = Ledger(folder + "/work")
ctx = _task_context(request, {{"scale": [1000.0], "mean": [500.0]}}, ledger, writer.path, "cpu")
(region,) = plan.final_tasks()
_deconv_block(np.ones((48, 96, 96), np.float32), 1.0, 1.0, request.params, psf, ((0, 0),) * 3, (slice(None),) * 3)
base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here on
_task_final(ctx, region)
hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print("PEAK", int(hwm.split()[1]) * 1024 - base, plan.deconv_task_bytes())
"""


def measure_task(shape: tuple[int, ...], deconv_type: int, iters: int, asymmetric: bool) -> tuple[int, int]:
    """(peak bytes above the start, bytes the planner charges) of one real step-5 task."""
    code = _TASK_CODE.format(
        root=str(HERE.parent), shape=shape, deconv_type=deconv_type, iters=iters, asymmetric=asymmetric
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, charged = proc.stdout.split("PEAK")[1].split()
    return int(peak), int(charged)


def measure(shape: tuple[int, ...], kind: str, energy: float, source: str) -> tuple[float, int, str]:
    code = _CODE.format(root=str(HERE.parent), shape=shape, kind=kind, energy=energy, source=source)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEM ")][-1].split(maxsplit=3)
    return int(line[1]) / int(line[2]), int(line[1]), line[3]


def main(argv: list[str] | None = None) -> None:
    sys.path.insert(0, str(HERE.parent))
    from bigdecon.planner import DECONV_BYTES

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="+", default=["96,256,256", "160,384,384"])
    parser.add_argument("--energy", type=float, default=0.99)
    parser.add_argument("--psf", default="model", choices=("model", "gaussian"), help="or --fwhm 6,3,3's Gaussian")
    parser.add_argument("--kinds", nargs="+", default=["rl-schedule", "landweber", "wb"])
    parser.add_argument("--task", action="store_true", help="one real task of a run (uint16 store, model PSF)")
    parser.add_argument("--asymmetric", action="store_true", help="--task with the model 1 px off centre (edge path)")
    args = parser.parse_args(argv)
    if args.task:
        for text in args.shapes:
            shape = tuple(int(v) for v in text.split(","))
            kinds = (
                (("rl-schedule", 1, 7), ("landweber", 2, 7))
                if args.asymmetric
                else (("rl-schedule", 1, 7), ("wb", 3, 2))
            )
            for name, deconv_type, iters in kinds:
                peak, charged = measure_task(shape, deconv_type, iters, args.asymmetric)
                print(
                    f"task {name:<11} block {shape}{' edge path' if args.asymmetric else ''}: peak {peak / 2**20:6.0f} MiB above start "
                    f"({peak / math.prod(shape):.1f} B / voxel), planner charges {charged / 2**20:.0f} MiB",
                    flush=True,
                )
        return
    for text in args.shapes:
        shape = tuple(int(v) for v in text.split(","))
        for kind in args.kinds:
            per_voxel, peak, psf_shape = measure(shape, kind, args.energy, args.psf)
            print(
                f"{kind:<11} block {shape} PSF {psf_shape}: peak {peak / 2**20:6.0f} MiB above start, "
                f"{per_voxel:.1f} B / voxel (planner charges {DECONV_BYTES[kind]} on the edge path)",
                flush=True,
            )


if __name__ == "__main__":
    main()
