"""W&B logging: one run per job, a view of the results table that is already on disk.

``mode="offline"`` (the default) writes the run under ``<job folder>/wandb`` with no key, no prompt and no
network; ``wandb sync <folder>`` uploads it later. ``"online"`` logs live (needs ``wandb login``); when the online
start fails (no key: at once; no network: bounded by ``init_timeout`` seconds) the run is logged offline instead,
kept for ``wandb sync``, and the returned message says so. W&B never prompts for a login, with or without a
terminal. ``"disabled"`` does nothing. A logger failure (a broken install, a full disk) is returned as a message,
never raised: the results table was written before the logger ran.

What a run holds (:func:`log_run`): the job's config; the results table (``results``; beyond W&B's table limit of
10,000 rows, the per-cell means ``results_mean`` and ``results.parquet`` as a ``results`` artifact) and the
leaderboard (``leaderboard``) as typed W&B tables (:func:`typed_table`: numbers stay numbers); the figures
(``figures/<stem>``); and a flat scalar summary (:func:`job_summary`) that makes runs comparable in W&B's runs
table. The run's id is deterministic (:func:`run_id_for`: the job folder and the config hash) and it is resumed
(``resume="allow"``), so a rerun of a job replaces its run instead of adding one. Its group is the sweep's name
(:func:`group_name`), never a local path.

A run folder holds everything ``wandb sync`` needs: W&B stages the files of a run's artifacts (its tables, the
``results`` artifact) in ``<run folder>/staging``, not under the home folder (W&B's default,
``~/.local/share/wandb``), so that removing an older run folder removes its staged copies too; the cache and logs of
a W&B service that the call starts go to ``<job folder>/wandb/cache`` (not ``~/.cache/wandb``). These folders, and
W&B's terminal (no login prompt), are chosen by environment variables only (:data:`_CALL_ENV`): :func:`log_run` sets
them for the duration of the call and restores them afterwards; all else is passed to ``wandb.init`` /
``wandb.Settings``. When it was the one that started W&B's service process in this process, it shuts it down again
(``wandb.teardown()``), so the process is left as it was found (no ``WANDB_SERVICE`` token behind).

This module does not import torch; W&B is imported only when a run is logged.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
from collections.abc import Iterator, Mapping, Sequence
from numbers import Number
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["log_run", "job_summary", "typed_table", "group_name", "run_id_for", "leaderboard_of", "INIT_TIMEOUT"]

log = logging.getLogger(__name__)

#: seconds ``wandb.init`` may take before it gives up (W&B's own default is 90 s, per job, when offline)
INIT_TIMEOUT = 20.0
_SERVICE_ENV = "WANDB_SERVICE"  # W&B's own token of its service process (set by wandb on its first start)
_DATA_ENV = "WANDB_DATA_DIR"  # W&B's staging area is <this>/artifacts/staging (read whenever a file is staged)
#: the environment of one :func:`log_run` call (``{wandb}``: ``<job folder>/wandb``), restored afterwards. W&B asks
#: for a login only where it can read a terminal: ``TERM=dumb`` tells it it cannot (it then raises at once, and the
#: run goes offline), ``WANDB_SILENT`` keeps its messages out of the job's log (where it sets up in this call). The
#: folders: staging (switched to the run folder once it is known), cache and logs of W&B's service, downloads.
_CALL_ENV = {"TERM": "dumb", "WANDB_SILENT": "true", _DATA_ENV: "{wandb}/staging", "WANDB_CACHE_DIR": "{wandb}/cache",
             "WANDB_ARTIFACT_DIR": "{wandb}/artifacts"}
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_TIME = re.compile(r"\d{2}-\d{2}-\d{2}")
_NA = "N/A"


# -- names and ids ---------------------------------------------------------------------------------------------


def group_name(sweep_dir: str | os.PathLike | None, explicit: str | None = None) -> str | None:
    """The W&B group of a job: ``explicit`` (the user's ``logger.group``) when given and not empty, else the name of
    the sweep (or run) folder, never its local path.

    The name is the folder's last component (``multirun/ablation`` -> ``ablation``); Hydra's default dated layout
    ``<YYYY-MM-DD>/<HH-MM-SS>`` gives ``<YYYY-MM-DD>_<HH-MM-SS>``, since the time alone repeats every day.
    ``None`` when neither is given (W&B then groups nothing)."""
    if explicit is not None and str(explicit).strip():
        return str(explicit).strip()
    if sweep_dir is None or not str(sweep_dir).strip():
        return None
    path = Path(str(sweep_dir).rstrip("/\\"))
    name, parent = path.name, path.parent.name
    if _TIME.fullmatch(name) and _DATE.fullmatch(parent):
        return f"{parent}_{name}"
    return name or None


def run_id_for(out: str | os.PathLike, config_hash: str) -> str:
    """The W&B run id of the job in folder ``out`` with this config hash: 16 hex digits, the same for every rerun of
    that job (so that the run is resumed and replaced), different for another folder or another configuration."""
    key = f"{Path(out).resolve()}\0{config_hash}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


# -- views of the table ------------------------------------------------------------------------------------------


def typed_table(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` that ``wandb.Table`` logs with its types: numeric and boolean columns stay as they are
    (missing numbers stay NaN); string columns become ``object`` with ``None`` for a missing value; an ``object``
    column whose values are all numbers becomes numeric; any other column (mixed types, dates, categories) becomes
    strings, ``None`` where missing. Column names become strings and the index is dropped."""
    out = df.reset_index(drop=True).copy()
    out.columns = [str(c) for c in out.columns]
    for col in out.columns:
        out[col] = _typed_column(out[col])
    return out


def _typed_column(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s.dtype) and not s.isna().any():
        return s.astype(bool)
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        if isinstance(s.dtype, pd.api.extensions.ExtensionDtype):  # nullable Int64 / Float64: NaN for NA
            return s.astype("float64") if s.isna().any() else s.astype(s.dtype.numpy_dtype)
        return s
    missing = s.isna().to_numpy()
    values = s[~missing].tolist()
    cells = s.astype(object).tolist()
    if values and all(isinstance(v, Number) and not isinstance(v, bool | np.bool_) for v in values):
        return pd.to_numeric(pd.Series([np.nan if m else v for v, m in zip(cells, missing, strict=True)],
                                       index=s.index, dtype=object))
    if values and (all(isinstance(v, str) for v in values) or all(isinstance(v, bool | np.bool_) for v in values)):
        return pd.Series([None if m else v for v, m in zip(cells, missing, strict=True)], index=s.index, dtype=object)
    return pd.Series([None if m else str(v) for v, m in zip(cells, missing, strict=True)], index=s.index,
                     dtype=object)


def job_summary(
    table: pd.DataFrame,
    info: Mapping[str, Any] | None = None,
    *,
    board: pd.DataFrame | None = None,
    **leaderboard_kwargs: Any,
) -> dict[str, float | int | str]:
    """The scalar summary of one job, for W&B's runs table: flat keys, Python ``int``/``float``/``str`` values,
    no NaN (a value that is not defined is left out, and so is a verdict of a test that was not run, ``N/A``).

    ``info``: what the job knows besides the table (``test_acc``, ``train_acc``, ``model``, ``dataset``).
    ``board``: the job's leaderboard (:func:`bench.reporting.leaderboard.build_leaderboard`) when already built,
    else it is built here from ``table`` (``leaderboard_kwargs`` are its settings; the randomization score defaults
    to the registry's when the table has it, else to the first one the table has). The verdicts are the board's
    (and so :mod:`bench.reporting.aggregate`'s), never decided here.

    Keys (``M`` is the method, ``<model>/<method>`` when the board has several models):

    - ``acc/test``, ``acc/train``; ``model``, ``dataset``
    - ``n/rows``, ``n/samples`` (distinct sample indices), ``n/seeds``, ``n/methods``
    - ``passed/M``, ``tests/M`` (ints: verdicts passed / run), ``passed/total``, ``tests/total``
    - ``verdict/M/invariance``, ``verdict/M/randomization`` (the overall verdicts), ``verdict/M/inv/<shift>``,
      ``verdict/M/rand/<mode>`` (strings)
    - ``invariance/M/<shift>/<score>`` (mean SSIM, or ``spearman`` where SSIM does not apply),
      ``invariance/M/<shift>/signed`` and ``.../max_rel_diff_q95`` (:func:`~bench.reporting.aggregate.
      invariance_verdicts`)
    - ``randomization/M/<mode>/<metric>/<top|last|repeat|auc>``, ``.../drop`` and ``.../drop_lcb`` (the paired drop
      below the repeat control and its 95% lower bound, :func:`~bench.reporting.aggregate.randomization_verdicts`)
    """
    info = dict(info or {})
    out: dict[str, float | int | str] = {}
    for key, name in (("test_acc", "acc/test"), ("train_acc", "acc/train")):
        _put(out, name, info.get(key))
    for key in ("model", "dataset"):
        value = info.get(key)
        if value is None and key in table.columns and table[key].nunique() == 1:
            value = table[key].iloc[0]
        if value is not None:
            out[key] = str(value)
    out["n/rows"] = len(table)
    if not len(table):
        return out
    out["n/samples"] = int(table["sample"].nunique())
    out["n/seeds"] = int(table["seed"].nunique())
    out["n/methods"] = int(table["method"].nunique())
    if board is None:
        board = leaderboard_of(table, **leaderboard_kwargs)
    if board is None or not len(board):
        return out
    several = board["model"].nunique() > 1
    labels = [f"{m}/{k}" if several else str(k) for m, k in zip(board["model"], board["method"], strict=True)]
    for label, (_, row) in zip(labels, board.iterrows(), strict=True):
        out[f"passed/{label}"] = int(row["passed"])
        out[f"tests/{label}"] = int(row["tests"])
        for test in ("invariance", "randomization"):
            _put(out, f"verdict/{label}/{test}", row.get(test))
        for col, value in row.items():
            key = _board_key(str(col), label)
            if key is not None:
                _put(out, key, value)
    out["passed/total"] = int(board["passed"].sum())
    out["tests/total"] = int(board["tests"].sum())
    _aggregate_extras(out, table, board, several)
    return out


def _put(out: dict, key: str, value: Any) -> None:
    """Store a summary value as a plain Python scalar; skip None, NaN and ``N/A``."""
    if value is None or (isinstance(value, str) and value == _NA):
        return
    if isinstance(value, bool | np.bool_):
        out[key] = int(value)
    elif isinstance(value, int | np.integer):
        out[key] = int(value)
    elif isinstance(value, float | np.floating):
        if math.isfinite(float(value)):
            out[key] = float(value)
    elif isinstance(value, str):
        out[key] = value


def _board_key(col: str, label: str) -> str | None:
    """The summary key of a leaderboard cell (``inv/S/ssim`` -> ``invariance/M/S/ssim``, ``inv/S/verdict`` ->
    ``verdict/M/inv/S``, ``rand/M/K/last`` -> ``randomization/M/mode/K/last``); None for intervals, ranks and the
    columns handled elsewhere."""
    if col.endswith(("_lo", "_hi")):
        return None
    parts = col.split("/")
    if parts[0] == "inv" and len(parts) >= 3:
        shift = "/".join(parts[1:-1])
        return f"verdict/{label}/inv/{shift}" if parts[-1] == "verdict" else f"invariance/{label}/{shift}/{parts[-1]}"
    if parts[0] == "rand" and len(parts) >= 3:
        if parts[-1] == "verdict":
            return f"verdict/{label}/rand/{'/'.join(parts[1:-1])}"
        return f"randomization/{label}/{'/'.join(parts[1:])}"
    return None


def leaderboard_of(table: pd.DataFrame, **kwargs: Any) -> pd.DataFrame | None:
    """:func:`~bench.reporting.leaderboard.build_leaderboard` of ``table`` (``kwargs``: its settings); when
    ``randomization_metric`` is not given and the table lacks the registry's verdict score, the first randomization
    score it has. ``None`` (and a warning) when the board cannot be built."""
    from bench.core.scores import RANDOMIZATION_SCORE
    from bench.reporting.aggregate import RANDOMIZATION
    from bench.reporting.leaderboard import build_leaderboard

    if "randomization_metric" not in kwargs:
        present = list(dict.fromkeys(table.loc[table["experiment"] == RANDOMIZATION, "metric"]))
        if present and RANDOMIZATION_SCORE not in present:
            kwargs["randomization_metric"] = present[0]
    try:
        return build_leaderboard(table, **kwargs)
    except ValueError as err:
        log.warning("no leaderboard for the W&B summary: %s", err)
        return None


def _aggregate_extras(out: dict, table: pd.DataFrame, board: pd.DataFrame, several: bool) -> None:
    """The numbers behind the verdicts that the board does not show: the signed SSIM and the exactness quantile of
    each shift, the paired drop and its lower bound of each randomization mode. Only for board rows whose model
    label is the table's model name (a job's own table; sweeps' relabelled rows are left to the board)."""
    from bench.reporting.aggregate import INVARIANCE, RANDOMIZATION, invariance_verdicts, randomization_verdicts

    settings = dict(board.attrs.get("settings", {}))
    known = set(zip(board["model"], board["method"], strict=True))

    def label(model: str, method: str) -> str | None:
        if (model, method) not in known:
            return None
        return f"{model}/{method}" if several else str(method)

    inv = table[table["experiment"] == INVARIANCE]
    if len(inv):
        v = invariance_verdicts(inv, settings.get("tolerance"), settings.get("ssim_threshold"))
        for r in v.itertuples(index=False):
            name = label(r.model, r.method)
            if name is not None:
                _put(out, f"invariance/{name}/{r.condition}/signed", r.signed)
                _put(out, f"invariance/{name}/{r.condition}/max_rel_diff_q95", r.max_rel_diff_q95)
    metric = settings.get("randomization_metric")
    rand = table[(table["experiment"] == RANDOMIZATION) & (table["metric"] == metric)]
    if len(rand) and metric is not None:
        v = randomization_verdicts(rand, metric, min_drop=settings.get("min_drop"))
        for r in v.itertuples(index=False):
            name = label(r.model, r.method)
            if name is not None:
                _put(out, f"randomization/{name}/{r.condition}/{metric}/drop", r.drop)
                _put(out, f"randomization/{name}/{r.condition}/{metric}/drop_lcb", r.drop_lcb)


# -- the run ------------------------------------------------------------------------------------------------------


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
    summary: Mapping[str, float | int | str] | None = None,
    info: Mapping[str, Any] | None = None,
    run_id: str | None = None,
    config_hash: str | None = None,
    init_timeout: float = INIT_TIMEOUT,
) -> str | None:
    """Log one job to W&B as run ``run_id`` under ``<out>/wandb``; returns ``None`` when it was logged as asked (or
    ``mode="disabled"``), else a message: the error, or, after an online start that failed, where the offline run
    that replaced it is kept for ``wandb sync``. Never raises for a W&B failure; never lets W&B prompt for a
    login; leaves the environment as it found it (:data:`_CALL_ENV` is set for the call only).

    ``run_id``: default :func:`run_id_for(out, config_hash) <run_id_for>` (``config_hash``: default the hash of
    ``config``). The run is resumed (``resume="allow"``); after it is finished, older local run folders of the same
    id under ``<out>/wandb`` are removed, so a rerun leaves one folder. ``group``: pass :func:`group_name`'s.
    The summary is :func:`job_summary` of ``table`` and ``info`` (with ``leaderboard`` as its board), updated by
    ``summary``. ``init_timeout``: seconds each ``wandb.init`` may take.

    The offline fallback reuses the run id; W&B's service keeps the id of a failed start, so when this call started
    the service it stops it first. When W&B was already running in the process before the call (a run of the
    caller's own), the fallback may fail with "run ID ... is in use": the message then says so.
    """
    if mode == "disabled":
        return None
    if mode not in ("offline", "online"):
        return f"unknown logger mode {mode!r}; accepted: offline, online, disabled"
    out = Path(out)
    if run_id is None:
        from bench.core.results import config_hash as hash_config

        run_id = run_id_for(out, config_hash or hash_config(dict(config)))
    try:
        scalars = {**job_summary(table, info, board=leaderboard), **dict(summary or {})}
    except Exception as err:  # noqa: BLE001  (a view: log the run without it)
        log.warning("no W&B summary: %s: %s", type(err).__name__, err)
        scalars = dict(summary or {})
    service_before = os.environ.get(_SERVICE_ENV)
    try:
        import wandb
    except Exception as err:  # noqa: BLE001  (a broken install: the results are on disk)
        return f"W&B logging ({mode}) failed: {type(err).__name__}: {err}"
    init = dict(dir=str(out), project=project, entity=entity, group=group, name=name, tags=list(tags),
                config=dict(config), id=run_id, resume="allow", reinit="create_new")
    note = None
    try:
        with _call_environment(out / "wandb"):
            try:
                out.mkdir(parents=True, exist_ok=True)  # W&B looks for a git repository from it: it must exist
                try:
                    run = wandb.init(mode=mode, settings=_settings(wandb, init_timeout), **init)
                    if mode == "online" and (run.offline or run.disabled):  # a login answered "offline", timed out
                        run.finish()
                        raise RuntimeError("W&B did not start an online run (login declined or timed out)")
                except Exception as err:  # noqa: BLE001
                    if mode != "online":
                        raise
                    # no key: W&B raises at once (it may not prompt here); no network: after init_timeout.
                    # The failed start still holds the run id in W&B's service: a service this call started is
                    # stopped (the offline run starts a fresh one); a service that was running before is left alone
                    note = " ".join(f"{type(err).__name__}: {err}".split())  # one line
                    log.debug("W&B online start failed (%s); logging offline", note)
                    _leave_service_as_found(wandb, service_before)
                    run = wandb.init(mode="offline", settings=_settings(wandb, init_timeout), **init)
                folder = Path(run.dir).parent
                os.environ[_DATA_ENV] = str(folder / "staging")  # the run's staged files: in its own folder
                try:
                    _log_views(wandb, run, table, leaderboard, figures, scalars, Path(out))
                finally:
                    run.finish()
                _remove_older_runs(out / "wandb", run_id, keep=folder)
            finally:
                _leave_service_as_found(wandb, service_before)
    except Exception as err:  # noqa: BLE001  (the results are on disk; report and go on)
        return f"W&B logging ({mode}) failed: {type(err).__name__}: {err}"
    if note is not None:
        return (f"W&B online logging failed ({note}); the run was logged offline to {folder}: upload it with "
                f"`wandb sync {folder}`")
    return None


@contextlib.contextmanager
def _call_environment(wandb_dir: Path) -> Iterator[None]:
    """:data:`_CALL_ENV` in ``os.environ`` (``{wandb}`` = ``wandb_dir``, made absolute) for the duration of the
    block; each variable is restored afterwards (or removed, when it was not set), whatever W&B did to it."""
    root = str(Path(wandb_dir).resolve())
    saved = {key: os.environ.get(key) for key in _CALL_ENV}
    try:
        os.environ.update({key: value.format(wandb=root) for key, value in _CALL_ENV.items()})
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _settings(wandb: Any, init_timeout: float) -> Any:
    # silent/console: no banner and no console capture in the job's log; the timeouts bound a start without network
    return wandb.Settings(silent=True, console="off", init_timeout=float(init_timeout),
                          login_timeout=float(init_timeout))


#: the columns of a results cell (one mean per cell when the rows exceed W&B's table limit)
CELL_COLUMNS = ("experiment", "model", "dataset", "method", "condition", "layer", "metric", "seed", "config_hash")


def _log_views(wandb: Any, run: Any, table: pd.DataFrame, leaderboard: pd.DataFrame | None,
               figures: Sequence[str | os.PathLike], summary: Mapping[str, Any], out: Path | None = None) -> None:
    if len(table) <= wandb.Table.MAX_ROWS:
        run.log({"results": wandb.Table(dataframe=typed_table(table))})
    else:  # W&B keeps only the first MAX_ROWS rows of a table: log the cells' means and the whole file
        keys = [c for c in CELL_COLUMNS if c in table.columns]
        cells = table.groupby(keys, dropna=False, sort=False).score.agg(mean="mean", n="count").reset_index()
        run.log({"results_mean": wandb.Table(dataframe=typed_table(cells))})
        path = None if out is None else Path(out) / "results.parquet"
        if path is not None and path.is_file():
            artifact = wandb.Artifact(f"results-{run.id}", type="results")
            artifact.add_file(str(path))
            run.log_artifact(artifact)
        log.info("%d result rows exceed W&B's table limit (%d): logged their %d cell means (results_mean) and "
                 "results.parquet as an artifact", len(table), wandb.Table.MAX_ROWS, len(cells))
    if leaderboard is not None and len(leaderboard):
        run.log({"leaderboard": wandb.Table(dataframe=typed_table(leaderboard))})
    for fig in figures:
        run.log({f"figures/{Path(fig).stem}": wandb.Image(str(fig))})
    for key, value in summary.items():
        run.summary[key] = value


def _remove_older_runs(root: Path, run_id: str, keep: Path) -> None:
    """Remove the local run folders of ``run_id`` under ``root`` other than ``keep``. W&B names them
    ``offline-run-<time>-<id>`` / ``run-<time>-<id>`` (``-<n>`` appended when one of that second exists) and makes a
    new one on every resume."""
    keep = keep.resolve()
    pattern = re.compile(rf"(offline-)?run-\d{{8}}_\d{{6}}-{re.escape(run_id)}(-\d+)?")
    for path in root.glob(f"*run-*-{run_id}*"):
        if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink() and path.resolve() != keep:
            try:
                shutil.rmtree(path)
            except OSError as err:
                log.warning("could not remove the older W&B run folder %s: %s", path, err)


def _leave_service_as_found(wandb: Any, before: str | None) -> None:
    """When this call started W&B's service process (its token was not in the environment before and is now), shut
    it down again: that also removes the token W&B put in ``os.environ``."""
    if before is not None or os.environ.get(_SERVICE_ENV) is None:
        return
    try:
        wandb.teardown()
    except (Exception, SystemExit) as err:  # noqa: BLE001  (teardown may sys.exit on a failed service)
        log.warning("W&B teardown: %s: %s", type(err).__name__, err)
        os.environ.pop(_SERVICE_ENV, None)  # the token of a service that failed to stop: no one may connect to it
