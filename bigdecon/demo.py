"""``bigdecon demo``: synthetic data with known truth, deconvolved end to end.

Writes two small OME-Zarr inputs (a drifting-filament time-lapse and a volume
of beads and rings, from :mod:`bigdecon.data`), runs the out-of-core pipeline
(:func:`bigdecon.deconvolve`) on each twice, Richardson-Lucy only
(``sparse_iters=0``) and sparse deconvolution with the defaults, and reports
PSNR against the ground truth, with a side-by-side PNG and a line profile.
About a minute on two cores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import data
from .params import PARAMETERS

__all__ = ["run_demo", "psnr"]

# Small enough for two cores in well under two minutes, big enough to look real.
TIMELAPSE_SHAPE = (16, 256, 256)
VOLUME_SHAPE = (32, 128, 128)
FILAMENT_FWHM = 3.0  # pixels, y and x
BEAD_FWHM = (6.0, 3.0, 3.0)  # pixels, z y x: z about twice coarser, as on a real microscope
PIXEL_UM = 0.065  # a 100x objective on a 6.5 um camera pixel
Z_STEP_UM = 0.15


def psnr(image: np.ndarray, truth: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of ``image`` against ``truth``.

    ``image`` is first matched to ``truth`` by a least-squares gain and offset:
    raw data are in photons on a background, deconvolved data in other units,
    and only the agreement in shape should count. The peak is ``truth``'s range.
    """
    x = np.asarray(image, dtype=np.float64).ravel()
    y = np.asarray(truth, dtype=np.float64).ravel()
    design = np.stack([x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    mse = float(np.mean((design @ coef - y) ** 2))
    peak = float(y.max() - y.min()) or 1.0
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)


def _write_input(path: str, array: np.ndarray, axes: str, scale: dict, units: dict, label: str) -> str:
    from .io import OmeZarrWriter, write_block

    writer = OmeZarrWriter(
        path,
        shape=array.shape,
        axes=axes,
        chunks=array.shape,  # one chunk: these are tiny
        dtype="float32",
        scale=scale,
        units=units,
        channels=[{"label": label}],
        overwrite=True,
    )
    write_block(path, tuple(slice(None) for _ in array.shape), array)
    writer.finalize()
    return path


def _read(path: str) -> np.ndarray:
    from .io import open_image

    return np.asarray(open_image(path).data.compute(), dtype=np.float32)


def _profile_row(truth2d: np.ndarray) -> int:
    """The row of a 2-D truth that crosses the most separate structures (middle half only)."""
    h = truth2d.shape[0]
    rows = truth2d[h // 4 : 3 * h // 4]
    on = rows > 0.1 * truth2d.max()
    crossings = np.count_nonzero(on[:, 1:] & ~on[:, :-1], axis=1)
    return h // 4 + int(np.argmax(crossings + 1e-3 * rows.sum(axis=1) / max(rows.sum(), 1e-9)))


def _figure(path: str, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed, and never opens a window
    import matplotlib.pyplot as plt

    names = [
        ("raw", "raw"),
        ("rl", "Richardson-Lucy only"),
        ("sparse", "sparse deconvolution"),
        ("truth", "ground truth"),
    ]
    fig, axes = plt.subplots(
        len(rows), 5, figsize=(20, 4.2 * len(rows)), squeeze=False, gridspec_kw={"width_ratios": [1, 1, 1, 1, 1.4]}
    )
    for r, row in enumerate(rows):
        y = row["profile_row"]
        for c, (key, title) in enumerate(names):
            ax = axes[r, c]
            img = row["images"][key]
            lo, hi = np.percentile(img, [0.5, 99.8])
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            ax.axhline(y, color="tab:orange", lw=0.8, alpha=0.8)
            label = title if key == "truth" else f"{title}\nPSNR {row['psnr'][key]:.1f} dB"
            ax.set_title(label, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(row["title"], fontsize=10)
        ax = axes[r, 4]
        for key, title in names:
            line = row["images"][key][y].astype(np.float64)
            line = (line - line.min()) / (np.ptp(line) or 1.0)
            style = {"truth": dict(color="k", lw=1.0, ls="--"), "raw": dict(color="0.6", lw=1.2)}.get(key, dict(lw=1.4))
            ax.plot(line, label=title, **style)
        ax.set_title(f"line profile along the orange line (row {y}), normalised", fontsize=10)
        ax.set_xlabel("x (pixels)")
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_demo(
    output_dir: str | os.PathLike,
    client: Any = None,
    log: Callable[[str], Any] = print,
    device: str = PARAMETERS["device"].default,
) -> dict:
    """Make synthetic samples, deconvolve them out of core, and report how close they get to the truth.

    Parameters
    ----------
    output_dir
        Folder for the inputs (``*_raw.ome.zarr``, ``*_truth.ome.zarr``),
        outputs (``*_rl.ome.zarr``, ``*_sparse.ome.zarr``) and ``demo.png``.
        Created if needed; the demo's own files in it are replaced.
    client
        A ``distributed.Client`` to run on; by default a local cluster is
        started (and closed) here. Call from a ``if __name__ == "__main__":``
        block in scripts: worker processes re-import the main module.
    log
        Where progress messages go (``print`` by default).
    device
        Where the workers compute (``auto``, ``cpu``, ``gpu``; see :func:`bigdecon.deconvolve`).

    Returns
    -------
    dict
        ``outputs`` (name -> path), ``png``, ``psnr`` (sample -> {raw, rl,
        sparse} in dB) and ``seconds``.
    """
    from . import deconvolve

    t0 = time.perf_counter()
    out = os.path.abspath(os.fspath(output_dir))
    if os.path.exists(out) and not os.path.isdir(out):
        from .errors import InputError

        raise InputError(f"demo output is a file, not a folder: {out}")
    os.makedirs(out, exist_ok=True)
    own_cluster = None
    if client is None:
        from .cluster import make_client

        client, own_cluster = make_client()
    try:
        samples = _samples()
        if device != "gpu":
            t = time.perf_counter()
            _compile_cpu_kernels(samples)
            log(f"CPU kernels ready (Numba, compiled once and cached on disk): {time.perf_counter() - t:.1f} s")
        outputs: dict[str, str] = {}
        rows = []
        results: dict[str, dict[str, float]] = {}
        for s in samples:
            fwhm = " x ".join(f"{v:g}" for v in s["fwhm"])
            log(f"{s['title']}: {'x'.join(map(str, s['raw'].shape))} ({s['axes']}), PSF FWHM {fwhm} px")
            raw_path = _write_input(
                os.path.join(out, f"{s['name']}_raw.ome.zarr"), s["raw"], s["axes"], s["scale"], s["units"], "raw"
            )
            truth_path = _write_input(
                os.path.join(out, f"{s['name']}_truth.ome.zarr"),
                s["truth"],
                s["axes"],
                s["scale"],
                s["units"],
                "ground truth",
            )
            outputs[f"{s['name']}_raw"], outputs[f"{s['name']}_truth"] = raw_path, truth_path
            arrays = {"raw": s["raw"], "truth": s["truth"]}
            runs: tuple[tuple[str, dict[str, Any], str], ...] = (
                ("rl", {"sparse_iters": 0}, "Richardson-Lucy only"),
                ("sparse", {}, "sparse deconvolution (defaults)"),
            )
            for key, extra, what in runs:
                t = time.perf_counter()
                dst = os.path.join(out, f"{s['name']}_{key}.ome.zarr")
                deconvolve(
                    raw_path,
                    dst,
                    fwhm=list(s["fwhm"]),
                    overwrite=True,
                    client=client,
                    device=device,
                    config={"demo": s["name"], "fwhm": list(s["fwhm"]), **extra},
                    **extra,
                )
                outputs[f"{s['name']}_{key}"] = dst
                arrays[key] = _read(dst)
                log(f"  {what}: {time.perf_counter() - t:.1f} s -> {dst}")
            scores = {k: psnr(arrays[k], s["truth"]) for k in ("raw", "rl", "sparse")}
            results[s["name"]] = scores
            log("  PSNR vs truth: " + ", ".join(f"{k} {v:.1f} dB" for k, v in scores.items()))
            view = s["view"]
            images = {k: view(v) for k, v in arrays.items()}
            rows.append(
                {"title": s["title"], "images": images, "psnr": scores, "profile_row": _profile_row(images["truth"])}
            )
        png = os.path.join(out, "demo.png")
        _figure(png, rows)
    finally:
        if own_cluster is not None:
            from .cluster import close

            close(client, own_cluster)
    seconds = time.perf_counter() - t0
    log(f"Side-by-side figure: {png}")
    log(f"Open the results:    napari --plugin napari-ome-zarr {outputs['filaments_sparse']}")
    log(f"                     (and {outputs['filaments_raw']}, {outputs['filaments_truth']}, ... in {out})")
    log(f"Demo finished in {seconds:.0f} s")
    return {"outputs": outputs, "png": png, "psnr": results, "seconds": seconds}


def _compile_cpu_kernels(samples: list[dict[str, Any]]) -> None:
    """Run the method once on a corner of each sample, so that the times reported are the runs'.

    The first call of the fused CPU kernels compiles them (about 40 s on two cores);
    Numba caches the result on disk, and the workers load it from there.
    """
    from .pipeline import sparse_deconvolve

    for s in samples:
        corner = s["raw"][tuple(slice(0, min(n, 24)) for n in s["raw"].shape)]
        sparse_deconvolve(corner, fwhm=list(s["fwhm"]), sparse_iters=2, deconv_iters=1)


def _samples() -> list[dict[str, Any]]:
    raw_t, truth_t = data.filaments_timelapse(TIMELAPSE_SHAPE, fwhm=FILAMENT_FWHM, seed=0)
    raw_v, truth_v = data.beads_volume(VOLUME_SHAPE, fwhm=BEAD_FWHM, seed=1)
    mid = TIMELAPSE_SHAPE[0] // 2
    return [
        {
            "name": "filaments",
            "title": f"filament time-lapse, frame {mid}",
            "raw": raw_t,
            "truth": truth_t,
            "axes": "tyx",
            "fwhm": (FILAMENT_FWHM,),
            "scale": {"t": 1.0, "y": PIXEL_UM, "x": PIXEL_UM},
            "units": {"t": "second", "y": "micrometer", "x": "micrometer"},
            "view": lambda a: a[mid],
        },
        {
            "name": "beads",
            "title": "beads and rings volume, max projection over z",
            "raw": raw_v,
            "truth": truth_v,
            "axes": "zyx",
            "fwhm": BEAD_FWHM,
            "scale": {"z": Z_STEP_UM, "y": PIXEL_UM, "x": PIXEL_UM},
            "units": {"z": "micrometer", "y": "micrometer", "x": "micrometer"},
            "view": lambda a: a.max(axis=0),
        },
    ]
