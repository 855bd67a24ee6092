"""Peak memory of one task of a split step 5 (a middle pass: input and state in, state out; the last
pass: input and state in, output out), against what the planner charges (``DECONV_BYTES_PASSES``).

One real task of a run in a fresh process (a uint16 OME-Zarr, the run's own task context, work arrays
and output store), the NA 1.1 model's 41x61x61 box on the mirror path, one block = the whole volume;
``VmHWM`` above the resident memory before the task, as ``measure_model_memory.py --task`` does.

    python benchmarks/measure_pass_memory.py                        # RL and WB, 96x256x256 and 160x384x384
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CODE = """
import resource, tempfile
from dataclasses import replace
import numpy as np
from bigdecon.io import OmeZarrWriter, open_image, write_image
from bigdecon.passes.ledger import Ledger
from bigdecon.passes.options import parse_run_options
from bigdecon.passes.request import prepare_request
from bigdecon.passes.run import _task_context
from bigdecon.passes.tasks import _deconv_pass_block, _task_deconv_pass, _task_final, _work_array, _write_work
from bigdecon.solvers.psf import widefield_psf

psf = widefield_psf((41, 61, 61), 1.1, 0.52, 1.33, pixel_size=0.1, z_step=0.3)
folder = tempfile.mkdtemp()
data = (np.random.default_rng(0).random({shape}) * 1000 + 100).astype(np.uint16)
src = write_image(folder + "/in.zarr", data, "zyx", chunks=(32, 128, 128))
kwargs = dict(psf=psf, psf_as_is=True, sparse_iters=0, background=0, deconv_type={deconv_type}, deconv_iters={iters},
              task_memory=8 * 2**30, min_tasks=1)
request = prepare_request(open_image(src), *parse_run_options(kwargs))
plan = replace(request.plan, deconv_pass_iters=1)  # one block, the whole volume, one iteration per pass
request = replace(request, plan=plan)
out = OmeZarrWriter(folder + "/out.zarr", shape=plan.out_shape, axes="zyx", chunks=plan.out_chunks, dtype="float32")
ledger = Ledger(folder + "/work")
ctx = _task_context(request, {{"scale": [1000.0], "mean": [500.0]}}, ledger, out.path, "cpu")
n = plan.deconv_state_arrays()
state_in = tuple(ledger.path(f"in{{i}}.zarr") for i in range(n))
state_out = tuple(ledger.path(f"out{{i}}.zarr") for i in range(n))
for p in state_in + state_out:
    _work_array(p, plan.out_shape, plan.out_chunks)
(region,) = plan.final_tasks()
for p in state_in:
    _write_work(p, region, 3, (data / 1100.0).astype(np.float32))
del data
small = np.ones((48, 96, 96), np.float32)
_deconv_pass_block(small, [small, small], 1.0, 1.0, request.params, psf, (slice(None),) * 3, (1, 1), False)
last = "{which}" == "last"
ctx = replace(ctx, first_iteration=1, pass_iterations=1, state_in=state_in, state_out=() if last else state_out)
base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
open("/proc/self/clear_refs", "w").write("5")  # VmHWM from here on
(_task_final if last else _task_deconv_pass)(ctx, region)
hwm = next(ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:"))
print("PEAK", int(hwm.split()[1]) * 1024 - base, plan.deconv_task_bytes(), int(np.prod(plan.out_shape)))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", default=["96,256,256", "160,384,384"])
    args = ap.parse_args()
    for shape in args.shapes:
        dims = tuple(int(v) for v in shape.split(","))
        for deconv_type, iters, name in ((1, 7, "RL"), (2, 7, "LW"), (3, 2, "WB")):
            for which in ("middle", "last"):
                code = CODE.format(shape=dims, deconv_type=deconv_type, iters=iters, which=which)
                env_path = str(HERE.parent)
                res = subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": env_path}
                )
                if res.returncode:
                    print(res.stderr[-2000:])
                    continue
                peak, charged, voxels = (int(v) for v in res.stdout.split("PEAK")[1].split())
                mib = 2**20
                print(
                    f"{name} {which:6s} pass, block {shape}: peak {peak / mib:.0f} MiB ({(peak - 40 * mib) / voxels:.1f} B"
                    f" per voxel above 40 MiB), charged {charged / mib:.0f} MiB"
                )


if __name__ == "__main__":
    main()
