"""Large runs streamed (issue 17): a job explains its samples in chunks written to disk as they finish, gives the
same rows as one chunk, and a job killed after a chunk resumes from it. No training: a zero-epoch model with the
quality guard off."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench.cli import job
from bench.cli.config import MainConfig
from bench.cli.stream import PARTS_DIR, Parts, chunks
from bench.core.explain import MethodSpec
from bench.experiments.model_randomization import RandomizationSpec
from bench.twins.shifts import ShiftSpec

KEY = ["experiment", "method", "condition", "layer", "metric", "sample", "seed"]


def _config(tmp_path, chunk_size: int, n_samples: int = 8) -> MainConfig:
    cfg = MainConfig()
    cfg.model.kwargs = {"hidden": 8}
    cfg.train.epochs, cfg.train.min_test_acc, cfg.train.cache_dir = 0, 0.0, str(tmp_path / "ckpt")
    cfg.method = {"gradient": MethodSpec(name="gradient"), "smoothgrad": MethodSpec(name="smoothgrad",
                                                                                    params={"n": 4})}
    cfg.transform = {"mean_shift": ShiftSpec(kind="mean_shift")}
    cfg.randomization = {"cascading": RandomizationSpec(mode="cascading")}
    cfg.run.n_samples, cfg.run.chunk_size, cfg.run.batch_size, cfg.run.figures = n_samples, chunk_size, 3, False
    cfg.logger.mode = "disabled"
    return cfg


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY).reset_index(drop=True)


def test_chunks_cover_the_samples_once():
    assert chunks(10, 4) == [(0, 4), (4, 8), (8, 10)] and chunks(3, 64) == [(0, 3)]
    with pytest.raises(ValueError, match=r"run.chunk_size=0 is out of range; accepted: >= 1"):
        chunks(3, 0)


def test_chunked_rows_equal_one_chunk_and_the_parts_are_removed(tmp_path):
    one = job.run(_config(tmp_path, chunk_size=64), tmp_path / "one")
    three = job.run(_config(tmp_path, chunk_size=3), tmp_path / "three")
    assert one["status"] == three["status"] == "ok", (one.get("error"), three.get("error"))
    # SmoothGrad seeds its noise per call: equal scores need the same batches (chunks are whole batches of 3)
    a = _sorted(pd.read_parquet(tmp_path / "one" / "results.parquet"))
    b = _sorted(pd.read_parquet(tmp_path / "three" / "results.parquet"))
    assert len(a) == len(b) and sorted(set(a["sample"])) == list(range(8))
    pd.testing.assert_frame_equal(a[KEY], b[KEY])
    assert np.allclose(a.score, b.score, atol=1e-9, equal_nan=True)
    assert not (tmp_path / "three" / PARTS_DIR).exists()


def test_a_killed_job_resumes_from_its_last_finished_chunk(tmp_path, monkeypatch):
    import bench.experiments.invariance as invariance

    real = invariance.input_invariance
    calls: list[int] = []

    def killed_on_second_chunk(model, data, *args, **kwargs):
        calls.append(len(data.x_test))
        if len(calls) == 2:
            raise KeyboardInterrupt  # a kill: not an error the job records
        return real(model, data, *args, **kwargs)

    monkeypatch.setattr(invariance, "input_invariance", killed_on_second_chunk)
    cfg = _config(tmp_path, chunk_size=4)
    with pytest.raises(KeyboardInterrupt):
        job.run(cfg, tmp_path / "job")
    parts = sorted(p.name for p in (tmp_path / "job" / PARTS_DIR).glob("*.parquet"))
    assert parts == ["invariance-all-0000000.parquet"]  # chunk_size 4 with batches of 3: 6 samples per chunk
    assert json.loads((tmp_path / "job" / job.JOB_FILE).read_text())["status"] == "running"

    calls.clear()
    monkeypatch.setattr(invariance, "input_invariance", lambda model, data, *a, **k: (calls.append(len(data.x_test)),
                                                                                     real(model, data, *a, **k))[1])
    record = job.run(cfg, tmp_path / "job")
    assert record["status"] == "ok" and calls == [2]  # only the second chunk ran again
    resumed = _sorted(pd.read_parquet(tmp_path / "job" / "results.parquet"))
    fresh = job.run(_config(tmp_path, chunk_size=4), tmp_path / "fresh")
    assert fresh["status"] == "ok"
    fresh_rows = _sorted(pd.read_parquet(tmp_path / "fresh" / "results.parquet"))
    pd.testing.assert_frame_equal(resumed[KEY], fresh_rows[KEY])
    assert np.allclose(resumed.score, fresh_rows.score, atol=1e-9, equal_nan=True)


def test_parts_of_another_configuration_are_not_mixed_in(tmp_path):
    from bench.core.results import concat

    Parts(tmp_path, "hash-a").write("invariance-all-0000000", concat([]), {"errors": {}})
    assert Parts(tmp_path, "hash-a").done("invariance-all-0000000")
    assert not Parts(tmp_path, "hash-b").done("invariance-all-0000000")
