"""metrics.ssim against skimage.metrics.structural_similarity: 1e-10 in float64, 2e-6 in float32."""

from __future__ import annotations

import importlib
import itertools

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import metrics

ssim_module = importlib.import_module("metrics.ssim")  # the attribute metrics.ssim is the function

F64_TOL = 1e-10  # measured: <= 7e-16
F32_TOL = 2e-6  # measured: <= 4e-7 against the float64 reference (scikit-image's own float32: 9e-8)


def _pair(shape, kind="unit", seed=0, data_range=1.0):
    rng = np.random.default_rng(seed)
    a = rng.random(shape)
    b = np.clip(a + 0.25 * rng.standard_normal(shape), 0, 1)
    if kind == "sparse":  # mostly exact zeros, as ReLU-network maps
        a, b = a * (rng.random(shape) < 0.15), b * (rng.random(shape) < 0.15)
    elif kind == "ties":
        a, b = np.round(a * 2) / 2, np.round(b * 2) / 2
    elif kind == "constant":
        a, b = np.full(shape, 0.3), np.full(shape, 0.3)
    return torch.from_numpy(a * data_range), torch.from_numpy(b * data_range)


def _reference(a: torch.Tensor, b: torch.Tensor, **kw) -> np.ndarray:
    axis = 0 if a.ndim == 4 else None
    pairs = zip(a.numpy(), b.numpy(), strict=True)
    return np.array([structural_similarity(x, y, channel_axis=axis, **kw) for x, y in pairs])


COMBOS = list(itertools.product([False, True], [True, False], [None, 3, 7, 9], [1.0, 2.5]))


@pytest.fixture(params=["flat", "conv"])
def filter_path(request, monkeypatch):
    """Both window filters on the CPU (``conv`` is the default on GPUs)."""
    monkeypatch.setitem(ssim_module.FILTER, "cpu", request.param)
    return request.param


@pytest.mark.parametrize(("gaussian", "sample_cov", "win_size", "data_range"), COMBOS)
def test_every_parameter_combination(gaussian, sample_cov, win_size, data_range, filter_path):
    a, b = _pair((3, 17, 23), data_range=data_range)  # odd, non-square
    kw = dict(data_range=data_range, gaussian_weights=gaussian, use_sample_covariance=sample_cov, win_size=win_size)
    ours = metrics.ssim(a, b, **kw)
    assert ours.dtype == torch.float64 and ours.shape == (3,)
    np.testing.assert_allclose(ours.numpy(), _reference(a, b, **kw), rtol=0, atol=F64_TOL)


@pytest.mark.parametrize(
    "kw",
    [dict(K1=0.05, K2=0.1), dict(gaussian_weights=True, sigma=0.7), dict(gaussian_weights=True, sigma=2.0),
     dict(gaussian_weights=True, sigma=1.5, win_size=5), dict(gaussian_weights=True, sigma=0.5, win_size=11)],
    ids=["K1-K2", "sigma0.7", "sigma2", "window-narrower-than-gaussian", "window-wider-than-gaussian"],
)
def test_constants_sigma_and_window_gaussian_mismatch(kw, filter_path):
    a, b = _pair((2, 21, 26), seed=1)
    np.testing.assert_allclose(metrics.ssim(a, b, data_range=1.0, **kw).numpy(),
                               _reference(a, b, data_range=1.0, **kw), rtol=0, atol=F64_TOL)


MORE_CASES = [
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


@pytest.mark.parametrize("kw", MORE_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
@pytest.mark.parametrize("size", [(28, 28), (13, 17), (11, 11)])
@pytest.mark.parametrize("data_range", [1.0, 2.5])
def test_sizes_and_constants_on_the_default_filter(kw, size, data_range):
    """MNIST-sized, odd non-square and 11 x 11 maps (the smallest for the Gaussian window), other K1/K2 and sigmas."""
    a, b = _pair((3, *size), seed=8, data_range=data_range)
    np.testing.assert_allclose(metrics.ssim(a, b, data_range=data_range, **kw).numpy(),
                               _reference(a, b, data_range=data_range, **kw), rtol=0, atol=F64_TOL)


@pytest.mark.parametrize(("win_size", "gaussian"), [(3, False), (7, False), (None, False), (None, True), (5, True)])
def test_smallest_allowed_size(win_size, gaussian, filter_path):
    side = win_size or (11 if gaussian else 7)
    a, b = _pair((2, side, side), seed=2)
    kw = dict(data_range=1.0, win_size=win_size, gaussian_weights=gaussian)
    np.testing.assert_allclose(metrics.ssim(a, b, **kw).numpy(), _reference(a, b, **kw), rtol=0, atol=F64_TOL)
    with pytest.raises(ValueError, match=f"win_size {side} exceeds the image extent {side - 1} x {side}"):
        metrics.ssim(a[:, 1:], b[:, 1:], **kw)
    with pytest.raises(ValueError, match=f"win_size {side} exceeds the image extent {side - 1} x {side - 1}"):
        metrics.ssim(a[:, 1:, 1:], b[:, 1:, 1:], **kw)


@pytest.mark.parametrize("kind", ["unit", "sparse", "ties", "constant"])
@pytest.mark.parametrize("gaussian", [False, True])
def test_multichannel_and_map_kinds(kind, gaussian, filter_path):
    a, b = _pair((3, 3, 24, 19), kind=kind, seed=3)
    ours = metrics.ssim(a, b, data_range=1.0, gaussian_weights=gaussian)
    np.testing.assert_allclose(ours.numpy(), _reference(a, b, data_range=1.0, gaussian_weights=gaussian),
                               rtol=0, atol=F64_TOL)


@pytest.mark.parametrize("batch", [1, 37])
def test_batch_sizes_and_chunking_do_not_change_scores(batch, monkeypatch, filter_path):
    a, b = _pair((batch, 2, 16, 16), seed=4)
    whole = metrics.ssim(a, b, data_range=1.0, gaussian_weights=True)
    np.testing.assert_allclose(whole.numpy(), _reference(a, b, data_range=1.0, gaussian_weights=True),
                               rtol=0, atol=F64_TOL)
    monkeypatch.setitem(ssim_module.CHUNK_ELEMENTS, "cpu", 4 * 16 * 16 * 3)  # 3 maps per chunk
    chunked = metrics.ssim(a, b, data_range=1.0, gaussian_weights=True)
    assert torch.equal(whole, chunked)
    single = torch.cat([metrics.ssim(a[i : i + 1], b[i : i + 1], data_range=1.0, gaussian_weights=True)
                        for i in range(batch)])
    torch.testing.assert_close(single, whole, rtol=0, atol=1e-14)


def test_identical_maps_score_one_and_batch_size_does_not_matter():
    a, b = _pair((5, 16, 16), seed=9)
    assert torch.allclose(metrics.ssim(a, a, data_range=1.0), torch.ones(5, dtype=torch.float64))
    full = metrics.ssim(a, b, data_range=1.0)
    single = torch.cat([metrics.ssim(a[i : i + 1], b[i : i + 1], data_range=1.0) for i in range(5)])
    assert torch.equal(full, single)


def test_per_pair_data_range():
    a, b = _pair((3, 12, 12), seed=5)
    ranges = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    ours = metrics.ssim(a, b, data_range=ranges)
    ref = [structural_similarity(a[i].numpy(), b[i].numpy(), data_range=float(ranges[i])) for i in range(3)]
    np.testing.assert_allclose(ours.numpy(), ref, rtol=0, atol=F64_TOL)


@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize(("shape", "kind"), [((4, 3, 30, 30), "sparse"), ((8, 28, 28), "unit")], ids=["4d", "3d"])
def test_float32_within_stated_tolerance(gaussian, shape, kind, filter_path):
    a, b = _pair(shape, kind=kind, seed=6)
    ours = metrics.ssim(a.float(), b.float(), data_range=1.0, gaussian_weights=gaussian)
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.double().numpy(), _reference(a, b, data_range=1.0, gaussian_weights=gaussian),
                               rtol=0, atol=F32_TOL)


def test_errors():
    a, b = _pair((2, 9, 9))
    with pytest.raises(ValueError, match=r"differ in shape: \(2, 9, 9\) vs \(2, 9, 8\)"):
        metrics.ssim(a, b[..., :8], data_range=1.0)
    with pytest.raises(ValueError, match=r"differ in shape: \(2, 9, 9\) vs \(2, 8, 9\)"):
        metrics.ssim(a, b[:, :8], data_range=1.0)
    with pytest.raises(ValueError, match="win_size must be odd"):
        metrics.ssim(a, b, data_range=1.0, win_size=4)
    with pytest.raises(ValueError, match="K1 must be positive"):
        metrics.ssim(a, b, data_range=1.0, K1=-0.1)
    with pytest.raises(ValueError, match="expected 3-D or 4-D"):
        metrics.ssim(a.flatten(1), b.flatten(1), data_range=1.0)
    bad = b.clone()
    bad[1, 2, 3] = bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"ssim: inputs hold 2 NaN values \(a: 0, b: 2\)"):
        metrics.ssim(a, bad, data_range=1.0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_reference(dtype):
    a, b = _pair((5, 3, 33, 29), kind="sparse", seed=7)
    for gaussian in (False, True):
        ours = metrics.ssim(a.to("cuda", dtype), b.to("cuda", dtype), data_range=1.0, gaussian_weights=gaussian)
        assert ours.device.type == "cuda" and ours.dtype == dtype
        tol = F64_TOL if dtype == torch.float64 else F32_TOL
        np.testing.assert_allclose(ours.double().cpu().numpy(),
                                   _reference(a, b, data_range=1.0, gaussian_weights=gaussian), rtol=0, atol=tol)
