"""``salbench-rescore JOB --metric NAME [--force] [--plugin MODULE ...]``: a new score from a job's saved maps.

A job run with ``run.save_maps=true`` keeps every map it computed (``JOB/maps/<job hash>/*.safetensors``,
:mod:`bench.core.maps`). This command scores every pair of maps the job scored with the registered score ``NAME``
(:mod:`bench.core.scores`; ``--plugin`` imports a module that registers one, as ``metric.plugins`` does), through
the experiments' own code path (:func:`bench.core.maps.score_saved`: :func:`bench.core.scoring.score_maps` with the
score's post-processing; the experiment's table builder; the job's chunk bookkeeping, :func:`bench.cli.job.chunk_rows`)
and without any model. The rows are appended to ``JOB/results.parquet`` with the table's columns, the new metric
name and the config hash of the rows of the same (experiment, method, condition); the file is rewritten atomically
and ``job.json`` records its new rows and SHA-256 (and the rescoring, under ``rescored``) as it replaces it, under
the job folder's lock. A score is computed for every pair the job scored: one the job computed for some pairs only
(``max_rel_diff``, ``ssim_minmax_signed``: the invariance test's) gains rows for the others too (``--force``).
Figures, leaderboards and W&B runs written by the job are not redrawn.

Exact: with ``run.maps_dtype=float32`` (randomization tests) or ``float64`` (the invariance test too) the rescored
scores equal what the job computes, on the same device; ``float16`` maps give scores within about 1e-4 of the
job's (HOG: 1e-2).

Refused (exit 2, nothing written): a folder that is not a job or holds no maps of its table (rerun the job with
``run.save_maps=true``), maps files missing, an unknown score (the registered ones are listed), a score already in
the table (``--force`` replaces its rows, never by fewer), a score that does not apply to the maps (SSIM or HOG of
vectors), a folder in use by a running job, a write that fails (a full disk). Exit 0 when the rows are written.
Loads no model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["main", "rescore", "RescoreError"]

log = logging.getLogger(__name__)

_KEY = ["experiment", "method", "condition"]


class RescoreError(ValueError):
    """A job folder, a score or a table that cannot be rescored: the message names it and what to do."""


def _record(job: Path) -> dict[str, Any]:
    from bench.cli.job import JOB_FILE

    try:
        record = json.loads((job / JOB_FILE).read_text())
    except (OSError, ValueError) as err:
        raise RescoreError(f"{job} is not a job folder: its {JOB_FILE} cannot be read ({type(err).__name__}: {err})"
                           ) from None
    if not isinstance(record, dict):
        raise RescoreError(f"{job / JOB_FILE} is not a job record (a JSON object)")
    return record


def _owner(job: Path, record: dict) -> str:
    """The config hash whose table ``results.parquet`` holds (as the job's record says)."""
    owner = record.get("results_config_hash")
    if not owner and record.get("status") == "ok":  # a record written before that field existed
        owner = record.get("config_hash")
    if not owner or owner == "unknown":
        raise RescoreError(f"{job}/job.json does not say which run wrote its results.parquet; rerun the job with "
                           "run.save_maps=true")
    return str(owner)


def _map_files(job: Path, record: dict, owner: str) -> list[Path]:
    """The maps files of the table's job: those ``job.json`` lists, all present; else every file in its folder."""
    from bench.cli.job import MAPS_SUFFIX
    from bench.core.maps import maps_folder

    folder = maps_folder(job, owner)
    if not folder.is_dir():
        raise RescoreError(f"{job} holds no saved maps of its results (no {folder.relative_to(job)}/): rerun the "
                           "job with run.save_maps=true (run.maps_dtype=float32 or float64 for exact scores)")
    listed = record.get("maps") if isinstance(record.get("maps"), dict) else None
    if listed and listed.get("folder") == str(folder.relative_to(job)):
        files = [folder / name for name in listed.get("files", [])]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise RescoreError(f"{len(missing)} of the {len(files)} maps files of {job} are missing from {folder} "
                               f"({', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}): rerun the job with "
                               "run.save_maps=true to write them")
    else:
        files = sorted(folder.glob(f"*{MAPS_SUFFIX}"))
    if not files:
        raise RescoreError(f"{folder} holds no maps files: rerun the job with run.save_maps=true")
    return files


def _check_metric(metric: str, plugins: Sequence[str]) -> None:
    from bench.core.scores import check_names, load_plugins

    try:
        load_plugins(list(plugins), key="--plugin")
        check_names([metric], key="--metric")
    except ValueError as err:
        raise RescoreError(str(err)) from None


def rows_from_maps(path: str | Path, metric: str) -> pd.DataFrame:
    """The rows of the score ``metric`` computed from one maps file, as the job stores them (the file's chunk
    offsets and test name applied; ``config_hash`` empty). Raises ``ValueError`` for a file of an unknown
    experiment, a damaged file or an unknown score."""
    from bench.cli.job import chunk_rows
    from bench.core.maps import read_maps, score_saved
    from bench.experiments.invariance import EXPERIMENT as INVARIANCE
    from bench.experiments.invariance import invariance_table
    from bench.experiments.model_randomization import EXPERIMENT as RANDOMIZATION
    from bench.experiments.model_randomization import randomization_table

    saved = read_maps(path)
    builders = {INVARIANCE: invariance_table, RANDOMIZATION: randomization_table}
    experiment = saved.meta.get("experiment")
    if experiment not in builders:
        raise ValueError(f"{path}: maps of an unknown experiment {experiment!r}; accepted: {', '.join(builders)}")
    start = int(saved.meta.get("start", 0))
    where = saved.provenance()
    provenance = {"data_index": where["data_index"] - start, "label": where["label"], "target": where["target"]}
    table = builders[experiment](score_saved(saved, [metric]), provenance=provenance, **saved.meta["table"])
    return chunk_rows(table, saved.meta.get("test", ""), saved.meta.get("condition", ""), start)


def rescore(job: str | Path, metric: str, *, force: bool = False, plugins: Sequence[str] = ()) -> dict[str, Any]:
    """Append the rows of score ``metric`` computed from the saved maps of ``job`` to its ``results.parquet``
    (module docstring). Returns ``{"metric", "rows", "replaced", "files", "dtype", "results"}``.

    Raises :class:`RescoreError` for what the module docstring lists as refused,
    :class:`bench.cli.lock.LockHeld` when a run holds the folder, :class:`bench._io.DiskFullError` when the write
    fails for lack of space (the old table is left as it was)."""
    from bench.cli.job import ResultsWouldShrink, _replace_results
    from bench.cli.lock import JobLock
    from bench.core.results import RESULTS_FILE, concat, read_table

    job = Path(job)
    if not job.is_dir():
        raise RescoreError(f"{job} is not a folder; accepted: a job folder (holding job.json and results.parquet)")
    _check_metric(metric, plugins)
    record = _record(job)
    if not (job / RESULTS_FILE).is_file():
        raise RescoreError(f"{job} holds no {RESULTS_FILE}: the job did not finish; run it again first")
    owner = _owner(job, record)
    files = _map_files(job, record, owner)
    with JobLock(job):
        record = _record(job)  # as it is now that the folder is ours
        table = read_table(job / RESULTS_FILE)
        present = table["metric"] == metric
        if present.any() and not force:
            raise RescoreError(f"the score {metric!r} is already in {job / RESULTS_FILE} ({int(present.sum()):,} "
                               "rows); --force replaces them")
        try:
            new = concat([rows_from_maps(f, metric) for f in files])
        except ValueError as err:
            raise RescoreError(str(err)) from None
        if not len(new):
            raise RescoreError(f"the score {metric!r} does not apply to the maps of {job} (no rows: SSIM and HOG need "
                               "images)")
        new["config_hash"] = _hashes(table, new, job)
        if len(new) < int(present.sum()):
            raise RescoreError(f"the maps of {job} give {len(new):,} rows of {metric!r} where the table holds "
                               f"{int(present.sum()):,}: not replacing them with fewer")
        combined = concat([table[~present], new])
        entry = {"metric": metric, "rows": len(new), "replaced": int(present.sum()), "files": len(files),
                 "at": time.time()}
        record["rescored"] = [*record.get("rescored", []), entry]
        try:
            path = _replace_results(combined, job, owner, record, {})
        except ResultsWouldShrink as err:
            raise RescoreError(str(err)) from None
    dtype = (record.get("maps") or {}).get("dtype", "")
    log.info("rescored %s: %d rows appended to %s", metric, len(new), path)
    return {"metric": metric, "rows": len(new), "replaced": entry["replaced"], "files": len(files), "dtype": dtype,
            "results": str(path)}


def _hashes(table: pd.DataFrame, new: pd.DataFrame, job: Path) -> list[str]:
    """The config hash of each new row: that of the table's rows of its (experiment, method, condition)."""
    known = table.groupby(_KEY, sort=False)["config_hash"].unique()
    keys = list(zip(new.experiment, new.method, new.condition, strict=True))
    missing = sorted({k for k in keys if k not in known.index})
    if missing:
        raise RescoreError(f"{job}/results.parquet has no rows of {missing[:3]} whose maps were saved: its table and "
                           "its maps do not belong together; rerun the job with run.save_maps=true")
    several = {k: list(known[k]) for k in set(keys) if len(known[k]) != 1}
    if several:
        raise RescoreError(f"{job}/results.parquet gives several config hashes to {several}: not rescoring a table "
                           "that mixes configurations")
    return [known[k][0] for k in keys]


def main(argv: Sequence[str] | None = None) -> int:
    """``salbench-rescore JOB --metric NAME [--force] [--plugin MODULE ...]``; returns the exit status (0 the rows
    were written, 2 bad input: nothing written)."""
    from bench._io import DiskFullError
    from bench.cli.lock import LockHeld

    parser = argparse.ArgumentParser(prog="salbench-rescore", description=__doc__.split("\n\n")[0])
    parser.add_argument("job", help="a job folder whose job ran with run.save_maps=true")
    parser.add_argument("--metric", required=True, help="a registered score (bench.core.scores)")
    parser.add_argument("--force", action="store_true", help="replace the rows of a score already in the table")
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it registers scores; repeatable), as metric.plugins does")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        done = rescore(args.job, args.metric, force=args.force, plugins=args.plugin)
    except (RescoreError, LockHeld, DiskFullError) as err:
        print(f"salbench-rescore: error: {err}", file=sys.stderr)
        return 2
    what = f"replaced {done['replaced']:,} rows" if done["replaced"] else "appended"
    note = " (float16 maps: within about 1e-4 of the job's scores, HOG 1e-2)" if done["dtype"] == "float16" else ""
    print(f"{done['metric']}: {done['rows']:,} rows from {done['files']} maps file(s) {what} in {done['results']}"
          f"{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
