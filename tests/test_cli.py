"""The ``salbench`` entry point in a subprocess: overrides, job records, Hydra's errors for bad keys."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow  # trains a model in the subprocess
def test_salbench_trains_with_overrides_and_records_the_job(tmp_path, salbench):
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
def test_bad_override_fails_at_composition_with_hydras_message(tmp_path, salbench, override, message):
    res = salbench(override, f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path, timeout=120)
    assert res.returncode == 2  # bad input (the README's exit codes)
    assert message in res.stderr, res.stderr[-3000:]
    assert not (tmp_path / "job" / "job.json").exists()  # nothing ran


def test_failed_job_is_recorded_and_exits_nonzero(tmp_path, salbench):
    res = salbench("data.name=mnist", f"data.root={tmp_path / 'nodata'}", f"hydra.run.dir={tmp_path / 'job'}",
                   cwd=tmp_path, timeout=120)
    assert res.returncode == 2  # the job could not start: bad input, not a method that failed (1)
    record = json.loads((tmp_path / "job" / "job.json").read_text())
    assert record["status"] == "failed" and "mnist_bundled" in record["error"]


# ------------------------------------------------------- bench.cli.job in process (fails or skips before training)


def _config_without_data(tmp_path):
    """The default config on torchvision MNIST in an empty folder: a job that runs fails at loading the data."""
    from bench.cli.config import MainConfig

    cfg = MainConfig()
    cfg.data.name, cfg.data.root = "mnist", str(tmp_path / "nodata")
    return cfg


def test_job_with_an_unknown_test_is_recorded_as_failed(tmp_path):
    from bench.cli import job

    cfg = _config_without_data(tmp_path)
    cfg.run.tests = ["invariance", "rotation"]
    record = job.run(cfg, tmp_path / "job")
    assert record["status"] == "failed" and "unknown test(s) ['rotation']" in record["error"]
    assert record["config_hash"] == job.job_hash(cfg) and "Traceback" in record["traceback"]
    assert json.loads((tmp_path / "job" / job.JOB_FILE).read_text())["status"] == "failed"


def test_finished_job_is_skipped_and_the_hash_ignores_volatile_settings(tmp_path):
    import dataclasses

    import torch

    from bench.cli import job
    from bench.core.results import score_rows, write_table

    cfg = _config_without_data(tmp_path)
    chash = job.job_hash(cfg)
    volatile = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, progress=True, figures=False, keep_maps=1,
                                                                device="cuda"),
                                   logger=dataclasses.replace(cfg.logger, mode="disabled"))
    assert job.job_hash(volatile) == chash
    assert job.job_hash(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, seed=1))) != chash
    assert job.job_hash(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1))) != chash

    out = tmp_path / "job"
    write_table(score_rows({"ssim": torch.ones(2)}, experiment="input_invariance", model="m", dataset="d",
                           method="gradient", condition="mean_shift"), out)
    (out / job.JOB_FILE).write_text(json.dumps({"status": "ok", "config_hash": chash}))
    assert job.is_done(out, chash) and not job.is_done(out, "other")
    record = job.run(volatile, out)
    assert record["skipped"] and record["status"] == "ok"
    # skip_done=False runs the job again (which fails here at loading the data)
    record = job.run(cfg, out, skip_done=False)
    assert record["status"] == "failed" and "mnist_bundled" in record["error"]
    assert not job.is_done(out, chash)
