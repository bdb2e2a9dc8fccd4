"""Regression check: compare a run's leaderboard with a stored baseline (a leaderboard CSV).

``salbench-check RUN --baseline BASELINE.csv [--atol 0.05] [--update]``, where ``RUN`` is a sweep / job
folder (its leaderboard is built as ``salbench-leaderboard`` would) or a leaderboard CSV. Exit status:
0 when every numeric cell is within ``atol`` of the baseline and every verdict and row / column is the
same; 1 otherwise, after printing the cells that moved (with both values), the verdicts that flipped
and the rows / columns present on one side only; 2 on a usage error (e.g. no baseline file and no
``--update``). ``--update`` writes the current leaderboard to the baseline path (after printing what
changed) and exits 0.

Rows are matched on (model, method), columns by name. Numeric columns compare with ``|current - baseline|
<= atol`` (both missing counts as equal); text columns (the verdicts) must be equal. The derived counts
``passed`` / ``tests`` are not compared (their verdicts are). When ``RUN`` is a folder and ``--metric`` is
not given, the randomization metric is the baseline's (read from its ``rand/<mode>/<metric>/last``
column names).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.leaderboard import (
    COUNT_COLUMNS,
    DEFAULT_METRIC,
    KEY,
    add_build_options,
    build_kwargs,
    load_leaderboard,
    read_leaderboard_csv,
)

__all__ = ["compare", "CheckReport", "Cell", "baseline_metric", "main"]


@dataclass(frozen=True)
class Cell:
    """One cell that differs: its row key, column and both values."""

    model: str
    method: str
    column: str
    baseline: Any
    current: Any

    def describe(self, numeric: bool) -> str:
        where = f"{self.model} / {self.method} / {self.column}"
        if numeric:
            b, c = _num(self.baseline), _num(self.current)
            delta = f" (change {c - b:+.4g})" if not (math.isnan(b) or math.isnan(c)) else ""
            return f"{where}: baseline {_fmt(b)} -> current {_fmt(c)}{delta}"
        return f"{where}: baseline {self.baseline} -> current {self.current}"


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _fmt(v: float) -> str:
    return "missing" if math.isnan(v) else f"{v:.6g}"


@dataclass
class CheckReport:
    """What differs between a leaderboard and its baseline; ``ok`` when nothing does."""

    atol: float
    moved: list[Cell] = field(default_factory=list)
    flipped: list[Cell] = field(default_factory=list)
    missing_rows: list[tuple[str, str]] = field(default_factory=list)
    new_rows: list[tuple[str, str]] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    new_columns: list[str] = field(default_factory=list)
    compared_rows: int = 0
    compared_columns: int = 0

    @property
    def ok(self) -> bool:
        return not (self.moved or self.flipped or self.missing_rows or self.new_rows or self.missing_columns
                    or self.new_columns)

    def __str__(self) -> str:
        if self.ok:
            return (f"OK: the leaderboard matches the baseline within atol={self.atol:g} "
                    f"({self.compared_rows} rows x {self.compared_columns} columns compared)")
        lines = [f"FAILED: {len(self.moved)} cell(s) moved beyond atol={self.atol:g}, {len(self.flipped)} "
                 f"verdict(s) flipped ({self.compared_rows} rows x {self.compared_columns} columns compared)"]
        sections = [
            ("cells moved beyond the tolerance", [c.describe(True) for c in self.moved]),
            ("verdicts flipped", [c.describe(False) for c in self.flipped]),
            ("rows only in the baseline (missing from the run)", [" / ".join(r) for r in self.missing_rows]),
            ("rows only in the run (not in the baseline)", [" / ".join(r) for r in self.new_rows]),
            ("columns only in the baseline (missing from the run)", self.missing_columns),
            ("columns only in the run (not in the baseline)", self.new_columns),
        ]
        for title, items in sections:
            if items:
                lines += ["", f"{title}:"] + [f"  {item}" for item in items]
        return "\n".join(lines)


def _is_numeric(current: pd.Series, baseline: pd.Series) -> bool:
    def numeric(s: pd.Series) -> bool:
        return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)

    return numeric(current) and numeric(baseline)


def compare(current: pd.DataFrame, baseline: pd.DataFrame, *, atol: float = 0.05) -> CheckReport:
    """Compare two leaderboards (rows keyed by model and method): numeric cells that moved by more than
    ``atol``, text cells (verdicts) that differ, rows and columns present on one side only."""
    for name, df in (("current", current), ("baseline", baseline)):
        missing = [k for k in KEY if k not in df.columns]
        if missing:
            raise ValueError(f"the {name} leaderboard lacks the key columns {missing}")
        dup = df.duplicated(KEY)
        if dup.any():
            raise ValueError(f"the {name} leaderboard has repeated rows: {df.loc[dup, KEY].values.tolist()}")
    skip = set(KEY) | set(COUNT_COLUMNS)
    cur = current.assign(**{k: current[k].astype(str) for k in KEY}).set_index(KEY)
    base = baseline.assign(**{k: baseline[k].astype(str) for k in KEY}).set_index(KEY)
    report = CheckReport(atol=atol)
    report.missing_rows = [tuple(k) for k in base.index if k not in cur.index]
    report.new_rows = [tuple(k) for k in cur.index if k not in base.index]
    report.missing_columns = [c for c in base.columns if c not in cur.columns and c not in skip]
    report.new_columns = [c for c in cur.columns if c not in base.columns and c not in skip]
    rows = [k for k in base.index if k in cur.index]
    columns = [c for c in base.columns if c in cur.columns and c not in skip]
    report.compared_rows, report.compared_columns = len(rows), len(columns)
    for col in columns:
        numeric = _is_numeric(cur[col], base[col])
        for key in rows:
            b, c = base.at[key, col], cur.at[key, col]
            if numeric:
                fb, fc = float(b), float(c)
                if math.isnan(fb) and math.isnan(fc):
                    continue
                if math.isnan(fb) or math.isnan(fc) or abs(fc - fb) > atol:
                    report.moved.append(Cell(*key, col, fb, fc))
            elif _text(b) != _text(c):
                report.flipped.append(Cell(*key, col, _text(b), _text(c)))
    return report


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def baseline_metric(baseline: pd.DataFrame) -> str | None:
    """The randomization metric of a leaderboard, from its ``rand/<mode>/<metric>/last`` columns."""
    for col in baseline.columns:
        parts = col.split("/")
        if len(parts) >= 4 and parts[0] == "rand" and parts[-1] == "last":
            return parts[-2]
    return None


def _current(run: Path, metric: str, args: argparse.Namespace) -> pd.DataFrame:
    if run.is_file() and run.suffix == ".csv":
        return read_leaderboard_csv(run)
    lb = load_leaderboard([run], figures=False, **{**build_kwargs(args), "randomization_metric": metric})
    for r in lb.failed.itertuples():
        print(f"note: failed job {r.job}: {r.error}", file=sys.stderr)
    return lb.board


def main(argv: Sequence[str] | None = None) -> int:
    """``salbench-check RUN --baseline CSV [--atol 0.05] [--update]``; returns the exit status (0 equal,
    1 different, 2 usage error)."""
    parser = argparse.ArgumentParser(prog="salbench-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a sweep / job folder, or a leaderboard CSV")
    parser.add_argument("--baseline", required=True, help="the baseline leaderboard CSV")
    parser.add_argument("--atol", type=float, default=0.05, help="absolute tolerance of numeric cells (default 0.05)")
    parser.add_argument("--update", action="store_true", help="write the current leaderboard as the new baseline")
    add_build_options(parser, metric_default=None)
    args = parser.parse_args(argv)

    def error(message: str) -> int:
        print(f"salbench-check: error: {message}", file=sys.stderr)
        return 2

    run, baseline_path = Path(args.run), Path(args.baseline)
    if not run.exists():
        return error(f"{run} does not exist")
    baseline = read_leaderboard_csv(baseline_path) if baseline_path.is_file() else None
    if baseline is None and not args.update:
        return error(f"baseline file {baseline_path} does not exist; create it from this run with --update")
    metric = args.metric or (baseline_metric(baseline) if baseline is not None else None) or DEFAULT_METRIC
    try:
        current = _current(run, metric, args)
    except (FileNotFoundError, ValueError) as err:
        return error(str(err))

    if args.update:
        if baseline is not None:
            print(compare(current, baseline, atol=args.atol))
        baseline_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = baseline_path.with_name(f".{baseline_path.name}.tmp")
        current.to_csv(tmp, index=False)
        tmp.replace(baseline_path)
        print(f"baseline {'updated' if baseline is not None else 'written'}: {baseline_path} "
              f"({len(current)} rows)")
        return 0
    try:
        report = compare(current, baseline, atol=args.atol)
    except ValueError as err:
        return error(str(err))
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
