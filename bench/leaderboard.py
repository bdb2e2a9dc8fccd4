"""The leaderboard: one row per (model, method), built from the long results table of one or more sweeps.

``salbench-leaderboard FOLDER [FOLDER ...]`` reads every ``results.parquet`` under the folders
(:func:`bench.results.read_tables`), prints the leaderboard as Markdown and writes ``leaderboard.md``,
``leaderboard.csv`` and a self-contained ``leaderboard.html`` (inline CSS, the job folders' PNG figures
embedded) to ``--out`` (default: the first folder). Jobs whose ``job.json`` says they failed are listed.

Columns (the CSV's names; the CSV is also the baseline format of ``salbench-check``)
------------------------------------------------------------------------------------
- ``model``, ``method``: the row key. When a model was run on more than one dataset, ``model`` is
  ``"<model>@<dataset>"`` for every row, so that datasets are not pooled.
- ``passed``, ``tests``: how many of the per-shift / per-mode verdicts below passed, and how many were run.
- ``invariance``, ``randomization``: the overall verdict of each test: ``pass`` when every shift (mode)
  run for that row passed, ``fail`` otherwise, ``N/A`` when the test was not run for that row.
- per input-invariance shift ``S`` (:func:`bench.invariance.verdicts`): ``inv/S/ssim`` (mean SSIM between
  the maps of the original and the twin network) and ``inv/S/verdict``: ``exact`` (the 95th percentile
  of ``max_rel_diff`` is at most ``tolerance``), else ``pass`` (mean SSIM >= ``ssim_threshold``), else
  ``fail``; ``N/A`` when not run (or SSIM is undefined and the maps are not exact). ``exact`` counts as
  a pass.
- per randomization mode ``M`` and the chosen metric ``K`` (:func:`bench.sanity.summary`):
  ``rand/M/K/last`` (mean similarity to the trained model's map at the last stage), ``rand/M/K/auc``
  (mean over stages; 1 = the map never changed) and ``rand/M/verdict``: ``pass`` when ``last <
  pass_threshold`` (and ``auc < auc_threshold`` when one is given), ``fail`` otherwise, ``N/A`` when not
  run, when the method has no score at the condition's last stage, or when the similarity is undefined
  (constant maps have no rank correlation).

Thresholds
----------
Randomization: ``pass_threshold = 0.5`` on ``spearman_abs`` by default (the same number for any metric:
every metric is a similarity with 1 = same map; rank correlations of unrelated maps are near 0). The last
stage is the fully randomized model for ``cascading`` and ``bottom_up``, the model trained on permuted
labels for ``labels``, and the *top* unit randomized alone for ``independent`` (stages run from the input
to the logits). Calibration on the bundled MNIST models (32 samples, spearman_abs, last stage, cascading;
MLP / CNN): Gradient 0.01 / 0.32, SmoothGrad 0.01 / 0.35, Deconvnet 0.02 / 0.28, Guided Backprop
0.09 / 0.45, PatternAttribution 0.95 / 0.64, Gradient x Input, IG, LRP-epsilon, LRP-alpha-beta 0.99.
Two caveats follow. (1) Guided Backprop's known failure (its map survives the randomization of the top
layers) shows in the cascade's ``auc`` (0.60 / 0.67 against Gradient's 0.14 / 0.58) and in the
``independent`` last stage (top layer alone: 0.87 / 0.87, fail; Gradient 0.29 / 0.81), not in the
cascading last stage; pass ``auc_threshold`` to require a low area as well. (2) On data with a zero
background, the absolute map of an input-multiplied method (Gradient x Input, IG, LRP) keeps the input's
support whatever the weights, so ``spearman_abs`` stays near 1 (a fail); ``--metric spearman`` judges them
on the signs and ranks of the map instead (near 0 after randomization: a pass).
Invariance: ``ssim_threshold = 0.99`` and ``tolerance = 1e-3`` (those of :mod:`bench.invariance`).

Sorting and grouping
--------------------
Rows are grouped by model (models in alphabetical order); the Markdown and HTML outputs print one
table per model. Within a model, ``sort="passed"`` (default) orders by the number of verdicts passed
(most first), then by method name; ``sort="method"`` by method name; any other column name sorts by that
column, ascending (prefix ``-`` for descending), missing values last, ties by method name.

Results of several jobs for the same (model, method, shift or mode) are pooled (e.g. seeds): the means
run over all their samples.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = [
    "build_leaderboard",
    "sort_leaderboard",
    "find_failed_jobs",
    "find_figures",
    "load_leaderboard",
    "read_leaderboard_csv",
    "to_markdown",
    "to_html",
    "write_leaderboard",
    "Leaderboard",
    "main",
    "DEFAULT_METRIC",
    "DEFAULT_PASS_THRESHOLD",
    "FORMATS",
]

INVARIANCE = "input_invariance"
RANDOMIZATION = "model_randomization"
DEFAULT_METRIC = "spearman_abs"
DEFAULT_PASS_THRESHOLD = 0.5
PASS, EXACT, FAIL, NA = "pass", "exact", "fail", "N/A"
PASSING = (PASS, EXACT)
KEY = ["model", "method"]
COUNT_COLUMNS = ["passed", "tests"]
SUMMARY_COLUMNS = ["invariance", "randomization"]
FORMATS = ("md", "csv", "html")
FILE_STEM = "leaderboard"
SHIFT_ORDER = ("mean_shift", "checkerboard", "adversarial_image")
MODE_ORDER = ("cascading", "bottom_up", "independent", "labels")


def inv_column(shift: str, stat: str) -> str:
    """Name of an invariance column: ``inv/<shift>/<ssim|verdict>``."""
    return f"inv/{shift}/{stat}"


def rand_column(mode: str, stat: str, metric: str | None = None) -> str:
    """Name of a randomization column: ``rand/<mode>/<metric>/<last|auc>`` or ``rand/<mode>/verdict``."""
    return f"rand/{mode}/verdict" if stat == "verdict" else f"rand/{mode}/{metric}/{stat}"


def _ordered(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(values))
    return [v for v in preferred if v in seen] + [v for v in seen if v not in preferred]


def _model_labels(table: pd.DataFrame) -> pd.DataFrame:
    """``model@dataset`` as the model label when some model was run on several datasets."""
    if len(table) and table.groupby("model")["dataset"].nunique().max() > 1:
        table = table.assign(model=table["model"] + "@" + table["dataset"])
    return table


def _inv_verdict(ssim: float, exact: bool, ssim_threshold: float) -> str:
    if exact:
        return EXACT
    if ssim is None or math.isnan(ssim):
        return NA
    return PASS if ssim >= ssim_threshold else FAIL


def _rand_verdict(last: float, auc: float, pass_threshold: float, auc_threshold: float | None) -> str:
    if math.isnan(last) or (auc_threshold is not None and math.isnan(auc)):
        return NA
    ok = last < pass_threshold and (auc_threshold is None or auc < auc_threshold)
    return PASS if ok else FAIL


def _overall(verdicts: Sequence[str]) -> str:
    run = [v for v in verdicts if v != NA]
    if not run:
        return NA
    return PASS if all(v in PASSING for v in run) else FAIL


def build_leaderboard(
    table: pd.DataFrame,
    *,
    tolerance: float = 1e-3,
    ssim_threshold: float = 0.99,
    randomization_metric: str = DEFAULT_METRIC,
    pass_threshold: float = DEFAULT_PASS_THRESHOLD,
    auc_threshold: float | None = None,
    sort: str = "passed",
) -> pd.DataFrame:
    """One row per (model, method) from a long results table (see the module docstring for the columns,
    verdicts and thresholds). The settings are kept in ``board.attrs["settings"]``.

    Raises ``ValueError`` when the table has randomization rows but none for ``randomization_metric``.
    """
    from bench.invariance import verdicts
    from bench.sanity import summary

    table = _model_labels(table)
    inv_t = table[table["experiment"] == INVARIANCE]
    rand_t = table[table["experiment"] == RANDOMIZATION]
    keys = pd.concat([inv_t[KEY], rand_t[KEY]]).drop_duplicates()
    board = pd.DataFrame(sorted(map(tuple, keys.to_numpy())), columns=KEY) if len(keys) else pd.DataFrame(
        columns=KEY)
    idx = board.set_index(KEY).index

    shift_cols: list[str] = []
    shifts = _ordered(inv_t["condition"], SHIFT_ORDER)
    if len(inv_t):
        v = verdicts(inv_t, tolerance=tolerance, ssim_threshold=ssim_threshold).set_index(KEY + ["condition"])
        for shift in shifts:
            sub = v.xs(shift, level="condition").reindex(idx)
            ssim = sub["ssim"].astype(float).to_numpy()
            exact = sub["exact"].fillna(False).astype(bool).to_numpy()
            board[inv_column(shift, "ssim")] = ssim
            board[inv_column(shift, "verdict")] = [_inv_verdict(s, e, ssim_threshold)
                                                   for s, e in zip(ssim, exact, strict=True)]
            shift_cols.append(inv_column(shift, "verdict"))

    mode_cols: list[str] = []
    modes = _ordered(rand_t["condition"], MODE_ORDER)
    if len(rand_t):
        s = summary(rand_t)
        if randomization_metric not in set(s["metric"]):
            raise ValueError(f"no randomization scores for the metric {randomization_metric!r}; the table has "
                             f"{', '.join(sorted(set(s['metric'])))}")
        s = s[s["metric"] == randomization_metric].set_index(KEY + ["condition"])
        for mode in modes:
            if mode not in s.index.get_level_values("condition"):
                continue
            sub = s.xs(mode, level="condition").reindex(idx)
            last, auc = sub["last"].astype(float).to_numpy(), sub["auc"].astype(float).to_numpy()
            board[rand_column(mode, "last", randomization_metric)] = last
            board[rand_column(mode, "auc", randomization_metric)] = auc
            board[rand_column(mode, "verdict")] = [_rand_verdict(a, b, pass_threshold, auc_threshold)
                                                   for a, b in zip(last, auc, strict=True)]
            mode_cols.append(rand_column(mode, "verdict"))

    per_test = board[shift_cols + mode_cols]
    board.insert(2, "passed", per_test.isin(PASSING).sum(axis=1).astype("int64"))
    board.insert(3, "tests", (per_test != NA).sum(axis=1).astype("int64"))
    board.insert(4, "invariance", [_overall(r) for r in board[shift_cols].itertuples(index=False)])
    board.insert(5, "randomization", [_overall(r) for r in board[mode_cols].itertuples(index=False)])
    settings = dict(tolerance=tolerance, ssim_threshold=ssim_threshold, randomization_metric=randomization_metric,
                    pass_threshold=pass_threshold, auc_threshold=auc_threshold)
    board = sort_leaderboard(board, sort)
    board.attrs["settings"] = settings
    return board


def sort_leaderboard(board: pd.DataFrame, by: str = "passed") -> pd.DataFrame:
    """Grouped by model; within a model by ``by``: ``passed`` (most verdicts passed first), ``method``, or a
    column name (ascending; ``-name`` descending; missing values last); ties by method name."""
    attrs = dict(board.attrs)
    descending = by.startswith("-")
    col = by[1:] if descending else by
    if col == "passed":
        out = board.sort_values(["model", "passed", "method"], ascending=[True, False, True], kind="stable")
    elif col == "method":
        out = board.sort_values(["model", "method"], kind="stable")
    elif col in board.columns:
        out = board.sort_values("method", kind="stable").sort_values(col, ascending=not descending,
                                                                     na_position="last", kind="stable")
        out = out.sort_values("model", kind="stable")
    else:
        raise ValueError(f"cannot sort by {by!r}: use passed, method or one of the columns "
                         f"{', '.join(c for c in board.columns if c not in KEY)}")
    out = out.reset_index(drop=True)
    out.attrs = attrs
    return out


# -- job folders -----------------------------------------------------------------------------------------


def find_failed_jobs(folders: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Jobs under ``folders`` whose ``job.json`` status is not ``ok``: columns ``job, status, error,
    overrides`` (the Hydra overrides of ``.hydra/overrides.yaml`` joined by spaces, when present)."""
    rows = []
    for path in _unique_files(folders, "job.json"):
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            info = {"status": "unreadable", "error": f"{type(err).__name__}: {err}"}
        if info.get("status") == "ok":
            continue
        rows.append(dict(job=str(path.parent), status=str(info.get("status", "unknown")),
                         error=str(info.get("error", "")), overrides=_overrides(path.parent)))
    return pd.DataFrame(rows, columns=["job", "status", "error", "overrides"])


def _overrides(job: Path) -> str:
    path = job / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return ""
    try:
        import yaml

        items = yaml.safe_load(path.read_text()) or []
    except Exception:  # noqa: BLE001  (a broken file only loses the label)
        return ""
    return " ".join(map(str, items)) if isinstance(items, list) else str(items)


def find_figures(folders: Iterable[str | os.PathLike]) -> list[Path]:
    """Every PNG file under ``folders`` (sorted, each once)."""
    return _unique_files(folders, "*.png")


def _unique_files(folders: Iterable[str | os.PathLike], pattern: str) -> list[Path]:
    seen: dict[Path, None] = {}
    for folder in folders:
        folder = Path(folder)
        paths = [folder] if folder.is_file() and folder.match(pattern) else sorted(folder.rglob(pattern))
        for p in paths:
            seen.setdefault(p.resolve(), None)
    return sorted(seen)


@dataclass
class Leaderboard:
    """A leaderboard with what its renderers show beside it."""

    board: pd.DataFrame
    failed: pd.DataFrame = field(default_factory=lambda: find_failed_jobs([]))
    figures: list[Path] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def load_leaderboard(folders: Sequence[str | os.PathLike], *, figures: bool = True, **kwargs) -> Leaderboard:
    """Read every results table under ``folders`` and build the leaderboard (``kwargs``: those of
    :func:`build_leaderboard`). Raises ``FileNotFoundError`` when there is no ``results.parquet``."""
    from bench.results import read_tables

    folders = list(dict.fromkeys(str(Path(f).resolve()) for f in folders))
    table = read_tables(folders).drop_duplicates()  # overlapping folders: each job's rows once
    return Leaderboard(board=build_leaderboard(table, **kwargs), failed=find_failed_jobs(folders),
                       figures=find_figures(folders) if figures else [], sources=folders)


def read_leaderboard_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A leaderboard CSV as written by :func:`write_leaderboard` (``N/A`` stays a string; empty = NaN)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"model": str, "method": str})


# -- rendering -------------------------------------------------------------------------------------------


def _groups(board: pd.DataFrame) -> list[tuple[str, list[tuple[str, str]]]]:
    """Display layout: ``[(group label, [(column, sub-label), ...]), ...]`` after ``method``."""
    groups: list[tuple[str, list[tuple[str, str]]]] = [
        ("", [("passed", "passed"), ("invariance", "invariance"), ("randomization", "randomization")])]
    for col in board.columns:
        parts = col.split("/")
        if parts[0] == "inv" and parts[-1] == "ssim":
            shift = "/".join(parts[1:-1])
            groups.append((shift, [(col, "SSIM"), (inv_column(shift, "verdict"), "verdict")]))
        elif parts[0] == "rand" and parts[-1] == "last":
            mode, metric = "/".join(parts[1:-2]), parts[-2]
            groups.append((f"{mode} ({metric})", [(col, "last"), (rand_column(mode, "auc", metric), "AUC"),
                                                  (rand_column(mode, "verdict"), "verdict")]))
    return groups


def _cell(board: pd.DataFrame, row: pd.Series, col: str) -> str:
    if col == "passed":
        return f"{row['passed']}/{row['tests']}"
    value = row[col]
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _legend(settings: dict) -> str:
    auc = settings.get("auc_threshold")
    auc_text = f" and AUC < {auc:g}" if auc is not None else ""
    return (f"Invariance: a shift passes when the mean SSIM between the two networks' maps is >= "
            f"{settings.get('ssim_threshold', 0.99):g} (`exact`: 95th percentile of the max relative difference "
            f"<= {settings.get('tolerance', 1e-3):g}). Randomization: a mode passes when the "
            f"{settings.get('randomization_metric', DEFAULT_METRIC)} similarity to the trained model's map at the "
            f"last stage is < {settings.get('pass_threshold', DEFAULT_PASS_THRESHOLD):g}{auc_text}; AUC is the mean "
            "over stages. `invariance` / `randomization`: pass when every shift / mode run passed. N/A: not run.")


def to_markdown(lb: Leaderboard | pd.DataFrame) -> str:
    """The leaderboard as Markdown: a legend, one table per model, then the failed jobs."""
    from tabulate import tabulate

    lb = lb if isinstance(lb, Leaderboard) else Leaderboard(board=lb)
    board = lb.board
    lines = ["# Leaderboard", "", _legend(board.attrs.get("settings", {})), ""]
    groups = _groups(board)
    headers = ["method"] + [f"{g}: {sub}" if g else sub for g, cols in groups for _, sub in cols]
    for model, rows in board.groupby("model", sort=True):
        body = [[r["method"]] + [_cell(board, r, c) for _, cols in groups for c, _ in cols] for _, r in rows.iterrows()]
        lines += [f"## {model}", "", tabulate(body, headers, tablefmt="github", disable_numparse=True), ""]
    if not len(board):
        lines += ["No results.", ""]
    if len(lb.failed):
        lines += [f"## Failed jobs ({len(lb.failed)})", ""]
        lines += [f"- `{r.job}`{' (' + r.overrides + ')' if r.overrides else ''}: {r.status}: {r.error or '?'}"
                  for r in lb.failed.itertuples()]
        lines.append("")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222}
h1,h2{font-weight:600}table{border-collapse:collapse;margin:0 0 2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f2f2f2}
td.method{text-align:left;font-weight:600}.pass{background:#d8f0d8}.exact{background:#b5e3b5}
.fail{background:#f6d2d2}.na{color:#999}p.legend{max-width:60em;color:#444}
figure{display:inline-block;margin:0 1em 1em 0;vertical-align:top}figure img{max-width:100%}
figcaption{font-size:.8em;color:#555;word-break:break-all;max-width:40em}
"""


def _html_class(text: str) -> str:
    return {PASS: "pass", EXACT: "exact", FAIL: "fail", NA: "na", "—": "na"}.get(text, "")


def to_html(lb: Leaderboard | pd.DataFrame, *, title: str = "saliency-bench leaderboard") -> str:
    """A self-contained HTML page: inline CSS, one table per model, the failed jobs, the figures as
    base64 ``<img>``."""
    lb = lb if isinstance(lb, Leaderboard) else Leaderboard(board=lb)
    board, esc = lb.board, html.escape
    groups = _groups(board)
    out = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<h1>{esc(title)}</h1>",
           "<p class='legend'>" + re.sub(r"`([^`]*)`", r"<code>\1</code>",
                                         esc(_legend(board.attrs.get("settings", {})))) + "</p>"]
    if lb.sources:
        out.append("<p class='legend'>Sources: " + ", ".join(f"<code>{esc(s)}</code>" for s in lb.sources) + "</p>")
    head1 = ["<th rowspan='2'>method</th>"]
    head2 = []
    for g, cols in groups:
        if g:
            head1.append(f"<th colspan='{len(cols)}'>{esc(g)}</th>")
            head2 += [f"<th>{esc(sub)}</th>" for _, sub in cols]
        else:
            head1 += [f"<th rowspan='2'>{esc(sub)}</th>" for _, sub in cols]
    for model, rows in board.groupby("model", sort=True):
        out += [f"<h2>{esc(str(model))}</h2>", "<table><thead>", "<tr>" + "".join(head1) + "</tr>",
                "<tr>" + "".join(head2) + "</tr>", "</thead><tbody>"]
        for _, r in rows.iterrows():
            cells = [f"<td class='method'>{esc(str(r['method']))}</td>"]
            for _, cols in groups:
                for c, _ in cols:
                    text = _cell(board, r, c)
                    cls = _html_class(text)
                    cells.append(f"<td class='{cls}'>{esc(text)}</td>" if cls else f"<td>{esc(text)}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table>")
    if not len(board):
        out.append("<p>No results.</p>")
    if len(lb.failed):
        out += [f"<h2>Failed jobs ({len(lb.failed)})</h2>",
                "<table><thead><tr><th>job</th><th>overrides</th><th>status</th><th>error</th></tr></thead><tbody>"]
        out += [f"<tr><td class='method'>{esc(r.job)}</td><td>{esc(r.overrides)}</td><td class='fail'>"
                f"{esc(r.status)}</td><td style='text-align:left'>{esc(r.error)}</td></tr>"
                for r in lb.failed.itertuples()]
        out.append("</tbody></table>")
    if lb.figures:
        out.append("<h2>Figures</h2>")
        for path in lb.figures:
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            out.append(f"<figure><img alt='{esc(Path(path).name)}' src='data:image/png;base64,{data}'>"
                       f"<figcaption>{esc(_short(path, lb.sources))}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def _short(path: Path, sources: Sequence[str]) -> str:
    for s in sources:
        try:
            return str(Path(path).relative_to(s))
        except ValueError:
            continue
    return str(path)


def write_leaderboard(lb: Leaderboard | pd.DataFrame, out: str | os.PathLike,
                      formats: Iterable[str] = FORMATS) -> dict[str, Path]:
    """Write ``leaderboard.<fmt>`` for each format (``md``, ``csv``, ``html``) into ``out``; returns the paths."""
    lb = lb if isinstance(lb, Leaderboard) else Leaderboard(board=lb)
    formats = list(formats)
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown formats {sorted(unknown)}; accepted: {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        path = out / f"{FILE_STEM}.{fmt}"
        tmp = out / f".{path.name}.tmp{os.getpid()}"
        if fmt == "csv":
            lb.board.to_csv(tmp, index=False)
        else:
            tmp.write_text(to_markdown(lb) if fmt == "md" else to_html(lb), encoding="utf-8")
        os.replace(tmp, path)
        paths[fmt] = path
    return paths


# -- command line ----------------------------------------------------------------------------------------


def add_build_options(parser: argparse.ArgumentParser, *, metric_default: str | None = DEFAULT_METRIC) -> None:
    """The options that decide the leaderboard's values (shared with ``salbench-check``)."""
    parser.add_argument("--metric", default=metric_default,
                        help=f"randomization similarity metric (default: {metric_default or 'from the baseline'})")
    parser.add_argument("--pass-threshold", type=float, default=DEFAULT_PASS_THRESHOLD,
                        help="randomization passes when the last-stage similarity is below this (default 0.5)")
    parser.add_argument("--auc-threshold", type=float, default=None,
                        help="also require the area under the randomization curve below this (default: not used)")
    parser.add_argument("--ssim-threshold", type=float, default=0.99,
                        help="invariance passes when the mean SSIM is at least this (default 0.99)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="'exact' when the 95th percentile of max_rel_diff is at most this (default 1e-3)")


def build_kwargs(args: argparse.Namespace) -> dict:
    return dict(tolerance=args.tolerance, ssim_threshold=args.ssim_threshold, randomization_metric=args.metric,
                pass_threshold=args.pass_threshold, auc_threshold=args.auc_threshold)


def main(argv: Sequence[str] | None = None) -> int:
    """``salbench-leaderboard FOLDER [FOLDER ...] [--out DIR] [--format md,csv,html] [--sort KEY]
    [--metric NAME]``: print the Markdown leaderboard and write the files. Exit status 0, or 2 when there
    are no results."""
    parser = argparse.ArgumentParser(prog="salbench-leaderboard", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="sweep or job folders (searched for results.parquet)")
    parser.add_argument("--out", default=None, help="where to write leaderboard.* (default: the first folder)")
    parser.add_argument("--format", default=",".join(FORMATS), help="comma-separated subset of md,csv,html")
    parser.add_argument("--sort", default="passed",
                        help="passed (default), method, or a column name (prefix - for descending)")
    parser.add_argument("--no-figures", action="store_true", help="do not embed the PNG figures in the HTML")
    add_build_options(parser)
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    if set(formats) - set(FORMATS):
        parser.error(f"--format: unknown {sorted(set(formats) - set(FORMATS))}; accepted: {','.join(FORMATS)}")
    try:
        lb = load_leaderboard(args.folders, figures=not args.no_figures, sort=args.sort, **build_kwargs(args))
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
    print("written: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
