"""hog_features / hog_similarity against skimage.feature.hog (+ scipy.stats.spearmanr).

scikit-image sums each cell in a 32-bit C float, so float64 features agree to ~1e-7 (measured
<= 1e-7; tolerance 1e-6), float32 ones to 1e-6 as well (measured <= 1.2e-7; orientations are binned
from float64 angles in both).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.feature import hog

import metrics

hog_module = importlib.import_module("metrics.hog")  # the attribute metrics.hog_* are functions
TOL = 1e-6

CASES = [
    dict(size=(48, 48)),  # the paper's defaults at the smallest allowed size
    dict(size=(64, 64)),  # the paper's defaults, 2 x 2 blocks
    dict(size=(50, 67)),  # odd sizes: pixels beyond the last full cell are ignored
    dict(size=(28, 28), pixels_per_cell=(4, 4)),
    dict(size=(23, 19), pixels_per_cell=(5, 3), cells_per_block=(2, 1), block_norm="L1"),
    dict(size=(28, 28), pixels_per_cell=(7, 7), cells_per_block=(2, 2), block_norm="L1-sqrt"),
    dict(size=(32, 40), pixels_per_cell=(8, 8), cells_per_block=(1, 1), block_norm="L2", orientations=6),
    dict(size=(9, 9), pixels_per_cell=(3, 3), cells_per_block=(2, 2), orientations=7),
]


def _maps(kind: str, shape, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if kind == "sparse":
        x = x * (rng.random(shape) < 0.15)
    elif kind == "ties":
        x = np.round(x)
    return torch.from_numpy(x)


@pytest.fixture(params=["index_add", "onehot"])
def histogram_path(request, monkeypatch):
    """Both cell-histogram paths on the CPU (``onehot`` is the default on GPUs)."""
    monkeypatch.setitem(hog_module.HISTOGRAM, "cpu", request.param)
    return request.param


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
@pytest.mark.parametrize("kind", ["normal", "sparse", "ties"])
def test_features_match_skimage(case, kind, histogram_path):
    case = dict(case)
    size = case.pop("size")
    x = _maps(kind, (3, *size))
    ours = metrics.hog_features(x, **case)
    case.setdefault("pixels_per_cell", (16, 16))  # our default (the paper's); scikit-image's is (8, 8)
    ref = np.stack([hog(m, feature_vector=True, **case) for m in x.numpy()])
    assert ours.shape == ref.shape and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=TOL)
    ours32 = metrics.hog_features(x.float(), **case)
    assert ours32.dtype == torch.float32
    np.testing.assert_allclose(ours32.double().numpy(), ref, rtol=0, atol=TOL)


def test_batch_of_one_and_chunking(monkeypatch, histogram_path):
    x = _maps("sparse", (5, 49, 50), seed=1)
    whole = metrics.hog_features(x)
    monkeypatch.setitem(hog_module.CHUNK_ELEMENTS, "cpu", 49 * 50 * 10 * 2)  # two maps per chunk
    assert torch.equal(metrics.hog_features(x), whole)
    assert torch.equal(metrics.hog_features(x[2:3]), whole[2:3])


def test_too_small_names_size_and_minimum():
    with pytest.raises(ValueError, match=r"47 x 60 pixels is smaller than one block .* = 48 x 48"):
        metrics.hog_features(torch.rand(2, 47, 60))
    with pytest.raises(ValueError, match=r"28 x 28 pixels is smaller than one block .* = 48 x 48"):  # MNIST
        metrics.hog_features(torch.rand(1, 28, 28))
    with pytest.raises(ValueError, match=r"10 x 10 pixels .* = 12 x 8"):
        metrics.hog_features(torch.rand(1, 10, 10), pixels_per_cell=(4, 4), cells_per_block=(3, 2))


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown block_norm 'L3'"):
        metrics.hog_features(torch.rand(1, 48, 48), block_norm="L3")
    with pytest.raises(ValueError, match="expected grey maps B x H x W"):
        metrics.hog_features(torch.rand(1, 1, 48, 48))
    x = torch.rand(2, 48, 48)
    x[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="hog: inputs hold 1 NaN values"):
        metrics.hog_features(x)
    with pytest.raises(ValueError, match="hog_similarity: inputs hold 1 NaN values"):
        metrics.hog_similarity(torch.rand(2, 48, 48), x)


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_similarity_is_spearman_of_features(channels):
    shape = (4, 28, 28) if channels is None else (4, channels, 28, 28)
    a = _maps("sparse", shape, seed=2)
    b = a + 0.3 * _maps("normal", shape, seed=3)
    ours = metrics.hog_similarity(a, b, pixels_per_cell=(4, 4))
    for i in range(4):
        # 4-D maps are reduced to sum_c |a| first (documented)
        ma, mb = (m[i] if channels is None else m[i].abs().sum(0) for m in (a, b))
        fa, fb = (hog(m.numpy(), pixels_per_cell=(4, 4)) for m in (ma, mb))
        # features equal to ~1e-8 may still swap the ranks of near-equal values
        assert abs(float(ours[i]) - spearmanr(fa, fb).statistic) < 1e-5
    same = metrics.hog_similarity(a, a, pixels_per_cell=(4, 4))
    assert torch.allclose(same, torch.ones(4, dtype=torch.float64))


def test_flat_map_has_no_correlation():
    a = torch.zeros(2, 48, 48)
    b = torch.rand(2, 48, 48)
    assert metrics.count_nan(metrics.hog_similarity(a, b)) == 2


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_reference(dtype):
    x = _maps("sparse", (4, 64, 80), seed=4)
    ref = np.stack([hog(m, pixels_per_cell=(16, 16)) for m in x.numpy()])
    ours = metrics.hog_features(x.to("cuda", dtype))
    assert ours.device.type == "cuda"
    np.testing.assert_allclose(ours.double().cpu().numpy(), ref, rtol=0, atol=TOL)
    y = x + 0.3 * _maps("normal", (4, 64, 80), seed=5)
    cpu = metrics.hog_similarity(x.to(dtype), y.to(dtype), pixels_per_cell=(4, 4))
    gpu = metrics.hog_similarity(x.to("cuda", dtype), y.to("cuda", dtype), pixels_per_cell=(4, 4))
    assert gpu.device.type == "cuda" and gpu.dtype == dtype
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-10 if dtype == torch.float64 else 1e-5)


def test_float32_maps_fall_in_the_same_bins():
    # orientations are binned from float64 angles, as scikit-image does for float32 images
    x = torch.rand(2, 224, 224, generator=torch.Generator().manual_seed(5))
    ref = np.stack([hog(m, pixels_per_cell=(16, 16)) for m in x.numpy()])
    np.testing.assert_allclose(metrics.hog_features(x).double().numpy(), ref, rtol=0, atol=TOL)
