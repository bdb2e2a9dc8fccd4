"""``salbench-leaderboard FOLDER [FOLDER ...]``: the leaderboard of one or more sweeps.

Reads every ``results.parquet`` under the folders and prints the console summary (one line per method with its
verdict per test, :func:`bench.reporting.console.console_summary`, 100 columns or a narrower terminal's width,
``--width N`` to choose; ``--markdown``: the full Markdown tables instead). Nothing is written unless ``--out DIR``
is given: then ``leaderboard.md``, ``leaderboard.csv`` and a self-contained ``leaderboard.html`` (inline CSS and
script, the job folders' own PNG figures embedded) are written there, and ``compare_<A>_<B>.csv`` with ``--compare A
B``; without it a line on stderr says how to write them. A results file that cannot be read is skipped with a
warning and listed in the outputs. CSV text cells are neutralized against spreadsheet formulas
(:mod:`bench.reporting.safe_csv`); the compare file stays inside ``--out`` whatever the method names hold
(:func:`~bench.reporting.safe_csv.safe_file_part`). Imports neither torch, zennit nor timm.

Order: ``--sort`` (default ``balanced``, the ranking of :func:`bench.reporting.leaderboard.sort_leaderboard`:
verdict, the worst test deciding, then the balanced score; ``passed``, ``method`` or a column also accepted);
``--rank-by COLUMN`` adds each method's rank by that mean column with its 95% rank interval and, unless ``--sort``
is given, sorts by it (1 = best first). ``--compare A B``: per cell, the leaderboard's estimates of A and B, the
paired bootstrap difference with its 95% interval, and P(A better) with ties counted half
(:func:`bench.reporting.leaderboard.compare_methods`).

Exit status: 0 when the leaderboard was printed (and written, with ``--out``); 2 on bad input (a folder that does
not exist, no readable results, an unknown option value such as a ``--rank-by`` column or ``--metric``, an output
folder that cannot be written), with a message naming the value and what is accepted.
"""

from __future__ import annotations

import argparse
import logging
import math
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.reporting.console import DEFAULT_WIDTH, MIN_WIDTH, comparison_summary, console_summary
from bench.reporting.leaderboard import DEFAULT_METRIC, compare_methods, load_leaderboard
from bench.reporting.render import FORMATS, comparison_markdown, to_markdown, write_leaderboard
from bench.reporting.safe_csv import safe_file_part, write_csv
from bench.reporting.sweep_files import distinct_rows, find_failed_jobs, load_results, read_row_configs

__all__ = ["main", "add_build_options", "build_kwargs"]

PROG = "salbench-leaderboard"


def _number(low: float | None = None, high: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[low, high]`` (either end open when ``None``)."""
    accepted = (f"a number in [{low:g}, {high:g}]" if low is not None and high is not None
                else f"a number >= {low:g}" if low is not None else "a number")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; accepted: {accepted}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text} is out of range; accepted: {accepted}")
        return value

    parse.__name__ = "number"
    return parse


def add_build_options(parser: argparse.ArgumentParser, *, metric_default: str | None = DEFAULT_METRIC) -> None:
    """The options that decide the leaderboard's values (shared with ``salbench-check``); out-of-range numbers are
    usage errors (exit 2) that name the value and the accepted range."""
    parser.add_argument("--metric", default=metric_default,
                        help=f"randomization similarity metric (default: {metric_default or 'from the baseline'})")
    parser.add_argument("--min-drop", type=_number(0.0), default=None,
                        help="randomization passes when the paired drop below the repeatability control is at least "
                             "this (95%% lower bound; default: the metric's min_drop in the score registry)")
    parser.add_argument("--ssim-threshold", type=_number(-1.0, 1.0), default=None,
                        help="invariance passes when the mean SSIM is at least this (default: the registry's, 0.99)")
    parser.add_argument("--tolerance", type=_number(0.0), default=None,
                        help="'exact' when the 95th percentile of max_rel_diff is at most this (default: the "
                             "registry's, 1e-3)")


def build_kwargs(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`~bench.reporting.leaderboard.build_leaderboard` from the parsed options."""
    return dict(tolerance=args.tolerance, ssim_threshold=args.ssim_threshold, randomization_metric=args.metric,
                min_drop=args.min_drop)


def compare_path(out: Path, a: str, b: str) -> Path:
    """``out/compare_<a>_<b>.csv`` with the method names made plain file-name parts (no separator, no ``..``): the
    file is always directly inside ``out``."""
    path = out / f"compare_{safe_file_part(a)}_{safe_file_part(b)}.csv"
    if path.parent != out or path.name in (".", ".."):  # cannot happen after safe_file_part; never write elsewhere
        raise ValueError(f"--compare {a!r} {b!r}: no file name inside {out} can be made of them")
    return path


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


_HANDLER = logging.StreamHandler(sys.stderr)
_HANDLER.setFormatter(logging.Formatter(f"{PROG}: warning: %(message)s"))
_HANDLER.setLevel(logging.WARNING)


def _warnings_to_stderr() -> None:
    """Library warnings (a skipped results file) as ``salbench-leaderboard: warning: ...`` lines on stderr, unless
    the caller configured logging."""
    logger = logging.getLogger("bench.reporting")
    if not logging.getLogger().handlers and _HANDLER not in logger.handlers:
        _HANDLER.setStream(sys.stderr)
        logger.addHandler(_HANDLER)


def _width() -> int:
    """The console summary's default width: 100 columns, or the terminal's when stdout is a narrower terminal."""
    isatty = getattr(sys.stdout, "isatty", None)
    if not (callable(isatty) and isatty()):
        return DEFAULT_WIDTH
    return max(MIN_WIDTH, min(DEFAULT_WIDTH, shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns))


def main(argv: Sequence[str] | None = None) -> int:
    """``salbench-leaderboard FOLDER [FOLDER ...] [--out DIR] [--format md,csv,html] [--markdown] [--sort KEY]
    [--metric NAME] [--compare A B] [--rank-by COLUMN]``: print the console summary (``--markdown``: the Markdown
    tables) and, with ``--out``, write the files. Returns the exit status: 0 done, 2 bad input (the message names the
    bad value and what is accepted; usage errors exit 2 through argparse)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="sweep or job folders (searched for results.parquet)")
    parser.add_argument("--out", default=None,
                        help="write leaderboard.* (and compare_A_B.csv) to this folder; default: write nothing")
    parser.add_argument("--format", default=",".join(FORMATS), help="comma-separated subset of md,csv,html")
    parser.add_argument("--markdown", action="store_true",
                        help="print the full Markdown tables instead of the console summary")
    parser.add_argument("--width", type=int, default=None, metavar="N",
                        help=f"the console summary's width in columns (at least {MIN_WIDTH}; default: {DEFAULT_WIDTH}, "
                             "or a narrower terminal's)")
    parser.add_argument("--sort", default=None,
                        help="balanced (default: verdict, worst test first, then the balanced score), passed, "
                             "method, or a column name (prefix - for descending); default with --rank-by: its rank")
    parser.add_argument("--no-figures", action="store_true", help="do not embed the PNG figures in the HTML")
    parser.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None,
                        help="also print (and write compare_A_B.csv in --out; names that are not plain file "
                             "names are replaced) the paired difference A - B of every mean cell "
                             "with its 95%% interval and the probability that A is better (ties count half)")
    parser.add_argument("--rank-by", default=None, metavar="COLUMN",
                        help="rank the methods by this mean column (1 = best) with a 95%% rank interval, and sort "
                             "by it unless --sort is given")
    add_build_options(parser)
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if not formats or set(formats) - set(FORMATS):
        parser.error(f"--format: unknown {sorted(set(formats) - set(FORMATS)) or repr(args.format)}; accepted: "
                     f"a comma-separated subset of {','.join(FORMATS)}")
    if args.width is not None and args.width < MIN_WIDTH:
        parser.error(f"argument --width: {args.width} is out of range; accepted: a whole number >= {MIN_WIDTH}")
    _warnings_to_stderr()
    missing = [f for f in args.folders if not Path(f).exists()]
    if missing:
        return _error(f"no such file or folder: {', '.join(missing)} (give sweep or job folders that hold "
                      "results.parquet files)")
    out = Path(args.out) if args.out is not None else None
    if out is not None and out.exists() and not out.is_dir():
        return _error(f"--out {out} is a file; accepted: a folder (created when missing)")
    try:
        lb = load_leaderboard(args.folders, figures=not args.no_figures and (out is not None or args.markdown),
                              sort=args.sort, rank_by=args.rank_by, skip_unreadable=True, **build_kwargs(args))
        comparison = None
        if args.compare:
            folders = list(dict.fromkeys(str(Path(f).resolve()) for f in args.folders))
            table, _ = load_results(folders, skip_unreadable=True)
            comparison = compare_methods(distinct_rows(table), *args.compare,
                                         metric=args.metric, configs=read_row_configs(folders), board=lb.board)
    except FileNotFoundError as err:
        _error(str(err))
        for r in find_failed_jobs(args.folders).itertuples():
            print(f"  failed job {r.job}: {r.error}", file=sys.stderr)
        return 2
    except ValueError as err:
        return _error(str(err))
    paths: dict[str, Path] = {}
    if out is not None:
        try:
            paths = write_leaderboard(lb, out, formats)
            if comparison is not None:
                paths["compare"] = write_csv(comparison, compare_path(out, *args.compare))
        except OSError as err:
            return _error(f"cannot write to {out}: {err}")
    width = args.width or _width()
    if args.markdown:
        print(to_markdown(lb))
    else:
        tables = [p for key, p in paths.items() if key != "compare"]
        print(console_summary(lb, width=width, files=[str(p) for p in tables]))
    if comparison is not None:
        text = comparison_markdown(comparison) if args.markdown else comparison_summary(comparison, width=width)
        print("\n" + text)
    if lb.skipped:
        print(f"{PROG}: warning: {len(lb.skipped)} results file(s) skipped as unreadable (listed in the leaderboard)",
              file=sys.stderr)
    if paths:
        print("written: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    else:
        what = "leaderboard." + "/.".join(formats)
        if comparison is not None:
            what += " and " + compare_path(Path("."), *args.compare).name
        print(f"{PROG}: nothing written (give --out DIR to write {what} there)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
