"""Runs on skewed light-sheet stacks: deconvolve in the frame the stack was recorded in, then deskew.

``deconvolve(..., skew_angle=theta)`` lands here (:func:`deconvolve_skewed`):

* **skewed-space deconvolution** (the default): the PSF is sheared into the
  recorded frame (:func:`~bigdecon.solvers.deskew.skew_psf`; a sample-frame
  PSF, ``psf_frame="sample"``, from ``fwhm``/``resolution``/``psf`` or the
  optics on the deskewed grid), every step (background, sparse Hessian,
  deconvolution) runs on the stack as recorded, with its usual passes, into an
  intermediate OME-Zarr in the work folder; then the deskew pass
  (:mod:`bigdecon.passes.deskew`) writes the output. The stack as recorded has
  no void triangles: fewer voxels, and no interpolated input to deconvolve.
* **deskew only** (no background, sparse step, deconvolution or
  up-sampling): the deskew pass straight from the input.
* **deskew first** (``deskew_first=True``): the deskew pass into an
  intermediate, then the usual run on it with the sample-frame PSF.

The output's z step is ``dz * sin(theta)``; its attributes say it was
deskewed (``attrs["bigdecon"]["deskew"]``). With ``rotate=True`` the deskew
pass writes the coverslip frame instead (isotropic voxels of the lateral pixel
size, :class:`~bigdecon.solvers.deskew.RotateGeometry`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import BigdeconNotice, InputError
from ..io.paths import join, normalize
from ..planner import Layout
from ..solvers.deskew import RotateGeometry, SkewGeometry, skew_psf
from .deskew import DeskewContext, DeskewPlan, deskew_plan, skew_geometry, task_deskew

__all__ = ["SKEW_KEYS", "deconvolve_skewed", "skewed_plan", "split_skew"]

SKEW_KEYS = ("skew_angle", "skew_axis", "psf_frame", "deskew_first", "skew_fill", "rotate")
_PSF_KEYS = ("fwhm", "resolution", "psf", "psf_model", "na", "wavelength", "refractive_index", "sheet_thickness")
_PSF_KEYS_ALL = (*_PSF_KEYS, "excitation_wavelength")
_SELECTION_KEYS = ("channels", "timepoints")


def split_skew(kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The skew options (``skew_angle`` None when the stack is not skewed) and the rest.

    Examples
    --------
    >>> split_skew({"fwhm": 3, "skew_angle": 31.5})
    ... # doctest: +NORMALIZE_WHITESPACE
    ({'skew_angle': 31.5, 'skew_axis': 'x', 'psf_frame': 'sample', 'deskew_first': False, 'skew_fill': None,
      'rotate': False}, {'fwhm': 3})
    """
    from ..params import PARAMETERS

    skew = {}
    for k in SKEW_KEYS:
        value = kwargs.get(k)
        skew[k] = PARAMETERS[k].default if value is None else PARAMETERS[k].parse(value)
    return skew, {k: v for k, v in kwargs.items() if k not in SKEW_KEYS}


def metadata_skew(source: Any) -> Any:
    """The :class:`~bigdecon.io.skew_meta.SkewMeta` of a stack its files say is stored skewed, else None."""
    from ..io import open_image
    from ..io.skew_meta import read_skew

    found = read_skew(open_image(source))
    return found if found is not None and found.skewed else None


def _resolved(skew: Mapping[str, Any], found: Any) -> dict[str, Any]:
    """``skew`` with the metadata's angle and axis where no angle was given, and where the angle came from."""
    out = dict(skew)
    if found is not None and not skew["skew_angle"]:
        out["skew_angle"], out["skew_axis"] = found.angle, found.axis
        out["angle_from"] = found.source
    else:
        out["angle_from"] = "skew_angle option"
    return out


def _open(source: Any, rest: dict[str, Any], found: Any = None) -> Any:
    """The input with ``axes``/``voxel_size`` applied; a TIFF without pixel sizes takes those of the
    Janelia Settings.txt beside it (stage step, camera pitch / magnification), with a notice, and
    ``rest["voxel_size"]`` says so to every stage of the run."""
    from ..io import open_image, with_overrides

    src = with_overrides(open_image(source), rest.get("axes"), rest.get("voxel_size"))
    if rest.get("voxel_size") is None and found is not None and found.stage_step and found.pixel:
        if not {"z", "x"} <= set(src.units):
            size = (found.stage_step, found.pixel, found.pixel)
            warnings.warn(
                f"voxel size from {found.source.split(' ')[0]}: z (stage step) {size[0]:g}, y and x {size[1]:g} um",
                BigdeconNotice,
                3,
            )
            rest["voxel_size"] = size
            src = with_overrides(src, None, size)
    return src


def only_deskews(kwargs: Mapping[str, Any]) -> bool:
    """Whether a run with ``kwargs`` does nothing but deskew (no steps 1-6 change the data)."""
    from ..params import DEFAULTS, resolve_deconv_iters

    deconv_type = kwargs.get("deconv_type", DEFAULTS.deconv_type)
    iters = resolve_deconv_iters(kwargs.get("deconv_iters"), deconv_type)
    return (
        not kwargs.get("sparse_iters", DEFAULTS.sparse_iters)
        and not kwargs.get("background", DEFAULTS.background)
        and not kwargs.get("up_sample", DEFAULTS.up_sample)
        and not (deconv_type and iters)
    )


class _Reframed:
    """An opened source seen on the deskewed grid: its z pixel size is ``dz * sin(theta)``."""

    def __init__(self, src: Any, z_step: float) -> None:
        self._src = src
        self.scale = {**src.scale, "z": z_step}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._src, name)


def skewed_psf_kwargs(src: Any, kwargs: Mapping[str, Any], skew: Mapping[str, Any], geometry: SkewGeometry) -> dict:
    """``kwargs`` with a 3-D sample-frame PSF replaced by its skewed form, one per processed channel.

    A 2-D PSF (plane by plane) is the same in both frames; ``psf_frame="skewed"`` is taken as is.
    """
    from ..stages import output_psf
    from .options import parse_run_options
    from .request import prepare_request

    kwargs = dict(kwargs)
    if skew["psf_frame"] == "skewed" or only_deskews(kwargs):
        return kwargs
    # src has its axes and voxel size applied already (_open); the z step is the deskewed grid's
    probe = {k: v for k, v in kwargs.items() if k not in ("chunks", "depth", "axes", "voxel_size")}
    request = prepare_request(_Reframed(src, geometry.z_step), *parse_run_options({**probe, "sparse_iters": 0}))
    if not (request.params.volumetric and request.params.deconvolves):
        return kwargs
    psfs = {}
    for c, p in zip(request.channel_ids, request.channel_params):
        sample = output_psf(replace(p, up_sample=0), 3)  # in input pixels: step 5 zooms it when up-sampling
        assert sample is not None
        psfs[c] = _fit(skew_psf(sample, geometry.angle, geometry.dz, geometry.dx, skew["skew_axis"]), src, skew)
    for k in _PSF_KEYS_ALL:
        kwargs.pop(k, None)
    kwargs["psf"] = psfs if "c" in src.axes else psfs[0]
    return kwargs


def _fit(psf: np.ndarray, src: Any, skew: Mapping[str, Any]) -> np.ndarray:
    """A skewed PSF cut (centred, odd) to the stack's extent along the skew axis: a wider one adds only cost."""
    axis = 2 if skew["skew_axis"] == "x" else 1
    n = int(src.shape[list(src.axes).index(str(skew["skew_axis"]))])
    keep = min(psf.shape[axis], n if n % 2 else n - 1)
    cut = (psf.shape[axis] - keep) // 2
    if cut <= 0:
        return psf
    index = [slice(None)] * 3
    index[axis] = slice(cut, cut + keep)
    out = psf[tuple(index)]
    return (out / out.sum()).astype(np.float32)


def _geometry(src: Any, shape: Sequence[int], skew: Mapping[str, Any], factor: int) -> SkewGeometry:
    """The shear of a (selected, possibly up-sampled by ``factor``) stack of ``src``."""
    axes = list(src.axes)
    scale = dict(src.scale)
    for a in ("y", "x"):
        if a in scale:
            scale[a] = scale[a] / factor
    sizes = {a: n for a, n in zip(axes, shape)}
    return skew_geometry(scale, src.units, sizes, float(skew["skew_angle"]), str(skew["skew_axis"]))


def _deskewed_layout(
    axes: tuple[str, ...], shape: list[int], geometry: SkewGeometry, axis: str, rotate: bool = False
) -> Layout:
    out = list(shape)
    if rotate:
        out[axes.index("z")], out[axes.index(axis)] = RotateGeometry(geometry).out_size
    else:
        out[axes.index(axis)] = geometry.out_width
    return Layout(axes, tuple(out))


def _stage_a_plan(source: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    from .run import plan

    return plan(source, **kwargs, skew_angle=0)  # the run in the recorded frame is not skewed itself


def skewed_plan(source: Any, kwargs: Mapping[str, Any], skew: Mapping[str, Any], found: Any = None) -> dict[str, Any]:
    """What :func:`deconvolve_skewed` would do: the run in the recorded frame and the deskew pass
    (``found``: the input's :class:`~bigdecon.io.skew_meta.SkewMeta`, where no angle was given)."""
    skew = _resolved(skew, found)
    rest = dict(kwargs)
    src = _open(source, rest, found)
    task_memory = int(rest.get("task_memory") or 512 * 2**20)
    deskew_only = only_deskews(rest)
    base = _stage_a_plan(source, {**rest, "deconv_type": 0, "sparse_iters": 0, "background": 0, "up_sample": 0})
    factor = 2 if rest.get("up_sample") else 1
    geometry = _geometry(src, base["shape"], skew, 1)
    if deskew_only or skew["deskew_first"]:
        summary = dict(base) if deskew_only else _stage_a_plan(source, rest)
        if not deskew_only:
            summary["note"] = "deskew first: planned on the skewed shape; the run deconvolves the deskewed one"
        summary["n_tasks"] = 0 if deskew_only else summary["n_tasks"]
        summary["memory_per_task_bytes"] = 0 if deskew_only else summary["memory_per_task_bytes"]
        shape = base["shape"]
    else:
        summary = _stage_a_plan(source, skewed_psf_kwargs(src, rest, skew, geometry))
        shape = summary["output_shape"]
        geometry = _geometry(src, shape, skew, factor)
    layout = _deskewed_layout(tuple(src.axes), list(shape), geometry, str(skew["skew_axis"]), skew["rotate"])
    dplan = deskew_plan(layout, geometry, str(skew["skew_axis"]), task_memory, skew["rotate"])
    summary.update(dplan.summary())
    summary["skewed_output_shape"] = list(shape)
    summary["output_shape"] = list(layout.shape)
    summary["n_tasks"] += len(dplan.tasks())
    summary["memory_per_task_bytes"] = max(summary["memory_per_task_bytes"], dplan.task_bytes())
    summary["frame"] = "deskew only" if deskew_only else "deskew first" if skew["deskew_first"] else "skewed"
    summary["skew_angle"], summary["skew_angle_from"] = float(skew["skew_angle"]), skew["angle_from"]
    return summary


def _state(path: str) -> str | None:
    """``complete``, ``running`` (a bigdecon output not finished) or None (nothing there)."""
    from .run import _stored_status

    return _stored_status(path)


def _output_meta(
    src: Any, selection: dict[int, Any], geometry: SkewGeometry, factor: int, rotate: bool = False, axis: str = "x"
) -> dict[str, Any]:
    """Scale (z step ``dz * sin(theta)``), units, translation and channels of the deskewed output."""
    axes = list(src.axes)
    scale = dict(src.scale)
    for a in ("y", "x"):
        if a in scale:
            scale[a] = scale[a] / factor
    scale["z"] = geometry.z_step
    if rotate:  # isotropic: every axis of the coverslip frame in pixels of the skew axis
        scale["z"] = scale[axis] = geometry.dx
    translation = dict(src.translation)
    if "t" in axes and isinstance(selection.get(axes.index("t")), int):
        translation["t"] = translation.get("t", 0.0) + selection[axes.index("t")] * src.scale.get("t", 1.0)
    channels = src.channels
    if "c" in axes and isinstance(selection.get(axes.index("c")), list) and src.channels:
        channels = [src.channels[c] for c in selection[axes.index("c")] if c < len(src.channels)]
    return {"scale": scale, "units": src.units, "translation": translation, "channels": channels}


def _selection(src: Any, rest: Mapping[str, Any]) -> tuple[Layout, dict[int, Any], Any]:
    """The selected input's layout, the selection and the selected data (lazy), without a PSF."""
    from .options import parse_run_options
    from .request import prepare_request

    picked = {k: rest[k] for k in (*_SELECTION_KEYS, "task_memory") if rest.get(k) is not None}
    request = prepare_request(src, *parse_run_options({**picked, "deconv_type": 0, "sparse_iters": 0, "background": 0}))
    return request.layout, request.selection, request.data


def deconvolve_skewed(args: dict[str, Any], found: Any = None) -> dict[str, Any]:
    """:func:`~bigdecon.passes.run.deconvolve` of a skewed stack (``args``: its keyword arguments;
    ``found``: the input's :class:`~bigdecon.io.skew_meta.SkewMeta` where no angle was given)."""
    from ..io.safety import Lease
    from .guard import check_run, finish_cleanup

    source, destination = args.pop("source"), args.pop("destination")
    skew, rest = split_skew(args)
    skew = _resolved(skew, found)
    src = _open(source, rest, found)  # before the deskew-first split: it may set rest["voxel_size"]
    if skew["deskew_first"] and skew["rotate"] and not only_deskews({k: v for k, v in rest.items() if v is not None}):
        raise InputError(
            "rotate follows a deconvolution in the recorded frame: it cannot be combined with deskew_first"
        )
    if skew["deskew_first"] and skew["psf_frame"] == "skewed":
        raise InputError("deskew_first deconvolves the deskewed stack: it needs the PSF in the sample frame")
    if skew["deskew_first"] and not only_deskews({k: v for k, v in rest.items() if v is not None}):
        return _deskew_first(source, destination, skew, rest)
    run_keys = ("client", "progress", "config", "device", "resume", "overwrite", "output_dtype", "ngff_version")
    run = {k: rest.pop(k) for k in run_keys}
    run["work_dir"], run["suggestion"] = rest.pop("work_dir"), rest.pop("suggestion", None)
    state = check_run(
        src, source, destination, resume=run["resume"], overwrite=run["overwrite"], work_dir=run["work_dir"]
    )
    if state == "cleanup":
        return {"output": normalize(destination)[0], "cleaned": finish_cleanup(destination), "chunks": 0, "resumed": 0}
    lease = Lease.acquire(normalize(destination)[0])  # after the checks: a refused run takes nothing
    try:
        return _run_skewed(src, source, destination, skew, rest, run, lease)
    finally:
        lease.release()


def _run_skewed(
    src: Any, source: Any, destination: Any, skew: dict[str, Any], rest: dict[str, Any], run: dict[str, Any], lease: Any
) -> dict[str, Any]:
    """The run in the recorded frame (unless it only deskews), then the deskew pass into the output."""
    from ..io import open_image
    from .ledger import Ledger
    from .run import _source_stats, run_sizing
    from .scratch import work_root

    t0 = time.perf_counter()
    if rest.get("min_tasks") is None:
        sizing = run_sizing(
            run["client"], destination, resume=run["resume"], chunks=rest.get("chunks"), device=run["device"]
        )
        rest["min_tasks"] = sizing["min_tasks"]
        rest["task_memory"] = rest.get("task_memory") or sizing["task_memory"]
    method = {k: v for k, v in rest.items() if v is not None}
    deskew_only = only_deskews(method)
    summary = skewed_plan(source, method, skew)
    layout_in, selection, data = _selection(src, method)
    if deskew_only and np.issubdtype(data.dtype, np.floating) and not run["resume"]:
        _source_stats(data, layout_in, where=normalize(source)[0])  # NaN/inf: one line, nothing written
    stage_shape = summary["skewed_output_shape"]
    geometry = _geometry(src, stage_shape, skew, 2 if method.get("up_sample") else 1)
    axis = str(skew["skew_axis"])
    out_layout = _deskewed_layout(tuple(src.axes), list(stage_shape), geometry, axis, skew["rotate"])
    dplan = deskew_plan(out_layout, geometry, axis, int(method.get("task_memory") or 512 * 2**20), skew["rotate"])
    writer, work_dir = _open_writer(src, source, destination, method, skew, dplan, selection, run)
    ledger = Ledger(work_root(writer.path, work_dir))
    if not run["resume"]:
        from ..io.safety import work_stamp

        ledger.remove()
        work_stamp(ledger.root, writer.path)
    n_deskew = len(dplan.tasks())
    stage_info: dict[str, Any] = {}
    ctx_src, ctx_sel, ctx_layout = src, selection, layout_in
    if not deskew_only:
        mid = ledger.path("skewed.ome.zarr")
        kwargs = skewed_psf_kwargs(src, method, skew, _geometry(src, layout_in.shape, skew, 1))
        stage_info = _stage_a(source, mid, kwargs, run, n_deskew)
        ctx_src = open_image(mid)
        ctx_sel, ctx_layout = {}, Layout(tuple(ctx_src.axes), tuple(ctx_src.shape))
    done_before = stage_info.get("tasks", 0)
    # The camera offset: subtracted by the deskew tasks of a deskew-only run, by the run in the
    # recorded frame otherwise (its record is the intermediate's); the voids are 0 after it.
    offset = (
        _deskew_offset(method, data, ledger) if deskew_only else ctx_src.attrs.get("bigdecon", {}).get("offset", {})
    )
    fill = _fills(ctx_src, ctx_sel, ctx_layout, skew["skew_fill"], ledger, zero=_asks_offset(method))
    ctx = DeskewContext(
        plan=dplan,
        in_layout=ctx_layout,
        level=tuple(ctx_src.level),
        selection=ctx_sel,
        output=writer.path,
        fill=fill,
        run_id=f"{os.getpid()}-{time.monotonic_ns()}",
        offset=float(offset.get("counts", 0.0)) if deskew_only else 0.0,
    )
    maxima, resumed = _deskew_pass(ctx, ledger, run["client"], _offset(run["progress"], done_before), n_deskew)
    attrs = _attrs(ctx.fill, geometry, skew, summary["frame"], stage_info, run, maxima)
    attrs["offset"] = {"counts": float(offset.get("counts", 0.0)), "estimated": bool(offset.get("estimated"))}
    if work_dir is not None:  # where a run killed after finalising left its work folder (guard._work_dir)
        from ..io.paths import redact

        attrs["work_dir"] = redact(work_dir)
    lease.check()  # a run presumed dead and taken over finishes nothing
    writer.finalize(attrs=attrs)
    lease.check()
    ledger.remove()
    return {
        "output": writer.path,
        "shape": list(out_layout.shape),
        "skewed_shape": list(stage_shape),
        "seconds": time.perf_counter() - t0,
        "voxels": int(np.prod(layout_in.shape)),
        "voxels_processed": 0 if deskew_only else int(np.prod(stage_shape)),
        "chunks": done_before + n_deskew,
        "resumed": stage_info.get("resumed", 0) + resumed,
        "stats": stage_info.get("stats", {}),
    }


def _asks_offset(method: Mapping[str, Any]) -> bool:
    """Whether the run subtracts a camera offset (a number > 0, or ``auto``)."""
    from .options import _check_offset

    return _check_offset(method.get("offset", 0.0)) != 0.0


def _deskew_offset(method: Mapping[str, Any], data: Any, ledger: Any) -> dict[str, Any]:
    """A deskew-only run's camera offset, ``{"counts", "estimated"}``: the given counts, or ``auto``
    estimated once from the input (:func:`~bigdecon.passes.request.estimate_offset`), kept for a resume."""
    from .options import _check_offset
    from .request import estimate_offset

    stored = ledger.get("deskew-offset")
    if stored is not None:
        return dict(stored)
    asked = _check_offset(method.get("offset", 0.0))
    found = estimate_offset(data) if asked == "auto" else float(asked)
    if asked == "auto":
        warnings.warn(f"offset auto: the data's dark level is {found:g} counts, subtracted", BigdeconNotice, 2)
    record = {"counts": found, "estimated": asked == "auto"}
    ledger.put("deskew-offset", record)
    return record


def _fills(
    src: Any, selection: dict[int, Any], layout: Layout, given: float | None, ledger: Any, zero: bool = False
) -> tuple[float, ...]:
    """The voids' value per channel: ``given``; 0 after a camera offset (``zero``); else the median of the
    last recorded plane of the first volume (of every channel), computed once and kept in the ledger."""
    if given is not None or zero:
        return (float(given or 0.0),) * layout.n_channels
    stored = ledger.get("deskew-fill")
    if stored is not None:
        return tuple(float(v) for v in stored["fill"])
    from ..io import read_region

    fills = []
    z = layout.axes.index("z")
    for c in range(layout.n_channels):
        index: list[Any] = []
        for i, name in enumerate(layout.axes):
            sel = selection.get(i)
            if i == z:
                index.append(slice(layout.shape[z] - 1, layout.shape[z]))
            elif name == "c":
                index.append([sel[c]] if isinstance(sel, list) else slice(c, c + 1))
            elif i in layout.outer:
                first = sel if isinstance(sel, int) else 0
                index.append(slice(first, first + 1))
            else:
                index.append(slice(None))
        fills.append(float(np.median(read_region(src.level, index))))
    ledger.put("deskew-fill", {"fill": fills})
    return tuple(fills)


def _open_writer(
    src: Any,
    source: Any,
    destination: Any,
    method: Mapping[str, Any],
    skew: Mapping[str, Any],
    dplan: DeskewPlan,
    selection: dict[int, Any],
    run: Mapping[str, Any],
) -> tuple[Any, str | None]:
    """The deskewed output (created, or reopened by a resume) and the work folder's location."""
    from .. import __version__
    from ..io import OmeZarrWriter
    from ..io.paths import redact
    from ..io.safety import fingerprint
    from ..params import check_output_dtype
    from .run import _stored_config
    from .scratch import resolve_work_dir

    resume = bool(run["resume"])
    stored = _stored_config(destination) if resume else {}
    work_dir = resolve_work_dir(run["work_dir"], stored, resume)
    dtype = check_output_dtype(run["output_dtype"])
    record = _run_record(source, method, skew, dplan, str(dtype), work_dir)
    record["version"] = __version__  # a resume is refused when either differs (guard.check_resume)
    record["input"] = stored.get("input") if resume else fingerprint(src)
    if work_dir is not None:
        record["work_dir"] = redact(work_dir)
    factor = 2 if method.get("up_sample") else 1
    writer = OmeZarrWriter(
        destination,
        shape=dplan.layout.shape,
        axes=dplan.layout.axes,
        chunks=dplan.chunks,
        dtype=str(dtype),
        ngff_version=run["ngff_version"],
        overwrite=run["overwrite"],
        resume=resume,
        run_config=record,
        **_output_meta(src, selection, dplan.geometry, factor, dplan.rotate is not None, dplan.axis),
    )
    return writer, work_dir


def _attrs(
    fill: tuple[float, ...],
    geometry: SkewGeometry,
    skew: Mapping[str, Any],
    frame: str,
    stage_info: Mapping[str, Any],
    run: Mapping[str, Any],
    maxima: list[float],
) -> dict[str, Any]:
    """The output's ``attrs["bigdecon"]``: how it was deskewed, the skewed run's statistics, the config."""
    from ..io.paths import redact

    attrs = {
        "deskew": {
            "angle": geometry.angle,
            "angle_from": skew.get("angle_from", "skew_angle option"),
            "axis": skew["skew_axis"],
            "frame": frame,
            "psf_frame": skew["psf_frame"],
            "shear_px_per_plane": geometry.shear,
            "stage_step": geometry.dz,
            "z_step": geometry.z_step,
            "rotated": bool(skew["rotate"]),
            "interpolation": "bilinear (plane, skew axis) from the recorded stack, to the coverslip frame"
            if skew["rotate"]
            else "linear along the skew axis",
            "fill": list(fill),
            "note": "deskewed: plane k moved by k*dz*cos(angle)/dx px along the skew axis; z step dz*sin(angle)",
        },
        "skewed_run": stage_info.get("attrs", {}),
        "config": redact(run["config"] or {}),
        "max": maxima,
    }
    if run["suggestion"] is not None:
        attrs["suggestion"] = run["suggestion"]
    return attrs


def _run_record(
    source: Any, method: Mapping[str, Any], skew: Mapping[str, Any], dplan: DeskewPlan, dtype: str, work_dir: Any
) -> dict[str, Any]:
    """What a resume must match: the source, the options (a PSF array by its checksum), the deskew blocks."""
    import hashlib

    def plain(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return hashlib.sha256(np.ascontiguousarray(v, np.float32).tobytes()).hexdigest()
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        return v

    sizing = ("min_tasks", "task_memory")  # top level, where run_sizing finds them on --resume
    record = {
        "source": normalize(source)[0],
        "skew": dict(skew),
        "options": {k: plain(v) for k, v in sorted(method.items()) if k not in sizing},
        **{k: method.get(k) for k in sizing},
        "deskew_block": dict(dplan.block),
        "output_dtype": dtype,
    }
    return record


def _offset(progress: Callable[[int, int], None] | None, before: int) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    return lambda done, total: progress(before + done, before + total)


def _stage_a(source: Any, mid: str, kwargs: dict[str, Any], run: Mapping[str, Any], n_deskew: int) -> dict[str, Any]:
    """The run in the recorded frame into ``mid`` (resumed, or skipped when complete)."""
    from .run import deconvolve

    state = _state(mid)
    progress = run["progress"]
    seen = {"total": 0}

    def forward(done: int, total: int) -> None:
        seen["total"] = total
        if progress is not None:
            progress(done, total + n_deskew)

    if state == "complete":
        return {"tasks": 0, "resumed": 0, "attrs": {}}
    info = deconvolve(
        source,
        mid,
        **kwargs,
        skew_angle=0,  # the run in the recorded frame
        output_dtype="float32",
        resume=state == "running",
        overwrite=state is None,
        client=run["client"],
        progress=forward,
        device=run["device"],
        pyramid=False,
    )
    return {
        "tasks": info["chunks"],
        "resumed": info["resumed"],
        "stats": info["stats"],
        "seconds": info["seconds"],
        "attrs": {"statistics": info["stats"]},
    }


def _deskew_pass(
    ctx: DeskewContext, ledger: Any, client: Any, progress: Callable[[int, int], None] | None, n: int
) -> tuple[list[float], int]:
    """Run the deskew tasks not yet recorded; the output's maximum per channel and the tasks resumed."""
    from .ledger import RecordBook
    from .run import _run_tasks

    counter = {"done": 0, "total": n, "resumed": 0}
    book = RecordBook(ledger, "deskew")
    maxima = _run_tasks(task_deskew, ctx, ctx.plan.tasks(), book, client, progress, counter)  # type: ignore[arg-type]
    return maxima, counter["resumed"]


def _deskew_first(source: Any, destination: Any, skew: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
    """Deskew into a hidden intermediate beside the output (``.NAME-deskewed.ome.zarr``), then deconvolve it."""
    from .run import deconvolve

    t0 = time.perf_counter()
    out = normalize(destination)[0].rstrip("/")
    head, name = out.rsplit("/", 1) if "/" in out else (".", out)
    work = rest.get("work_dir")
    mid = join(normalize(work)[0] if work is not None else head, f".{name}-deskewed.ome.zarr")
    resume = bool(rest.get("resume"))
    state = _state(mid) if resume else None  # an intermediate is reused only by a resumed run
    if resume and _state(destination) == "complete":
        raise InputError(f"nothing to resume: {out} is already complete")
    if not resume and _state(destination) is not None and not rest.get("overwrite"):
        raise InputError(f"output exists: {out} (use --overwrite to replace it or --resume to continue it)")
    selection: dict[str, Any] = {
        k: rest.get(k)
        for k in ("channels", "timepoints", "task_memory", "min_tasks", "client", "device", "axes", "voxel_size")
    }
    # The offset, resolved once on the recorded stack: the voids hold it, so they are 0 after it.
    offset = _first_offset(source, rest) if _asks_offset(rest) else None
    fill = skew["skew_fill"] if offset is None or skew["skew_fill"] is not None else offset["counts"]
    first = {}
    if state != "complete":
        first = deconvolve(
            source,
            mid,
            **selection,
            **{k: v for k, v in skew.items() if k in SKEW_KEYS and k not in ("deskew_first", "skew_fill")},
            deskew_first=False,
            skew_fill=fill,
            sparse_iters=0,
            background=0,
            deconv_type=0,
            resume=state == "running",
            overwrite=state != "running",
            pyramid=False,
        )
    # The deskewed intermediate has its own pixel sizes (z step dz*sin(angle)) and axes: no overrides.
    second = {k: v for k, v in rest.items() if k not in ("channels", "timepoints", "axes", "voxel_size")}
    second["skew_angle"] = 0
    second["resume"] = resume and _state(destination) == "running"  # killed before it began: a fresh start
    second["overwrite"] = bool(rest.get("overwrite")) or (resume and not second["resume"])
    config = dict(second.get("config") or {})
    config["deskew_first"] = {**skew, "intermediate": mid}
    if offset is not None:
        second["offset"] = offset["counts"]
        config["deskew_first"]["offset"] = offset
    second["config"] = config
    info = deconvolve(mid, destination, **second)
    _remove_output(mid)
    info["seconds"] = time.perf_counter() - t0
    info["stage_seconds"] = {
        "deskew": first.get("seconds", 0.0),
        "deconvolve": info["seconds"] - first.get("seconds", 0.0),
    }
    info["voxels_processed"] = int(np.prod(info["shape"]))
    return info


def _first_offset(source: Any, rest: Mapping[str, Any]) -> dict[str, Any]:
    """The camera offset of a deskew-first run, ``{"counts", "estimated"}``, from the recorded stack."""
    from .options import _check_offset
    from .request import estimate_offset

    asked = _check_offset(rest.get("offset", 0.0))
    if asked != "auto":
        return {"counts": float(asked), "estimated": False}
    _, _, data = _selection(_open(source, dict(rest)), {k: v for k, v in rest.items() if v is not None})
    found = estimate_offset(data)
    warnings.warn(f"offset auto: the data's dark level is {found:g} counts, subtracted", BigdeconNotice, 2)
    return {"counts": found, "estimated": True}


def _remove_output(path: str) -> None:
    """Delete an intermediate this run wrote (a bigdecon output: checked before deleting)."""
    import shutil

    from ..io.paths import filesystem

    if _state(path) is None:
        return
    local = normalize(path)[1]
    if local:
        shutil.rmtree(path, ignore_errors=True)
    else:
        filesystem(path).rm(path, recursive=True)
