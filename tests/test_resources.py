"""Resources: a full disk is named (path, free and needed space) and loses nothing, temporary files of killed writes
are cleaned, and a checkpoint cache that cannot be written keeps the trained model in memory."""

from __future__ import annotations

import errno
import logging
import os
import time

import pandas as pd
import pytest
import torch

from bench._io import DiskFullError, atomic_write, remove_stale_temps
from bench.core.data import Dataset
from bench.core.results import concat, score_rows, write_table
from bench.core.training import TrainConfig, checkpoint_path, load_or_train


def _data() -> Dataset:
    g = torch.Generator().manual_seed(0)
    return Dataset(name="tiny", x_train=torch.rand(32, 1, 4, 4, generator=g), y_train=torch.arange(32) % 2,
                   x_test=torch.rand(8, 1, 4, 4, generator=g), y_test=torch.arange(8) % 2, num_classes=2)


def _full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_path_the_free_and_the_needed_space_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.parquet"
    target.write_text("the complete old file")

    def half_then_full(tmp):
        tmp.write_text("half")
        _full()

    with pytest.raises(DiskFullError, match=r"no space left to write .*results\.parquet: .* free there, 2\.0 KiB "
                                            r"needed") as err:
        atomic_write(target, half_then_full, needed=2048)
    assert err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert target.read_text() == "the complete old file"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["results.parquet"]  # no temporary file left


def test_a_library_that_hides_the_os_error_is_still_named_a_full_disk(tmp_path):
    def torch_like(tmp):  # torch's writer: "unexpected pos" with the OS error as its cause
        try:
            _full()
        except OSError as err:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0") from err

    with pytest.raises(DiskFullError, match="no space left to write"):
        atomic_write(tmp_path / "model.pt", torch_like)


def test_other_write_errors_are_not_called_a_full_disk(tmp_path):
    def denied(tmp):
        raise PermissionError(errno.EACCES, "Permission denied")

    with pytest.raises(PermissionError) as err:
        atomic_write(tmp_path / "x.txt", denied)
    assert not isinstance(err.value, DiskFullError)


def test_the_results_table_on_a_full_disk_raises_the_named_error(tmp_path, monkeypatch):
    table = concat([score_rows({"ssim": [0.5, 0.6]}, experiment="input_invariance", model="m", dataset="d",
                               method="x", condition="mean_shift")])
    monkeypatch.setattr(pd.DataFrame, "to_parquet", _full)
    with pytest.raises(DiskFullError, match="results.parquet"):
        write_table(table, tmp_path / "job")
    assert not any((tmp_path / "job").iterdir())


def test_a_checkpoint_that_cannot_be_saved_keeps_the_trained_model(tmp_path, monkeypatch, caplog):
    cfg = TrainConfig(epochs=1, cache_dir=str(tmp_path), min_test_acc=0.0)
    monkeypatch.setattr(torch, "save", _full)
    with caplog.at_level(logging.WARNING, logger="bench.core.training"):
        model, info = load_or_train("paper_mlp", _data(), cfg, model_kw={"hidden": 8}, progress=False)
    assert info["cached"] is False and info["path"] is None and info["epochs"] == 1  # trained, in memory
    path = checkpoint_path("paper_mlp", _data(), cfg, model_kw={"hidden": 8})
    assert not path.exists() and list(tmp_path.iterdir()) == []
    assert f"no space left to write {path}" in caplog.text and "needed" in caplog.text
    assert "used from memory and not cached" in caplog.text
    assert torch.isfinite(next(model.parameters())).all()


def test_stale_temporary_files_of_killed_writes_are_removed_and_young_ones_kept(tmp_path):
    stale = tmp_path / ".paper_mlp-abc.pt.tmp4242"
    young = tmp_path / ".paper_mlp-def.pt.tmp4343"
    other = tmp_path / "paper_mlp-abc.pt"
    for p in (stale, young, other):
        p.write_bytes(b"x")
    two_days = time.time() - 2 * 86400
    os.utime(stale, (two_days, two_days))
    os.utime(other, (two_days, two_days))
    assert remove_stale_temps(tmp_path) == [stale]
    assert not stale.exists() and young.exists() and other.exists()


def test_load_or_train_cleans_stale_temporary_files_of_its_cache(tmp_path):
    stale = tmp_path / ".paper_mlp-old.pt.tmp999"
    stale.write_bytes(b"half a checkpoint")
    old = time.time() - 3 * 86400
    os.utime(stale, (old, old))
    load_or_train("paper_mlp", _data(), TrainConfig(epochs=0, cache_dir=str(tmp_path), min_test_acc=0.0),
                  model_kw={"hidden": 8}, progress=False)
    assert not stale.exists()


_FULL_JOB_FOLDER = '''
import errno, os
_replace = os.replace
def _full_replace(src, dst, *a, **k):
    if str(dst).startswith(os.environ["FULL_FOLDER"]) and not str(dst).endswith((".hydra", ".yaml", ".log")):
        raise OSError(errno.ENOSPC, "No space left on device")
    return _replace(src, dst, *a, **k)
os.replace = _full_replace
'''


@pytest.mark.slow  # a command-line run in a subprocess (5 s)
def test_a_full_job_folder_stops_the_command_with_one_line_and_exit_2(salbench, tmp_path):
    """End to end: every atomic write into the job folder fails for lack of space (os.replace patched through a
    sitecustomize module): the job cannot write its chunks nor its record; the command names the path, exits 2 and
    prints no traceback."""
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(_FULL_JOB_FOLDER)
    job = tmp_path / "job"
    os.environ["FULL_FOLDER"] = str(job)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path / "site"), old) if p)
    try:
        res = salbench("+experiment=smoke", "logger=disabled", "run.progress=false", "run.figures=false",
                       f"hydra.run.dir={job}", cwd=tmp_path, timeout=300)
    finally:
        os.environ.pop("FULL_FOLDER")
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old
    assert res.returncode == 2, res.stderr[-3000:]
    assert "no space left to write" in res.stderr and str(job) in res.stderr
    assert "Traceback" not in res.stderr
    assert not (job / "results.parquet").exists()
