"""The regression check: identical leaderboards pass; moved cells, flipped verdicts and missing rows fail."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from bench.cli.check import main
from bench.reporting.check import baseline_metric, compare
from bench.reporting.leaderboard import build_leaderboard
from bench.reporting.render import read_leaderboard_csv

CELL = "rand/cascading/ssim/last"


@pytest.fixture
def board(full_table) -> pd.DataFrame:
    return build_leaderboard(full_table())


@pytest.fixture
def sweep_and_baseline(tmp_path, capsys, make_sweep):
    sweep = make_sweep(tmp_path, figure=False)
    baseline = tmp_path / "ci" / "baseline.csv"
    assert main([str(sweep), "--baseline", str(baseline), "--update"]) == 0
    assert "baseline written" in capsys.readouterr().out
    return sweep, baseline


def _edit(baseline, model: str, method: str, column: str, value) -> None:
    df = read_leaderboard_csv(baseline)
    df.loc[(df.model == model) & (df.method == method), column] = value
    df.to_csv(baseline, index=False)


def test_compare_identical_and_csv_roundtrip(board, tmp_path):
    report = compare(board, board.copy())
    assert report.ok and "OK" in str(report) and report.compared_rows == len(board)
    board.to_csv(tmp_path / "b.csv", index=False)
    assert compare(board, read_leaderboard_csv(tmp_path / "b.csv"), atol=0.0).ok  # NaN == NaN, N/A kept


def test_compare_reports_each_kind_of_difference(board):
    base = board.copy()
    base.loc[(base.model == "mlp") & (base.method == "gradient"), CELL] = 0.45
    base.loc[(base.model == "mlp") & (base.method == "gxi"), CELL] = 0.93  # within atol
    base.loc[(base.model == "mlp") & (base.method == "gxi"), "inv/mean_shift/verdict"] = "pass"
    base.loc[(base.model == "mlp") & (base.method == "ig_black"), CELL] = 0.5  # NaN now
    base = base[base.method != "gbp"].drop(columns=["rand/independent/verdict"])
    base = pd.concat([base, base.iloc[:1].assign(method="old_method")], ignore_index=True)
    report = compare(board, base, atol=0.05)
    assert not report.ok
    moved = {(c.model, c.method, c.column): (c.baseline, c.current) for c in report.moved}
    assert set(moved) == {("mlp", "gradient", CELL), ("mlp", "ig_black", CELL)}
    assert moved[("mlp", "gradient", CELL)] == pytest.approx((0.45, 0.15))
    assert math.isnan(moved[("mlp", "ig_black", CELL)][1])
    assert [(c.method, c.column, c.baseline, c.current) for c in report.flipped] == [
        ("gxi", "inv/mean_shift/verdict", "pass", "fail")]
    assert report.new_rows == [("mlp", "gbp")] and report.missing_rows == [("cnn", "old_method")]
    assert report.new_columns == ["rand/independent/verdict"] and report.missing_columns == []
    text = str(report)
    assert "mlp / gradient / rand/cascading/ssim/last: baseline 0.45 -> current 0.15" in text
    assert "ig_black" in text and "missing" in text and "old_method" in text
    with pytest.raises(ValueError, match="repeated"):
        compare(board, pd.concat([board, board.iloc[:1]]))


def test_cli_identical_run_passes(sweep_and_baseline, capsys, full_table):
    sweep, baseline = sweep_and_baseline
    assert main([str(sweep), "--baseline", str(baseline)]) == 0
    assert capsys.readouterr().out.startswith("OK")
    csv = sweep.parent / "current.csv"
    build_leaderboard(full_table()).to_csv(csv, index=False)
    assert main([str(csv), "--baseline", str(baseline), "--atol", "0"]) == 0  # a leaderboard CSV as the run


def test_cli_moved_cell_fails(sweep_and_baseline, capsys):
    sweep, baseline = sweep_and_baseline
    _edit(baseline, "mlp", "gradient", CELL, 0.3)
    assert main([str(sweep), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "1 cell(s) moved" in out and "0 verdict(s) flipped" in out
    assert "mlp / gradient / rand/cascading/ssim/last: baseline 0.3 -> current 0.15" in out
    assert main([str(sweep), "--baseline", str(baseline), "--atol", "0.2"]) == 0


def test_cli_flipped_verdict_fails(sweep_and_baseline, capsys):
    sweep, baseline = sweep_and_baseline
    _edit(baseline, "mlp", "gxi", "randomization", "pass")
    assert main([str(sweep), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "verdicts flipped" in out and "mlp / gxi / randomization: baseline pass -> current fail" in out


def test_cli_update_rewrites_baseline(sweep_and_baseline, capsys):
    sweep, baseline = sweep_and_baseline
    _edit(baseline, "mlp", "gradient", CELL, 0.3)
    assert main([str(sweep), "--baseline", str(baseline), "--update"]) == 0
    out = capsys.readouterr().out
    assert "baseline 0.3 -> current 0.15" in out and "baseline updated" in out
    assert read_leaderboard_csv(baseline).loc[lambda d: (d.model == "mlp") & (d.method == "gradient"), CELL].item() \
        == pytest.approx(0.15)
    assert main([str(sweep), "--baseline", str(baseline)]) == 0


def test_cli_metric_follows_the_baseline(tmp_path, capsys, make_sweep):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    baseline = tmp_path / "ssim.csv"
    assert main([str(sweep), "--baseline", str(baseline), "--update", "--metric", "spearman_abs"]) == 0
    assert baseline_metric(read_leaderboard_csv(baseline)) == "spearman_abs"
    assert main([str(sweep), "--baseline", str(baseline)]) == 0  # no --metric: the baseline's
    capsys.readouterr()
    assert main([str(sweep), "--baseline", str(baseline), "--metric", "ssim"]) == 1
    assert "columns only in the baseline" in capsys.readouterr().out


def test_cli_missing_baseline_is_a_clear_error(tmp_path, capsys, make_sweep):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    assert main([str(sweep), "--baseline", str(tmp_path / "nope.csv")]) == 2
    err = capsys.readouterr().err
    assert "baseline file" in err and "nope.csv" in err and "does not exist" in err and "--update" in err
    assert main([str(tmp_path / "no_run"), "--baseline", str(tmp_path / "nope.csv")]) == 2
    assert "no_run does not exist" in capsys.readouterr().err


def test_cells_with_intervals_move_only_outside_the_current_interval(board):
    key = (board.model == "mlp") & (board.method == "gradient")
    lo, hi = float(board.loc[key, CELL + "_lo"].iloc[0]), float(board.loc[key, CELL + "_hi"].iloc[0])
    assert lo < 0.15 < hi
    inside, outside = board.copy(), board.copy()
    inside.loc[key, CELL] = hi - 1e-6  # noise the samples allow: not a regression
    outside.loc[key, CELL] = hi + 0.01
    assert compare(board, inside).ok and "95% intervals" in str(compare(board, inside))
    report = compare(board, outside)
    assert [(c.method, c.column) for c in report.moved] == [("gradient", CELL)]
    assert not compare(board, inside, atol=1e-9).ok  # a fixed tolerance when asked for
