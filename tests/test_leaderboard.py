"""The leaderboard from synthetic results tables with known scores: values, verdicts, N/A, sorting, outputs."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from bench.cli import leaderboard as lb_cli
from bench.core.results import concat
from bench.reporting import leaderboard as lbm
from bench.reporting import render


def row(board: pd.DataFrame, model: str, method: str) -> pd.Series:
    sel = board[(board.model == model) & (board.method == method)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_values_verdicts_and_pass_fail(full_table):
    board = lbm.build_leaderboard(full_table())
    g = row(board, "mlp", "gradient")
    assert g["inv/mean_shift/ssim"] == pytest.approx(1.0)
    assert g["inv/mean_shift/verdict"] == "exact" and g["inv/checkerboard/verdict"] == "exact"
    assert g["rand/cascading/ssim/last"] == pytest.approx(0.15)
    assert g["rand/cascading/ssim/top"] == pytest.approx(0.45)
    assert g["rand/cascading/ssim/repeat"] == pytest.approx(1.0)
    assert g["rand/cascading/ssim/auc"] == pytest.approx((0.45 + 0.4 + 0.15) / 3)
    assert g["rand/cascading/verdict"] == "pass"
    assert g["rand/independent/ssim/last"] == pytest.approx(0.7)
    assert g["rand/independent/verdict"] == "fail"
    assert (g["invariance"], g["randomization"], g["passed"], g["tests"]) == ("pass", "fail", 3, 4)

    x = row(board, "mlp", "gxi")
    assert x["inv/mean_shift/ssim"] == pytest.approx(0.6) and x["inv/checkerboard/ssim"] == pytest.approx(0.85)
    assert x["inv/mean_shift/verdict"] == "fail"
    assert x["rand/cascading/ssim/last"] == pytest.approx(0.92) and x["rand/cascading/verdict"] == "fail"
    assert (x["invariance"], x["randomization"], x["passed"], x["tests"]) == ("fail", "fail", 0, 3)

    ig = row(board, "mlp", "ig_black")
    assert ig["inv/mean_shift/ssim"] == pytest.approx(0.997)
    assert ig["inv/mean_shift/verdict"] == "pass"  # SSIM passes, not exact (max_rel_diff 0.02 > 1e-3)
    assert ig["inv/checkerboard/verdict"] == "fail" and ig["invariance"] == "fail"

    c = row(board, "cnn", "gradient")
    # mean 0.99 >= 0.99, but a pass must hold for the interval: its lower end is 0.98
    assert c["inv/mean_shift/ssim"] == pytest.approx(0.99) and c["inv/mean_shift/ssim_lo"] == pytest.approx(0.98)
    assert c["inv/mean_shift/verdict"] == "fail"
    assert g["inv/mean_shift/ssim_lo"] <= g["inv/mean_shift/ssim"] <= g["inv/mean_shift/ssim_hi"]
    assert g["rand/cascading/ssim/last_lo"] <= 0.15 <= g["rand/cascading/ssim/last_hi"]
    assert c["rand/cascading/ssim/last"] == pytest.approx(0.1)  # NaN samples skipped
    assert c["rand/cascading/ssim/auc"] == pytest.approx((0.3 + 0.1) / 2)
    assert c["rand/cascading/verdict"] == "inconclusive"  # 4 defined paired samples < 8
    assert board.attrs["settings"]["randomization_metric"] == "ssim"


def test_not_run_is_na(full_table, invariance_table, randomization_table):
    board = lbm.build_leaderboard(full_table())
    ig = row(board, "mlp", "ig_black")  # no randomization run
    assert math.isnan(ig["rand/cascading/ssim/last"])
    assert ig["rand/cascading/verdict"] == "N/A" and ig["randomization"] == "N/A"
    gbp = row(board, "mlp", "gbp")  # no invariance run
    assert math.isnan(gbp["inv/mean_shift/ssim"]) and gbp["inv/mean_shift/verdict"] == "N/A"
    assert (gbp["invariance"], gbp["randomization"], gbp["passed"], gbp["tests"]) == ("N/A", "fail", 0, 1)
    c = row(board, "cnn", "gradient")  # checkerboard was run for mlp only
    assert c["inv/checkerboard/verdict"] == "N/A" and c["invariance"] == "fail"
    assert (c["randomization"], c["passed"], c["tests"]) == ("inconclusive", 0, 2)

    only_inv = lbm.build_leaderboard(invariance_table())
    assert not [col for col in only_inv.columns if col.startswith("rand/")]
    assert set(only_inv["randomization"]) == {"N/A"}
    only_rand = lbm.build_leaderboard(randomization_table())
    assert set(only_rand["invariance"]) == {"N/A"}


def test_thresholds_and_metric(full_table):
    # the relative change is the drop below the repeat over the reference gradient's drop (0.7 in the fixture)
    board = lbm.build_leaderboard(full_table(), min_drop=0.9)
    assert row(board, "mlp", "gradient")["rand/cascading/verdict"] == "fail"  # the top unit: 0.55 / 0.7 < 0.9
    assert board.attrs["settings"]["min_drop"] == 0.9
    board = lbm.build_leaderboard(full_table(), min_drop=0.2)
    assert row(board, "mlp", "gradient")["rand/independent/verdict"] == "pass"  # 0.3 / 0.7, its bound >= 0.2
    assert row(board, "mlp", "gbp")["rand/cascading/verdict"] == "fail"  # the top unit: 0.1 / 0.7
    board = lbm.build_leaderboard(full_table(), ssim_threshold=0.5)
    assert row(board, "mlp", "gxi")["inv/mean_shift/verdict"] == "pass"
    board = lbm.build_leaderboard(full_table(), randomization_metric="spearman_abs")
    assert row(board, "mlp", "gradient")["rand/cascading/spearman_abs/last"] == pytest.approx(0.075)
    assert "rand/cascading/ssim/last" not in board.columns
    with pytest.raises(ValueError, match="hog"):
        lbm.build_leaderboard(full_table(), randomization_metric="hog")


def test_sorting_and_grouping(full_table):
    board = lbm.build_leaderboard(full_table())
    assert list(zip(board.model, board.method, strict=True)) == [
        ("cnn", "gradient"), ("mlp", "gradient"), ("mlp", "ig_black"), ("mlp", "gbp"), ("mlp", "gxi")]
    by_method = lbm.sort_leaderboard(board, "method")
    assert list(by_method.method[by_method.model == "mlp"]) == ["gbp", "gradient", "gxi", "ig_black"]
    by_ssim = lbm.build_leaderboard(full_table(), sort="-inv/mean_shift/ssim")
    assert list(by_ssim.method[by_ssim.model == "mlp"]) == ["gradient", "ig_black", "gxi", "gbp"]  # NaN last
    asc = lbm.sort_leaderboard(board, "rand/cascading/ssim/last")
    assert list(asc.method[asc.model == "mlp"]) == ["gradient", "gbp", "gxi", "ig_black"]
    assert asc.attrs["settings"] == board.attrs["settings"]
    with pytest.raises(ValueError, match="cannot sort"):
        lbm.sort_leaderboard(board, "nope")


def test_datasets_are_not_pooled(inv_rows):
    t = concat([inv_rows("mlp", "gradient", "mean_shift", [1.0], [0.0]),
                inv_rows("mlp", "gradient", "mean_shift", [0.2], [0.9], dataset="cifar10")])
    board = lbm.build_leaderboard(t)
    assert set(board.model) == {"mlp@mnist", "mlp@cifar10"}
    assert row(board, "mlp@cifar10", "gradient")["inv/mean_shift/verdict"] == "fail"


def test_cli_writes_three_formats(tmp_path, capsys, full_table, make_sweep):
    sweep = make_sweep(tmp_path)
    out = tmp_path / "out"
    # the job folder is also inside the sweep: its rows must not count twice
    assert lb_cli.main([str(sweep), str(sweep / "0"), "--out", str(out)]) == 0
    md = capsys.readouterr().out
    assert "## mlp" in md and "## cnn" in md and "| gradient" in md
    assert "Failed jobs (1)" in md and "RuntimeError: boom in broken" in md and "method=broken" in md
    assert {p.name for p in out.iterdir()} == {"leaderboard.md", "leaderboard.csv", "leaderboard.html"}
    assert (out / "leaderboard.md").read_text() == md.removesuffix("\n")

    csv = render.read_leaderboard_csv(out / "leaderboard.csv")
    expected = lbm.build_leaderboard(full_table())
    pd.testing.assert_frame_equal(csv, expected, check_dtype=False)

    page = (out / "leaderboard.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert page.count("data:image/png;base64,") == 1 and "cascade.png" not in page  # a caption, not a path
    assert "<link" not in page and "src='http" not in page and "href=" not in page  # self-contained
    assert "boom in broken" in page and "<td class='exact'>exact</td>" in page


def test_cli_formats_default_out_and_errors(tmp_path, capsys, make_sweep):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    assert lb_cli.main([str(sweep), "--format", "csv", "--sort", "method", "--metric", "spearman_abs"]) == 0
    assert [p.name for p in sweep.glob("leaderboard.*")] == ["leaderboard.csv"]
    assert "Failed jobs" not in capsys.readouterr().out
    csv = render.read_leaderboard_csv(sweep / "leaderboard.csv")
    assert "rand/cascading/spearman_abs/last" in csv.columns
    assert list(csv.method[csv.model == "mlp"]) == ["gbp", "gradient", "gxi", "ig_black"]

    empty = tmp_path / "empty"
    (empty / "job").mkdir(parents=True)
    (empty / "job" / "job.json").write_text(json.dumps({"status": "failed", "error": "OSError: no data"}))
    assert lb_cli.main([str(empty)]) == 2
    err = capsys.readouterr().err
    assert "no results.parquet" in err and "OSError: no data" in err
    with pytest.raises(SystemExit) as exit_:
        lb_cli.main([str(sweep), "--format", "pdf"])
    assert exit_.value.code == 2


def test_html_without_figures_or_rows(invariance_table):
    page = render.to_html(lbm.build_leaderboard(invariance_table()))
    assert "<img" not in page and "<h2>mlp</h2>" in page
    assert "No results" in render.to_markdown(lbm.build_leaderboard(invariance_table().iloc[:0]))
