"""W&B logging: one run per job, a view of the results table that is already on disk.

``mode="offline"`` (the default) writes the run under ``<job folder>/wandb`` with no key, no prompt and no
network; ``wandb sync <folder>`` uploads it later. ``"online"`` logs live (needs ``wandb login``);
``"disabled"`` does nothing. A logger failure (no network, no key, a broken install) is returned as a
message, never raised: the results table was written before the logger ran.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["log_run"]


def log_run(
    *,
    mode: str,
    out: str | os.PathLike,
    config: Mapping[str, Any],
    table: pd.DataFrame,
    leaderboard: pd.DataFrame | None = None,
    figures: Sequence[str | os.PathLike] = (),
    project: str = "saliency-bench",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    summary: Mapping[str, float] | None = None,
) -> str | None:
    """Log one job to W&B; returns ``None`` on success (or when disabled), else the error message."""
    if mode == "disabled":
        return None
    if mode not in ("offline", "online"):
        return f"unknown logger mode {mode!r}; accepted: offline, online, disabled"
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    if mode == "offline":
        os.environ["WANDB_MODE"] = "offline"
    try:
        import wandb

        run = wandb.init(
            mode=mode, dir=str(out), project=project, entity=entity, group=group, name=name, tags=list(tags),
            config=dict(config), reinit="finish_previous", settings=wandb.Settings(silent=True, console="off"),
        )
        try:
            run.log({"results": wandb.Table(dataframe=table.reset_index(drop=True))})
            if leaderboard is not None and len(leaderboard):
                run.log({"leaderboard": wandb.Table(dataframe=leaderboard.reset_index(drop=True).astype(str))})
            for fig in figures:
                run.log({f"figures/{Path(fig).stem}": wandb.Image(str(fig))})
            for key, value in (summary or {}).items():
                run.summary[key] = value
        finally:
            run.finish()
    except Exception as err:  # noqa: BLE001  (the results are on disk; report and go on)
        return f"W&B logging ({mode}) failed: {type(err).__name__}: {err}"
    return None
