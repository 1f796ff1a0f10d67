"""Files written durably, and a full disk told apart from other write errors.

Files that must survive a crash whole (the meta file, snapshots, backups)
are written with ``AtomicFile``: a temporary file, fsynced, renamed, and the
directory fsynced.

A write that fails because the file system is full (ENOSPC, or EDQUOT for a
used-up quota) raises ``DiskFull``, which names the file, what was being
written and the bytes still free, in one line: the server stops on it with
its own exit code rather than a traceback, and the client's backup says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFull(OSError):
    """A write failed because the file system holding ``path`` is full."""

    def __init__(self, path: Path, writing: str, error: OSError) -> None:
        super().__init__(error.errno, error.strerror, str(path))
        self.path = path
        self.writing = writing
        self.free_bytes = free_bytes(path)
        free = "an unknown number of" if self.free_bytes is None else str(self.free_bytes)
        self.message = (
            f"disk full: could not write {path} ({writing}): {error.strerror}; {free} bytes free there. "
            "Free space on that file system, or move the data dir to a larger one, and start again"
        )

    def __str__(self) -> str:
        return self.message


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    for candidate in (path, *path.parents):
        try:
            stats = os.statvfs(candidate)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return None


@contextlib.contextmanager
def disk_full_as(path: Path, writing: str) -> Iterator[None]:
    """Turn ENOSPC and EDQUOT raised inside into ``DiskFull`` naming ``path`` and ``writing``."""
    try:
        yield
    except DiskFull:
        raise
    except OSError as exc:
        if exc.errno in DISK_FULL_ERRNOS:
            raise DiskFull(path, writing, exc) from None
        raise


class AtomicFile:
    """A file that appears at ``directory/name`` whole, or not at all.

    Written to ``name.tmp`` in the same directory; ``commit`` fsyncs it,
    runs ``check`` on it, renames it into place and fsyncs the directory;
    ``abort`` (or any error in ``commit``) removes it and leaves ``name``
    untouched.  Blocking calls: from asyncio, run them on a thread.
    """

    def __init__(self, directory: Path, name: str, writing: str = "a file written whole or not at all") -> None:
        self.final = directory / name
        self.tmp = directory / (name + ".tmp")
        self.writing = writing
        with disk_full_as(self.tmp, writing):
            directory.mkdir(parents=True, exist_ok=True)
            self._f: BinaryIO | None = open(self.tmp, "wb")

    def write(self, data: bytes) -> None:
        assert self._f is not None, "written after commit or abort"
        with disk_full_as(self.tmp, self.writing):
            self._f.write(data)

    def commit(self, check: Callable[[Path], object] | None = None) -> Path:
        assert self._f is not None, "committed twice, or after abort"
        try:
            with disk_full_as(self.tmp, self.writing):
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()
            self._f = None
            if check is not None:
                check(self.tmp)
            os.replace(self.tmp, self.final)
        except BaseException:
            self.abort()
            raise
        fsync_dir(self.final.parent)
        return self.final

    def abort(self) -> None:
        if self._f is not None:
            f, self._f = self._f, None
            try:
                f.close()  # flushes first, which fails again when the disk is full
            except OSError:
                pass  # the file goes away below; the error that made us abort is the one raised
        self.tmp.unlink(missing_ok=True)


def write_atomically(
    directory: Path,
    name: str,
    chunks: Iterable[bytes],
    check: Callable[[Path], object] | None = None,
    writing: str = "a file written whole or not at all",
) -> Path:
    """Write ``chunks`` to ``directory/name`` so that a crash leaves all of it or nothing (``AtomicFile``)."""
    out = AtomicFile(directory, name, writing)
    try:
        for chunk in chunks:
            out.write(chunk)
    except BaseException:
        out.abort()
        raise
    return out.commit(check)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
