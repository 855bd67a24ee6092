"""``bigdecon psf FILE``: inspect a measured PSF and write it prepared for deconvolution.

Prints the pedestal, the centroid's offset from the box centre, the FWHM per
axis (in pixels and micrometres; beside the widefield theory when ``--na`` and
``--wavelength`` are given), the box that holds ``--psf-energy`` of its light,
and one line for each problem the preparation cannot fix (saturated pixels,
more than one spot, a pedestal holding much of the file's sum). ``-o`` writes
the PSF as ``bigdecon run`` would use it; ``--png`` its xy/xz/yz sections on a
log scale.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from ..params import DEFAULT_REFRACTIVE_INDEX
from ._common import quiet_dask, say, shape_text
from .config import fmt_number
from .options import _add, parameters, resolve_options

if TYPE_CHECKING:
    import numpy as np

__all__ = ["add_parser", "psf_command", "theoretical_fwhm"]

_OPTIONS = ("psf_voxel_size", "voxel_size", "psf_energy", "na", "wavelength", "refractive_index", "debug")


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "psf",
        help="inspect a measured PSF (bead stack) and write it prepared for deconvolution",
        description="Measure a PSF file (pedestal, centring, FWHM, the box of its light, problems) and "
        "write it as 'bigdecon run --psf' prepares it: pedestal and hot pixels removed, centred, "
        "resampled to --voxel-size, cropped to --psf-energy of its light, sum 1.",
        epilog="Example: bigdecon psf bead.tif --voxel-size 0.3,0.1,0.1 -o psf.tif --png psf.png",
    )
    p.add_argument(
        "path", metavar="FILE", nargs="?", help="PSF file: .tif (ImageJ or OME voxel sizes are read) or .npy"
    )
    p.add_argument(
        "--from-beads",
        metavar="STACK",
        help="distil the PSF from a stack of sub-resolution beads instead of FILE: isolated, unsaturated "
        "beads are found, registered to sub-pixel precision and averaged (bigdecon.solvers.beads)",
    )
    p.add_argument("-o", "--output", metavar="OUT", help="write the prepared PSF (.tif with its voxel size, or .npy)")
    p.add_argument("--png", metavar="PNG", help="write xy/xz/yz sections of the prepared PSF, log scale")
    p.add_argument(
        "--region",
        metavar="Z0:Z1,Y0:Y1,X0:X1",
        help="use this box of the file (e.g. one bead of a bead stack); y,x for a 2-D file",
    )
    group = p.add_argument_group("PSF and data")
    table = parameters()
    for name in _OPTIONS:
        _add(group, table[name])
    p.set_defaults(func=psf_command)


def _region(text: str | None, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``'10:40,20:80,30:90'`` -> slices (an empty end: to the edge)."""
    if not text:
        return tuple(slice(None) for _ in shape)
    parts = text.split(",")
    if len(parts) != len(shape):
        raise InputError(f"--region needs {len(shape)} ranges A:B for a {len(shape)}-D file, got {text!r}")
    out = []
    for part, n in zip(parts, shape):
        a, sep, b = part.partition(":")
        try:
            lo, hi = int(a) if a.strip() else 0, int(b) if b.strip() else n
        except ValueError:
            raise InputError(f"--region ranges are A:B in pixels, got {part!r}") from None
        if not sep or not 0 <= lo < hi <= n:
            raise InputError(f"--region range {part!r} is not inside 0:{n}")
        out.append(slice(lo, hi))
    return tuple(out)


def theoretical_fwhm(
    na: float, wavelength: float, refractive_index: float = DEFAULT_REFRACTIVE_INDEX
) -> tuple[float, float]:
    """Widefield FWHM, axial and lateral, in the wavelength's unit.

    Lateral ``0.51 wavelength / NA``, axial ``0.88 wavelength / (n - sqrt(n^2 - NA^2))``
    (the approximations collected by Cole et al., Nat. Protoc. 6, 1929-1941, 2011).

    Examples
    --------
    >>> [round(v, 3) for v in theoretical_fwhm(1.4, 0.52, 1.518)]
    [0.491, 0.189]
    """
    if not 0 < na < refractive_index:
        raise InputError(f"na must be above 0 and below the refractive index {refractive_index:g}, got {na:g}")
    axial = 0.88 * wavelength / (refractive_index - math.sqrt(refractive_index**2 - na**2))
    return axial, 0.51 * wavelength / na


def _fwhm(psf: np.ndarray) -> list[float | None]:
    from ..passes.request import _fwhm_px

    return _fwhm_px(psf)


def psf_command(args: argparse.Namespace) -> int:
    """Handler of ``bigdecon psf``."""
    from ..io.psf_file import read_psf, write_psf
    from ..solvers.psf_prepare import prepare_psf

    resolved = resolve_options(args, cluster=False)
    quiet_dask(args, resolved["debug"])
    if (args.path is None) == (args.from_beads is None):
        raise InputError("give a PSF FILE or --from-beads STACK (one of them)")
    source = args.path or args.from_beads
    raw, from_file = read_psf(source)
    raw = raw[_region(args.region, raw.shape)]
    names = ("z", "y", "x")[3 - raw.ndim :]
    own = resolved["psf_voxel_size"] or from_file
    origin = "--psf-voxel-size" if resolved["psf_voxel_size"] else "metadata" if from_file else None
    if own is not None:
        own = list(own)[-raw.ndim :]
    say(f"{source}" + (f" [{args.region}]" if args.region else ""))
    if args.from_beads:
        raw = _average_beads(raw, own)
    energy = resolved["psf_energy"]
    # Measured at the file's own sampling; written at the data's when --voxel-size says what that is.
    native, report = prepare_psf(raw, own, own, energy=1.0)
    target = list(resolved["voxel_size"])[-raw.ndim :] if resolved["voxel_size"] else own
    prepared, out_report = prepare_psf(raw, own, target, energy=energy)
    say(f"  shape:        {shape_text(raw.shape)} {raw.dtype}" + (" (averaged beads)" if args.from_beads else ""))
    sizes = " x ".join(f"{v:g}" for v in own) + f" µm ({origin})" if own else "unknown (give --psf-voxel-size)"
    say(f"  voxel size:   {sizes}")
    fraction = report["pedestal_fraction"]
    say(
        f"  pedestal:     {fmt_number(report['pedestal'])}"
        + (f" ({100 * fraction:.0f} % of the file's sum)" if fraction is not None else "")
        + f", noise {report['noise']:.3g}; {report['hot_pixels']} hot pixels replaced"
    )
    shift = ", ".join(f"{n} {-s:+.2f}" for n, s in zip(names, report["shift_px"]))
    say(f"  centroid:     {shift} px from the box centre")
    _say_fwhm(native, names, own, resolved)
    say(
        f"  energy box:   {shape_text(out_report['shape'])} holds {100 * energy:g} % of the light"
        + (f" (at {' x '.join(f'{v:g}' for v in target)} µm)" if target else "")
    )
    for line in out_report["warnings"]:
        say(f"  warning:      {line}")
    if args.output:
        write_psf(args.output, prepared, target)
        say(f"wrote {args.output} ({shape_text(prepared.shape)} float32, sum 1)")
    if args.png:
        write_sections(args.png, prepared, target)
        say(f"wrote {args.png}")
    return 0


def _average_beads(stack: np.ndarray, voxel: list[float] | None) -> np.ndarray:
    """The PSF distilled from a bead stack, with one line on the beads found and used."""
    from ..solvers.beads import average_beads

    psf, report = average_beads(stack, voxel_size=voxel)
    rejected = ", ".join(f"{n} {why}" for why, n in report["rejected"].items() if n)
    say(
        f"  beads:        {report['found']} found, {report['used']} averaged"
        + (f" (rejected: {rejected})" if rejected else "")
    )
    return psf


def _say_fwhm(psf: np.ndarray, names: tuple[str, ...], own: list[float] | None, resolved: dict[str, Any]) -> None:
    widths = _fwhm(psf)
    theory = None
    if resolved["na"] is not None and resolved["wavelength"] is not None:
        wavelength = resolved["wavelength"]
        if isinstance(wavelength, dict):
            raise InputError("bigdecon psf takes one --wavelength")
        axial, lateral = theoretical_fwhm(
            resolved["na"], wavelength, resolved["refractive_index"] or DEFAULT_REFRACTIVE_INDEX
        )
        theory = {"z": axial, "y": lateral, "x": lateral}
    parts = []
    for i, (name, w) in enumerate(zip(names, widths)):
        if w is None:
            parts.append(f"{name} (does not fall to half in the box)")
            continue
        text = f"{name} {w:.2f} px"
        if own is not None:
            text += f" = {w * own[i]:.3g} µm"
            if theory is not None:
                text += f" (theory {theory[name]:.3g}, x{w * own[i] / theory[name]:.2f})"
        parts.append(text)
    say(f"  FWHM:         {'; '.join(parts)}")


def section_views(psf: np.ndarray, voxel: list[float] | None = None) -> list[tuple[str, np.ndarray, list[float], str]]:
    """The sections :func:`write_sections` draws: ``(name, section, extent, unit)`` each.

    ``extent`` is ``[left, right, bottom, top]`` of the section's pixel edges about
    the PSF's centre voxel, in µm with ``voxel`` (z, y, x or y, x), else in pixels.

    Examples
    --------
    >>> import numpy as np
    >>> from bigdecon.cli.psf import section_views
    >>> [(v[0], v[2], v[3]) for v in section_views(np.ones((5, 3, 3)), [0.3, 0.1, 0.1])][1]
    ('xz', [-0.15, 0.15, -0.75, 0.75], 'µm')
    """
    import numpy as np

    a = np.asarray(psf, dtype=np.float32)
    c = [n // 2 for n in a.shape]
    unit = "µm" if voxel else "px"
    size = [float(v) for v in voxel] if voxel else [1.0] * a.ndim

    def edges(axis: int) -> list[float]:
        return [round((-c[axis] - 0.5) * size[axis], 9), round((a.shape[axis] - c[axis] - 0.5) * size[axis], 9)]

    y, x = a.ndim - 2, a.ndim - 1
    views = [("xy", a[c[0]] if a.ndim == 3 else a, edges(x) + edges(y), unit)]
    if a.ndim == 3:
        views += [("xz", a[:, c[1], :], edges(x) + edges(0), unit), ("yz", a[:, :, c[2]], edges(y) + edges(0), unit)]
    return views


def write_sections(path: str, psf: np.ndarray, voxel: list[float] | None = None) -> None:
    """A PNG of a PSF's sections through its centre (xy; xz and yz for 3-D) on a log scale (1e-4 of the peak up),
    drawn in µm with ``voxel`` (true proportions with anisotropic voxels), else in pixels, with labelled axes."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    peak = float(np.max(psf))
    norm = LogNorm(vmin=peak * 1e-4, vmax=peak)
    from matplotlib.ticker import MaxNLocator

    views = section_views(psf, voxel)
    # Each panel as wide as its section's true proportions at a common height.
    ratios = [max((e[1] - e[0]) / (e[3] - e[2]), 0.6) for _t, _s, e, _u in views]  # room for tick labels
    width = 4 * sum(ratios) + 1.5
    fig, axes = plt.subplots(
        1, len(views), figsize=(width, 4.2), squeeze=False, layout="constrained", width_ratios=ratios
    )
    for ax, (title, section, extent, unit) in zip(axes[0], views):
        ax.xaxis.set_major_locator(MaxNLocator(2))
        shown = np.maximum(section, peak * 1e-5)
        im = ax.imshow(shown, norm=norm, cmap="magma", extent=extent, aspect="equal", origin="lower")
        ax.set_title(f"{title} section (log)")
        ax.set_xlabel(f"{title[0]} ({unit})")
        ax.set_ylabel(f"{title[1]} ({unit})")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="fraction of the light per voxel")
    fig.savefig(path, dpi=100)
    plt.close(fig)
