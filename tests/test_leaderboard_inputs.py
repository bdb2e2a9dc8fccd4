"""The leaderboard on imperfect sweeps: what failed in a failed job, damaged results files, and the exit status and
message of ``salbench-leaderboard`` on bad input (never a traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import leaderboard as lb_cli
from bench.core.results import COLUMNS
from bench.reporting import leaderboard as lbm
from bench.reporting import render, sweep_files


def _failed_job(sweep: Path, name: str, record: dict, overrides: tuple[str, ...] = ()) -> Path:
    job = sweep / name
    job.mkdir(parents=True)
    (job / "job.json").write_text(json.dumps(record))
    if overrides:
        (job / ".hydra").mkdir()
        (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    return job


def test_failed_jobs_say_what_failed(make_sweep, tmp_path):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    _failed_job(sweep, "3", {"status": "failed", "errors": {
        "gradient / mean_shift": "RuntimeError: boom\n  more lines of the message",
        "gbp / cascading": "stage 7: ValueError: not finite"}}, ("method=[gradient,gbp]",))
    _failed_job(sweep, "4", {"status": "failed", "error": "OSError: no data\nTraceback ..."})
    _failed_job(sweep, "5", {"status": "failed", "errors": {"gxi / mean_shift": "KeyError: 'x'"},
                             "error": "MemoryError: out of memory"})
    _failed_job(sweep, "6", {"status": "running"})
    (sweep / "7").mkdir()
    (sweep / "7" / "job.json").write_text("{not json")

    failed = sweep_files.find_failed_jobs([sweep]).set_index("job")
    assert list(failed.index) == [str((sweep / n).resolve()) for n in "34567"]
    three = failed.loc[str((sweep / "3").resolve())]
    assert three.failures == [("gradient / mean_shift", "RuntimeError: boom"),
                              ("gbp / cascading", "stage 7: ValueError: not finite")]
    assert three.error == "gradient / mean_shift: RuntimeError: boom; gbp / cascading: stage 7: ValueError: not finite"
    assert three.overrides == "method=[gradient,gbp]"
    four = failed.loc[str((sweep / "4").resolve())]
    assert four.error == "OSError: no data" and four.failures == [("job", "OSError: no data")]
    five = failed.loc[str((sweep / "5").resolve())]
    assert five.error == "gxi / mean_shift: KeyError: 'x'; job: MemoryError: out of memory"
    assert "still running, or killed" in failed.loc[str((sweep / "6").resolve())].error
    seven = failed.loc[str((sweep / "7").resolve())]
    assert seven.status == "unreadable" and seven.error.startswith("JSONDecodeError")

    lb = lbm.load_leaderboard([sweep], figures=False)
    md = render.to_markdown(lb)
    assert "## Failed jobs (5)" in md and "?" not in md.split("## Failed jobs")[1]
    assert "- `3` (method=[gradient,gbp]): failed\n  - gradient / mean_shift: RuntimeError: boom\n" \
           "  - gbp / cascading: stage 7: ValueError: not finite" in md
    assert "- `4`: failed: OSError: no data" in md
    assert str(tmp_path) not in md.split("## Failed jobs")[1]  # job folders relative to the sweep
    page = render.to_html(lb)
    assert "<li>gradient / mean_shift: RuntimeError: boom</li>" in page and "OSError: no data" in page


def _corrupt(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated


def test_a_damaged_results_file_is_skipped_and_listed(make_sweep, tmp_path, invariance_table, capsys, caplog):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    _corrupt(sweep / "1" / "results.parquet")
    (sweep / "2").mkdir()
    pd.DataFrame({"model": ["m"], "score": [0.5]}).to_parquet(sweep / "2" / "results.parquet")  # missing columns

    with pytest.raises(ValueError, match=r"1/results\.parquet is not a readable results table"):
        lbm.load_leaderboard([sweep])  # the default, for regression checks: a damaged file is an error
    with caplog.at_level("WARNING", logger="bench.reporting"):
        lb = lbm.load_leaderboard([sweep], skip_unreadable=True)
    pd.testing.assert_frame_equal(lb.board, lbm.build_leaderboard(invariance_table()))  # the good file's rows
    (one, one_reason), (two, two_reason) = lb.skipped
    assert (one.parent.name, two.parent.name) == ("1", "2")
    assert one_reason.split(" (")[0] == f"{sweep.resolve() / '1' / 'results.parquet'} is not a readable results table"
    assert two_reason.startswith(f"{sweep.resolve() / '2' / 'results.parquet'} lacks the results columns "
                                 "['experiment', 'dataset', 'method', 'condition', ")
    assert two_reason.endswith(f"; the contract is {COLUMNS}") and "'model'" not in two_reason.split(";")[0]
    assert sum("skipped an unreadable results file" in r.message for r in caplog.records) == 2

    md = render.to_markdown(lb)
    assert "## Skipped results files (2)" in md
    assert "- `1/results.parquet`: is not a readable results table" in md
    assert "- `2/results.parquet`: lacks the results columns" in md
    page = render.to_html(lb)
    assert "Skipped results files (2)" in page and "1/results.parquet" in page

    assert lb_cli.main([str(sweep), "--format", "md"]) == 0
    captured = capsys.readouterr()
    assert "Skipped results files (2, unreadable):" in captured.out and "mlp (3 methods)" in captured.out
    assert "  1/results.parquet: is not a readable results table" in captured.out
    assert "2 results file(s) skipped as unreadable" in captured.err
    assert lb_cli.main([str(sweep), "--markdown"]) == 0
    captured = capsys.readouterr()
    assert "## Skipped results files (2)" in captured.out and "## mlp" in captured.out


def test_no_readable_results_file_exits_2(make_sweep, tmp_path, capsys):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    for job in ("0", "1"):
        _corrupt(sweep / job / "results.parquet")
    assert lb_cli.main([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 results.parquet file(s)" in err and "is readable" in err
    assert "0/results.parquet is not a readable results table" in err and "Traceback" not in err
    assert not list(sweep.glob("leaderboard.*"))


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such file or folder: {missing}"),
    (["{empty}"], "no results.parquet under"),
    (["{sweep}", "--rank-by", "bogus"], "cannot rank by 'bogus': use a mean column with a better side: "
                                        "inv/mean_shift/ssim, "),
    (["{sweep}", "--rank-by", "rand/cascading/ssim/repeat"], "cannot rank by 'rand/cascading/ssim/repeat'"),
    (["{sweep}", "--sort", "bogus"], "cannot sort by 'bogus': use balanced (the ranking), passed, method or one of "
                                     "the columns verdict, balanced, passed,"),
    (["{sweep}", "--metric", "bogus"], "unknown score 'bogus'; accepted: ssim, "),
    (["{sweep}", "--metric", "hog"], "no randomization scores for the metric 'hog'; the table has spearman_abs, ssim"),
    (["{sweep}", "--compare", "gradient", "bogus"], "no results for method(s) ['bogus']; the table has gbp, "),
    (["{sweep}", "--out", "{file}"], "is a file; accepted: a folder"),
])
def test_bad_input_exits_2_with_a_message(make_sweep, tmp_path, capsys, args, message):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    names = dict(sweep=sweep, missing=tmp_path / "missing", empty=tmp_path / "empty", file=tmp_path / "file")
    assert lb_cli.main([a.format(**names) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("salbench-leaderboard: error: ")
    assert message.format(**names) in captured.err and "Traceback" not in captured.err
    assert not captured.out and not list(sweep.glob("leaderboard.*"))


@pytest.mark.parametrize("args, message", [
    (["--format", "pdf"], "--format: unknown ['pdf']; accepted: a comma-separated subset of md,csv,html"),
    (["--format", ","], "accepted: a comma-separated subset of md,csv,html"),
    (["--min-drop", "-1"], "argument --min-drop: -1 is out of range; accepted: a number >= 0"),
    (["--min-drop", "nan"], "argument --min-drop: nan is out of range"),
    (["--ssim-threshold", "1.5"], "argument --ssim-threshold: 1.5 is out of range; accepted: a number in [-1, 1]"),
    (["--tolerance", "abc"], "argument --tolerance: 'abc' is not a number; accepted: a number >= 0"),
    (["--width", "39"], "argument --width: 39 is out of range; accepted: a whole number >= 40"),
    (["--width", "wide"], "argument --width: invalid int value: 'wide'"),
])
def test_bad_options_are_usage_errors(make_sweep, tmp_path, capsys, args, message):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    with pytest.raises(SystemExit) as exit_:
        lb_cli.main([str(sweep), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage: salbench-leaderboard" in err and "Traceback" not in err


def test_a_folder_given_twice_or_nested_counts_once_and_a_results_file_can_be_given(make_sweep, tmp_path,
                                                                                    full_table):
    sweep = make_sweep(tmp_path, failed=False, figure=False)
    expected = lbm.build_leaderboard(full_table())
    for folders in ([sweep, sweep], [sweep, sweep / "1"], [sweep / "0" / "results.parquet", sweep / "1"]):
        pd.testing.assert_frame_equal(lbm.load_leaderboard(folders).board, expected)
    table, skipped = sweep_files.load_results([sweep])
    assert not skipped and set(table["job"]) == {str((sweep / j).resolve()) for j in "01"}
