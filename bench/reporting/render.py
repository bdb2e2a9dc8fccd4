"""Rendering a leaderboard: Markdown, CSV and a self-contained HTML page (inline CSS, figures embedded)."""

from __future__ import annotations

import base64
import html
import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from bench._io import atomic_write
from bench.reporting.cells import inv_column, rand_column
from bench.reporting.leaderboard import EXACT, FAIL, NA, PASS, Leaderboard

__all__ = ["to_markdown", "to_html", "write_leaderboard", "read_leaderboard_csv", "comparison_markdown", "FORMATS"]

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


def _legend(settings: dict) -> str:
    metric, drop = settings.get("randomization_metric", "ssim"), settings.get("min_drop", 0.4)
    return (f"Invariance: a shift passes when the mean SSIM between the two networks' maps is >= "
            f"{settings.get('ssim_threshold', 0.99):g} and the signed maps' SSIM is >= 0.9 (a map that flips its sign "
            "is not invariant) (`exact`: 95th percentile of the max relative difference "
            f"<= {settings.get('tolerance', 1e-3):g}). "
            f"Randomization ({metric} to the trained model's map, per sample; in `labels` to the map of a model "
            "trained with the permuted-label model's recipe on the true labels): `pass` when the paired drop below "
            "the method's own repeatability control (`repeat`: a second map of the same model, another noise seed) "
            f"has a 95% lower bound >= {drop:g} at every checked stage (`cascading`: the top unit alone and the "
            "whole model; otherwise the last stage); `input-dominated` when a map of the input alone is at least half "
            "as similar to the reference map as its repeat and the fully randomized map stays that similar; "
            "`inconclusive` when fewer than 8 paired samples, no control, or the method is not repeatable (repeat < "
            "0.5); `fail` otherwise. `top` / `last`: mean at the first / last stage; AUC: mean over stages. "
            "Brackets: 95% bootstrap intervals over samples (hierarchical over seeds; 1,000 resamples, fixed seed); "
            "an invariance pass must hold for the interval's lower end. `invariance` / `randomization`: pass when "
            "every shift / "
            "mode run passed. N/A: not run.")


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
    return {PASS: "pass", EXACT: "exact", FAIL: "fail", NA: "na", "—": "na", "input-dominated": "fail",
            "inconclusive": "na"}.get(text, "")


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
        if fmt == "csv":
            atomic_write(path, lambda tmp: lb.board.to_csv(tmp, index=False))
        else:
            atomic_write(path, to_markdown(lb) if fmt == "md" else to_html(lb))
        paths[fmt] = path
    return paths


