"""W&B logging: offline runs read back and compared with the Parquet table; a failing logger loses nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.core.results import concat, score_rows, write_table
from bench.reporting.wandb_log import log_run


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
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    tables = _read_tables(runs[0])
    assert set(tables) == {"results", "leaderboard"}
    got = tables["results"]
    assert list(got.columns) == list(table.columns)
    np.testing.assert_allclose(got.score.to_numpy(dtype=float), table.score.to_numpy(), rtol=0, atol=1e-12)
    assert got.method.tolist() == table.method.tolist()
    assert tables["leaderboard"].invariance.tolist() == ["pass", "fail"]
    assert list(runs[0].rglob("files/media/images/**/*.png"))


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
