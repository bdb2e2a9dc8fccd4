"""``salbench-leaderboard FOLDER [FOLDER ...]``: the leaderboard of one or more sweeps.

Reads every ``results.parquet`` under the folders, prints the leaderboard as Markdown and writes
``leaderboard.md``, ``leaderboard.csv`` and a self-contained ``leaderboard.html`` (inline CSS, the job folders'
PNG figures embedded) to ``--out`` (default: the first folder). Imports neither torch, zennit nor timm.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench._io import atomic_write
from bench.core.results import read_tables
from bench.reporting.leaderboard import (
    DEFAULT_METRIC,
    compare_methods,
    find_failed_jobs,
    load_leaderboard,
    read_row_configs,
)
from bench.reporting.render import FORMATS, comparison_markdown, to_markdown, write_leaderboard

__all__ = ["main", "add_build_options", "build_kwargs"]


def add_build_options(parser: argparse.ArgumentParser, *, metric_default: str | None = DEFAULT_METRIC) -> None:
    """The options that decide the leaderboard's values (shared with ``salbench-check``)."""
    parser.add_argument("--metric", default=metric_default,
                        help=f"randomization similarity metric (default: {metric_default or 'from the baseline'})")
    parser.add_argument("--min-drop", type=float, default=None,
                        help="randomization passes when the paired drop below the repeatability control is at least "
                             "this (95%% lower bound; default: the metric's min_drop in the score registry)")
    parser.add_argument("--ssim-threshold", type=float, default=None,
                        help="invariance passes when the mean SSIM is at least this (default: the registry's, 0.99)")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="'exact' when the 95th percentile of max_rel_diff is at most this (default: the "
                             "registry's, 1e-3)")


def build_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`~bench.reporting.leaderboard.build_leaderboard` from the parsed options."""
    return dict(tolerance=args.tolerance, ssim_threshold=args.ssim_threshold, randomization_metric=args.metric,
                min_drop=args.min_drop)


def main(argv: Sequence[str] | None = None) -> int:
    """``salbench-leaderboard FOLDER [FOLDER ...] [--out DIR] [--format md,csv,html] [--sort KEY] [--metric NAME]
    [--compare A B] [--rank-by COLUMN]``: print the Markdown leaderboard and write the files. Exit status 0, or 2
    when there are no results."""
    parser = argparse.ArgumentParser(prog="salbench-leaderboard", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="sweep or job folders (searched for results.parquet)")
    parser.add_argument("--out", default=None, help="where to write leaderboard.* (default: the first folder)")
    parser.add_argument("--format", default=",".join(FORMATS), help="comma-separated subset of md,csv,html")
    parser.add_argument("--sort", default="passed",
                        help="passed (default), method, or a column name (prefix - for descending)")
    parser.add_argument("--no-figures", action="store_true", help="do not embed the PNG figures in the HTML")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="also print (and write compare_A_B.csv) the paired difference A - B of every mean cell "
                             "with its 95%% interval and the probability that A is better")
    parser.add_argument("--rank-by", default=None, metavar="COLUMN",
                        help="add each method's rank by this mean column (1 = best) with a 95%% rank interval")
    add_build_options(parser)
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if set(formats) - set(FORMATS):
        parser.error(f"--format: unknown {sorted(set(formats) - set(FORMATS))}; accepted: {','.join(FORMATS)}")
    try:
        lb = load_leaderboard(args.folders, figures=not args.no_figures, sort=args.sort, rank_by=args.rank_by,
                              **build_kwargs(args))
        comparison = None
        if args.compare:
            folders = list(dict.fromkeys(str(Path(f).resolve()) for f in args.folders))
            comparison = compare_methods(read_tables(folders).drop_duplicates(), *args.compare, metric=args.metric,
                                         configs=read_row_configs(folders))
    except FileNotFoundError as err:
        failed = find_failed_jobs(args.folders)
        print(f"salbench-leaderboard: error: {err}", file=sys.stderr)
        for r in failed.itertuples():
            print(f"  failed job {r.job}: {r.error}", file=sys.stderr)
        return 2
    except ValueError as err:
        print(f"salbench-leaderboard: error: {err}", file=sys.stderr)
        return 2
    print(to_markdown(lb))
    paths = write_leaderboard(lb, args.out or args.folders[0], formats)
    if comparison is not None:
        print(comparison_markdown(comparison))
        a, b = args.compare
        paths["compare"] = atomic_write(Path(args.out or args.folders[0]) / f"compare_{a}_{b}.csv",
                                        lambda tmp: comparison.to_csv(tmp, index=False))
    print("written: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
