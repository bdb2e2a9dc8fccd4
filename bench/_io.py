"""File helpers of the harness (no torch): atomic writes and the user cache folder."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "cache_root"]


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object] | str) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` (or the text ``write``) fills a temporary file beside it, which is
    then renamed over ``path``; a crash leaves the old file or none, never half a file. Parent folders are
    created. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if isinstance(write, str):
            tmp.write_text(write, encoding="utf-8")
        else:
            write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def cache_root(kind: str, root: str | os.PathLike | None = None, env: str | None = None) -> Path:
    """A cache folder: ``root`` if given, else ``$env`` if set, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)
    ``/saliency-bench/<kind>``."""
    if root is not None:
        return Path(root).expanduser()
    if env and os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saliency-bench" / kind
