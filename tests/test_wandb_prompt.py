"""W&B never asks for a login, and a run folder holds all that ``wandb sync`` needs.

Each test logs a tiny table in a fresh Python process whose stdin, stdout and stderr are a pseudo-terminal (where
W&B would show its interactive login prompt and wait for an answer forever), with no W&B key, no W&B environment
and ``HOME`` pointed at an empty temporary folder; the process is killed after :data:`TIMEOUT` seconds. Checked:
it finishes in time, prints nothing but the caller's one line, leaves an offline run under the job folder, and
writes nothing under ``HOME`` (W&B's default staging and cache folders), the staged files being in the run folder.
No network is needed: an online start without a key goes offline at once; one with a key that cannot be used
(no network, or a key the server refuses) falls back within ``init_timeout``.
"""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60.0  # seconds; a login prompt waits forever (measured: killed after 15 minutes)
FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # well-formed, never valid

CHILD = r"""
import logging
import sys
from pathlib import Path

import pandas as pd

from bench.core.results import write_table
from bench.reporting.wandb_log import log_run

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="LOG %(name)s: %(message)s")
mode, out, artifact = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1"
n = 8
table = pd.DataFrame({
    "experiment": "input_invariance", "model": "paper_mlp", "dataset": "mnist_bundled",
    "method": ["gradient", "lrp_z"] * (n // 2), "condition": "mean_shift", "mode": "-", "layer": "-",
    "metric": "ssim", "sample": list(range(n)), "data_index": list(range(n)), "label": 0, "target": 0,
    "score": [0.1 * i for i in range(n)], "seed": 0,
    "config_hash": "abc"})
if artifact:  # beyond W&B's table limit: the cell means and results.parquet as a `results` artifact
    import wandb

    wandb.Table.MAX_ROWS = 4
    out.mkdir(parents=True, exist_ok=True)
    write_table(table, out)
msg = log_run(mode=mode, out=out, config={"run": {"seed": 0}}, table=table, init_timeout=5)
print(f"LOGGED {msg}", flush=True)
"""


def _environment(home: Path, **extra: str) -> dict[str, str]:
    """The test's environment: no W&B variable, no credentials file, ``HOME`` (and so W&B's default folders) in
    the temporary folder, a terminal that W&B would prompt in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WANDB_", "XDG_")) and k not in ("NETRC", "PYTHONPATH")}
    env.update(HOME=str(home), TERM="xterm-256color", PYTHONPATH=str(ROOT), **extra)
    return env


def _log_in_a_terminal(tmp_path: Path, mode: str, *, artifact: bool = False,
                       **env: str) -> tuple[int | None, str, float]:
    """Run :data:`CHILD` with a pseudo-terminal as stdin, stdout and stderr; return its exit code (``None`` when it
    was killed at :data:`TIMEOUT`), what it wrote to the terminal, and the seconds it took."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    master, slave = pty.openpty()
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), mode, str(tmp_path / "job"), "1" if artifact else "0"],
                            stdin=slave, stdout=slave, stderr=slave, cwd=tmp_path,
                            env=_environment(home, **env), start_new_session=True)
    os.close(slave)
    chunks = []
    try:
        while time.monotonic() - start < TIMEOUT:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: every writer closed the terminal
                    data = b""
                chunks.append(data)
                if data:
                    continue
            if proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:  # a prompt waiting for an answer: kill the process and W&B's service
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).replace("\r", "")
    return (None if proc.returncode < 0 else proc.returncode), text, time.monotonic() - start


def _offline_runs(tmp_path: Path) -> list[Path]:
    return sorted(p for p in (tmp_path / "job" / "wandb").glob("offline-run-*") if p.is_dir())


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if not p.is_dir())


def _assert_one_line_and_no_prompt(text: str, seconds: float, rc: int | None) -> str:
    assert rc == 0, f"exit {rc} after {seconds:.0f} s (killed at {TIMEOUT:.0f} s: a login prompt?):\n{text}"
    assert "Enter your choice" not in text and "W&B account" not in text and "API key:" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("LOGGED "), text  # W&B prints nothing; log_run logs nothing
    return lines[0]


def test_online_without_a_key_in_a_terminal_goes_offline_at_once(tmp_path):
    rc, text, seconds = _log_in_a_terminal(tmp_path, "online")
    line = _assert_one_line_and_no_prompt(text, seconds, rc)
    runs = _offline_runs(tmp_path)
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    # the one line: the run went offline (no key), where it is and how to upload it later
    assert "online" in line and "offline" in line and f"`wandb sync {runs[0]}`" in line
    assert not _files_under(tmp_path / "home")


def test_online_with_an_unusable_key_in_a_terminal_falls_back_within_the_timeout(tmp_path):
    # no network: the start times out after init_timeout (5 s); with a network: the server refuses the key
    rc, text, seconds = _log_in_a_terminal(tmp_path, "online", WANDB_API_KEY=FAKE_KEY)
    line = _assert_one_line_and_no_prompt(text, seconds, rc)
    runs = _offline_runs(tmp_path)
    assert len(runs) == 1 and f"`wandb sync {runs[0]}`" in line
    assert not _files_under(tmp_path / "home")


def test_an_offline_run_stages_its_artifact_in_its_own_folder(tmp_path):
    rc, text, seconds = _log_in_a_terminal(tmp_path, "offline", artifact=True)
    assert rc == 0, f"exit {rc} after {seconds:.0f} s:\n{text}"
    assert "LOGGED None" in text and "as an artifact" in text, text  # the artifact path was taken
    home = tmp_path / "home"
    assert not _files_under(home), [str(p.relative_to(home)) for p in _files_under(home)]
    runs = _offline_runs(tmp_path)
    assert len(runs) == 1
    record = next(runs[0].glob("run-*.wandb")).read_bytes()
    staged = _files_under(runs[0] / "staging")
    assert staged, "nothing staged in the run folder"
    # every staged file the record points at is in the run folder (results.parquet's copy among them), none in HOME
    inside = str(runs[0] / "staging" / "artifacts" / "staging").encode()
    assert record.count(b"/artifacts/staging/") == record.count(inside) > 0
    parquet = (tmp_path / "job" / "results.parquet").read_bytes()
    assert any(p.read_bytes() == parquet and str(p).encode() in record for p in staged)
    assert str(home).encode() not in record


def test_the_call_environment_is_restored(monkeypatch, tmp_path):
    from bench.reporting.wandb_log import _CALL_ENV, _call_environment

    monkeypatch.setenv("TERM", "xterm")
    monkeypatch.setenv("WANDB_CACHE_DIR", "/somewhere")
    monkeypatch.delenv("WANDB_DATA_DIR", raising=False)
    before = dict(os.environ)
    with pytest.raises(RuntimeError), _call_environment(tmp_path / "wandb"):
        assert os.environ["TERM"] == "dumb"
        assert os.environ["WANDB_DATA_DIR"] == str((tmp_path / "wandb" / "staging").resolve())
        assert set(_CALL_ENV) <= set(os.environ)
        os.environ["WANDB_DATA_DIR"] = "/elsewhere"  # log_run moves staging into the run folder
        raise RuntimeError
    assert dict(os.environ) == before
