"""Choose deconvolution parameters by a held-out loss measured on the data.

The loss is self-supervised and J-invariant (Batson & Royer 2019, "Noise2Self"):

1. On a block of the data, hide a random ``HIDDEN_FRACTION`` of the voxels: each
   is replaced by the mean of its visible neighbours (3x3x3 in a z stack, 3x3 in
   a plane or a time-lapse frame), so nothing a candidate computes depends on
   the value of a hidden voxel.
2. Run the candidate on the masked block with the statistics of the data set.
3. Blur its output with the PSF of step 5 (the forward model), fit a scale and
   an offset to the visible voxels of the interior by least squares, and score
   the prediction on the hidden voxels of the interior.

For independent pixel noise the expected held-out error is the noise variance
plus the error of the prediction: a candidate that fits the noise (too many
iterations), smooths away structure (too strong a prior) or removes real light
(a background mode that dims faint objects) predicts the hidden voxels worse.
The squared error is weighted by the inverse Poisson-Gaussian variance of
each hidden voxel, ``1 / max(gain * level + offset, floor)`` from
:func:`bigdecon.suggest.estimate_noise` when a gain is measured: the Gaussian
approximation of the Poisson-Gaussian log-likelihood, which keeps the few
bright voxels from outweighing the dim ones where deconvolution errs most.

All candidates see the same blocks and the same masks, so the losses are
paired: the winner must beat plain Richardson-Lucy by more than ``GUARD``
standard errors of the per-voxel loss difference, or plain RL is chosen.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage, signal

from .params import Params
from .stages import deconv_stage, is_coupled, output_psf, preprocess, sparse_stage

__all__ = ["Candidate", "default_candidates", "hide_voxels", "held_out_loss", "run_candidate", "pick_blocks"]

HIDDEN_FRACTION = 0.03
GUARD = 2.0  # standard errors of the paired loss difference a candidate must beat plain RL by
BLOCK_K = 20  # planes of a block (z or t), at least the PSF's
BLOCK_YX = 80  # pixels of a block in y and x, at least the PSF's
RL = dict(sparse_iters=0, background=0, deconv_type=1)
METHOD_NAMES = (
    "sparse_iters fidelity sparsity tcontinuity background deconv_type deconv_iters wb_alpha wb_beta wb_order"
).split()


@dataclass(frozen=True)
class Candidate:
    """One setting of the method parameters, with a short label."""

    name: str
    params: dict

    @property
    def plain_rl(self) -> bool:
        return self.params.get("sparse_iters", 0) == 0 and self.params.get("deconv_type", 1) == 1


def _sparse(fid: float, sp: float, background: int = 0, iters: int = 20) -> Candidate:
    name = f"sparse fid {fid:g} sp {sp:g}{' bg ' + str(background) if background else ''} + RL {iters}"
    return Candidate(name, dict(sparse_iters=100, fidelity=fid, sparsity=sp, background=background, deconv_iters=iters))


def default_candidates() -> list[Candidate]:
    """The candidates, cheapest and most telling first (a budget keeps a prefix).

    Plain Richardson-Lucy at 20 iterations is first: the reference every other
    candidate is compared with.

    Examples
    --------
    >>> [c.name for c in default_candidates()][:3]
    ['RL 20', 'RL 10', 'RL 40']
    """
    out = [Candidate(f"RL {n}", dict(RL, deconv_iters=n)) for n in (20, 10, 40)]
    out += [
        Candidate(f"WB {n} beta {b:g}", dict(RL, deconv_type=3, deconv_iters=n, wb_beta=b))
        for b, iters in ((0.1, (1, 2, 3)), (0.03, (1, 2)))
        for n in iters
    ]
    out.append(Candidate("Landweber 20", dict(RL, deconv_type=2, deconv_iters=20)))
    out.append(Candidate("defaults (sparse fid 150 sp 10 bg 1 + RL 7)", dict(sparse_iters=100, background=1)))
    out += [_sparse(150, 2), _sparse(150, 2, background=1), _sparse(500, 2)]
    return out


def full_params(candidate: Candidate, base: Params) -> dict:
    """Every method parameter of a candidate (``base``'s value where it leaves one out)."""
    params = replace(base, **candidate.params)
    return {n: getattr(params, n) for n in METHOD_NAMES}


def hide_voxels(block: np.ndarray, fraction: float, rng: np.random.Generator, volume: bool):
    """``(masked, hidden)``: a random ``fraction`` of the voxels replaced by the mean of their visible neighbours.

    Examples
    --------
    >>> import numpy as np
    >>> b = np.arange(64.0, dtype=np.float32).reshape(4, 4, 4)
    >>> masked, hidden = hide_voxels(b, 0.1, np.random.default_rng(0), volume=True)
    >>> bool((masked[~hidden] == b[~hidden]).all()), masked.dtype
    (True, dtype('float32'))
    """
    hidden = rng.random(block.shape) < fraction
    shape = (3, 3) if block.ndim == 2 else ((3, 3, 3) if volume else (1, 3, 3))
    kernel = np.ones(shape, np.float32)
    kernel[tuple(s // 2 for s in kernel.shape)] = 0
    visible = (~hidden).astype(np.float32)
    num = ndimage.convolve(block * visible, kernel, mode="mirror")
    den = ndimage.convolve(visible, kernel, mode="mirror")
    masked = block.copy()
    masked[hidden] = (num[hidden] / np.maximum(den[hidden], 1.0)).astype(np.float32)
    return masked, hidden


def _blur(x: np.ndarray, psf: np.ndarray) -> np.ndarray:
    kernel = psf if psf.ndim == x.ndim else psf.reshape((1,) * (x.ndim - psf.ndim) + psf.shape)
    if kernel.ndim == 3 and kernel.shape[0] > 1:
        return signal.fftconvolve(x, kernel, mode="same")
    return signal.fftconvolve(x, kernel, mode="same", axes=(-2, -1))


def interior(shape: tuple[int, ...], psf: np.ndarray) -> tuple[slice, ...]:
    """The block without a margin of the PSF's half-size (at most a quarter of the block) on each side."""
    half = [s // 2 for s in psf.shape]
    half = [0] * (len(shape) - len(half)) + half
    return tuple(slice(min(h, n // 4), n - min(h, n // 4)) for h, n in zip(half, shape))


def held_out_loss(estimate, block, hidden, psf, noise: tuple[float, float | None, float | None]):
    """``(loss, per_voxel)``: the weighted squared error of the re-blurred estimate on the hidden voxels.

    ``estimate`` was computed from the masked block; the prediction is
    ``a * blur(estimate) + b`` with ``a`` and ``b`` fitted on the visible
    voxels of the interior. A background that a candidate removed is not
    added back: light removed from the output (faint out-of-focus objects
    taken for background) counts as an error.
    """
    pred = _blur(np.asarray(estimate, np.float64), np.asarray(psf, np.float64))
    inner = interior(block.shape, psf)
    p = pred[inner].ravel()
    design = np.stack([p, np.ones_like(p)], axis=1)
    y, h = block[inner].astype(np.float64).ravel(), hidden[inner].ravel()
    coef = np.linalg.lstsq(design[~h], y[~h], rcond=None)[0]
    fit = design[h] @ coef
    sigma, gain, offset = noise
    var = np.full(fit.shape, max(sigma, 1e-12) ** 2)
    if gain is not None:
        var = np.maximum(gain * fit + (offset or 0.0), var)
    per = (y[h] - fit) ** 2 / var
    return float(per.mean()), per


def run_candidate(block, params: Params, scale: float, mean: float, n_planes: int, snapshots: dict | None = None):
    """Steps 1-6 on one block with the data set's ``scale`` (max) and ``mean`` (over ``scale``).

    The sparse step's input is normalised as on the data set: ``raw / scale``
    with background mode 0; with a background mode, by the block's ratio of
    the maximum after the background to the maximum before it. ``snapshots``:
    the outputs after fewer Richardson-Lucy iterations (see :func:`deconv_stage`).
    """
    h = preprocess(block, scale, mean, params)
    f_max = float(block.max()) / scale
    norm = 1.0 if not params.background else max(float(h.max()) / max(f_max, 1e-12), 1e-12)
    g = sparse_stage(h, norm, params, is_coupled(n_planes, params))
    g_max = float(g.max())
    if g_max <= 0:
        return np.zeros(g.shape, np.float32)
    return deconv_stage(g, g_max, scale, params, output_psf(params, block.ndim), snapshots=snapshots)


@dataclass
class Block:
    """One block of one channel: where it is, the data, its mask and its noise."""

    where: dict
    data: np.ndarray
    masked: np.ndarray
    hidden: np.ndarray
    noise: tuple[float, float | None, float | None]


def score(candidates: list[Candidate], blocks: list[Block], base: Params, stats: tuple[float, float, int], budget_s):
    """Run and score each candidate on every block, within ``budget_s`` seconds (RL 20 always runs).

    Returns one record per scored candidate: name, parameters, per-block losses
    and per-voxel losses (concatenated over blocks), seconds.
    """
    scale, mean, n_planes = stats
    psf = output_psf(base, blocks[0].data.ndim)
    records: list[dict[str, Any]] = []
    cache: dict[tuple[str, int], Any] = {}  # outputs computed as snapshots of a longer RL run
    start = time.perf_counter()
    for i, cand in enumerate(candidates):
        spent = time.perf_counter() - start
        if i and budget_s is not None and spent + _expected(records, cand) > budget_s:
            continue
        t0 = time.perf_counter()
        losses, per = [], []
        for j, b in enumerate(blocks):
            out = cache.pop((cand.name, j), None)
            if out is None:
                out = _run_family(cand, candidates[i + 1 :], base, b, stats, cache, j)
            loss, voxels = held_out_loss(out, b.data, b.hidden, psf, b.noise)
            losses.append(loss)
            per.append(voxels)
        records.append(
            dict(
                candidate=cand,
                params=full_params(cand, base),
                losses=losses,
                per=np.concatenate(per),
                seconds=time.perf_counter() - t0,
            )
        )
    return records


def _run_family(cand: Candidate, later: list[Candidate], base: Params, block: Block, stats, cache: dict, j: int):
    """Run ``cand`` on ``block``; later Richardson-Lucy candidates that differ from it only in the
    iteration count come from the same run (the longest), as snapshots, into ``cache``."""
    scale, mean, n_planes = stats
    params = replace(base, **cand.params)
    if params.deconv_type != 1:
        return run_candidate(block.masked, params, scale, mean, n_planes)
    family = []
    for c in later:
        other = replace(base, **c.params)
        if replace(other, deconv_iters=params.deconv_iters) == params:
            family.append((c, other.deconv_iters))
    if not family:
        return run_candidate(block.masked, params, scale, mean, n_planes)
    longest = max([params.deconv_iters] + [n for _, n in family])
    snaps: dict[int, Any] = {n: None for n in {params.deconv_iters, *(n for _, n in family)}}
    snaps[longest] = run_candidate(block.masked, replace(params, deconv_iters=longest), scale, mean, n_planes, snaps)
    for c, n in family:
        cache[(c.name, j)] = snaps[n]
    return snaps[params.deconv_iters]


def _expected(records: list[dict], cand: Candidate) -> float:
    """A candidate's expected seconds: the last one of its kind (sparse step or not); the first sparse
    one 5 x RL 20 (100 split-Bregman iterations then 20 of RL cost 2-5 x RL 20 alone)."""
    sparse = bool(cand.params.get("sparse_iters"))
    same = [r["seconds"] for r in records if bool(r["candidate"].params.get("sparse_iters")) == sparse]
    if same:
        return same[-1]
    return 5.0 * records[0]["seconds"] if records and sparse else 0.0


def decide(records: list[dict]) -> tuple[int, str, list[dict]]:
    """The winner's index, why it won, and the table (loss relative to RL 20, paired standard error)."""
    ref = records[0]["per"]
    base = float(ref.mean())
    table = []
    for r in records:
        diff = r["per"] - ref
        se = float(diff.std(ddof=1) / math.sqrt(diff.size)) / base
        table.append(
            dict(
                name=r["candidate"].name,
                params=r["params"],
                loss=float(r["per"].mean()),
                relative=float(r["per"].mean()) / base,
                se=se,
                block_losses=[round(x, 6) for x in r["losses"]],
                seconds=round(r["seconds"], 3),
            )
        )
    rl = [i for i, r in enumerate(records) if r["candidate"].plain_rl]
    best = min(range(len(table)), key=lambda i: table[i]["loss"])
    if not rl:  # a given deconv_type other than RL: no plain RL to compare with
        return best, f"lowest held-out loss ({table[best]['relative']:.4f} of {table[0]['name']})", table
    best_rl = min(rl, key=lambda i: table[i]["loss"])
    if best in rl:
        return best, f"lowest held-out loss ({table[best]['relative']:.4f} of RL 20)", table
    rl_loss = table[best_rl]["loss"]
    diff = records[best]["per"] - records[best_rl]["per"]
    se = float(diff.std(ddof=1) / math.sqrt(diff.size))
    gain = rl_loss - table[best]["loss"]
    if gain > GUARD * se:
        why = (
            f"lowest held-out loss, {gain / rl_loss:.2%} below the best plain RL ({table[best_rl]['name']}), "
            f"{gain / se:.1f} standard errors"
        )
        return best, why, table
    why = (
        f"plain RL: the lowest loss ({table[best]['name']}) beat it by only {gain / se:.1f} standard errors "
        f"(needs {GUARD:g})"
    )
    return best_rl, why, table


def pick_blocks(shape: dict[str, int], psf_shape: tuple[int, ...], read, n_blocks: int) -> list[dict[str, slice | int]]:
    """Up to ``n_blocks`` blocks with the most signal among a few spread over t, z, y and x.

    ``shape`` maps the axes ``t``, ``z`` (or k), ``y``, ``x`` to sizes;
    ``read(where)`` returns the block ``where`` (a dict of slices and ints).
    The signal of a block is its 99.9th percentile minus its median.
    """
    k_axis = "z" if "z" in shape else ("t" if "t" in shape else None)
    size = {"y": min(shape["y"], max(BLOCK_YX, psf_shape[-2])), "x": min(shape["x"], max(BLOCK_YX, psf_shape[-1]))}
    if k_axis:
        need = psf_shape[0] if len(psf_shape) == 3 else 1
        size[k_axis] = min(shape[k_axis], max(BLOCK_K if k_axis == "z" else 8, need))

    def starts(axis: str, n: int) -> list[int]:
        free = shape[axis] - size[axis]
        return sorted({int(round(v)) for v in np.linspace(0, free, n)}) if free > 0 else [0]

    t_values = (
        list(np.unique(np.linspace(0, shape["t"] - 1, min(shape["t"], 3)).round().astype(int)))
        if ("t" in shape and k_axis == "z")
        else [None]
    )
    options = []
    for t in t_values:
        for k0 in starts(k_axis, 3) if k_axis else [0]:
            for y0 in starts("y", 3):
                for x0 in starts("x", 3):
                    where: dict[str, Any] = {"y": slice(y0, y0 + size["y"]), "x": slice(x0, x0 + size["x"])}
                    if k_axis:
                        where[k_axis] = slice(k0, k0 + size[k_axis])
                    if t is not None:
                        where["t"] = int(t)
                    options.append(where)
    # At most 12 blocks are looked at (a bounded read), evenly spread over the options.
    options = [options[int(i)] for i in np.unique(np.linspace(0, len(options) - 1, min(len(options), 12)).round())]
    scored = []
    for where in options:
        sample = np.asarray(read(where), np.float32)[..., ::2, ::2]
        scored.append((float(np.percentile(sample, 99.9) - np.median(sample)), where))
    scored.sort(key=lambda s: -s[0])
    chosen: list[dict] = []
    for _, where in scored:
        if len(chosen) < n_blocks and all(_overlap(where, c) <= 0.5 for c in chosen):
            chosen.append(where)
    return chosen


def _overlap(a: dict, b: dict) -> float:
    """The fraction of block ``a`` that block ``b`` covers."""
    frac = 1.0
    for axis, sa in a.items():
        sb = b[axis]
        if isinstance(sa, slice):
            frac *= max(0, min(sa.stop, sb.stop) - max(sa.start, sb.start)) / (sa.stop - sa.start)
        elif sa != sb:
            return 0.0
    return frac
