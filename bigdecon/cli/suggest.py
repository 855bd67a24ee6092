"""``bigdecon suggest INPUT``: the parameters the data call for, each with its reason; ``run --auto`` uses them."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ._common import quiet_dask, say
from .config import fmt_number
from .options import PSF_KEYS, add_run_options, resolve_options, uses_optics

__all__ = ["add_parser", "suggest_command", "suggestions"]

# The order the suggestion is shown in: the data term, the priors, then step 5.
SHOWN = ("sparse_iters", "fidelity", "sparsity", "tcontinuity", "background", "deconv_type", "deconv_iters")


def add_parser(sub: Any) -> None:
    suggest = sub.add_parser(
        "suggest",
        help="suggest parameters from the data (noise, photons, sampling)",
        description="Measure noise, signal and sampling on a bounded subsample of INPUT (at most 16 planes "
        "of 512x512 per channel are read) and print the recommended parameters with the reason for each. "
        "'bigdecon run --auto' uses them.",
        epilog="Example: bigdecon suggest cells.ome.zarr --fwhm 3",
    )
    suggest.add_argument("input", metavar="INPUT", help="OME-Zarr (path or URL) or TIFF")
    add_run_options(suggest, "suggest")
    suggest.add_argument("--json", action="store_true", help="print the suggestion as JSON")
    suggest.set_defaults(func=suggest_command)


def suggestions(source: str, resolved: dict[str, Any]) -> list[tuple[int, Any]]:
    """``(channel, Suggestion)`` for every processed channel of ``source`` with the PSF of ``resolved``.

    The data are read lazily: :func:`bigdecon.suggest_parameters` takes its
    subsample from the Dask array of the input (the first time point of a
    ``tzyx`` volume series).
    """
    from ..errors import InputError
    from ..io import open_image
    from ..passes.request import _prepare
    from ..suggest import suggest_parameters
    from ._common import pipeline_kwargs

    psf_resolved = dict(resolved)
    if not any(resolved.get(k) is not None for k in PSF_KEYS) and not uses_optics(resolved):
        raise InputError(
            "suggest needs the PSF size: --fwhm PIXELS, --resolution in physical units, --psf FILE, "
            "or the optics (--na and --wavelength)"
        )
    psf_resolved["deconv_type"] = psf_resolved["deconv_type"] or 1  # the PSF is needed to measure sampling
    psf_resolved["deconv_iters"] = psf_resolved["deconv_iters"] or 1
    kwargs = pipeline_kwargs(psf_resolved)
    src = open_image(source)
    request = _prepare(src, kwargs)
    layout, data = request.layout, request.data
    axes = list(layout.axes)
    out = []
    for i, (c, p) in enumerate(zip(request.channel_ids, request.channel_params)):
        index: list[Any] = []
        kept = []
        for a in axes:
            if a == "c":
                index.append(i)
            elif a == "t" and "z" in axes:
                index.append(0)  # one volume of a time series
            else:
                index.append(slice(None))
                kept.append(a)
        image = data[tuple(index)]
        third = "".join(kept)
        fwhm = p.fwhm
        if fwhm is not None and len(fwhm) == 3 and third != "zyx":
            fwhm = fwhm[1:]
        out.append((c, suggest_parameters(image, fwhm=fwhm, psf=p.psf, axes=third)))
    return out


def _g(value: float) -> str:
    return f"{value:.3g}"


def estimates_line(s: Any) -> str:
    """The measurements a suggestion rests on, in one line."""
    m = s.measured
    photons = "unknown (no Poisson noise found)" if m.peak_photons is None else _g(m.peak_photons)
    sampling = f"{_g(m.nyquist)} x Nyquist (FWHM {_g(m.fwhm_px)} px)"
    if m.out_of_focus is not None:
        sampling += f", {m.out_of_focus:.0%} of the PSF's light out of focus"
    return (
        f"noise sigma {_g(m.noise_sigma)} ({_g(m.noise_rel)} of the peak), photons at the peak "
        f"{photons}, SNR {_g(m.snr)}, sampling {sampling}; from {m.planes_used} planes of {m.crop[0]}x{m.crop[1]}"
    )


def suggest_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon suggest``."""
    resolved = resolve_options(args, cluster=False)
    quiet_dask(args, resolved["debug"])
    found = suggestions(args.input, resolved)
    if args.json:
        say(json.dumps({"input": args.input, "channels": {str(c): s.to_dict() for c, s in found}}, indent=2))
        return 0
    for c, s in found:
        say(f"{args.input}: suggested parameters" + (f" for channel {c}" if len(found) > 1 or c else ""))
        values = s.as_kwargs()
        for name in SHOWN:
            say(f"  {name:<13} {fmt_number(values[name]):<6} {s.reasons.get(name, '')}")
        say(f"  estimates:    {estimates_line(s)}")
        flags = " ".join(f"--{k.replace('_', '-')} {fmt_number(v)}" for k, v in values.items())
        say(f"  as options:   {flags}  (or: bigdecon run --auto)")
    return 0
