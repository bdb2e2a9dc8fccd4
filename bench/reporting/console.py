"""The leaderboard for a terminal: one line per method, its verdict per test, within a fixed width.

:func:`console_summary` turns a leaderboard (:func:`bench.reporting.leaderboard.build_leaderboard`, or a
:class:`~bench.reporting.leaderboard.Leaderboard` with its failed jobs and skipped files) into plain text that a
100-column terminal shows without wrapping; the full tables (every mean with its interval) are the Markdown, CSV and
HTML files of :mod:`bench.reporting.render`. Pandas only, no torch.

Layout, per model (a heading line ``<model> (<n> methods)``, then a header line and one line per method)::

    paper_mlp (14 methods)
     # method                     verdict score | mean  check adv   | casc
     1 deconvnet                  pass     1.00 | exact exact exact | pass
     4 pattern_net                ?        0.75 | exact exact exact | ?
     6 guided_backprop            FAIL     0.50 | exact exact exact | FAIL
     9 integrated_gradients_black FAIL     0.17 | exact FAIL  FAIL  | input

- ``#``: the row's place within its model, in the board's order (the board's ``attrs["sort"]``; by default the
  ranking of :func:`bench.reporting.leaderboard.sort_leaderboard`: the ``verdict`` first, the worst test deciding,
  ``pass`` before ``?`` before ``input`` before ``FAIL``, then the balanced score, then the number of tests run, then
  the method name). With a rank column (``rank_by``), a ``rank`` column shows it with its 95% rank interval.
- ``verdict``: the worst test's verdict (the board's ``verdict`` column).
- ``score``: the balanced score (the board's ``balanced`` column, :func:`bench.reporting.leaderboard.balanced_score`):
  each test counts 1 (pass, exact), 0.5 (inconclusive) or 0 (fail, input-dominated); the score is the mean of the
  invariance tests' mean and the randomization tests' mean, each family weighing 1/2 and each test within its family
  alike (one family alone when only one was run). ``-`` when no test was run.
- one column per invariance shift, then (after ``|``) one per randomization mode (each as the board names it,
  abbreviated: :data:`ABBREVIATIONS`, else its first :data:`HEADER_WIDTH` characters; made unique by a digit).

Words: ``pass``, ``exact`` (a pass: the maps agree within the tolerance), ``FAIL``, ``input`` (input-dominated),
``?`` (inconclusive), ``-`` (not run); a method whose cells hold non-finite per-sample scores is marked ``*``.
After the tables: the failed jobs and the skipped results files (one line each), where the full tables are
(``files``), and the legend, wrapped, once.

Width: no line is longer than ``width`` (at least :data:`MIN_WIDTH`); colour codes do not count, they add no visible
character. Method and model names that do not fit are shortened in the middle (``captum_sha~_sampling``: the head
and the tail, which tell most names apart), deterministically. When even the shortest names leave no room for the
test columns, each method takes a line of its own followed by its verdicts, wrapped.

:func:`comparison_summary` does the same for a paired comparison of two methods
(:func:`bench.reporting.leaderboard.compare_methods`).

Colour (ANSI) only when ``color`` is true; ``None`` = auto: the stream is a terminal, ``NO_COLOR`` is unset or
empty (https://no-color.org) and ``TERM`` is not ``dumb`` (:func:`use_color`).
"""

from __future__ import annotations

import math
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import pandas as pd

from bench.reporting.aggregate import FAIL, INCONCLUSIVE, INPUT_DOMINATED, PASS
from bench.reporting.leaderboard import (
    EXACT,
    NA,
    NONFINITE_COLUMN,
    Leaderboard,
    balanced_score,
    overall_verdict,
    verdict_columns,
)

__all__ = ["console_summary", "comparison_summary", "use_color", "shorten", "ABBREVIATIONS", "WORDS", "MIN_WIDTH",
           "DEFAULT_WIDTH"]

DEFAULT_WIDTH = 100
#: the narrowest layout this module promises to fit
MIN_WIDTH = 40
#: the longest test header
HEADER_WIDTH = 6
#: the shortest a method name is cut to in the table layout before it falls back to one line per method
MIN_METHOD_WIDTH = 12
#: the same for a cell's name in :func:`comparison_summary`
MIN_CELL_WIDTH = 12
#: the short word of each verdict
WORDS = {PASS: "pass", EXACT: "exact", FAIL: "FAIL", INPUT_DOMINATED: "input", INCONCLUSIVE: "?", NA: "-"}
#: short headers of the bundled shifts and randomization modes
ABBREVIATIONS = {
    "mean_shift": "mean", "checkerboard": "check", "adversarial_image": "adv", "contrast": "contr",
    "cascading": "casc", "bottom_up": "b-up", "independent": "indep", "labels": "labels",
    "smooth_mprt": "smooth", "efficient_mprt": "eMPRT",
}
_COLORS = {PASS: "32", EXACT: "32", FAIL: "1;31", INPUT_DOMINATED: "35", INCONCLUSIVE: "33", NA: "2"}
_NAMES = {v: k for k, v in WORDS.items()}
_CUT = "~"


def use_color(stream: TextIO | None = None) -> bool:
    """Whether to colour text for ``stream`` (default: ``sys.stdout``): it is a terminal, the environment variable
    ``NO_COLOR`` is unset or empty and ``TERM`` is not ``dumb``."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        tty = bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # a closed stream
        tty = False
    return tty and not os.environ.get("NO_COLOR") and os.environ.get("TERM", "") != "dumb"


def shorten(text: str, width: int) -> str:
    """``text`` when it fits ``width``; else its head and tail around ``~`` (``width`` characters in all, the head
    the longer half); a single character for ``width`` 1. Deterministic."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:max(width, 0)]
    keep = width - len(_CUT)
    head = (keep + 1) // 2
    return text[:head] + _CUT + (text[len(text) - (keep - head):] if keep - head else "")


def _clip(text: str, width: int) -> str:
    """``text`` cut at its end to ``width`` characters (``...`` marks the cut)."""
    return text if len(text) <= width else text[:max(width - 3, 0)] + "..."[:width]


def _paint(word: str, verdict: str, color: bool) -> str:
    code = _COLORS.get(verdict)
    return f"\x1b[{code}m{word}\x1b[0m" if color and code else word


def _cell(word: str, width: int, color: bool, left: bool = True) -> str:
    """``word`` padded to ``width`` (the padding outside the colour codes)."""
    pad = " " * max(width - len(word), 0)
    painted = _paint(word, _NAMES.get(word, ""), color)
    return painted + pad if left else pad + painted


def _headers(tests: Sequence[str]) -> list[str]:
    """Unique short headers of the tests (:data:`ABBREVIATIONS`, else the first :data:`HEADER_WIDTH` characters;
    a repeated header gets a digit in its last place)."""
    out: list[str] = []
    for test in tests:
        head = ABBREVIATIONS.get(test, test[:HEADER_WIDTH]) or "?"
        k = 1
        base = head
        while head in out:
            k += 1
            head = base[:HEADER_WIDTH - len(str(k))] + str(k)
        out.append(head)
    return out


def _test_name(column: str) -> str:
    return "/".join(column.split("/")[1:-1])


def _score_text(value: object) -> str:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(x) else f"{x:.2f}"


def _rank_text(row: pd.Series, column: str) -> str:
    value, lo, hi = (row.get(column + s, math.nan) for s in ("", "_lo", "_hi"))
    try:
        value, lo, hi = float(value), float(lo), float(hi)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(value):
        return "-"
    if math.isnan(lo) or math.isnan(hi) or lo == hi == value:
        return f"{value:g}"
    return f"{value:g} [{lo:g}-{hi:g}]"


def _row_facts(board: pd.DataFrame, inv_cols: list[str], rand_cols: list[str]) -> pd.DataFrame:
    """``verdict``, ``balanced`` and the non-finite mark of every row: the board's columns, derived from its
    per-test verdicts where it lacks them (a CSV written before them)."""
    tests = board[inv_cols + rand_cols].astype(str)
    n_inv = len(inv_cols)
    verdict = (board["verdict"].astype(str) if "verdict" in board.columns
               else pd.Series([overall_verdict(r) for r in tests.itertuples(index=False)], index=board.index))
    balanced = (board["balanced"] if "balanced" in board.columns
                else pd.Series([balanced_score(r[:n_inv], r[n_inv:]) for r in tests.itertuples(index=False)],
                               index=board.index, dtype=float))
    marked = (board[NONFINITE_COLUMN].map(lambda v: isinstance(v, str) and bool(v.strip()))
              if NONFINITE_COLUMN in board.columns else pd.Series(False, index=board.index))
    return pd.DataFrame({"verdict": verdict, "balanced": balanced, "marked": marked}, index=board.index)


def _run(rows: pd.DataFrame, columns: list[str]) -> list[str]:
    """The verdict columns of ``columns`` with a test run in some row of ``rows``."""
    return [c for c in columns if (rows[c].astype(str) != NA).any()]


def _model_lines(model: str, rows: pd.DataFrame, facts: pd.DataFrame, inv_cols: list[str], rand_cols: list[str],
                 headers: dict[str, str], rank_col: str | None, width: int, color: bool) -> list[str]:
    """The heading, header and method lines of one model (only the tests run for it; ``headers``: column -> its
    short header)."""
    inv, rand = _run(rows, inv_cols), _run(rows, rand_cols)
    heads = [headers[c] for c in inv + rand]
    test_w = [max(len(h), 5) for h in heads]
    groups = [g for g in ((inv, heads[:len(inv)], test_w[:len(inv)]),
                          (rand, heads[len(inv):], test_w[len(inv):])) if g[0]]
    n = len(rows)
    num_w = max(len(str(n)), 1)
    rank_texts = [_rank_text(r, rank_col) for _, r in rows.iterrows()] if rank_col else []
    rank_w = max([len("rank"), *map(len, rank_texts)]) if rank_col else 0
    names = [str(m) + ("*" if facts.at[i, "marked"] else "") for i, m in zip(rows.index, rows["method"], strict=True)]
    fixed = (num_w + 1 + 1 + 7 + 1 + 5 + (1 + rank_w if rank_col else 0)
             + sum(3 + sum(w) + len(w) - 1 for _, _, w in groups))
    longest = max([len("method"), *map(len, names)])
    method_w = min(longest, width - fixed)
    heading = shorten(f"{model} ({n} method{'s' if n != 1 else ''})", width)
    if method_w < min(MIN_METHOD_WIDTH, longest):
        return [heading, *_stacked_lines(rows, facts, names, groups, rank_texts, width, color)]
    head = f"{'#':>{num_w}} {'method':<{method_w}} {'verdict':<7} {'score':>5}"
    if rank_col:
        head += f" {'rank':<{rank_w}}"
    for _, hs, ws in groups:
        head += " | " + " ".join(f"{h:<{w}}" for h, w in zip(hs, ws, strict=True))
    lines = [heading, head.rstrip()]
    for k, (i, row) in enumerate(rows.iterrows()):
        verdict = str(facts.at[i, "verdict"])
        line = (f"{k + 1:>{num_w}} {shorten(names[k], method_w):<{method_w}} "
                f"{_cell(WORDS.get(verdict, verdict), 7, color)} {_score_text(facts.at[i, 'balanced']):>5}")
        if rank_col:
            line += f" {rank_texts[k]:<{rank_w}}"
        for cols, _, ws in groups:
            words = [WORDS.get(str(row[c]), str(row[c])) for c in cols]
            line += " | " + " ".join(_cell(wd, w, color) for wd, w in zip(words, ws, strict=True))
        lines.append(line.rstrip())
    return lines


def _stacked_lines(rows: pd.DataFrame, facts: pd.DataFrame, names: list[str], groups: list, rank_texts: list[str],
                   width: int, color: bool) -> list[str]:
    """The narrow layout: per method a line ``# method: verdict score``, then its tests ``head word``, wrapped."""
    lines = []
    for k, (i, row) in enumerate(rows.iterrows()):
        verdict = str(facts.at[i, "verdict"])
        tail = f": {WORDS.get(verdict, verdict)} {_score_text(facts.at[i, 'balanced'])}"
        if rank_texts:
            tail += f" rank {rank_texts[k]}"
        prefix = f"{k + 1} "
        name = shorten(names[k], max(width - len(prefix) - len(tail), 1))
        first = prefix + name + tail
        if len(first) > width:
            first = shorten(first, width)
        lines.append(first)
        items = [f"{h} {WORDS.get(str(row[c]), str(row[c]))}"
                 for cols, hs, _ in groups for c, h in zip(cols, hs, strict=True)]
        for text in textwrap.wrap(", ".join(items), width - 2, break_on_hyphens=False):
            lines.append("  " + (_paint_words(text) if color else text))
    return lines


def _paint_words(text: str) -> str:
    """Colour the verdict words of a wrapped ``head word, head word`` line."""
    out = []
    for part in text.split(", "):
        head, _, word = part.rpartition(" ")
        out.append(f"{head} {_paint(word, _NAMES.get(word.rstrip(','), ''), True)}" if head else part)
    return ", ".join(out)


def _short_path(path: object, sources: Sequence[str]) -> str:
    """``path`` relative to the first source folder that holds it; as it is otherwise."""
    p = Path(str(path))
    for s in sources:
        try:
            rel = p.relative_to(s)
        except ValueError:
            continue
        return str(rel) if str(rel) != "." else p.name
    return str(p)


def _first_line(text: object) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else ""


def _extra_lines(lb: Leaderboard, width: int) -> list[str]:
    """One line per failed job and per skipped results file (shortened to ``width``)."""
    lines = []
    if len(lb.failed):
        lines += ["", shorten(f"Failed jobs ({len(lb.failed)}):", width)]
        for r in lb.failed.itertuples():
            where = _short_path(r.job, lb.sources) + (f" ({r.overrides})" if r.overrides else "")
            lines.append(_clip(f"  {where}: {_first_line(r.error) or r.status}", width))
    if lb.skipped:
        lines += ["", shorten(f"Skipped results files ({len(lb.skipped)}, unreadable):", width)]
        for path, reason in lb.skipped:
            first = _first_line(reason)
            first = first[len(str(path)):].strip() if first.startswith(str(path)) else first
            lines.append(_clip(f"  {_short_path(path, lb.sources)}: {first or 'unreadable'}", width))
    return lines


_GLUE = "\x1f"  # a space that the legend's wrapping never breaks at


def _glued(text: str) -> str:
    return text.replace(" ", _GLUE)


def _legend(inv_tests: dict[str, str], rand_tests: dict[str, str], metric: str, sort: str | None,
            marked: bool, width: int) -> list[str]:
    """The legend, wrapped to ``width``: the words, the row verdict, the score, the order and the tests' names
    (``*_tests``: short header -> the test's name)."""
    parts = [
        f"Verdicts: pass; {_glued('exact =')} identical maps within the tolerance (a pass); FAIL; {_glued('input =')} "
        "input-dominated (what survives randomization is what a map of the input alone explains); "
        f"{_glued('? =')} inconclusive (too little evidence: the reason is in the full table); {_glued('- =')} not "
        "run.",
        f"{_glued('verdict =')} the worst test's, best to worst: pass, ?, input, FAIL.",
        f"{_glued('score =')} balanced score in [0, 1]: (mean over the invariance tests + mean over the randomization "
        f"tests) / 2 with {_glued('pass/exact = 1')}, {_glued('? = 0.5')}, {_glued('FAIL/input = 0')} (one family "
        "alone when only one was run): three shifts weigh as much as one randomization test.",
    ]
    if sort in (None, "balanced"):
        parts.append("Order: verdict, then score, then tests run, then name.")
    elif sort.startswith("rank/"):
        parts.append(f"Order: rank by {sort[len('rank/'):]} (1 = best; [95% rank interval] over the bootstrap "
                     "resamples).")
    else:
        parts.append(f"Order: by {sort}.")

    def names(tests: dict[str, str]) -> str:
        return ", ".join(_glued(f"{h} = {t}") if h != t else t for h, t in tests.items())

    if inv_tests:
        parts.append(f"Input invariance (first | group): {names(inv_tests)}.")
    if rand_tests:
        group = "second" if inv_tests else "first"
        parts.append(f"Model randomization ({group} | group; score {metric}): {names(rand_tests)}.")
    if marked:
        parts.append(f"{_glued('* =')} some per-sample scores are not finite (the full table lists them).")
    return [line.replace(_GLUE, " ") for line in textwrap.wrap(" ".join(parts), width, break_on_hyphens=False)]


def console_summary(board: pd.DataFrame | Leaderboard, *, width: int = DEFAULT_WIDTH, color: bool | None = None,
                    files: Sequence[str | os.PathLike] = ()) -> str:
    """The leaderboard as plain text for a terminal (the module docstring: layout, words, order, the balanced
    score). ``board``: a leaderboard (or a :class:`Leaderboard`, whose failed jobs and skipped results files are
    listed too) in the order to show (the board's own: :func:`bench.reporting.leaderboard.sort_leaderboard`).
    ``width``: no line is longer (at least :data:`MIN_WIDTH`). ``color``: ANSI colours; ``None`` = :func:`use_color`
    (``sys.stdout``). ``files``: where the full tables are (a ``Full tables:`` line; none when empty). No trailing
    newline."""
    lb = board if isinstance(board, Leaderboard) else Leaderboard(board=board)
    board = lb.board
    width = max(int(width), MIN_WIDTH)
    color = use_color() if color is None else bool(color)
    inv_cols, rand_cols = verdict_columns(board)
    rank_cols = [c for c in board.columns if c.startswith("rank/") and not c.endswith(("_lo", "_hi"))]
    rank_col = rank_cols[0] if rank_cols else None
    facts = _row_facts(board, inv_cols, rand_cols)
    run_inv, run_rand = _run(board, inv_cols), _run(board, rand_cols)
    headers = dict(zip(run_inv + run_rand, _headers([_test_name(c) for c in run_inv + run_rand]), strict=True))
    lines: list[str] = []
    for model in dict.fromkeys(board["model"]):
        rows = board[board["model"] == model]
        if lines:
            lines.append("")
        lines += _model_lines(str(model), rows, facts, run_inv, run_rand, headers, rank_col, width, color)
    if not len(board):
        lines.append("No results.")
    lines += _extra_lines(lb, width)
    if files:
        lines += [""] + textwrap.wrap("Full tables: " + ", ".join(str(f) for f in files), width,
                                      break_on_hyphens=False)
    metric = board.attrs.get("settings", {}).get("randomization_metric", "ssim")
    lines += [""] + _legend({headers[c]: _test_name(c) for c in run_inv}, {headers[c]: _test_name(c) for c in run_rand},
                            metric, board.attrs.get("sort"), bool(facts["marked"].any()), width)
    return "\n".join(lines)


def comparison_summary(comparison: pd.DataFrame, *, width: int = DEFAULT_WIDTH) -> str:
    """A paired comparison (:func:`bench.reporting.leaderboard.compare_methods`) for a terminal: a title naming A
    and B, per model a heading and one line per cell (``cell  A  B  A - B [95% interval]  P(A better)``), then a
    wrapped note on how P is counted. No line is longer than ``width`` (at least :data:`MIN_WIDTH`; the cell names
    are shortened in the middle when needed). No trailing newline."""
    width = max(int(width), MIN_WIDTH)
    if not len(comparison):
        return "No cell holds both methods."
    a, b = str(comparison["a"].iloc[0]), str(comparison["b"].iloc[0])

    def num(x: object, fmt: str) -> str:
        try:
            x = float(x)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return "-"
        return "-" if math.isnan(x) else f"{x:{fmt}}"

    texts = [(str(r.model), str(r.column), num(r.estimate_a, ".3f"), num(r.estimate_b, ".3f"),
              f"{num(r.diff, '+.3f')} [{num(r.diff_lo, '+.3f')}, {num(r.diff_hi, '+.3f')}]", num(r.p_a_better, ".3f"))
             for r in comparison.itertuples()]
    head = ("", "cell", "A", "B", "A - B [95% interval]", "P(A better)")
    widths = [max(len(t[k]) for t in [head, *texts]) for k in range(len(head))]
    widths[1] = min(widths[1], width - (2 + sum(w + 2 for w in widths[2:])))

    def line(t: tuple[str, ...]) -> list[str]:
        if widths[1] < MIN_CELL_WIDTH:  # too narrow for a table: the cell's name, then its numbers, wrapped
            if t is head:
                return []
            numbers = f"A {t[2]}, B {t[3]}, A - B {t[4]}, P(A better) {t[5]}"
            return [shorten("  " + t[1], width), *textwrap.wrap(numbers, width, initial_indent="    ",
                                                                 subsequent_indent="    ")]
        cell = shorten(t[1], widths[1])
        return [(f"  {cell:<{widths[1]}}  {t[2]:>{widths[2]}}  {t[3]:>{widths[3]}}  {t[4]:<{widths[4]}}  "
                 f"{t[5]:>{widths[5]}}").rstrip()]

    lines = textwrap.wrap(f"A = {a}, B = {b}: paired bootstrap over samples", width, break_on_hyphens=False)
    for model in dict.fromkeys(t[0] for t in texts):
        lines += ["", shorten(model, width), *line(head)]
        lines += [text for t in texts if t[0] == model for text in line(t)]
    note = ("A and B: the leaderboard's means. P(A better): the share of bootstrap resamples in which A's mean is "
            "better (invariance SSIM higher, randomization similarity lower); a tie (equal within 1e-12 of the "
            "scale) counts half, so identical scores give 0.500.")
    return "\n".join(lines + [""] + textwrap.wrap(note, width, break_on_hyphens=False))
