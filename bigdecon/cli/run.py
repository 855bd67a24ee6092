"""``bigdecon run INPUT OUTPUT``: deconvolve on a local cluster or a running Dask scheduler."""

from __future__ import annotations

import argparse
from typing import Any

from .. import __version__
from ..errors import InputError
from ..io.paths import redact
from ._common import (
    check_output,
    client_for,
    pipeline_kwargs,
    quiet_dask,
    run_sizing,
    say,
    shape_text,
)
from .config import fmt_number, format_config
from .options import WRITE_KEYS, add_cluster_options, add_run_options, check_parameters, options_argv, resolve_options

__all__ = ["add_parser", "run_command"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """INPUT, OUTPUT and every option of ``bigdecon run``."""
    parser.add_argument("input", metavar="INPUT", help="OME-Zarr (path or URL such as s3://...) or TIFF")
    parser.add_argument("output", metavar="OUTPUT", help="OME-Zarr to create (path or URL)")
    add_run_options(parser, "run")
    add_cluster_options(parser, "run")


def add_parser(sub: Any) -> None:
    run = sub.add_parser(
        "run",
        help="deconvolve an OME-Zarr or TIFF into a new OME-Zarr",
        description="Deconvolve INPUT (OME-Zarr, local or URL, or TIFF) into the OME-Zarr OUTPUT.",
        epilog="Example: bigdecon run cells.ome.zarr cells-decon.ome.zarr --fwhm 3",
    )
    add_arguments(run)
    run.set_defaults(func=run_command)


def _check_cheap(resolved: dict[str, Any]) -> dict[str, Any]:
    """Checks that need neither the input nor a cluster; the keyword arguments of the run's method and PSF."""
    if resolved["resume"] and resolved["overwrite"]:
        raise InputError("give --resume (continue the output) or --overwrite (replace it), not both")
    return pipeline_kwargs(resolved, check_parameters(resolved))


def _apply_suggestion(
    args: argparse.Namespace, resolved: dict[str, Any], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """``--auto``: the measured choice into ``resolved`` and ``kwargs`` (given parameters are imposed on
    every candidate).

    Returns the suggestion's record (parameters, candidates with their losses, winner, why) for the
    output's attributes, and the lines that say what it chose (printed once the run is checked).
    """
    from .suggest import candidate_table, suggestion_for

    s = suggestion_for(args, resolved, kwargs)
    picked = s.as_kwargs()
    resolved.update(picked)
    kwargs.update({k: v for k, v in picked.items() if v is not None})
    chosen = ", ".join(f"{k} {fmt_number(v)}" for k, v in picked.items())
    lines = [
        f"--auto: {len(s.candidates)} candidates on {len(s.blocks)} blocks in {s.seconds:.1f} s ({s.cpu_seconds:.1f} CPU-s)",
        *candidate_table(s),
        f"--auto chose {s.winner}: {s.why}",
        f"  {chosen}",
    ]
    return s.to_dict(), lines


def _header(args: argparse.Namespace, resolved: dict[str, Any], record: dict[str, Any]) -> list[str]:
    """What the run starts with: the whole configuration on request, else the options that are not defaults."""
    first = f"bigdecon {__version__}: {redact(args.input)} -> {redact(args.output)}"
    if resolved["print_config"]:
        return [first, "# configuration (reusable with --config)", format_config(redact(record)), ""]
    changed = options_argv({k: v for k, v in resolved.items() if k not in ("debug", "print_config")})
    return [first + (f"  ({redact(' '.join(changed))}; all: --print-config)" if changed else "")]


def _current_memory(client: Any) -> int | None:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    values = [int(w.get("metrics", {}).get("memory", 0)) for w in workers]
    return max(values) if values else None


def run_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon run``."""
    from dataclasses import replace

    import numpy as np

    from ..cluster import close, describe, expected_threads, peak_worker_memory, worker_choice
    from ..io import open_image
    from ..passes.options import parse_run_options
    from ..passes.run import plan_run, run_deconvolution
    from ..progress import ProgressReporter, format_bytes

    # The options resolved and checked once, into the run's Params and RunOptions; the input opened once.
    resolved = resolve_options(args)
    quiet_dask(args, resolved["debug"])
    kwargs = _check_cheap(resolved)
    suggestion, chose = _apply_suggestion(args, resolved, kwargs) if resolved["auto"] else (None, [])
    record = {
        "input": args.input,
        "output": args.output,
        **{k: v for k, v in resolved.items() if k not in ("debug", "print_config")},
    }
    # Everything about the input and the output is checked before anything is printed or a
    # cluster starts; the memory estimate assumes the blocks a local cluster of this size would get.
    threads = expected_threads(resolved["workers"], resolved["threads_per_worker"]) if not resolved["scheduler"] else 1
    params, options = parse_run_options({**kwargs, **{k: resolved[k] for k in WRITE_KEYS}, "min_tasks": threads})
    src = open_image(args.input)
    plan = plan_run(args.input, params, options, src=src)
    if check_output(args.input, args.output, resolved, src=src) == "cleanup":
        from ..passes.guard import finish_cleanup

        removed = finish_cleanup(args.output)
        say(f"{args.output} was already complete: removed the work folder its run left ({removed})")
        return 0
    gpus, device, note = worker_choice(resolved["gpus"], resolved["device"], resolved["scheduler"])
    say(*_header(args, resolved, record), *chose)
    say(
        f"Input {plan['axes']} {shape_text(plan['shape'])} {plan['dtype']} -> output "
        f"{shape_text(plan['output_shape'])} {resolved['output_dtype']}"
    )
    if note:
        say(note)

    client, cluster = client_for(resolved, plan["memory_per_task_bytes"], gpus=gpus)
    reporter = None
    try:
        say(describe(client, cluster))
        options = replace(options, device=device, **run_sizing(client, resolved, args.output, device))
        plan = plan_run(args.input, params, options, src=src)
        say(f"Plan: {plan['n_tasks']} tasks, ~{format_bytes(plan['memory_per_task_bytes'])} per task")
        reporter = ProgressReporter(int(np.prod(plan["shape"])), memory_probe=lambda: _current_memory(client))
        result = run_deconvolution(
            args.input,
            args.output,
            params,
            options,
            client=client,
            progress=reporter,
            config=record,
            suggestion=suggestion,
            src=src,
        )
        reporter.close()
        say(*reporter.summary(result, peak_memory=peak_worker_memory(client)))
    finally:
        if reporter is not None:
            reporter.close()
        close(client, cluster)
    return 0
