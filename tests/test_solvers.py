"""Behaviour of the in-memory solvers that can be known without the published code."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from scipy.ndimage import convolve, gaussian_filter

import bigdecon
from bigdecon import (
    InputError,
    estimate_background,
    fourier_upsample,
    gaussian_psf,
    landweber,
    richardson_lucy,
    sparse_deconvolve,
    sparse_hessian,
    spatial_upsample,
)

# The module, not the function of the same name that the package exports.
sh_module = importlib.import_module("bigdecon.solvers.sparse_hessian")


def points(shape=(64, 64), n=6, seed=3):
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.float32)
    ys = rng.integers(12, shape[0] - 12, n)
    xs = rng.integers(12, shape[1] - 12, n)
    truth[ys, xs] = 1.0
    return truth, list(zip(ys, xs))


def concentration(image, where, radius=1):
    """Fraction of the total flux within ``radius`` pixels of the true points."""
    mask = np.zeros(image.shape, bool)
    for y, x in where:
        mask[y - radius : y + radius + 1, x - radius : x + radius + 1] = True
    return float(image[mask].sum() / image.sum())


# ----------------------------------------------------------------------------- sparse Hessian


def test_huge_fidelity_gives_back_the_input(stack):
    f = stack / stack.max()
    g = sparse_hessian(f, iterations=20, fidelity=1e7, sparsity=10)
    assert np.abs(g - f).max() < 1e-3


def test_huge_sparsity_gives_zeros(stack):
    f = stack / stack.max()
    g = sparse_hessian(f, iterations=30, sparsity=1e4)
    assert g.max() < 1e-3


def test_sparse_hessian_smooths_noise():
    rng = np.random.default_rng(0)
    f = np.clip(0.5 + 0.1 * rng.standard_normal((6, 48, 48)), 0, 1).astype(np.float32)
    g = sparse_hessian(f, iterations=50)
    assert g.std() < 0.5 * f.std()


def test_fewer_than_three_planes_are_solved_plane_by_plane(stack):
    f = (stack / stack.max())[:2]
    both = sparse_hessian(f, iterations=20)
    single = np.stack([sparse_hessian(p, iterations=20) for p in f])
    np.testing.assert_allclose(both, single, atol=1e-6)


def test_tcontinuity_couples_planes(stack):
    f = stack / stack.max()
    coupled = sparse_hessian(f, iterations=20, tcontinuity=2.0)
    single = np.stack([sparse_hessian(p, iterations=20) for p in f])
    assert np.abs(coupled - single).max() > 1e-3


@pytest.mark.parametrize("shape", [(5, 40, 37), (1, 33, 64), (2, 17, 90), (7, 64, 3 * 31)])
def test_fused_kernels_equal_array_expressions(shape):
    rng = np.random.default_rng(1)
    f = (rng.random(shape) * 3).astype(np.float32)
    for coupled in (False, True):
        terms = sh_module.sparse_hessian_terms(0.7, coupled)
        results = []
        for fused in (False, True):
            step = sh_module._ShrinkStep(f, terms, 150.0, 10.0, np)
            step.fused = fused
            step.tmp = np.empty_like(f)
            rhs = np.empty_like(f)
            g = f.copy()
            for _ in range(3):
                step(g, rhs)
                g = 0.9 * g + 1e-3 * rhs
            results.append(rhs)
        scale = np.abs(results[0]).max()
        assert np.abs(results[0] - results[1]).max() <= 1e-6 * scale


@pytest.mark.parametrize("shape", [(7, 64, 93), (3, 51, 64), (2, 45, 64)])
def test_fused_kernels_give_the_same_result_on_two_threads(monkeypatch, shape):
    """Each thread restarts its rolling rows where its run of rows begins: no thread count changes a bit."""
    f = np.random.default_rng(4).random(shape).astype(np.float32)
    monkeypatch.setenv("BIGDECON_THREADS", "1")
    one = sparse_hessian(f, iterations=6)
    monkeypatch.setenv("BIGDECON_THREADS", "2")
    two = sparse_hessian(f, iterations=6)
    assert np.array_equal(one, two)


def test_operators_are_mirror_boundary_adjoints():
    """The stencils are the Neumann operators the DCT-II diagonalises."""
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 7, 6)).astype(np.float32)
    out = np.empty_like(a)
    for axis in range(3):
        padded = np.pad(a, [(1, 1) if i == axis else (0, 0) for i in range(3)], mode="symmetric")
        np.testing.assert_allclose(sh_module._second_diff(a, axis, out), np.diff(padded, 2, axis=axis), atol=1e-5)
    u = rng.standard_normal(a.shape).astype(np.float32)
    u[:, -1, :] = 0
    u[:, :, -1] = 0
    d = sh_module._mixed_fwd(a, (1, 2), np.empty_like(a))
    back = sh_module._mixed_bwd(u, (1, 2), np.empty_like(a))
    assert abs(float((d * u).sum()) - float((a * back).sum())) < 1e-3


# ----------------------------------------------------------------------------- deconvolution


def test_richardson_lucy_conserves_flux():
    truth, _ = points()
    blurred = convolve(truth, gaussian_psf(4.0), mode="wrap") + 0.01
    out = richardson_lucy(blurred, gaussian_psf(4.0), iterations=15, accelerate=False, pad=0)
    assert abs(out.sum() / blurred.sum() - 1) < 1e-4


def test_richardson_lucy_sharpens_points():
    truth, where = points()
    blurred = convolve(truth, gaussian_psf(4.0), mode="wrap") + 1e-3
    plain = richardson_lucy(blurred, gaussian_psf(4.0), iterations=20, accelerate=False, pad=0)
    fast = richardson_lucy(blurred, gaussian_psf(4.0), iterations=20, accelerate=True, pad=0)
    c_raw, c_plain, c_fast = (concentration(a, where) for a in (blurred, plain, fast))
    assert c_raw < c_plain < c_fast


def test_landweber_sharpens_points():
    truth, where = points()
    blurred = convolve(truth, gaussian_psf(3.0), mode="wrap")
    out = landweber(blurred, gaussian_psf(3.0), iterations=30, pad=0)
    assert concentration(out, where) > concentration(blurred, where) + 0.05


def test_each_stage_sharpens_towards_the_points():
    truth, where = points((96, 96), n=10)
    blurred = convolve(truth, gaussian_psf(4.0), mode="reflect") * 1000
    sparse_only = sparse_deconvolve(blurred, fwhm=4, background=0, deconv_type=0)
    both = sparse_deconvolve(blurred, fwhm=4, background=0)
    c = [concentration(a, where) for a in (blurred, sparse_only, both)]
    assert c[0] < c[1] < c[2], c


def test_3d_psf_deconvolves_a_volume():
    truth = np.zeros((32, 48, 48), np.float32)
    truth[16, 24, 24] = 1
    psf = gaussian_psf((6.0, 3.0, 3.0))
    blurred = convolve(truth, psf, mode="wrap") * 100
    out = richardson_lucy(blurred, psf, iterations=10, pad=0)
    assert out.shape == truth.shape
    assert out[16, 24, 24] > 3 * blurred[16, 24, 24]
    vol = sparse_deconvolve(blurred, fwhm=(6, 3, 3), background=0, sparse_iters=10)
    assert vol.shape == truth.shape and np.unravel_index(vol.argmax(), vol.shape) == (16, 24, 24)


def test_3d_padding_is_half_support_rounded_to_fast_lengths():
    import scipy.fft

    from bigdecon.solvers.richardson_lucy import padded_geometry, padded_problem

    psf = gaussian_psf((4.0, 2.5, 2.5), shape=(17, 17, 17))
    geometry = padded_geometry((64, 256, 256), psf.shape)
    for (lo, hi, total), n in zip(geometry, (64, 256, 256)):
        assert lo == hi == 8  # the PSF's half-support, not 1/6 of the plane
        assert total >= n + 2 * 8  # edge padding (object, not data: no zero guard between the faces)
        assert total == scipy.fft.next_fast_len(total, real=True)
    assert np.prod([g[2] for g in geometry]) < 2 * 64 * 256 * 256
    image = np.random.default_rng(0).uniform(0.5, 1.0, (20, 30, 33)).astype(np.float32)
    padded, conv, crop = padded_problem(image, psf, None)
    assert padded.shape == tuple(scipy.fft.next_fast_len(n + 16, real=True) for n in image.shape)
    np.testing.assert_array_equal(padded[crop], image)
    assert padded[8 + 20 + 7, 8, 8] == image[-1, 0, 0]  # edge replicated on the high side
    assert conv.masked  # the padding is object, not data (its ratio is 1)
    for fn in (richardson_lucy, landweber):
        out = fn(image, psf, 3)
        assert out.shape == image.shape and out.dtype == np.float32


def test_2d_default_padding_keeps_the_published_rule():
    """A 2-D PSF still pads floor(min(h, w) / 6); the guard and the fast length change nothing inside."""
    from bigdecon.solvers.richardson_lucy import padded_geometry, published_pad

    truth, _ = points((100, 130), n=12)
    psf = gaussian_psf(4.0)
    image = convolve(truth, psf, mode="reflect") + 0.01
    geometry = padded_geometry(image.shape, psf.shape)
    assert [g[0] for g in geometry] == [16, 16] and published_pad(image.shape) == 16
    assert [g[2] for g in geometry] == [135, 162]  # fast lengths >= 132, 162: more edge replication
    # The published procedure: edge-replicate, solve periodically, crop.
    published = np.pad(image, 16, mode="edge")
    for accelerate in (False, True):
        ours = richardson_lucy(image, psf, 7, accelerate=accelerate)
        theirs = richardson_lucy(published, psf, 7, accelerate=accelerate, pad=0)[16:-16, 16:-16]
        inner = (slice(8, -8), slice(8, -8))
        assert np.abs(ours[inner] - theirs[inner]).max() <= 1e-5 * theirs.max()


def _blockwise(solve, image, block, halo, half):
    """The solver on blocks grown by ``halo``, padded only where they touch a face; interiors stitched."""
    out = np.empty_like(image)
    for start in np.ndindex(*[int(np.ceil(n / b)) for n, b in zip(image.shape, block)]):
        lo = [i * b for i, b in zip(start, block)]
        hi = [min(a + b, n) for a, b, n in zip(lo, block, image.shape)]
        grown = [(max(a - h, 0), min(b + h, n)) for a, b, h, n in zip(lo, hi, halo, image.shape)]
        pad = tuple((w if g0 == 0 else 0, w if g1 == n else 0) for (g0, g1), w, n in zip(grown, half, image.shape))
        res = solve(image[tuple(slice(*g) for g in grown)], pad)
        out[tuple(slice(a, b) for a, b in zip(lo, hi))] = res[
            tuple(slice(a - g0, b - g0) for a, b, (g0, _) in zip(lo, hi, grown))
        ]
    return out


@pytest.mark.parametrize(
    "solver",
    [
        dict(accelerate=False),
        dict(accelerate=True, alpha="schedule"),
        "landweber",
    ],
    ids=["rl-plain", "rl-schedule", "landweber"],
)
def test_3d_blocks_with_deconv_halo_equal_the_whole_volume(solver):
    from bigdecon.solvers.richardson_lucy import deconv_halo, psf_half_support

    rng = np.random.default_rng(4)
    psf = gaussian_psf((4.0, 2.0, 2.0))
    truth = np.zeros((40, 64, 64), np.float32)
    truth[tuple(rng.integers(0, s, 300) for s in truth.shape)] = rng.uniform(0.3, 1, 300)
    image = (rng.poisson((convolve(truth, psf, mode="reflect") + 0.02) * 300) / 300).astype(np.float32)
    iterations = 7
    # The padded real-FFT path (a measured PSF's); the mirror path is tested below.
    if solver == "landweber":
        solve = lambda a, pad: landweber(a, psf, iterations, pad=pad, boundary="edge")  # noqa: E731
        kind = "landweber"
    else:
        solve = lambda a, pad: richardson_lucy(a, psf, iterations, pad=pad, boundary="edge", **solver)  # noqa: E731
        kind = "rl"
    whole = solve(image, None)
    halo = deconv_halo(psf.shape, iterations, kind)
    chunked = _blockwise(solve, image, (10, 16, 16), halo, psf_half_support(psf.shape))
    assert np.abs(chunked - whole).max() <= 1e-5 * whole.max()
    # The adaptive (published) alpha is a global statistic: a block's own alpha does not converge to it.
    if solver == dict(accelerate=False):
        adaptive = lambda a, pad: richardson_lucy(a, psf, iterations, pad=pad, boundary="edge")  # noqa: E731
        off = _blockwise(adaptive, image, (10, 16, 16), halo, psf_half_support(psf.shape))
        assert np.abs(off - adaptive(image, None)).max() > 1e-4 * whole.max()


def _volume_with_beads(shape, psf, seed=4, count=300):
    rng = np.random.default_rng(seed)
    truth = np.zeros(shape, np.float32)
    truth[tuple(rng.integers(0, s, count) for s in shape)] = rng.uniform(0.3, 1, count)
    return (rng.poisson((convolve(truth, psf, mode="reflect") + 0.02) * 300) / 300).astype(np.float32)


def _mirror_unfolded(a):
    """``a`` followed by its reflection along every axis: one period of the mirror extension."""
    for axis in range(a.ndim):
        a = np.concatenate([a, np.flip(a, axis)], axis=axis)
    return a


@pytest.mark.parametrize(
    "solver",
    [dict(accelerate=False), dict(accelerate=True), dict(accelerate=True, alpha="schedule"), "landweber"],
    ids=["rl-plain", "rl-adaptive", "rl-schedule", "landweber"],
)
def test_symmetric_3d_psf_takes_the_unpadded_mirror_path(solver):
    """Default 3-D path == the periodic real-FFT solver on the mirror-unfolded (2N per axis) volume.

    One period of the half-sample symmetric extension, solved periodically, is the mirror
    boundary exactly; its sums are 8x the volume's, so even the adaptive alpha is the same.
    """
    from bigdecon.solvers.psf import widefield_psf
    from bigdecon.solvers.richardson_lucy import boundary_rule, padded_problem

    psf = gaussian_psf((4.0, 2.0, 2.0))  # 19 x 11 x 11: longer than half the z axis below
    image = _volume_with_beads((12, 40, 36), psf)
    assert boundary_rule(3, psf) == "mirror"
    assert boundary_rule(3, widefield_psf((15, 21, 21), 1.2, 0.52, 1.33, 0.1, 0.2)) == "mirror"  # Born-Wolf
    padded, _conv, crop = padded_problem(image, psf, None, "auto")
    assert padded.shape == image.shape  # no padding, no guard
    fn = landweber if solver == "landweber" else richardson_lucy
    kw = {} if solver == "landweber" else solver
    for iterations in (1, 7):
        ours = fn(image, psf, iterations, **kw)
        assert ours.shape == image.shape and ours.dtype == np.float32
        unfolded = fn(_mirror_unfolded(image), psf, iterations, pad=0, boundary="edge", **kw)
        ref = unfolded[: image.shape[0], : image.shape[1], : image.shape[2]]
        assert np.abs(ours - ref).max() <= 1e-5 * ref.max(), (iterations, np.abs(ours - ref).max() / ref.max())
        # The mirror path ignores pad.
        np.testing.assert_array_equal(fn(image, psf, iterations, pad=3, **kw), ours)


def test_mirror_operator_is_reflect_convolution():
    """``H`` of the mirror path is scipy.ndimage's ``mode="reflect"`` convolution (float64), also with a
    kernel longer than an axis (repeated reflections), and ``H^T 1 = 1``."""
    from bigdecon.solvers.richardson_lucy import padded_problem

    psf = gaussian_psf((5.0, 2.0, 3.0))
    x = np.random.default_rng(1).uniform(0, 1, (6, 30, 25)).astype(np.float32)
    assert psf.shape[0] > 2 * x.shape[0]
    _f, conv, _crop = padded_problem(x, psf, None, "mirror")
    ref = convolve(x.astype(np.float64), psf.astype(np.float64), mode="reflect")
    assert np.abs(conv.forward(x) - ref).max() <= 1e-6 * ref.max()
    np.testing.assert_allclose(conv.adjoint(np.ones_like(x)), 1.0, atol=1e-6)


def test_non_symmetric_or_2d_psf_keeps_the_padded_fft_path():
    from bigdecon.solvers.richardson_lucy import boundary_rule, padded_problem

    psf = gaussian_psf((4.0, 2.0, 2.0))
    skewed = psf * np.linspace(0.8, 1.2, psf.shape[2], dtype=np.float32)  # a measured-like asymmetry in x
    skewed /= skewed.sum()
    image = _volume_with_beads((12, 40, 36), psf)
    assert boundary_rule(3, skewed) == "edge" and boundary_rule(3, psf[:, :, :-1]) == "edge"  # even size
    assert boundary_rule(3, gaussian_psf(2.0)) == "edge"  # 2-D PSF: the published per-plane padding
    padded, _conv, _crop = padded_problem(image, skewed, None, "auto")
    assert padded.shape != image.shape  # padded with edge replication and a zero guard
    np.testing.assert_array_equal(richardson_lucy(image, skewed, 3), richardson_lucy(image, skewed, 3, boundary="edge"))
    with pytest.raises(ValueError, match="symmetric"):
        richardson_lucy(image, skewed, 3, boundary="mirror")
    with pytest.raises(ValueError, match="boundary"):
        landweber(image, psf, 3, boundary="periodic")


@pytest.mark.parametrize("iterations", [7, 20])
@pytest.mark.parametrize(
    "solver",
    [dict(accelerate=False), dict(accelerate=True, alpha="schedule"), "landweber"],
    ids=["rl-plain", "rl-schedule", "landweber"],
)
def test_mirror_path_blocks_with_deconv_halo_equal_the_whole_volume(solver, iterations):
    """Mirror path: blocks grown by deconv_halo, clipped at the faces, solved with no pad at all."""
    from bigdecon.solvers.richardson_lucy import deconv_halo

    psf = gaussian_psf((4.0, 2.0, 2.0))
    image = _volume_with_beads((40, 64, 64), psf)
    if solver == "landweber":
        solve = lambda a, pad: landweber(a, psf, iterations)  # noqa: E731
        kind = "landweber"
    else:
        solve = lambda a, pad: richardson_lucy(a, psf, iterations, **solver)  # noqa: E731
        kind = "rl" if solver == dict(accelerate=False) else "rl-schedule"
    whole = solve(image, None)
    chunked = _blockwise(solve, image, (10, 16, 16), deconv_halo(psf.shape, iterations, kind), (0, 0, 0))
    assert np.abs(chunked - whole).max() <= 1e-5 * whole.max()


def test_richardson_lucy_rejects_unknown_alpha_rule():
    with pytest.raises(ValueError, match="alpha"):
        richardson_lucy(np.ones((16, 16), np.float32), gaussian_psf(2.0), 2, alpha="nesterov")


def test_gaussian_psf_matches_published_grid():
    psf = gaussian_psf(3.0)
    sigma = 3.0 / (2 * np.sqrt(2 * np.log(2)))
    half = int(np.ceil(sigma * np.sqrt(-2 * np.log(0.0002)))) + 1
    assert psf.shape == (2 * half + 1, 2 * half + 1)
    assert abs(psf.sum() - 1) < 1e-6 and psf.dtype == np.float32
    profile = psf[half] / psf[half, half]
    # Half maximum at +-1.5 px: interpolate between samples 1 and 2.
    assert profile[half + 1] > 0.5 > profile[half + 2]


# ----------------------------------------------------------------------------- background, up-sampling


@pytest.mark.parametrize("mode", [1, 2, 3, 4, 5])
def test_background_removes_a_smooth_ramp(mode):
    yy, xx = np.mgrid[:128, :128]
    ramp = (0.3 + 0.2 * xx / 128).astype(np.float32)
    spots = np.zeros_like(ramp)
    spots[32::32, 32::32] = 0.5
    image = ramp + gaussian_filter(spots, 1.5) * 10
    bg = estimate_background(image, mode)
    assert bg.shape == image.shape and bg.dtype == np.float32
    corrected = np.clip(image - bg, 0, None)
    # Spots stay, the flat part drops well below the original level.
    assert corrected[64, 64] > 0.5 * image[64, 64] - ramp[64, 64]
    # Modes 1 and 3 remove part of the background by design (estimate on image / 2.5).
    assert np.median(corrected) < 0.75 * np.median(image)


def test_background_mode_zero_is_none():
    assert estimate_background(np.ones((32, 32), np.float32), 0).max() == 0


def test_upsampling_shapes_and_values():
    yy, xx = np.mgrid[:40, :36]
    img = (1 + np.cos(2 * np.pi * xx / 12) * np.sin(2 * np.pi * yy / 10)).astype(np.float32)
    up = fourier_upsample(img)
    assert up.shape == (80, 72) and up.dtype == np.float32
    np.testing.assert_allclose(up[::2, ::2][4:-4, 4:-4], img[4:-4, 4:-4], atol=1e-4)
    sp = spatial_upsample(img)
    assert sp.shape == (80, 72) and np.array_equal(sp[::2, ::2], img) and sp[1::2].max() == 0
    out = sparse_deconvolve(img * 100, fwhm=3, up_sample=1, sparse_iters=10)
    assert out.shape == (80, 72)
    out = sparse_deconvolve(np.stack([img, img]) * 100, fwhm=3, up_sample=2, sparse_iters=10, fidelity=30, sparsity=3)
    assert out.shape == (2, 80, 72)


# ----------------------------------------------------------------------------- the public edge


def test_units_dtype_and_layout_do_not_matter(stack):
    ints = np.round(stack).astype(np.uint16)
    a = sparse_deconvolve(ints, fwhm=3, sparse_iters=20)
    b = sparse_deconvolve(ints.astype(np.float32), fwhm=3, sparse_iters=20)
    c = sparse_deconvolve(np.asfortranarray(ints.astype(np.float64)), fwhm=3, sparse_iters=20)
    assert a.dtype == b.dtype == c.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * a.max())
    np.testing.assert_allclose(a, c, rtol=0, atol=1e-5 * a.max())
    # Output is in the input's intensity units: scaling the input scales the output.
    d = sparse_deconvolve(ints.astype(np.float32) * 3, fwhm=3, sparse_iters=20)
    np.testing.assert_allclose(d, 3 * b, rtol=0, atol=1e-4 * d.max())


def test_zero_image_gives_zeros():
    out = sparse_deconvolve(np.zeros((3, 32, 32), np.float32), fwhm=3)
    assert out.shape == (3, 32, 32) and not out.any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fwhm=0), "fwhm"),
        (dict(fwhm=float("nan")), "fwhm"),
        (dict(fwhm=-2), "fwhm"),
        (dict(fwhm=3, sparse_iters=-1), "sparse_iters"),
        (dict(fwhm=3, deconv_iters=-3), "deconv_iters"),
        (dict(fwhm=3, fidelity=0), "fidelity"),
        (dict(fwhm=3, fidelity=float("nan")), "fidelity"),
        (dict(fwhm=3, sparsity=-1), "sparsity"),
        (dict(fwhm=3, tcontinuity=float("inf")), "tcontinuity"),
        (dict(fwhm=3, background=6), "background"),
        (dict(fwhm=3, deconv_type=4), "deconv_type"),
        (dict(fwhm=3, deconv_type=3, wb_beta=1.5), "wb_beta"),
        (dict(fwhm=3, up_sample=-1), "up_sample"),
        (dict(), "fwhm"),
        (dict(fwhm=40), "larger than the image"),
        (dict(psf=np.ones((80, 80)), psf_as_is=True), "larger than the image"),
        (dict(fwhm=(2, 3, 3)), "3-D image"),
    ],
)
def test_bad_parameters_name_the_problem(kwargs, message):
    image = np.ones((32, 32), np.float32)
    with pytest.raises(ValueError, match=message):
        sparse_deconvolve(image, **kwargs)


def test_bad_images_name_the_problem():
    with pytest.raises(InputError, match="NaN"):
        sparse_deconvolve(np.full((3, 16, 16), np.nan, np.float32), fwhm=2)
    with pytest.raises(InputError, match="infinite"):
        img = np.ones((16, 16), np.float32)
        img[3, 3] = np.inf
        sparse_deconvolve(img, fwhm=2)
    with pytest.raises(InputError, match="2-D"):
        sparse_deconvolve(np.ones((2, 3, 16, 16), np.float32), fwhm=2)
    with pytest.raises(InputError, match="real"):
        sparse_deconvolve(np.ones((16, 16), np.complex64), fwhm=2)


# ----------------------------------------------------------------------------- GPU


def _cupy():
    from bigdecon._backend import gpu_available

    if not gpu_available():
        pytest.skip("no CUDA GPU with CuPy here")
    import cupy

    return cupy


@pytest.mark.gpu
@pytest.mark.parametrize("params", [dict(fwhm=3), dict(fwhm=3, background=0, up_sample=1), dict(fwhm=3, deconv_type=2)])
def test_cupy_matches_numpy(stack, params):
    cp = _cupy()
    cpu = sparse_deconvolve(stack, **params)
    gpu = sparse_deconvolve(cp.asarray(stack), **params)
    assert isinstance(gpu, cp.ndarray) and gpu.dtype == cp.float32
    assert float(np.abs(cp.asnumpy(gpu) - cpu).max()) <= 1e-4 * float(cpu.max())


def test_version_is_exported():
    assert bigdecon.__version__


@pytest.mark.parametrize("shape, psf", [((24, 48, 48), (3.0, 2.0, 2.0)), ((96, 96), 2.5)])
def test_richardson_lucy_constant_start_matches_scikit_image(shape, psf):
    """From scikit-image's start (0.5 everywhere) the iteration is scikit-image's, away from the faces."""
    from skimage.restoration import richardson_lucy as sk_rl

    rng = np.random.default_rng(3)
    truth = np.zeros(shape, np.float32)
    inner = tuple(slice(8, n - 8) for n in shape)
    truth[inner] = (rng.random(truth[inner].shape) > 0.995).astype(np.float32)
    kernel = bigdecon.gaussian_psf(psf)
    image = np.clip(convolve(truth, kernel, mode="constant"), 0, None).astype(np.float32) + 1e-3
    ours = richardson_lucy(image, kernel, iterations=10, accelerate=False, start=0.5)
    theirs = sk_rl(image, kernel, num_iter=10, clip=False)
    core = tuple(slice(8, n - 8) for n in shape)
    assert ours.dtype == np.float32
    assert np.corrcoef(ours[core].ravel(), theirs[core].ravel())[0, 1] > 0.9999
    # The published start (the image) is a different trajectory.
    default = richardson_lucy(image, kernel, iterations=10, accelerate=False)
    assert np.abs(default - ours)[core].max() > 1e-3 * ours.max()


@pytest.mark.parametrize("bad", [0, -1.0, "zeros", True])
def test_richardson_lucy_rejects_bad_start(bad):
    with pytest.raises(ValueError, match="start"):
        richardson_lucy(np.ones((16, 16), np.float32), bigdecon.gaussian_psf(2.0), iterations=2, start=bad)
