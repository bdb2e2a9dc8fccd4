"""``salbench-check RUN --baseline BASELINE.csv [--atol X] [--update]``: a regression check.

``RUN`` is a sweep / job folder (its leaderboard is built as ``salbench-leaderboard`` would) or a leaderboard
CSV. Exit status: 0 when every baseline estimate lies inside the current cell's 95% interval (or within ``--atol``
when given; :mod:`bench.reporting.check`) and every verdict and row /
column is the same; 1 otherwise, after printing the cells that moved (with both values), the verdicts that
flipped and the rows / columns present on one side only; 2 on a usage error (e.g. no baseline file and no
``--update``). ``--update`` writes the current leaderboard to the baseline path (after printing what changed)
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
        atomic_write(baseline_path, lambda tmp: current.to_csv(tmp, index=False))
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
