"""``bigdecon demo OUTPUT_DIR``: synthetic data with known truth, deconvolved, scored and pictured."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ..errors import InputError
from ._common import check_writable, client_for, quiet_dask, say
from .options import add_cluster_options, add_run_options, resolve_options

__all__ = ["add_parser", "demo_command"]


def add_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="make synthetic data, deconvolve it and show the result",
        description="Write a synthetic time-lapse and volume with known ground truth to OUTPUT_DIR, "
        "deconvolve them (Richardson-Lucy only and sparse), report PSNR against the truth "
        "and save a side-by-side PNG. Takes about a minute.",
    )
    demo.add_argument("output_dir", metavar="OUTPUT_DIR", help="folder for the demo's files")
    add_cluster_options(demo, "demo")
    add_run_options(demo, "demo")  # --config and --debug
    demo.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon demo``."""
    from ..cluster import close, describe, worker_choice
    from ..demo import run_demo

    resolved = resolve_options(args)
    quiet_dask(args, resolved["debug"])
    out = os.path.abspath(os.path.expanduser(args.output_dir))
    if os.path.lexists(out) and not os.path.isdir(out):
        raise InputError(f"cannot write demo output: {out} is a file, not a folder")
    check_writable(out, "demo output")
    gpus, device, note = worker_choice(resolved["gpus"], "auto", resolved["scheduler"])
    if note:
        say(note)
    client, cluster = client_for(resolved, gpus=gpus)
    try:
        say(describe(client, cluster))
        run_demo(out, client=client, log=say, device=device)
    finally:
        close(client, cluster)
    return 0
