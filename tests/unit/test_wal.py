"""Write-ahead log: round trips, torn tails, corruption, rotation, recovery.

Files are read back with ``read_records`` below, which follows the layout in
the ``paxos.storage.wal`` docstring rather than reusing the module's own scanner.
"""

from __future__ import annotations

import errno
import os
import random
import re
import struct
import zlib
from pathlib import Path

import pytest

from paxos.common.files import DiskFull
from paxos.consensus.core import Node
from paxos.consensus.messages import (
    NO_BALLOT,
    AcceptRecord,
    Ballot,
    ChosenRecord,
    CommitRecord,
    DurableState,
    PromiseRecord,
    Record,
)
from paxos.storage.wal import Wal, WalCorruption, decode_payload, encode_record
from tests.harness.corenet import FIXED, Net
from tests.harness.walfiles import END_MARK, HEADER, MARKED, read_records

EVERY_KIND: list[Record] = [
    PromiseRecord(Ballot(3, 1)),
    AcceptRecord(1, Ballot(3, 1), (b"set a", b"", b"\x00\xff" * 300)),
    AcceptRecord(2, Ballot(3, 1), ()),  # a no-op
    ChosenRecord(3, (b"from a peer",)),
    ChosenRecord(4, ()),
    CommitRecord(4),
    PromiseRecord(Ballot(2**40, 4)),
    AcceptRecord(2**40, Ballot(2**40, 4), (b"x" * 5000,)),
]


def encode_unmarked(record: Record) -> bytes:
    """``record`` as a paxoskv without end marks wrote it."""
    payload = encode_record(record)[HEADER.size : -1]
    head = struct.pack("<II", len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def replay(records: list[Record]) -> DurableState:
    state = DurableState()
    for record in records:
        state.apply(record)
    return state


def write_log(directory: Path, bundles: list[list[Record]], segment_bytes: int | None = None) -> Wal:
    wal, _ = Wal.open(directory) if segment_bytes is None else Wal.open(directory, segment_bytes)
    for bundle in bundles:
        wal.append(bundle)
        wal.sync()
    wal.close()
    return wal


def only_segment(directory: Path) -> Path:
    [segment] = sorted(directory.glob("*.wal"))
    return segment


# ------------------------------------------------------------- round trip


def test_every_record_kind_round_trips_through_the_file(tmp_path: Path) -> None:
    write_log(tmp_path, [EVERY_KIND[:3], EVERY_KIND[3:]])
    assert [r for _, r in read_records(only_segment(tmp_path))] == EVERY_KIND

    wal, state = Wal.open(tmp_path)
    wal.close()
    assert state == replay(EVERY_KIND)
    assert state.promised == Ballot(2**40, 4)
    assert state.commit_index == 4
    assert state.chosen == {3: (b"from a peer",), 4: ()}
    assert state.accepted[2] == (Ballot(3, 1), ())
    assert state.accepted[2**40] == (Ballot(2**40, 4), (b"x" * 5000,))


@pytest.mark.parametrize("record", EVERY_KIND, ids=lambda r: type(r).__name__)
def test_each_record_encodes_and_decodes_alone(record: Record) -> None:
    raw = encode_record(record)
    word = HEADER.unpack_from(raw)[0]
    assert word & MARKED, "every record written now carries the end mark"
    assert len(raw) == HEADER.size + (word & ~MARKED) + 1
    assert raw[-1] == END_MARK
    assert decode_payload(raw[HEADER.size : -1]) == record


def test_fresh_directory_opens_empty(tmp_path: Path) -> None:
    wal, state = Wal.open(tmp_path / "new" / "dir")
    wal.close()
    assert state == DurableState()
    assert state.promised == NO_BALLOT
    assert [p.name for p in wal.segments()] == ["00000000000000000001.wal"]


def test_append_buffers_until_sync(tmp_path: Path) -> None:
    wal, _ = Wal.open(tmp_path)
    segment = only_segment(tmp_path)
    wal.append([PromiseRecord(Ballot(1, 0)), CommitRecord(0)])
    assert segment.stat().st_size == 0, "records reach the file only on sync (one fsync per bundle)"
    wal.sync()
    size = segment.stat().st_size
    assert size > 0
    wal.sync()  # nothing new: no write
    assert segment.stat().st_size == size
    wal.append([CommitRecord(1)])
    wal.close()  # close syncs what is left
    assert [r for _, r in read_records(segment)] == [PromiseRecord(Ballot(1, 0)), CommitRecord(0), CommitRecord(1)]


def test_reopened_log_appends_after_the_old_records(tmp_path: Path) -> None:
    write_log(tmp_path, [EVERY_KIND[:4]])
    write_log(tmp_path, [EVERY_KIND[4:]])
    assert [r for _, r in read_records(only_segment(tmp_path))] == EVERY_KIND


# -------------------------------------------------------------- torn tails

THREE: list[Record] = [
    PromiseRecord(Ballot(1, 0)),
    AcceptRecord(1, Ballot(1, 0), (b"a" * 100,)),
    AcceptRecord(2, Ballot(1, 0), (b"b" * 100,)),
]


def _written(tmp_path: Path) -> tuple[Path, list[int]]:
    """THREE in one segment, each in its own sync; the segment and record offsets."""
    write_log(tmp_path, [[r] for r in THREE])
    segment = only_segment(tmp_path)
    return segment, [offset for offset, _ in read_records(segment)]


def _assert_tail_dropped(tmp_path: Path, segment: Path, last_offset: int) -> None:
    wal, state = Wal.open(tmp_path)
    assert state == replay(THREE[:2])
    assert segment.stat().st_size == last_offset, "the torn tail is cut off the file"
    # The log is appendable afterwards, right where the good records end.
    wal.append([CommitRecord(1)])
    wal.close()
    assert [r for _, r in read_records(segment)] == [*THREE[:2], CommitRecord(1)]
    _, state = Wal.open(tmp_path)
    assert state == replay([*THREE[:2], CommitRecord(1)])


@pytest.mark.parametrize("keep", [1, 5, HEADER.size, HEADER.size + 40], ids=lambda k: f"keep{k}")
def test_truncated_last_record_is_dropped(tmp_path: Path, keep: int) -> None:
    segment, offsets = _written(tmp_path)
    with open(segment, "r+b") as f:
        f.truncate(offsets[2] + keep)
    _assert_tail_dropped(tmp_path, segment, offsets[2])


def test_last_record_overwritten_with_zeros_is_dropped(tmp_path: Path) -> None:
    segment, offsets = _written(tmp_path)
    data = segment.read_bytes()
    segment.write_bytes(data[: offsets[2]] + bytes(len(data) - offsets[2]))
    _assert_tail_dropped(tmp_path, segment, offsets[2])


def test_zero_bytes_after_the_last_record_are_dropped(tmp_path: Path) -> None:
    """A file extended by the crash (size updated, data never written)."""
    write_log(tmp_path, [THREE])
    segment = only_segment(tmp_path)
    size = segment.stat().st_size
    with open(segment, "ab") as f:
        f.write(bytes(4096))
    wal, state = Wal.open(tmp_path)
    wal.close()
    assert state == replay(THREE)
    assert segment.stat().st_size == size


def test_last_record_with_a_partly_written_payload_is_dropped(tmp_path: Path) -> None:
    segment, offsets = _written(tmp_path)
    data = bytearray(segment.read_bytes())
    data[offsets[2] + HEADER.size + 50 :] = bytes(len(data) - offsets[2] - HEADER.size - 50)
    segment.write_bytes(bytes(data))
    _assert_tail_dropped(tmp_path, segment, offsets[2])


@pytest.mark.parametrize("cut", ["payload", "header"])
def test_half_written_record_followed_by_zeros_is_a_torn_tail(tmp_path: Path, cut: str) -> None:
    """One sync wrote records 2 and 3 together; the crash kept only a prefix of
    that write and the file was extended with zeros (size updated first)."""
    write_log(tmp_path, [THREE[:1], THREE[1:]])
    segment = only_segment(tmp_path)
    offsets = [offset for offset, _ in read_records(segment)]
    data = bytearray(segment.read_bytes())
    keep_to = offsets[1] + (HEADER.size + 50 if cut == "payload" else 4)
    data[keep_to:] = bytes(len(data) - keep_to)
    segment.write_bytes(bytes(data))
    wal, state = Wal.open(tmp_path)
    wal.close()
    assert state == replay(THREE[:1])
    assert segment.stat().st_size == offsets[1]


# ------------------------------------------------------------- corruption


@pytest.mark.parametrize("where", ["payload", "length", "payload crc", "header crc"])
def test_damaged_middle_record_is_refused_with_file_and_offset(tmp_path: Path, where: str) -> None:
    segment, offsets = _written(tmp_path)
    position = {
        "payload": offsets[1] + HEADER.size + 20,
        "length": offsets[1],
        "payload crc": offsets[1] + 5,
        "header crc": offsets[1] + 9,
    }[where]
    data = bytearray(segment.read_bytes())
    data[position] ^= 0x40
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorruption) as err:
        Wal.open(tmp_path)
    message = str(err.value)
    assert str(segment) in message
    assert f"byte {offsets[1]} " in message
    assert "\n" not in message
    # Nothing was changed: the damaged file is left for the operator.
    assert segment.read_bytes() == bytes(data)


def test_damaged_record_in_an_older_segment_is_refused(tmp_path: Path) -> None:
    write_log(tmp_path, [[r] for r in THREE * 4], segment_bytes=200)
    first, *rest = sorted(tmp_path.glob("*.wal"))
    assert rest, "the log rotated"
    data = first.read_bytes()
    with open(first, "r+b") as f:
        f.truncate(len(data) - 3)  # a torn tail is only expected in the newest segment
    with pytest.raises(WalCorruption, match=f"{first.name}: damaged record at byte"):
        Wal.open(tmp_path, segment_bytes=200)


# ----------------------------------------- the last record: torn or damaged
#
# A crash can leave a prefix of the last write (the rest missing, or zeros);
# bit rot can change any byte of a complete record.  The two must never be
# mistaken for each other in the last record of the newest segment.


def _rewrite(tmp_path: Path, data: bytes) -> Path:
    segment = only_segment(tmp_path)
    segment.write_bytes(data)
    return segment


def _last_record_span(tmp_path: Path) -> tuple[bytes, int]:
    """THREE written, each in its own sync; the file's bytes and where its last record starts."""
    segment, offsets = _written(tmp_path)
    return segment.read_bytes(), offsets[2]


def test_every_truncation_of_the_last_record_is_a_torn_tail(tmp_path: Path) -> None:
    data, last = _last_record_span(tmp_path)
    assert len(data) - last > HEADER.size + 100
    for cut in range(last, len(data)):
        segment = _rewrite(tmp_path, data[:cut])
        _assert_tail_dropped(tmp_path, segment, last)


@pytest.mark.parametrize("extend", [0, 4096], ids=["same-size", "extended"])
def test_every_zeroed_end_of_the_last_record_is_a_torn_tail(tmp_path: Path, extend: int) -> None:
    """The file grew (by this write, and maybe a page more) but the data from
    some byte of the record on never landed."""
    data, last = _last_record_span(tmp_path)
    for start in range(last, len(data) - 1):
        segment = _rewrite(tmp_path, data[:start] + bytes(len(data) - start + extend))
        _assert_tail_dropped(tmp_path, segment, last)


def test_last_record_whose_end_mark_alone_reads_zero_is_kept(tmp_path: Path) -> None:
    """Its payload checks out: nothing of it is lost, so it is neither dropped nor refused."""
    data, _ = _last_record_span(tmp_path)
    _rewrite(tmp_path, data[:-1] + b"\x00")
    wal, state = Wal.open(tmp_path)
    wal.close()
    assert state == replay(THREE)


def _position_class(offset: int, record_bytes: int) -> str:
    if offset < HEADER.size:
        return "header"
    return "end mark" if offset == record_bytes - 1 else "payload"


@pytest.mark.parametrize("flip", [0x01, 0x40, 0xFF], ids=lambda f: f"xor{f:#04x}")
def test_flipped_byte_anywhere_in_the_last_complete_record_is_refused(tmp_path: Path, flip: int) -> None:
    data, last = _last_record_span(tmp_path)
    seen = set()
    for position in range(last, len(data)):
        seen.add(_position_class(position - last, len(data) - last))
        damaged = bytearray(data)
        damaged[position] ^= flip
        segment = _rewrite(tmp_path, bytes(damaged))
        with pytest.raises(WalCorruption) as err:
            Wal.open(tmp_path)
        message = str(err.value)
        assert f"{segment}: damaged record at byte {last} of {len(data)} " in message, position
        assert "--join" in message and "backup" in message
        assert segment.read_bytes() == bytes(damaged), "a damaged log is left as it is"
    assert seen == {"header", "payload", "end mark"}


def test_flipped_byte_in_a_last_record_followed_by_zeros_is_refused(tmp_path: Path) -> None:
    """Zeros after it (a file extended by a later, torn write) do not make a complete record torn."""
    data, last = _last_record_span(tmp_path)
    for position in (last + 2, last + HEADER.size + 30, len(data) - 1):
        damaged = bytearray(data + bytes(512))
        damaged[position] ^= 0x40
        _rewrite(tmp_path, bytes(damaged))
        with pytest.raises(WalCorruption, match=f"at byte {last} "):
            Wal.open(tmp_path)


def test_last_record_whose_middle_sector_never_landed_is_refused(tmp_path: Path) -> None:
    """Pages landing out of order (a later one with the mark, an earlier one
    still zeros) cannot be told from damage: refused, the safe side."""
    write_log(tmp_path, [THREE[:1], [AcceptRecord(1, Ballot(1, 0), (b"p" * 9000,))]])
    segment = only_segment(tmp_path)
    last = read_records(segment)[-1][0]
    data = bytearray(segment.read_bytes())
    data[4096:8192] = bytes(4096)
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorruption, match=f"at byte {last} .*checksum mismatch in a complete record"):
        Wal.open(tmp_path)


# Records written before end marks existed carry no flag and no mark.


def _unmarked_log(tmp_path: Path, records: list[Record]) -> tuple[Path, list[int]]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    segment = tmp_path / "00000000000000000001.wal"
    offsets, data = [], b""
    for record in records:
        offsets.append(len(data))
        data += encode_unmarked(record)
    segment.write_bytes(data)
    return segment, offsets


def test_unmarked_records_are_read_and_marked_ones_follow_them(tmp_path: Path) -> None:
    segment, _ = _unmarked_log(tmp_path, EVERY_KIND[:4])
    wal, state = Wal.open(tmp_path)
    assert state == replay(EVERY_KIND[:4])
    wal.append(EVERY_KIND[4:])
    wal.close()
    assert [r for _, r in read_records(segment)] == EVERY_KIND
    _, state = Wal.open(tmp_path)
    assert state == replay(EVERY_KIND)


def test_unmarked_last_record_keeps_the_old_rule(tmp_path: Path) -> None:
    """Without a mark nothing tells a torn unmarked record from a damaged one: a
    bad last record with only zeros after it is dropped, as before."""
    segment, offsets = _unmarked_log(tmp_path, THREE)
    data = bytearray(segment.read_bytes())
    data[offsets[2] + HEADER.size + 30] ^= 0x40
    segment.write_bytes(bytes(data))
    wal, state = Wal.open(tmp_path)
    wal.close()
    assert state == replay(THREE[:2])
    assert segment.stat().st_size == offsets[2]


def test_damaged_unmarked_record_before_a_marked_one_is_refused(tmp_path: Path) -> None:
    segment, offsets = _unmarked_log(tmp_path, THREE)
    wal, _ = Wal.open(tmp_path)
    wal.append([CommitRecord(1)])
    wal.close()
    data = bytearray(segment.read_bytes())
    data[offsets[2] + HEADER.size + 30] ^= 0x40
    segment.write_bytes(bytes(data))
    with pytest.raises(WalCorruption, match=f"at byte {offsets[2]} "):
        Wal.open(tmp_path)


# --------------------------------------------------------------- rotation


def _carry(before: list[Record]) -> list[Record]:
    """What a new segment must start with after ``before`` was written."""
    state = replay(before)
    opened = sorted((s, e) for s, e in state.accepted.items() if s > state.commit_index)
    return [
        PromiseRecord(state.promised),
        CommitRecord(state.commit_index),
        *(AcceptRecord(slot, ballot, value) for slot, (ballot, value) in opened),
    ]


def test_rotation_carries_promise_commit_and_open_accepts(tmp_path: Path) -> None:
    bundles: list[list[Record]] = [[PromiseRecord(Ballot(2, 1))]]
    bundles += [[AcceptRecord(slot, Ballot(2, 1), (f"v{slot}".encode() * 20,))] for slot in range(1, 9)]
    bundles += [[CommitRecord(5)], [PromiseRecord(Ballot(3, 2))], [AcceptRecord(9, Ballot(3, 2), (b"after",))]]
    written = [r for bundle in bundles for r in bundle]

    wal = write_log(tmp_path, bundles, segment_bytes=220)
    segments = wal.segments()
    assert len(segments) >= 3
    # Each later segment starts with the carry, then goes on with new records.
    original = [r for _, r in read_records(segments[0])]
    carries = []
    for segment in segments[1:]:
        records = [r for _, r in read_records(segment)]
        carry = _carry(original)
        assert records[: len(carry)] == carry, segment.name
        carries.append(carry)
        original += records[len(carry) :]
    assert original == written
    # Some rotation happened after the commit, and it carried exactly the
    # accepts above it.
    after_commit = [c[2:] for c in carries if c[1] == CommitRecord(5)]
    assert after_commit
    for carried in after_commit:
        assert [r.slot for r in carried if isinstance(r, AcceptRecord)][:3] == [6, 7, 8]
        assert all(isinstance(r, AcceptRecord) and r.slot > 5 for r in carried)

    wal, reopened = Wal.open(tmp_path, segment_bytes=220)
    wal.close()
    assert reopened == replay(written)


def test_newest_segment_alone_holds_everything_a_node_needs_above_the_commit(tmp_path: Path) -> None:
    bundles: list[list[Record]] = [[PromiseRecord(Ballot(1, 0))]]
    bundles += [[AcceptRecord(s, Ballot(1, 0), (b"p" * 150,))] for s in range(1, 6)]
    bundles += [[CommitRecord(3)], [PromiseRecord(Ballot(4, 2))]]
    write_log(tmp_path, bundles, segment_bytes=200)
    newest = sorted(tmp_path.glob("*.wal"))[-1]
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / newest.name).write_bytes(newest.read_bytes())
    wal, state = Wal.open(alone)
    wal.close()
    assert state.promised == Ballot(4, 2)
    assert state.commit_index == 3
    assert {s: v for s, v in state.accepted.items() if s > 3} == {
        4: (Ballot(1, 0), (b"p" * 150,)),
        5: (Ballot(1, 0), (b"p" * 150,)),
    }


def test_rotated_log_recovers_after_a_torn_tail_in_the_newest_segment(tmp_path: Path) -> None:
    bundles = [[r] for r in THREE * 3]
    write_log(tmp_path, bundles, segment_bytes=200)
    newest = sorted(tmp_path.glob("*.wal"))[-1]
    tail = read_records(newest)[-1][0]
    with open(newest, "r+b") as f:
        f.truncate(tail + 7)
    wal, state = Wal.open(tmp_path, segment_bytes=200)
    wal.append([CommitRecord(2)])
    wal.close()
    assert state == replay(THREE)
    _, state = Wal.open(tmp_path, segment_bytes=200)
    assert state.commit_index == 2


# ------------------------------------------------------- recovering a Node


def _run_cluster() -> Net:
    """Node 0 leads, node 1 follows, node 2 is cut off and later catches up."""
    net = Net(3)
    net.elect(0)
    net.isolate(2)
    net.commit(0, b"a", b"b", b"c" * 300)
    net.heal()
    net.heartbeat(0)
    net.commit(0, b"d", b"e")
    net.nodes[0].propose(b"open")  # accepted, not chosen
    net.deliver(keep=lambda env: False)
    assert [len(t.committed) for t in net.traces] == [5, 5, 5]
    return net


@pytest.mark.parametrize("segment_bytes", [None, 200], ids=["one-segment", "rotating"])
@pytest.mark.parametrize("node", [0, 1, 2], ids=["leader", "follower", "caught-up"])
def test_node_recovered_from_the_reopened_log_matches(tmp_path: Path, node: int, segment_bytes: int | None) -> None:
    net = _run_cluster()
    trace = net.traces[node]
    write_log(tmp_path, [ready.persist for ready in trace.readies if ready.persist], segment_bytes)
    if segment_bytes is not None:
        assert len(list(tmp_path.glob("*.wal"))) > 1

    wal, state = Wal.open(tmp_path) if segment_bytes is None else Wal.open(tmp_path, segment_bytes)
    wal.close()
    assert state == trace.durable()
    recovered = Node(node, range(3), random.Random(1), FIXED, state)
    original = net.nodes[node]
    assert recovered.commit_index == original.commit_index == 5
    assert recovered.promised == original.promised
    assert recovered.ready().committed == trace.committed
    assert {s: original.chosen[s] for s in range(1, 6)} == {s: recovered.chosen[s] for s in range(1, 6)}
    if node == 0:
        assert recovered.accepted == {6: (original.ballot, (b"open",))}


# ------------------------------------------------------------ compaction


def _chosen_log(slots: int) -> list[list[Record]]:
    """One bundle per slot: accept it, then learn it is chosen."""
    return [[AcceptRecord(s, Ballot(1, 1), (f"c{s}".encode(),)), CommitRecord(s)] for s in range(1, slots + 1)]


@pytest.mark.parametrize("snapshot_index", [0, 1, 57, 99, 120])
def test_compaction_drops_only_segments_a_snapshot_covers(tmp_path: Path, snapshot_index: int) -> None:
    write_log(tmp_path, _chosen_log(120), segment_bytes=300)
    wal, _ = Wal.open(tmp_path, 300)
    before = len(wal.segments())
    freed = wal.compact(snapshot_index)
    wal.append([AcceptRecord(121, Ballot(1, 1), (b"open",))])
    wal.sync()
    wal.close()
    assert (freed > 0) == (len(wal.segments()) < before + 1)
    _, state = Wal.open(tmp_path)
    assert state.commit_index == 120
    assert state.accepted[121] == (Ballot(1, 1), (b"open",))
    # Every slot above the snapshot is still there, with its value.
    for slot in range(snapshot_index + 1, 121):
        assert state.accepted[slot][1] == (f"c{slot}".encode(),), slot
    node = Node(1, [1, 2, 3], random.Random(1), FIXED, durable=state, snapshot_index=snapshot_index)
    assert node.commit_index == 120 and min(node.chosen, default=121) == snapshot_index + 1
    if snapshot_index >= 57:
        assert freed > 0  # whole segments below the snapshot went away


def test_after_compaction_an_older_snapshot_does_not_meet_the_log(tmp_path: Path) -> None:
    write_log(tmp_path, _chosen_log(120), segment_bytes=300)
    wal, _ = Wal.open(tmp_path, 300)
    wal.compact(99)
    wal.close()
    _, state = Wal.open(tmp_path)
    with pytest.raises(ValueError, match="holds no value"):
        Node(1, [1, 2, 3], random.Random(1), FIXED, durable=state, snapshot_index=50)


def test_total_bytes_counts_every_segment(tmp_path: Path) -> None:
    write_log(tmp_path, _chosen_log(60), segment_bytes=300)
    wal, _ = Wal.open(tmp_path, 300)
    assert wal.total_bytes == sum(p.stat().st_size for p in wal.segments())
    wal.compact(60)
    assert wal.total_bytes == sum(p.stat().st_size for p in wal.segments())
    wal.close()


def test_compaction_keeps_older_segments_while_the_newest_lacks_its_head(tmp_path: Path) -> None:
    """A crash (or a full disk) right after a new segment was created leaves it
    empty: the promise and commit index live only in the older segments."""
    bundles: list[list[Record]] = [[PromiseRecord(Ballot(7, 2))], *_chosen_log(40)]
    write_log(tmp_path, bundles, segment_bytes=300)
    newest = sorted(tmp_path.glob("*.wal"))[-1]
    (tmp_path / f"{int(newest.stem) + 1:020d}.wal").touch()
    wal, _ = Wal.open(tmp_path, 300)
    wal.compact(40)
    wal.close()
    _, state = Wal.open(tmp_path, 300)
    assert state.promised == Ballot(7, 2)
    assert state.commit_index == 40


# --------------------------------------------------------------- disk full


def test_a_write_that_finds_the_disk_full_names_the_segment_and_ends_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal, _ = Wal.open(tmp_path)
    wal.append(THREE[:1])
    wal.sync()
    segment = only_segment(tmp_path)
    synced = segment.stat().st_size
    real_write = os.write
    calls = []

    def full_after_ten_bytes(fd: int, data: bytes) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            return real_write(fd, bytes(data)[:10])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full_after_ten_bytes)
    wal.append(THREE[1:2])
    with pytest.raises(DiskFull) as err:
        wal.sync()
    monkeypatch.undo()
    message = str(err.value)
    assert message.startswith(f"disk full: could not write {segment} (")
    assert re.search(r"; \d+ bytes free there", message) and "\n" not in message
    # Nothing more reaches the file: a record after the partial one would
    # turn a torn tail into damage in the middle of the log.
    wal.append(THREE[2:])
    wal.close()
    assert segment.stat().st_size == synced + 10
    _, state = Wal.open(tmp_path)
    assert state == replay(THREE[:1])
