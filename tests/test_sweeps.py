"""Multi-run sweeps through ``salbench -m``: per-job records, failures isolated, resume, launchers."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from bench.core.results import read_tables

pytestmark = pytest.mark.slow  # every sweep trains its models in subprocesses

TINY = ["+model.kwargs.hidden=32", "train.epochs=1", "run.n_samples=4", "run.batch_size=4", "run.progress=false",
        "run.figures=false", "logger=disabled", "run.tests=[invariance]", "transform=[mean_shift]",
        "run.fit_samples=200"]


def _records(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.rglob("job.json"))]


def test_sweep_writes_one_table_per_job_isolates_failures_and_resumes(tmp_path, salbench):
    sweep = tmp_path / "sweep"
    args = ["-m", "method=gradient,gradient_x_input", "data.encoding=unit,sideways", *TINY,
            f"train.cache_dir={tmp_path / 'ckpt'}", f"hydra.sweep.dir={sweep}"]
    res = salbench(*args, cwd=tmp_path, timeout=600)
    assert res.returncode == 1, res.stderr[-3000:]  # failed jobs: exit 1, after every job ran
    summary = json.loads((sweep / "sweep.json").read_text())
    assert (summary["ok"], summary["failed"], summary["skipped"]) == (2, 2, 0)
    assert "2 ok, 2 failed, 0 skipped" in res.stdout + res.stderr
    records = _records(sweep)
    assert len(records) == 4
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 2 and all("unknown encoding 'sideways'" in r["error"] for r in failed)
    table = read_tables([sweep])
    assert set(table.method) == {"gradient", "gradient_x_input"} and table.job.nunique() == 2
    # the leaderboard of that sweep lists both methods and the failed jobs
    from bench.cli.leaderboard import main as leaderboard_main

    assert leaderboard_main([str(sweep), "--out", str(tmp_path / "board")]) == 0
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert "gradient_x_input" in md and "sideways" in md
    assert (tmp_path / "board" / "leaderboard.html").exists() and (tmp_path / "board" / "leaderboard.csv").exists()
    # the check passes on its own baseline and fails on a perturbed one
    from bench.cli.check import main as check_main

    base = tmp_path / "baseline.csv"
    assert check_main([str(sweep), "--baseline", str(base), "--update"]) == 0
    assert check_main([str(sweep), "--baseline", str(base)]) == 0
    perturbed = pd.read_csv(base)
    col = [c for c in perturbed.columns if c.endswith("/ssim")][0]
    perturbed.loc[0, col] = perturbed.loc[0, col] - 0.5
    perturbed.to_csv(base, index=False)
    assert check_main([str(sweep), "--baseline", str(base)]) == 1
    # re-running into the same folder skips the finished jobs (same config hash) and retries the failed ones
    res = salbench(*args, cwd=tmp_path, timeout=600)
    assert res.returncode == 1  # the failed jobs fail again
    assert res.stdout.count("skipped:") == 2, res.stdout
    summary = json.loads((sweep / "sweep.json").read_text())
    assert (summary["ok"], summary["failed"], summary["skipped"]) == (0, 2, 2)


@pytest.mark.parametrize("launcher", ["joblib", "submitit_local"])
def test_launchers(tmp_path, salbench, launcher):
    sweep = tmp_path / "sweep"
    extra = ["hydra.launcher.n_jobs=2"] if launcher == "joblib" else ["hydra.launcher.timeout_min=10"]
    res = salbench("-m", f"hydra/launcher={launcher}", *extra, "method=gradient,pattern_attribution", *TINY,
                   f"train.cache_dir={tmp_path / 'ckpt'}", f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    records = _records(sweep)
    assert [r["status"] for r in records] == ["ok", "ok"], records
    table = read_tables([sweep])
    assert set(table.method) == {"gradient", "pattern_attribution"}
    assert isinstance(table, pd.DataFrame) and (table.metric == "ssim").any()
