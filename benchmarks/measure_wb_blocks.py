"""Can 3-D Wiener-Butterworth (deconv_type 3) run on (z, y, x) blocks with a halo, like RL?

    python benchmarks/measure_wb_blocks.py          # ~3 min on 2 shared cores

Today 3-D step 5 with ``deconv_type=3`` runs on whole volumes (bigdecon.planner).
This measures, on the Gaussian-PSF phantom of ``measure_step5_halo.py`` (64 x 192
x 192, FWHM 6, 3, 3 px, blocks of 16 x 64 x 64: a corner, an interior and two
face blocks), max |block - whole| / max(whole) for halos of 1-6 PSF half-supports:

* ``edge``: :func:`bigdecon.solvers.wiener_butterworth.rl_wiener_butterworth` as
  step 5 calls it (edge padding by the half-support, padded to a fast FFT length,
  periodic transform), a block padded only at the data set's faces;
* ``mirror``: a prototype on the solvers' mirror (DCT-II) convolver, the path
  Richardson-Lucy takes for a symmetric 3-D PSF: the same back projector
  ``W M / (W(0) M(0))`` evaluated at the DCT frequencies ``m / 2N`` from the
  mirror eigenvalues of the PSF, no padding (a block's face mirror at a data-set
  face is the whole volume's).

Also the Pearson r of both against the truth, to show the prototype's quality.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import measure_step5_halo as H  # noqa: E402

import bigdecon  # noqa: E402
from bigdecon.solvers._dct import mirror_eigenvalues  # noqa: E402
from bigdecon.solvers.richardson_lucy import FLOOR, padded_problem, psf_half_support  # noqa: E402
from bigdecon.solvers.wiener_butterworth import ALPHA, BETA, ORDER, _cutoffs, rl_wiener_butterworth  # noqa: E402


def mirror_backprojector(psf, shape, alpha=ALPHA, beta=BETA, order=ORDER) -> np.ndarray:
    """The Wiener-Butterworth back projector as DCT-II eigenvalues on ``shape`` (beta as a gain)."""
    h = mirror_eigenvalues(psf, shape).astype(np.float64)
    h /= np.abs(h).max()
    w = h / (h * h + alpha)
    kc = _cutoffs(psf, None)
    gains = []
    for a, n in enumerate(shape):
        line = np.abs(w).max(axis=tuple(i for i in range(len(shape)) if i != a))
        f = np.arange(n) / (2.0 * n)
        gains.append(float(np.interp(min(kc[a], f[-1]), f, line)))
    eps2 = max((sum(gains) / len(gains) / beta) ** 2 - 1.0, 0.0)
    s = sum(
        ((np.arange(n) / (2.0 * n)) / kc[a]).reshape([-1 if i == a else 1 for i in range(len(shape))]) ** 2
        for a, n in enumerate(shape)
    )
    b = w / np.sqrt(1.0 + eps2 * s**order)
    return (b / b.flat[0]).astype(np.float32)


def wb_mirror(image, psf, iterations):
    f, conv, _ = padded_problem(image, psf, None, "mirror")
    b = mirror_backprojector(psf, f.shape).reshape(conv.lam.shape)
    x = f
    for _ in range(iterations):
        r = conv.forward(x)
        np.maximum(r, FLOOR, out=r)
        np.divide(f, r, out=r)
        u = conv.dct.apply(r.reshape(conv.shape3), b, conv.coupled).reshape(r.shape)
        u *= x
        x = np.maximum(u, FLOOR, out=u)
    return np.maximum(x, 0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", default="1,2,3")
    ap.add_argument("--halos", default="1,2,3,4,5,6")
    args = ap.parse_args(argv)
    psf = bigdecon.gaussian_psf((6.0, 3.0, 3.0))
    truth, image = H.phantom((64, 192, 192), psf, seed=1)
    half = psf_half_support(psf.shape)
    block, which = (16, 64, 64), [(0, 0, 0), (1, 1, 1), (3, 2, 2), (2, 1, 0)]
    solvers = {
        "edge": lambda a, it, pad: rl_wiener_butterworth(a, psf, it, pad=half if pad is None else pad),
        "mirror": lambda a, it, pad: wb_mirror(a, psf, it),
    }
    t = truth.astype(np.float64).ravel()
    for it in (int(i) for i in args.iterations.split(",")):
        for name, solve in solvers.items():
            t0 = time.perf_counter()
            whole = solve(image, it, None)
            r = float(np.corrcoef(whole.astype(np.float64).ravel(), t)[0, 1])
            print(f"{name:6s} it {it}: Pearson {r:.4f} ({time.perf_counter() - t0:.1f} s whole)", flush=True)
            peak = float(whole.max())
            for m in (float(v) for v in args.halos.split(",")):
                halo = tuple(int(np.ceil(m * h)) for h in half)
                parts = H.blockwise(
                    lambda a, pad, solve=solve, it=it: solve(a, it, pad), image, block, halo, half, which
                )
                errs = [float(np.abs(v - whole[s]).max()) / peak for s, v in parts.values()]
                print(f"{name:6s} it {it} halo {m:g} x half = {halo}: {max(errs):.1e}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
