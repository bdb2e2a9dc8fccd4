"""Bootstrap confidence intervals of means over samples, vectorized over many cells at once (NumPy, no torch).

The leaderboard's cells are means over the samples of a job (and over the re-initialization seeds when a run
has several). :func:`bootstrap_means` resamples the rows of a ``[rows, cells]`` matrix the same way for every
cell (a paired bootstrap: differences and ranks between cells keep their pairing), hierarchically when the rows
carry a group (a seed): seeds are drawn with replacement, then samples within each drawn seed. One resample is
one row of a weight matrix ``W[b, row]`` (how often the row was drawn), so all resampled means are one matrix
product ``W @ X`` (NaN entries are left out of their cell's mean). The resampling seed is fixed: the numbers are
reproducible.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["bootstrap_weights", "bootstrap_means", "percentile_interval", "RESAMPLES", "LEVEL"]

RESAMPLES = 1000
LEVEL = 0.95


def bootstrap_weights(groups: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Resampling weights ``W[resamples, rows]`` (how often each row is drawn in each resample).

    ``groups[row]`` labels the rows' group (the re-initialization seed). One group: ``rows`` draws with
    replacement. Several: the groups are drawn with replacement, and a group drawn ``c`` times contributes ``c``
    independent resamples of its rows (``c * n_g`` uniform draws over its ``n_g`` rows, a multinomial).
    """
    groups = np.asarray(groups)
    rng = np.random.default_rng(seed)
    n = len(groups)
    if n == 0:
        return np.zeros((resamples, 0))
    labels, inverse = np.unique(groups, return_inverse=True)
    if len(labels) == 1:
        idx = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
        return np.bincount(idx.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    draws = rng.multinomial(len(labels), np.full(len(labels), 1 / len(labels)), size=resamples)  # [B, groups]
    w = np.zeros((resamples, n))
    for g in range(len(labels)):
        rows = np.flatnonzero(inverse == g)
        k = len(rows)
        owner = np.repeat(np.arange(resamples), draws[:, g] * k)  # resample b draws this group's rows c_b * k times
        idx = owner * k + rng.integers(0, k, size=len(owner))
        w[:, rows] = np.bincount(idx, minlength=resamples * k).reshape(resamples, k)
    return w


def bootstrap_means(values: np.ndarray, groups: np.ndarray | None = None, *, resamples: int = RESAMPLES,
                    seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of each column's mean: ``values[rows, cells]`` -> ``[resamples, cells]``.

    NaN entries do not count (a resample whose drawn rows are all NaN in a cell gives NaN there). ``groups``:
    per-row group labels for the hierarchical bootstrap (default: one group).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    w = bootstrap_weights(np.zeros(len(x)) if groups is None else groups, resamples, seed)
    ok = np.isfinite(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ np.where(ok, x, 0.0)) / (w @ ok.astype(np.float64))


def percentile_interval(boot: np.ndarray, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided percentile interval of each column of ``boot[resamples, cells]`` (NaN resamples ignored)."""
    alpha = (1 - level) / 2
    if not boot.size:
        return np.full(boot.shape[1:], np.nan), np.full(boot.shape[1:], np.nan)
    with warnings.catch_warnings():  # a cell without any defined value: NaN bounds, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(boot, alpha, axis=0), np.nanquantile(boot, 1 - alpha, axis=0)
