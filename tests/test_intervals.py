"""Bootstrap intervals: reproducible, paired across cells, hierarchical over seeds, and what the views do with them."""

from __future__ import annotations

import numpy as np
import pytest

from bench.reporting.intervals import bootstrap_means, bootstrap_weights, percentile_interval


def test_weights_draw_every_row_n_times_in_total_and_are_reproducible():
    w = bootstrap_weights(np.zeros(50), resamples=200, seed=3)
    assert w.shape == (200, 50) and (w.sum(1) == 50).all()
    assert np.array_equal(w, bootstrap_weights(np.zeros(50), resamples=200, seed=3))
    assert not np.array_equal(w, bootstrap_weights(np.zeros(50), resamples=200, seed=4))


@pytest.mark.parametrize("n", [16, 256])
def test_interval_matches_the_normal_interval_and_shrinks_with_the_samples(n):
    x = np.random.default_rng(0).normal(0.3, 0.2, n)
    lo, hi = percentile_interval(bootstrap_means(x, resamples=4000))
    assert lo[0] < x.mean() < hi[0]
    half = 1.96 * x.std(ddof=0) / np.sqrt(n)
    assert (hi[0] - lo[0]) / 2 == pytest.approx(half, rel=0.12)


def test_cells_share_the_resampling_so_paired_differences_are_narrow():
    rng = np.random.default_rng(1)
    base = rng.normal(0.5, 0.3, 64)
    x = np.stack([base, base + 0.01 + rng.normal(0, 0.001, 64)], 1)  # two cells, strongly paired
    boot = bootstrap_means(x)
    diff_lo, diff_hi = np.quantile(boot[:, 1] - boot[:, 0], [0.025, 0.975])
    assert 0.009 < diff_lo < diff_hi < 0.011  # the pairing survives: the difference is known to 1e-3
    lo, hi = percentile_interval(boot)
    assert (hi - lo).min() > 0.1  # while each mean alone is uncertain


def test_hierarchical_resampling_sees_the_spread_between_seeds():
    rng = np.random.default_rng(2)
    seeds = np.repeat(np.arange(4), 50)
    x = rng.normal(0, 0.05, 200) + np.repeat([0.0, 0.3, -0.3, 0.1], 50)  # seeds disagree far more than samples
    flat = np.diff(percentile_interval(bootstrap_means(x))[0:2], axis=0)
    nested = np.diff(percentile_interval(bootstrap_means(x, seeds))[0:2], axis=0)
    assert nested[0, 0] > 3 * flat[0, 0]
    w = bootstrap_weights(seeds, resamples=100)
    assert (w.sum(1) == 200).all()  # each resample still draws 4 seeds x 50 samples


def test_nan_entries_do_not_count_and_an_empty_cell_has_no_interval():
    x = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan], [2.0, np.nan]])
    boot = bootstrap_means(x, resamples=500)
    assert np.nanmin(boot[:, 0]) >= 1.0 and np.nanmax(boot[:, 0]) <= 3.0
    lo, hi = percentile_interval(boot)
    assert np.isnan(lo[1]) and np.isnan(hi[1]) and lo[0] >= 1.0 and hi[0] <= 3.0
