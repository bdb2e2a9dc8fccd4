"""Regression check: compare a leaderboard with a stored baseline (a leaderboard CSV): :func:`compare`.

The command ``salbench-check`` is :mod:`bench.cli.check`. Rows are matched on (model, method), columns by name.
A numeric cell that has a 95% interval in the current leaderboard (its ``<column>_lo`` / ``<column>_hi``) has moved
when the baseline's estimate lies outside that interval: run-to-run noise of the size the samples allow does not
fail a check, a real change does; the bounds themselves are not compared. Other numeric cells, and every cell when
``atol`` is given, compare with ``|current - baseline| <= atol`` (both missing counts as equal); text columns (the
verdicts) must be equal. The derived counts ``passed`` / ``tests`` are not compared (their verdicts are). When ``RUN``
is a folder and ``--metric`` is not given, the randomization metric is the baseline's (read from its
``rand/<mode>/<metric>/last`` column names).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.reporting.leaderboard import COUNT_COLUMNS, KEY

__all__ = ["compare", "CheckReport", "Cell", "baseline_metric", "DEFAULT_ATOL"]

#: the tolerance of numeric cells that have no interval (and of all cells with ``atol``)
DEFAULT_ATOL = 0.05
BOUND_SUFFIXES = ("_lo", "_hi")


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

    atol: float | None
    moved: list[Cell] = field(default_factory=list)
    flipped: list[Cell] = field(default_factory=list)
    missing_rows: list[tuple[str, str]] = field(default_factory=list)
    new_rows: list[tuple[str, str]] = field(default_factory=list)
    missing_columns: list[str] = field(default_factory=list)
    new_columns: list[str] = field(default_factory=list)
    #: baseline cells of numeric columns that are not numbers: a damaged baseline, not a regression
    malformed: list[Cell] = field(default_factory=list)
    compared_rows: int = 0
    compared_columns: int = 0

    @property
    def ok(self) -> bool:
        return not (self.moved or self.flipped or self.missing_rows or self.new_rows or self.missing_columns
                    or self.new_columns or self.malformed)

    @property
    def rule(self) -> str:
        if self.atol is None:
            return f"the current 95% intervals (atol={DEFAULT_ATOL:g} where a cell has none)"
        return f"atol={self.atol:g}"

    def __str__(self) -> str:
        if self.ok:
            return (f"OK: the leaderboard matches the baseline within {self.rule} "
                    f"({self.compared_rows} rows x {self.compared_columns} columns compared)")
        lines = [f"FAILED: {len(self.moved)} cell(s) moved beyond {self.rule}, {len(self.flipped)} "
                 f"verdict(s) flipped ({self.compared_rows} rows x {self.compared_columns} columns compared)"]
        if self.malformed:
            lines[0] += (f"; {len(self.malformed)} baseline cell(s) of numeric columns are not numbers (a damaged "
                         "baseline: fix the cells or rewrite it with --update)")
        sections = [
            ("baseline cells that are not numbers", [f"{c.model} / {c.method} / {c.column}: {c.baseline!r}"
                                                     for c in self.malformed]),
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


def _is_numeric(current: pd.Series) -> bool:
    """A column is numeric when the current leaderboard (built by this harness, never hand-edited) says so; the
    baseline's cells are read as numbers there (a text cell in a baseline column is damage, not a verdict)."""
    return pd.api.types.is_numeric_dtype(current) and not pd.api.types.is_bool_dtype(current)


def compare(current: pd.DataFrame, baseline: pd.DataFrame, *, atol: float | None = None) -> CheckReport:
    """Compare two leaderboards (rows keyed by model and method): numeric cells that moved (outside the current
    interval, or by more than ``atol`` when given or where a cell has no interval: the module docstring), text
    cells (verdicts) that differ, rows and columns present on one side only."""
    for name, df in (("current", current), ("baseline", baseline)):
        missing = [k for k in KEY if k not in df.columns]
        if missing:
            raise ValueError(f"the {name} leaderboard lacks the key columns {missing}")
        dup = df.duplicated(KEY)
        if dup.any():
            raise ValueError(f"the {name} leaderboard has repeated rows: {df.loc[dup, KEY].values.tolist()}")
    skip = set(KEY) | set(COUNT_COLUMNS) | {c for c in current.columns if c.endswith(BOUND_SUFFIXES)}
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
        numeric = _is_numeric(cur[col])
        for key in rows:
            b, c = base.at[key, col], cur.at[key, col]
            if numeric:
                fb, fc = _num(b), float(c)
                if math.isnan(fb) and _text(b).strip().lower() not in ("", "nan", "n/a"):
                    report.malformed.append(Cell(*key, col, b, fc))
                    continue
                if math.isnan(fb) and math.isnan(fc):
                    continue
                if math.isnan(fb) or math.isnan(fc) or _moved(fb, fc, cur, key, col, atol):
                    report.moved.append(Cell(*key, col, fb, fc))
            elif _text(b) != _text(c):
                report.flipped.append(Cell(*key, col, _text(b), _text(c)))
    return report


def _moved(base: float, cur: float, board: pd.DataFrame, key: tuple, col: str, atol: float | None) -> bool:
    lo, hi = f"{col}_lo", f"{col}_hi"
    if atol is None and lo in board.columns and hi in board.columns:
        a, b = float(board.at[key, lo]), float(board.at[key, hi])
        if not (math.isnan(a) or math.isnan(b)):
            return not a - 1e-9 <= base <= b + 1e-9  # a degenerate interval (all samples equal): equality
    return abs(cur - base) > (DEFAULT_ATOL if atol is None else atol)


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def baseline_metric(baseline: pd.DataFrame) -> str | None:
    """The randomization metric of a leaderboard, from its ``rand/<mode>/<metric>/last`` columns."""
    for col in baseline.columns:
        parts = col.split("/")
        if len(parts) >= 4 and parts[0] == "rand" and parts[-1] == "last":
            return parts[-2]
    return None
