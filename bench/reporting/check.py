"""Regression check: compare a leaderboard with a stored baseline (a leaderboard CSV): :func:`compare`.

The command ``salbench-check`` is :mod:`bench.cli.check`. Rows are matched on (model, method), columns by name.
A numeric cell that has a 95% interval in the current leaderboard (its ``<column>_lo`` / ``<column>_hi``) has moved
when the baseline's estimate lies outside that interval: run-to-run noise of the size the samples allow does not
fail a check, a real change does; the bounds themselves are not compared. Other numeric cells, and every cell when
``atol`` is given, compare with ``|current - baseline| <= atol`` (both missing counts as equal); text columns (the
verdicts) must be equal. The derived counts ``passed`` / ``tests`` are not compared (their verdicts are). When ``RUN``
is a folder and ``--metric`` is not given, the randomization metric is the baseline's (read from its
``rand/<mode>/<metric>/last`` column names). ``atol`` must be a finite number >= 0 (NaN would accept any change).

Non-finite per-sample scores (the current leaderboard's ``nonfinite`` note column,
:func:`bench.reporting.leaderboard.format_nonfinite`) fail the check cell by cell, with the model, method, column and
how many samples: an infinite score always (it is never legitimate); a NaN score unless the baseline records the
same NaN count out of the same samples for that cell (NaN is legitimate where a score is undefined, e.g. the rank
correlation of a constant map, and ``--update`` accepts it). The note column itself is not compared as a cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.reporting.leaderboard import COUNT_COLUMNS, KEY, NONFINITE_COLUMN, parse_nonfinite

__all__ = ["compare", "CheckReport", "Cell", "NonFiniteCell", "baseline_metric", "DEFAULT_ATOL"]

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


@dataclass(frozen=True)
class NonFiniteCell:
    """A cell of the current leaderboard whose per-sample scores are not all finite: how many of its ``n`` samples
    are NaN / infinite, and the NaN count the baseline records for it (``None``: none, or no such row or note)."""

    model: str
    method: str
    column: str
    nan: int
    inf: int
    n: int
    baseline_nan: int | None = None
    baseline_n: int | None = None

    @property
    def accepted(self) -> bool:
        """No infinite score, and the baseline records the same NaN count out of the same samples."""
        return self.inf == 0 and self.baseline_nan == self.nan and self.baseline_n == self.n

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {name}" for k, name in ((self.nan, "NaN"), (self.inf, "inf")) if k)
        why = []
        if self.inf:
            why.append("an infinite score is never accepted")
        if self.nan:
            why.append("the baseline records no NaN there" if not self.baseline_nan else
                       f"the baseline records {self.baseline_nan} NaN of {self.baseline_n} samples")
        return f"{self.model} / {self.method} / {self.column}: {kinds} of {self.n} samples ({'; '.join(why)})"


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
    #: current cells with non-finite per-sample scores that fail the check (inf; NaN the baseline does not record)
    nonfinite: list[NonFiniteCell] = field(default_factory=list)
    #: current cells with NaN scores that the baseline records too (reported, not a failure)
    accepted_nan: list[NonFiniteCell] = field(default_factory=list)
    compared_rows: int = 0
    compared_columns: int = 0

    @property
    def ok(self) -> bool:
        return not (self.moved or self.flipped or self.missing_rows or self.new_rows or self.missing_columns
                    or self.new_columns or self.malformed or self.nonfinite)

    @property
    def rule(self) -> str:
        if self.atol is None:
            return f"the current 95% intervals (atol={DEFAULT_ATOL:g} where a cell has none)"
        return f"atol={self.atol:g}"

    def __str__(self) -> str:
        accepted = (f"; {len(self.accepted_nan)} cell(s) hold NaN scores that the baseline records too: "
                    + ", ".join(f"{c.model} / {c.method} / {c.column} ({c.nan} of {c.n})" for c in self.accepted_nan)
                    if self.accepted_nan else "")
        if self.ok:
            return (f"OK: the leaderboard matches the baseline within {self.rule} "
                    f"({self.compared_rows} rows x {self.compared_columns} columns compared{accepted})")
        lines = [f"FAILED: {len(self.moved)} cell(s) moved beyond {self.rule}, {len(self.flipped)} "
                 f"verdict(s) flipped ({self.compared_rows} rows x {self.compared_columns} columns compared)"]
        if self.nonfinite:
            lines[0] += f"; {len(self.nonfinite)} cell(s) hold non-finite scores"
        if self.malformed:
            lines[0] += (f"; {len(self.malformed)} baseline cell(s) of numeric columns are not numbers (a damaged "
                         "baseline: fix the cells or rewrite it with --update)")
        sections = [
            ("baseline cells that are not numbers", [f"{c.model} / {c.method} / {c.column}: {c.baseline!r}"
                                                     for c in self.malformed]),
            ("cells with non-finite per-sample scores (left out of the cell's mean and interval; fix the method or "
             "the score, or accept NaN scores with --update)", [c.describe() for c in self.nonfinite]),
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
    cells (verdicts) that differ, rows and columns present on one side only, cells with non-finite per-sample
    scores. Raises ``ValueError`` for an ``atol`` that is not a finite number >= 0, a missing key column, repeated
    rows or a damaged ``nonfinite`` note."""
    if atol is not None and not (math.isfinite(_num(atol)) and _num(atol) >= 0):
        raise ValueError(f"atol={atol!r} is not accepted; accepted: a finite number >= 0, or None (the intervals)")
    for name, df in (("current", current), ("baseline", baseline)):
        missing = [k for k in KEY if k not in df.columns]
        if missing:
            raise ValueError(f"the {name} leaderboard lacks the key columns {missing}")
        dup = df.duplicated(KEY)
        if dup.any():
            raise ValueError(f"the {name} leaderboard has repeated rows: {df.loc[dup, KEY].values.tolist()}")
    skip = (set(KEY) | set(COUNT_COLUMNS) | {NONFINITE_COLUMN}
            | {c for c in current.columns if c.endswith(BOUND_SUFFIXES)})
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
    _check_nonfinite(report, cur, base)
    return report


def _notes(board: pd.DataFrame, key: tuple, name: str) -> dict[str, dict[str, int]]:
    if NONFINITE_COLUMN not in board.columns or key not in board.index:
        return {}
    try:
        return parse_nonfinite(board.at[key, NONFINITE_COLUMN])
    except ValueError as err:
        raise ValueError(f"the {name} leaderboard's row {' / '.join(key)}: {err}") from None


def _check_nonfinite(report: CheckReport, cur: pd.DataFrame, base: pd.DataFrame) -> None:
    """Every current cell with non-finite per-sample scores: a failure (``report.nonfinite``) unless its only
    non-finite scores are NaN that the baseline records with the same counts (``report.accepted_nan``)."""
    for key in cur.index:
        mine, theirs = _notes(cur, key, "current"), _notes(base, key, "baseline")
        for column, c in mine.items():
            b = theirs.get(column, {})
            cell = NonFiniteCell(*key, column, nan=c.get("NaN", 0), inf=c.get("inf", 0), n=c["n"],
                                 baseline_nan=b.get("NaN") if b else None, baseline_n=b.get("n") if b else None)
            (report.accepted_nan if cell.accepted else report.nonfinite).append(cell)


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
