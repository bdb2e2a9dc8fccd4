"""``salbench-check RUN --baseline BASELINE.csv [--atol X] [--update]``: a regression check.

``RUN`` is a sweep / job folder (its leaderboard is built as ``salbench-leaderboard`` would) or a leaderboard
CSV. Exit status: 0 when every baseline estimate lies inside the current cell's 95% interval (or within ``--atol``
when given; :mod:`bench.reporting.check`) and every verdict and row /
column is the same; 1 otherwise, after printing the cells that moved (with both values), the verdicts that
flipped and the rows / columns present on one side only; 2 on bad input (no baseline file and no ``--update``, a
damaged baseline or results table: the message names it). ``--update`` writes the current leaderboard to the
baseline path (after printing what changed, when the old baseline is readable: a damaged one is replaced)
and exits 0. When ``RUN`` is a folder and ``--metric`` is not given, the randomization metric is the baseline's.
Imports neither torch, zennit nor timm.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench._io import atomic_write
from bench.cli.leaderboard import add_build_options, build_kwargs
from bench.reporting.check import baseline_metric, compare
from bench.reporting.leaderboard import DEFAULT_METRIC, load_leaderboard
from bench.reporting.render import read_leaderboard_csv

__all__ = ["main"]


def _current(run: Path, metric: str, args: argparse.Namespace) -> pd.DataFrame:
    if run.is_file() and run.suffix == ".csv":
        return read_leaderboard_csv(run)
    lb = load_leaderboard([run], figures=False, **{**build_kwargs(args), "randomization_metric": metric})
    for r in lb.failed.itertuples():
        print(f"note: failed job {r.job}: {r.error}", file=sys.stderr)
    return lb.board


def main(argv: Sequence[str] | None = None) -> int:
    """``salbench-check RUN --baseline CSV [--atol X] [--update]``; returns the exit status (0 equal,
    1 different, 2 usage error)."""
    parser = argparse.ArgumentParser(prog="salbench-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a sweep / job folder, or a leaderboard CSV")
    parser.add_argument("--baseline", required=True, help="the baseline leaderboard CSV")
    parser.add_argument("--atol", type=float, default=None,
                        help="compare numeric cells with this absolute tolerance instead of the current 95%% "
                             "intervals (default: intervals; 0.05 for cells without one)")
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
            baseline = read_leaderboard_csv(baseline_path)
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
        atomic_write(baseline_path, lambda tmp: current.to_csv(tmp, index=False))
        print(f"baseline {'updated' if existed else 'written'}: {baseline_path} "
              f"({len(current)} rows)")
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
