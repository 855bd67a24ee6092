"""Choose deconvolution parameters by a held-out loss measured on the data.

The loss is self-supervised (Recorrupted-to-Recorrupted, Pang et al. 2021; in
the spirit of Noise2Self, Batson & Royer 2019):

1. On a block of the data, draw Gaussian noise ``n`` of the block's measured
   Poisson-Gaussian variance ``v`` and make two copies, ``input = y + n / 2``
   and ``target = y - 2 n``, whose noises are uncorrelated (:func:`recorrupt`).
2. Run the candidate on ``input`` with the statistics of the data set.
3. Blur its output with the PSF of step 5 (the forward model), fit a scale and
   an offset to ``target`` in the block's interior, and score the squared
   error on every interior voxel over ``target``'s variance.

Noise that a candidate fits (too many iterations) cannot predict ``target``'s
uncorrelated noise; a prior that smooths away structure or a background mode
that removes real light predicts it worse too. Every interior voxel is scored
(tens of thousands per block; a masking loss that hides 3 % of the voxels
scores about 30 times fewer), and no voxel is replaced by an interpolation
that an over-fitting candidate would reproduce.

All candidates see the same blocks and the same noise, so the losses are
paired. The decision (:func:`decide`) uses the loss's standard error both ways:

* the iteration count of each setting is the one nearest 20 whose loss is
  within one standard error of that setting's lowest (the one-standard-error
  rule, Hastie, Tibshirani & Friedman, *Elements of Statistical Learning*,
  7.10, centred on the reference count): the data-space loss keeps falling
  slowly with iterations after the truth is best (it cannot see what lies
  beyond the optical passband), and at low signal its curve is flat;
* a setting other than plain Richardson-Lucy wins only if it beats the best
  plain RL by more than ``GUARD`` standard errors of the paired difference.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy import ndimage

from ._backend import cpu_threads
from .params import Params
from .stages import deconv_stage, is_coupled, output_psf, preprocess, sparse_stage

__all__ = [
    "Blur",
    "Candidate",
    "decide",
    "default_candidates",
    "fewest_iterations",
    "held_out_loss",
    "pick_blocks",
    "recorrupt",
    "run_candidate",
]

TAU = 0.5  # recorruption: the input keeps 1 / (1 + TAU**2) = 80 % of the photons' worth of SNR
GUARD = 2.0  # standard errors of the paired loss difference a candidate must beat plain RL by
REFERENCE_ITERS = 20  # the count a setting keeps unless the loss says otherwise by more than ONE_SE
ONE_SE = 1.0  # standard errors of a setting's lowest loss within which the fewest iterations are taken
BATCHES = 32  # per block, for the standard errors
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
        return (
            self.params.get("sparse_iters", 0) == 0
            and self.params.get("deconv_type", 1) == 1
            and not self.params.get("background", 0)
        )


RL_ITERS = (20, 10, 40, 5, 7, 15, 30, 60, 80)  # one run of 80 with snapshots
SPARSE_RL_ITERS = (20, 7, 10, 15, 30, 40)  # after each sparse setting: one run of 40 with snapshots


def _sparse(fid: float, sp: float, background: int = 0) -> list[Candidate]:
    name = f"sparse fid {fid:g} sp {sp:g}{' bg ' + str(background) if background else ''}"
    params = dict(sparse_iters=100, fidelity=fid, sparsity=sp, background=background)
    return [Candidate(f"{name} + RL {n}", dict(params, deconv_iters=n)) for n in SPARSE_RL_ITERS]


def _defaults() -> Candidate:
    """The run's defaults, every method parameter from the parameter model (also the RL count: a candidate
    that leaves one out takes the base's, which for scoring is 1, not the run's 7)."""
    from .params import DECONV_ITERS_BY_TYPE, PARAMETERS

    names = ("sparse_iters", "fidelity", "sparsity", "background", "deconv_type")
    params: dict[str, Any] = {n: PARAMETERS[n].default for n in names}
    params["deconv_iters"] = DECONV_ITERS_BY_TYPE[params["deconv_type"]]
    label = f"sparse fid {params['fidelity']:g} sp {params['sparsity']:g} bg {params['background']} + RL {params['deconv_iters']}"
    return Candidate(f"defaults ({label})", params)


def default_candidates() -> list[Candidate]:
    """The candidates, cheapest and most telling first (a budget keeps a prefix).

    Plain Richardson-Lucy at 20 iterations is first: the reference every other
    candidate is compared with. The iteration counts of one setting come from
    one run (snapshots), so they cost no more than the longest.

    Examples
    --------
    >>> [c.name for c in default_candidates()][:3]
    ['RL 20', 'RL 10', 'RL 40']
    >>> len(default_candidates())
    39
    """
    out = [Candidate(f"RL {n}", dict(RL, deconv_iters=n)) for n in RL_ITERS]
    out += [
        Candidate(f"WB {n} beta {b:g}", dict(RL, deconv_type=3, deconv_iters=n, wb_beta=b))
        for b, iters in ((0.1, (1, 2, 3)), (0.03, (1, 2)))
        for n in iters
    ]
    out.append(Candidate("Landweber 20", dict(RL, deconv_type=2, deconv_iters=20)))
    defaults = [_defaults()]
    defaults += [c for c in _sparse(150, 10, background=1) if c.params["deconv_iters"] != 7]
    out += defaults + _sparse(150, 2) + _sparse(150, 2, background=1) + _sparse(500, 2)
    return out


def full_params(candidate: Candidate, base: Params) -> dict:
    """Every method parameter of a candidate (``base``'s value where it leaves one out)."""
    params = replace(base, **candidate.params)
    return {n: getattr(params, n) for n in METHOD_NAMES}


def recorrupt(block: np.ndarray, noise, rng: np.random.Generator, tau: float = TAU):
    """``(input, target, var)``: two copies of ``block`` with uncorrelated noise (Recorrupted-to-Recorrupted).

    With ``n`` Gaussian of the block's noise variance ``v`` (Poisson-Gaussian,
    ``max(gain * level + offset, sigma**2)`` at the local 3x3(x3) mean level),
    ``input = block + tau * n`` and ``target = block - n / tau`` have
    uncorrelated noise, of variances ``(1 + tau**2) v`` and ``var = (1 + 1 /
    tau**2) v`` (Pang et al. 2021). A candidate runs on ``input``; whatever of
    its noise it fits cannot predict ``target``.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.random.default_rng(0).normal(10.0, 1.0, (64, 64)).astype(np.float32)
    >>> x, t, var = recorrupt(y, (1.0, None, None), np.random.default_rng(1))
    >>> bool(abs(np.corrcoef((x - 10).ravel(), (t - 10).ravel())[0, 1]) < 0.05), x.dtype, float(var.mean())
    (True, dtype('float32'), 5.0)
    """
    sigma, gain, offset = noise
    var = np.full(block.shape, max(sigma, 1e-12) ** 2)
    if gain is not None:
        level = ndimage.uniform_filter(block.astype(np.float64), 3, mode="mirror")
        var = np.maximum(gain * level + (offset or 0.0), var)
    n = rng.standard_normal(block.shape) * np.sqrt(var)
    return (block + tau * n).astype(np.float32), (block - n / tau).astype(np.float32), (1 + 1 / tau**2) * var


class Blur:
    """``fftconvolve(x, psf, mode="same")`` for arrays of one shape, the PSF's transform computed once.

    A 2-D PSF blurs each plane of a 3-D block; float32 transforms (the loss
    compares errors of the order of the noise, far above float32's rounding).

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import signal
    >>> x = np.random.default_rng(0).random((6, 20, 24)).astype(np.float32)
    >>> psf = np.random.default_rng(1).random((3, 5, 7)).astype(np.float32)
    >>> ref = signal.fftconvolve(x.astype(np.float64), psf.astype(np.float64), mode="same")
    >>> bool(np.abs(Blur(x.shape, psf)(x) - ref).max() < 1e-4)
    True
    """

    def __init__(self, shape: tuple[int, ...], psf: np.ndarray) -> None:
        kernel = np.asarray(psf, np.float32)
        if kernel.ndim == 3 and kernel.shape[0] == 1:
            kernel = kernel[0]
        self.axes = tuple(range(len(shape) - kernel.ndim, len(shape)))
        full = [shape[a] + kernel.shape[i] - 1 for i, a in enumerate(self.axes)]
        self.fshape = [sp_fft.next_fast_len(n, real=True) for n in full]
        crop = [slice(None)] * len(shape)
        for a, n in zip(self.axes, full):  # "same": the centre of the full convolution, as fftconvolve crops it
            crop[a] = slice((n - shape[a]) // 2, (n - shape[a]) // 2 + shape[a])
        self.crop = tuple(crop)
        self.otf = sp_fft.rfftn(kernel, self.fshape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        spec = sp_fft.rfftn(np.asarray(x, np.float32), self.fshape, axes=self.axes)
        spec *= self.otf
        return sp_fft.irfftn(spec, self.fshape, axes=self.axes)[self.crop]


def interior(shape: tuple[int, ...], psf: np.ndarray) -> tuple[slice, ...]:
    """The block without a margin of the PSF's half-size (at most a quarter of the block) on each side."""
    half = [s // 2 for s in psf.shape]
    half = [0] * (len(shape) - len(half)) + half
    return tuple(slice(min(h, n // 4), n - min(h, n // 4)) for h, n in zip(half, shape))


def held_out_loss(
    estimate, target: np.ndarray, var: np.ndarray, psf, blur: Blur | None = None
) -> tuple[float, np.ndarray]:
    """``(loss, per_voxel)``: the squared error of the re-blurred estimate at predicting ``target``, over ``var``.

    ``estimate`` was computed from the recorrupted input (:func:`recorrupt`);
    the prediction is ``a * blur(estimate) + b`` with ``a`` and ``b`` fitted
    to the target in the block's interior (two numbers fitted to thousands of
    voxels), scored on every voxel of the interior. A background that a
    candidate removed is not added back: light removed from the output
    (faint out-of-focus objects taken for background) counts as an error.
    For a prediction independent of the target's noise the expected loss is
    1 plus the squared error of the prediction in units of the noise.
    ``blur``: the PSF's :class:`Blur` for the target's shape, made once per block.
    """
    pred = (blur or Blur(target.shape, psf))(estimate)
    inner = interior(target.shape, psf)
    p = pred[inner].ravel()
    design = np.stack([p, np.ones_like(p)], axis=1)
    y = target[inner].astype(np.float64).ravel()
    coef = np.linalg.lstsq(design, y, rcond=None)[0]
    per = (y - design @ coef) ** 2 / var[inner].ravel()
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
    """One block of one channel: where it is, the data, its recorrupted pair and the target's noise variance."""

    where: dict
    data: np.ndarray
    input: np.ndarray
    target: np.ndarray
    var: np.ndarray


def score(candidates: list[Candidate], blocks: list[Block], base: Params, stats: tuple[float, float, int], budget_s):
    """Run and score each candidate on every block, within ``budget_s`` seconds (RL 20 always runs).

    Returns one record per scored candidate: name, parameters, per-block losses
    and ``per``, the loss's means over ``BATCHES`` batches of voxels per block (concatenated), seconds.
    """
    psf = output_psf(base, blocks[0].data.ndim)
    assert psf is not None  # every candidate deconvolves
    blurs = {shape: Blur(shape, psf) for shape in {b.target.shape for b in blocks}}
    records: list[dict[str, Any]] = []
    cache: dict[tuple[str, int], Any] = {}  # outputs computed as snapshots of a longer RL run
    start = time.perf_counter()

    def one(i: int, cand: Candidate, j: int) -> tuple[float, np.ndarray] | None:
        b = blocks[j]
        scored = cache.pop((cand.name, j), None)
        if scored is None:
            scored = _run_family(
                cand, candidates[i + 1 :], base, b, stats, cache, j, partial(_loss, b, psf, blurs[b.target.shape])
            )
        return None if scored is STOPPED else scored

    # The blocks of a candidate run at once, one thread each (the solvers release the GIL): both cores busy.
    with ThreadPoolExecutor(max(1, min(len(blocks), cpu_threads()))) as pool:
        for i, cand in enumerate(candidates):
            spent = time.perf_counter() - start
            ran = (cand.name, 0) in cache  # a snapshot of a run already made costs only its loss
            if i and budget_s is not None and not ran and spent + _expected(records, cand) > budget_s:
                continue
            t0 = time.perf_counter()
            results = list(pool.map(partial(one, i, cand), range(len(blocks))))
            if any(r is None for r in results):
                continue  # a count past the loss's minimum on a block, where its run stopped
            records.append(
                dict(
                    candidate=cand,
                    params=full_params(cand, base),
                    losses=[r[0] for r in results if r is not None],
                    per=np.concatenate([r[1] for r in results if r is not None]),
                    seconds=time.perf_counter() - t0,
                )
            )
    return records


def _loss(b: Block, psf: np.ndarray, blur: Blur, out: Any) -> tuple[float, np.ndarray]:
    """A block's loss and its means over ``BATCHES`` batches of contiguous voxels (the prediction errors of
    neighbours are correlated, so the standard error of a difference is taken over batches, not voxels)."""
    loss, voxels = held_out_loss(out, b.target, b.var, psf, blur)
    return loss, np.array([c.mean() for c in np.array_split(voxels, BATCHES)])


STOPPED = "stopped"  # in the cache: a count the run did not reach (its loss had passed the minimum)


class _Stop(Exception):
    pass


class _Watch(dict):
    """Snapshots of a Richardson-Lucy run scored as they come (:func:`richardson_lucy`'s ``snapshots``).

    The run stops at a count from ``own`` on whose loss exceeds the lowest so far
    (at a smaller count) by more than ``ONE_SE`` of its standard error on this block:
    the iteration rule cannot pick a count past that one unless the loss fell again.
    The values the solver sees stay None; the scores are in ``scored``.
    """

    def __init__(self, counts: set[int], own: int, loss) -> None:
        super().__init__({n: None for n in counts})
        self.own, self.loss = own, loss
        self.scored: dict[int, tuple[float, np.ndarray]] = {}
        self.low: tuple[float, float] | None = None

    def __setitem__(self, n: int, out: Any) -> None:
        self.scored[n] = self.loss(out)
        mean, se = float(self.scored[n][1].mean()), _se(self.scored[n][1])
        if self.low is None or mean < self.low[0]:
            self.low = (mean, se)
        elif n >= self.own and mean > self.low[0] + ONE_SE * self.low[1]:
            raise _Stop


def _run_family(cand: Candidate, later: list[Candidate], base: Params, block: Block, stats, cache: dict, j: int, loss):
    """``loss`` of ``cand`` on ``block``; later Richardson-Lucy candidates that differ from it only in the
    iteration count come from the same run (the longest), as scored snapshots, into ``cache`` (or
    ``STOPPED`` where the run stopped early, see :class:`_Watch`)."""
    scale, mean, n_planes = stats
    params = replace(base, **cand.params)
    family = []
    for c in later if params.deconv_type == 1 else []:
        other = replace(base, **c.params)
        if replace(other, deconv_iters=params.deconv_iters) == params:
            family.append((c, other.deconv_iters))
    if not family:
        return loss(run_candidate(block.input, params, scale, mean, n_planes))
    longest = max([params.deconv_iters] + [n for _, n in family])
    watch = _Watch({params.deconv_iters, *(n for _, n in family)} - {longest}, params.deconv_iters, loss)
    try:
        last = loss(run_candidate(block.input, replace(params, deconv_iters=longest), scale, mean, n_planes, watch))
        for n in watch:  # every count, also where the run had nothing to deconvolve and took no snapshot
            watch.scored.setdefault(n, last)
        watch.scored[longest] = last
    except _Stop:
        pass
    for c, n in family:
        cache[(c.name, j)] = watch.scored.get(n, STOPPED)
    return watch.scored[params.deconv_iters]


def _expected(records: list[dict], cand: Candidate) -> float:
    """A candidate's expected seconds: the longest one of its kind (sparse step or not); the first sparse
    one 5 x RL 20 (100 split-Bregman iterations then 20 of RL cost 2-5 x RL 20 alone)."""
    sparse = bool(cand.params.get("sparse_iters"))
    same = [r["seconds"] for r in records if bool(r["candidate"].params.get("sparse_iters")) == sparse]
    if same:
        return max(same)  # the longest: a snapshot of a run costs only its loss
    return 5.0 * records[0]["seconds"] if records and sparse else 0.0


def _setting(params: dict) -> tuple:
    """A candidate's setting: its parameters but the Richardson-Lucy iteration count."""
    return tuple(sorted((k, v) for k, v in params.items() if not (k == "deconv_iters" and params["deconv_type"] == 1)))


def _se(per: np.ndarray) -> float:
    return float(per.std(ddof=1) / math.sqrt(per.size)) if per.size > 1 else 0.0


def fewest_iterations(records: list[dict], k: float = ONE_SE) -> list[int]:
    """For each setting, the index of its Richardson-Lucy iteration count nearest ``REFERENCE_ITERS`` (the
    fewer of two as near) among those with a loss within ``k`` standard errors of the setting's lowest
    loss (the one-standard-error rule, centred on the reference count)."""
    settings: dict[tuple, list[int]] = {}
    for i, r in enumerate(records):
        settings.setdefault(_setting(r["params"]), []).append(i)
    picks = []
    for members in settings.values():
        low = min(members, key=lambda i: records[i]["per"].mean())
        limit = records[low]["per"].mean() + k * _se(records[low]["per"])
        near = [i for i in members if records[i]["per"].mean() <= limit]
        picks.append(min(near, key=lambda i: _distance(records[i]["params"]["deconv_iters"])))
    return picks


def _distance(iters: int) -> tuple[int, int]:
    return abs(iters - REFERENCE_ITERS), iters


def decide(records: list[dict]) -> tuple[int, str, list[dict]]:
    """The winner's index, why it won, and the table (loss relative to RL 20, paired standard error)."""
    ref = records[0]["per"]
    base = float(ref.mean())
    table = []
    for r in records:
        table.append(
            dict(
                name=r["candidate"].name,
                params=r["params"],
                loss=float(r["per"].mean()),
                relative=float(r["per"].mean()) / base,
                se=_se(r["per"] - ref) / base,
                block_losses=[round(x, 6) for x in r["losses"]],
                seconds=round(r["seconds"], 3),
            )
        )
    picks = fewest_iterations(records)
    best = min(picks, key=lambda i: table[i]["loss"])
    rl = [i for i in picks if records[i]["candidate"].plain_rl]
    iters = _iteration_note(records, picks, best)
    if not rl:  # a given deconv_type other than RL: no plain RL to compare with
        return best, f"lowest held-out loss ({table[best]['relative']:.4f} of {table[0]['name']}){iters}", table
    best_rl = rl[0]
    if best == best_rl:
        return best, f"lowest held-out loss ({table[best]['relative']:.4f} of RL 20){iters}", table
    se = _se(records[best]["per"] - records[best_rl]["per"])
    gain = table[best_rl]["loss"] - table[best]["loss"]
    if gain > GUARD * se:
        why = (
            f"lowest held-out loss, {gain / table[best_rl]['loss']:.2%} below the best plain RL "
            f"({table[best_rl]['name']}), {gain / se:.1f} standard errors{iters}"
        )
        return best, why, table
    why = (
        f"plain RL: the lowest loss ({table[best]['name']}) beat it by only {gain / max(se, 1e-300):.1f} "
        f"standard errors (needs {GUARD:g}){_iteration_note(records, picks, best_rl)}"
    )
    return best_rl, why, table


def _iteration_note(records: list[dict], picks: list[int], i: int) -> str:
    """Why the iteration count: when a longer run of the same setting had a (slightly) lower loss."""
    same = [j for j, r in enumerate(records) if _setting(r["params"]) == _setting(records[i]["params"])]
    low = min(same, key=lambda j: records[j]["per"].mean())
    if low == i:
        return ""
    return (
        f"; {records[i]['params']['deconv_iters']} RL iterations: the nearest {REFERENCE_ITERS} within "
        f"{ONE_SE:g} standard error of the lowest loss of this setting ({records[low]['candidate'].name})"
    )


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
