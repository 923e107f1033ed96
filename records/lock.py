"""Exclusive ownership of a run (or of a study's submission) by a live process.

An OS file lock (``fcntl.flock`` on ``<dir>/.lock``) is held for as long as the process lives: it goes with the
process however that dies (kill -9 included), so there is no stale lock to clean up, and a second trainer of
the same run learns at once who holds it (the holder writes its pid/host/job into the file). flock works on
local disks and on NFSv4/Lustre mounts with locking enabled (the usual cluster setting); where a
filesystem refuses locks, `RunLock` says so instead of pretending.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from .rundir import LOCK, holder_text, job_context


class Locked(RuntimeError):
    """Someone else holds the lock; ``holder`` is what they wrote (pid, host, job id, time)."""

    def __init__(self, path: Path, holder: dict[str, Any] | None, what: str):
        self.path, self.holder = path, holder
        super().__init__(f"{what} is held by {holder_text(holder)} ({path}); wait for it to finish, or stop that "
                         f"process first")


class RunLock:
    """``with RunLock(run_dir): ...`` — or `acquire()` / `release()`. Not re-entrant: a second acquire, even
    from this process, is refused like any other holder's."""

    def __init__(self, directory: str | os.PathLike, what: str | None = None, name: str = LOCK):
        self.dir = Path(directory)
        self.path = self.dir / name
        self.what = what or f"run {self.dir.name}"
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise Locked(self.path, holder, self.what) from None
            raise OSError(exc.errno, f"cannot lock {self.path} ({exc.strerror}): this filesystem refuses file "
                          f"locks; put the study on one that supports flock") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(job_context()) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, Any] | None:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else None
    except (OSError, ValueError):
        return None


def lock_holder(directory: str | os.PathLike, name: str = LOCK) -> dict[str, Any] | None:
    """Who holds the lock right now, or None when nobody does (probed without blocking)."""
    path = Path(directory) / name
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return _read_holder(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
