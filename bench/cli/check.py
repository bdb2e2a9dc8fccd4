"""``salbench-check RUN --baseline BASELINE.csv [--atol X] [--update]``: a regression check.

``RUN`` is a sweep / job folder (its leaderboard is built as ``salbench-leaderboard`` would) or a leaderboard
CSV. Exit status: 0 when every baseline estimate lies inside the current cell's 95% interval (or within ``--atol``
when given; :mod:`bench.reporting.check`) and every verdict and row /
column is the same; 1 otherwise, after printing the cells that moved (with both values), the verdicts that
flipped and the rows / columns present on one side only; 2 on bad input (no baseline file and no ``--update``, a
damaged baseline or results table, an ``--atol`` that is not a finite number >= 0: the message names it).
Cells whose per-sample scores are not finite (the leaderboard's ``nonfinite`` column) fail the check cell by cell
(:mod:`bench.reporting.check`). ``--update`` writes the current leaderboard to the baseline path (after printing
what changed, when the old baseline is readable: a damaged one is replaced) and exits 0; the write is atomic, and a
write that fails (a full disk) exits 2 naming the path and the OS error, the old baseline left as it was. The CSV's
text cells are neutralized against spreadsheet formulas and restored when read back
(:mod:`bench.reporting.safe_csv`). When ``RUN`` is a folder and ``--metric`` is not given, the randomization metric
is the baseline's.
Imports neither torch, zennit nor timm.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench.cli.leaderboard import add_build_options, build_kwargs
from bench.reporting.check import baseline_metric, compare
from bench.reporting.leaderboard import DEFAULT_METRIC, NONFINITE_COLUMN, load_leaderboard, parse_nonfinite
from bench.reporting.render import read_leaderboard_csv
from bench.reporting.safe_csv import restore_frame, write_csv

__all__ = ["main"]


ATOL_ACCEPTED = "a finite number >= 0 (leave --atol out to compare with the current 95% intervals)"


def _atol(text: str) -> float:
    """The argparse type of ``--atol``: a finite number >= 0 (NaN would accept every change, a negative one none)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; accepted: {ATOL_ACCEPTED}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} is not accepted; accepted: {ATOL_ACCEPTED}")
    return value


def _read_csv(path: Path) -> pd.DataFrame:
    """A leaderboard CSV with its neutralized text cells restored (``'=x`` -> ``=x``: names round-trip)."""
    return restore_frame(read_leaderboard_csv(path))


def _current(run: Path, metric: str, args: argparse.Namespace) -> pd.DataFrame:
    if run.is_file() and run.suffix == ".csv":
        return _read_csv(run)
    lb = load_leaderboard([run], figures=False, **{**build_kwargs(args), "randomization_metric": metric})
    for r in lb.failed.itertuples():
        print(f"note: failed job {r.job}: {r.error}", file=sys.stderr)
    return lb.board


def _notes(board: pd.DataFrame) -> list[tuple[str, str, dict]]:
    """``(model, method, {column: counts})`` of the rows whose note lists non-finite scores."""
    if NONFINITE_COLUMN not in board.columns:
        return []
    notes = []
    for m, k, n in zip(board["model"], board["method"], board[NONFINITE_COLUMN], strict=True):
        try:
            notes.append((str(m), str(k), parse_nonfinite(n)))
        except ValueError:  # a hand-edited note in a CSV given as the run: compare() names it
            continue
    return [n for n in notes if n[2]]


def main(argv: Sequence[str] | None = None) -> int:
    """``salbench-check RUN --baseline CSV [--atol X] [--update]``; returns the exit status (0 equal,
    1 different, 2 usage error)."""
    parser = argparse.ArgumentParser(prog="salbench-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a sweep / job folder, or a leaderboard CSV")
    parser.add_argument("--baseline", required=True, help="the baseline leaderboard CSV")
    parser.add_argument("--atol", type=_atol, default=None, metavar="X",
                        help="compare numeric cells with this absolute tolerance instead of the current 95%% "
                             "intervals: a finite number >= 0 (default: intervals; 0.05 for cells without one)")
    parser.add_argument("--update", action="store_true", help="write the current leaderboard as the new baseline")
    add_build_options(parser, metric_default=None)
    args = parser.parse_args(argv)

    def error(message: str) -> int:
        print(f"salbench-check: error: {message}", file=sys.stderr)
        return 2

    run, baseline_path = Path(args.run), Path(args.baseline)
    if not run.exists():
        return error(f"{run} does not exist")
    baseline, damage = None, ""
    if baseline_path.is_file():
        try:
            baseline = _read_csv(baseline_path)
        except Exception as err:  # noqa: BLE001  (any parse failure: a damaged baseline, named below)
            damage = f"{type(err).__name__}: {err}"
    if baseline is None and not args.update:
        if damage:
            return error(f"the baseline {baseline_path} cannot be read ({damage}); fix it or rewrite it from this "
                         "run with --update")
        return error(f"baseline file {baseline_path} does not exist; create it from this run with --update")
    metric = args.metric or (baseline_metric(baseline) if baseline is not None else None) or DEFAULT_METRIC
    try:
        current = _current(run, metric, args)
    except (FileNotFoundError, ValueError) as err:
        return error(str(err))

    if args.update:
        if baseline is not None:
            try:
                print(compare(current, baseline, atol=args.atol))
            except ValueError as err:
                damage = str(err)
        if damage:
            print(f"note: the old baseline {baseline_path} was damaged ({damage}); replacing it", file=sys.stderr)
        existed = baseline_path.exists()
        try:
            write_csv(current, baseline_path)
        except OSError as err:
            kept = "the old baseline is left as it was" if existed else "no baseline was written"
            where = "" if str(baseline_path) in str(err) else f" {baseline_path}"  # an error may name the path
            return error(f"cannot write the baseline{where}: {err}; {kept}")
        print(f"baseline {'updated' if existed else 'written'}: {baseline_path} "
              f"({len(current)} rows)")
        infinite = [f"{m} / {k} / {col}" for m, k, note in _notes(current) for col, c in note.items() if c.get("inf")]
        if infinite:
            print(f"note: {len(infinite)} cell(s) hold infinite scores ({', '.join(infinite)}): every check fails on "
                  "them until the method or the score is fixed", file=sys.stderr)
        return 0
    try:
        report = compare(current, baseline, atol=args.atol)
    except ValueError as err:
        return error(f"{err} (in {baseline_path} or the run)")
    print(report)
    if report.malformed:
        return 2
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
