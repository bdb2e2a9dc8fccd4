"""Job folders that survive concurrency and signals: one writer per folder (``job.lock``), assembly only from a
complete plan, a complete table never replaced by a shorter one, a job killed after its write reused, SIGINT/SIGTERM
ending a job (and a sweep) with 130/143 and ``job.json`` ``interrupted``.

The command-line tests run ``salbench``'s ``main()`` in subprocesses on the bundled data with a zero-epoch 8-unit
model (quality guard off, a few samples in chunks of 3); a wrapper pauses the job in its second chunk so that a
second run or a signal meets it mid-job. The others call :func:`bench.cli.job.run` in process."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import job
from bench.cli.config import MainConfig
from bench.cli.lock import LOCK_FILE, LockHeld
from bench.cli.stream import PARTS_DIR
from bench.core.explain import MethodSpec
from bench.core.results import RESULTS_FILE
from bench.experiments.model_randomization import RandomizationSpec
from bench.twins.shifts import ShiftSpec

KEY = ["experiment", "method", "condition", "layer", "metric", "sample", "seed"]

# ------------------------------------------------------------------------------------------ the command line

#: ``main()`` of ``salbench`` with the job paused in its second chunk: it touches $PAUSE_MARK, then waits (up to
#: two minutes) for $PAUSE_GO to exist. Without $PAUSE_MARK it is plain ``salbench``.
RUNNER = '''
import os, sys, time
import bench.experiments.invariance as invariance
real, calls = invariance.input_invariance, []
def paused(model, data, *args, **kwargs):
    calls.append(len(data.x_test))
    if len(calls) == 2 and os.environ.get("PAUSE_MARK"):
        open(os.environ["PAUSE_MARK"], "w").close()
        for _ in range(1200):
            if os.environ.get("PAUSE_GO") and os.path.exists(os.environ["PAUSE_GO"]):
                break
            time.sleep(0.1)
    return real(model, data, *args, **kwargs)
invariance.input_invariance = paused
from bench.cli.main import main
sys.argv = ["salbench", *sys.argv[1:]]
main()
'''


def _args(ckpt: Path) -> list[str]:
    return ["+model.kwargs.hidden=8", "train.epochs=0", "train.min_test_acc=0", f"train.cache_dir={ckpt}",
            "method=[gradient]", "transform=[mean_shift]", "randomization=[cascading]", "run.n_samples=8",
            "run.chunk_size=3", "run.batch_size=3", "logger=disabled", "run.figures=false", "run.progress=false"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **extra}


def _start(root: Path, *args: str, pause: bool = True) -> tuple[subprocess.Popen, Path, Path]:
    """The wrapped ``salbench *args`` in the background; returns it, the file it touches when paused and the file
    that lets it go on."""
    runner = root / "runner.py"
    runner.write_text(RUNNER)
    mark, go = root / f"paused-{time.monotonic_ns()}", root / f"go-{time.monotonic_ns()}"
    env = _env(PAUSE_MARK=str(mark), PAUSE_GO=str(go)) if pause else _env()
    proc = subprocess.Popen([sys.executable, str(runner), *args], cwd=root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, mark, go


def _wait_for(mark: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not mark.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended (exit {proc.returncode}) before it paused:\n{(out + err)[-3000:]}")
        assert time.monotonic() < end, "the run did not reach its second chunk"
        time.sleep(0.1)


def _finish(proc: subprocess.Popen, timeout: float = 120.0) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _rows(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / RESULTS_FILE).sort_values(KEY).reset_index(drop=True)


def _assert_same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert len(a) == len(b) > 0
    others = [c for c in a.columns if c != "score"]
    pd.testing.assert_frame_equal(a[others], b[others])
    assert np.allclose(a.score, b.score, atol=1e-9, equal_nan=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A clean run of the command in a fresh folder: ``(its rows, the checkpoint folder the tests share)``."""
    root = tmp_path_factory.mktemp("clean")
    ckpt = root / "ckpt"
    res = subprocess.run([sys.executable, "-c", RUNNER, *_args(ckpt), f"hydra.run.dir={root / 'job'}"], cwd=root,
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    return _rows(root / "job"), ckpt


@pytest.mark.slow  # three command-line runs in subprocesses: 10-20 s each on 2 cores
def test_a_second_run_into_a_busy_folder_is_refused_at_once_and_the_first_completes(tmp_path, clean):
    rows, ckpt = clean
    out = tmp_path / "job"
    args = [*_args(ckpt), f"hydra.run.dir={out}"]
    first, mark, go = _start(tmp_path, *args)
    try:
        _wait_for(mark, first)
        lock = json.loads((out / LOCK_FILE).read_text())
        assert lock["pid"] == first.pid and lock["host"] == socket.gethostname()
        second = subprocess.run([sys.executable, str(tmp_path / "runner.py"), *args], cwd=tmp_path, env=_env(),
                                capture_output=True, text=True, timeout=300)
        assert first.poll() is None  # refused while the first still held the folder: at once, not after it
        assert second.returncode == 2, (second.stdout + second.stderr)[-3000:]
        assert f"Refused: {out} is in use by another run: pid {first.pid} on this host holds its lock " \
               f"{out / LOCK_FILE} since {lock['since']}. Wait for that run to finish, or, if that process is gone, " \
               f"remove {out / LOCK_FILE} and run again." in second.stderr, second.stderr
        assert "Wait for that run to finish" in second.stderr and "Traceback" not in second.stdout + second.stderr
        assert "test accuracy" not in second.stdout  # nothing ran: no model loaded
        assert json.loads((out / LOCK_FILE).read_text()) == lock  # the holder's lock is untouched
        go.touch()
        code, stdout, stderr = _finish(first)
    finally:
        go.touch()
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert code == 0, (stdout + stderr)[-3000:]
    record = json.loads((out / job.JOB_FILE).read_text())
    assert record["status"] == "ok" and record["rows"] == len(rows)
    assert not (out / LOCK_FILE).exists() and not (out / PARTS_DIR).exists()
    _assert_same_rows(_rows(out), rows)


@pytest.mark.slow  # three command-line runs in subprocesses: 10-20 s each on 2 cores
def test_sigint_mid_chunk_exits_130_marks_the_job_interrupted_and_a_rerun_completes(tmp_path, clean):
    rows, ckpt = clean
    out = tmp_path / "job"
    args = [*_args(ckpt), f"hydra.run.dir={out}"]
    proc, mark, _ = _start(tmp_path, *args)
    try:
        _wait_for(mark, proc)
        proc.send_signal(signal.SIGINT)
    finally:
        code, stdout, stderr = _finish(proc)
    assert code == 130, (stdout + stderr)[-3000:]
    assert "Traceback" not in stdout + stderr
    messages = (stdout + stderr).replace("\n  ", " ")  # the console wraps a long message at 120 columns
    lines = [line for line in messages.splitlines() if "interrupted" in line]
    assert len(lines) == 1 and "job interrupted by SIGINT: 1 finished chunk(s) kept in" in lines[0], lines
    assert "run the same command again to resume" in lines[0]
    record = json.loads((out / job.JOB_FILE).read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGINT"
    assert record["resume"].startswith("run the same command again")
    assert not (out / LOCK_FILE).exists()  # released
    assert sorted(p.name for p in (out / PARTS_DIR).glob("*.parquet")) == ["invariance-all-0000000.parquet"]

    res = subprocess.run([sys.executable, str(tmp_path / "runner.py"), *args], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "samples 0-2 already done" in res.stdout  # the finished chunk was kept, not computed again
    assert json.loads((out / job.JOB_FILE).read_text())["status"] == "ok"
    _assert_same_rows(_rows(out), rows)


@pytest.mark.slow  # three command-line runs in subprocesses: 10-20 s each on 2 cores
def test_sigterm_stops_a_sweep_with_143_and_its_summary_shows_the_interrupted_job(tmp_path, clean):
    _, ckpt = clean
    sweep = tmp_path / "sweep"
    proc, mark, _ = _start(tmp_path, "-m", *_args(ckpt), "run.seed=0,1", f"hydra.sweep.dir={sweep}",
                           "hydra.sweep.subdir=${hydra.job.num}")
    try:
        _wait_for(mark, proc)
        proc.send_signal(signal.SIGTERM)
    finally:
        code, stdout, stderr = _finish(proc)
    assert code == 143, (stdout + stderr)[-3000:]
    assert "Traceback" not in stdout + stderr
    text = stdout.replace("\n  ", " ")  # the console wraps a long message at 120 columns
    assert "job interrupted by SIGTERM" in text and f"sweep {sweep} interrupted by SIGTERM" in text, stdout
    summary = json.loads((sweep / "sweep.json").read_text())
    assert (summary["ok"], summary["failed"], summary["interrupted"]) == (0, 0, 1)
    assert summary["interrupted_by"] == "SIGTERM" and summary["jobs"]["0"]["status"] == "interrupted"
    record = json.loads((sweep / "0" / job.JOB_FILE).read_text())
    assert record["status"] == "interrupted" and record["signal"] == "SIGTERM"
    assert not (sweep / "0" / LOCK_FILE).exists() and not (sweep / "1").exists()  # the sweep stopped there


# ------------------------------------------------------------------------------------------------ in process


def _config(tmp_path: Path) -> MainConfig:
    cfg = MainConfig()
    cfg.model.kwargs = {"hidden": 8}
    cfg.train.epochs, cfg.train.min_test_acc, cfg.train.cache_dir = 0, 0.0, str(tmp_path / "ckpt")
    cfg.method = {"gradient": MethodSpec(name="gradient")}
    cfg.transform = {"mean_shift": ShiftSpec(kind="mean_shift")}
    cfg.randomization = {"cascading": RandomizationSpec(mode="cascading")}
    cfg.run.n_samples, cfg.run.chunk_size, cfg.run.batch_size, cfg.run.figures = 6, 3, 3, False
    cfg.logger.mode = "disabled"
    return cfg


def _write_lock(folder: Path, pid: int, host: str, started: float) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host, "started": started, "token": "theirs", "since": "then"}
    (folder / LOCK_FILE).write_text(json.dumps(holder))
    return holder


def test_a_stale_lock_is_taken_over_with_a_warning_naming_it(tmp_path, caplog):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # exited and reaped: its pid is dead on this host
    out = tmp_path / "job"
    _write_lock(out, gone.pid, socket.gethostname(), time.time() - 60)
    with caplog.at_level(logging.WARNING, logger="bench.cli.lock"):
        record = job.run(_config(tmp_path), out)
    assert record["status"] == "ok", record.get("error")
    assert f"taking over the stale lock {out / LOCK_FILE} of pid {gone.pid} on {socket.gethostname()}" in caplog.text
    assert not (out / LOCK_FILE).exists()


@pytest.mark.parametrize("holder", ["live process", "another host"])
def test_a_lock_held_by_a_live_process_or_another_host_refuses_the_job_touching_nothing(tmp_path, holder):
    out = tmp_path / "job"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        if holder == "live process":
            lock = _write_lock(out, live.pid, socket.gethostname(), time.time())
            why = "."
        else:  # its pid cannot be checked from here (pid 1 exists here too): refused, not guessed
            lock = _write_lock(out, 1, "elsewhere.example", time.time() - 3600)
            why = " (another host: its process cannot be checked from here)."
        with pytest.raises(LockHeld, match="is in use by another run") as err:
            job.run(_config(tmp_path), out)
    finally:
        live.kill()
        live.wait()
    where = "this host" if holder == "live process" else "host elsewhere.example"
    assert f"{out} is in use by another run: pid {lock['pid']} on {where} holds its lock {out / LOCK_FILE} since " \
           in str(err.value) and str(err.value).split(" since ")[1].endswith(
               f"{why} Wait for that run to finish, or, if that process is gone, remove {out / LOCK_FILE} and run "
               "again."), str(err.value)
    assert f"remove {out / LOCK_FILE} and run again" in str(err.value)
    assert json.loads((out / LOCK_FILE).read_text()) == lock and not (out / job.JOB_FILE).exists()


def test_assembly_with_a_missing_chunk_is_an_error_naming_it(tmp_path, monkeypatch):
    import bench.experiments.model_randomization as randomization

    real = randomization.model_randomization
    out = tmp_path / "job"

    def another_run_removes_a_part(*args, **kwargs):  # what a second writer's cleanup did to the first
        for p in (out / PARTS_DIR).glob("invariance-all-0000003.*"):
            p.unlink()
        return real(*args, **kwargs)

    monkeypatch.setattr(randomization, "model_randomization", another_run_removes_a_part)
    record = job.run(_config(tmp_path), out)
    assert record["status"] == "failed"
    assert "1 of 4 chunk(s) of this job's plan are missing" in record["error"]
    assert "invariance-all-0000003" in record["error"] and "No results.parquet was written" in record["error"]
    assert not (out / RESULTS_FILE).exists() and not (out / LOCK_FILE).exists()


def test_a_complete_results_table_is_never_replaced_by_a_shorter_one(tmp_path, monkeypatch):
    import bench.experiments.invariance as invariance

    out = tmp_path / "job"
    first = job.run(_config(tmp_path), out)
    assert first["status"] == "ok", first.get("error")
    before = (out / RESULTS_FILE).read_bytes()
    real = invariance.input_invariance

    def fewer_rows(*args, **kwargs):
        res = real(*args, **kwargs)
        res.table = res.table[res.table["sample"] % 2 == 0].reset_index(drop=True)
        return res

    monkeypatch.setattr(invariance, "input_invariance", fewer_rows)
    again = job.run(_config(tmp_path), out, skip_done=False)
    assert again["status"] == "failed"
    assert f"{out / RESULTS_FILE} holds {first['rows']:,} rows of this configuration" in again["error"]
    assert "not replacing it with fewer rows" in again["error"]
    assert (out / RESULTS_FILE).read_bytes() == before


@pytest.mark.parametrize("killed_in", ["removing the parts", "the views"])
def test_a_job_killed_after_writing_its_results_reuses_them(tmp_path, monkeypatch, caplog, killed_in):
    import bench.experiments.invariance as invariance
    import bench.experiments.model_randomization as randomization
    from bench.cli.stream import Parts

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill: nothing recorded after it

    out = tmp_path / "job"
    with monkeypatch.context() as m:
        if killed_in == "the views":
            m.setattr(job, "_views", killed)
        else:
            m.setattr(Parts, "remove", killed)
        with pytest.raises(KeyboardInterrupt):
            job.run(_config(tmp_path), out)
    assert json.loads((out / job.JOB_FILE).read_text())["status"] == "running"
    written = (out / RESULTS_FILE).read_bytes()
    assert (out / PARTS_DIR).exists() == (killed_in == "removing the parts")

    calls: list[str] = []
    for module, name in ((invariance, "input_invariance"), (randomization, "model_randomization")):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _real=real, _name=name, **k: (calls.append(_name),
                                                                                   _real(*a, **k))[1])
    with caplog.at_level(logging.INFO, logger="bench.cli.job"):
        record = job.run(_config(tmp_path), out)
    assert record["status"] == "ok" and calls == [], (record.get("error"), calls)
    assert "reused:" in caplog.text and "not computed again" in caplog.text
    assert (out / RESULTS_FILE).read_bytes() == written and record["rows"] == len(pd.read_parquet(out / RESULTS_FILE))
    assert json.loads((out / job.JOB_FILE).read_text())["status"] == "ok"
    assert not (out / PARTS_DIR).exists() and not (out / LOCK_FILE).exists()


def test_the_sweep_summary_counts_short_results_as_failed(tmp_path):
    import torch

    from bench.cli.sweep import summarize
    from bench.core.results import score_rows, write_table

    since = time.time()
    for name, rows in (("0_complete", 4), ("1_short", 10)):
        (tmp_path / name).mkdir()
        write_table(score_rows({"ssim": torch.ones(4)}, experiment="input_invariance", model="m", dataset="d",
                               method="gradient", condition="mean_shift"), tmp_path / name)
        (tmp_path / name / job.JOB_FILE).write_text(json.dumps({"status": "ok", "config_hash": "h", "rows": rows,
                                                                "started": since + 1}))
    (tmp_path / "2_stopped").mkdir()
    (tmp_path / "2_stopped" / job.JOB_FILE).write_text(json.dumps({"status": "interrupted", "started": since + 1,
                                                                   "error": "interrupted by SIGINT"}))
    s = summarize(tmp_path, since=since)
    assert (s["ok"], s["failed"], s["interrupted"]) == (1, 1, 1)
    assert "holds 4 rows, fewer than the 10 its job.json records" in s["jobs"]["1_short"]["error"]
    assert job.is_done(tmp_path / "0_complete", "h") and not job.is_done(tmp_path / "1_short", "h")


def test_a_label_test_that_cannot_fit_its_labels_loses_nothing_else(tmp_path):
    """The permuted labels not fitted (min_train_acc out of reach): that test is a named failure, the others' rows are
    written and the job's status is failed (exit 1), not a crash before results."""
    cfg = MainConfig(method={"gradient": MethodSpec(name="gradient")},
                     randomization={"cascading": RandomizationSpec(),
                                    "labels": RandomizationSpec(mode="labels", epochs=1, min_train_acc=1.01)})
    cfg.model.kwargs = {"hidden": 8}
    cfg.train = dataclasses.replace(cfg.train, epochs=0, min_test_acc=0.0, cache_dir=str(tmp_path / "ckpt"))
    cfg.run.n_samples, cfg.run.tests, cfg.run.figures = 4, ["randomization"], False
    cfg.logger.mode = "disabled"
    record = job.run(cfg, tmp_path / "job")
    assert record["status"] == "failed" and "labels / labels" in record["errors"], record.get("error")
    assert "fits only" in record["errors"]["labels / labels"] and not record.get("error")
    rows = pd.read_parquet(tmp_path / "job" / RESULTS_FILE)
    assert set(rows.condition) == {"cascading"} and len(rows) > 0
