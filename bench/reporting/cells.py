"""The cells of a leaderboard: their column names, the per-sample values behind each mean, and their bootstrap.

:func:`bootstraps` resamples every mean cell of one model in one paired bootstrap
(:mod:`bench.reporting.intervals`); intervals, rank intervals (:func:`rank_intervals`) and paired comparisons
between methods (:func:`bench.reporting.leaderboard.compare_methods`) are read off it. Pandas and NumPy only.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from bench.core.results import CONTROL_REPEAT, is_control
from bench.core.scores import RANDOMIZATION_SCORE, get_score
from bench.reporting.aggregate import INVARIANCE, RANDOMIZATION
from bench.reporting.intervals import bootstrap_means, percentile_interval

__all__ = ["inv_column", "rand_column", "bootstraps", "intervals", "rank_intervals", "better_is_higher"]


def inv_column(shift: str, stat: str) -> str:
    """Name of an invariance column: ``inv/<shift>/<ssim|verdict>``."""
    return f"inv/{shift}/{stat}"


def rand_column(mode: str, stat: str, metric: str | None = None) -> str:
    """Name of a randomization column: ``rand/<mode>/<metric>/<last|auc>`` or ``rand/<mode>/verdict``."""
    return f"rand/{mode}/verdict" if stat == "verdict" else f"rand/{mode}/{metric}/{stat}"


def _cell_samples(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per-sample values behind every mean cell of the board: ``model, method, column, seed, sample, value``."""
    parts = []
    inv = table[table.experiment == INVARIANCE]
    if len(inv):
        imaged = set(zip(*[inv.loc[inv.metric == "ssim", k] for k in ("model", "method", "condition")], strict=True))
        pick = [(m == "ssim") or (m == "spearman" and (a, b, c) not in imaged)
                for m, a, b, c in zip(inv.metric, inv.model, inv.method, inv.condition, strict=True)]
        inv = inv[pick]
        parts.append(inv.assign(column=[inv_column(c, m) for c, m in zip(inv.condition, inv.metric, strict=True)]))
    rand = table[(table.experiment == RANDOMIZATION) & (table.metric == metric)]
    for (_, _, cond), g in rand.groupby(["model", "dataset", "condition"], sort=False):
        stages = [s for s in dict.fromkeys(g.layer) if not is_control(s)]
        if not stages:
            continue
        for layer, stat in ((stages[0], "top"), (stages[-1], "last"), (CONTROL_REPEAT, "repeat")):
            parts.append(g[g.layer == layer].assign(column=rand_column(cond, stat, metric)))
        auc = g[g.layer.isin(stages)].groupby(["model", "method", "seed", "sample"], as_index=False)["score"].mean()
        parts.append(auc.assign(column=rand_column(cond, "auc", metric)))
    if not parts:
        return pd.DataFrame(columns=["model", "method", "column", "seed", "sample", "score"])
    return pd.concat([p[["model", "method", "column", "seed", "sample", "score"]] for p in parts], ignore_index=True)


def bootstraps(table: pd.DataFrame, metric: str = RANDOMIZATION_SCORE) -> dict[str, pd.DataFrame]:
    """``{model label: DataFrame[resamples, (method, column)]}``: the bootstrap distribution of every mean cell of
    the board (:func:`bench.reporting.intervals.bootstrap_means`), one paired resampling per model (its cells
    share the samples and seeds), so that differences and ranks between methods keep their pairing. ``table``:
    the results table with its model labels (:func:`build_leaderboard` applies them)."""
    cells = _cell_samples(table, metric)
    out = {}
    for model, g in cells.groupby("model", sort=False):
        wide = g.pivot_table(index=["seed", "sample"], columns=["method", "column"], values="score", aggfunc="mean",
                             dropna=False)
        boot = bootstrap_means(wide.to_numpy(), wide.index.get_level_values("seed"))
        out[model] = pd.DataFrame(boot, columns=wide.columns)
    return out


def intervals(boots: Mapping[str, pd.DataFrame]) -> dict[tuple[str, str, str], tuple[float, float]]:
    """``{(model, method, column): (lo, hi)}``: the 95% percentile intervals of :func:`bootstraps`."""
    out = {}
    for model, boot in boots.items():
        lo, hi = percentile_interval(boot.to_numpy())
        for (method, column), a, b in zip(boot.columns, lo, hi, strict=True):
            out[(model, method, column)] = (float(a), float(b))
    return out


def better_is_higher(column: str) -> bool | None:
    """Which way a column is better: invariance SSIM up; randomization similarities down (more change);
    the repeatability control has no better side."""
    stat = column.split("/")[-1]
    if column.startswith("inv/"):
        return None if stat == "verdict" else True
    if stat in ("top", "last", "auc"):
        return not get_score(column.split("/")[-2]).higher_is_similar
    return None


def rank_intervals(boots: Mapping[str, pd.DataFrame], column: str) -> dict[tuple[str, str], tuple[float, float, float]]:
    """``{(model, method): (rank, lo, hi)}`` by ``column`` (1 = best, in its better direction): the rank of the
    estimate and the 95% interval of the ranks over the bootstrap resamples (ranked within each resample)."""
    better_high = better_is_higher(column)
    out = {}
    if better_high is None:
        return out
    for model, boot in boots.items():
        methods = [m for m, c in boot.columns if c == column]
        if not methods:
            continue
        values = boot[[(m, column) for m in methods]].to_numpy()
        key = -values if better_high else values
        ranks = pd.DataFrame(key).rank(axis=1, method="average").to_numpy()  # per resample, NaN stays NaN
        point = pd.Series(np.nanmean(key, axis=0)).rank(method="average").to_numpy()
        lo, hi = percentile_interval(ranks)
        for m, r, a, b in zip(methods, point, lo, hi, strict=True):
            out[(model, m)] = (float(r), float(a), float(b))
    return out
