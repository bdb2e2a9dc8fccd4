"""A W&B Report of one sweep, built with the ``wandb-workspaces`` reports API (``wandb_workspaces.reports.v2``).

:func:`read_sweep` reads what the report needs from the sweep folder, offline: the jobs (subfolders holding
``results.parquet`` and ``job.json``), the failed ones, the sweep's leaderboard (the same as
``salbench-leaderboard``'s), the figure keys the jobs logged, and the W&B project / entity / group the jobs were
logged under (the jobs' ``.hydra/config.yaml``, else the defaults; the group is :func:`bench.reporting.wandb_log.
group_name` of the folder, as the jobs used). :func:`build_report` makes the report:

- the title and the description name the sweep (its group), the jobs and how many failed;
- the verdict legend: the leaderboard's (:mod:`bench.reporting.render`), with the sweep's thresholds;
- a panel grid of the sweep's runs (filtered to its group; the runs table with the jobs' scalar summary pinned, a
  bar chart of the verdicts passed per job, a run comparer of their configs);
- the logged ``leaderboard`` tables of those runs (a Weave summary-table panel);
- the logged figures (a media browser of the ``figures/<stem>`` keys), when the jobs made any;
- a snapshot of the sweep's leaderboard and failed jobs as read locally (Markdown).

:func:`report_definition` validates the report (the wandb-workspaces pydantic models: the report is converted to
its view-spec model, dumped and validated back, and rebuilt from it) and returns it as JSON-able data;
:func:`write_definition` writes it. Neither touches the network. :func:`save_report` saves the report to W&B
(network and a key needed) within a time limit and returns its URL.

Imports neither torch nor W&B until a report is built.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench._io import atomic_write
from bench.reporting.wandb_log import group_name

__all__ = ["SweepInfo", "read_sweep", "build_report", "report_definition", "write_definition", "save_report",
           "legend_text", "DEFAULT_PROJECT", "TITLE_PREFIX"]

log = logging.getLogger(__name__)

#: the W&B project of a job whose config does not name one (the default of ``logger.project``)
DEFAULT_PROJECT = "saliency-bench"
TITLE_PREFIX = "saliency-bench sweep"
_TITLE_MAX = 128  # W&B's limit on a report title
_JOB_FILE = "job.json"


@dataclass
class SweepInfo:
    """What a report of a sweep shows, read from its folder (:func:`read_sweep`).

    ``group``: the W&B group of the sweep's runs; ``project`` / ``entity``: where they were logged (``entity``
    ``None``: the W&B default entity, resolved only when the report is saved); ``jobs``: the job folders (those with a
    ``job.json`` or a ``results.parquet``); ``failed``: :func:`~bench.reporting.sweep_files.find_failed_jobs`;
    ``board``: the sweep's leaderboard (``None`` without results, ``note`` says why); ``figure_keys``: the W&B keys
    of the figures the jobs logged (``figures/<stem>``)."""

    folder: Path
    group: str | None
    project: str
    entity: str | None
    jobs: list[Path] = field(default_factory=list)
    failed: pd.DataFrame | None = None
    board: pd.DataFrame | None = None
    figure_keys: list[str] = field(default_factory=list)
    note: str | None = None


def legend_text(board: pd.DataFrame | None) -> str:
    """How the verdicts are decided: the leaderboard's legend (:mod:`bench.reporting.render`) with the board's
    thresholds (the registry's defaults without a board)."""
    from bench.reporting.render import _legend

    return _legend(dict(board.attrs.get("settings", {})) if board is not None else {})


def _logger_settings(jobs: Iterable[Path]) -> dict[str, Any]:
    """The first ``logger.project`` / ``entity`` / ``group`` the jobs' ``.hydra/config.yaml`` set (unset: absent)."""
    import yaml

    found: dict[str, Any] = {}
    for job in jobs:
        path = job / ".hydra" / "config.yaml"
        if not path.is_file():
            continue
        try:
            logger = (yaml.safe_load(path.read_text()) or {}).get("logger") or {}
        except (OSError, yaml.YAMLError, AttributeError) as err:
            log.warning("cannot read %s: %s", path, err)
            continue
        for key in ("project", "entity", "group"):
            if logger.get(key) and key not in found:
                found[key] = str(logger[key])
    return found


def _figure_keys(jobs: Iterable[Path]) -> list[str]:
    """``figures/<stem>`` of every ``<job>/figures/*.png`` (the keys :func:`~bench.reporting.wandb_log.log_run`
    logs them under), sorted, each once."""
    return sorted({f"figures/{p.stem}" for job in jobs for p in (job / "figures").glob("*.png") if p.is_file()})


def read_sweep(sweep_dir: str | os.PathLike, *, project: str | None = None, entity: str | None = None,
               group: str | None = None, **leaderboard_kwargs: Any) -> SweepInfo:
    """Read a sweep folder for its report. ``project`` / ``entity`` / ``group`` override what the jobs' configs say;
    ``leaderboard_kwargs``: the settings of :func:`~bench.reporting.leaderboard.build_leaderboard`. Raises
    ``FileNotFoundError`` when ``sweep_dir`` is not a folder or holds no job."""
    from bench.core.results import RESULTS_FILE, read_tables
    from bench.reporting.sweep_files import distinct_rows, find_failed_jobs, read_row_configs
    from bench.reporting.wandb_log import leaderboard_of

    folder = Path(sweep_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    jobs = sorted({p.parent for name in (_JOB_FILE, RESULTS_FILE) for p in folder.rglob(name)
                   if "wandb" not in p.relative_to(folder).parts})
    if not jobs:
        raise FileNotFoundError(f"no job under {folder} (no {_JOB_FILE} or {RESULTS_FILE})")
    logged = _logger_settings(jobs)
    info = SweepInfo(folder=folder, group=group or logged.get("group") or group_name(folder.resolve()),
                     project=project or logged.get("project") or DEFAULT_PROJECT,
                     entity=entity or logged.get("entity"), jobs=jobs, failed=find_failed_jobs([folder]),
                     figure_keys=_figure_keys(jobs))
    try:
        # the same configuration in two job folders is one set of samples: dedup without the job column
        table = distinct_rows(read_tables([folder]))
    except FileNotFoundError as err:
        info.note = str(err)
        return info
    info.board = leaderboard_of(table, configs=read_row_configs([folder]), **leaderboard_kwargs)
    if info.board is None:
        info.note = "the results hold no leaderboard (see the log)"
    return info


def _description(info: SweepInfo) -> str:
    n_failed = 0 if info.failed is None else len(info.failed)
    parts = [f"Sweep {info.group or info.folder.name}: {len(info.jobs)} job(s), {n_failed} failed."]
    if info.board is not None and len(info.board):
        parts.append(f"Models: {', '.join(sorted(map(str, info.board['model'].unique())))}. "
                     f"Methods: {', '.join(sorted(map(str, info.board['method'].unique())))}.")
    return " ".join(parts)


def _snapshot(info: SweepInfo, legend: str) -> str | None:
    """The local leaderboard (and failed jobs) as Markdown, without the legend (shown above it)."""
    from bench.reporting.leaderboard import Leaderboard
    from bench.reporting.render import to_markdown
    from bench.reporting.sweep_files import find_failed_jobs

    if info.board is None:
        return None
    failed = info.failed if info.failed is not None else find_failed_jobs([])
    md = to_markdown(Leaderboard(board=info.board, failed=failed, sources=[str(info.folder)]))
    return md.replace(f"# Leaderboard\n\n{legend}\n\n", "", 1)


def _filter_group(runset: Any, group: str) -> None:
    """Filter ``runset`` to the runs of W&B group ``group``, exactly. wandb-workspaces parses filter strings and
    rewrites ``=``, ``<`` and ``>`` inside quoted values (``lr=0.1`` would become ``lr==0.1``), so the parsed filter
    of a placeholder is kept with the group's name put in, the way the library keeps a filter loaded from W&B."""
    import wandb_workspaces.expr as wexpr

    runset.filters = f"Metric('Group') == {group!r}"
    v2 = wexpr.filters_tree_to_v2(wexpr.expr_to_filters("Metric('Group') == 'placeholder'"))
    (item,) = v2["filters"]
    item["value"] = group
    runset._stashed_filters_v2 = v2
    runset._stashed_filter_string = runset.filters


def build_report(info: SweepInfo, *, entity: str | None = None, link_runs: bool = False) -> Any:
    """The W&B Report of the sweep (a ``wandb_workspaces.reports.v2.Report``; not saved). ``entity`` overrides
    ``info.entity``; with neither, the report's entity is left empty (:func:`save_report` fills it in).

    ``link_runs``: give the run sets the entity too, as a saved report needs; wandb-workspaces then looks the project
    up on the W&B server when the report is converted (network and a key needed). Without it (the default) the run
    sets name the project and the group only, and the report is built and validated offline."""
    import wandb_workspaces.reports.v2 as wr

    entity = entity or info.entity or ""
    group = info.group

    def runsets() -> list[Any]:  # one run set per panel grid (each has its own id)
        rs = wr.Runset(entity=entity if link_runs else "", project=info.project,
                       name=f"sweep {group}" if group else "all runs",
                       pinned_columns=["summary:passed/total", "summary:tests/total", "summary:acc/test",
                                       "summary:acc/train"])
        if group:
            _filter_group(rs, group)
        return [rs]

    legend = legend_text(info.board)
    blocks: list[Any] = [
        wr.P(_description(info)),
        wr.H2("How the verdicts are decided"),
        wr.MarkdownBlock(text=legend),
        wr.H2("Runs"),
        wr.P(f"The W&B runs of the sweep (group {group!r}), one per job: the runs table holds each job's scalar "
             "summary (passed/<method>, verdict/<method>/..., invariance/..., randomization/..., acc/...)."
             if group else "All runs of the project (the sweep has no group)."),
        wr.PanelGrid(runsets=runsets(), panels=[
            wr.BarPlot(title="verdicts passed per job", metrics=[wr.SummaryMetric("passed/total")],
                       layout=wr.Layout(w=12, h=8)),
            wr.RunComparer(diff_only="split", layout=wr.Layout(w=12, h=8)),
        ]),
        wr.H2("Leaderboards"),
        wr.P("The leaderboard each job logged (key `leaderboard`), one row per (model, method)."),
        wr.PanelGrid(runsets=runsets(), panels=[
            wr.WeavePanelSummaryTable(table_name="leaderboard", layout=wr.Layout(w=24, h=12))]),
    ]
    if info.figure_keys:
        blocks += [
            wr.H2("Figures"),
            wr.PanelGrid(runsets=runsets(), panels=[
                wr.MediaBrowser(title="figures", media_keys=list(info.figure_keys), num_columns=2,
                                layout=wr.Layout(w=24, h=16))]),
        ]
    snapshot = _snapshot(info, legend)
    if snapshot:
        blocks += [wr.H2("Leaderboard of the sweep (local snapshot)"), wr.MarkdownBlock(text=snapshot)]
    elif info.note:
        blocks += [wr.P(f"No leaderboard: {info.note}.")]
    title = f"{TITLE_PREFIX}: {group or info.folder.name}"[:_TITLE_MAX]
    return wr.Report(project=info.project, entity=entity, title=title, description=_description(info),
                     blocks=blocks)


def report_definition(report: Any) -> dict[str, Any]:
    """The report's definition as JSON-able data (its view spec: ``displayName``, ``description``, ``project``,
    ``spec.blocks`` ...), validated offline: converted to the wandb-workspaces pydantic model, dumped, validated
    back into the model and rebuilt as a report. Raises ``pydantic.ValidationError`` (or ``ValueError``) when the
    report is not valid."""
    from wandb_workspaces.reports.v2 import internal
    from wandb_workspaces.reports.v2.interface import Report

    model = report._to_model()
    data = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    Report._from_model(internal.ReportViewspec.model_validate(data))
    return data


def write_definition(report: Any, path: str | os.PathLike) -> Path:
    """Validate the report (:func:`report_definition`) and write its definition to ``path`` as JSON (atomically)."""
    text = json.dumps(report_definition(report), indent=2)
    return atomic_write(Path(path), text)


def save_report(info: SweepInfo, *, timeout: float = 60.0) -> str:
    """Save the sweep's report to W&B and return its URL. Resolves the W&B default entity when ``info.entity`` is
    not set. Needs a key and the network; raises the error (``TimeoutError`` after ``timeout`` seconds)."""
    result: dict[str, Any] = {}

    def work() -> None:
        try:
            entity = info.entity
            if not entity:
                import wandb

                entity = wandb.Api().default_entity
                if not entity:
                    raise RuntimeError("no W&B entity: pass --entity")
            report = build_report(info, entity=entity, link_runs=True)
            report.save()
            result["url"] = report.url
        except BaseException as err:  # noqa: BLE001  (handed to the caller's thread)
            result["error"] = err

    thread = threading.Thread(target=work, name="wandb-report-save", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"saving the report took more than {timeout:g} s (no network?)")
    if "error" in result:
        raise result["error"]
    return str(result["url"])
