"""Aggregates of the long results table (pandas only, no torch): the views every report reads.

:func:`invariance_verdicts`: per (model, method, shift) the mean of the invariance score and the 95th percentile
of the exactness score, with the verdicts ``invariant`` and ``exact``; :func:`randomization_summary`: per
(model, dataset, mode, method, metric) the mean similarity at the first and the last stage and over all stages;
:func:`randomization_verdicts`: the randomization verdict of each method from its stages and the run's controls.

How a randomization verdict is decided (:func:`randomization_verdicts`; ``s`` is the verdict score, e.g. SSIM,
between a map and the trained model's map of the same sample):

1. ``inconclusive`` when a checked stage or a control has fewer than ``min_samples`` defined paired scores, or
   the method is not repeatable (mean ``s`` of the repeatability control below ``min_repeatability``: its maps
   carry noise, not the model, and a change cannot be measured).
2. ``input-dominated`` when the trained map is at least ``input_share`` of the way to its own repeat as similar
   to a map that depends on the input alone (the larger of ``control:input`` and ``control:edges``, per sample),
   and the fully randomized map is still about that similar (its mean ``s`` at least the null's minus
   ``margin``): what survives the randomization is the input.
3. ``pass`` when, at every checked stage, the paired drop ``d_i = s(control) - s(stage)`` has a 95% lower
   confidence bound of its mean (percentile bootstrap over samples, 2,000 resamples, fixed seed) of at least
   the score's ``min_drop`` (:mod:`bench.core.scores`; 0.4 for SSIM). Checked stages: ``cascading``, the top
   unit alone (the paper's claim is about the top layers) and the fully randomized model; ``bottom_up`` and
   ``independent``, the last stage (everything / the top unit alone); ``labels``, the permuted-label model,
   scored against the maps of a control trained with its exact recipe on the true labels (without that
   control, ``control:retrained`` missing, the label verdict is ``inconclusive``).
4. ``fail`` otherwise: the map survives the randomization by more than its own noise allows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bench.core.results import CONTROL_EDGES, CONTROL_INPUT, CONTROL_REPEAT, CONTROL_RETRAINED, is_control
from bench.core.scores import EXACTNESS_SCORE, INVARIANCE_SCORE, RANDOMIZATION_SCORE, SIGN_SCORE, get_score
from bench.reporting.intervals import bootstrap_means, percentile_interval

__all__ = ["invariance_verdicts", "randomization_summary", "randomization_verdicts", "lower_bound", "VERDICT_QUANTILE",
           "INVARIANCE", "RANDOMIZATION", "PASS", "FAIL", "INPUT_DOMINATED", "INCONCLUSIVE", "VERDICT_WORDS"]

INVARIANCE = "input_invariance"
RANDOMIZATION = "model_randomization"
#: the signed maps' SSIM an invariant method needs: it catches a sign flip (about -1) without asking of the signed
#: post-processing (min-max scaled, sensitive to a single extreme value) the precision asked of the absolute one
#: (PatternAttribution on small_cnn, mean shift: 0.983 with an absolute SSIM of 0.9994)
SIGN_THRESHOLD = 0.9
#: the invariance verdict's score where SSIM does not apply (vectors, 1-D signals)
FALLBACK_INVARIANCE_SCORE = "spearman"
#: the quantile of the per-sample exactness score that the verdict ``exact`` reads
VERDICT_QUANTILE = 0.95
PASS, FAIL, INPUT_DOMINATED, INCONCLUSIVE = "pass", "fail", "input-dominated", "inconclusive"
VERDICT_WORDS = (PASS, FAIL, INPUT_DOMINATED, INCONCLUSIVE)
_NULLS = (CONTROL_INPUT, CONTROL_EDGES)


def invariance_verdicts(table: pd.DataFrame, tolerance: float | None = None,
                        ssim_threshold: float | None = None) -> pd.DataFrame:
    """Per (model, method, condition) of the input-invariance rows: ``ssim`` (mean of the invariance score) with its
    95% bootstrap interval ``ssim_lo``/``ssim_hi`` (over samples, hierarchical over seeds), ``max_rel_diff_q95``
    (95th percentile of the exactness score), ``signed`` (mean of the sign score, the SSIM of the signed maps),
    ``invariant`` (the interval's lower end at least the threshold: a pass must hold for the interval, not only for
    the mean; and, where the sign score was computed, its mean at least :data:`SIGN_THRESHOLD`: a map that flips
    its sign is not invariant) and ``exact``.

    For vectors and 1-D signals, where SSIM does not apply (no ``ssim`` rows), the decision score is the signed
    rank correlation ``spearman`` (sign-aware by itself); column ``score`` names the one used, and ``ssim`` /
    ``ssim_lo`` / ``ssim_hi`` then hold its mean and interval.

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
    with_ssim = set(map(tuple, t.loc[t.metric == INVARIANCE_SCORE, keys].drop_duplicates().to_numpy()))
    own = [k in with_ssim for k in zip(t.model, t.method, t.condition, strict=True)]
    decide = t[(t.metric == INVARIANCE_SCORE) | ((t.metric == FALLBACK_INVARIANCE_SCORE) & ~pd.Series(own, t.index))]
    ssim = decide.groupby(keys)["score"].mean().rename("ssim")
    used = decide.groupby(keys)["metric"].first().rename("score")
    signed = t[t.metric == SIGN_SCORE].groupby(keys)["score"].mean().rename("signed")
    out = pd.concat([ssim, used, rel, signed], axis=1).reset_index()
    if not len(out):
        return pd.DataFrame(columns=[*keys, "ssim", "ssim_lo", "ssim_hi", "score", "max_rel_diff_q95", "signed",
                                     "invariant", "exact"])
    bounds = {}
    for key, g in decide.groupby(keys):
        lo, hi = percentile_interval(bootstrap_means(g.score.to_numpy(), g.seed.to_numpy()))
        bounds[key] = (float(lo[0]), float(hi[0]))
    pairs = [bounds.get(tuple(k), (np.nan, np.nan)) for k in out[keys].itertuples(index=False)]
    out.insert(out.columns.get_loc("ssim") + 1, "ssim_lo", [p[0] for p in pairs])
    out.insert(out.columns.get_loc("ssim_lo") + 1, "ssim_hi", [p[1] for p in pairs])
    out["invariant"] = (out["ssim_lo"] >= ssim_threshold) & (out["signed"].isna() | (out["signed"] >= SIGN_THRESHOLD))
    out["exact"] = out["max_rel_diff_q95"] <= tolerance
    return out


def randomization_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, condition, method, metric) of the model-randomization stages (controls left out):
    ``first``/``last`` = mean score at the condition's first / last stage (NaN when the method has no score there),
    ``auc`` = mean over stages of the per-stage mean (1 = the map never changed), ``n`` = scores at the last
    stage, ``nan`` = NaN scores over all stages, ``stage`` = the last stage's name."""
    t = table[(table.experiment == RANDOMIZATION) & ~table.layer.map(is_control)]
    rows = []
    for (model, dataset, cond), grp in t.groupby(["model", "dataset", "condition"], sort=False):
        order = list(dict.fromkeys(grp.layer))
        for (method, metric), g in grp.groupby(["method", "metric"], sort=False):
            means = g.groupby("layer", sort=False)["score"].mean().reindex(order)
            rows.append(dict(model=model, dataset=dataset, condition=cond, method=method, metric=metric,
                             stage=order[-1], first=float(means.iloc[0]), last=float(means.iloc[-1]),
                             auc=float(np.nanmean(means.to_numpy())),
                             n=int(g.score[g.layer == order[-1]].notna().sum()), nan=int(g.score.isna().sum())))
    return pd.DataFrame(rows, columns=["model", "dataset", "condition", "method", "metric", "stage", "first", "last",
                                       "auc", "n", "nan"])


def lower_bound(values: np.ndarray, groups: np.ndarray | None = None, *, level: float = 0.95,
                resamples: int = 2000, seed: int = 0) -> float:
    """One-sided ``level`` lower confidence bound of the mean of ``values`` (NaN dropped): the ``1 - level``
    quantile of the bootstrap means (:func:`bench.reporting.intervals.bootstrap_means`; hierarchical over
    ``groups``, the seeds, when given; a fixed resampling seed). NaN for no values."""
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v)
    if not keep.any():
        return float("nan")
    g = None if groups is None else np.asarray(groups)[keep]
    return float(np.quantile(bootstrap_means(v[keep], g, resamples=resamples, seed=seed)[:, 0], 1 - level))


def _checked_stages(condition: str, stages: list[str]) -> list[str]:
    if not stages:
        return []
    if "cascading" in condition and len(stages) > 1:
        return [stages[0], stages[-1]]
    return [stages[-1]]


def randomization_verdicts(
    table: pd.DataFrame,
    metric: str = RANDOMIZATION_SCORE,
    *,
    min_drop: float | None = None,
    min_samples: int = 8,
    min_repeatability: float = 0.5,
    input_share: float = 0.5,
    margin: float = 0.05,
) -> pd.DataFrame:
    """The randomization verdict per (model, dataset, condition, method) from the stages and the controls of
    ``metric`` (the rule: the module docstring). ``min_drop`` defaults to the score registry's.

    Columns: the key, ``metric``, ``verdict`` (one of :data:`VERDICT_WORDS`), ``reason`` (one sentence),
    ``repeat`` (mean of the repeatability control), ``null`` (mean of the input-only null), ``top``/``last``
    (mean score at the first / last stage), ``drop``/``drop_lcb`` (the smallest mean paired drop over the checked
    stages and its lower confidence bound), ``n`` (paired samples at the checked stages, the fewest).
    """
    score = get_score(metric)
    min_drop = score.min_drop if min_drop is None else float(min_drop)
    sign = 1.0 if score.higher_is_similar else -1.0
    t = table[(table.experiment == RANDOMIZATION) & (table.metric == metric)]
    rows = []
    for (model, dataset, cond, method), g in t.groupby(["model", "dataset", "condition", "method"], sort=False):
        # controls: per sample (they do not depend on the re-initialization seed); stages: per (seed, sample)
        ctrl = g[g.layer.map(is_control)].pivot_table(index="sample", columns="layer", values="score",
                                                      aggfunc="mean", dropna=False)
        stages = [s for s in dict.fromkeys(g.layer) if not is_control(s)]
        checked = _checked_stages(str(cond), stages)
        labels = "labels" in str(cond)
        repeat = ctrl[CONTROL_REPEAT] if CONTROL_REPEAT in ctrl.columns else pd.Series(dtype=float)
        nulls = [ctrl[n] for n in _NULLS if n in ctrl.columns]
        null = (pd.concat(nulls, axis=1).max(axis=1) if sign > 0 else pd.concat(nulls, axis=1).min(axis=1)) \
            if nulls else pd.Series(dtype=float)
        stats, n = [], []
        for stage in checked:  # the paired drop per (seed, sample), its bound hierarchical over the seeds
            st = g[g.layer == stage]
            d = sign * (repeat.reindex(st["sample"]).to_numpy() - st["score"].to_numpy())
            n.append(int(np.isfinite(d).sum()))
            stats.append((float(np.nanmean(d)) if n[-1] else float("nan"), lower_bound(d, st["seed"].to_numpy())))
        drop, drop_lcb = min(stats, key=lambda x: x[1], default=(float("nan"), float("nan")))
        row = dict(model=model, dataset=dataset, condition=cond, method=method, metric=metric,
                   repeat=float(repeat.mean()), null=float(null.mean()),
                   top=float(g.score[g.layer == stages[0]].mean()) if stages else float("nan"),
                   last=float(g.score[g.layer == stages[-1]].mean()) if stages else float("nan"), drop=drop,
                   drop_lcb=drop_lcb, n=min(n, default=0))
        row["verdict"], row["reason"] = _decide(row, score, min_drop, min_samples, min_repeatability, input_share,
                                                margin, int(repeat.notna().sum()),
                                                labels and CONTROL_RETRAINED not in ctrl.columns)
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", "dataset", "condition", "method", "metric", "verdict", "reason",
                                       "repeat", "null", "top", "last", "drop", "drop_lcb", "n"])


def _decide(r: dict, score, min_drop: float, min_samples: int, min_repeatability: float, input_share: float,  # noqa: ANN001
            margin: float, n_repeat: int, no_label_control: bool) -> tuple[str, str]:
    sim = (lambda v: v) if score.higher_is_similar else (lambda v: -v)  # in "similarity" direction
    if no_label_control:
        return INCONCLUSIVE, "no retrained control: the permuted-label model's change cannot be put down to the labels"
    if n_repeat < min_samples or r["n"] < min_samples or np.isnan(r["drop_lcb"]):
        return INCONCLUSIVE, f"fewer than {min_samples} defined paired scores (n={min(r['n'], n_repeat)})"
    if score.higher_is_similar and r["repeat"] < min_repeatability:
        return INCONCLUSIVE, (f"not repeatable: a second map of the same model scores {r['repeat']:.2f} "
                              f"(< {min_repeatability:g})")
    if not np.isnan(r["null"]) and sim(r["null"]) >= input_share * sim(r["repeat"]) \
            and sim(r["last"]) >= sim(r["null"]) - margin:
        return INPUT_DOMINATED, (f"an input-only map scores {r['null']:.2f} against the trained map and the fully "
                                 f"randomized map {r['last']:.2f}")
    if r["drop_lcb"] >= min_drop:
        return PASS, f"drop below the repeat control >= {r['drop_lcb']:.2f} (95% bound) at the checked stages"
    return FAIL, (f"drop below the repeat control only {r['drop']:.2f} (95% bound {r['drop_lcb']:.2f} "
                  f"< {min_drop:g})")
