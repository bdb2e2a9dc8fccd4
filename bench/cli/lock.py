"""One writer per job folder, and signals that end a job cleanly. No torch.

**The lock** (:class:`JobLock`): ``<job>/job.lock``, created atomically (``os.open`` with ``O_CREAT | O_EXCL``)
and holding JSON ``{"pid", "host", "started" (``time.time()``), "since" (local time, readable), "token"}``.

* :meth:`JobLock.acquire` takes it or raises :class:`LockHeld` at once (it never waits for the holder) when the
  holder may be alive: a process of this host whose pid exists (and is not a zombie, and did not start after the
  lock was written: a reused pid does not count), or a process of another host (its pid cannot be checked from
  here: refused, never guessed). An unreadable lock file is refused too (its holder is unknown).
* A stale lock (its pid is dead on this host) is taken over, with a warning naming its pid, host and time. Two
  processes that find the same stale lock cannot both take it: the takeover is serialized by a second
  ``O_EXCL`` file (``job.lock.takeover``), and the lock is then created with ``O_EXCL`` again.
* :meth:`JobLock.release` removes the lock only while it is still this holder's (its token), and never raises;
  ``with JobLock(folder):`` releases it on every exit path (return, exception, :class:`Interrupted`).

**Signals** (:func:`signals_raise`): within it, SIGINT and SIGTERM raise :class:`Interrupted` (a
``KeyboardInterrupt`` carrying the signal) in the main thread, so that ``finally`` blocks run (the lock is
released, ``job.json`` says ``interrupted``) and the command exits ``128 + signal`` (130, 143). A signal that
arrives inside :func:`deferred` (a chunk's or the record's write) is raised when that section ends, so a write is
finished or, if the process is killed outright, abandoned atomically (:func:`bench._io.atomic_write`). Once a job
is ending, a repeated signal within :data:`REPEAT_GRACE_S` seconds is ignored (the cleanup takes milliseconds); a
later one acts as Python's default would.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["LOCK_FILE", "JobLock", "LockHeld", "Interrupted", "signals_raise", "deferred", "REPEAT_GRACE_S"]

log = logging.getLogger(__name__)

LOCK_FILE = "job.lock"
_TAKEOVER_STALE_S = 30.0  # a takeover guard older than this was left by a process that died mid-takeover
REPEAT_GRACE_S = 5.0


class LockHeld(RuntimeError):
    """The job folder is in use by another run (or its lock cannot be read): the message names the folder, the
    holder and what to do."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.holder = dict(holder or {})


def _since(started: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(started)))
    except (TypeError, ValueError, OverflowError):
        return "an unknown time"


def _process_start(pid: int) -> tuple[float, str] | None:
    """``(start time as time.time(), state letter)`` of ``pid`` from ``/proc`` (Linux); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state is field 3, starttime field 22
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"), fields[0]
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _alive(pid: int, started: float) -> bool:
    """Whether ``pid`` (of this host) may still be the process that wrote a lock at ``started``."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return True  # cannot tell: do not guess
    proc = _process_start(pid)
    if proc is None:
        return True
    start, state = proc
    if state in ("Z", "X"):  # exited, not yet reaped
        return False
    return start <= started + 2.0  # a process started after the lock was written reused the pid


class JobLock:
    """The lock of one job folder (the contract is in the module docstring)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.token: str | None = None

    def __enter__(self) -> JobLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _read(self) -> dict[str, Any] | None:
        """The holder's record; None when the lock is gone. Raises ``ValueError`` when it cannot be read (retried
        briefly first: a lock being written right now is empty for a moment)."""
        for attempt in range(10):
            try:
                text = self.path.read_text(encoding="utf-8")
            except FileNotFoundError:
                return None
            except OSError as err:
                raise ValueError(f"{type(err).__name__}: {err}") from err
            try:
                holder = json.loads(text)
                if isinstance(holder, dict) and "pid" in holder and "host" in holder:
                    return holder
            except ValueError:
                pass
            if attempt < 9:
                time.sleep(0.05)
        raise ValueError(f"not a lock record: {text[:80]!r}")

    def _refuse(self, holder: dict[str, Any], why: str) -> LockHeld:
        where = "this host" if holder.get("host") == socket.gethostname() else f"host {holder.get('host')}"
        return LockHeld(
            f"{self.folder} is in use by another run: pid {holder.get('pid')} on {where} holds its lock {self.path} "
            f"since {_since(holder.get('started'))}{why}. Wait for that run to finish, or, if that process is gone, "
            f"remove {self.path} and run again.", holder)

    def acquire(self) -> None:
        """Take the lock, or raise :class:`LockHeld` at once (see the module docstring)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "token": token}
        me["since"] = _since(me["started"])
        for _ in range(200):  # each round: create, or judge the holder (a takeover in progress: a short wait)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                pass
            else:
                try:
                    os.write(fd, json.dumps(me).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                self.token = token
                return
            try:
                holder = self._read()
            except ValueError as err:
                raise LockHeld(f"{self.folder} has a lock file {self.path} that cannot be read ({err}): its holder "
                               f"is unknown. If no other run uses this folder, remove {self.path} and run again.") \
                    from None
            if holder is None:
                continue  # released meanwhile: try again
            if holder.get("host") != socket.gethostname():
                raise self._refuse(holder, " (another host: its process cannot be checked from here)")
            try:
                pid, started = int(holder["pid"]), float(holder.get("started", 0.0))
            except (TypeError, ValueError):
                raise self._refuse(holder, " (its pid cannot be read)") from None
            if _alive(pid, started):
                raise self._refuse(holder, "")
            if not self._take_over(holder):
                time.sleep(0.05)
        raise LockHeld(f"could not take the lock {self.path} of {self.folder}: other runs keep taking it over. "
                       "Wait for them to finish, then run again.")

    def _take_over(self, stale: dict[str, Any]) -> bool:
        """Remove the stale lock ``stale`` if it is still the one in place; False when another process is taking
        it over right now."""
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                if time.time() - guard.stat().st_mtime > _TAKEOVER_STALE_S:
                    guard.unlink()
            except OSError:
                pass
            return False
        try:
            os.close(fd)
            try:
                current = self._read()
            except ValueError:
                current = None
            if current == stale:
                log.warning("taking over the stale lock %s of pid %s on %s (since %s): that process is gone",
                            self.path, stale.get("pid"), stale.get("host"), _since(stale.get("started")))
                self.path.unlink(missing_ok=True)
            return True
        finally:
            guard.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this object still holds it; never raises."""
        if self.token is None:
            return
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            if isinstance(holder, dict) and holder.get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError) as err:
            log.debug("lock %s not released: %s", self.path, err)
        self.token = None


# ----------------------------------------------------------------------------------------------------- signals


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM received within :func:`signals_raise`. ``exit_status``: ``128 + signal`` (130, 143);
    ``logged``: whether a line was already logged for it (the job logs one; the command adds none then)."""

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name
        self.logged = False
        super().__init__(f"interrupted by {self.name}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STATE: dict[str, Any] = {"depth": 0, "pending": None, "ending_since": None}


def _handler(signum: int, frame: Any) -> None:
    ending = _STATE["ending_since"]
    if ending is not None:
        if time.monotonic() - ending < REPEAT_GRACE_S:
            return  # the job is ending (releasing its lock, writing its record): let it
        signal.signal(signum, signal.SIG_DFL)  # a stuck ending: the next signal acts as by default
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        os.kill(os.getpid(), signum)
        return
    if _STATE["depth"]:
        _STATE["pending"] = signum  # raised when the write in progress is done (deferred)
        return
    _STATE["ending_since"] = time.monotonic()
    raise Interrupted(signum)


@contextmanager
def signals_raise() -> Iterator[None]:
    """Within: SIGINT and SIGTERM raise :class:`Interrupted` (after any :func:`deferred` section in progress).
    Reentrant (an inner use inside an outer one does nothing); outside the main thread it does nothing (Python
    delivers signals to the main thread only). The previous handlers are restored on exit."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is _handler:
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        _STATE.update(depth=0, pending=None, ending_since=None)


@contextmanager
def deferred() -> Iterator[None]:
    """A write that a signal must not split: a signal that arrives within is raised when the section ends."""
    _STATE["depth"] += 1
    try:
        yield
    finally:
        _STATE["depth"] -= 1
        if _STATE["depth"] == 0 and _STATE["pending"] is not None and _STATE["ending_since"] is None:
            signum, _STATE["pending"] = _STATE["pending"], None
            _STATE["ending_since"] = time.monotonic()
            raise Interrupted(signum)
