"""Snapshot files: the replicated state as of one applied slot.

A server writes one before it forgets the log below that slot, streams one
to a peer that needs slots it has forgotten, and a backup is one.  Layout::

    MAGIC (16 bytes) | u32 format
    frames: u32 payload length | u32 crc32(payload) | payload (a SnapshotPart)

The first frame is the header (applied index, cluster, configuration), then
data parts (keys, client sessions, images), then an end frame that counts
the frames before it.  A file cut short, damaged anywhere, of another
format or with trailing bytes is refused as a whole (``SnapshotError``).

Files are written atomically: a temporary file in the same directory,
fsynced, renamed to ``NNNNNNNNNNNNNNNNNNNN.snap`` (the applied index), and
the directory fsynced.  A crash at any step leaves either no new snapshot or
a complete one; a leftover temporary file is removed on the next start.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from google.protobuf.message import DecodeError

from paxos import limits
from paxos.statemachine import FrozenState, StateMachine
from protos import snapshot_pb2

log = logging.getLogger("paxos.snapshot")

MAGIC = b"paxoskv-snapshot"
FORMAT = 1
_PREAMBLE = struct.Struct("<16sI")
_FRAME = struct.Struct("<II")
SUFFIX = ".snap"
TMP_SUFFIX = ".snap.tmp"


class SnapshotError(ValueError):
    """A snapshot file that cannot be used: damaged, cut short, or of another format."""


@dataclass(frozen=True)
class SnapshotMember:
    id: int
    name: str
    address: str


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot's header says."""

    path: Path
    applied_index: int
    cluster_id: int
    members: tuple[SnapshotMember, ...]


def file_name(applied_index: int) -> str:
    return f"{applied_index:020d}{SUFFIX}"


# ------------------------------------------------------------------ writing


def header_for(frozen: FrozenState, cluster_id: int, members: Iterable[SnapshotMember]) -> snapshot_pb2.SnapshotHeader:
    return snapshot_pb2.SnapshotHeader(
        applied_index=frozen.applied_index,
        cluster_id=cluster_id,
        members=[snapshot_pb2.SnapshotMember(id=m.id, name=m.name, address=m.address) for m in members],
        unreadable_commands=frozen.unreadable_commands,
        next_image_ref=frozen.next_image_ref,
    )


def encode_frames(header: snapshot_pb2.SnapshotHeader, parts: Iterable[snapshot_pb2.SnapshotPart]) -> Iterator[bytes]:
    """The bytes of a snapshot file, a frame at a time."""
    yield _PREAMBLE.pack(MAGIC, FORMAT)
    frames = 0
    for part in itertools.chain([snapshot_pb2.SnapshotPart(header=header)], parts):
        yield _frame(part)
        frames += 1
    yield _frame(snapshot_pb2.SnapshotPart(end=snapshot_pb2.SnapshotEnd(frames=frames)))


def _frame(part: snapshot_pb2.SnapshotPart) -> bytes:
    payload = part.SerializeToString()
    if len(payload) > limits.MAX_SNAPSHOT_FRAME_BYTES:
        raise AssertionError(f"a snapshot frame of {len(payload)} bytes exceeds MAX_SNAPSHOT_FRAME_BYTES")
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def write_atomically(directory: Path, name: str, chunks: Iterable[bytes]) -> Path:
    """Write ``chunks`` to ``directory/name`` so that a crash leaves all of it or nothing."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    tmp = directory / (name.removesuffix(SUFFIX) + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(directory)
    return final


def write_snapshot(directory: Path, frozen: FrozenState, cluster_id: int, members: Iterable[SnapshotMember]) -> Path:
    """Write ``frozen`` as ``directory/<applied index>.snap``; may run on any thread."""
    header = header_for(frozen, cluster_id, members)
    return write_atomically(directory, file_name(frozen.applied_index), encode_frames(header, frozen.parts()))


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ reading


def _read_exact(f: BinaryIO, n: int, path: Path, what: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise SnapshotError(f"{path}: cut short in {what} (a crash while writing it, or a damaged copy)")
    return data


def iter_parts(path: Path) -> Iterator[snapshot_pb2.SnapshotPart]:
    """Every frame of ``path`` after checking it, header first and end last.

    Raises ``SnapshotError`` at the first problem; a caller that must not act
    on a damaged file reads it to the end (``verify``) before using it.
    """
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise SnapshotError(f"{path}: cannot be read ({exc.strerror})") from None
    with f:
        magic, fmt = _PREAMBLE.unpack(_read_exact(f, _PREAMBLE.size, path, "the preamble"))
        if magic != MAGIC:
            raise SnapshotError(f"{path}: not a paxoskv snapshot")
        if fmt != FORMAT:
            raise SnapshotError(f"{path}: snapshot format {fmt}; this paxoskv reads format {FORMAT} only")
        frames = 0
        while True:
            head = f.read(_FRAME.size)
            if not head:
                raise SnapshotError(f"{path}: ends after {frames} frames without its end frame (cut short)")
            if len(head) != _FRAME.size:
                raise SnapshotError(f"{path}: cut short in frame {frames}")
            length, crc = _FRAME.unpack(head)
            if length > limits.MAX_SNAPSHOT_FRAME_BYTES:
                raise SnapshotError(f"{path}: frame {frames} claims {length} bytes (damaged)")
            payload = _read_exact(f, length, path, f"frame {frames}")
            if zlib.crc32(payload) != crc:
                raise SnapshotError(f"{path}: checksum mismatch in frame {frames} (damaged)")
            part = snapshot_pb2.SnapshotPart()
            try:
                part.ParseFromString(payload)
            except DecodeError:
                raise SnapshotError(f"{path}: frame {frames} does not decode (damaged)") from None
            kind = part.WhichOneof("part")
            if (frames == 0) != (kind == "header"):
                raise SnapshotError(f"{path}: frame {frames} is a {kind}; the header must come first, once")
            if kind == "end":
                if part.end.frames != frames:
                    raise SnapshotError(f"{path}: end frame counts {part.end.frames} frames, found {frames}")
                if f.read(1):
                    raise SnapshotError(f"{path}: bytes after the end frame (damaged)")
                yield part
                return
            if kind is None:
                raise SnapshotError(f"{path}: frame {frames} is of a kind this paxoskv does not know")
            yield part
            frames += 1


def _info(path: Path, header: snapshot_pb2.SnapshotHeader) -> SnapshotInfo:
    members = tuple(SnapshotMember(m.id, m.name, m.address) for m in header.members)
    return SnapshotInfo(path, header.applied_index, header.cluster_id, members)


def verify(path: Path) -> SnapshotInfo:
    """Read all of ``path``, checking every frame; its header, or ``SnapshotError``."""
    header: snapshot_pb2.SnapshotHeader | None = None
    for part in iter_parts(path):
        if part.WhichOneof("part") == "header":
            header = part.header
    assert header is not None  # iter_parts insists on it
    return _info(path, header)


def load(path: Path) -> tuple[SnapshotInfo, StateMachine]:
    """The state in ``path``, checked through to its end frame."""
    parts = iter_parts(path)
    first = next(parts)
    header = first.header

    def data_parts() -> Iterator[snapshot_pb2.SnapshotPart]:
        for part in parts:
            if part.WhichOneof("part") != "end":
                yield part

    try:
        store = StateMachine.restore(header, data_parts())
    except ValueError as exc:  # SnapshotError included
        if isinstance(exc, SnapshotError):
            raise
        raise SnapshotError(f"{path}: {exc}") from None
    return _info(path, header), store


# ------------------------------------------------------------ the directory


def snapshot_files(directory: Path) -> list[Path]:
    """Complete snapshot files in ``directory``, newest first (unchecked)."""
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        stem = path.name.removesuffix(SUFFIX)
        if len(stem) == 20 and stem.isdigit():
            found.append(path)
    return sorted(found, reverse=True)


def remove_leftovers(directory: Path) -> None:
    """Delete temporary files a crash left while writing a snapshot."""
    for tmp in directory.glob(f"*{TMP_SUFFIX}"):
        log.info("removing %s, left by a crash while writing a snapshot", tmp)
        tmp.unlink()


def prune(directory: Path, keep: int = limits.SNAPSHOTS_KEPT) -> None:
    """Keep the ``keep`` newest snapshots, delete the older ones."""
    for old in snapshot_files(directory)[keep:]:
        old.unlink()
    fsync_dir(directory)
