"""W&B logging: offline runs read back and compared with the Parquet table; a failing logger loses nothing; the
scalar summary, typed tables, the group name, the offline fallback of an online start, one run folder per job,
and no change to the process environment. No network: every run here is offline (or an online start that fails)."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.core.results import concat, config_hash, score_rows, write_table
from bench.reporting.leaderboard import build_leaderboard
from bench.reporting.wandb_log import group_name, job_summary, log_run, run_id_for, typed_table


def _table() -> pd.DataFrame:
    g = torch.Generator().manual_seed(0)
    frames = [score_rows({"ssim": torch.rand(5, generator=g), "spearman": torch.rand(5, generator=g)},
                         experiment="input_invariance", model="paper_mlp", dataset="mnist_bundled", method=m,
                         condition="mean_shift", config_hash="abc") for m in ("gradient", "lrp_z")]
    return concat(frames)


def _read_tables(run_dir: Path) -> dict[str, pd.DataFrame]:
    out = {}
    for path in run_dir.rglob("files/media/table/*.table.json"):
        blob = json.loads(path.read_text())
        out[path.name.split("_")[0]] = pd.DataFrame(blob["data"], columns=blob["columns"])
    return out


def _runs(out: Path) -> list[Path]:
    return sorted(p for p in (out / "wandb").glob("offline-run-*") if p.is_dir())


def _capture_summary(monkeypatch) -> dict:
    """Spy on ``wandb.init``: the summary of every run it starts, read just before the run is finished."""
    import wandb

    real, captured = wandb.init, {}

    def init(*args, **kwargs):
        run = real(*args, **kwargs)
        finish = run.finish

        def spy(*a, **k):
            captured.update(dict(run.summary))
            return finish(*a, **k)

        run.finish = spy
        return run

    monkeypatch.setattr(wandb, "init", init)
    return captured


# -- the logged run ---------------------------------------------------------------------------------------------


def test_offline_run_holds_the_results_table(tmp_path):
    table = _table()
    board = pd.DataFrame({"method": ["gradient", "lrp_z"], "invariance": ["pass", "fail"]})
    fig = tmp_path / "fig.png"
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(fig, np.random.default_rng(0).random((8, 8)))
    err = log_run(mode="offline", out=tmp_path, config={"run": {"name": "t"}}, table=table, leaderboard=board,
                  figures=[fig], group="sweep-1", name="method=gradient")
    assert err is None
    runs = _runs(tmp_path)
    assert len(runs) == 1
    tables = _read_tables(runs[0])
    assert set(tables) == {"results", "leaderboard"}
    got = tables["results"]
    assert list(got.columns) == list(table.columns)
    np.testing.assert_allclose(got.score.to_numpy(dtype=float), table.score.to_numpy(), rtol=0, atol=1e-12)
    assert got.method.tolist() == table.method.tolist()
    assert got["sample"].tolist() == table["sample"].tolist()  # integers stay integers
    assert tables["leaderboard"].invariance.tolist() == ["pass", "fail"]
    assert list(runs[0].rglob("files/media/images/**/*.png"))


def test_the_leaderboard_table_is_typed(tmp_path, full_table):
    table = full_table()
    board = build_leaderboard(table)
    assert log_run(mode="offline", out=tmp_path, config={}, table=table, leaderboard=board) is None
    got = _read_tables(_runs(tmp_path)[0])["leaderboard"]
    assert list(got.columns) == list(board.columns)
    for col in ("passed", "tests"):  # integers, not "3"
        assert all(isinstance(v, int) for v in got[col]), col
    for col in ("inv/mean_shift/ssim", "rand/cascading/ssim/last"):  # floats; NaN stays NaN, not "nan"
        assert all(isinstance(v, float) for v in got[col]), col
        np.testing.assert_allclose(got[col].to_numpy(dtype=float), board[col].to_numpy(dtype=float), atol=1e-12)
    assert got["inv/checkerboard/ssim"].isna().sum() == board["inv/checkerboard/ssim"].isna().sum() > 0
    assert got["invariance"].tolist() == board["invariance"].tolist()


def test_typed_table_keeps_numbers_and_stringifies_only_mixed_columns():
    df = pd.DataFrame({
        "i": np.array([1, 2, 3], dtype="int64"),
        "f": [0.5, np.nan, 1.0],
        "b": [True, False, True],
        "s": ["a", None, "c"],
        "num_obj": pd.Series([1, 2.5, None], dtype=object),
        "mixed": pd.Series([1, "x", None], dtype=object),
        "nullable": pd.array([1, None, 3], dtype="Int64"),
    })
    df.index = [7, 8, 9]
    out = typed_table(df)
    assert list(out.index) == [0, 1, 2]
    assert out["i"].dtype == np.int64 and out["b"].dtype == bool
    assert out["f"].dtype == np.float64 and math.isnan(out["f"][1])
    assert out["s"].tolist() == ["a", None, "c"]
    assert out["num_obj"].dtype == np.float64 and out["num_obj"][1] == 2.5 and math.isnan(out["num_obj"][2])
    assert out["mixed"].tolist() == ["1", "x", None]
    assert out["nullable"].dtype == np.float64 and math.isnan(out["nullable"][1])
    assert df["mixed"].tolist() == [1, "x", None]  # the input is not changed


# -- the scalar summary -----------------------------------------------------------------------------------------


def _plain(value) -> bool:
    return type(value) in (int, float, str) and not (isinstance(value, float) and not math.isfinite(value))


def test_job_summary_of_one_model(full_table):
    table = full_table()
    table = table[table.model == "mlp"]
    s = job_summary(table, {"test_acc": 0.97, "train_acc": 0.995, "model": "mlp", "dataset": "mnist"})
    assert all(_plain(v) for v in s.values()), {k: v for k, v in s.items() if not _plain(v)}
    assert s["acc/test"] == 0.97 and s["acc/train"] == 0.995 and s["model"] == "mlp"
    assert s["n/rows"] == len(table) and s["n/samples"] == 8 and s["n/seeds"] == 1 and s["n/methods"] == 4
    # the leaderboard's verdicts (conftest: gradient exact on both shifts, passes the cascade, fails independent)
    assert s["passed/gradient"] == 3 and s["tests/gradient"] == 4
    assert s["verdict/gradient/invariance"] == "pass" and s["verdict/gradient/randomization"] == "fail"
    assert s["verdict/gradient/inv/mean_shift"] == "exact" and s["verdict/gradient/rand/cascading"] == "pass"
    assert s["verdict/gxi/inv/mean_shift"] == "fail" and s["verdict/ig_black/inv/mean_shift"] == "pass"
    assert s["invariance/gxi/mean_shift/ssim"] == pytest.approx(0.6)
    assert s["randomization/gradient/cascading/ssim/last"] == pytest.approx(0.15)
    assert s["randomization/gradient/cascading/ssim/top"] == pytest.approx(0.45)
    assert s["randomization/gradient/cascading/ssim/drop_lcb"] >= 0.4  # the pass's bound (aggregate's rule)
    assert "invariance/gradient/mean_shift/max_rel_diff_q95" in s
    board = build_leaderboard(table)
    assert s["passed/total"] == int(board.passed.sum()) and s["tests/total"] == int(board.tests.sum())
    assert all(s[f"passed/{m}"] == p for m, p in zip(board.method, board.passed, strict=True))
    # a test that was not run has no verdict key (gbp: randomization only)
    assert "verdict/gbp/invariance" not in s and "invariance/gbp/mean_shift/ssim" not in s
    assert s["verdict/gbp/randomization"] == "fail"
    assert not any(k.endswith(("_lo", "_hi")) for k in s)


def test_job_summary_with_a_given_board_and_several_models(full_table):
    table = full_table()
    board = build_leaderboard(table)
    s = job_summary(table, {}, board=board)
    assert s == job_summary(table)
    assert s["passed/mlp/gradient"] == 3 and s["passed/cnn/gradient"] == int(
        board.loc[board.model == "cnn", "passed"].iloc[0])
    assert s["verdict/cnn/gradient/rand/cascading"] == "inconclusive"
    assert "acc/test" not in s and "model" not in s  # two models, no info
    assert job_summary(table.iloc[:0], {"test_acc": 0.5}) == {"acc/test": 0.5, "n/rows": 0}


def test_the_summary_is_logged_into_the_run(tmp_path, full_table, monkeypatch):
    captured = _capture_summary(monkeypatch)
    table = full_table()
    table = table[table.model == "mlp"]
    err = log_run(mode="offline", out=tmp_path, config={}, table=table, leaderboard=build_leaderboard(table),
                  info={"test_acc": 0.97, "train_acc": 0.99}, summary={"extra": 1})
    assert err is None
    assert captured["acc/test"] == 0.97 and captured["passed/gradient"] == 3 and captured["extra"] == 1
    assert captured["verdict/gradient/invariance"] == "pass"


# -- group, id, rerun, fallback, environment --------------------------------------------------------------------


def test_group_name_is_the_sweep_name_not_a_path():
    assert group_name("/home/me/project/multirun/2026-01-02/10-11-12") == "2026-01-02_10-11-12"
    assert group_name("/scratch/sweeps/ablation/") == "ablation"
    assert group_name(Path("outputs") / "lr_sweep") == "lr_sweep"
    assert group_name("/home/me/multirun/2026-01-02/10-11-12", "paper") == "paper"
    assert group_name(None, "  ") is None and group_name(None) is None and group_name("") is None


def test_run_id_is_deterministic(tmp_path):
    a = run_id_for(tmp_path / "job", "abc")
    assert a == run_id_for(tmp_path / "job", "abc") and len(a) == 16
    assert a != run_id_for(tmp_path / "job", "abd") and a != run_id_for(tmp_path / "other", "abc")


def _run_id(folder: Path) -> str:
    """The id in a W&B run folder's name: ``offline-run-<date>_<time>-<id>``, ``-<n>`` appended within a second."""
    return re.fullmatch(r"offline-run-\d{8}_\d{6}-(.+?)(-\d+)?", folder.name).group(1)


def test_a_rerun_replaces_the_run(tmp_path):
    table, config = _table(), {"run": {"seed": 0}}
    for _ in range(3):  # W&B makes a new folder on each resume, "-1" appended within the same second
        assert log_run(mode="offline", out=tmp_path, config=config, table=table) is None
    runs = _runs(tmp_path)
    assert len(runs) == 1
    assert _run_id(runs[0]) == run_id_for(tmp_path, config_hash(config))
    assert len(_read_tables(runs[0])["results"]) == len(table)
    assert log_run(mode="offline", out=tmp_path, config=config, table=table, run_id="given") is None
    assert sorted(map(_run_id, _runs(tmp_path))) == sorted(["given", run_id_for(tmp_path, config_hash(config))])


def test_an_online_start_that_fails_falls_back_to_offline(tmp_path, monkeypatch):
    import wandb

    real, modes = wandb.init, []

    def init(*args, mode=None, **kwargs):
        modes.append(mode)
        if mode == "online":
            raise wandb.errors.CommError("Run initialization has timed out (no network)")
        return real(*args, mode=mode, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    table = _table()
    msg = log_run(mode="online", out=tmp_path, config={}, table=table, init_timeout=5)
    assert modes == ["online", "offline"]
    assert msg is not None and "online" in msg and "no network" in msg and "offline" in msg and "wandb sync" in msg
    runs = _runs(tmp_path)
    assert len(runs) == 1 and str(runs[0]) in msg
    assert len(_read_tables(runs[0])["results"]) == len(table)


def test_init_gets_a_bounded_timeout_and_no_environment(tmp_path, monkeypatch):
    import wandb

    seen = {}

    def init(*args, **kwargs):
        seen.update(kwargs)
        raise ConnectionError("stop here")

    monkeypatch.setattr(wandb, "init", init)
    log_run(mode="offline", out=tmp_path, config={}, table=_table(), init_timeout=7)
    assert seen["settings"].init_timeout == 7 and seen["settings"].silent and seen["settings"].console == "off"
    assert seen["resume"] == "allow" and seen["reinit"] == "create_new" and seen["id"]


def test_log_run_leaves_the_environment_unchanged(tmp_path):
    before = dict(os.environ)
    assert log_run(mode="offline", out=tmp_path / "job", config={}, table=_table()) is None
    assert dict(os.environ) == before


def test_disabled_does_nothing(tmp_path):
    assert log_run(mode="disabled", out=tmp_path, config={}, table=_table()) is None
    assert not (tmp_path / "wandb").exists()


def test_a_failing_logger_is_reported_not_raised(tmp_path, monkeypatch):
    import wandb

    def boom(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(wandb, "init", boom)
    table = _table()
    path = write_table(table, tmp_path)  # the job writes the table first
    err = log_run(mode="online", out=tmp_path, config={}, table=table)
    assert err is not None and "no network" in err and "online" in err
    assert path.exists() and len(pd.read_parquet(path)) == len(table)


def test_more_rows_than_wandb_keeps_log_the_cell_means_and_the_file(tmp_path, monkeypatch):
    import wandb

    from bench.core.results import write_table

    monkeypatch.setattr(wandb.Table, "MAX_ROWS", 10)  # the real limit is 10,000 rows; here 20 rows, 4 cells
    table = _table()
    write_table(table, tmp_path)
    assert log_run(mode="offline", out=tmp_path, config={}, table=table) is None
    runs = _runs(tmp_path)
    names = [p.name for p in runs[0].rglob("files/media/table/*.table.json")]
    assert names and all(n.startswith("results_mean") for n in names)  # never a silently truncated row table
    cells = _read_tables(runs[0])["results"]
    assert {"mean", "n"} <= set(cells.columns) and (cells.n == 5).all()
    groups = table.groupby(["method", "condition", "layer", "metric"]).score.mean()
    assert len(cells) == len(groups)
    got = cells.set_index(["method", "condition", "layer", "metric"])["mean"].astype(float).sort_index()
    np.testing.assert_allclose(got.to_numpy(), groups.sort_index().to_numpy(), atol=1e-12)
    record = next(runs[0].glob("run-*.wandb")).read_bytes()  # the offline run's record, synced later
    assert b"results.parquet" in record and b"results-" in record  # the whole file, as a `results` artifact
