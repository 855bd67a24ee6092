"""Skewed-space vs deskew-first deconvolution on a synthetic lattice light-sheet stack.

The forward model is written here, independently of bigdecon: a 3-D phantom
(beads and curved filaments) on the sample (deskewed) grid, blurred by a
light-sheet PSF built here (a Gaussian sheet along z times a Gaussian
detection PSF elongated along z, by ``scipy.ndimage.gaussian_filter``), then
sampled on the skewed grid of a stage scan (plane k at x + k*dz*cos(theta)/dx)
with ``scipy.ndimage.map_coordinates`` (cubic splines), scaled to photons with
Poisson and Gaussian read noise. bigdecon then gets the skewed stack and the
PSF size in the sample frame (``fwhm`` z, y, x), and either deconvolves the
stack as recorded with the PSF sheared into its frame, then deskews, or
deskews first and deconvolves the deskewed volume.

Printed: Pearson correlation with the truth over the voxels the scan covers,
voxels each run deconvolves, and seconds (2-core VM, one process, no cluster).

    python benchmarks/bench_deskew.py            # 40 x 96 x 96 planes, 31.5 degrees
    python benchmarks/bench_deskew.py --quick
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

import numpy as np
from scipy import ndimage

ANGLE, DZ, DX = 31.5, 0.4, 0.104  # a classic LLSM: stage step 0.4 um, 104 nm pixels
FWHM = (5.0, 2.5, 2.5)  # the Gaussian light-sheet PSF in sample pixels (z on the deskewed grid)
# --psf optics: a paraxial Born-Wolf detection PSF (written here) times a Gaussian sheet;
# bigdecon gets the optics and builds its own lightsheet model (a model mismatch, as in practice).
OPTICS = dict(na=1.1, wavelength=0.52, refractive_index=1.33, sheet_thickness=1.0)


def born_wolf_sheet(half: tuple[int, int], z_step: float) -> np.ndarray:
    """Paraxial Born-Wolf widefield intensity times a Gaussian sheet along z, (2hz+1, 2hr+1, 2hr+1)."""
    from scipy.special import j0

    na, wl, n, sheet = (OPTICS[k] for k in ("na", "wavelength", "refractive_index", "sheet_thickness"))
    k = 2 * np.pi / wl
    hz, hr = half
    z = np.arange(-hz, hz + 1)[:, None] * z_step
    r_max = math.sqrt(2) * hr * DX
    r = np.linspace(0, r_max, 400)[None, :]
    rho = (np.arange(256) + 0.5) / 256
    # amplitude(z, r) = 2 * integral_0^1 J0(k NA r rho) exp(-i k z NA^2 rho^2 / (2 n)) rho drho (midpoint rule)
    phase = np.exp(-0.5j * k * z[:, :, None] * na**2 * rho**2 / n)
    amplitude = 2 * (j0(k * na * r[:, :, None] * rho) * phase * rho).sum(axis=2) / rho.size
    radial = np.abs(amplitude) ** 2  # (z, r)
    yy, xx = np.meshgrid(np.arange(-hr, hr + 1) * DX, np.arange(-hr, hr + 1) * DX, indexing="ij")
    rr = np.hypot(yy, xx).ravel()
    psf = np.stack([np.interp(rr, r[0], radial[i]).reshape(yy.shape) for i in range(z.shape[0])])
    psf *= np.exp(-4 * math.log(2) * (z[:, :, None] / sheet) ** 2)
    return psf / psf.sum()


def shear() -> float:
    return DZ * math.cos(math.radians(ANGLE)) / DX


def phantom(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """Beads and curved filaments on the sample grid (z, y, x)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    truth = np.zeros(shape, np.float32)
    for _ in range(nz * ny * nx // 4000):
        z, y, x = (rng.integers(2, n - 2) for n in shape)
        truth[z, y, x] += rng.uniform(0.5, 1.0)
    for _ in range(max(2, nx // 24)):
        t = np.linspace(0, 1, 4 * nx)
        z = rng.uniform(3, nz - 3) + rng.uniform(-3, 3) * np.sin(2 * np.pi * t * rng.uniform(0.5, 2))
        y = rng.uniform(5, ny - 5) + rng.uniform(-8, 8) * np.sin(2 * np.pi * t * rng.uniform(0.5, 2) + 1)
        x = t * (nx - 1)
        ok = (z >= 0) & (z < nz) & (y >= 0) & (y < ny)
        truth[z[ok].astype(int), y[ok].astype(int), x[ok].astype(int)] = rng.uniform(0.3, 0.7)
    return truth


def real_truth(path: str, shape: tuple[int, int, int]) -> np.ndarray:
    """A real volume (e.g. ../shared/realdata/cells3d_nuclei/nuclei.tif) as the object, its voxels taken
    as the sample grid: real structure instead of beads and lines (cut, or padded with zeros, to ``shape``)."""
    import tifffile

    volume = tifffile.imread(path).astype(np.float32)
    volume = np.clip(volume - np.percentile(volume, 50), 0, None)
    out = np.zeros(shape, np.float32)
    part = volume[: shape[0], : shape[1], : shape[2]]
    out[: part.shape[0], : part.shape[1], : part.shape[2]] = part
    return out / out.max()


def forward(truth: np.ndarray, nx_raw: int, photons: float, seed: int, model: str) -> np.ndarray:
    """Blur in the sample frame, sample on the skewed grid, add noise: the stack as recorded."""
    if model == "optics":
        from scipy.signal import fftconvolve

        psf = born_wolf_sheet((12, 12), DZ * math.sin(math.radians(ANGLE)))
        blurred = np.clip(fftconvolve(truth.astype(np.float64), psf, mode="same"), 0, None)
    else:
        sigma = [f / (2 * math.sqrt(2 * math.log(2))) for f in FWHM]
        blurred = ndimage.gaussian_filter(truth.astype(np.float64), sigma, mode="constant")
    nz, ny, _ = truth.shape
    k, y, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx_raw), indexing="ij")
    coords = np.stack([k, y, i + k * shear()]).astype(np.float64)
    skewed = ndimage.map_coordinates(blurred, coords, order=3, mode="constant")
    rng = np.random.default_rng(seed)
    expected = np.clip(skewed / skewed.max(), 0, None) * photons + 5
    return (rng.poisson(expected) + rng.normal(0, 2, expected.shape)).astype(np.float32)


def covered(shape: tuple[int, int, int], nx_raw: int) -> np.ndarray:
    """Voxels of the deskewed grid some skewed plane samples (the voids excluded)."""
    nz, ny, nx = shape
    j = np.arange(nx)[None, :]
    k = np.arange(nz)[:, None]
    inside = (j >= k * shear() + 1) & (j <= k * shear() + nx_raw - 2)
    return np.broadcast_to(inside[:, None, :], shape)


def pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask].ravel(), b[mask].ravel())[0, 1])


def run(
    nz: int,
    ny: int,
    nx_raw: int,
    photons: float,
    seed: int,
    folder: str,
    figure: str | None = None,
    model: str = "gaussian",
    real: str | None = None,
    only: str | None = None,
) -> list[tuple[str, float, int, float]]:
    import bigdecon
    from bigdecon.io import open_image, write_image

    # Compile the fused CPU kernels (Numba) before anything is timed.
    bigdecon.sparse_deconvolve(np.ones((4, 32, 32), np.float32), fwhm=2, sparse_iters=2)
    width = nx_raw + math.ceil((nz - 1) * shear())
    truth = phantom((nz, ny, width + 8), seed) if real is None else real_truth(real, (nz, ny, width + 8))
    raw = forward(truth, nx_raw, photons, seed + 1, model)
    units = {a: "micrometer" for a in "zyx"}
    src = write_image(os.path.join(folder, "raw.ome.zarr"), raw, "zyx", scale={"z": DZ, "y": DX, "x": DX}, units=units)
    truth = truth[:, :, :width]
    mask = covered(truth.shape, nx_raw)
    # The truth blurred by the PSF only: how far the deconvolutions get towards it.
    rows = []
    psf = {"psf_model": "lightsheet", **OPTICS} if model == "optics" else {"fwhm": FWHM}
    common = dict(skew_angle=ANGLE, sparse_iters=0, background=0, **psf)
    t0 = time.perf_counter()
    info = bigdecon.deconvolve(
        src, os.path.join(folder, "deskewed.ome.zarr"), skew_angle=ANGLE, sparse_iters=0, background=0, deconv_type=0
    )
    rows.append(("raw, deskewed", time.perf_counter() - t0, 0, os.path.join(folder, "deskewed.ome.zarr")))
    for name, extra in [
        ("skewed space, RL", {"deskew_first": False}),
        ("deskew first, RL", {"deskew_first": True}),
        ("skewed space, WB", {"deskew_first": False, "deconv_type": 3}),
        ("deskew first, WB", {"deskew_first": True, "deconv_type": 3}),
        ("skewed space, sparse + RL", {"sparse_iters": 30, "deskew_first": False}),
        ("deskew first, sparse + RL", {"sparse_iters": 30, "deskew_first": True}),
    ]:
        if only is not None and only not in name:
            continue
        out = os.path.join(folder, name.replace(" ", "").replace(",", "_").replace("+", "") + ".ome.zarr")
        t0 = time.perf_counter()
        info = bigdecon.deconvolve(src, out, **{**common, **extra})
        rows.append((name, time.perf_counter() - t0, int(info["voxels_processed"]), out))
    table = []
    images = {"raw, as recorded": raw}
    for name, seconds, voxels, path in rows:
        image = open_image(path).data.compute()
        images[name] = image
        table.append((name, pearson(image, truth, mask), voxels, seconds))
    images["truth"] = truth
    if figure:
        save_figure(images, figure)
    return table


def save_figure(images: dict[str, np.ndarray], path: str) -> None:
    """x-z maximum projections (over y) of the raw stack, the deskewed raw, the deconvolutions and the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [
        "raw, as recorded",
        "raw, deskewed",
        "skewed space, RL",
        "skewed space, sparse + RL",
        "deskew first, RL",
        "truth",
    ]
    aspect = DZ * math.sin(math.radians(ANGLE)) / DX  # deskewed z step / pixel size
    fig, grid = plt.subplots(3, 2, figsize=(11, 5.6), constrained_layout=True)
    axes = grid.ravel()
    width = images["truth"].shape[2]
    for ax, name in zip(axes, shown):
        mip = images[name].max(axis=1)
        ax.imshow(
            mip,
            cmap="magma",
            aspect=aspect,
            extent=(0, mip.shape[1], mip.shape[0], 0),
            vmin=0,
            vmax=np.percentile(mip, 99.8),
        )
        ax.set_xlim(0, width)
        ax.set_title(
            name + (" (planes as the stage scan recorded them)" if name == "raw, as recorded" else ""), fontsize=9
        )
        ax.set_ylabel("z")
        ax.set_yticks([])
    for ax in axes[-2:]:
        ax.set_xlabel("x (pixels)")
    fig.suptitle("x-z maximum projections over y: a skewed LLSM phantom (31.5 deg), bigdecon", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="24 x 48 x 64 planes")
    parser.add_argument("--photons", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--planes", type=int, default=None, help="planes of the scan (default 40; 24 with --quick)")
    parser.add_argument("--figure", default=None, help="save x-z projections to this PNG")
    parser.add_argument(
        "--psf", choices=("gaussian", "optics"), default="gaussian", help="the forward model's light-sheet PSF"
    )
    parser.add_argument("--real", default=None, help="a real (z, y, x) TIFF as the object instead of the phantom")
    parser.add_argument("--only", default=None, help="only the runs whose name holds this text, e.g. WB")
    args = parser.parse_args()
    nz, ny, nx = (24, 48, 64) if args.quick else (40, 96, 96)
    nz = args.planes or nz
    with tempfile.TemporaryDirectory() as folder:
        table = run(nz, ny, nx, args.photons, args.seed, folder, args.figure, args.psf, args.real, args.only)
    print(
        f"skewed LLSM {'phantom' if args.real is None else os.path.basename(args.real)} {nz} x {ny} x {nx} (z, y, x as recorded), {ANGLE} deg, dz {DZ}, dx {DX}, "
        f"{shear():.3f} px per plane, {args.photons:g} photons, "
        + (f"Gaussian PSF FWHM {FWHM} sample px" if args.psf == "gaussian" else f"Born-Wolf x sheet PSF {OPTICS}")
    )
    print(f"{'run':28s} {'Pearson':>8s} {'voxels deconvolved':>19s} {'seconds':>8s}")
    for name, r, voxels, seconds in table:
        print(f"{name:28s} {r:8.4f} {voxels:19d} {seconds:8.2f}")


if __name__ == "__main__":
    main()
