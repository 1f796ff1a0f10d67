"""The snapshot file format, without the state machine: framing, checks, atomic writes.

Layout::

    MAGIC (16 bytes) | u32 format
    frames: u32 payload length | u32 crc32(payload) | payload (a SnapshotPart)

The first frame is the header (applied index, cluster, configuration), then
data parts (keys, client sessions, images), then an end frame that counts
the frames before it.  A file cut short, damaged anywhere, of another
format or with trailing bytes is refused as a whole (``SnapshotError``).

This module needs nothing of the server, so the client (which writes
backups) uses it too; ``paxos/storage/snapshot.py`` adds the state machine.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from google.protobuf.message import DecodeError

from paxos.common import limits
from protos import snapshot_pb2

MAGIC = b"paxoskv-snapshot"
FORMAT = 1
_PREAMBLE = struct.Struct("<16sI")
_FRAME = struct.Struct("<II")
SUFFIX = ".snap"
TMP_SUFFIX = SUFFIX + ".tmp"  # what write_atomically leaves when a crash interrupts it


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


def info_of(path: Path, header: snapshot_pb2.SnapshotHeader) -> SnapshotInfo:
    members = tuple(SnapshotMember(m.id, m.name, m.address) for m in header.members)
    return SnapshotInfo(path, header.applied_index, header.cluster_id, members)


def verify(path: Path) -> SnapshotInfo:
    """Read all of ``path``, checking every frame; its header, or ``SnapshotError``."""
    header: snapshot_pb2.SnapshotHeader | None = None
    for part in iter_parts(path):
        if part.WhichOneof("part") == "header":
            header = part.header
    assert header is not None  # iter_parts insists on it
    return info_of(path, header)
