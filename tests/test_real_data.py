"""The image-folder run of issue 17 end to end through the command line (slow: trains a ResNet-18 for 3 epochs on
320 generated 32 px images, about 30 s on 2 cores)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.image_fixtures import make_image_folder

pytestmark = pytest.mark.slow


def test_an_image_folder_with_a_timm_resnet_runs_end_to_end(tmp_path, salbench):
    root = make_image_folder(tmp_path / "imgs", per_class=160, size=(32, 32))
    res = salbench("data=image_folder", f"data.root={root}", "data.size=32", "model=timm_resnet18", "+experiment=smoke",
                   "train.epochs=3", "method=[gradient,gradient_x_input]", "run.progress=false", "logger=disabled",
                   f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((tmp_path / "job" / "job.json").read_text())
    assert record["status"] == "ok" and record["test_acc"] >= record["min_test_acc"]
    table = pd.read_parquet(tmp_path / "job" / "results.parquet")
    assert set(table.experiment) == {"input_invariance", "model_randomization"}
    assert set(table.method) == {"gradient", "gradient_x_input"} and table["sample"].nunique() == 8
    inv = table[(table.experiment == "input_invariance") & (table.metric == "max_rel_diff")]
    assert inv[inv.method == "gradient"].score.max() < 1e-3  # the twin is exact: Gradient does not move


def test_one_epoch_leaves_the_resnet_untrained_and_the_guard_refuses_it(tmp_path, salbench):
    root = make_image_folder(tmp_path / "imgs", per_class=24, size=(32, 32))
    res = salbench("data=image_folder", f"data.root={root}", "data.size=32", "model=timm_resnet18", "+experiment=smoke",
                   "logger=disabled", "run.progress=false", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert res.returncode == 2
    assert "not clearly above chance 0.5000" in res.stdout + res.stderr
