"""The leaderboard from synthetic results tables with known scores: values, verdicts, N/A, sorting, outputs."""

from __future__ import annotations

import json
import math
import re

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
    assert board.attrs["sort"] == "balanced"
    # the ranking (mlp, every row fails somewhere): gradient (invariance 1, randomization 1/2: 0.75), ig_black
    # (invariance 1/2, no randomization: 0.5), gxi (0, 3 tests run) before gbp (0, 1 test run)
    assert list(zip(board.model, board.method, strict=True)) == [
        ("cnn", "gradient"), ("mlp", "gradient"), ("mlp", "ig_black"), ("mlp", "gxi"), ("mlp", "gbp")]
    assert list(board.balanced) == pytest.approx([0.25, 0.75, 0.5, 0.0, 0.0])
    assert list(board.verdict) == ["fail"] * 5
    by_passed = lbm.sort_leaderboard(board, "passed")  # the former default still works
    assert list(by_passed.method[by_passed.model == "mlp"]) == ["gradient", "ig_black", "gbp", "gxi"]
    assert by_passed.attrs["sort"] == "passed"
    by_method = lbm.sort_leaderboard(board, "method")
    assert list(by_method.method[by_method.model == "mlp"]) == ["gbp", "gradient", "gxi", "ig_black"]
    by_ssim = lbm.build_leaderboard(full_table(), sort="-inv/mean_shift/ssim")
    assert list(by_ssim.method[by_ssim.model == "mlp"]) == ["gradient", "ig_black", "gxi", "gbp"]  # NaN last
    asc = lbm.sort_leaderboard(board, "rand/cascading/ssim/last")
    assert list(asc.method[asc.model == "mlp"]) == ["gradient", "gbp", "gxi", "ig_black"]
    assert asc.attrs["settings"] == board.attrs["settings"]
    with pytest.raises(ValueError, match="cannot sort"):
        lbm.sort_leaderboard(board, "nope")


def test_balanced_score_and_overall_verdict():
    assert lbm.balanced_score(["exact", "pass", "pass"], ["fail"]) == 0.5
    assert lbm.balanced_score(["fail", "fail", "pass"], ["pass"]) == pytest.approx((1 / 3 + 1) / 2)
    assert lbm.balanced_score(["pass", "N/A"], ["inconclusive", "input-dominated"]) == pytest.approx((1 + 0.25) / 2)
    assert lbm.balanced_score(["pass", "fail"], []) == 0.5 and lbm.balanced_score([], ["N/A", "pass"]) == 1.0
    assert math.isnan(lbm.balanced_score(["N/A"], []))
    assert lbm.overall_verdict(["pass", "exact", "N/A"]) == "pass"
    assert lbm.overall_verdict(["inconclusive", "input-dominated", "pass"]) == "input-dominated"
    assert lbm.overall_verdict(["inconclusive", "fail", "input-dominated"]) == "fail"
    assert lbm.overall_verdict(["pass", "inconclusive"]) == "inconclusive"
    assert lbm.overall_verdict(["N/A"]) == "N/A"
    with pytest.raises(ValueError, match="not verdicts: \\['maybe'\\]"):
        lbm.balanced_score(["maybe"], [])


def test_three_shifts_do_not_outweigh_the_randomization_test(inv_rows):
    # "shifty" passes the three shifts and fails the cascade: 3 passed of 4; "steady" passes one shift and the
    # cascade: 2 passed of 4. Counting passes puts shifty first; the balanced score (each family 1/2) does not.
    from tests.conftest import _rand_rows

    ok, bad = ([1.0, 1.0], [0.0, 0.0]), ([0.5, 0.6], [0.5, 0.6])
    table = concat([
        *(inv_rows("mlp", "shifty", s, *ok) for s in ("mean_shift", "checkerboard", "adversarial_image")),
        _rand_rows("mlp", "shifty", "cascading", {"fc2": [0.9, 0.9], "fc1": [0.9, 0.9]}),
        inv_rows("mlp", "steady", "mean_shift", *ok),
        *(inv_rows("mlp", "steady", s, *bad) for s in ("checkerboard", "adversarial_image")),
        _rand_rows("mlp", "steady", "cascading", {"fc2": [0.1, 0.1], "fc1": [0.1, 0.1]}),
    ])
    board = lbm.build_leaderboard(table)
    assert list(board.method) == ["steady", "shifty"]
    assert list(board.passed) == [2, 3] and list(board.verdict) == ["fail", "fail"]
    assert list(board.balanced) == pytest.approx([(1 / 3 + 1) / 2, 0.5])
    assert list(lbm.sort_leaderboard(board, "passed").method) == ["shifty", "steady"]


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
    assert lb_cli.main([str(sweep), str(sweep / "0"), "--out", str(out), "--markdown"]) == 0
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
    assert "boom in broken" in page and re.search(r"<td class='[^']*\bexact\b[^']*'>exact</td>", page)

    # by default the console summary, not the Markdown: every line within 100 columns, the files named
    assert lb_cli.main([str(sweep), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "| gradient" not in captured.out and "## mlp" not in captured.out
    assert max(len(line) for line in captured.out.splitlines()) <= 100 and "\x1b[" not in captured.out
    assert captured.out.startswith("cnn (1 method)\n") and "mlp (4 methods)" in captured.out
    assert "Failed jobs (1):" in captured.out and "RuntimeError: boom in broken" in captured.out
    assert f"Full tables: {out / 'leaderboard.md'}, {out / 'leaderboard.csv'}, {out / 'leaderboard.html'}" in (
        captured.out.replace("\n", " "))
    assert "written: " in captured.err


def test_cli_writes_nothing_without_out(tmp_path, capsys, make_sweep):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert lb_cli.main([str(sweep), "--compare", "gradient", "gxi", "--format", "md,csv"]) == 0
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written anywhere
    captured = capsys.readouterr()
    assert "mlp (4 methods)" in captured.out and "A = gradient, B = gxi" in captured.out
    assert "salbench-leaderboard: nothing written (give --out DIR to write leaderboard.md/.csv and " \
           "compare_gradient_gxi.csv there)" in captured.err
    assert "Full tables" not in captured.out


def test_cli_formats_and_errors(tmp_path, capsys, make_sweep):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    out = tmp_path / "out"
    assert lb_cli.main([str(sweep), "--out", str(out), "--format", "csv", "--sort", "method",
                        "--metric", "spearman_abs"]) == 0
    assert [p.name for p in out.glob("leaderboard.*")] == ["leaderboard.csv"]
    assert "Failed jobs" not in capsys.readouterr().out
    csv = render.read_leaderboard_csv(out / "leaderboard.csv")
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
