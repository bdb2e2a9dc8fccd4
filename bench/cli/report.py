"""``salbench-report SWEEP_DIR [--project P] [--entity E] [--group G] [--out report.json] [--save]``: a W&B Report.

Builds the W&B Report of a sweep (:mod:`bench.reporting.wandb_report`: the sweep's runs, their leaderboards and
figures, the verdict legend), validates it and writes its definition as JSON (default ``SWEEP_DIR/report.json``),
without network. With ``--save`` it also saves the report to W&B (a key and the network needed) and prints its URL.
Exit status: 0; 2 when SWEEP_DIR holds no job, or when the report could not be saved (the message says why; the
JSON is written all the same). Imports neither torch, zennit nor timm.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.cli.leaderboard import add_build_options, build_kwargs

__all__ = ["main"]

PROG = "salbench-report"


def main(argv: Sequence[str] | None = None) -> int:
    """``salbench-report SWEEP_DIR [--project P] [--entity E] [--group G] [--out FILE] [--save] [--timeout S]``;
    returns the exit status (0 written / saved, 2 no job or not saved)."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", help="the sweep folder (its jobs: subfolders with results.parquet and job.json)")
    parser.add_argument("--project", default=None,
                        help="W&B project of the runs (default: the jobs' logger.project, else saliency-bench)")
    parser.add_argument("--entity", default=None,
                        help="W&B entity (default: the jobs' logger.entity, else your W&B default entity at --save)")
    parser.add_argument("--group", default=None,
                        help="W&B group of the sweep's runs (default: the jobs' logger.group, else the sweep "
                             "folder's name, as the jobs logged it)")
    parser.add_argument("--out", default=None,
                        help="the report definition's JSON file (default: SWEEP_DIR/report.json)")
    parser.add_argument("--save", action="store_true", help="save the report to W&B and print its URL")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds --save may take (default: 60)")
    add_build_options(parser, metric_default=None)
    args = parser.parse_args(argv)

    from bench.reporting.wandb_report import build_report, read_sweep, save_report, write_definition

    def error(message: str) -> int:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2

    kwargs = {k: v for k, v in build_kwargs(args).items() if v is not None}
    try:
        info = read_sweep(args.sweep, project=args.project, entity=args.entity, group=args.group, **kwargs)
    except (FileNotFoundError, ValueError) as err:
        return error(str(err))
    if info.note:
        print(f"{PROG}: note: {info.note}", file=sys.stderr)
    out = Path(args.out) if args.out else Path(args.sweep) / "report.json"
    try:
        path = write_definition(build_report(info), out)
    except Exception as err:  # noqa: BLE001  (an invalid report: name the reason)
        return error(f"the report is not valid: {type(err).__name__}: {err}")
    print(f"report definition: {path}")
    if not args.save:
        return 0
    try:
        url = save_report(info, timeout=args.timeout)
    except Exception as err:  # noqa: BLE001  (no network, no key: the definition is written)
        return error(f"could not save the report to W&B ({type(err).__name__}: {err}); its definition is in {path}; "
                     "check `wandb login` and the network, then retry with --save")
    print(f"report: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
