"""What a sweep's folders hold besides its results: reading them for the leaderboard and its report.

The results tables (:func:`load_results`: damaged files skipped and listed on request), the jobs' records
(``job.json``: :func:`read_job_records`, :func:`find_failed_jobs` with what failed, :func:`read_row_configs`), the
jobs' own figures (:func:`find_figures`, never W&B's media copies; :func:`describe_figures` for captions) and the
models' facts (:func:`summarize_models`). No torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench.core.results import PROVENANCE, RESULTS_FILE, read_table

__all__ = [
    "describe_figures",
    "distinct_rows",
    "Figure",
    "job_failures",
    "load_results",
    "read_job_records",
    "read_row_configs",
    "summarize_models",
    "find_failed_jobs",
    "find_figures",
    "FAILED_COLUMNS",
    "MODEL_COLUMNS",
]

log = logging.getLogger(__name__)


JOB_FILE = "job.json"
FIGURES_DIR = "figures"
_PRUNE = frozenset({"wandb", ".hydra", "__pycache__", ".git"})  # never searched: copies, configs, caches


def _walk(folders: Iterable[str | os.PathLike], match: Callable[[Path], bool],
          given: Callable[[Path], bool] | None = None) -> list[Path]:
    """Files under ``folders`` for which ``match(path)`` holds (a folder is searched recursively, skipping the
    ``wandb``, ``.hydra``, ``.git`` and ``__pycache__`` folders below it), and the files given in ``folders`` for
    which ``given`` (default: ``match``) holds: resolved, sorted, each once."""
    given = given or match
    seen: set[Path] = set()
    for folder in folders:
        folder = Path(folder)
        if folder.is_file():
            if given(folder):
                seen.add(folder.resolve())
            continue
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d not in _PRUNE)
            for name in files:
                path = Path(root) / name
                if match(path):
                    seen.add(path.resolve())
    return sorted(seen)


def _unique_files(folders: Iterable[str | os.PathLike], pattern: str) -> list[Path]:
    """Files named like ``pattern`` (a glob on the file name) under ``folders``: resolved, sorted, each once."""
    return _walk(folders, lambda p: p.match(pattern))


def _check_exist(folders: Iterable[str | os.PathLike]) -> None:
    missing = [str(f) for f in folders if not Path(f).exists()]
    if missing:
        raise FileNotFoundError(f"no such file or folder: {', '.join(missing)}")


def load_results(folders: Sequence[str | os.PathLike], *, skip_unreadable: bool = True
                 ) -> tuple[pd.DataFrame, list[tuple[Path, str]]]:
    """Every ``results.parquet`` under the job or sweep ``folders`` (each file once, however the folders overlap),
    concatenated, with a ``job`` column naming each row's job folder; returns ``(table, skipped)``.

    A file that cannot be read or lacks columns of the contract (:func:`bench.core.results.read_table` raises
    ``ValueError``) is, with ``skip_unreadable``, left out with a logged warning and listed in ``skipped`` as
    ``(path, reason)``; without it, the ``ValueError`` naming the file is raised. Raises ``FileNotFoundError`` when
    a folder does not exist or there is no results file at all, ``ValueError`` when none of them is readable."""
    _check_exist(folders)
    paths = _walk(folders, lambda p: p.name == RESULTS_FILE, given=lambda p: True)  # a file given: any name
    if not paths:
        raise FileNotFoundError(f"no {RESULTS_FILE} under {', '.join(map(str, folders))}")
    frames, skipped = [], []
    for path in paths:
        try:
            df = read_table(path)
        except ValueError as err:
            if not skip_unreadable:
                raise
            log.warning("skipped an unreadable results file: %s", err)
            skipped.append((path, str(err)))
            continue
        frames.append(df.assign(job=str(path.parent)))
    if not frames:
        reasons = "; ".join(reason for _, reason in skipped)
        raise ValueError(f"none of the {len(paths)} {RESULTS_FILE} file(s) under {', '.join(map(str, folders))} is "
                         f"readable: {reasons}")
    return pd.concat(frames, ignore_index=True), skipped


def distinct_rows(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without its ``job`` column and with each score once: rows equal in every column but the job folder
    and the per-sample provenance (:data:`bench.core.results.PROVENANCE`, -1 in tables written before it) are one
    score (the same configuration found in two job folders, or an old and a new run of it, enters once)."""
    table = table.drop(columns=[c for c in ("job",) if c in table.columns])
    subset = [c for c in table.columns if c not in PROVENANCE]
    return table.drop_duplicates(subset=subset)


def read_job_records(folders: Iterable[str | os.PathLike]) -> dict[Path, dict[str, Any]]:
    """``{job folder: its job.json}`` for every ``job.json`` under ``folders`` (resolved folders). A record that
    cannot be read, or is not a JSON object, is ``{"status": "unreadable", "error": "<why>"}``."""
    out: dict[Path, dict[str, Any]] = {}
    for path in _unique_files(folders, JOB_FILE):
        try:
            info = json.loads(path.read_text())
            if not isinstance(info, dict):
                raise ValueError(f"a JSON {type(info).__name__}, not an object")
        except (OSError, ValueError) as err:
            info = {"status": "unreadable", "error": f"{type(err).__name__}: {err}"}
        out[path.parent] = info
    return out


def _first_line(text: Any) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def job_failures(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What failed in one job record (``job.json``): ``[(what, first line of the error)]``, one entry per failed
    method and condition (``errors``: ``{"<method> / <condition>": "Type: message"}``, in the record's order), then
    ``("job", ...)`` for a job-level ``error``. Empty when the record names no error."""
    errors = record.get("errors")
    out = [(str(k), _first_line(v)) for k, v in errors.items()] if isinstance(errors, Mapping) else []
    if record.get("error"):
        out.append(("job", _first_line(record["error"])))
    return out


def _status_note(status: str) -> str:
    if status == "running":
        return "no error recorded: still running, or killed before it could record one"
    return "no error recorded"


FAILED_COLUMNS = ["job", "status", "error", "overrides", "failures"]


def find_failed_jobs(folders: Iterable[str | os.PathLike],
                     records: Mapping[Path, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """Jobs under ``folders`` whose ``job.json`` status is not ``ok`` (``records``: already read by
    :func:`read_job_records`). Columns: ``job`` (the folder), ``status``, ``failures`` (:func:`job_failures`: per
    failed method / condition, then the job itself, the first line of its error), ``error`` (the failures as one
    line, ``"gradient / mean_shift: RuntimeError: boom; ..."``, or why none is known) and ``overrides`` (the Hydra
    overrides of ``.hydra/overrides.yaml`` joined by spaces, when present)."""
    records = read_job_records(folders) if records is None else records
    rows = []
    for job, info in sorted(records.items()):
        status = str(info.get("status", "unknown"))
        if status == "ok":
            continue
        failures = job_failures(info)
        error = "; ".join(f"{what}: {msg}" if what != "job" or len(failures) > 1 else msg for what, msg in failures)
        rows.append(dict(job=str(job), status=status, error=error or _status_note(status),
                         overrides=" ".join(_overrides(Path(job))), failures=failures))
    return pd.DataFrame(rows, columns=FAILED_COLUMNS)


def _overrides(job: Path) -> list[str]:
    """The Hydra overrides of a job (``.hydra/overrides.yaml``); empty when there are none or the file is broken."""
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    try:
        import yaml

        items = yaml.safe_load(path.read_text()) or []
    except Exception:  # noqa: BLE001  (a broken file only loses the label)
        return []
    return [str(i) for i in items] if isinstance(items, list) else [str(items)]


def read_row_configs(folders: Iterable[str | os.PathLike],
                     records: Mapping[Path, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{config_hash: flattened config}`` of every row configuration the jobs under ``folders`` recorded
    (``row_configs`` of their ``job.json``; ``records``: already read by :func:`read_job_records`); unreadable
    records are skipped (their rows keep hash labels)."""
    records = read_job_records(folders) if records is None else records
    out: dict[str, dict[str, Any]] = {}
    for info in records.values():
        configs = info.get("row_configs")
        if isinstance(configs, Mapping):
            out.update({str(k): dict(v) for k, v in configs.items() if isinstance(v, Mapping)})
    return out


def _content_key(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def find_figures(folders: Iterable[str | os.PathLike]) -> list[Path]:
    """The jobs' own figures: every PNG file directly in a ``figures/`` folder under ``folders`` (a PNG file given
    as a folder is taken as it is), never one under a ``wandb`` folder (W&B keeps copies of the logged figures
    there). Sorted by path; a file whose bytes equal an earlier one's is left out (each figure once)."""
    paths = _walk(folders, lambda p: p.suffix.lower() == ".png" and p.parent.name == FIGURES_DIR,
                  given=lambda p: p.suffix.lower() == ".png")
    seen: set[str] = set()
    out = []
    for path in paths:
        key = _content_key(path)
        if key is None or key in seen:
            continue
        seen.add(key)
        out.append(path)
    return out


@dataclass(frozen=True)
class Figure:
    """One figure of a job, as the report shows it: ``model`` (the leaderboard's model label of its job), ``test``
    (``invariance``, ``randomization`` or ``other``), ``condition`` (the shift or randomization mode), ``kind``
    (``maps`` or ``similarity curves`` for randomization figures), ``job`` (what tells its job from the other
    jobs: the overrides only it has, ``method=gradient``; else its methods; ``""`` when nothing needs telling)."""

    path: Path
    model: str
    test: str
    condition: str = ""
    kind: str = ""
    job: str = ""

    @property
    def caption(self) -> str:
        """``"paper_mlp · invariance · mean_shift"``: model, test, condition and kind, no path."""
        return " · ".join(p for p in (self.model, self.test, self.condition, self.kind) if p)


TEST_ORDER = ("invariance", "randomization", "other")
_KIND = {"grid": "maps", "curves": "similarity curves"}


def _parse_figure_name(stem: str) -> tuple[str, str, str]:
    """``(test, condition, kind)`` from the file names :mod:`bench.reporting.figures` writes."""
    if stem.startswith("invariance_"):
        return "invariance", stem[len("invariance_"):], ""
    m = re.fullmatch(r"randomization_(.+)_(grid|curves)", stem)
    if m:
        return "randomization", m[1], _KIND[m[2]]
    return "other", stem.replace("_", " "), ""


def _job_labels(jobs: Sequence[Path], methods: Mapping[Path, Sequence[str]]) -> dict[Path, str]:
    """What tells each job from the others: the overrides it does not share with all of them; when that is
    nothing (one job, or jobs with the same overrides), its methods if they differ between the jobs."""
    overrides = {j: _overrides(j) for j in jobs}
    common = set.intersection(*(set(o) for o in overrides.values())) if overrides else set()
    labels = {j: " ".join(o for o in overrides[j] if o not in common) for j in jobs}
    if len({tuple(methods.get(j, ())) for j in jobs}) > 1:
        labels = {j: labels[j] or ", ".join(methods.get(j, ())) for j in jobs}
    return labels


def describe_figures(paths: Sequence[Path], *, job_models: Mapping[Path, Sequence[str]] | None = None,
                     records: Mapping[Path, Mapping[str, Any]] | None = None,
                     job_methods: Mapping[Path, Sequence[str]] | None = None) -> list[Figure]:
    """Each figure (a PNG in ``<job>/figures/``) with its model, test, condition and job label, ordered by model,
    test (invariance, randomization, other), condition and job. The model is the leaderboard's label of the job's
    rows (``job_models``: job folder -> labels) when the job has one, else the ``model`` of its ``job.json``
    (``records``), else ``"unknown model"``."""
    job_models, records, job_methods = job_models or {}, records or {}, job_methods or {}
    jobs = sorted({Path(p).parent.parent for p in paths})
    labels = _job_labels(jobs, job_methods)
    out = []
    for path in paths:
        path = Path(path)
        job = path.parent.parent
        names = list(job_models.get(job, ()))
        model = names[0] if len(names) == 1 else str(records.get(job, {}).get("model") or "unknown model")
        test, condition, kind = _parse_figure_name(path.stem)
        out.append(Figure(path=path, model=model, test=test, condition=condition, kind=kind, job=labels.get(job, "")))
    from bench.reporting.leaderboard import MODE_ORDER, SHIFT_ORDER  # the leaderboard's column order

    conditions = {c: i for i, c in enumerate((*SHIFT_ORDER, *MODE_ORDER))}
    return sorted(out, key=lambda f: (f.model, TEST_ORDER.index(f.test), conditions.get(f.condition, len(conditions)),
                                      f.condition, f.kind != "maps", f.job, str(f.path)))


def _values(values: Iterable[Any]) -> list[Any]:
    """Distinct values, sorted, without ``None``/NaN."""
    out = {v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}
    return sorted(out, key=lambda v: (str(type(v)), v))


def summarize_models(table: pd.DataFrame, records: Mapping[Path, Mapping[str, Any]],
                     configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Per model label of ``table`` (the labelled results table with its ``job`` column): ``dataset``,
    ``test_acc`` and ``train_acc`` (the values its jobs' ``job.json`` recorded), ``n_samples`` (``run.n_samples`` of
    its rows' configurations, else the number of distinct samples in its rows), ``seeds`` (the seeds its rows
    record) and ``jobs`` (how many). Every cell but ``jobs`` is a sorted list of the distinct values found (several
    when the jobs differ; empty when unknown)."""
    rows = []
    for model, g in table.groupby("model", sort=True):
        jobs = [Path(j) for j in g["job"].unique()] if "job" in g else []
        recs = [records.get(j, {}) for j in jobs]
        cfgs = [configs[h] for h in g["config_hash"].unique() if h in configs]
        n_samples = _values(c.get("run.n_samples") for c in cfgs) or [int(g["sample"].nunique())]
        rows.append(dict(model=model, dataset=_values(g["dataset"]), test_acc=_values(r.get("test_acc") for r in recs),
                         train_acc=_values(r.get("train_acc") for r in recs), n_samples=n_samples,
                         seeds=_values(int(s) for s in g["seed"].unique()), jobs=len(jobs)))
    return pd.DataFrame(rows, columns=MODEL_COLUMNS)


MODEL_COLUMNS = ["model", "dataset", "test_acc", "train_acc", "n_samples", "seeds", "jobs"]
