"""Paired comparisons between methods and rank intervals: known differences on synthetic tables, the command line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import leaderboard as lb_cli
from bench.core.results import CONTROL_REPEAT, concat, score_rows, write_table
from bench.reporting.leaderboard import build_leaderboard, compare_methods


def _method(method: str, top: np.ndarray, last: np.ndarray) -> pd.DataFrame:
    return concat(score_rows({"ssim": torch.as_tensor(v)}, experiment="model_randomization", model="m", dataset="d",
                             method=method, condition="cascading", layer=layer)
                  for layer, v in ((CONTROL_REPEAT, np.ones(len(top))), ("fc2", top), ("fc1", last)))


def _table(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, n)  # per-sample difficulty shared by the methods: the pairing matters
    noise = rng.normal(0, 0.3, n)
    return concat([
        _method("a", base - 0.1, base - 0.1),
        _method("b", base, base),
        _method("c", base + noise - noise.mean(), base),  # exactly as good as b on average, noisy
    ])


def test_paired_difference_and_probability_of_being_better():
    cmp = compare_methods(_table(), "a", "b").set_index("column")
    top = cmp.loc["rand/cascading/ssim/top"]
    assert top["diff"] == pytest.approx(-0.1)
    assert top.diff_lo == pytest.approx(-0.1) and top.diff_hi == pytest.approx(-0.1)  # paired: no spread
    assert top.p_a_better == 1.0  # lower similarity to the trained map: a changes more, in every resample
    assert "rand/cascading/ssim/repeat" not in cmp.index  # no better side
    noisy = compare_methods(_table(), "c", "b").set_index("column").loc["rand/cascading/ssim/top"]
    assert noisy.diff_lo < 0 < noisy.diff_hi and 0.1 < noisy.p_a_better < 0.9
    with pytest.raises(ValueError, match=r"no results for method\(s\) \['zzz'\]"):
        compare_methods(_table(), "a", "zzz")


def test_rank_intervals():
    board = build_leaderboard(_table(), rank_by="rand/cascading/ssim/top").set_index("method")
    col = "rank/rand/cascading/ssim/top"
    assert board.loc["a", col] == 1 and board.loc["a", col + "_lo"] == board.loc["a", col + "_hi"] == 1
    assert board.loc["b", col + "_lo"] <= 2 <= board.loc["b", col + "_hi"]
    assert board.loc["c", col + "_hi"] - board.loc["c", col + "_lo"] >= 1  # b and c swap places across resamples
    with pytest.raises(ValueError, match="cannot rank by"):
        build_leaderboard(_table(), rank_by="rand/cascading/verdict")


def test_cli_compare_and_rank(tmp_path, capsys):
    write_table(_table(), tmp_path / "job")
    assert lb_cli.main([str(tmp_path), "--format", "md", "--compare", "a", "b", "--rank-by",
                        "rand/cascading/ssim/last"]) == 0
    out = capsys.readouterr().out
    assert "# a vs b (paired bootstrap)" in out and "P(a better)" in out and "rank by rand/cascading/ssim/last" in out
    csv = pd.read_csv(tmp_path / "compare_a_b.csv")
    assert set(csv.column) == {"rand/cascading/ssim/top", "rand/cascading/ssim/last", "rand/cascading/ssim/auc"}
