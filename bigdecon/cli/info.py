"""``bigdecon info PATH``: what an image is, and what a run on it would do."""

from __future__ import annotations

import argparse
from typing import Any

from ..io.skew_meta import read_skew
from ._common import fmt_size, pipeline_kwargs, quiet_dask, say, shape_text
from .config import fmt_number
from .options import PIPELINE_KEYS, PSF_KEYS, add_run_options, resolve_options, uses_optics

__all__ = ["add_parser", "info_command"]


def add_parser(sub: Any) -> None:
    info = sub.add_parser(
        "info",
        help="describe an image and what a run on it would do",
        description="Show axes, shape, dtype, chunks, pixel sizes, channels and NGFF version of PATH, "
        "and the plan of a run with the given options (overlap, tasks, memory per task).",
    )
    info.add_argument("path", metavar="PATH", help="OME-Zarr or TIFF")
    add_run_options(info, "info")
    info.set_defaults(func=info_command)


def info_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon info``."""
    import bigdecon

    from ..cluster import expected_threads
    from ..io import open_image, with_overrides
    from ..progress import format_bytes

    resolved = resolve_options(args, cluster=False)
    quiet_dask(args, resolved["debug"])
    src = with_overrides(open_image(args.path), resolved.get("axes"), resolved.get("voxel_size"))
    # The image and the plan are printed once both are known: bad options give the one-line error alone.
    lines = _image_lines(src, args.path)

    kwargs = {k: resolved[k] for k in PIPELINE_KEYS if resolved.get(k) is not None}
    optics = uses_optics(resolved)
    if optics or any(resolved.get(k) is not None for k in PSF_KEYS):
        kwargs = pipeline_kwargs(resolved)
    note = ""
    if not optics and not any(k in kwargs for k in PSF_KEYS) and kwargs.get("deconv_type", 1):
        kwargs["deconv_type"] = 0  # plan without the PSF; say so below
        note = "  (no --fwhm/--resolution/--psf/--na given: planned without the PSF size check)"
    threads = expected_threads(None, None)
    plan = bigdecon.plan(args.path, **kwargs, min_tasks=threads)
    depth = plan.get("depth") or {}
    k_name = next((a for a in ("z", "t") if a in plan["axes"]), None)
    overlap = ", ".join(f"{k_name if n == 'k' else n} {v}" for n, v in depth.items()) or "none (no sparse step)"
    say(
        *lines,
        "planned run:" + note,
        f"  output shape:     {shape_text(plan['output_shape'])} ({plan['axes']}), {resolved['output_dtype']}",
        f"  overlap per axis: {overlap}",
        f"  tasks:            {plan['n_tasks']} (for a local cluster of this machine's {threads} worker "
        f"thread{'s' if threads != 1 else ''}: blocks sized so every thread has work, halos counted)",
        f"  memory per task:  ~{format_bytes(plan['memory_per_task_bytes'])}",
    )
    if "deskew_block" in plan:
        block = plan["deskew_block"]
        say(f"  skew angle:       {plan['skew_angle']:g} deg ({plan['skew_angle_from']})")
        say(
            f"  deskew:           {plan['frame']}; {plan['shear_px_per_plane']:.4g} px per plane, output z step "
            f"{plan['deskewed_z_step']:.4g}; {plan['deskew_tasks']} tasks of "
            f"{'x'.join(str(block[a]) for a in ('z', 'y', 'x'))} (zyx), "
            f"~{format_bytes(plan['deskew_memory_per_task_bytes'])} per task"
        )
    step5 = ("none", "Richardson-Lucy", "Landweber", "Richardson-Lucy, Wiener-Butterworth back projector")
    deconv_type, deconv_iters = resolved["deconv_type"], resolved["deconv_iters"]
    say(
        f"  final step:       {step5[deconv_type]}"
        + (f", {deconv_iters} iteration{'s' if deconv_iters != 1 else ''}" if deconv_type and deconv_iters else "")
    )
    if plan.get("deconv_passes"):
        say(
            f"  step-5 passes:    {plan['deconv_passes']} of {plan['deconv_iters_per_pass']} iteration(s) "
            f"(one pass would need more memory or work), halo {', '.join(str(v) for v in plan['deconv_depth'].values())}; "
            f"solver state in scratch between passes, ~{format_bytes(plan['deconv_state_bytes'])} at most; "
            f"{plan['deconv_transformed_per_iteration']:g}x the data transformed per iteration"
        )
    _say_psf_and_offset(plan, resolved)
    _say_psf_sizes(plan, resolved, kwargs)
    return 0


def _image_lines(src: Any, path: str) -> list[str]:
    """What ``info`` says of the image: format, axes, shape, chunks, pixel sizes, channels, who made it."""
    import numpy as np

    from ..io import voxel_origin
    from ..progress import format_bytes

    fmt = f"OME-Zarr (NGFF {src.ngff_version})" if src.ngff_version else "TIFF"
    # The chunks on disk (the Dask array may group several into one read).
    stored = [int(c) for c in getattr(src, "stored_chunks", None) or [c[0] for c in src.data.chunks]]
    sizes = []
    for ax in src.axes:
        if ax == "c":
            continue
        unit = src.units.get(ax)
        origin = voxel_origin(src, ax)
        sizes.append(
            f"{ax} {src.scale.get(ax, 1.0):g} {unit} ({'--voxel-size' if origin == 'option' else 'metadata'})"
            if unit
            else f"{ax} unknown (assumed 1 pixel; give --voxel-size)"
            if ax in "zyx"
            else f"{ax} {src.scale.get(ax, 1.0):g} (no unit)"
        )
    lines = [
        f"{src.path or path}",
        f"  format:      {fmt}",
        f"  axes:        {''.join(src.axes)}",
        f"  shape:       {shape_text(src.shape)}  ({', '.join(f'{a}={n}' for a, n in zip(src.axes, src.shape))})",
        f"  dtype:       {src.dtype}",
        f"  chunks:      {shape_text(stored)}",
        f"  pixel size:  {', '.join(sizes)}",
        f"  size:        {format_bytes(int(np.prod(src.shape)) * np.dtype(src.dtype).itemsize)}",
    ]
    n_channels = src.shape[src.axes.index("c")] if "c" in src.axes else 1
    labels = [str(c.get("label", "")) for c in (src.channels or [])]
    if "c" in src.axes or labels:
        shown = [f"{i} {labels[i]!r}" if i < len(labels) and labels[i] else str(i) for i in range(n_channels)]
        lines.append(f"  channels:    {', '.join(shown)}")
    skew = read_skew(src)
    if skew is not None and not skew.skewed:  # a skewed stack's angle is printed with the plan
        what = "deskewed (not deskewed again)" if skew.source.startswith("deskewed") else "not skewed (objective scan)"
        lines.append(f"  skew:        {what}; angle {skew.angle:g} deg ({skew.source})")
    made = (src.attrs or {}).get("bigdecon") if isinstance(getattr(src, "attrs", None), dict) else None
    if isinstance(made, dict) and made.get("parameters"):
        params = made["parameters"]
        fwhm = params.get("fwhm")
        what = (
            ", ".join(f"channel {c}: {fmt_size(v)} px" for c, v in fwhm.items())
            if isinstance(fwhm, dict)
            else f"{fmt_size(fwhm)} px"
            if fwhm
            else "measured PSF"
            if params.get("psf_shape")
            else "none"
        )
        lines.append(
            f"  made by:     bigdecon {made.get('version', '?')} (sparse_iters {params.get('sparse_iters')}, "
            f"PSF FWHM {what})"
        )
    return lines


def _say_psf_sizes(plan: dict[str, Any], resolved: dict[str, Any], kwargs: dict[str, Any]) -> None:
    """The PSFs computed from the optics, and the FWHM in pixels of a ``--fwhm``/``--resolution``."""
    for described in plan.get("optics_psf") or []:
        where = f"channel {described['channel']}: " if len(plan["optics_psf"]) > 1 else ""
        say(
            f"  PSF:              {where}{described['model']}, NA {fmt_number(described['na'])}, wavelength "
            f"{fmt_number(described['wavelength'])}, n {fmt_number(described['refractive_index'])}, "
            f"shape {shape_text(described['shape'])}, FWHM "
            + " x ".join("(wider than the PSF)" if v is None else fmt_number(v) for v in described["fwhm_px"])
            + " px"
        )
    fwhm_px = plan.get("fwhm_px") or []
    if any(v is not None for v in fwhm_px) and any(k in kwargs for k in ("fwhm", "resolution")):
        ids = resolved["channels"] or list(range(len(fwhm_px)))
        if len({tuple(v) for v in fwhm_px if v is not None}) <= 1:
            text = f"{fmt_size(fwhm_px[0])} px"
        else:
            text = "; ".join(f"channel {c}: {fmt_size(v)} px" for c, v in zip(ids, fwhm_px) if v is not None)
        say(
            f"  PSF FWHM:         {text}"
            + (" (from --resolution and the pixel size)" if "resolution" in kwargs else "")
        )


_FROM = {"option": "--psf-voxel-size", "metadata": "metadata", "data": "taken at the data's"}


def _say_psf_and_offset(plan: dict[str, Any], resolved: dict[str, Any]) -> None:
    """The measured PSF as prepared for the data, and the camera offset."""
    for report in plan.get("psf_preparation") or []:
        where = f"channel {report['channel']}: " if len(plan["psf_preparation"]) > 1 else ""
        if report.get("as_is"):
            say(f"  PSF:              {where}measured, as is (--psf-as-is), shape {shape_text(report['shape'])}")
            continue
        voxel = report.get("psf_voxel_size")
        say(
            f"  PSF:              {where}measured {shape_text(report['shape_in'])}"
            + (f" at {fmt_size(voxel)} µm ({_FROM.get(report.get('psf_voxel_size_from'), '?')})" if voxel else "")
            + f" -> prepared {shape_text(report['shape'])} (pedestal {fmt_number(report['pedestal'])}, "
            f"{report['hot_pixels']} hot pixels, shift {', '.join(fmt_number(v) for v in report['shift_px'])} px, "
            f"resampled x{', '.join(fmt_number(round(v, 3)) for v in report['resample'])}, "
            f"{100 * report['energy']:g} % of its light)"
        )
    offset = plan.get("offset")
    if offset == "auto":
        say("  camera offset:    auto (estimated from the data's dark level when the run starts)")
    elif offset:
        say(f"  camera offset:    {fmt_number(offset)} counts subtracted first")
