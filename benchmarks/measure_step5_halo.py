"""How deep a halo 3-D step 5 needs on (z, y, x) blocks, and how the accelerated RL picks alpha.

    python benchmarks/measure_step5_halo.py            # ~10-20 min on 2 cores
    python benchmarks/measure_step5_halo.py --quick    # the Gaussian PSF only

    python benchmarks/measure_step5_halo.py --boundary edge   # the padded real-FFT path

Pure NumPy. A volume of beads and filaments is blurred with the PSF and given
Poisson noise; each solver runs once on the whole volume and once per block:
the block grown by the halo, clipped at the volume's faces, its interior kept.
``--boundary auto`` (default, what the solvers do by default): a symmetric PSF
takes the mirror path (unpadded DCT-II), and a block is solved with no padding
at all (the mirror at a data-set face is the whole volume's mirror); a
measured-style PSF takes the padded path. ``--boundary edge``: faces padded by
the PSF's half-support (edge replicate) and a block padded only on the sides
that touch a face (``pad=((lo, hi), ...)``). Printed:
max |block - whole| / max(whole) over the measured blocks, per solver, PSF,
iteration count and halo (in units of the PSF half-support and in pixels);
then the image quality of plain / adaptive / scheduled RL against the truth;
then the peak memory of one block task per padded voxel.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import bigdecon  # noqa: E402
from bigdecon.solvers.landweber import landweber  # noqa: E402
from bigdecon.solvers.richardson_lucy import (  # noqa: E402
    boundary_rule,
    deconv_halo,
    psf_half_support,
    richardson_lucy,
)
from bigdecon.solvers.wiener_butterworth import rl_wiener_butterworth  # noqa: E402


def measured_style_psf(shape=(33, 65, 65), fwhm_xy=3.0, fwhm_z=6.0, seed=0) -> np.ndarray:
    """A realistic measured-looking 3-D PSF: asymmetric in z, heavy lateral and axial tails.

    Per plane: a Gaussian core that widens with defocus ``|z|`` (faster below
    focus than above: spherical aberration) plus 4% of a Moffat (power-law)
    halo; plane energies: a Gaussian sheet profile plus 15% of a Lorentzian with
    a longer tail on the +z side; a weak noise floor as a bead image has, clipped
    at 0, then normalised to sum 1.
    """
    nz, ny, nx = shape
    z = np.arange(nz) - nz // 2
    yy, xx = np.meshgrid(np.arange(ny) - ny // 2, np.arange(nx) - nx // 2, indexing="ij")
    r2 = (yy**2 + xx**2).astype(np.float64)
    s0 = fwhm_xy / 2.3548
    sz = fwhm_z / 2.3548
    out = np.zeros(shape, np.float64)
    for k, zk in enumerate(z):
        zr = 3.0 if zk < 0 else 6.0  # defocus widens faster on one side
        s = s0 * np.sqrt(1.0 + (zk / zr) ** 2)
        core = np.exp(-r2 / (2 * s * s))
        core /= core.sum()
        moffat = (1.0 + r2 / (2.0 * s) ** 2) ** -1.5
        moffat /= moffat.sum()
        plane = 0.96 * core + 0.04 * moffat
        gamma = 2.0 * sz * (1.0 if zk < 0 else 2.5)  # axial tail longer on +z
        energy = 0.85 * np.exp(-(zk**2) / (2 * sz * sz)) + 0.15 / (1.0 + (zk / gamma) ** 2)
        out[k] = energy * plane
    out /= out.max()
    out += np.random.default_rng(seed).normal(0, 2e-5, shape)  # camera noise of a bead stack
    out = np.clip(out, 0, None)
    return (out / out.sum()).astype(np.float32)


def phantom(shape, psf, seed=0, photons=200.0):
    """(truth, noisy image): beads and random filaments, blurred, Poisson noise."""
    from scipy import ndimage
    from scipy.signal import fftconvolve

    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.float32)
    n = truth.size // 2000
    idx = tuple(rng.integers(0, s, n) for s in shape)
    truth[idx] = rng.uniform(0.3, 1.0, n)
    for _ in range(max(4, truth.size // 40000)):  # filaments: random 3-D polylines
        p = rng.uniform(0, 1, 3) * np.array(shape)
        d = rng.normal(size=3)
        for _ in range(int(max(shape) * 1.5)):
            d = d + 0.3 * rng.normal(size=3)
            d /= np.linalg.norm(d)
            p = p + d * np.array([0.5, 1.0, 1.0])
            q = np.round(p).astype(int)
            if np.all(q >= 0) and np.all(q < shape):
                truth[tuple(q)] = 0.5
    truth = ndimage.maximum_filter(truth, size=(1, 2, 2)) * 0.5 + truth * 0.5
    blurred = np.clip(fftconvolve(truth, psf, mode="same"), 0, None) + 0.02  # a small background
    noisy = rng.poisson(blurred * photons) / photons
    return truth, noisy.astype(np.float32)


def grow(a0, a1, halo, n):
    return max(a0 - halo, 0), min(a1 + halo, n)


def blockwise(solve, image, block, halo, half, which):
    """Max over ``which`` blocks of |block result - whole| is computed by the caller; returns {index: interior}."""
    out = {}
    for b in which:
        lo = [bi * bs for bi, bs in zip(b, block)]
        hi = [min(lo_ + bs, n) for lo_, bs, n in zip(lo, block, image.shape)]
        g = [grow(a0, a1, h, n) for a0, a1, h, n in zip(lo, hi, halo, image.shape)]
        pad = tuple((hs if g0 == 0 else 0, hs if g1 == n else 0) for (g0, g1), hs, n in zip(g, half, image.shape))
        res = solve(image[tuple(slice(g0, g1) for g0, g1 in g)], pad)
        inner = tuple(slice(a0 - g0, a1 - g0) for a0, a1, (g0, _) in zip(lo, hi, g))
        out[b] = (tuple(slice(a0, a1) for a0, a1 in zip(lo, hi)), res[inner])
    return out


# Face rule of every solver call (--boundary); "auto" is the solvers' default.
BOUNDARY = {"rule": "auto"}

SOLVERS = {
    "RL plain": lambda img, psf, it, pad: richardson_lucy(
        img, psf, it, accelerate=False, pad=pad, boundary=BOUNDARY["rule"]
    ),
    "RL adaptive alpha": lambda img, psf, it, pad: richardson_lucy(
        img, psf, it, accelerate=True, pad=pad, boundary=BOUNDARY["rule"]
    ),
    "RL schedule alpha": lambda img, psf, it, pad: richardson_lucy(
        img, psf, it, accelerate=True, pad=pad, alpha="schedule", boundary=BOUNDARY["rule"]
    ),
    "Landweber": lambda img, psf, it, pad: landweber(img, psf, it, pad=pad, boundary=BOUNDARY["rule"]),
    # Wiener-Butterworth (deconv_type 3): the mirror path for a symmetric PSF, else edge padding by
    # the PSF's half-support on every face of the whole volume, as step 5 pads it (deconv_pad).
    "WB": lambda img, psf, it, pad: rl_wiener_butterworth(
        img, psf, it, pad=psf_half_support(psf.shape) if pad is None else pad, boundary=BOUNDARY["rule"]
    ),
}


KIND = {
    "RL plain": "rl",
    "RL adaptive alpha": "rl",
    "RL schedule alpha": "rl-schedule",
    "Landweber": "landweber",
    "WB": "wb",
}


def energy_radius(psf, fraction=0.999):
    """Per axis, the radius around the centre that holds ``fraction`` of the PSF's marginal energy."""
    out = []
    for a in range(psf.ndim):
        prof = psf.sum(axis=tuple(i for i in range(psf.ndim) if i != a))
        c = len(prof) // 2
        r = next(r for r in range(c + 1) if prof[max(0, c - r) : c + r + 1].sum() >= fraction * prof.sum())
        out.append(r)
    return tuple(out)


def halo_table(cases, log):
    rows = []
    for c in cases:
        psf, image = c["psf"], c["image"]
        half_support = psf_half_support(psf.shape)
        half = half_support
        if boundary_rule(3, psf, BOUNDARY["rule"]) == "mirror":
            half = (0, 0, 0)  # the mirror path pads nothing: blocks get no pad (and it would be ignored)
        log(
            f"  {c['label']}: half-support {half}, radius of 99% / 99.9% / 99.99% of the energy "
            f"{energy_radius(psf, 0.99)} / {energy_radius(psf, 0.999)} / {energy_radius(psf, 0.9999)}"
        )
        nblocks = [int(np.ceil(n / b)) for n, b in zip(image.shape, c["block"])]
        which = c.get("which") or list(itertools.product(*[range(k) for k in nblocks]))
        for it in c["iterations"]:
            for name in c["solvers"]:
                solver = SOLVERS[name]
                whole = solver(image, psf, it, None)
                peak = float(whole.max())
                for m in c["halo_factors"]:
                    halo = tuple(int(np.ceil(m * h)) for h in psf_half_support(psf.shape))
                    t0 = time.perf_counter()
                    parts = blockwise(
                        lambda a, pad, solver=solver, psf=psf, it=it: solver(a, psf, it, pad),
                        image,
                        c["block"],
                        halo,
                        half_support if name == "WB" else half,
                        which,
                    )
                    err = max(float(np.abs(r - whole[s]).max()) for s, r in parts.values()) / peak
                    inner = [
                        float(np.abs(r - whole[s]).max()) / peak
                        for s, r in parts.values()
                        if all(sl.start - h > 0 and sl.stop + h < n for sl, h, n in zip(s, halo, image.shape))
                    ]
                    inner_err = max(inner) if inner else float("nan")
                    row = dict(
                        psf=c["label"], solver=name, iterations=it, halo_factor=m, halo=halo, error=err, inner=inner_err
                    )
                    rows.append(row)
                    log(
                        f"  {c['label']:<28} {name:<18} it {it:>2}  halo {m:>4} x half = {halo}: {err:.1e}"
                        f" (blocks off the faces: {inner_err:.1e}; {time.perf_counter() - t0:.0f} s, {len(which)} blocks)"
                    )
                try:
                    rule = deconv_halo(psf.shape, it, KIND[name])
                except ValueError:  # a kind the rule does not know yet (being measured)
                    continue
                parts = blockwise(
                    lambda a, pad, solver=solver, psf=psf, it=it: solver(a, psf, it, pad),
                    image,
                    c["block"],
                    rule,
                    half_support if name == "WB" else half,
                    which,
                )
                err = max(float(np.abs(r - whole[s]).max()) for s, r in parts.values()) / peak
                rows.append(dict(psf=c["label"], solver=name, iterations=it, halo_factor="rule", halo=rule, error=err))
                log(f"  {c['label']:<28} {name:<18} it {it:>2}  deconv_halo {rule}: {err:.1e}")
    return rows


def quality(truth, image, psf, iterations, log):
    """Pearson and relative RMS (after one least-squares factor) against the truth."""
    rows = []
    t = truth.astype(np.float64).ravel()
    for it in iterations:
        for name in ("RL plain", "RL adaptive alpha", "RL schedule alpha"):
            out = SOLVERS[name](image, psf, it, None).astype(np.float64).ravel()
            k = float(out @ t / (out @ out))
            rel = float(np.sqrt(np.mean((k * out - t) ** 2)) / np.sqrt(np.mean(t**2)))
            r = float(np.corrcoef(out, t)[0, 1])
            rows.append(dict(solver=name, iterations=it, pearson=r, rel_rms=rel))
            log(f"  quality {name:<18} it {it:>2}: Pearson {r:.4f}, rel. RMS {rel:.4f}")
    return rows


_MEM_CODE = """
import resource, sys, numpy as np
sys.path.insert(0, {root!r})
from bigdecon.solvers.richardson_lucy import boundary_rule, richardson_lucy, padded_geometry
from bigdecon.solvers.landweber import landweber
from bigdecon import gaussian_psf
shape = {shape}; kind = {kind!r}; boundary = {boundary!r}
psf = gaussian_psf((6.0, 3.0, 3.0))
if {asymmetric!r}:  # an off-centre copy: a complex OTF, as a measured PSF has (the edge path)
    psf = np.roll(np.pad(psf, ((0, 0), (0, 0), (0, 2))), 1, axis=2)[:, :, :15]
if boundary_rule(3, psf, boundary) == "mirror":
    geo = [(0, 0, n) for n in shape]  # transformed as it is
else:
    geo = padded_geometry(shape, psf.shape, None)
base = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() // 1024  # resident now, KiB
try:  # forget the imports' peak (Linux): else a small block's peak hides below it
    open("/proc/self/clear_refs", "w").write("5")
except OSError:
    pass
img = np.random.default_rng(0).random(shape, dtype=np.float32) + np.float32(0.1)
if kind == "landweber":
    landweber(img, psf, 3, boundary=boundary)
else:
    richardson_lucy(img, psf, 3, accelerate=kind != "plain", alpha="adaptive" if kind == "adaptive" else "schedule",
                    boundary=boundary)
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
peak = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("MEM", (peak - base) * 1024, int(np.prod([g[2] for g in geo])), img.nbytes, base * 1024)
"""


def memory_table(shapes, log, asymmetric=False):
    rows = []
    for shape in shapes:
        for kind in ("plain", "schedule", "adaptive", "landweber"):
            code = _MEM_CODE.format(
                root=str(HERE.parent), shape=tuple(shape), kind=kind, boundary=BOUNDARY["rule"], asymmetric=asymmetric
            )
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEM ")][-1].split()
            extra, padded, _in_bytes, _base = int(line[1]), int(line[2]), int(line[3]), int(line[4])
            # The baseline is taken before the input block exists: it is counted in ``extra``.
            per_voxel = extra / padded
            rows.append(dict(shape=tuple(shape), kind=kind, padded_voxels=padded, bytes_per_padded_voxel=per_voxel))
            log(
                f"  memory {str(tuple(shape)):<16} {kind:<9}: {extra / 2**20:7.0f} MiB peak above "
                f"start, {per_voxel:.1f} B / padded voxel ({per_voxel / 4:.1f} float32 arrays)"
            )
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Gaussian PSF only, fewer halos")
    ap.add_argument("--only", default="halo,quality,memory", help="sections to run (comma-separated)")
    ap.add_argument("--psf", default="gaussian,measured", help="PSFs of the halo table (comma-separated)")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--boundary", default="auto", choices=("auto", "mirror", "edge"), help="solvers' face rule")
    ap.add_argument("--solvers", default=",".join(SOLVERS), help="solvers of the halo table (comma-separated)")
    ap.add_argument("--halos", default=None, help="halo factors, e.g. 1,2,3 (default 1,2,3,4; --quick 2,3)")
    ap.add_argument("--measured-iterations", default="7,20", help="iteration counts of the measured-PSF rows")
    ap.add_argument("--iterations", default="7,20", help="iteration counts of the Gaussian-PSF rows")
    ap.add_argument(
        "--memory-psf", default="gaussian", choices=("gaussian", "asymmetric"), help="PSF of the memory table"
    )
    args = ap.parse_args(argv)
    BOUNDARY["rule"] = args.boundary
    chosen = tuple(n.strip() for n in args.solvers.split(","))
    factors = tuple(float(m) for m in args.halos.split(",")) if args.halos else None

    def log(msg):
        print(msg, flush=True)

    sections = set(args.only.split(","))
    results: dict = {}
    gauss = bigdecon.gaussian_psf((6.0, 3.0, 3.0))
    truth_g, image_g = phantom((64, 192, 192), gauss, seed=1)
    if "halo" in sections:
        cases = []
        if "gaussian" in args.psf:
            cases.append(
                dict(
                    label="Gaussian FWHM 6,3,3 (25x15x15)",
                    psf=gauss,
                    image=image_g,
                    block=(16, 64, 64),
                    which=[(0, 0, 0), (1, 1, 1), (3, 2, 2), (2, 1, 0)],
                    iterations=tuple(int(i) for i in args.iterations.split(",")),
                    halo_factors=factors or ((1, 2, 3, 4) if not args.quick else (2, 3)),
                    solvers=chosen,
                )
            )
        if not args.quick and "measured" in args.psf:
            meas = measured_style_psf()
            _t, image_m = phantom((96, 224, 224), meas, seed=2)
            cases.append(
                dict(
                    label="measured-style 33x65x65",
                    psf=meas,
                    image=image_m,
                    block=(16, 64, 64),
                    # a corner block (two faces in every axis' reach) and an interior one
                    which=[(0, 0, 0), (2, 1, 1)],
                    iterations=tuple(int(i) for i in args.measured_iterations.split(",")),
                    halo_factors=(1, 1.5, 2, 3),
                    solvers=tuple(n for n in chosen if n in ("RL schedule alpha", "Landweber", "WB"))
                    or ("RL schedule alpha", "Landweber"),
                )
            )
        log(f"Halo: max |block - whole| / max(whole), boundary {args.boundary!r}")
        results["halo"] = halo_table(cases, log)
    if "quality" in sections:
        log("Quality against the truth (Gaussian PSF, 64x192x192)")
        results["quality"] = quality(truth_g, image_g, gauss, (7, 20), log)
    if "memory" in sections:
        log("Memory of one block task (3 iterations, peak RSS in a fresh process)")
        results["memory"] = memory_table([(64, 256, 256), (96, 384, 384)], log, args.memory_psf == "asymmetric")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
