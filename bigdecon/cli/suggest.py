"""``bigdecon suggest INPUT``: candidates scored by a held-out loss on the data; ``run --auto`` uses the winner."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import quiet_dask, say
from .config import fmt_number
from .options import PSF_KEYS, add_run_options, given_keys, resolve_options, uses_optics

__all__ = ["add_parser", "candidate_table", "suggest_command", "suggestion_for"]

# The method parameters a suggestion sets, in the order shown.
SHOWN = (
    "sparse_iters fidelity sparsity tcontinuity background deconv_type deconv_iters wb_alpha wb_beta wb_order"
).split()


def add_parser(sub: Any) -> None:
    suggest = sub.add_parser(
        "suggest",
        help="choose parameters by a held-out loss measured on the data",
        description="Run candidate settings (Richardson-Lucy at several iteration counts, Wiener-Butterworth, "
        "Landweber, the sparse step at several fidelity/sparsity/background values, the defaults) on a few "
        "blocks of INPUT made noisier, and print each candidate's loss at predicting a second copy with "
        "uncorrelated noise (Recorrupted-to-Recorrupted). Each setting's RL iterations: the count nearest 20 within "
        "1 standard error of its lowest loss; plain RL unless beaten by more than 2 standard "
        "errors. 'bigdecon run --auto' uses the winner. Parameters given here are imposed on every candidate.",
        epilog="Example: bigdecon suggest cells.ome.zarr --fwhm 3 --png best.png",
    )
    suggest.add_argument("input", metavar="INPUT", help="OME-Zarr (path or URL) or TIFF")
    add_run_options(suggest, "suggest")
    suggest.add_argument("--json", action="store_true", help="print the suggestion and every candidate as JSON")
    suggest.add_argument("--png", metavar="FILE", help="save the raw block and the 3 best candidates side by side")
    suggest.set_defaults(func=suggest_command)


def suggestion_for(args: argparse.Namespace, resolved: dict[str, Any], kwargs: dict[str, Any] | None = None) -> Any:
    """The :class:`~bigdecon.suggest.Suggestion` for ``args.input`` with the PSF of ``resolved``.

    Method parameters given on the command line or in ``--config`` are imposed on every candidate.
    ``kwargs``: the run's checked keyword arguments (:func:`~bigdecon.cli._common.pipeline_kwargs`), if made.
    """
    from ..errors import InputError
    from ..suggest import suggest_parameters
    from ._common import pipeline_kwargs

    if not any(resolved.get(k) is not None for k in PSF_KEYS) and not uses_optics(resolved):
        raise InputError(
            "suggest needs the PSF: --fwhm PIXELS, --resolution in physical units, --psf FILE, "
            "or the optics (--na and --wavelength)"
        )
    kwargs = dict(kwargs) if kwargs is not None else pipeline_kwargs(resolved)
    for name in ("task_memory", "min_tasks", "chunks", "depth"):
        kwargs.pop(name, None)
    stated = given_keys(args)
    fixed = {name: resolved[name] for name in SHOWN if name in stated and resolved.get(name) is not None}
    return suggest_parameters(args.input, budget=resolved.get("budget"), fixed=fixed, **kwargs)


def candidate_table(s: Any) -> list[str]:
    """The candidates, best first: loss relative to plain RL 20, its paired standard error, seconds."""
    lines = [f"  {'candidate':<52} {'loss/RL20':>9} {'+-se':>7} {'s':>6}"]
    for c in sorted(s.candidates, key=lambda c: c["loss"]):
        mark = "*" if c["name"] == s.winner else " "
        lines.append(f"{mark} {c['name']:<52} {c['relative']:>9.4f} {c['se']:>7.4f} {c['seconds']:>6.1f}")
    return lines


def _where(s: Any) -> str:
    parts = []
    for b in s.blocks:
        axes = " ".join(f"{a} {v[0]}-{v[1]}" if isinstance(v, list) else f"{a} {v}" for a, v in b.items())
        parts.append(f"[{axes}]")
    return ", ".join(parts)


def suggest_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon suggest``."""
    from ..suggest import save_preview

    resolved = resolve_options(args, cluster=False)
    quiet_dask(args, resolved["debug"])
    s = suggestion_for(args, resolved)
    if args.png:
        save_preview(s, args.png)
    if args.json:
        say(json.dumps({"input": args.input, **s.to_dict()}, indent=2))
        return 0
    cost = f"{s.seconds:.1f} s ({s.cpu_seconds:.1f} CPU-s)"
    say(f"{args.input}: {len(s.candidates)} candidates on {len(s.blocks)} blocks {_where(s)} in {cost}")
    say(*candidate_table(s))
    say(f"winner: {s.winner}: {s.why}")
    flags = " ".join(f"--{k.replace('_', '-')} {fmt_number(v)}" for k, v in s.as_kwargs().items())
    say(f"as options: {flags}  (or: bigdecon run --auto)")
    if args.png:
        say(f"preview: {args.png}")
    return 0
