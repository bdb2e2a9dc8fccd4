"""spearman / pearson / rankdata / topk_intersection against SciPy and a NumPy reference.

Tolerances: 1e-12 in float64 (measured <= 1e-16), 1e-6 in float32 (measured <= 3e-8; ranks are exact).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, rankdata, spearmanr

import metrics

F64_TOL, F32_TOL = 1e-12, 1e-6
KINDS = ["normal", "ties", "sparse", "signed_zeros"]


def _maps(kind: str, shape, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if kind == "ties":  # heavy ties: a handful of distinct values
        x = np.round(x)
    elif kind == "sparse":  # mostly exact zeros, as ReLU-network maps
        x = x * (rng.random(shape) < 0.1)
    elif kind == "signed_zeros":  # -0.0 and 0.0 are one tie group for SciPy
        x = np.where(rng.random(shape) < 0.5, -0.0, 0.0) + np.round(x) * (rng.random(shape) < 0.3)
    return torch.from_numpy(x)


def _pair(kind, shape, seed=0):
    a = _maps(kind, shape, seed)
    return a, 0.5 * a + _maps(kind, shape, seed + 100)


def _scipy_spearman(a, b, absolute=False):
    x, y = a.flatten(1).numpy(), b.flatten(1).numpy()
    if absolute:
        x, y = np.abs(x), np.abs(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: SciPy warns and returns NaN
        return np.array([spearmanr(xi, yi).statistic for xi, yi in zip(x, y, strict=True)])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 50), (29, 28, 28), (3, 3, 9, 7)], ids=["b1", "b29-28x28", "b3-3x9x7"])
@pytest.mark.parametrize("absolute", [False, True])
def test_spearman_matches_scipy(kind, shape, absolute):
    a, b = _pair(kind, shape)
    ours = metrics.spearman(a, b, absolute=absolute)
    assert ours.shape == (shape[0],) and ours.dtype == torch.float64
    np.testing.assert_allclose(ours.numpy(), _scipy_spearman(a, b, absolute), rtol=0, atol=F64_TOL)
    ours32 = metrics.spearman(a.float(), b.float(), absolute=absolute)
    assert ours32.dtype == torch.float32
    ref32 = _scipy_spearman(a.float(), b.float(), absolute)  # rounding to float32 may merge values
    np.testing.assert_allclose(ours32.double().numpy(), ref32, rtol=0, atol=F32_TOL)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(1, 50), (29, 28, 28), (3, 3, 9, 7)], ids=["b1", "b29-28x28", "b3-3x9x7"])
@pytest.mark.parametrize("absolute", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_spearman_against_a_reference_ranked_once_matches_scipy(kind, shape, absolute, dtype):
    a, b = _pair(kind, shape)
    a, b = a.to(dtype), b.to(dtype)
    ranks = metrics.centred_ranks(a, absolute=absolute)
    assert ranks.shape == (shape[0], int(np.prod(shape[1:]))) and ranks.dtype == dtype
    # twice the centred ranks: 2 * (SciPy's average rank - (N + 1) / 2), exact integers
    x = np.abs(a.flatten(1).numpy()) if absolute else a.flatten(1).numpy()
    np.testing.assert_array_equal(ranks.numpy(), 2 * rankdata(x, axis=1) - (x.shape[1] + 1))
    for other in (b, a.flip(0), -b):  # one ranking, many comparisons
        ours = metrics.spearman_ranked(ranks, other, absolute=absolute)
        assert ours.dtype == dtype
        np.testing.assert_allclose(ours.double().numpy(), _scipy_spearman(a, other, absolute), rtol=0,
                                   atol=F64_TOL if dtype == torch.float64 else F32_TOL)
        torch.testing.assert_close(ours, metrics.spearman(a, other, absolute=absolute), rtol=0, atol=0,
                                   equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
def test_ranking_in_blocks_of_rows_changes_nothing(kind, monkeypatch):
    import metrics.rank as rank

    a, b = _pair(kind, (7, 3, 9, 11))
    whole = metrics.spearman(a, b), metrics.rankdata(a), metrics.centred_ranks(b, absolute=True)
    monkeypatch.setitem(rank._BLOCK_ELEMENTS, "cpu", 2 * 3 * 9 * 11)  # blocks of 2 rows, the last one shorter
    blocks = metrics.spearman(a, b), metrics.rankdata(a), metrics.centred_ranks(b, absolute=True)
    for w, bl in zip(whole, blocks, strict=True):
        torch.testing.assert_close(bl, w, rtol=0, atol=0, equal_nan=True)
    np.testing.assert_allclose(blocks[0].numpy(), _scipy_spearman(a, b), rtol=0, atol=F64_TOL)


def test_spearman_ranked_rejects_ranks_of_other_maps():
    ranks = metrics.centred_ranks(torch.rand(4, 10, 10))
    with pytest.raises(ValueError, match=r"ranks of shape \(4, 100\) do not fit maps of shape \(4, 9, 10\)"):
        metrics.spearman_ranked(ranks, torch.rand(4, 9, 10))
    with pytest.raises(ValueError, match="NaN"):
        metrics.centred_ranks(torch.tensor([[1.0, float("nan")]]))


@pytest.mark.parametrize("kind", KINDS)
def test_pearson_matches_scipy(kind):
    a, b = _pair(kind, (7, 3, 11, 13), seed=1)
    ref = pearsonr(a.flatten(1).numpy(), b.flatten(1).numpy(), axis=1).statistic
    np.testing.assert_allclose(metrics.pearson(a, b).numpy(), ref, rtol=0, atol=F64_TOL)
    np.testing.assert_allclose(metrics.pearson(a.float(), b.float()).double().numpy(), ref, rtol=0, atol=F32_TOL)


def test_large_sample_float32():
    a, b = _pair("sparse", (2, 3, 224, 224), seed=2)
    np.testing.assert_allclose(metrics.spearman(a.float(), b.float()).double().numpy(),
                               _scipy_spearman(a, b), rtol=0, atol=F32_TOL)


@pytest.mark.parametrize("kind", KINDS)
def test_rankdata_matches_scipy(kind):
    x = _maps(kind, (4, 5, 37), seed=3)
    assert np.array_equal(metrics.rankdata(x).numpy(), rankdata(x.numpy(), axis=-1))


def test_constant_samples_give_nan_as_scipy():
    a, b = _pair("normal", (4, 10, 10), seed=4)
    a[0] = 0.0
    b[2] = 3.5
    a[3] = b[3] = -1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(spearmanr(a[0].flatten(), b[0].flatten()).statistic)
        assert np.isnan(pearsonr(a[0].flatten(), b[0].flatten()).statistic)
    for fn in (metrics.spearman, metrics.pearson, lambda x, y: metrics.spearman(x, y, absolute=True)):
        out = fn(a, b)
        assert torch.isnan(out[[0, 2, 3]]).all() and not torch.isnan(out[1])
        assert metrics.count_nan(out) == 3


def test_perfect_and_reversed_order():
    a = _maps("ties", (2, 40), seed=5)
    assert torch.allclose(metrics.spearman(a, 2 * a + 1), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(metrics.spearman(a, -a), -torch.ones(2, dtype=torch.float64))
    assert torch.allclose(metrics.spearman(a, -a, absolute=True), torch.ones(2, dtype=torch.float64))


def _np_topk(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """Shared top-k positions by |value|, equal magnitudes taken in index order."""
    top = [set(np.argsort(-np.abs(v), kind="stable")[:k]) for v in (x, y)]
    return len(top[0] & top[1]) / k


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 10, 0.1, 0.5, 300])
def test_topk_intersection_matches_numpy(kind, k):
    a, b = _pair(kind, (6, 3, 10, 10), seed=6)
    ours = metrics.topk_intersection(a, b, k)
    kk = round(k * 300) if isinstance(k, float) else k
    ref = [_np_topk(x, y, kk) for x, y in zip(a.flatten(1).numpy(), b.flatten(1).numpy(), strict=True)]
    np.testing.assert_array_equal(ours.numpy(), ref)
    assert metrics.topk_intersection(a.float(), b.float(), k).dtype == torch.float32
    assert torch.equal(metrics.topk_intersection(a, a, k), torch.ones(6, dtype=torch.float64))


def test_topk_bad_k():
    a, b = _pair("normal", (2, 20))
    for k in (0, 21, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"k must be in \[1, 20\] or a fraction in \(0, 1\)"):
            metrics.topk_intersection(a, b, k)


@pytest.mark.parametrize("fn", [metrics.spearman, metrics.pearson, metrics.topk_intersection, metrics.rankdata])
def test_nan_inputs_raise_and_shapes_must_match(fn):
    a, b = _pair("normal", (3, 8, 8))
    bad = b.clone()
    bad[1, 2, :3] = float("nan")
    name = fn.__name__
    with pytest.raises(ValueError, match=f"{name}: inputs hold 3 NaN values"):
        fn(bad) if fn is metrics.rankdata else fn(a, bad)
    if fn is not metrics.rankdata:
        with pytest.raises(ValueError, match=r"differ in shape: \(3, 8, 8\) vs \(3, 8, 7\)"):
            fn(a, b[..., :7])


def test_infinities_are_ranked_not_rejected():
    a, b = _pair("normal", (2, 30), seed=7)
    a[0, 3], a[1, 4], b[0, 5] = float("inf"), -float("inf"), float("inf")
    np.testing.assert_allclose(metrics.spearman(a, b).numpy(), _scipy_spearman(a, b), rtol=0, atol=F64_TOL)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matches_reference(dtype):
    a, b = _pair("signed_zeros", (9, 3, 20, 20), seed=8)
    tol = F64_TOL if dtype == torch.float64 else F32_TOL
    ca, cb = a.to("cuda", dtype), b.to("cuda", dtype)
    np.testing.assert_allclose(metrics.spearman(ca, cb).double().cpu().numpy(), _scipy_spearman(a, b), atol=tol)
    ref = pearsonr(a.flatten(1).numpy(), b.flatten(1).numpy(), axis=1).statistic
    np.testing.assert_allclose(metrics.pearson(ca, cb).double().cpu().numpy(), ref, atol=tol)
    assert torch.equal(metrics.topk_intersection(ca, cb, 0.1).cpu(), metrics.topk_intersection(a, b, 0.1).to(dtype))
