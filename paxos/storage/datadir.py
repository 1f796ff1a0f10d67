"""A data directory: one server per directory.

One server per data directory, enforced by a lock file.

Two servers appending to one write-ahead log would interleave records and
break every promise the log stands for, so a server takes an exclusive
``flock`` on ``DIR/paxoskv.lock`` before it reads anything in DIR and holds
it until it stops.  The lock belongs to the open file description, so the
kernel drops it when the holder dies, however it dies: a stale lock file
never keeps a server from starting.  The file holds the holder's PID, only
to name it in the refusal; it is never deleted, because unlinking a locked
file lets a new starter lock a fresh file of the same name while another
still holds the old one.

Files that must survive a crash whole are written with
``paxos.common.files.AtomicFile``.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from paxos.common import limits
from paxos.common.files import DiskFull, disk_full_as

LOCK_FILE = "paxoskv.lock"


class DataDirError(RuntimeError):
    """The data directory belongs to another server or cluster, or another server is using it."""


class DataDirLock:
    """An exclusive lock on a data directory, held until ``release``."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock and close; calling it again does nothing.  The file stays."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def lock_data_dir(path: Path) -> DataDirLock:
    """Create ``path`` if needed and lock it for this process; DataDirError if another holds it."""
    lock_path = path / LOCK_FILE
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DataDirError(f"cannot lock data dir {path}: {exc.strerror} ({exc.filename})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise DataDirError(
                f"data dir {path} is in use by another paxoskv server ({holder}); "
                "stop it first or pass another --data-dir"
            ) from None
        raise DataDirError(f"cannot lock data dir {path}: {exc.strerror} ({lock_path})") from exc
    try:
        with disk_full_as(lock_path, "the PID of the server holding the lock"):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except DiskFull:
        os.close(fd)
        raise
    except OSError as exc:
        os.close(fd)
        raise DataDirError(f"cannot write {lock_path}: {exc.strerror}") from exc
    return DataDirLock(path, fd)


def _read_pid(fd: int) -> str:
    """The holder's PID as the lock file states it, for the message."""
    try:
        text = os.pread(fd, limits.LOCK_FILE_READ_BYTES, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        text = ""
    # The holder writes its PID just after locking, so a starter racing it may
    # find the file still empty.
    return f"pid {text}" if text.isdigit() else "pid not yet recorded"
