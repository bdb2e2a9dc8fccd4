"""Rendering a leaderboard: Markdown, CSV and a self-contained HTML page (inline CSS and a few lines of script that
sort the tables, a metadata header, verdicts coloured per word, the figures embedded, grouped side by side and
captioned). No torch."""

from __future__ import annotations

import base64
import html
import importlib.metadata
import logging
import math
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from bench._io import atomic_write
from bench.reporting.aggregate import INCONCLUSIVE, INPUT_DOMINATED
from bench.reporting.cells import inv_column, rand_column
from bench.reporting.leaderboard import EXACT, FAIL, NA, NONFINITE_COLUMN, PASS, Leaderboard, parse_nonfinite
from bench.reporting.safe_csv import write_csv
from bench.reporting.sweep_files import Figure, describe_figures

__all__ = ["to_markdown", "to_html", "write_leaderboard", "read_leaderboard_csv", "comparison_markdown",
           "report_metadata", "FORMATS"]

log = logging.getLogger(__name__)

FORMATS = ("md", "csv", "html")
FILE_STEM = "leaderboard"


def read_leaderboard_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A leaderboard CSV as written by :func:`write_leaderboard` (``N/A`` stays a string; empty = NaN)."""
    return pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"model": str, "method": str})


def _groups(board: pd.DataFrame) -> list[tuple[str, list[tuple[str, str]]]]:
    """Display layout: ``[(group label, [(column, sub-label), ...]), ...]`` after ``method``."""
    groups: list[tuple[str, list[tuple[str, str]]]] = [
        ("", [("passed", "passed"), ("invariance", "invariance"), ("randomization", "randomization")])]
    for col in board.columns:
        parts = col.split("/")
        if parts[0] == "inv" and parts[-1] != "verdict" and not col.endswith(("_lo", "_hi")):
            shift = "/".join(parts[1:-1])
            label = "SSIM" if parts[-1] == "ssim" else parts[-1]
            groups.append((shift, [(col, label), (inv_column(shift, "verdict"), "verdict")]))
        elif parts[0] == "rand" and parts[-1] == "last":
            mode, metric = "/".join(parts[1:-2]), parts[-2]
            cols = [(rand_column(mode, "repeat", metric), "repeat"), (rand_column(mode, "top", metric), "top"),
                    (col, "last"), (rand_column(mode, "auc", metric), "AUC"), (rand_column(mode, "verdict"), "verdict")]
            groups.append((f"{mode} ({metric})", [(c, sub) for c, sub in cols if c in board.columns]))
    for col in board.columns:
        if col.startswith("rank/") and not col.endswith(("_lo", "_hi")):
            groups.append((f"rank by {col[len('rank/'):]}", [(col, "rank")]))
    return groups


def comparison_markdown(comparison: pd.DataFrame) -> str:
    """A paired comparison (:func:`bench.reporting.leaderboard.compare_methods`) as a Markdown table."""
    from tabulate import tabulate

    if not len(comparison):
        return "No cell holds both methods."
    a, b = comparison["a"].iloc[0], comparison["b"].iloc[0]
    body = [[r.model, r.column, f"{r.estimate_a:.3f}", f"{r.estimate_b:.3f}",
             f"{r.diff:+.3f} [{r.diff_lo:+.3f}, {r.diff_hi:+.3f}]", f"{r.p_a_better:.3f}"]
            for r in comparison.itertuples()]
    head = ["model", "cell", a, b, f"{a} - {b} [95% interval]", f"P({a} better)"]
    return "\n".join([f"# {a} vs {b} (paired bootstrap)", "",
                      tabulate(body, head, tablefmt="github", disable_numparse=True), ""])


def _cell(board: pd.DataFrame, row: pd.Series, col: str) -> str:
    if col == "passed":
        return f"{row['passed']}/{row['tests']}"
    value = row[col]
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        lo, hi = row.get(f"{col}_lo", math.nan), row.get(f"{col}_hi", math.nan)
        fmt = "g" if col.startswith("rank/") else ".3f"
        if isinstance(lo, float) and isinstance(hi, float) and not (math.isnan(lo) or math.isnan(hi)):
            return f"{value:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"
        return f"{value:{fmt}}"
    return str(value)


#: the mark of a cell whose per-sample scores are not all finite (the board's ``nonfinite`` note column)
NONFINITE_MARK = "*"
NONFINITE_NOTE = (f"Cells marked {NONFINITE_MARK} hold non-finite per-sample scores (NaN: undefined, e.g. the rank "
                  "correlation of a constant map; inf: never legitimate), left out of the cell's mean and interval:")


def _nonfinite(row: pd.Series) -> dict[str, dict[str, int]]:
    """The row's cells with non-finite per-sample scores, read from its note (``{}`` without one)."""
    try:
        return parse_nonfinite(row.get(NONFINITE_COLUMN))
    except ValueError:
        return {}


def _counts_text(counts: Mapping[str, int]) -> str:
    kinds = ", ".join(f"{counts[k]} {k}" for k in ("NaN", "inf") if counts.get(k))
    return f"{kinds} of {counts['n']} samples"


def _marked(text: str) -> str:
    """``text`` of a cell with the non-finite mark after its value (before the interval)."""
    value, bracket, interval = text.partition(" [")
    return f"{value}{NONFINITE_MARK}{bracket}{interval}"


def _nonfinite_lines(rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(method, column, counts text)`` of every marked cell of ``rows`` (one model's rows)."""
    return [(str(r["method"]), col, _counts_text(c)) for _, r in rows.iterrows() for col, c in _nonfinite(r).items()]


def _legend(settings: dict) -> str:
    from bench.reporting.aggregate import MODEL_CHANGE_BAR, PASS_BAR

    metric, drop = settings.get("randomization_metric", "ssim"), settings.get("min_drop", PASS_BAR)
    return (f"Invariance: a shift passes when the mean SSIM between the two networks' maps is >= "
            f"{settings.get('ssim_threshold', 0.99):g} and the signed maps' SSIM is >= 0.9 (a map that flips its sign "
            "is not invariant) (`exact`: 95th percentile of the max relative difference "
            f"<= {settings.get('tolerance', 1e-3):g}). "
            f"Randomization ({metric} to the trained model's map, per sample; in `labels` to the map of a model "
            "trained with the permuted-label model's recipe on the true labels): the relative change is the drop "
            "below the repeatability control (`repeat`: the map of a copy of the model, the same seeds) as a share of "
            "the model's own change (its input gradient's drop at the same stage, measured in the same run); `pass` "
            f"when its 95% lower bound is >= {drop:g} at every checked stage (`cascading`: the top unit alone and the "
            "whole model; otherwise the last stage) and the model's gradient went at least "
            f"{MODEL_CHANGE_BAR:g} of the way to another sample's map; `fail` when the upper bound is below "
            f"{drop:g}; `input-dominated` instead when what survives is what a map of the input alone explains; "
            "`inconclusive` when the interval covers the bar, the model changed too little to tell, fewer than 8 "
            "paired samples, no control, or the method is not repeatable (repeat < 0.5). Calibrated on a family of "
            "models (benchmarks/calibration.md). `top` / `last`: mean at the first / last stage; AUC: mean over "
            "stages. Brackets: 95% bootstrap intervals over samples (hierarchical over seeds; 1,000 resamples, fixed "
            "seed); an invariance pass must hold for the interval's lower end. `invariance` / `randomization`: pass "
            "when every shift / mode run passed. N/A: not run.")


def _short(path: str | os.PathLike, sources: Sequence[str]) -> str:
    """``path`` relative to the first source folder that holds it (the folder's name when it is the source
    itself); the path as it is otherwise."""
    path = Path(path)
    for s in sources:
        try:
            rel = path.relative_to(s)
        except ValueError:
            continue
        return str(rel) if str(rel) != "." else path.name
    return str(path)


def _skip_reason(path: Path, reason: str) -> str:
    """The first line of why a results file was skipped, without the path it starts with."""
    first = reason.strip().splitlines()[0] if reason.strip() else "unreadable"
    return first[len(str(path)):].strip() if first.startswith(str(path)) else first


def _failed_markdown(lb: Leaderboard) -> list[str]:
    lines = [f"## Failed jobs ({len(lb.failed)})", ""]
    for r in lb.failed.itertuples():
        head = f"- `{_short(r.job, lb.sources)}`{' (' + r.overrides + ')' if r.overrides else ''}: {r.status}"
        failures = list(getattr(r, "failures", None) or [])
        if len(failures) > 1:
            lines += [head] + [f"  - {what}: {msg}" for what, msg in failures]
        else:
            lines.append(f"{head}: {r.error}")
    return lines + [""]


def _skipped_markdown(lb: Leaderboard) -> list[str]:
    lines = [f"## Skipped results files ({len(lb.skipped)})", "",
             "Not readable: the leaderboard above is built from the other files.", ""]
    lines += [f"- `{_short(p, lb.sources)}`: {_skip_reason(Path(p), r)}" for p, r in lb.skipped]
    return lines + [""]


def to_markdown(lb: Leaderboard | pd.DataFrame) -> str:
    """The leaderboard as Markdown: a legend, one table per model, then the results files that were skipped
    (unreadable) and the failed jobs (per failed method / condition, the first line of its error)."""
    from tabulate import tabulate

    lb = lb if isinstance(lb, Leaderboard) else Leaderboard(board=lb)
    board = lb.board
    lines = ["# Leaderboard", "", _legend(board.attrs.get("settings", {})), ""]
    groups = _groups(board)
    headers = ["method"] + [f"{g}: {sub}" if g else sub for g, cols in groups for _, sub in cols]
    for model, rows in board.groupby("model", sort=True):
        body = []
        for _, r in rows.iterrows():
            marks = _nonfinite(r)
            body.append([r["method"]] + [_marked(_cell(board, r, c)) if c in marks else _cell(board, r, c)
                                         for _, cols in groups for c, _ in cols])
        lines += [f"## {model}", "", tabulate(body, headers, tablefmt="github", disable_numparse=True), ""]
        notes = _nonfinite_lines(rows)
        if notes:
            lines += [NONFINITE_NOTE, ""] + [f"- {m} / {col}: {what}" for m, col, what in notes] + [""]
    if not len(board):
        lines += ["No results.", ""]
    if lb.skipped:
        lines += _skipped_markdown(lb)
    if len(lb.failed):
        lines += _failed_markdown(lb)
    return "\n".join(lines)


# -- HTML ------------------------------------------------------------------------------------------------------

#: the page's style. The leaderboard tables (``table.board``) wrap their headers, show each interval on a second line,
#: keep the header (``thead``) and the method column (``.method``) sticky inside their container (``div.board``, which
#: scrolls, never the page); each verdict word has its own class and colour rule (:data:`VERDICT_CLASSES`); figures
#: sit in grids of cards (``div.figgrid``), one row per condition when several jobs show it, side by side.
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em 2em;color:#222}
h1,h2,h3,h4,h5{font-weight:600}h3{margin:1.4em 0 .4em}h4{margin:.8em 0 .4em;color:#444}
h5{margin:.8em 0 .3em;color:#555;font-size:.9em}
table{border-collapse:collapse;margin:0 0 2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right;white-space:nowrap}th{background:#f2f2f2}
th[colspan]{text-align:center}td.text{white-space:normal}
th[data-col]{cursor:pointer;user-select:none}th[data-col]:hover{background:#e2e8f0}
th[aria-sort=ascending]::after{content:" \\25B2";font-size:.7em}
th[aria-sort=descending]::after{content:" \\25BC";font-size:.7em}
td.method,td.text{text-align:left}span.ci{font-size:.85em;color:#555}div.scroll{overflow-x:auto;max-width:100%}
td.method{font-weight:600}
span.nonfinite::after{content:"*";color:#b00000;font-weight:600}
p.legend{max-width:80em;color:#444}
p.meta{color:#444;margin:-.5em 0 1.5em}p.meta span+span::before{content:" \\00B7  "}
figure img{max-width:100%;height:auto}
figcaption{font-size:.85em;color:#333}figcaption .job{color:#666;font-weight:600}
ul.errors{margin:0;padding-left:1.2em;text-align:left}
div.board{overflow:auto;max-width:100%;max-height:calc(100vh - 3em);margin:0 0 2em;border:1px solid #bbb}
table.board{border-collapse:separate;border-spacing:0;margin:0;font-size:.85em}
table.board th,table.board td{border:0;border-right:1px solid #ddd;border-bottom:1px solid #ddd;padding:.25em .45em}
table.board th{white-space:normal;vertical-align:bottom;line-height:1.2}
table.board thead{position:sticky;top:0;z-index:2}
table.board th.family{background:#e4e8ee;font-size:1.05em}table.board th.sub{background:#eef1f5}
table.board .method{position:sticky;left:0;z-index:1;background:#fff;text-align:left;border-right:2px solid #999}
table.board th.method{background:#e4e8ee;z-index:3;vertical-align:middle}
table.board .start{border-left:2px solid #999}
table.board td span.ci{display:block;font-size:.8em}
td.v,span.v{font-weight:600}table.board td.v{text-align:center;white-space:normal}
span.v{display:inline-block;padding:.1em .5em;border:1px solid #ccc}
.pass{background:#cdebcd;color:#14501a}.exact{background:#9fd89f;color:#0b3d10}
.fail{background:#f5c2c2;color:#7d0a0a}
.input-dominated{background:#ffd8a8;color:#7a3b00}
.inconclusive{background:#d9dcf7;color:#262a7a}
.na{background:#f3f3f3;color:#888;font-style:italic}td.v.na,span.v.na{font-weight:400}
ul.key{list-style:none;padding:0;margin:.2em 0 1em;display:flex;flex-wrap:wrap;gap:.4em 1.4em;font-size:.9em}
div.figgrid{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,var(--track,260px)),1fr));gap:1em;
 align-items:start;margin:0 0 1.2em}
figure.card{margin:0;padding:.5em;border:1px solid #ddd;border-radius:4px;background:#fff;cursor:zoom-in}
figure.card.wide{grid-column:1/-1;cursor:zoom-out}figure.card img{display:block;margin:0 auto}
"""

#: sorts a table by the clicked header (``th[data-col]``: the column's cell index); numbers (the leading number of
#: a cell: "0.061 [0.039, 0.087]" sorts as 0.061) before text (alphabetical), empty cells ("—", "N/A") last in
#: either direction; a second click reverses; ties keep their order. A click on a figure's card widens it to the
#: whole row (and back)
_SORT_JS = """
(function(){
function key(t){t=t.trim();var m=/^[-+]?(\\d+\\.?\\d*|\\.\\d+)(e[-+]?\\d+)?/i.exec(t);
 if(m)return[0,parseFloat(m[0]),''];return[(t===''||t==='\\u2014'||t==='N/A')?2:1,0,t.toLowerCase()];}
document.querySelectorAll('table.sortable th[data-col]').forEach(function(th){
 th.tabIndex=0;th.title='sort by this column';
 function sort(){var table=th.closest('table'),body=table.tBodies[0],col=+th.getAttribute('data-col');
  var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
  table.querySelectorAll('th[data-col]').forEach(function(h){h.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',dir>0?'ascending':'descending');
  var rows=Array.prototype.map.call(body.rows,function(r,i){var c=r.cells[col];return[key(c?c.textContent:''),i,r];});
  rows.sort(function(a,b){var x=a[0],y=b[0];if(x[0]!==y[0])return x[0]-y[0];
   var c=x[0]===0?x[1]-y[1]:(x[2]<y[2]?-1:x[2]>y[2]?1:0);return c*dir||a[1]-b[1];});
  rows.forEach(function(r){body.appendChild(r[2]);});}
 th.addEventListener('click',sort);
 th.addEventListener('keydown',function(e){if(e.key==='Enter'||e.key===' '){e.preventDefault();sort();}});
});
document.querySelectorAll('figure.card').forEach(function(f){
 f.addEventListener('click',function(){f.classList.toggle('wide');});});
})();
"""


#: every verdict word -> the class of its cell; each class has its own colour rule in the page's CSS (the word is
#: always written too: the colour is never the only cue). ``—`` (not run, undefined) reads as ``N/A``.
VERDICT_CLASSES: dict[str, str] = {PASS: "pass", EXACT: "exact", FAIL: "fail", INPUT_DOMINATED: "input-dominated",
                                   INCONCLUSIVE: "inconclusive", NA: "na"}
#: what each verdict word means, for the key above the tables
VERDICT_MEANINGS: dict[str, str] = {
    PASS: "the map follows the model", EXACT: "invariance: identical maps",
    FAIL: "the map does not follow the model", INPUT_DOMINATED: "what survives is what the input alone explains",
    INCONCLUSIVE: "the evidence does not decide", NA: "not run"}


def _html_class(text: str) -> str:
    """The class of a cell that reads ``text``: the verdict's (:data:`VERDICT_CLASSES`), ``na`` for ``—``, else
    ``""``."""
    return VERDICT_CLASSES.get(text, "na" if text == "—" else "")


def _verdict_key() -> str:
    """The key to the verdict colours: each word in its own colour, with what it means."""
    items = "".join(f"<li><span class='v {VERDICT_CLASSES[w]}'>{html.escape(w)}</span> {html.escape(m)}</li>"
                    for w, m in VERDICT_MEANINGS.items())
    return f"<ul class='key'>{items}</ul>"


def _git_commit(folder: Path) -> str:
    """``git describe --always --dirty`` of the checkout whose top folder is ``folder``; ``""`` when ``folder`` is
    not the top of a git checkout, or git is missing or slow."""
    try:
        top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=5)
        if top.returncode or Path(top.stdout.strip()).resolve() != folder.resolve():
            return ""
        out = subprocess.run(["git", "-C", str(folder), "describe", "--always", "--dirty", "--abbrev=12"],
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def report_metadata() -> dict[str, str]:
    """What produced a report: ``generated`` (now, UTC), ``version`` (of the installed saliency-bench, ``"unknown"``
    when it is not installed), ``commit`` (``git describe`` of the checkout the package runs from, else of the
    checkout that is the working folder, ``""`` when neither) and ``commit_of`` (``"package"`` or ``"cwd"``).
    Never raises."""
    try:
        version = importlib.metadata.version("saliency-bench")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    meta = {"generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "version": version, "commit": "",
            "commit_of": ""}
    package_root = Path(__file__).resolve().parents[2]
    for where, folder in (("package", package_root), ("cwd", Path.cwd())):
        commit = _git_commit(folder)
        if commit:
            meta.update(commit=commit, commit_of=where)
            break
    return meta


def _values_text(values: object, fmt: str = "") -> str:
    items = list(values) if isinstance(values, (list, tuple)) else [values]
    return ", ".join(f"{v:{fmt}}" if fmt and isinstance(v, (int, float)) else str(v) for v in items) or "—"


def _seeds_text(seeds: Sequence) -> str:
    """``"1 (seed 0)"``, ``"5 (seeds 0–4)"``, ``"2 (seeds 0, 3)"``; ``"—"`` when none is known."""
    seeds = sorted(int(s) for s in seeds)
    if not seeds:
        return "—"
    if len(seeds) == 1:
        return f"1 (seed {seeds[0]})"
    run = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1))
    return f"{len(seeds)} (seeds {f'{seeds[0]}–{seeds[-1]}' if run else _values_text(seeds)})"


def _table(head: Sequence[str], rows: Iterable[Sequence[tuple[str, str]]]) -> list[str]:
    """A sortable HTML table: ``head`` labels, ``rows`` of ``(cell HTML, td class)``."""
    out = ["<div class='scroll'><table class='sortable'><thead><tr>"
           + "".join(f"<th data-col='{i}'>{html.escape(h)}</th>" for i, h in enumerate(head)) + "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>" + "".join(f"<td class='{c}'>{v}</td>" if c else f"<td>{v}</td>" for v, c in row) + "</tr>")
    out.append("</tbody></table></div>")
    return out


def _models_html(models: pd.DataFrame) -> list[str]:
    esc = html.escape
    rows = [[(esc(str(r.model)), "method"), (esc(_values_text(r.dataset)), "text"),
             (esc(_values_text(r.test_acc, ".4f")), ""), (esc(_values_text(r.train_acc, ".4f")), ""),
             (esc(_values_text(r.n_samples)), ""), (esc(_seeds_text(r.seeds)), ""), (str(r.jobs), "")]
            for r in models.itertuples()]
    return ["<h2>Models</h2>",
            *_table(["model", "data", "test accuracy", "train accuracy", "samples", "seeds", "jobs"], rows)]


#: a leaderboard table's columns as the HTML header shows them, in three levels: ``[(family, [(group, [(board
#: column, label), ...]), ...]), ...]``
BoardLayout = list[tuple[str, list[tuple[str, list[tuple[str, str]]]]]]


def _condition_of(col: str) -> str:
    """The shift or mode a per-condition column is about: ``inv/mean_shift/verdict`` -> ``mean_shift``."""
    return "/".join(col.split("/")[1:-1])


def board_layout(board: pd.DataFrame) -> BoardLayout:
    """The columns of the HTML leaderboard (each column of the Markdown table once, in other places) under a
    three-level header, test family -> shift / mode -> statistic:

    - ``Verdicts`` first, so that they are visible without scrolling: ``overall`` (passed, invariance,
      randomization), then the ``invariance`` verdict per shift and the ``randomization`` verdict per mode, each
      labelled by its shift / mode;
    - ``Input invariance``: per shift, its score (SSIM);
    - ``Model randomization``: per mode and verdict score (``cascading (ssim)``), repeat, top, last and AUC;
    - ``Rank``: per ranking (``by rand/cascading/ssim/top``), the rank.

    Families and groups without columns are left out."""
    overall: list[tuple[str, str]] = []
    verdicts: dict[str, list[tuple[str, str]]] = {"invariance": [], "randomization": []}
    scores: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {"Input invariance": [], "Model randomization": [],
                                                                   "Rank": []}
    seen: set[str] = set()
    for group, cols in _groups(board):
        cols = [(c, sub) for c, sub in cols if c not in seen]
        seen.update(c for c, _ in cols)
        if not group:
            overall += cols
            continue
        kind = cols[0][0].split("/")[0] if cols else ""
        verdicts_here = [(c, _condition_of(c)) for c, _ in cols if c.endswith("/verdict")]
        rest = [(c, sub) for c, sub in cols if not c.endswith("/verdict")]
        if kind == "inv":
            verdicts["invariance"] += verdicts_here
            scores["Input invariance"].append((group, rest))
        elif kind == "rand":
            verdicts["randomization"] += verdicts_here
            scores["Model randomization"].append((group, rest))
        elif kind == "rank":
            scores["Rank"].append((group.removeprefix("rank "), rest))
    layout: BoardLayout = [("Verdicts", [(g, cols) for g, cols in [("overall", overall), *verdicts.items()] if cols])]
    layout += [(family, [(g, cols) for g, cols in groups if cols]) for family, groups in scores.items()]
    return [(family, groups) for family, groups in layout if groups]


def _breakable(label: str) -> str:
    """``label`` as HTML that may wrap after an underscore, a slash or before a parenthesis (``<wbr>``: the text of
    the header, what the table sorts and tests read, stays the label)."""
    text = html.escape(label)
    return re.sub(r"([_/])", r"\1<wbr>", text).replace(" (", " <wbr>(")


def _classes(*names: str) -> str:
    """`` class='a b'`` of the non-empty ``names``; ``""`` without any."""
    names = tuple(n for n in names if n)
    return f" class='{' '.join(names)}'" if names else ""


def _board_head(layout: BoardLayout) -> list[str]:
    """The three header rows of a leaderboard table: families and groups span their columns (``colspan``); each
    column's own header (``data-col``: its cell index, ``data-key``: its board column) sorts the table. The first
    column of each group is marked ``start`` (a stronger rule between groups)."""
    families = ["<th rowspan='3' data-col='0' data-key='method' class='method'>method</th>"]
    groups, leaves = [], []
    col = 1
    for family, family_groups in layout:
        width = sum(len(cols) for _, cols in family_groups)
        families.append(f"<th colspan='{width}' class='family start'>{html.escape(family)}</th>")
        for group, cols in family_groups:
            groups.append(f"<th colspan='{len(cols)}' class='sub start'>{_breakable(group)}</th>")
            for i, (c, label) in enumerate(cols):
                leaves.append(f"<th data-col='{col}' data-key='{html.escape(c)}'{_classes('start' if i == 0 else '')}>"
                              f"{_breakable(label)}</th>")
                col += 1
    return ["<thead>", "<tr>" + "".join(families) + "</tr>", "<tr>" + "".join(groups) + "</tr>",
            "<tr>" + "".join(leaves) + "</tr>", "</thead>"]


def _board_cell(board: pd.DataFrame, row: pd.Series, col: str, marks: Mapping[str, Mapping[str, int]],
                start: bool) -> str:
    """One ``<td>``: the value, the non-finite mark (drawn by CSS: the cell's text, what the table sorts by, stays
    the number) and the interval (``span.ci``); a verdict word gets its class (:data:`VERDICT_CLASSES`) and ``v``."""
    esc = html.escape
    text = _cell(board, row, col)
    cls = _html_class(text)
    value, bracket, interval = text.partition(" [")
    mark = f"<span class='nonfinite' title='{esc(_counts_text(marks[col]))}'></span>" if col in marks else ""
    body = esc(value) + mark + (f" <span class='ci'>[{esc(interval)}</span>" if bracket else "")
    verdict = "v" if cls and (col.endswith("verdict") or col in ("invariance", "randomization")) else ""
    return f"<td{_classes(verdict, cls, 'start' if start else '')}>{body}</td>"


def _board_html(board: pd.DataFrame) -> list[str]:
    """Per model, a heading and its table (``table.board`` in a scrolling ``div.board``: :func:`board_layout`),
    then the notes on its non-finite cells."""
    esc = html.escape
    layout = board_layout(board)
    head = _board_head(layout)
    columns = [(c, i == 0) for _, groups in layout for _, cols in groups for i, (c, _) in enumerate(cols)]
    out = []
    for model, rows in board.groupby("model", sort=True):
        out += [f"<h2>{esc(str(model))}</h2>", "<div class='board'><table class='sortable board'>", *head, "<tbody>"]
        for _, r in rows.iterrows():
            marks = _nonfinite(r)
            cells = [f"<td class='method'>{esc(str(r['method']))}</td>"]
            cells += [_board_cell(board, r, c, marks, start) for c, start in columns]
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody></table></div>")
        notes = _nonfinite_lines(rows)
        if notes:
            out += [f"<p class='legend'>{esc(NONFINITE_NOTE)}</p>", "<ul class='nonfinite'>"]
            out += [f"<li>{esc(m)} / {esc(col)}: {esc(what)}</li>" for m, col, what in notes] + ["</ul>"]
    return out


def _failed_html(lb: Leaderboard) -> list[str]:
    esc = html.escape
    rows = []
    for r in lb.failed.itertuples():
        failures = list(getattr(r, "failures", None) or [])
        what = ("<ul class='errors'>" + "".join(f"<li>{esc(w)}: {esc(m)}</li>" for w, m in failures) + "</ul>"
                if len(failures) > 1 else esc(r.error))
        rows.append([(esc(_short(r.job, lb.sources)), "method"), (esc(r.overrides), "text"), (esc(r.status), "fail"),
                     (what, "text")])
    return [f"<h2>Failed jobs ({len(lb.failed)})</h2>", *_table(["job", "overrides", "status", "what failed"], rows)]


def _skipped_html(lb: Leaderboard) -> list[str]:
    esc = html.escape
    rows = [[(esc(_short(p, lb.sources)), "method"), (esc(_skip_reason(Path(p), r)), "text")] for p, r in lb.skipped]
    return [f"<h2>Skipped results files ({len(lb.skipped)})</h2>",
            "<p class='legend'>Not readable: the leaderboard above is built from the other files.</p>",
            *_table(["results file", "why"], rows)]


def _png_data(path: Path, compact: bool) -> bytes:
    """The PNG's bytes; with ``compact``, a lossless re-encoding when it is smaller: an opaque RGBA image without
    its alpha channel, as a palette image when it has at most 256 colours (checked pixel for pixel: the embedded
    figure shows exactly what the file shows). The file is not changed."""
    data = Path(path).read_bytes()
    if not compact:
        return data
    try:
        import io

        from PIL import Image, ImageChops

        with Image.open(io.BytesIO(data)) as im:
            if im.mode not in ("RGB", "RGBA") or (im.mode == "RGBA" and im.getchannel("A").getextrema()[0] < 255):
                return data  # transparency or an unusual mode: as it is
            rgb = im.convert("RGB")
        colours = rgb.getcolors(256)
        small = rgb
        if colours:
            pal = rgb.quantize(len(colours), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            if ImageChops.difference(pal.convert("RGB"), rgb).getbbox() is None:  # exact
                small = pal
        buf = io.BytesIO()
        small.save(buf, format="PNG")
        return buf.getvalue() if buf.tell() < len(data) else data
    except Exception as err:  # noqa: BLE001  (a figure that PIL cannot re-encode is embedded as it is)
        log.debug("figure %s embedded as it is: %s", path, err)
        return data


#: the figures of one (model, test) as the page shows them: ``(row label, figures)`` per grid
FigureRows = list[tuple[str, list[Figure]]]


def figure_rows(figures: Sequence[Figure]) -> list[tuple[str, str, FigureRows]]:
    """The figures grouped for the page, in their order: per (model, test), ``(model, test, rows)``. When a
    condition (shift or mode, and kind: maps or curves) is shown by several figures (one per job of a sweep over
    methods), each condition is a row of its own, labelled ``"mean_shift"`` / ``"cascading · maps"``, and its
    figures (its jobs) sit side by side in that row; otherwise (one job: each condition once) all the test's
    figures share one unlabelled grid, the conditions side by side."""
    sections: dict[tuple[str, str], dict[str, list[Figure]]] = {}
    for fig in figures:
        label = " · ".join(p for p in (fig.condition, fig.kind) if p)
        sections.setdefault((fig.model, fig.test), {}).setdefault(label, []).append(fig)
    out = []
    for (model, test), by_condition in sections.items():
        if max(len(figs) for figs in by_condition.values()) > 1:
            out.append((model, test, list(by_condition.items())))
        else:
            out.append((model, test, [("", [f for figs in by_condition.values() for f in figs])]))
    return out


#: a figure at least this many times wider than high is a strip (a cascade's stages, curves per metric)
STRIP_ASPECT = 2.5
#: the narrowest and widest column of a figure grid, in CSS px: a grid of strips gets the widest (two side by side
#: at 1920 px, one at 1280 px), any other grid 0.4 of its widest figure's width within these bounds
TRACK_PX = (260, 880)


def _png_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's header; ``None`` when ``data`` is not a PNG."""
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _is_strip(data: bytes) -> bool:
    size = _png_size(data)
    return bool(size and size[1] and size[0] / size[1] >= STRIP_ASPECT)


def _track_px(images: Sequence[bytes]) -> int:
    """The narrowest column of a grid of these PNGs (:data:`TRACK_PX`): the widest bound for strips only, else 0.4
    of the widest figure's width, so that a grid of small figures holds many, one of large figures few."""
    low, high = TRACK_PX
    if all(_is_strip(data) for data in images):
        return high
    widths = [size[0] for size in map(_png_size, images) if size]
    return min(high, max(low, round(0.4 * max(widths, default=0))))


def _row_job_labels(row: Sequence[Figure]) -> list[str]:
    """The job labels of a row's figures without the words all of them share (``model=paper_mlp`` in a row of one
    model's figures): what tells the row's figures apart. A row of one figure keeps its label."""
    words = [f.job.split() for f in row]
    common = set.intersection(*(set(w) for w in words)) if len(row) > 1 else set()
    return [" ".join(w for w in ws if w not in common) or f.job for ws, f in zip(words, row, strict=True)]


def _figure_card(fig: Figure, data: bytes, job: str) -> str:
    """One figure as a card: the PNG as a data URI, the caption and ``job`` (the label that tells it from its
    neighbours; the job's whole label is the card's tooltip)."""
    esc = html.escape
    label = f"<br><span class='job'>{esc(job)}</span>" if job else ""
    tip = f"{fig.job} · click to enlarge" if fig.job else "click to enlarge"
    return (f"<figure class='card' title='{esc(tip)}'><img alt='{esc(fig.caption)}' "
            f"src='data:image/png;base64,{base64.b64encode(data).decode('ascii')}'>"
            f"<figcaption>{esc(fig.caption)}{label}</figcaption></figure>")


def _figure_grid(row: Sequence[Figure], compact: bool) -> list[str]:
    """One ``div.figgrid`` of cards, its narrowest column (``--track``) fitted to its figures (:func:`_track_px`;
    class ``strips`` when every figure is a strip); an unreadable figure is left out with a warning."""
    read = []
    for fig in row:
        try:
            read.append((fig, _png_data(fig.path, compact)))
        except OSError as err:
            log.warning("figure %s left out: %s", fig.path, err)
    if not read:
        return []
    strips = all(_is_strip(data) for _, data in read)
    track = _track_px([data for _, data in read])
    jobs = _row_job_labels([fig for fig, _ in read])
    cards = [_figure_card(fig, data, job) for (fig, data), job in zip(read, jobs, strict=True)]
    return [f"<div class='figgrid{' strips' if strips else ''}' style='--track:{track}px'>", *cards, "</div>"]


def _figures_html(figures: Sequence[Figure | Path], compact: bool) -> list[str]:
    """The figures section: per model (``h3``) and test (``h4``) the grids of :func:`figure_rows` (``div.figgrid``,
    a row label ``h5`` above each labelled one), each figure a card."""
    esc = html.escape
    figs = [f for f in figures if isinstance(f, Figure)]
    figs += describe_figures([Path(f) for f in figures if not isinstance(f, Figure)])
    out = [f"<h2>Figures ({len(figs)})</h2>"]
    model = None
    for fig_model, test, rows in figure_rows(figs):
        if fig_model != model:
            model = fig_model
            out.append(f"<h3>{esc(model)}</h3>")
        out.append(f"<h4>{esc(test.capitalize())}</h4>")
        for label, row in rows:
            grid = _figure_grid(row, compact)
            out += [f"<h5>{esc(label)}</h5>", *grid] if label and grid else grid
    return out


def to_html(lb: Leaderboard | pd.DataFrame, *, title: str = "saliency-bench leaderboard", compact: bool = True,
            meta: Mapping[str, str] | None = None) -> str:
    """A self-contained HTML page (inline CSS and script, figures as base64 ``<img>``; no external resource):

    - a header with what produced it (``meta``, default :func:`report_metadata`: generation time, package
      version, git commit) and the source folders; a table of the models (data, test and train accuracy, samples,
      seeds, jobs: :func:`bench.reporting.sweep_files.summarize_models`);
    - the legend and the key to the verdict colours (each verdict word its own colour, the word always written),
      then one table per model under a three-level header (:func:`board_layout`: the verdicts first, then the
      scores by test family and shift / mode) that wraps its headers and fits 1920 px for three shifts and one
      randomization mode; a wider table scrolls inside its own box with the header and the method column sticky;
      every table sorts by a click on a column header (numbers by their leading value, text alphabetically, empty
      cells last);
    - the results files skipped as unreadable, the failed jobs with what failed;
    - the figures, each once, grouped by model and test (:func:`figure_rows`), each a card in a grid, with
      captions such as ``paper_mlp · invariance · mean_shift``: the figures of one condition from several jobs (a
      sweep over methods) side by side in one row; a click widens a card to the row (``compact``: re-encoded
      losslessly when that is smaller)."""
    lb = lb if isinstance(lb, Leaderboard) else Leaderboard(board=lb)
    board, esc = lb.board, html.escape
    meta = report_metadata() if meta is None else meta
    facts = [esc(f"generated {meta.get('generated', '')}"), esc(f"saliency-bench {meta.get('version', 'unknown')}")]
    if meta.get("commit"):
        facts.append(esc(f"commit {meta['commit']}" + (" (working folder)" if meta.get("commit_of") == "cwd" else "")))
    if lb.sources:
        facts.append("sources: " + ", ".join(f"<code>{esc(s)}</code>" for s in lb.sources))
    out = ["<!DOCTYPE html>", "<html lang='en'><head><meta charset='utf-8'>",
           "<meta name='viewport' content='width=device-width, initial-scale=1'>", f"<title>{esc(title)}</title>",
           f"<style>{_CSS}</style></head><body>", f"<header><h1>{esc(title)}</h1>",
           "<p class='meta'>" + "".join(f"<span>{f}</span>" for f in facts) + "</p></header>"]
    if len(lb.models):
        out += _models_html(lb.models)
    out.append("<p class='legend'>" + re.sub(r"`([^`]*)`", r"<code>\1</code>",
                                             esc(_legend(board.attrs.get("settings", {})))) + "</p>")
    out.append(_verdict_key())
    out += _board_html(board)
    if not len(board):
        out.append("<p>No results.</p>")
    if lb.skipped:
        out += _skipped_html(lb)
    if len(lb.failed):
        out += _failed_html(lb)
    if lb.figures:
        out += _figures_html(lb.figures, compact)
    out += [f"<script>{_SORT_JS}</script>", "</body></html>"]
    return "\n".join(out)


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
        if fmt == "csv":
            write_csv(lb.board, path)  # text cells neutralized against spreadsheet formulas
        else:
            atomic_write(path, to_markdown(lb) if fmt == "md" else to_html(lb))
        paths[fmt] = path
    return paths


