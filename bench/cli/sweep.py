"""The end of a sweep: which jobs ran, failed or were skipped, and where their records are.

:class:`SweepSummary` is a Hydra callback (``hydra.callbacks.sweep_summary`` in ``conf/config.yaml``): at the end
of a multi-run it reads every job's ``job.json`` under the sweep folder (whatever launcher ran the jobs, local
processes or a cluster), logs one line per failed job and a count, writes ``sweep.json`` beside the jobs and keeps
the number of failed jobs for :func:`bench.cli.main.main`'s exit status. No torch.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from bench._io import atomic_write

__all__ = ["SweepSummary", "summarize", "SWEEP_FILE", "last_summary"]

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
_LAST: dict[str, Any] = {}


def summarize(sweep_dir: str | os.PathLike, since: float = 0.0) -> dict[str, Any]:
    """Count the jobs of ``sweep_dir`` touched since ``since`` (a ``time.time()`` stamp): ``ok``, ``failed``,
    ``skipped`` (finished earlier, found done again) and ``unreadable`` (a ``job.json`` that is not JSON: a job
    killed mid-write or a foreign file). Returns ``{"sweep_dir", "ok", "failed", "skipped", "unreadable",
    "jobs": {folder: {"status", "error"}}}``; folders are relative to ``sweep_dir``."""
    root = Path(sweep_dir)
    out: dict[str, Any] = {"sweep_dir": str(root), "ok": 0, "failed": 0, "skipped": 0, "unreadable": 0, "jobs": {}}
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
            status = "ok" if record.get("status") == "ok" else "failed"
        else:
            continue  # an older job of the same folder that this sweep did not touch
        error = record.get("error") or "; ".join(f"{k}: {v}" for k, v in (record.get("errors") or {}).items())
        if record.get("status") == "running" and status == "failed":
            error = "did not finish (killed, or still running elsewhere)"
        out[status] += 1
        out["jobs"][rel] = {"status": status, "error": error}
    return out


def last_summary() -> dict[str, Any]:
    """The summary of the last sweep that ended in this process (empty before one)."""
    return dict(_LAST)


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

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summary = summarize(sweep_dir, since=self.started - 1.0)
        summary["seconds"] = round(time.time() - self.started, 1)
        atomic_write(sweep_dir / SWEEP_FILE, json.dumps(summary, indent=2))
        for rel, job in summary["jobs"].items():
            if job["status"] in ("failed", "unreadable"):
                log.error("job %s %s: %s (record: %s)", rel, job["status"], _first_line(job["error"]),
                          sweep_dir / rel / "job.json")
        level = logging.ERROR if summary["failed"] or summary["unreadable"] else logging.INFO
        log.log(level, "sweep %s: %d ok, %d failed, %d skipped (already done)%s in %.0f s; records: %s", sweep_dir,
                summary["ok"], summary["failed"], summary["skipped"],
                f", {summary['unreadable']} unreadable" if summary["unreadable"] else "", summary["seconds"],
                sweep_dir / SWEEP_FILE)
        _LAST.clear()
        _LAST.update(summary)
