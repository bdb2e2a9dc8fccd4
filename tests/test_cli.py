"""The ``salbench`` entry point in a subprocess: overrides, job records, Hydra's errors for bad keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def salbench(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    exe = shutil.which("salbench", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "bench.cli"]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def test_salbench_trains_with_overrides_and_records_the_job(tmp_path):
    out = tmp_path / "job"
    res = salbench("+model.kwargs.hidden=64", "train.epochs=1", "run.tests=[]", f"train.cache_dir={tmp_path / 'ckpt'}",
                   "run.progress=false", f"hydra.run.dir={out}", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test accuracy" in res.stdout
    record = json.loads((out / "job.json").read_text())
    assert record["status"] == "ok" and record["test_acc"] > 0.5
    assert (out / ".hydra" / "config.yaml").exists()
    # the second run loads the checkpoint
    res = salbench("+model.kwargs.hidden=64", "train.epochs=1", "run.tests=[]", f"train.cache_dir={tmp_path / 'ckpt'}",
                   "run.progress=false", f"hydra.run.dir={tmp_path / 'job2'}", cwd=tmp_path)
    assert res.returncode == 0 and "loaded from cache" in res.stdout, res.stderr[-3000:]


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.nmae=x", "Key 'nmae' not in 'ModelConfig'"),
        ("train.lr=fast", "Value 'fast' of type 'str' could not be converted to Float"),
        ("+frobnicate=1", "Key 'frobnicate' not in 'MainConfig'"),
        ("model=resnet_9000", "Could not find 'model/resnet_9000'"),
        ("logger.mode=loud", "Invalid value 'loud', expected one of [offline, online, disabled]"),
    ],
)
def test_bad_override_fails_at_composition_with_hydras_message(tmp_path, override, message):
    res = salbench(override, f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path, timeout=120)
    assert res.returncode != 0
    assert message in res.stderr, res.stderr[-3000:]
    assert not (tmp_path / "job" / "job.json").exists()  # nothing ran


def test_failed_job_is_recorded_and_exits_nonzero(tmp_path):
    res = salbench("data.name=mnist", f"data.root={tmp_path / 'nodata'}", f"hydra.run.dir={tmp_path / 'job'}",
                   cwd=tmp_path, timeout=120)
    assert res.returncode == 1
    record = json.loads((tmp_path / "job" / "job.json").read_text())
    assert record["status"] == "failed" and "mnist_bundled" in record["error"]
