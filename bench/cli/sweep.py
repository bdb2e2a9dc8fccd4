"""The end of a sweep: which jobs ran, failed, were interrupted or were skipped, and where their records are.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks.sweep_summary`` in ``conf/config.yaml``): at the end
of a multi-run it reads every job's ``job.json`` under the sweep folder (whatever launcher ran the jobs, local
processes or a cluster), logs one line per failed job and a count, writes ``sweep.json`` beside the jobs and keeps
the number of failed jobs for :func:`bench.cli.main.main`'s exit status. A sweep stopped by SIGINT/SIGTERM ends
without Hydra's callback: :func:`interrupted` writes its summary then. No torch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from bench._io import atomic_write

__all__ = ["SweepSummary", "summarize", "SWEEP_FILE", "last_summary", "forget_summary", "interrupted"]

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.parquet"  # bench.core.results.RESULTS_FILE (not imported: that module loads numpy, pandas)
_LAST: dict[str, Any] = {}
_ACTIVE: dict[str, Any] = {}  # the multi-run in progress in this process: {"sweep_dir", "started"}


def _short_results(job_dir: Path, record: dict) -> str | None:
    """Why the results of a job recorded ok are not what its record says (None: they are, or it records no
    row count): ``results.parquet`` missing, unreadable, or holding another number of rows."""
    rows = record.get("rows")
    if rows is None:
        return None
    path = job_dir / RESULTS_FILE
    if not path.exists():
        return f"{path} is missing; its job.json records {rows} rows"
    try:
        import pyarrow.parquet as pq

        n = int(pq.read_metadata(path).num_rows)
    except Exception as err:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
        return f"{path} cannot be read ({type(err).__name__}: {err}); its job.json records {rows} rows"
    if n != rows:
        return (f"{path} holds {n} rows, {'fewer' if n < rows else 'more'} than the {rows} its job.json records "
                "(overwritten by another run?)")
    return None


def summarize(sweep_dir: str | os.PathLike, since: float = 0.0) -> dict[str, Any]:
    """Count the jobs of ``sweep_dir`` touched since ``since`` (a ``time.time()`` stamp): ``ok``, ``failed``,
    ``interrupted`` (stopped by SIGINT/SIGTERM: run the sweep again to resume it), ``skipped`` (finished earlier,
    found done again) and ``unreadable`` (a ``job.json`` that is not JSON: a job killed mid-write or a foreign file).
    A job recorded ok (or skipped) whose ``results.parquet`` does not hold the rows its record says counts as failed.
    Returns ``{"sweep_dir", "ok", "failed", "interrupted", "skipped", "unreadable", "jobs": {folder: {"status",
    "error"}}}``; folders are relative to ``sweep_dir``."""
    root = Path(sweep_dir)
    out: dict[str, Any] = {"sweep_dir": str(root), "ok": 0, "failed": 0, "interrupted": 0, "skipped": 0,
                           "unreadable": 0, "jobs": {}}
    for path in sorted(root.rglob("job.json")):
        if "wandb" in path.relative_to(root).parts:
            continue
        rel = str(path.parent.relative_to(root))
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            out["unreadable"] += 1
            out["jobs"][rel] = {"status": "unreadable", "error": f"{type(err).__name__}: {err}"}
            continue
        if record.get("last_skipped", 0) >= since and record.get("started", 0) < since:
            status = "skipped"
        elif record.get("started", 0) >= since:
            status = record.get("status") if record.get("status") in ("ok", "interrupted") else "failed"
        else:
            continue  # an older job of the same folder that this sweep did not touch
        error = record.get("error") or "; ".join(f"{k}: {v}" for k, v in (record.get("errors") or {}).items())
        if record.get("status") == "running" and status == "failed":
            error = "did not finish (killed, or still running elsewhere)"
        short = _short_results(path.parent, record) if status in ("ok", "skipped") else None
        if short:
            status, error = "failed", short
        out[status] += 1
        out["jobs"][rel] = {"status": status, "error": error}
    return out


def last_summary() -> dict[str, Any]:
    """The summary of the last sweep that ended in this process (empty before one)."""
    return dict(_LAST)


def forget_summary() -> None:
    """Forget the last sweep's summary: a new command-line run in this process (tests, notebooks) must not exit 1
    on an earlier sweep's failures."""
    _LAST.clear()


def _first_line(text: str, width: int = 160) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 3] + "..."


try:  # Hydra is the CLI's edge: the summary itself (``summarize``) needs no Hydra
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object  # type: ignore[assignment,misc]


class SweepSummary(Callback):
    """Hydra callback: log and write the sweep's summary (:func:`summarize`) at the end of a multi-run."""

    def __init__(self) -> None:
        self.started = time.time()

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        self.started = time.time()
        _ACTIVE.clear()
        try:  # where interrupted() writes the summary of a sweep stopped by a signal
            _ACTIVE.update(sweep_dir=str(config.hydra.sweep.dir), started=self.started)
        except Exception:  # noqa: BLE001  (no sweep folder known: a stopped sweep then writes no summary)
            pass

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        _ACTIVE.clear()
        _finish(Path(config.hydra.sweep.dir), self.started)


def interrupted(signal_name: str) -> dict[str, Any] | None:
    """The multi-run in progress in this process was stopped by ``signal_name``: write and log its summary (the job
    that was running counts as ``interrupted``; jobs not started are not listed). None when no sweep runs."""
    if not _ACTIVE:
        return None
    sweep_dir, started = Path(_ACTIVE["sweep_dir"]), _ACTIVE["started"]
    _ACTIVE.clear()
    return _finish(sweep_dir, started, stopped_by=signal_name)


def _finish(sweep_dir: Path, started: float, stopped_by: str | None = None) -> dict[str, Any]:
    summary = summarize(sweep_dir, since=started - 1.0)
    summary["seconds"] = round(time.time() - started, 1)
    if stopped_by:
        summary["interrupted_by"] = stopped_by
    atomic_write(sweep_dir / SWEEP_FILE, json.dumps(summary, indent=2))
    for rel, job in summary["jobs"].items():
        if job["status"] in ("failed", "unreadable"):
            log.error("job %s %s: %s (record: %s)", rel, job["status"], _first_line(job["error"]),
                      sweep_dir / rel / "job.json")
    bad = summary["failed"] or summary["unreadable"] or summary["interrupted"] or stopped_by
    log.log(logging.ERROR if bad else logging.INFO,
            "sweep %s%s: %d ok, %d failed, %d skipped (already done)%s%s in %.0f s; records: %s%s", sweep_dir,
            f" interrupted by {stopped_by}" if stopped_by else "", summary["ok"], summary["failed"], summary["skipped"],
            f", {summary['interrupted']} interrupted" if summary["interrupted"] else "",
            f", {summary['unreadable']} unreadable" if summary["unreadable"] else "", summary["seconds"],
            sweep_dir / SWEEP_FILE,
            "; run the same command again to resume (finished jobs are skipped, finished chunks kept)"
            if stopped_by or summary["interrupted"] else "")
    _LAST.clear()
    _LAST.update(summary)
    return summary
