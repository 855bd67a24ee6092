"""What tuning costs against the run it tunes: ``bigdecon suggest``, ``run`` (defaults) and ``run --auto``.

    python benchmarks/bench_auto_cost.py                      # 64 x 512 x 512 widefield volume
    python benchmarks/bench_auto_cost.py --input vol.tif --fwhm 3.14,2.41,2.41

Runs the three commands through the CLI, one after the other, as a user
would, on the same volume (written once as a float32 TIFF from
``bigdecon.data.widefield_volume((64, 512, 512), photons=300, seed=1)``), and
prints for each its wall seconds and CPU seconds (the command's process and
its children, dask's worker processes included: ``getrusage(RUSAGE_CHILDREN)``),
the tuning's own wall and CPU seconds (``seconds`` and ``cpu_seconds`` of the
suggestion: ``time.process_time`` over every thread of the process), and the
ratios tuning / defaults run and tuning / chosen run (``run --auto`` less its
tuning). On a shared machine the CPU-second ratios are the figures to trust;
the load averages are printed beside each command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _volume(path: Path) -> None:
    import numpy as np
    import tifffile

    from bigdecon.data import widefield_volume

    raw, _ = widefield_volume((64, 512, 512), photons=300, seed=1)
    tifffile.imwrite(path, raw.astype(np.float32))


def _timed(argv: list[str]) -> dict:
    """Wall and CPU seconds (user + system) of one CLI command and every process it starts.

    Dask's worker processes are not always reaped by the command, so their CPU is
    not in ``RUSAGE_CHILDREN``: the process tree is sampled every 0.2 s (psutil),
    keeping each process's last user + system time (a process's last 0.2 s may
    be missed). ``cpu_rusage``: what ``RUSAGE_CHILDREN`` saw (exact for one process).
    """
    import psutil

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "bigdecon.cli", *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: dict[int, float] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        with contextlib.suppress(psutil.Error):
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    seen[p.pid] = t.user + t.system
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    rusage = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dict(wall=wall, cpu=sum(seen.values()), cpu_rusage=rusage, load=(load, os.getloadavg()[0]), stdout=stdout)


def _tuning_of(output: Path) -> dict:
    import zarr

    return dict(zarr.open_group(str(output), mode="r").attrs["bigdecon"]["suggestion"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=Path("/tmp/bigdecon_auto_cost/wf64.tif"))
    parser.add_argument("--fwhm", default="3.14,2.41,2.41")
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args()
    if not args.input.exists():
        args.input.parent.mkdir(parents=True, exist_ok=True)
        _volume(args.input)
    out = args.input.parent
    psf = ["--fwhm", args.fwhm]
    suggest = _timed(["suggest", str(args.input), *psf, "--json"])
    tune = json.loads(suggest["stdout"])
    defaults = _timed(["run", str(args.input), str(out / "defaults.ome.zarr"), *psf, "--overwrite"])
    auto = _timed(["run", str(args.input), str(out / "auto.ome.zarr"), *psf, "--auto", "--overwrite"])
    auto_tune = _tuning_of(out / "auto.ome.zarr")
    chosen = dict(wall=auto["wall"] - auto_tune["seconds"], cpu=auto["cpu"] - auto_tune["cpu_seconds"])
    rows = [
        ("bigdecon suggest (whole command)", suggest),
        ("  its tuning (suggest)", dict(wall=tune["seconds"], cpu=tune["cpu_seconds"], load=suggest["load"])),
        ("bigdecon run (defaults)", defaults),
        (f"bigdecon run --auto (chose {auto_tune['winner']})", auto),
        ("  its tuning (--auto)", dict(wall=auto_tune["seconds"], cpu=auto_tune["cpu_seconds"], load=auto["load"])),
        ("  the chosen run (the rest)", dict(chosen, load=auto["load"])),
    ]
    print(f"{args.input} ({os.cpu_count()} cores)")
    print("| command | wall s | CPU s | load avg at start / end |\n|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    print(
        f"(RUSAGE_CHILDREN, the commands without unreaped workers: {suggest['cpu_rusage']:.1f}, "
        f"{defaults['cpu_rusage']:.1f}, {auto['cpu_rusage']:.1f} CPU s)"
    )
    ratios = {
        "suggest tuning / defaults run": (tune["seconds"] / defaults["wall"], tune["cpu_seconds"] / defaults["cpu"]),
        "suggest command / defaults run": (suggest["wall"] / defaults["wall"], suggest["cpu"] / defaults["cpu"]),
        "--auto tuning / defaults run": (
            auto_tune["seconds"] / defaults["wall"],
            auto_tune["cpu_seconds"] / defaults["cpu"],
        ),
        "--auto tuning / chosen run": (auto_tune["seconds"] / chosen["wall"], auto_tune["cpu_seconds"] / chosen["cpu"]),
    }
    print("| ratio | wall | CPU |\n|---|---|---|")
    for name, (w, c) in ratios.items():
        print(f"| {name} | {w:.1%} | {c:.1%} |")
    if args.json:
        figures = {name: {k: v for k, v in r.items() if k != "stdout"} for name, r in rows}
        Path(args.json).write_text(json.dumps(dict(rows=figures, ratios=ratios), indent=1))


if __name__ == "__main__":
    main()
