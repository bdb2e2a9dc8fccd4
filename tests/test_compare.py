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


def test_exact_ties_give_one_half():
    rng = np.random.default_rng(1)
    base = rng.uniform(0.2, 0.8, 40)
    ulp = np.nextafter(base, 2.0) - base  # one rounding step: the float noise of a map computed another way
    flip = rng.random(40) < 0.5
    table = concat([_method("a", base, base), _method("b", base.copy(), np.where(flip, base + ulp, base - ulp))])
    for x, y in (("a", "b"), ("b", "a")):
        cmp = compare_methods(table, x, y).set_index("column")
        assert cmp.loc["rand/cascading/ssim/top", "p_a_better"] == 0.5  # exactly equal per sample
        assert cmp.loc["rand/cascading/ssim/last", "p_a_better"] == 0.5  # one rounding step apart
        assert cmp.loc["rand/cascading/ssim/top", "diff"] == 0.0
    # a real difference far below the scores' own spread is still a difference, not a tie
    table = concat([_method("a", base, base), _method("b", base + 1e-9, base - 1e-9)])
    cmp = compare_methods(table, "a", "b").set_index("column")
    assert cmp.loc["rand/cascading/ssim/top", "p_a_better"] == 1.0
    assert cmp.loc["rand/cascading/ssim/last", "p_a_better"] == 0.0


def _seeded(method: str, top: np.ndarray, last: np.ndarray, seed: int) -> pd.DataFrame:
    return concat(score_rows({"ssim": torch.as_tensor(v)}, experiment="model_randomization", model="m", dataset="d",
                             method=method, condition="cascading", layer=layer, seed=seed)
                  for layer, v in ((CONTROL_REPEAT, np.ones(len(top))), ("fc3", top), ("fc2", (top + last) / 2),
                                   ("fc1", last)))


def test_the_estimates_are_the_leaderboards_cells(full_table):
    # two seeds, a NaN stage score (the AUC is the mean of the stages' means) and invariance cells
    rng = np.random.default_rng(3)
    parts = []
    for seed in (0, 1):
        for method in ("a", "b"):
            top, last = rng.uniform(0, 1, 12), rng.uniform(0, 1, 12)
            last[seed] = np.nan
            parts.append(_seeded(method, top, last, seed))
    for table in (concat(parts), full_table()):
        board = build_leaderboard(table)
        a, b = ("a", "b") if "a" in set(table.method) else ("gradient", "gxi")
        cmp = compare_methods(table, a, b)
        assert len(cmp) >= 3
        for r in cmp.itertuples():
            cells = board[board.model == r.model].set_index("method")
            assert abs(r.estimate_a - cells.at[a, r.column]) <= 1e-12, r.column
            assert abs(r.estimate_b - cells.at[b, r.column]) <= 1e-12, r.column
            assert r.diff == r.estimate_a - r.estimate_b
        pd.testing.assert_frame_equal(compare_methods(table, a, b, board=board), cmp)
    with pytest.raises(ValueError, match="built with the randomization metric 'ssim', not 'spearman_abs'"):
        compare_methods(full_table(), "gradient", "gxi", metric="spearman_abs", board=board)


def test_cli_compare_and_rank(tmp_path, capsys):
    write_table(_table(), tmp_path / "sweep" / "job")
    out = tmp_path / "out"
    assert lb_cli.main([str(tmp_path / "sweep"), "--out", str(out), "--format", "md", "--compare", "a", "b",
                        "--rank-by", "rand/cascading/ssim/last"]) == 0
    text = capsys.readouterr().out
    assert "A = a, B = b: paired bootstrap over samples" in text and "P(A better)" in text
    assert "Order: rank by rand/cascading/ssim/last" in text.replace("\n", " ")
    assert max(len(line) for line in text.splitlines()) <= 100
    # sorted by the rank (1 = best: the lowest similarity at the last stage), not by the default ranking
    lines = text.splitlines()
    rows = [line.split() for line in lines[2:lines.index("", 2)]]
    assert [r[1] for r in rows] == ["a", "b", "c"] or [r[1] for r in rows] == ["a", "c", "b"]
    assert [float(r[4]) for r in rows] == sorted(float(r[4]) for r in rows) and rows[0][4] == "1"
    csv = pd.read_csv(out / "compare_a_b.csv")
    assert set(csv.column) == {"rand/cascading/ssim/top", "rand/cascading/ssim/last", "rand/cascading/ssim/auc"}
    assert not list((tmp_path / "sweep").glob("*.csv")) and not list((tmp_path / "sweep").glob("leaderboard.*"))

    assert lb_cli.main([str(tmp_path / "sweep"), "--markdown", "--compare", "a", "b", "--rank-by",
                        "rand/cascading/ssim/last"]) == 0
    md = capsys.readouterr().out
    assert "# a vs b (paired bootstrap)" in md and "P(a better)" in md and "rank by rand/cascading/ssim/last" in md


def test_rank_by_sorts_the_board():
    board = build_leaderboard(_table(), rank_by="rand/cascading/ssim/top")
    ranks = list(board["rank/rand/cascading/ssim/top"])
    assert ranks == sorted(ranks) and board.method.iloc[0] == "a"
    assert list(board.columns[:5]) == ["model", "method", "rank/rand/cascading/ssim/top",
                                       "rank/rand/cascading/ssim/top_lo", "rank/rand/cascading/ssim/top_hi"]
    by_method = build_leaderboard(_table(), rank_by="rand/cascading/ssim/top", sort="-method")
    assert list(by_method.method) == ["c", "b", "a"]  # an explicit sort wins


def _readme_sweep(root) -> None:
    """The README's sweep (method=gradient,pattern_attribution, two shifts, model=paper_mlp,small_cnn) in small."""
    from bench.core.results import CONTROL_GRADIENT, CONTROL_OTHER

    rng = np.random.default_rng(0)
    for model in ("paper_mlp", "small_cnn"):
        for method in ("gradient", "pattern_attribution"):
            for shift in ("mean_shift", "checkerboard"):
                rows = score_rows({"ssim": torch.ones(8, dtype=torch.float64),
                                   "max_rel_diff": torch.zeros(8, dtype=torch.float64)},
                                  experiment="input_invariance", model=model, dataset="mnist", method=method,
                                  condition=shift)
                write_table(rows, root / f"{model}-{method}-{shift}")
            stages = {CONTROL_REPEAT: 1.0, CONTROL_OTHER: 0.0, f"{CONTROL_GRADIENT}/{CONTROL_REPEAT}": 1.0,
                      f"{CONTROL_GRADIENT}/{CONTROL_OTHER}": 0.0, f"{CONTROL_GRADIENT}/fc1": 0.3,
                      "fc1": 0.1 if method == "gradient" else 0.8}
            rows = concat(score_rows({"ssim": torch.as_tensor(np.clip(v + rng.normal(0, 0.01, 8), 0, 1))},
                                     experiment="model_randomization", model=model, dataset="mnist", method=method,
                                     condition="cascading", mode="cascading", layer=layer)
                          for layer, v in stages.items())
            write_table(rows, root / f"{model}-{method}-cascading")


def test_the_readme_compare_example(tmp_path, capsys):
    sweep = tmp_path / "multirun" / "mysweep"
    _readme_sweep(sweep)
    assert lb_cli.main([str(sweep), "--compare", "gradient", "guided_backprop"]) == 2
    captured = capsys.readouterr()
    assert captured.err == ("salbench-leaderboard: error: no results for method(s) ['guided_backprop']; the table "
                            "has gradient, pattern_attribution\n")
    assert not captured.out
    assert lb_cli.main([str(sweep), "--compare", "gradient", "pattern_attribution"]) == 0
    text = capsys.readouterr().out
    assert "A = gradient, B = pattern_attribution" in text
    for model in ("paper_mlp", "small_cnn"):
        assert f"\n{model}\n" in text
    tied = [line for line in text.splitlines() if "inv/mean_shift/ssim" in line]
    assert len(tied) == 2 and all(line.split()[-1] == "0.500" for line in tied)
    assert not [p for p in sweep.rglob("*") if p.is_file() and p.suffix != ".parquet"]
