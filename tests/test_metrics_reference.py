"""Parity of the batched metrics with scikit-image and SciPy (float64 to 1e-5 or better; float32 stated)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from skimage.feature import hog
from skimage.metrics import structural_similarity

import metrics


def _maps(kind: str, shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "ties":  # heavy ties: few distinct values
        x = torch.round(x * 2) / 2
    elif kind == "sparse":  # mostly exact zeros, as ReLU-network maps
        x = torch.where(torch.rand(shape, generator=g, dtype=torch.float64) < 0.8, torch.zeros_like(x), x)
    elif kind == "unit":
        x = torch.rand(shape, generator=g, dtype=torch.float64)
    return x.to(dtype)


# ----------------------------------------------------------------------------------------------- SSIM

SSIM_CASES = [
    dict(),
    dict(gaussian_weights=True),
    dict(gaussian_weights=True, use_sample_covariance=False),
    dict(use_sample_covariance=False),
    dict(win_size=3),
    dict(win_size=5, K1=0.02, K2=0.05),
    dict(gaussian_weights=True, sigma=0.8),
    dict(gaussian_weights=True, sigma=1.5, win_size=5),  # a window narrower than the Gaussian
    dict(gaussian_weights=True, sigma=0.5, win_size=9),  # wider
]


@pytest.mark.parametrize("kw", SSIM_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
@pytest.mark.parametrize("size", [(28, 28), (13, 17), (11, 11)])
@pytest.mark.parametrize("data_range", [1.0, 2.5])
def test_ssim_matches_skimage_2d(kw, size, data_range):
    a = _maps("unit", (3, *size)) * data_range
    b = (a + 0.2 * _maps("normal", (3, *size), seed=1)).clamp(0, data_range)
    ours = metrics.ssim(a, b, data_range=data_range, **kw)
    for i in range(3):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), data_range=data_range, **kw)
        assert abs(float(ours[i]) - ref) < 1e-10, (i, float(ours[i]), ref)


def test_ssim_smallest_allowed_size_and_errors():
    a, b = _maps("unit", (2, 7, 7)), _maps("unit", (2, 7, 7), seed=1)
    ref = structural_similarity(a[0].numpy(), b[0].numpy(), data_range=1.0)
    assert abs(float(metrics.ssim(a, b, data_range=1.0)[0]) - ref) < 1e-10
    with pytest.raises(ValueError, match="win_size 7 exceeds the image extent 6 x 6"):
        metrics.ssim(a[:, :6, :6], b[:, :6, :6], data_range=1.0)
    with pytest.raises(ValueError, match="win_size must be odd"):
        metrics.ssim(a, b, data_range=1.0, win_size=4)
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.ssim(a, b[:, :6], data_range=1.0)


@pytest.mark.parametrize("gaussian", [False, True])
def test_ssim_multichannel_matches_channel_axis(gaussian):
    a = _maps("unit", (4, 3, 24, 20))
    b = (a + 0.3 * _maps("normal", (4, 3, 24, 20), seed=2)).clamp(0, 1)
    ours = metrics.ssim(a, b, data_range=1.0, gaussian_weights=gaussian)
    for i in range(4):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1.0, channel_axis=0,
                                    gaussian_weights=gaussian)
        assert abs(float(ours[i]) - ref) < 1e-10


def test_ssim_float32_within_stated_tolerance():
    a = _maps("unit", (8, 28, 28))
    b = (a + 0.1 * _maps("normal", (8, 28, 28), seed=3)).clamp(0, 1)
    ours = metrics.ssim(a.float(), b.float(), data_range=1.0, gaussian_weights=True)
    assert ours.dtype == torch.float32
    for i in range(8):
        ref = structural_similarity(a[i].numpy(), b[i].numpy(), data_range=1.0, gaussian_weights=True)
        assert abs(float(ours[i]) - ref) < 1e-5  # float32


def test_ssim_identical_is_one_and_batch_size_does_not_matter():
    a = _maps("unit", (5, 16, 16))
    assert torch.allclose(metrics.ssim(a, a, data_range=1.0), torch.ones(5, dtype=torch.float64))
    b = _maps("unit", (5, 16, 16), seed=4)
    full = metrics.ssim(a, b, data_range=1.0)
    single = torch.cat([metrics.ssim(a[i : i + 1], b[i : i + 1], data_range=1.0) for i in range(5)])
    assert torch.equal(full, single)


# ------------------------------------------------------------------------------------- rank / Pearson


@pytest.mark.parametrize("kind", ["normal", "ties", "sparse"])
@pytest.mark.parametrize("shape", [(1, 50), (16, 28, 28), (3, 3, 8, 8)])
@pytest.mark.parametrize("absolute", [False, True])
def test_spearman_matches_scipy(kind, shape, absolute):
    a = _maps(kind, shape)
    b = 0.5 * a + _maps(kind, shape, seed=5)
    ours = metrics.spearman(a, b, absolute=absolute)
    for i in range(shape[0]):
        x, y = a[i].flatten().numpy(), b[i].flatten().numpy()
        if absolute:
            x, y = np.abs(x), np.abs(y)
        assert abs(float(ours[i]) - spearmanr(x, y)[0]) < 1e-12


@pytest.mark.parametrize("kind", ["normal", "ties", "sparse"])
def test_pearson_matches_scipy(kind):
    a = _maps(kind, (6, 12, 12))
    b = a + _maps(kind, (6, 12, 12), seed=6)
    ours = metrics.pearson(a, b)
    for i in range(6):
        assert abs(float(ours[i]) - pearsonr(a[i].flatten().numpy(), b[i].flatten().numpy())[0]) < 1e-12


def test_rank_correlations_float32():
    a = _maps("sparse", (8, 28, 28), dtype=torch.float32)
    b = a + _maps("sparse", (8, 28, 28), seed=7, dtype=torch.float32)
    ours = metrics.spearman(a, b)
    assert ours.dtype == torch.float32
    for i in range(8):
        assert abs(float(ours[i]) - spearmanr(a[i].flatten().numpy(), b[i].flatten().numpy())[0]) < 1e-5


def test_constant_maps_give_nan_as_scipy_and_nan_inputs_raise():
    a = torch.zeros(3, 10, 10, dtype=torch.float64)
    a[1] = _maps("normal", (10, 10))
    b = _maps("normal", (3, 10, 10), seed=8)
    with pytest.warns(Warning):  # SciPy warns and returns NaN for a constant input
        ref = spearmanr(a[0].flatten().numpy(), b[0].flatten().numpy())[0]
    assert np.isnan(ref)
    for fn in (metrics.spearman, metrics.pearson):
        out = fn(a, b)
        assert torch.isnan(out[0]) and torch.isnan(out[2]) and not torch.isnan(out[1])
    assert metrics.count_nan(metrics.spearman(a, b)) == 2
    bad = b.clone()
    bad[1, 2, 3] = float("nan")
    for fn in (metrics.spearman, metrics.pearson, metrics.topk_intersection):
        with pytest.raises(ValueError, match="1 NaN values"):
            fn(a, bad)
    with pytest.raises(ValueError, match="1 NaN values"):
        metrics.ssim(a, bad, data_range=1.0)


def test_rankdata_matches_scipy():
    from scipy.stats import rankdata as ref

    x = _maps("ties", (4, 37))
    assert np.array_equal(metrics.rankdata(x).numpy(), ref(x.numpy(), axis=1))


def test_topk_intersection_against_a_set_computation():
    a = _maps("normal", (5, 100))
    b = a + 0.5 * _maps("normal", (5, 100), seed=9)
    ours = metrics.topk_intersection(a, b, 10)
    for i in range(5):
        sa = set(np.argsort(-np.abs(a[i].numpy()))[:10])
        sb = set(np.argsort(-np.abs(b[i].numpy()))[:10])
        assert float(ours[i]) == len(sa & sb) / 10
    assert torch.equal(metrics.topk_intersection(a, b, 0.1), ours)
    with pytest.raises(ValueError, match="k must be"):
        metrics.topk_intersection(a, b, 0)


# ------------------------------------------------------------------------------------------------ HOG

HOG_CASES = [
    dict(pixels_per_cell=(16, 16), cells_per_block=(3, 3), block_norm="L2-Hys", size=(64, 64)),
    dict(pixels_per_cell=(16, 16), cells_per_block=(3, 3), block_norm="L2-Hys", size=(50, 67)),
    dict(pixels_per_cell=(4, 4), cells_per_block=(3, 3), block_norm="L2-Hys", size=(28, 28)),
    dict(pixels_per_cell=(5, 3), cells_per_block=(2, 1), block_norm="L1", size=(23, 19)),
    dict(pixels_per_cell=(7, 7), cells_per_block=(2, 2), block_norm="L1-sqrt", size=(28, 28)),
    dict(pixels_per_cell=(8, 8), cells_per_block=(1, 1), block_norm="L2", size=(32, 40), orientations=6),
]


@pytest.mark.parametrize("case", HOG_CASES, ids=lambda c: f"{c['size']}-{c['pixels_per_cell']}-{c['block_norm']}")
@pytest.mark.parametrize("kind", ["normal", "sparse"])
def test_hog_matches_skimage(case, kind):
    case = dict(case)
    size = case.pop("size")
    x = _maps(kind, (3, *size))
    ours = metrics.hog_features(x, **case)
    for i in range(3):
        ref = hog(x[i].numpy(), feature_vector=True, **case)
        assert ours[i].shape == ref.shape
        # scikit-image sums each cell's magnitudes in a 32-bit C float: agreement is ~1e-8, not 1e-15
        assert np.abs(ours[i].numpy() - ref).max() < 1e-6


def test_hog_too_small_names_the_minimum():
    with pytest.raises(ValueError, match=r"28 x 28 pixels is smaller than one block .* = 48 x 48"):
        metrics.hog_features(torch.rand(1, 28, 28))


def test_hog_similarity_is_spearman_of_features():
    a = _maps("sparse", (4, 1, 28, 28))
    b = a + 0.3 * _maps("normal", (4, 1, 28, 28), seed=10)
    ours = metrics.hog_similarity(a, b, pixels_per_cell=(4, 4))
    for i in range(4):
        fa = hog(np.abs(a[i, 0].numpy()), pixels_per_cell=(4, 4), cells_per_block=(3, 3), block_norm="L2-Hys")
        fb = hog(np.abs(b[i, 0].numpy()), pixels_per_cell=(4, 4), cells_per_block=(3, 3), block_norm="L2-Hys")
        assert abs(float(ours[i]) - spearmanr(fa, fb)[0]) < 1e-5  # near-tied features may swap ranks


# ------------------------------------------------------------------------------------------ normalize


def _np_abs(m):  # the paper's VisualizeImageGrayscale, channels first
    s = np.abs(m).sum(0)
    vmax, vmin = np.percentile(s, 99), s.min()
    return np.clip((s - vmin) / (vmax - vmin), 0, 1)


def _np_signed(m):
    s = m.sum(0)
    return np.clip(s / np.percentile(np.abs(s), 99), -1, 1)


@pytest.mark.parametrize("kind", ["normal", "sparse"])
def test_normalize_matches_numpy_reference_per_sample(kind):
    maps = _maps(kind, (5, 3, 20, 20))
    ab, sg, mm = (metrics.normalize(maps, m) for m in ("abs", "signed", "minmax"))
    for i in range(5):
        m = maps[i].numpy()
        np.testing.assert_allclose(ab[i].numpy(), _np_abs(m), atol=1e-12)
        np.testing.assert_allclose(sg[i].numpy(), _np_signed(m), atol=1e-12)
        np.testing.assert_allclose(mm[i].numpy(), (m - m.min()) / (m.max() - m.min()), atol=1e-12)
    # per sample: the same map normalizes the same whatever the rest of the batch holds
    alone = metrics.normalize(maps[:1], "abs")
    with_big = metrics.normalize(torch.cat([maps[:1], 100 * maps[1:]]), "abs")
    assert torch.equal(alone[0], with_big[0])


def test_normalize_constant_maps_and_bad_mode():
    z = torch.zeros(2, 1, 5, 5)
    for mode in ("abs", "signed", "minmax"):
        assert torch.equal(metrics.normalize(z, mode), torch.zeros_like(metrics.normalize(z, mode)))
    with pytest.raises(ValueError, match="unknown normalization 'log'; accepted: abs, signed, minmax, none"):
        metrics.normalize(z, "log")


@pytest.mark.gpu
def test_cuda_equals_cpu():
    a = _maps("sparse", (4, 3, 32, 32))
    b = a + _maps("normal", (4, 3, 32, 32), seed=11)
    for fn in (lambda x, y: metrics.ssim(x, y, data_range=2.0, gaussian_weights=True), metrics.spearman,
               metrics.pearson, lambda x, y: metrics.hog_similarity(x, y, pixels_per_cell=(4, 4)),
               lambda x, y: metrics.topk_intersection(x, y, 0.1)):
        cpu = fn(a, b)
        gpu = fn(a.cuda(), b.cuda()).cpu()
        torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-10)
