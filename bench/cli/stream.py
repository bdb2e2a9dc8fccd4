"""Large runs streamed: the samples of a job are explained and scored in chunks, each chunk's rows written to disk
as soon as it is done (``<job>/parts/``), so that memory does not grow with ``run.n_samples`` and a killed job
resumes from its last finished chunk. :func:`bench.cli.job.run` joins the parts into ``results.parquet`` at the end
(only when every chunk of its plan is there: :meth:`Parts.collect`) and removes them. No torch.
"""

from __future__ import annotations

import ctypes
import gc
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from bench._io import atomic_write
from bench.cli.lock import deferred
from bench.core.results import concat, read_table, write_table

__all__ = ["Parts", "chunks", "PARTS_DIR", "release_memory", "MissingChunks"]

log = logging.getLogger(__name__)

PARTS_DIR = "parts"


def chunks(n: int, size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in pieces of at most ``size`` (``size >= 1``)."""
    if size < 1:
        raise ValueError(f"run.chunk_size={size!r} is out of range; accepted: >= 1")
    return [(a, min(a + size, n)) for a in range(0, n, size)]


class MissingChunks(RuntimeError):
    """Chunks of a job's plan are not on disk when its results are assembled (removed while it ran)."""


class Parts:
    """The finished chunks of one job: ``<out>/parts/<key>.parquet`` plus ``parts/job_hash`` (parts of another
    configuration are removed, never mixed in)."""

    def __init__(self, out: str | os.PathLike, job_hash: str) -> None:
        self.folder = Path(out) / PARTS_DIR
        stamp = self.folder / "job_hash"
        if self.folder.exists() and (not stamp.exists() or stamp.read_text().strip() != job_hash):
            log.info("removing the parts of another configuration in %s", self.folder)
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(stamp, job_hash)

    @staticmethod
    def key(test: str, condition: str, start: int) -> str:
        return f"{test}-{condition}-{start:07d}".replace(os.sep, "_")

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.parquet"

    def done(self, key: str) -> bool:
        """Whether chunk ``key`` finished (its rows and its record are on disk)."""
        return self.path(key).exists() and self.path(key).with_suffix(".json").exists()

    def write(self, key: str, table: pd.DataFrame, record: dict) -> None:
        """Store a finished chunk: its rows (atomically), then its record (errors, premise ...): a chunk counts as
        done only when both are written. A SIGINT/SIGTERM that arrives meanwhile waits for both (:func:`deferred`)."""
        with deferred():
            write_table(table, self.folder, name=self.path(key).name)
            atomic_write(self.path(key).with_suffix(".json"), json.dumps(record, default=str))

    def record(self, key: str) -> dict:
        return json.loads(self.path(key).with_suffix(".json").read_text())

    def collect(self, keys: Sequence[str] | None = None) -> pd.DataFrame:
        """The rows of the chunks ``keys`` (the job's plan: every test x condition x chunk span), in key order;
        raises :class:`MissingChunks` naming those that are not done, so that a table with missing chunks is never
        assembled. ``keys=None``: every finished chunk found."""
        if keys is None:
            return concat([read_table(p) for p in sorted(self.folder.glob("*.parquet"))])
        missing = [k for k in keys if not self.done(k)]
        if missing:
            shown = ", ".join(missing[:8]) + (f" (and {len(missing) - 8} more)" if len(missing) > 8 else "")
            raise MissingChunks(f"{len(missing)} of {len(keys)} chunk(s) of this job's plan are missing from "
                                f"{self.folder}: {shown}; they were removed while the job ran (another run in this "
                                f"folder?). No results.parquet was written: run the same command again to compute "
                                f"them")
        return concat([read_table(self.path(k)) for k in sorted(keys)])

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def release_memory() -> None:
    """Between chunks: collect garbage and hand freed heap pages back to the OS (glibc's ``malloc_trim``; a no-op
    elsewhere), so that the process's peak RSS follows one chunk, not the allocator's high-water mark."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
