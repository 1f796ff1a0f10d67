"""Write-ahead log: promises, accepted values, learned values, commit index.

Layout: ``DIR/NNNNNNNNNNNNNNNNNNNN.wal`` segments, numbered from 1, each a
sequence of records::

    u32 flags|payload length | u32 crc32(payload) | u32 crc32(first 8 bytes) | payload | u8 end mark

The length is below 2**28; the top bit of that word (``_ENDS_WITH_MARK``)
says the record ends with the one-byte end mark ``0xA5``.  Every record
written now has it; records written before it existed have neither the bit
nor the mark, and are still read (the old rule below applies to them).  A
payload starts with a one-byte kind, never zero.  ``append`` buffers,
``sync`` writes and fsyncs, so a whole bundle of records shares one fsync
(group commit).

Crash handling on open.  Only the newest segment can end in a write that
was never fsynced: older ones were synced before the next one was created.
What a power loss can leave of that last write is a prefix of it: the file
ends early (its size never grew), or it grew and the part whose data never
landed reads back as zeros (the file system hands out zeroed blocks), at
any granularity (a byte, a sector, a page).  So the last record of the
newest segment is a torn tail (cut off, with a warning) when

* the file ends inside it (header or payload incomplete);
* its header fails its checksum and only zeros follow the header;
* it carries the end mark bit, its payload fails its checksum, its end-mark
  byte is zero, and only zeros follow it;
* it is an old-format record that fails its checksum with only zeros after.

A torn write is never called corruption: a prefix that stops inside a
record leaves it short, or zeros from some byte of it to the end of the
file.  From a byte of the header on, the header fails its checksum with only
zeros after it (or, should the zeros match, the payload reads as below);
from a byte of the payload on, the payload fails its checksum and the mark
reads zero; with only the mark missing, the payload checks out and the
record is kept (it is whole; it was only never acknowledged).  A write cut
short by a full disk leaves such a prefix too.

A flipped byte in a complete record is never called a torn tail: the header
checksum covers the length and its bit (a CRC-32 catches any error within
32 bits), so a damaged header is followed by the payload, whose kind byte is
not zero; a damaged payload leaves the end mark in place, so a record with
its mark and a failing checksum is corruption; a damaged end mark (with a
payload that checks out) is corruption too, except that a mark read as zero
with a good payload is kept as it is (whatever zeroed the mark, nothing of
the record is lost).  Any damaged record stops the server with
``WalCorruption`` naming the file and offset, because dropping it could
silently forget a promise or an accepted value.

What this rule cannot tell apart: a write whose pages landed out of order (a
later page of the record with its mark on disk, an earlier one still zeros)
is refused as corruption, the safe side.  A flipped byte in the last record
of a log written before end marks existed still reads as a torn tail: such
records carry nothing that tells the two apart.  Once a marked record is
written after it, it is no longer last, and damage to it is refused.

A new segment starts with the current promise, commit index and the accepted
values above the commit index, so that once a snapshot covers the chosen
slots of the older segments those can be deleted whole (compaction).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

from paxos.common.files import disk_full_as, fsync_dir
from paxos.consensus.messages import (
    AcceptRecord,
    Ballot,
    ChosenRecord,
    CommitRecord,
    DurableState,
    PromiseRecord,
    Record,
    Slot,
    Value,
)

log = logging.getLogger("paxos.wal")

SEGMENT_BYTES = 64 * 1024 * 1024
MAX_RECORD_BYTES = 256 * 1024 * 1024
_HEADER = struct.Struct("<III")
_LEN_CRC = struct.Struct("<II")
_BALLOT = struct.Struct("<QQ")  # round, member id
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")

_PROMISE, _ACCEPT, _CHOSEN, _COMMIT = 1, 2, 3, 4

# The length word's top bit: the record ends with ``_END_MARK``.  Bits 28-30
# stay zero (the length is below 2**28).
_ENDS_WITH_MARK = 1 << 31
_LENGTH_MASK = (1 << 28) - 1
_END_MARK = 0xA5
assert MAX_RECORD_BYTES <= _LENGTH_MASK + 1 and _END_MARK != 0


class WalCorruption(RuntimeError):
    """The log is damaged somewhere other than its torn tail."""


# ---------------------------------------------------------------- encoding


def _encode_value(value: Value, parts: list[bytes]) -> None:
    parts.append(_U32.pack(len(value)))
    for command in value:
        parts.append(_U32.pack(len(command)))
        parts.append(command)


def encode_record(record: Record) -> bytes:
    parts: list[bytes] = []
    match record:
        case PromiseRecord():
            parts += [bytes([_PROMISE]), _BALLOT.pack(record.ballot.round, record.ballot.node)]
        case AcceptRecord():
            parts += [bytes([_ACCEPT]), _U64.pack(record.slot), _BALLOT.pack(record.ballot.round, record.ballot.node)]
            _encode_value(record.value, parts)
        case ChosenRecord():
            parts += [bytes([_CHOSEN]), _U64.pack(record.slot)]
            _encode_value(record.value, parts)
        case CommitRecord():
            parts += [bytes([_COMMIT]), _U64.pack(record.index)]
        case _:
            assert_never(record)
    payload = b"".join(parts)
    assert len(payload) < MAX_RECORD_BYTES, "the length word holds the end mark bit above the length"
    head = _LEN_CRC.pack(len(payload) | _ENDS_WITH_MARK, zlib.crc32(payload))
    return head + _U32.pack(zlib.crc32(head)) + payload + _END_BYTE


_END_BYTE = bytes([_END_MARK])


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("record payload too short")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def ballot(self) -> Ballot:
        rnd, node = _BALLOT.unpack(self.take(_BALLOT.size))
        return Ballot(rnd, node)

    def value(self) -> Value:
        return tuple(self.take(self.u32()) for _ in range(self.u32()))


def decode_payload(payload: bytes) -> Record:
    r = _Reader(payload)
    kind = r.take(1)[0]
    record: Record
    if kind == _PROMISE:
        record = PromiseRecord(r.ballot())
    elif kind == _ACCEPT:
        slot = r.u64()
        record = AcceptRecord(slot, r.ballot(), r.value())
    elif kind == _CHOSEN:
        slot = r.u64()
        record = ChosenRecord(slot, r.value())
    elif kind == _COMMIT:
        record = CommitRecord(r.u64())
    else:
        raise ValueError(f"unknown record kind {kind}")
    if r.pos != len(payload):
        raise ValueError("record has trailing bytes")
    return record


# ---------------------------------------------------------------- scanning


@dataclass(frozen=True, slots=True)
class _Damage:
    """Why the record at an offset is bad, and whether a crash mid-write can leave it so."""

    reason: str
    torn: bool  # a torn tail, if it is the last record of the newest segment


def _zeros_from(data: bytes, start: int) -> bool:
    rest = data[start:]
    return rest.count(0) == len(rest)


def _scan(data: bytes) -> Iterator[tuple[int, Record | _Damage]]:
    """Yield (offset, record) for each good record, then (offset, damage) at
    the first bad one, if any.  The rules are in the module docstring."""
    pos = 0
    while pos < len(data):
        item = _record_at(data, pos)
        if isinstance(item, _Damage):
            yield pos, item
            return
        record, pos_after = item
        yield pos, record
        pos = pos_after


def _record_at(data: bytes, pos: int) -> tuple[Record, int] | _Damage:
    """The record at ``pos`` and the offset after it, or why it is bad."""
    if pos + _HEADER.size > len(data):
        return _Damage("incomplete header", torn=True)
    word, crc, head_crc = _HEADER.unpack_from(data, pos)
    if zlib.crc32(data[pos : pos + 8]) != head_crc:
        return _Damage("damaged header", torn=_zeros_from(data, pos + _HEADER.size))
    marked = bool(word & _ENDS_WITH_MARK)
    length = word & ~_ENDS_WITH_MARK
    if length >= MAX_RECORD_BYTES:  # a header that checks out was written so: no crash did it
        return _Damage(f"impossible length word {word:#x}", torn=False)
    start = pos + _HEADER.size
    end = start + length + marked
    if end > len(data):
        return _Damage("incomplete payload", torn=True)
    payload = data[start : start + length]
    if zlib.crc32(payload) != crc:
        if not marked:
            return _Damage("checksum mismatch", torn=_zeros_from(data, end))
        if data[end - 1] == 0:
            return _Damage("checksum mismatch, end never written", torn=_zeros_from(data, end))
        return _Damage("checksum mismatch in a complete record", torn=False)
    if marked and data[end - 1] not in (_END_MARK, 0):
        return _Damage(f"damaged end mark {data[end - 1]:#04x}", torn=False)
    try:
        return decode_payload(payload), end
    except ValueError as exc:
        return _Damage(f"undecodable payload ({exc})", torn=False)


# ---------------------------------------------------------------- the log


class Wal:
    """An append-only, checksummed, segmented log in one directory."""

    def __init__(self, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self._buffer: list[bytes] = []
        self._fd = -1
        self._segment = 0
        self._size = 0
        self._carried = 0  # bytes at the start of the segment carried over
        # Enough of the durable state to start a new segment self-contained.
        self._promised = Ballot(0, 0)
        self._commit: Slot = 0
        self._open_accepts: dict[Slot, AcceptRecord] = {}
        # Per segment number: the highest slot any of its records holds a
        # value for, and its size in bytes.
        self._max_slot: dict[int, Slot] = {}
        self._bytes: dict[int, int] = {}
        # Set when a write failed: what reached the file is unknown, so
        # nothing more is written (a record after a partial one would turn a
        # torn tail into damage in the middle of the log).
        self._failed = False
        self._head_written = False  # the current segment starts with a carry this process wrote

    @classmethod
    def open(cls, directory: Path, segment_bytes: int = SEGMENT_BYTES) -> tuple[Wal, DurableState]:
        directory.mkdir(parents=True, exist_ok=True)
        wal = cls(directory, segment_bytes)
        state = DurableState()
        segments = wal.segments()
        for i, path in enumerate(segments):
            wal._segment = int(path.stem)
            for record in wal._read_segment(path, last=i == len(segments) - 1):
                state.apply(record)
                wal._track(record)
            wal._bytes[wal._segment] = path.stat().st_size
        wal._open_segment(segments[-1] if segments else None)
        return wal, state

    @property
    def total_bytes(self) -> int:
        """Bytes in every segment, as synced."""
        return sum(self._bytes.values())

    def compact(self, snapshot_index: Slot) -> int:
        """A durable snapshot holds every slot up to ``snapshot_index``: drop what only it needs.

        Starts a new segment (which carries the promise, the commit index and
        the open accepts), then deletes the oldest segments whose values are
        all at or below ``snapshot_index``.  Call only between syncs (never
        while one runs on another thread).  Returns the bytes freed.
        """
        self.sync()  # records appended and not yet synced go into the old segment
        # A segment found on open may lack its head (a crash or a full disk
        # while it was being started): the older segments must then stay,
        # or the promise they hold would go with them.
        if self._size > self._carried or not self._head_written:
            self._rotate()
        freed = 0
        for segment in sorted(self._bytes):
            if segment == self._segment or self._max_slot.get(segment, 0) > snapshot_index:
                break
            path = self.dir / f"{segment:020d}.wal"
            path.unlink(missing_ok=True)
            freed += self._bytes.pop(segment)
            self._max_slot.pop(segment, None)
        if freed:
            fsync_dir(self.dir)
        return freed

    def segments(self) -> list[Path]:
        return sorted(self.dir.glob("*.wal"))

    def _read_segment(self, path: Path, last: bool) -> list[Record]:
        data = path.read_bytes()
        records: list[Record] = []
        for offset, item in _scan(data):
            if not isinstance(item, _Damage):
                records.append(item)
                continue
            if last and item.torn:
                log.warning(
                    "%s: dropping torn tail at byte %d (%s) left by a crash mid-write", path, offset, item.reason
                )
                with open(path, "r+b") as f:
                    f.truncate(offset)
                    os.fsync(f.fileno())
                break
            raise WalCorruption(
                f"{path}: damaged record at byte {offset} of {len(data)} ({item.reason}); refusing to start, "
                "since skipping it could forget a promise or an accepted value. To repair: remove this server "
                "(python -m client members remove NAME) and add it back on an empty data dir started with --join, "
                "or restore this data dir from a backup."
            )
        return records

    def _open_segment(self, path: Path | None) -> None:
        if path is None:
            self._segment = 1
            path = self.dir / f"{self._segment:020d}.wal"
        else:
            self._segment = int(path.stem)
        with disk_full_as(path, "a new write-ahead log segment"):
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = os.fstat(self._fd).st_size
            self._bytes[self._segment] = self._size
            fsync_dir(self.dir)

    def _track(self, record: Record) -> None:
        match record:
            case PromiseRecord():
                self._promised = max(self._promised, record.ballot)
            case AcceptRecord():
                self._promised = max(self._promised, record.ballot)
                self._note_slot(record.slot)
                if record.slot > self._commit:
                    self._open_accepts[record.slot] = record
            case CommitRecord():
                if record.index > self._commit:
                    self._commit = record.index
                    for slot in [s for s in self._open_accepts if s <= self._commit]:
                        del self._open_accepts[slot]
            case ChosenRecord():
                # Not carried into a new segment: the segment holding it is
                # kept until a snapshot covers its slot.
                self._note_slot(record.slot)
            case _:
                assert_never(record)

    def _note_slot(self, slot: Slot) -> None:
        if slot > self._max_slot.get(self._segment, 0):
            self._max_slot[self._segment] = slot

    def append(self, records: Iterable[Record]) -> None:
        for record in records:
            self._track(record)
            self._buffer.append(encode_record(record))

    def unsynced(self) -> bool:
        """Whether records were appended since the last sync."""
        return bool(self._buffer)

    def _path(self) -> Path:
        return self.dir / f"{self._segment:020d}.wal"

    def sync(self) -> None:
        """Write what was appended and make it durable; ``DiskFull`` when there is no room."""
        if not self._buffer:
            return
        if self._failed:
            raise OSError(f"{self._path()}: an earlier write failed; the log takes no more records")
        data = b"".join(self._buffer)
        self._buffer.clear()
        self._failed = True
        with disk_full_as(self._path(), f"{len(data)} bytes of records for the write-ahead log"):
            _write_all(self._fd, data)
            os.fdatasync(self._fd)
        self._failed = False
        self._size += len(data)
        self._bytes[self._segment] = self._size
        # Measured without the carried-over head, so a head larger than a
        # segment does not make every sync rotate again.
        if self._size - self._carried >= self.segment_bytes:
            self._rotate()

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        self._segment += 1
        path = self._path()
        carry: list[Record] = [PromiseRecord(self._promised), CommitRecord(self._commit)]
        carry += [self._open_accepts[s] for s in sorted(self._open_accepts)]
        data = b"".join(encode_record(r) for r in carry)
        self._failed = True
        with disk_full_as(path, "the head of a new write-ahead log segment"):
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
            _write_all(self._fd, data)
            os.fdatasync(self._fd)
        self._failed = False
        self._head_written = True
        self._size = self._carried = len(data)
        self._bytes[self._segment] = self._size
        if self._open_accepts:
            self._max_slot[self._segment] = max(self._open_accepts)
        fsync_dir(self.dir)

    def close(self) -> None:
        """Sync what is left (unless a write failed before) and close."""
        if self._fd >= 0:
            try:
                if not self._failed:
                    self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
