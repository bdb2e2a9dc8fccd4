"""The leaderboard: one row per (model, method), built from the long results table of one or more sweeps.

:func:`load_leaderboard` reads every ``results.parquet`` under job or sweep folders
(:func:`bench.reporting.sweep_files.load_results`)
and builds the board (:func:`build_leaderboard`); the renderers (:mod:`bench.reporting.render`) write it as
Markdown, CSV and self-contained HTML, :mod:`bench.reporting.console` as a summary that fits a terminal;
``salbench-leaderboard`` (:mod:`bench.cli.leaderboard`) does both. Beside the
board (all read by :mod:`bench.reporting.sweep_files`): the jobs whose ``job.json`` says they failed, with what
failed, the results files that could not be read (skipped on request, each with its reason), the models' facts from
the jobs' records and the jobs' own figures (``<job>/figures/*.png``, never W&B's copies, each once).

Columns (the CSV's names; the CSV is also the baseline format of ``salbench-check``)
------------------------------------------------------------------------------------
- ``model``, ``method``: the row key. When a model was run on more than one dataset, ``model`` is
  ``"<model>@<dataset>"`` for every row, so that datasets are not pooled.
- ``verdict``: the row's overall verdict, its worst test's (:func:`overall_verdict`: ``fail`` before
  ``input-dominated`` before ``inconclusive`` before ``pass``; ``N/A`` when no test was run).
- ``balanced``: the balanced score in [0, 1] (:func:`balanced_score`): each test's verdict counts 1 (``pass``,
  ``exact``), 0.5 (``inconclusive``) or 0 (``fail``, ``input-dominated``); the score is the mean of two family means,
  the invariance tests' (one per shift) and the randomization tests' (one per mode), each family weighing 1/2 and
  each test within its family alike (one family alone when only one was run; NaN when none). Three shifts thus
  weigh as much together as one randomization test: a method that passes the three shifts and fails the cascade
  scores 0.5, one that fails one shift and passes the rest 0.83.
- ``passed``, ``tests``: how many of the per-shift / per-mode verdicts below passed, and how many were run.
- ``invariance``, ``randomization``: the overall verdict of each test: ``pass`` when every shift (mode) run for
  that row passed, else the first of ``fail``, ``input-dominated``, ``inconclusive`` that occurs; ``N/A`` when
  the test was not run for that row.
- per input-invariance shift ``S`` (:func:`bench.reporting.aggregate.invariance_verdicts`): ``inv/S/ssim`` (mean
  SSIM between the maps of the original and the twin network) and ``inv/S/verdict``: ``exact`` (the 95th
  percentile of ``max_rel_diff`` is at most ``tolerance``), else ``pass`` (mean SSIM >= ``ssim_threshold``), else
  ``fail``; ``N/A`` when not run (or SSIM is undefined and the maps are not exact). ``exact`` counts as a pass.
- per randomization mode ``M`` and the verdict score ``K`` (:func:`bench.reporting.aggregate.randomization_summary`
  and :func:`~bench.reporting.aggregate.randomization_verdicts`): ``rand/M/K/top`` and ``rand/M/K/last`` (mean
  similarity to the trained model's map at the first and the last stage; for ``cascading`` the top unit alone
  and the whole model), ``rand/M/K/repeat`` (the repeatability control: a second map of the unchanged model),
  ``rand/M/K/auc`` (mean over stages) and ``rand/M/verdict``: ``pass``, ``fail``, ``input-dominated`` or
  ``inconclusive`` by the rule of :mod:`bench.reporting.aggregate`.
- ``nonfinite`` (last): the cells of the row whose per-sample scores are not all finite, each with its counts
  (``inv/mean_shift/ssim: 3 NaN of 32 samples; rand/cascading/ssim/last: 1 NaN, 1 inf of 32 samples``; missing
  when every score is finite). A NaN score is legitimate where a score is undefined (the rank correlation of a constant
  map): it is reported, never dropped, and left out of the cell's mean and interval. An infinite score never is:
  it is left out the same way (an ``inf`` never enters a mean or a verdict; only the exactness distance
  ``max_rel_diff`` of a zero map may be infinite) and every renderer marks such cells; ``salbench-check`` fails on
  them (:mod:`bench.reporting.check`).

Thresholds
----------
Every default threshold and direction comes from the score registry (:mod:`bench.core.scores`): the verdict score
``K`` is ``ssim`` unless chosen (``randomization_metric``), its ``min_drop`` (0.7 for SSIM: a share of the model's
own change) the bar of the relative change a pass needs (``min_drop`` overrides it). Invariance: the
``invariant_at`` of ``ssim`` (0.99) and of ``max_rel_diff`` (1e-3, the ``tolerance``). The measured calibration on
a family of models is in ``benchmarks/calibration.md`` and the README.

Sorting and grouping
--------------------
Rows are grouped by model (models in alphabetical order); the Markdown and HTML outputs print one table per model.
Within a model, ``sort="balanced"`` (default) is the ranking: by ``verdict`` (the worst test decides; ``pass``
first, then ``inconclusive``, ``input-dominated``, ``fail``, and rows with no test last), then by ``balanced``
(highest first), then by the number of tests run (most first: more evidence), then by method name. ``sort="passed"``
orders by the number of verdicts passed (most first), then by method name; ``sort="method"`` by method name; any
other column name sorts by that column, ascending (prefix ``-`` for descending), missing values last, ties by method
name. With ``rank_by`` and no ``sort``, the board is sorted by that rank (1 = best first). The sort key is kept in
``board.attrs["sort"]``.

Rows pool only when they come from the same configuration (their ``config_hash``, the hash of everything that
determines the scores: model, data and encoding, training recipe, samples and seed, method parameters, the shift's or
randomization's settings; the post-processing and metric are part of the score's name). Results of several jobs for
the same (model, method, shift or mode) under different configurations become separate rows, the model labelled by
the keys that differ (``paper_mlp[train.lr=0.1]``; see ``_model_labels``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.core.scores import EXACTNESS_SCORE, RANDOMIZATION_SCORE, get_score
from bench.reporting.aggregate import (
    INCONCLUSIVE,
    INPUT_DOMINATED,
    INVARIANCE,
    RANDOMIZATION,
    invariance_verdicts,
    randomization_summary,
    randomization_verdicts,
)
from bench.reporting.cells import (
    _cell_samples,
    better_is_higher,
    bootstraps,
    intervals,
    inv_column,
    rand_column,
    rank_intervals,
)
from bench.reporting.intervals import percentile_interval
from bench.reporting.sweep_files import (
    FAILED_COLUMNS,
    MODEL_COLUMNS,
    Figure,
    _check_exist,
    describe_figures,
    distinct_rows,
    find_failed_jobs,
    find_figures,
    load_results,
    read_job_records,
    read_row_configs,
    summarize_models,
)

__all__ = [
    "build_leaderboard",
    "balanced_score",
    "overall_verdict",
    "verdict_columns",
    "DEFAULT_SORT",
    "VERDICT_POINTS",
    "VERDICT_RANK",
    "bootstraps",
    "compare_methods",
    "TIE_RTOL",
    "rank_intervals",
    "sort_leaderboard",
    "load_leaderboard",
    "Leaderboard",
    "DEFAULT_METRIC",
    "KEY",
    "COUNT_COLUMNS",
    "NONFINITE_COLUMN",
    "format_nonfinite",
    "parse_nonfinite",
]

log = logging.getLogger(__name__)

DEFAULT_METRIC = RANDOMIZATION_SCORE
PASS, EXACT, FAIL, NA = "pass", "exact", "fail", "N/A"  # the randomization verdicts add input-dominated, inconclusive
PASSING = (PASS, EXACT)
KEY = ["model", "method"]
#: the columns derived from the per-test verdicts: ``salbench-check`` does not compare them (their verdicts it does)
COUNT_COLUMNS = ["verdict", "balanced", "passed", "tests"]
#: the default order of :func:`sort_leaderboard` and of ``salbench-leaderboard --sort``: the ranking
DEFAULT_SORT = "balanced"
#: what one test's verdict counts in the balanced score (:func:`balanced_score`); ``N/A`` (not run) does not count
VERDICT_POINTS = {PASS: 1.0, EXACT: 1.0, INCONCLUSIVE: 0.5, INPUT_DOMINATED: 0.0, FAIL: 0.0}
#: the order of overall verdicts, best first: a row's worst test decides (:func:`overall_verdict`)
VERDICT_RANK = {PASS: 0, INCONCLUSIVE: 1, INPUT_DOMINATED: 2, FAIL: 3, NA: 4}
SUMMARY_COLUMNS = ["invariance", "randomization"]
SHIFT_ORDER = ("mean_shift", "checkerboard", "adversarial_image")
MODE_ORDER = ("cascading", "bottom_up", "independent", "labels")
#: the board's note column: per row, the cells whose per-sample scores are not all finite (module docstring)
NONFINITE_COLUMN = "nonfinite"
NONFINITE_KINDS = ("NaN", "inf")


def _ordered(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def _model_labels(table: pd.DataFrame, configs: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Model labels that never pool rows produced by different configurations.

    ``model@dataset`` when some model was run on several datasets. Then, per model label, the rows of one
    (method, experiment, condition) must share one ``config_hash``; where they do not, every row of that model is
    labelled by the configuration keys that differ (``paper_mlp[train.lr=0.1]``, from ``configs``: hash ->
    flattened config, as the jobs record them), or by its hash when the configs are unknown
    (``paper_mlp[config=1a2b3c]``)."""
    if not len(table):
        return table
    if table.groupby("model")["dataset"].nunique().max() > 1:
        table = table.assign(model=table["model"] + "@" + table["dataset"])
    configs = configs or {}
    counts = table.groupby(["model", "method", "experiment", "condition"])["config_hash"].nunique()
    conflicted = counts[counts > 1]
    if not len(conflicted):
        return table
    labels = table["model"].copy()
    for model in conflicted.index.get_level_values("model").unique():
        rows = table["model"] == model
        groups = table[rows].groupby(["method", "experiment", "condition"])["config_hash"].unique()
        hashes = sorted(set(table.loc[rows, "config_hash"]))
        if all(h in configs for h in hashes):
            keys = sorted({k for hs in groups if len(hs) > 1 for k in _differing([configs[h] for h in hs])})
            suffix = {h: ", ".join(f"{k}={configs[h].get(k, '-')}" for k in keys) for h in hashes}
        else:
            suffix = {h: f"config={h[:6] or '-'}" for h in hashes}
        labels[rows] = [f"{model}[{suffix[h]}]" for h in table.loc[rows, "config_hash"]]
    return table.assign(model=labels)


def _differing(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = set().union(*configs)
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in configs}) > 1]


def _inv_verdict(ssim: float, invariant: bool, exact: bool) -> str:
    if exact:
        return EXACT
    if ssim is None or math.isnan(ssim):
        return NA
    return PASS if invariant else FAIL


# -- non-finite per-sample scores: counted per cell, left out of the means, written in the note column ---------------

def _nonfinite_cells(table: pd.DataFrame, metric: str) -> dict[tuple[str, str, str], dict[str, int]]:
    """``{(model, method, column): {"NaN": k, "inf": j, "n": n}}`` for every mean cell of the board (the per-sample
    values of :func:`bench.reporting.cells._cell_samples`, the same that feed its mean and interval) with at least
    one non-finite per-sample score; ``n`` = the cell's per-sample values (samples x seeds; for ``auc`` a sample
    counts when any of its stages is not finite). ``table``: with its model labels."""
    scores = pd.to_numeric(table["score"], errors="coerce").to_numpy(dtype=np.float64)
    out: dict[tuple[str, str, str], dict[str, int]] = {}
    for kind, flag in zip(NONFINITE_KINDS, (np.isnan(scores), np.isinf(scores)), strict=True):
        if not flag.any():
            continue
        cells = _cell_samples(table.assign(score=flag.astype(np.float64)), metric)
        cells = cells.assign(bad=cells["score"] > 0)
        counts = cells.groupby(["model", "method", "column"], sort=False)["bad"].agg(["sum", "size"])
        for key, bad, n in zip(counts.index, counts["sum"], counts["size"], strict=True):
            if bad:
                out.setdefault(tuple(key), {"n": int(n)})[kind] = int(bad)
    return out


def _finite_scores(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with infinite scores as NaN (left out of every mean and verdict, as NaN is), except the exactness
    distance of the invariance rows (``max|a - b| / max|a|`` of a zero map is infinite: not exact, rightly)."""
    score = pd.to_numeric(table["score"], errors="coerce")
    inf = np.isinf(score.to_numpy(dtype=np.float64))
    if not inf.any():
        return table
    legit = ((table["experiment"] == INVARIANCE) & (table["metric"] == EXACTNESS_SCORE)).to_numpy()
    return table.assign(score=score.mask(inf & ~legit))


def format_nonfinite(cells: Mapping[str, Mapping[str, int]]) -> str:
    """The note of one row: ``{column: {"NaN": k, "inf": j, "n": n}}`` -> ``"col: k NaN, j inf of n samples; ..."``
    (``""`` when empty); :func:`parse_nonfinite` reads it back."""
    items = []
    for column, c in cells.items():
        kinds = ", ".join(f"{c[k]} {k}" for k in NONFINITE_KINDS if c.get(k))
        if kinds:
            items.append(f"{column}: {kinds} of {c['n']} samples")
    return "; ".join(items)


_NOTE_ITEM = re.compile(r"^(?P<column>.+): (?P<kinds>\d+ (?:NaN|inf)(?:, \d+ (?:NaN|inf))*) of (?P<n>\d+) samples$")


def parse_nonfinite(text: Any) -> dict[str, dict[str, int]]:
    """The inverse of :func:`format_nonfinite` (a missing or empty note: ``{}``). Raises ``ValueError`` naming the
    part that is not a note."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip():
        return {}
    out: dict[str, dict[str, int]] = {}
    for item in str(text).split("; "):
        m = _NOTE_ITEM.match(item.strip())
        if m is None:
            raise ValueError(f"{NONFINITE_COLUMN!r} note {item!r} is not '<column>: <k> NaN, <j> inf of <n> samples'")
        cell = {"n": int(m["n"])}
        for part in m["kinds"].split(", "):
            k, kind = part.split(" ")
            cell[kind] = int(k)
        out[m["column"]] = cell
    return out


#: two resampled means are tied when they differ by at most this share of their scale, ``max(1, |a|, |b|)``
TIE_RTOL = 1e-12


def compare_methods(table: pd.DataFrame, a: str, b: str, *, metric: str = DEFAULT_METRIC,
                    configs: Mapping[str, Mapping[str, Any]] | None = None,
                    board: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paired comparison of methods ``a`` and ``b`` on every mean cell of the leaderboard that both have (a defined
    mean) and that has a better side: per (model, column), ``estimate_a`` / ``estimate_b`` (the leaderboard's own cells,
    exactly), ``diff = estimate_a - estimate_b`` with the 95% interval of the paired bootstrap difference (the same
    resamples for both, :func:`bench.reporting.cells.bootstraps`, as the board's intervals), and ``p_a_better``: the
    share of resamples in which ``a`` is better (invariance SSIM higher; randomization similarities lower), **a tie
    counting one half**: two resampled means are tied when ``|mean_a - mean_b| <= TIE_RTOL * max(1, |mean_a|,
    |mean_b|)`` (so exactly tied per-sample scores, or scores one rounding apart, give 0.5, never a verdict of float
    noise). Resamples where either mean is undefined are left out (NaN when none is left).

    ``board``: the leaderboard of the same ``table``, ``configs`` and ``metric`` (:func:`build_leaderboard`); built
    here when ``None``. Raises ``ValueError`` naming the methods the table has when ``a`` or ``b`` is not in it,
    or when ``board`` was built with another randomization metric."""
    labeled = _model_labels(table, configs)
    known = set(labeled.method)
    missing = [m for m in (a, b) if m not in known]
    if missing:
        raise ValueError(f"no results for method(s) {missing}; the table has {', '.join(sorted(known))}")
    if board is None:
        board = build_leaderboard(table, randomization_metric=metric, configs=configs)
    built_with = board.attrs.get("settings", {}).get("randomization_metric", metric)
    if built_with != metric:
        raise ValueError(f"the leaderboard was built with the randomization metric {built_with!r}, not {metric!r}")
    cells = board.set_index(KEY)
    rows = []
    for model, boot in bootstraps(_finite_scores(labeled), metric).items():
        for column in dict.fromkeys(c for _, c in boot.columns):
            better_high = better_is_higher(column)
            if ((a, column) not in boot.columns or (b, column) not in boot.columns or better_high is None
                    or column not in cells.columns or (model, a) not in cells.index or (model, b) not in cells.index):
                continue
            da, db = boot[(a, column)].to_numpy(), boot[(b, column)].to_numpy()
            diff = da - db
            lo, hi = percentile_interval(diff[:, None])
            ok = np.isfinite(diff)
            tie = np.abs(diff) <= TIE_RTOL * np.maximum(1.0, np.maximum(np.abs(da), np.abs(db)))
            wins = ~tie & ((diff > 0) if better_high else (diff < 0))
            p = float((wins[ok].sum() + 0.5 * tie[ok].sum()) / ok.sum()) if ok.any() else float("nan")
            est_a, est_b = float(cells.at[(model, a), column]), float(cells.at[(model, b), column])
            if math.isnan(est_a) or math.isnan(est_b):  # a test one of them did not run (or no defined score)
                continue
            rows.append(dict(model=model, column=column, a=a, b=b, estimate_a=est_a, estimate_b=est_b,
                             diff=est_a - est_b, diff_lo=float(lo[0]), diff_hi=float(hi[0]), p_a_better=p))
    return pd.DataFrame(rows, columns=["model", "column", "a", "b", "estimate_a", "estimate_b", "diff", "diff_lo",
                                       "diff_hi", "p_a_better"])


def _run(verdicts: Iterable[str]) -> list[str]:
    """The verdicts of the tests run (``N/A`` left out); ``ValueError`` naming a word that is not a verdict."""
    run = [v for v in verdicts if v != NA]
    unknown = sorted({v for v in run if v not in VERDICT_POINTS})
    if unknown:
        raise ValueError(f"not verdicts: {unknown}; accepted: {', '.join([*VERDICT_POINTS, NA])}")
    return run


def overall_verdict(verdicts: Iterable[str]) -> str:
    """The verdict of several tests, their worst: ``pass`` (``exact`` counts as ``pass``) when every test run passed;
    else the first of ``fail``, ``input-dominated``, ``inconclusive`` that occurs (in that order); ``N/A`` when none
    was run. Raises ``ValueError`` for a word that is not a verdict."""
    run = _run(verdicts)
    if not run:
        return NA
    if all(v in PASSING for v in run):
        return PASS
    return next(w for w in (FAIL, INPUT_DOMINATED, INCONCLUSIVE) if w in run)


def balanced_score(invariance: Iterable[str], randomization: Iterable[str]) -> float:
    """The balanced score of one row from its per-test verdicts (``invariance``: one per shift; ``randomization``:
    one per mode; ``N/A`` = not run, left out). Each verdict counts :data:`VERDICT_POINTS` (``pass``/``exact`` 1,
    ``inconclusive`` 0.5, ``fail``/``input-dominated`` 0); each family's points are averaged over its tests run, and
    the score is the mean of the families run: ``(mean_inv + mean_rand) / 2``, or the one family's mean when only
    one was run, NaN when none. So every family weighs 1/2 whatever its number of tests: three shifts do not
    outweigh one randomization test."""
    families = []
    for verdicts in (invariance, randomization):
        run = _run(verdicts)
        if run:
            families.append(sum(VERDICT_POINTS[v] for v in run) / len(run))
    return sum(families) / len(families) if families else math.nan


def verdict_columns(board: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The per-test verdict columns of a board, in its order: ``(inv/<shift>/verdict ..., rand/<mode>/verdict ...)``.
    """
    inv = [c for c in board.columns if c.startswith("inv/") and c.endswith("/verdict")]
    rand = [c for c in board.columns if c.startswith("rand/") and c.endswith("/verdict")]
    return inv, rand


def build_leaderboard(
    table: pd.DataFrame,
    *,
    tolerance: float | None = None,
    ssim_threshold: float | None = None,
    randomization_metric: str = DEFAULT_METRIC,
    min_drop: float | None = None,
    sort: str | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    rank_by: str | None = None,
) -> pd.DataFrame:
    """One row per (model, method) from a long results table (see the module docstring for the columns,
    verdicts, thresholds and orders). The settings are kept in ``board.attrs["settings"]``, the sort key in
    ``board.attrs["sort"]``.

    ``sort``: a key of :func:`sort_leaderboard`; ``None``: the rank by ``rank_by`` when given (``rank/<rank_by>``,
    1 = best first), else :data:`DEFAULT_SORT` (the ranking). ``rank_by``: a mean column with a better side; adds
    ``rank/<rank_by>`` with its 95% rank interval (``_lo``, ``_hi``) after the key columns.

    Thresholds left ``None`` are the score registry's (:mod:`bench.core.scores`). Raises ``ValueError`` when
    the table has randomization rows but none for ``randomization_metric``, or the metric is not registered.
    """
    score = get_score(randomization_metric)
    min_drop = score.min_drop if min_drop is None else float(min_drop)
    ssim_threshold = get_score("ssim").invariant_at if ssim_threshold is None else ssim_threshold
    tolerance = get_score("max_rel_diff").invariant_at if tolerance is None else tolerance
    table = _model_labels(table, configs)
    nonfinite = _nonfinite_cells(table, randomization_metric)
    table = _finite_scores(table)
    inv_t = table[table["experiment"] == INVARIANCE]
    rand_t = table[table["experiment"] == RANDOMIZATION]
    keys = pd.concat([inv_t[KEY], rand_t[KEY]]).drop_duplicates()
    board = pd.DataFrame(sorted(map(tuple, keys.to_numpy())), columns=KEY) if len(keys) else pd.DataFrame(
        columns=KEY)
    idx = board.set_index(KEY).index

    shift_cols: list[str] = []
    shifts = _ordered(inv_t["condition"], SHIFT_ORDER)
    if len(inv_t):
        v = invariance_verdicts(inv_t, tolerance=tolerance, ssim_threshold=ssim_threshold)
        v = v.set_index(KEY + ["condition"])
        for shift in shifts:
            sub = v.xs(shift, level="condition").reindex(idx)
            ssim = sub["ssim"].astype(float).to_numpy()
            invariant = sub["invariant"].fillna(False).astype(bool).to_numpy()
            exact = sub["exact"].fillna(False).astype(bool).to_numpy()
            name = next(iter(sub["score"].dropna()), "ssim")  # spearman where SSIM does not apply
            board[inv_column(shift, name)] = ssim
            board[inv_column(shift, "verdict")] = [_inv_verdict(s, i, e)
                                                   for s, i, e in zip(ssim, invariant, exact, strict=True)]
            shift_cols.append(inv_column(shift, "verdict"))

    mode_cols: list[str] = []
    modes = _ordered(rand_t["condition"], MODE_ORDER)
    if len(rand_t):
        if randomization_metric not in set(rand_t["metric"]):
            raise ValueError(f"no randomization scores for the metric {randomization_metric!r}; the table has "
                             f"{', '.join(sorted(set(rand_t['metric'])))}")
        rt = rand_t[rand_t["metric"] == randomization_metric]
        summ = randomization_summary(rt).set_index(KEY + ["condition"])
        verd = randomization_verdicts(rt, randomization_metric, min_drop=min_drop).set_index(KEY + ["condition"])
        for mode in modes:
            if mode not in summ.index.get_level_values("condition"):
                continue
            sub = summ.xs(mode, level="condition").reindex(idx)
            vsub = verd.xs(mode, level="condition").reindex(idx)
            for stat in ("top", "last"):
                board[rand_column(mode, stat, randomization_metric)] = (
                    sub["first" if stat == "top" else "last"].astype(float).to_numpy())
            board[rand_column(mode, "repeat", randomization_metric)] = vsub["repeat"].astype(float).to_numpy()
            board[rand_column(mode, "auc", randomization_metric)] = sub["auc"].astype(float).to_numpy()
            board[rand_column(mode, "verdict")] = vsub["verdict"].fillna(NA).astype(str).to_numpy()
            mode_cols.append(rand_column(mode, "verdict"))

    boots = bootstraps(table, randomization_metric)
    bounds = intervals(boots)
    stats = ("top", "last", "repeat", "auc")
    for col in [c for c in board.columns if (c.startswith("inv/") and not c.endswith("verdict"))
                or (c.startswith("rand/") and c.split("/")[-1] in stats)]:
        pairs = [bounds.get((m, k, col), (math.nan, math.nan)) for m, k in zip(board.model, board.method, strict=True)]
        at = board.columns.get_loc(col) + 1
        board.insert(at, col + "_lo", [p[0] for p in pairs])
        board.insert(at + 1, col + "_hi", [p[1] for p in pairs])

    if rank_by is not None:
        if rank_by not in board.columns or better_is_higher(rank_by) is None:
            usable = [c for c in board.columns if "/" in c and not c.endswith(("_lo", "_hi", "verdict"))
                      and better_is_higher(c) is not None]
            raise ValueError(f"cannot rank by {rank_by!r}: use a mean column with a better side: {', '.join(usable)}")
        ranks = rank_intervals(boots, rank_by)
        triples = [ranks.get((m, k), (math.nan,) * 3) for m, k in zip(board.model, board.method, strict=True)]
        for i, suffix in enumerate(("", "_lo", "_hi")):
            board.insert(len(KEY) + i, f"rank/{rank_by}{suffix}", [t[i] for t in triples])

    board[NONFINITE_COLUMN] = [
        format_nonfinite({c: nonfinite[(m, k, c)] for c in board.columns if (m, k, c) in nonfinite}) or None
        for m, k in zip(board.model, board.method, strict=True)]
    per_test = board[shift_cols + mode_cols]
    at = board.columns.get_loc("method") + 1 + (3 if rank_by is not None else 0)
    inv_rows = list(board[shift_cols].itertuples(index=False))
    rand_rows = list(board[mode_cols].itertuples(index=False))
    derived = {
        "verdict": [overall_verdict(r) for r in per_test.itertuples(index=False)],
        "balanced": np.array([balanced_score(i, r) for i, r in zip(inv_rows, rand_rows, strict=True)], dtype=float),
        "passed": per_test.isin(PASSING).sum(axis=1).astype("int64"),
        "tests": (per_test != NA).sum(axis=1).astype("int64"),
        "invariance": [overall_verdict(r) for r in inv_rows],
        "randomization": [overall_verdict(r) for r in rand_rows],
    }
    for i, (name, values) in enumerate(derived.items()):
        board.insert(at + i, name, values)
    settings = dict(tolerance=tolerance, ssim_threshold=ssim_threshold, randomization_metric=randomization_metric,
                    min_drop=min_drop)
    if sort is None:
        sort = f"rank/{rank_by}" if rank_by is not None else DEFAULT_SORT
    board = sort_leaderboard(board, sort)
    board.attrs["settings"] = settings
    return board


def sort_leaderboard(board: pd.DataFrame, by: str = DEFAULT_SORT) -> pd.DataFrame:
    """Grouped by model (alphabetical); within a model by ``by`` (kept in ``attrs["sort"]``):

    - ``balanced`` (default): the ranking: ``verdict`` (the worst test decides: ``pass``, ``inconclusive``,
      ``input-dominated``, ``fail``, then rows with no test), then ``balanced`` (highest first), then ``tests``
      (most first), then method name; a board without the ``verdict`` / ``balanced`` columns (a CSV written before
      them) has them derived from its per-test verdict columns for the order;
    - ``passed``: most verdicts passed first, ties by method name;
    - ``method``: by method name (``-method``: descending);
    - a column name: ascending (``-name``: descending), missing values last, ties by method name (``rank/<column>``
      after ``rank_by``: 1 = best first).

    Raises ``ValueError`` naming the accepted keys for any other ``by``."""
    attrs = dict(board.attrs)
    descending = by.startswith("-")
    col = by[1:] if descending else by
    if by == DEFAULT_SORT:
        inv_cols, rand_cols = verdict_columns(board)
        verdict = board["verdict"] if "verdict" in board.columns else pd.Series(
            [overall_verdict(r) for r in board[inv_cols + rand_cols].itertuples(index=False)], index=board.index)
        balanced = board["balanced"] if "balanced" in board.columns else pd.Series(
            [balanced_score(r[:len(inv_cols)], r[len(inv_cols):])
             for r in board[inv_cols + rand_cols].itertuples(index=False)], index=board.index, dtype=float)
        tests = (board[inv_cols + rand_cols] != NA).sum(axis=1)
        keys = pd.DataFrame({"model": board["model"], "_v": verdict.map(VERDICT_RANK).fillna(len(VERDICT_RANK)),
                             "_b": balanced.astype(float).fillna(-1.0), "_t": tests, "method": board["method"]},
                            index=board.index)
        order = keys.sort_values(["model", "_v", "_b", "_t", "method"], ascending=[True, True, False, False, True],
                                 kind="stable").index
        out = board.loc[order]
    elif col == "passed":
        out = board.sort_values(["model", "passed", "method"], ascending=[True, False, True], kind="stable")
    elif col == "method":
        out = board.sort_values(["model", "method"], ascending=[True, not descending], kind="stable")
    elif col in board.columns:
        out = board.sort_values("method", kind="stable").sort_values(col, ascending=not descending,
                                                                     na_position="last", kind="stable")
        out = out.sort_values("model", kind="stable")
    else:
        raise ValueError(f"cannot sort by {by!r}: use {DEFAULT_SORT} (the ranking), passed, method or one of the "
                         f"columns {', '.join(c for c in board.columns if c not in KEY)}")
    out = out.reset_index(drop=True)
    out.attrs = {**attrs, "sort": by}
    return out


# -- reading sweeps: results, job records, figures ---------------------------------------------------------------

@dataclass
class Leaderboard:
    """A leaderboard with what its renderers show beside it, read by :mod:`bench.reporting.sweep_files`: the jobs
    that failed, the results files that could not be read (``skipped``: ``(path, reason)``), the models' facts, the
    jobs' figures (:class:`~bench.reporting.sweep_files.Figure`, or plain PNG paths) and the folders read."""

    board: pd.DataFrame
    failed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FAILED_COLUMNS))
    figures: list[Figure | Path] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    models: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=MODEL_COLUMNS))


def load_leaderboard(folders: Sequence[str | os.PathLike], *, figures: bool = True, skip_unreadable: bool = False,
                     **kwargs: Any) -> Leaderboard:
    """Read every results table under ``folders`` (:func:`load_results`) and build the leaderboard (``kwargs``:
    those of :func:`build_leaderboard`), with the failed jobs, the models' facts and (``figures``) the jobs'
    figures.

    ``skip_unreadable``: a damaged or incomplete ``results.parquet`` is left out with a warning and listed in
    ``skipped`` (the board is built from the readable files); by default it raises ``ValueError`` naming the file
    (a regression check must not pass on part of a run). Raises ``FileNotFoundError`` when a folder does not exist
    or holds no results file, ``ValueError`` when no results file is readable or a build option is invalid."""
    _check_exist(folders)
    folders = list(dict.fromkeys(str(Path(f).resolve()) for f in folders))
    table, skipped = load_results(folders, skip_unreadable=skip_unreadable)
    records = read_job_records(folders)
    configs = read_row_configs(folders, records)
    # a row is one score of one sample: the same configuration found in two job folders enters once (the job
    # column differs, so it is dropped before the duplicates are)
    board = build_leaderboard(distinct_rows(table), configs=configs, **kwargs)
    labeled = _model_labels(table, configs)
    figs: list[Figure | Path] = []
    if figures:
        by_job = labeled.groupby("job")
        figs = list(describe_figures(
            find_figures(folders), records=records,
            job_models={Path(j): sorted(g["model"].unique()) for j, g in by_job},
            job_methods={Path(j): sorted(g["method"].unique()) for j, g in by_job}))
    return Leaderboard(board=board, failed=find_failed_jobs(folders, records), figures=figs, sources=folders,
                       skipped=skipped, models=summarize_models(labeled, records, configs))
