"""A log segment's record framing, written down independently of paxos/storage/wal.py, and a reader that checks it."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from paxos.consensus.messages import Record
from paxos.storage.wal import decode_payload

HEADER = struct.Struct("<III")  # flag bit | payload length, crc32(payload), crc32(first 8 bytes)
MARKED = 1 << 31  # the record ends with the end mark
END_MARK = 0xA5


def read_records(path: Path) -> list[tuple[int, Record]]:
    """(offset, record) for every record of a segment that must be intact."""
    data = path.read_bytes()
    out: list[tuple[int, Record]] = []
    pos = 0
    while pos < len(data):
        word, crc, head_crc = HEADER.unpack_from(data, pos)
        assert zlib.crc32(data[pos : pos + 8]) == head_crc
        length = word & ~MARKED
        payload = data[pos + HEADER.size : pos + HEADER.size + length]
        assert zlib.crc32(payload) == crc
        end = pos + HEADER.size + length
        if word & MARKED:
            assert data[end] == END_MARK
            end += 1
        out.append((pos, decode_payload(payload)))
        pos = end
    return out
