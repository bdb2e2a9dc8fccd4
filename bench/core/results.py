"""The long results table: the contract that every view (leaderboard, figures, W&B, checks) reads.

One row per score: ``experiment, model, dataset, method, condition, mode, layer, metric, sample, data_index, label,
target, score, seed, config_hash``. ``condition`` is the test's name as configured (the shift's or the
randomization's config entry: any name); ``mode`` is what the test did, recorded by the experiment and read by the
verdicts (never the name): the randomization mode (``cascading``, ``bottom_up``, ``independent``, ``labels``, with
``+smooth`` for the smooth MPRT; the efficient MPRT is ``bottom_up`` scored with ``entropy_rise``), ``"-"`` for
input invariance; ``layer`` is the randomization stage (``"-"`` where there is none), or one of the controls of a
randomization run (``control:repeat``, ``control:input``, ``control:edges``, ``control:other``,
``control:retrained``, and the reference ``control:gradient/<layer>``; :func:`is_control`). ``metric`` names a
registered score (:mod:`bench.core.scores`), which fixes the post-processing that produced it.

Per-sample provenance (:data:`PROVENANCE`): ``sample`` numbers the job's samples (0 .. ``run.n_samples - 1``);
``data_index`` is the sample's index in the data set's test split (``data.x_test[data_index]``: the job explains
the first ``run.n_samples`` of them, so it equals ``sample`` in every row the harness writes today, and keeps its
meaning should samples ever be chosen otherwise); ``label`` is its true class (``data.y_test[data_index]``);
``target`` the class its maps explain (the trained model's prediction, at every stage and on both twins). A table
written before these columns existed reads with :data:`MISSING` (-1) in them (:func:`read_table`). Written as
Parquet (temporary file, then rename) beside the job's config; a sweep folder is read back by globbing
``**/results.parquet``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench._io import atomic_write

__all__ = ["COLUMNS", "PROVENANCE", "MISSING", "RESULTS_FILE", "CONTROL_PREFIX", "CONTROL_REPEAT", "CONTROL_INPUT",
           "CONTROL_EDGES", "CONTROL_RETRAINED", "CONTROL_OTHER", "CONTROL_GRADIENT",
           "is_control", "provenance", "score_rows", "score_table", "concat", "write_table", "read_table",
           "read_tables", "config_hash"]

COLUMNS = ["experiment", "model", "dataset", "method", "condition", "mode", "layer", "metric", "sample", "data_index",
           "label", "target", "score", "seed", "config_hash"]
#: the per-sample provenance columns (module docstring), int64; :data:`MISSING` where not recorded
PROVENANCE = ("data_index", "label", "target")
#: the provenance of a row that does not record it (a table written before the columns existed)
MISSING = -1
RESULTS_FILE = "results.parquet"

#: ``layer`` values of the control rows of a randomization run (``condition`` = the run's mode); every control is
#: scored exactly like the test stages, against the same trained-model maps
CONTROL_PREFIX = "control:"
CONTROL_REPEAT = "control:repeat"  # a second map of the unchanged trained model (another noise seed): the ceiling
CONTROL_INPUT = "control:input"  # the input itself as a map: depends on nothing learned
CONTROL_EDGES = "control:edges"  # the Sobel edge magnitude of the input: depends on nothing learned
CONTROL_RETRAINED = "control:retrained"  # the label test's control: true labels, the permuted model's recipe
#: the reference map of another sample (the next one of the batch): how similar two maps of this method and model are
#: when they explain different inputs, the floor of "unrelated"
CONTROL_OTHER = "control:other"
#: ``control:gradient/<layer>``: the model's own input gradient at that stage or control (``<layer>`` a stage name or
#: one of the controls above), scored exactly like the method's rows: the reference of the randomization verdict (how
#: much the model itself changed). Copied into every method's rows, so that each method's rows are self-contained
CONTROL_GRADIENT = "control:gradient"


def is_control(layer: str) -> bool:
    """Whether a ``layer`` value names a control row rather than a randomization stage."""
    return str(layer).startswith(CONTROL_PREFIX)


_DTYPES = {"sample": "int64", "data_index": "int64", "label": "int64", "target": "int64", "score": "float64",
           "seed": "int64"}
#: the columns :func:`score_table` fills per sample (the others come from the entry or the constants)
_PER_SAMPLE = ("metric", "sample", "score", *PROVENANCE)


_DEFAULTS = {"mode": "-", "layer": "-", "seed": 0, "config_hash": ""}
#: the randomization modes a table written before the ``mode`` column existed can name in ``condition``
_LEGACY_MODES = ("cascading", "bottom_up", "independent", "labels")


def provenance(labels: Any, target: Any) -> dict[str, np.ndarray]:
    """The provenance columns (:data:`PROVENANCE`) of the first ``len(target)`` samples of a test split whose labels
    are ``labels`` (tensor or array ``[N]``), explained for the classes ``target`` (``[n]``): ``data_index``
    ``0..n-1``, ``label`` and ``target``, int64 vectors for :func:`score_table`. Raises ``ValueError`` when the split
    holds fewer labels than ``target``."""
    target = _ints(target)
    labels = _ints(labels)
    if len(labels) < len(target):
        raise ValueError(f"provenance: {len(target)} explained samples but only {len(labels)} labels")
    return {"data_index": np.arange(len(target), dtype=np.int64), "label": labels[: len(target)].copy(),
            "target": target}


def _numpy(values: Any) -> np.ndarray:
    """A float64 vector from a tensor (any device; torch is not imported here) or an array-like."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().double().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def score_table(
    entries: Iterable[tuple[Mapping[str, Any], Mapping[str, Any]]], *, sample_offset: int = 0,
    provenance: Mapping[str, Any] | None = None, **const: Any
) -> pd.DataFrame:
    """One frame for many entries ``(columns, {metric: Tensor[B] or array})``: ``columns`` (per entry) and ``const``
    (for all) give the contract's other columns (``mode`` and ``layer`` default to ``"-"``, ``seed`` to 0,
    ``config_hash`` to ``""``); one row per metric and sample, NaN kept. Built column-wise, with the contract's
    types.

    ``provenance``: ``{column: int vector}`` for the columns of :data:`PROVENANCE`, indexed by the sample's position
    (element ``i`` belongs to sample ``sample_offset + i``; each vector at least as long as the longest score
    vector); a column left out is :data:`MISSING`. Raises ``ValueError`` naming a missing column, an unknown
    provenance column or a provenance vector shorter than the scores."""
    cols: dict[str, list] = {c: [] for c in COLUMNS}
    given = {k: _ints(v) for k, v in (provenance or {}).items()}
    unknown = sorted(set(given) - set(PROVENANCE))
    if unknown:
        raise ValueError(f"score_table: unknown provenance column(s) {unknown}; accepted: {', '.join(PROVENANCE)}")
    for keys, scores in entries:
        fixed = {**_DEFAULTS, **const, **keys}
        missing = [c for c in COLUMNS if c not in fixed and c not in _PER_SAMPLE]
        if missing:
            raise ValueError(f"score_table: no value for the column(s) {missing}; the contract is {COLUMNS}")
        for metric, values in scores.items():
            v = _numpy(values)
            cols["metric"].append(np.full(len(v), str(metric), dtype=object))
            cols["sample"].append(np.arange(sample_offset, sample_offset + len(v), dtype=np.int64))
            cols["score"].append(v)
            for col in PROVENANCE:
                if col not in given:
                    cols[col].append(np.full(len(v), MISSING, dtype=np.int64))
                elif len(given[col]) < len(v):
                    raise ValueError(f"score_table: the provenance column {col!r} holds {len(given[col])} values "
                                     f"for {len(v)} samples")
                else:
                    cols[col].append(given[col][: len(v)])
            for key, value in fixed.items():
                if key in cols and key not in _PER_SAMPLE:
                    cols[key].append(np.full(len(v), int(value) if key == "seed" else str(value),
                                             dtype=np.int64 if key == "seed" else object))
    if not cols["score"]:
        return concat([])
    return pd.DataFrame({c: np.concatenate(v) for c, v in cols.items()})


def _ints(values: Any) -> np.ndarray:
    """An int64 vector from a tensor (any device) or an array-like."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.int64).reshape(-1)


def score_rows(scores: Mapping[str, Any], *, sample_offset: int = 0, **columns: Any) -> pd.DataFrame:
    """Rows for one entry ``{metric: Tensor[B]}`` (:func:`score_table` with a single entry; ``columns``: the
    contract's other columns)."""
    return score_table([({}, scores)], sample_offset=sample_offset, **columns)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    df = df.astype(_DTYPES)
    for col in COLUMNS:
        if col not in _DTYPES:
            df[col] = df[col].astype(str)
    return df


def concat(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate result frames, keeping the contract's columns and types (an empty input gives no rows)."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return _typed(pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS}).astype({k: "float64" for k in
                                                                                           _DTYPES}))
    return _typed(pd.concat(frames, ignore_index=True)[COLUMNS])


def write_table(df: pd.DataFrame, folder: str | os.PathLike, name: str = RESULTS_FILE) -> Path:
    """Write ``df`` to ``folder/name`` atomically (a temporary file renamed over the target)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"results table lacks the columns {missing}; the contract is {COLUMNS}")
    return atomic_write(Path(folder) / name, lambda tmp: _typed(df[COLUMNS]).to_parquet(tmp, index=False))


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """One results file, with the contract's columns and types (a file written before the ``mode`` column existed
    gets it from ``condition`` where that names a mode; one written before the provenance columns existed gets
    :data:`MISSING` in them). Raises ``ValueError`` naming the file when it cannot be read as Parquet or lacks
    columns of the contract."""
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
        raise ValueError(f"{path} is not a readable results table ({type(err).__name__}: {err})") from err
    if "mode" not in df.columns and "condition" in df.columns:
        df["mode"] = _legacy_mode(df)
    for col in PROVENANCE:
        if col not in df.columns:
            df[col] = MISSING
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path} lacks the results columns {missing}; the contract is {COLUMNS}")
    return _typed(df[COLUMNS])


def _legacy_mode(df: pd.DataFrame) -> list[str]:
    """The ``mode`` of a table written before the column existed: its randomization rows named the mode in
    ``condition`` (``cascading``, ``cascading+smooth`` ...); any other name, and every invariance row, gets ``"-"``
    (a verdict of such rows says it cannot tell the mode)."""
    out = []
    for experiment, condition in zip(df.get("experiment", ["-"] * len(df)), df["condition"], strict=True):
        base = str(condition).split("+")[0]
        out.append(str(condition) if experiment == "model_randomization" and base in _LEGACY_MODES else "-")
    return out


def read_tables(folders: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Every ``results.parquet`` under the given job or sweep folders, concatenated (a ``job`` column names the file's
    folder)."""
    frames = []
    for folder in folders:
        folder = Path(folder)
        paths = [folder] if folder.is_file() else sorted(folder.rglob(RESULTS_FILE))
        for path in paths:
            df = read_table(path)
            df["job"] = str(path.parent)
            frames.append(df)
    if not frames:
        raise FileNotFoundError(f"no {RESULTS_FILE} under {', '.join(map(str, folders))}")
    return pd.concat(frames, ignore_index=True)


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a plain config dict (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
