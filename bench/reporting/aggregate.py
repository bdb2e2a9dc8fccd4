"""Aggregates of the long results table (pandas only, no torch): the views every report reads.

:func:`invariance_verdicts`: per (model, method, shift) the mean of the invariance score and the 95th percentile
of the exactness score, with the verdicts ``invariant`` and ``exact``; :func:`randomization_summary`: per
(model, dataset, mode, method, metric) the mean similarity at the last stage and over all stages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.core.scores import EXACTNESS_SCORE, INVARIANCE_SCORE, get_score

__all__ = ["invariance_verdicts", "randomization_summary", "VERDICT_QUANTILE", "INVARIANCE", "RANDOMIZATION"]

INVARIANCE = "input_invariance"
RANDOMIZATION = "model_randomization"
#: the quantile of the per-sample exactness score that the verdict ``exact`` reads
VERDICT_QUANTILE = 0.95


def invariance_verdicts(table: pd.DataFrame, tolerance: float | None = None,
                        ssim_threshold: float | None = None) -> pd.DataFrame:
    """Per (model, method, condition) of the input-invariance rows: ``ssim`` (mean of the invariance score),
    ``max_rel_diff_q95`` (95th percentile of the exactness score), ``invariant`` and ``exact``.

    The thresholds default to the score registry's (:mod:`bench.core.scores`: ``ssim`` 0.99, ``max_rel_diff``
    1e-3); ``ssim_threshold``/``tolerance`` override them. A NaN mean is not invariant.
    """
    inv, ex = get_score(INVARIANCE_SCORE), get_score(EXACTNESS_SCORE)
    ssim_threshold = inv.invariant_at if ssim_threshold is None else ssim_threshold
    tolerance = ex.invariant_at if tolerance is None else tolerance
    t = table[table.experiment == INVARIANCE]
    keys = ["model", "method", "condition"]
    rel = (t[t.metric == EXACTNESS_SCORE].groupby(keys)["score"].quantile(VERDICT_QUANTILE)
           .rename("max_rel_diff_q95"))
    ssim = t[t.metric == INVARIANCE_SCORE].groupby(keys)["score"].mean().rename("ssim")
    out = pd.concat([ssim, rel], axis=1).reset_index()
    if not len(out):
        return pd.DataFrame(columns=[*keys, "ssim", "max_rel_diff_q95", "invariant", "exact"])
    out["invariant"] = out["ssim"] >= ssim_threshold
    out["exact"] = out["max_rel_diff_q95"] <= tolerance
    return out


def randomization_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, condition, method, metric) of the model-randomization rows: ``last`` = mean score at
    the condition's last stage (NaN when the method has no score there), ``auc`` = mean over stages of the
    per-stage mean (1 = the map never changed), ``n`` = scores at the last stage, ``nan`` = NaN scores over all
    stages, ``stage`` = the last stage's name."""
    t = table[table.experiment == RANDOMIZATION]
    rows = []
    for (model, dataset, cond), grp in t.groupby(["model", "dataset", "condition"], sort=False):
        order = list(dict.fromkeys(grp.layer))
        for (method, metric), g in grp.groupby(["method", "metric"], sort=False):
            means = g.groupby("layer", sort=False)["score"].mean().reindex(order)
            rows.append(dict(model=model, dataset=dataset, condition=cond, method=method, metric=metric,
                             stage=order[-1], last=float(means.iloc[-1]), auc=float(np.nanmean(means.to_numpy())),
                             n=int(g.score[g.layer == order[-1]].notna().sum()), nan=int(g.score.isna().sum())))
    return pd.DataFrame(rows, columns=["model", "dataset", "condition", "method", "metric", "stage", "last", "auc",
                                       "n", "nan"])
