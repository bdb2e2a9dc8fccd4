"""CSV files that are safe to open in a spreadsheet, and file names that are safe to build from user text.

Every CSV the harness writes (``leaderboard.csv``, ``compare_<a>_<b>.csv``, the baseline of ``salbench-check
--update``) goes through :func:`write_csv`. Method and model names come from configs a user (or a stranger's
external method config) chose, so a text cell may read ``=HYPERLINK(...)``: a formula once the CSV is opened in a
spreadsheet. The OWASP rule neutralizes it: a TEXT cell (or column name) that starts with ``=``, ``+``, ``-``, ``@``,
a tab or a carriage return gets a single quote in front (``'=HYPERLINK(...)``). Numbers stay numbers (a negative
number in a numeric column is not text). A text cell that starts with a quote followed by one of those characters
or another quote gets one more quote too, so that :func:`restore_frame` (used where a CSV is read back, e.g. the
baseline of ``salbench-check``) undoes exactly what :func:`neutralize` did: names round-trip, and a method really
named ``=x`` compares equal to itself.

:func:`safe_file_part` turns a name into one file name component (no path separator, no ``..``). No torch.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from bench._io import atomic_write

__all__ = ["FORMULA_START", "neutralize", "restore", "neutralize_frame", "restore_frame", "write_csv",
           "safe_file_part"]

#: the first characters that make a spreadsheet read a cell as a formula (OWASP: CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_QUOTE = "'"


def neutralize(value: Any) -> Any:
    """``value`` with a single quote in front when it is text that starts with one of :data:`FORMULA_START` (or
    with a quote followed by one of them or another quote, so that :func:`restore` is its exact inverse); anything
    else (numbers, missing values, other text) as it is."""
    if isinstance(value, str) and (value.startswith(FORMULA_START)
                                   or (value.startswith(_QUOTE) and value[1:2] in (*FORMULA_START, _QUOTE))):
        return _QUOTE + value
    return value


def restore(value: Any) -> Any:
    """The inverse of :func:`neutralize`: text that starts with a quote followed by one of :data:`FORMULA_START` or
    another quote loses that first quote; anything else is returned as it is."""
    if isinstance(value, str) and value.startswith(_QUOTE) and value[1:2] in (*FORMULA_START, _QUOTE):
        return value[1:]
    return value


def _text_columns(df: pd.DataFrame) -> list:
    return [c for c in df.columns if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
                                          or pd.api.types.is_datetime64_any_dtype(df[c]))]


def _map_frame(df: pd.DataFrame, fn) -> pd.DataFrame:  # noqa: ANN001
    out = df.copy()
    for col in _text_columns(df):
        out[col] = df[col].map(fn, na_action="ignore")
    out.columns = [fn(c) for c in df.columns]
    out.attrs = dict(df.attrs)
    return out


def neutralize_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` whose text cells and column names are :func:`neutralize` d (numeric columns untouched)."""
    return _map_frame(df, neutralize)


def restore_frame(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` (read from a CSV written by :func:`write_csv`) with :func:`restore` applied to its text cells
    and column names."""
    return _map_frame(df, restore)


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` (without its index) to ``path`` atomically (:func:`bench._io.atomic_write`: a failed write, a full
    disk included, leaves the old file as it was and raises the ``OSError``), its text cells neutralized
    (:func:`neutralize_frame`); a text cell with a carriage return inside is quoted (the file then ends its lines
    with CRLF). Returns ``path``."""
    safe = neutralize_frame(df)
    # the csv writer quotes a field that holds a character of the line terminator; a carriage return inside a name
    # would otherwise be written bare and start a new row (whose first cell may be a formula): such a file is
    # written with CRLF line ends (RFC 4180), so that those fields are quoted; every other file keeps "\n"
    cr = any(isinstance(v, str) and "\r" in v for c in _text_columns(safe) for v in safe[c]) or any(
        isinstance(c, str) and "\r" in c for c in safe.columns)
    return atomic_write(path, lambda tmp: safe.to_csv(tmp, index=False, lineterminator="\r\n" if cr else "\n"))


def safe_file_part(name: str, max_len: int = 60) -> str:
    """``name`` as one component of a file name: characters other than letters, digits, ``_``, ``-``, ``+`` and
    ``.`` become ``_``, and so do runs of dots (no path separator, no ``..``); runs of ``_`` shrink to one, and ``_``
    or ``.`` at either end are dropped. When anything was changed or cut (at ``max_len`` characters), a short hash of
    the original name is appended, so that two different names never share a file."""
    text = str(name)
    clean = re.sub(r"[^A-Za-z0-9_+.-]", "_", text)
    clean = re.sub(r"_{2,}", "_", re.sub(r"\.{2,}", "_", clean)).strip("_.") or "_"
    if clean == text and len(clean) <= max_len:
        return clean
    digest = hashlib.sha1(text.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()[:8]
    return f"{clean[:max_len]}-{digest}"
