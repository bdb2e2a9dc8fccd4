"""File helpers of the harness (no torch): atomic writes, a clear error for a full disk, stale temporary files, and
the user cache folder."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "cache_root", "DiskFullError", "free_bytes", "remove_stale_temps", "TEMP_MARK"]

log = logging.getLogger(__name__)

#: what marks the temporary files of :func:`atomic_write` (``.<name>.tmp<pid>``)
TEMP_MARK = ".tmp"
#: the OS errors that mean "no space left" (a full disk, a full quota)
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG}


class DiskFullError(OSError):
    """A write failed for lack of space: the message names the path, the space free there and, where known, the
    space the write needed."""


def free_bytes(path: str | os.PathLike) -> int | None:
    """Bytes free on the file system holding ``path`` (its nearest existing parent); None when unknown."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return None


def _size(n: int | None) -> str:
    if n is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def atomic_write(path: str | os.PathLike, write: Callable[[Path], object] | str, *, needed: int | None = None
                 ) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` (or the text ``write``) fills a temporary file beside it, which is
    then renamed over ``path``; a crash leaves the old file or none, never half a file, and the temporary file is
    removed on every exit path. Parent folders are created. Returns ``path``.

    ``needed``: the bytes the write needs, when the caller knows (named in the error). Raises
    :class:`DiskFullError` (an ``OSError``) naming the path, the free and the needed space when the disk or the quota
    is full; the old file is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        if isinstance(write, str):
            tmp.write_text(write, encoding="utf-8")
        else:
            write(tmp)
        os.replace(tmp, path)
    except Exception as err:
        full = _no_space(err)
        if full is not None:
            wrote = tmp.stat().st_size if tmp.exists() else None
            raise DiskFullError(
                full.errno, f"no space left to write {path}: {_size(free_bytes(path))} free there, "
                f"{_size(needed if needed is not None else wrote)} {'needed' if needed is not None else 'written'} "
                "when it failed; free space there or choose another folder (the old file is unchanged)") from err
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _no_space(err: BaseException) -> OSError | None:
    """The "no space" OS error in ``err``'s chain (libraries wrap it: torch's ``unexpected pos``), or None."""
    seen = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return seen
        text = str(seen)
        if "No space left" in text or "Disk quota exceeded" in text:
            return OSError(errno.ENOSPC, text)
        seen = seen.__cause__ or seen.__context__
    return None


def remove_stale_temps(folder: str | os.PathLike, max_age: float = 86400.0) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` in ``folder`` (not below it) older than ``max_age``
    seconds: what a process killed mid-write left behind (a younger one may be another process's write in
    progress). Returns the removed paths; a file that cannot be removed is skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, removed = time.time(), []
    for p in folder.iterdir():
        if p.name.startswith(".") and TEMP_MARK in p.name and p.is_file():
            try:
                if now - p.stat().st_mtime > max_age:
                    p.unlink()
                    removed.append(p)
            except OSError:
                continue
    if removed:
        log.info("removed %d stale temporary file(s) of killed writes in %s", len(removed), folder)
    return removed


def cache_root(kind: str, root: str | os.PathLike | None = None, env: str | None = None) -> Path:
    """A cache folder: ``root`` if given, else ``$env`` if set, else ``$XDG_CACHE_HOME`` (or ``~/.cache``)
    ``/saliency-bench/<kind>``."""
    if root is not None:
        return Path(root).expanduser()
    if env and os.environ.get(env):
        return Path(os.environ[env]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saliency-bench" / kind
