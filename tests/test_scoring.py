"""bench.core.scoring: a MapBatch gives exactly the scores of the plain tensor; errors name what is wrong."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

import metrics
from bench.core.scores import Score, get_score, score_names
from bench.core.scoring import MapBatch, score_maps


def _maps(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    return x * (torch.rand(shape, generator=g, dtype=torch.float64) < 0.4)  # sparse, with ties at zero


@pytest.mark.parametrize("shape", [(5, 28, 28), (3, 1, 28, 28), (2, 3, 50, 50)], ids=["BHW", "B1HW", "B3HW"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_map_batch_scores_equal_plain_scores(shape, dtype):
    a = _maps(shape, 0).to(dtype)
    ref = MapBatch(a)
    for seed in (1, 2, 3):  # the reference's work is reused across batches
        b = _maps(shape, seed).to(dtype)
        plain = score_maps(a, b, score_names())
        cached = score_maps(ref, b, score_names())
        assert plain.keys() == cached.keys() == set(score_names())
        for name in score_names():
            torch.testing.assert_close(cached[name], plain[name], rtol=0, atol=0, equal_nan=True, msg=name)
    assert set(ref._ranks) == {"signed_p99", "abs_p99"}


def _np_normalized(a: np.ndarray, mode: str) -> np.ndarray:
    """Reference post-processing of one map ``C x H x W`` in NumPy."""
    if mode == "abs_max":
        s = np.abs(a).sum(0)
        return s / s.max()
    if mode == "minmax_signed":
        s = a.sum(0)
        return (s - s.min()) / (s.max() - s.min())
    s = np.abs(a).sum(0)  # abs_p99
    return np.clip((s - s.min()) / (np.percentile(s, 99) - s.min()), 0, 1)


@pytest.mark.parametrize("name,mode", [("ssim", "abs_p99"), ("ssim_abs_max", "abs_max"),
                                       ("ssim_minmax_signed", "minmax_signed")])
def test_ssim_scores_are_scikit_image_on_their_named_post_processing(name, mode):
    from skimage.metrics import structural_similarity

    a, b = _maps((3, 2, 28, 28), 0), _maps((3, 2, 28, 28), 1)
    got = score_maps(a, b, [name])[name].numpy()
    want = [structural_similarity(_np_normalized(x, mode), _np_normalized(y, mode), data_range=1.0,
                                  gaussian_weights=True, sigma=1.5)
            for x, y in zip(a.numpy(), b.numpy(), strict=True)]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
    assert get_score(name).normalization == mode


def test_spearman_abs_support_ignores_a_shared_zero_background():
    # two maps that are the same sparse input times independent noise: the shared background makes spearman_abs
    # large; on the union of their supports the rank correlation is about zero, as SciPy computes it there
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(8, 1, 28, 28, generator=g, dtype=torch.float64) < 0.2).double()
    a = x * torch.randn(x.shape, generator=g, dtype=torch.float64)
    b = x * torch.randn(x.shape, generator=g, dtype=torch.float64)
    got = score_maps(a, b, ["spearman_abs", "spearman_abs_support"])
    assert float(got["spearman_abs"].mean()) > 0.7
    assert abs(float(got["spearman_abs_support"].mean())) < 0.1
    na, nb = MapBatch(a).normalized("abs_p99").numpy(), MapBatch(b).normalized("abs_p99").numpy()
    want = []
    for p, q in zip(na.reshape(8, -1), nb.reshape(8, -1), strict=True):
        keep = (p != 0) | (q != 0)
        want.append(spearmanr(p[keep], q[keep]).statistic)
    np.testing.assert_allclose(got["spearman_abs_support"].numpy(), want, rtol=0, atol=1e-12)


def test_unknown_normalization_is_named():
    with pytest.raises(ValueError, match="unknown normalization 'log'; accepted: abs_p99"):
        MapBatch(_maps((2, 8, 8), 0)).normalized("log")
    with pytest.raises(ValueError, match="score 'x': unknown normalization 'abs'; accepted: abs_p99"):
        Score("x", lambda a, b: a.maps, "abs")


def test_spearman_score_is_scipy_on_the_signed_normalized_maps():
    a, b = _maps((4, 28, 28), 0), _maps((4, 28, 28), 1)
    got = score_maps(MapBatch(a), b, ["spearman"])["spearman"]
    na, nb = metrics.normalize(a[:, None], "signed"), metrics.normalize(b[:, None], "signed")
    want = [spearmanr(x.flatten(), y.flatten()).statistic for x, y in zip(na.numpy(), nb.numpy(), strict=True)]
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-12)


def test_errors_name_the_bad_input():
    a = _maps((2, 8, 8), 0)
    with pytest.raises(ValueError, match=r"unknown score 'ssmi'; accepted: ssim"):
        score_maps(a, a, ["ssmi"])
    with pytest.raises(ValueError, match=r"differ in shape: \(2, 8, 8\) vs \(2, 8, 9\)"):
        score_maps(MapBatch(a), _maps((2, 8, 9), 1), ["ssim"])
    bad = a.clone()
    bad[0, 0, :3] = float("nan")
    with pytest.raises(ValueError, match="the first batch of maps holds 3 NaN values"):
        MapBatch(bad)
    with pytest.raises(ValueError, match="the second batch of maps holds 3 NaN values"):
        score_maps(MapBatch(a), bad, ["spearman"])


def test_score_table_is_score_rows_per_entry_and_names_missing_columns():
    import pandas as pd

    from bench.core.results import COLUMNS, concat, score_rows, score_table

    entries = [({"method": "g", "layer": f"s{i}"}, {"spearman": torch.rand(5), "ssim": torch.rand(5)})
               for i in range(3)]
    const = dict(experiment="model_randomization", model="m", dataset="d", condition="cascading", seed=3)
    table = score_table(entries, **const)
    rows = concat([score_rows(s, method=k["method"], layer=k["layer"], **const) for k, s in entries])
    pd.testing.assert_frame_equal(table, rows)
    assert list(table.columns) == COLUMNS and len(table) == 30
    with pytest.raises(ValueError, match=r"no value for the column\(s\) \['model', 'dataset', 'method'"):
        score_table([({}, {"ssim": torch.rand(2)})], experiment="x", condition="c")
