"""Snapshot files: what a snapshot holds, how it is written, and damage detection."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from paxos.common import limits
from paxos.kv.statemachine import FrozenState, Outcome, Registration, Result, StateMachine
from paxos.storage import snapshot
from paxos.storage.snapshot import SnapshotError, SnapshotMember
from protos import log_pb2
from tests.harness import TESTS
from tests.harness.logcommands import Applier, cmd, image, register

MEMBERS = [SnapshotMember(11, "a", "127.0.0.1:1"), SnapshotMember(12, "b", "127.0.0.1:2")]


def contents(frozen: FrozenState) -> object:
    """Everything a frozen state holds, in a form that compares by value."""
    return (
        frozen.applied_index,
        frozen.unreadable_commands,
        frozen.next_image_ref,
        frozen.next_session_id,
        sorted(frozen.data.items()),
        # in eviction order, least recently touched first
        [
            (cid, s.first_unacked, sorted(s.results.items()))
            for cid, s in sorted(frozen.sessions.items(), key=lambda item: item[1].touched)
        ],
        sorted(frozen.image_meta.items()),
        sorted(frozen.image_refs.items()),
    )


def h(n: int) -> bytes:
    return n.to_bytes(limits.IMAGE_HASH_BYTES, "big")


def busy_log(rng: random.Random, commands: int) -> list[bytes]:
    """A log touching every part of the state: keys, deletes, retries, sessions moving on, images, junk."""
    log: list[bytes] = []
    # Client-named sessions (as older logs hold them) and registered ones
    # (1 to 10, some never registered: their writes are refused as expired).
    seqs: dict[str | int, int] = {f"c{i}": 0 for i in range(20)} | {n: 0 for n in range(1, 11)}
    registered = 0
    for _ in range(commands):
        if registered < 8 and rng.random() < 0.05:
            registered += 1
            log.append(register(registered))
            continue
        client = rng.choice(list(seqs))
        seq = seqs[client]
        seqs[client] += 1
        first = max(0, seq - rng.randrange(3))
        kind = rng.random()
        if kind < 0.5:
            log.append(cmd(client, seq, set=(f"k{rng.randrange(50)}", "v" * rng.randrange(30)), first_unacked=first))
        elif kind < 0.65:
            log.append(cmd(client, seq, delete=f"k{rng.randrange(50)}", first_unacked=first))
        elif kind < 0.85:
            log.append(image(client, seq, [h(rng.randrange(40)) for _ in range(rng.randrange(1, 4))], f"m{seq}"))
        elif kind < 0.95:
            log.append(log[rng.randrange(len(log))] if log else b"\xff")  # a retry
        else:
            log.append(b"\xff\xff")  # does not decode
    return log


def write(tmp_path: Path, sm: StateMachine) -> Path:
    return snapshot.write_snapshot(tmp_path, sm.freeze(), cluster_id=7, members=MEMBERS)


def test_a_restored_state_equals_the_original_and_applies_the_rest_of_the_log_the_same(tmp_path: Path) -> None:
    rng = random.Random(1)
    log = busy_log(rng, 600)
    original = Applier()
    for raw in log[:400]:
        original(raw)
    path = write(tmp_path, original.sm)
    info, restored = snapshot.load(path)
    assert (info.applied_index, info.cluster_id, info.members) == (400, 7, tuple(MEMBERS))
    assert contents(restored.freeze()) == contents(original.sm.freeze())
    again = Applier(restored)
    for raw in log[400:]:
        assert again(raw) == original(raw)
    assert contents(again.sm.freeze()) == contents(original.sm.freeze())
    for n in range(40):
        assert again.sm.image_matches(h(n), 8, 5) == original.sm.image_matches(h(n), 8, 5)


def test_a_frozen_state_does_not_change_when_the_store_goes_on(tmp_path: Path) -> None:
    apply = Applier()
    apply(cmd("c", 0, set=("k", "1")))
    apply(image("c", 1, [h(1)], "first"))
    frozen = apply.sm.freeze()
    before = contents(frozen)
    apply(cmd("c", 2, set=("k", "2"), first_unacked=2))  # also drops the session's results 0 and 1
    apply(cmd("d", 0, delete="k"))
    apply(image("c", 3, [h(1)], "second"))
    assert contents(frozen) == before
    path = snapshot.write_snapshot(tmp_path, frozen, 7, MEMBERS)
    _, restored = snapshot.load(path)
    assert restored.get("k") == "1"
    assert restored.cached_result("c", 0) == Result("c", 0)
    assert [m.metadata for m in restored.image_matches(h(1), 0, 1)] == ["first"]


def test_the_session_table_survives_so_a_retry_applies_once(tmp_path: Path) -> None:
    apply = Applier()
    apply(cmd("c", 5, delete="missing", first_unacked=5))
    apply(cmd("c", 6, set=("k", "v"), first_unacked=5))
    _, restored = snapshot.load(write(tmp_path, apply.sm))
    again = Applier(restored)
    assert again(cmd("c", 5, delete="missing", first_unacked=5)) == [Result("c", 5, removed=False)]
    assert again(cmd("c", 6, set=("k", "other"), first_unacked=5)) == [Result("c", 6)]
    assert restored.get("k") == "v"


def test_large_states_are_split_into_bounded_frames(tmp_path: Path) -> None:
    apply = Applier()
    big = "x" * 100_000
    for i in range(40):
        apply(cmd("c", i, set=(f"k{i}", big), first_unacked=i))
    frozen = apply.sm.freeze()
    parts = list(frozen.parts(frame_bytes=256 * 1024))
    assert len([p for p in parts if p.WhichOneof("part") == "key_values"]) >= 10
    assert max(p.ByteSize() for p in parts) < 400 * 1024
    _, restored = snapshot.load(write(tmp_path, apply.sm))
    assert restored.data == apply.sm.data


def test_every_truncation_is_detected(tmp_path: Path) -> None:
    apply = Applier()
    for raw in busy_log(random.Random(2), 60):
        apply(raw)
    path = write(tmp_path, apply.sm)
    data = path.read_bytes()
    cut = tmp_path / "cut.snap"
    for n in range(len(data)):
        cut.write_bytes(data[:n])
        with pytest.raises(SnapshotError):
            snapshot.verify(cut)


def test_every_flipped_byte_is_detected(tmp_path: Path) -> None:
    apply = Applier()
    for raw in busy_log(random.Random(3), 60):
        apply(raw)
    path = write(tmp_path, apply.sm)
    data = path.read_bytes()
    bad = tmp_path / "bad.snap"
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x41
        bad.write_bytes(bytes(flipped))
        with pytest.raises(SnapshotError):
            snapshot.load(bad)


def test_another_format_and_trailing_bytes_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, Applier().sm)
    data = path.read_bytes()
    other = tmp_path / "other.snap"
    other.write_bytes(data[:16] + (snapshot.FORMAT + 1).to_bytes(4, "little") + data[20:])
    with pytest.raises(SnapshotError, match="format 2"):
        snapshot.verify(other)
    other.write_bytes(data + b"\0")
    with pytest.raises(SnapshotError, match="after the end"):
        snapshot.verify(other)
    other.write_bytes(b"not a snapshot at all, just text")
    with pytest.raises(SnapshotError, match="not a paxoskv snapshot"):
        snapshot.verify(other)


def test_a_crash_while_writing_leaves_no_snapshot_and_its_leftover_is_removed(tmp_path: Path) -> None:
    apply = Applier()
    apply(cmd("c", 0, set=("k", "v")))
    good = write(tmp_path, apply.sm)
    apply(cmd("c", 1, set=("k", "w")))
    whole = b"".join(snapshot.encode_frames(snapshot.header_for(apply.sm.freeze(), 7, []), apply.sm.freeze().parts()))
    # The process died after writing part of the temporary file.
    torn = tmp_path / (snapshot.file_name(2) + ".tmp")
    torn.write_bytes(whole[: len(whole) // 2])
    assert snapshot.snapshot_files(tmp_path) == [good]
    snapshot.remove_leftovers(tmp_path)
    assert not torn.exists()


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def failing() -> Iterator[bytes]:
        yield b"paxoskv-snapshot"
        raise OSError("disk gone")

    with pytest.raises(OSError):
        snapshot.write_atomically(tmp_path, snapshot.file_name(2), failing())
    assert list(tmp_path.iterdir()) == []


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    apply = Applier()
    paths = []
    for i in range(4):
        apply(cmd("c", i, set=("k", str(i))))
        paths.append(write(tmp_path, apply.sm))
    snapshot.prune(tmp_path, keep=2)
    assert snapshot.snapshot_files(tmp_path) == [paths[3], paths[2]]


def test_a_snapshot_from_before_registered_sessions_loads_them_under_their_client_ids(tmp_path: Path) -> None:
    apply = Applier()
    apply(cmd("old-client", 5, set=("k", "v"), first_unacked=5))
    frozen = apply.sm.freeze()
    header = snapshot.header_for(frozen, 7, MEMBERS)
    header.ClearField("next_session_id")  # as the previous release wrote it
    path = snapshot.write_atomically(tmp_path, snapshot.file_name(1), snapshot.encode_frames(header, frozen.parts()))
    _, restored = snapshot.load(path)
    again = Applier(restored)
    # The old client's retry is still answered from its session ...
    assert again(cmd("old-client", 5, set=("k", "other"), first_unacked=5)) == [Result("old-client", 5)]
    # ... and new sessions are numbered from 1, apart from the client-named one.
    assert again(register(1)) == [Registration(7, 1, 1)]
    assert again(cmd(1, 1, set=("k", "new"), first_unacked=1)) == [Result(1, 1)]
    assert [key for key, _, _ in restored.session_table()] == ["old-client", 1]
    assert restored.get("k") == "new"


def test_a_snapshot_written_by_the_previous_release_loads_with_its_sessions() -> None:
    # Written by the release before sessions were registered: slot 1 victim#5
    # set balance=100, slot 2 other#1 set balance=0, slot 3 deleter#1 delete missing.
    _, restored = snapshot.load(TESTS / "data" / "snapshot-before-registered-sessions.snap")
    assert restored.data == {"balance": "0"} and restored.next_session_id == 1
    assert [key for key, _, _ in restored.session_table()] == ["victim", "other", "deleter"]
    again = Applier(restored)
    replay = log_pb2.ClientWrite(client_id="victim", seq=5, first_unacked=5, session_required=True)
    replay.set.key, replay.set.value = "balance", "100"
    assert again(log_pb2.LogCommand(client_write=replay).SerializeToString()) == [Result("victim", 5)]
    assert restored.get("balance") == "0", "the replay is answered from the session, not applied"
    assert again(register(1)) == [Registration(7, 1, 1)]


def test_registered_sessions_and_their_counter_survive_a_snapshot(tmp_path: Path) -> None:
    apply = Applier()
    apply(register(1), register(2))
    apply(cmd(2, 1, set=("k", "v"), first_unacked=1))
    _, restored = snapshot.load(write(tmp_path, apply.sm))
    again = Applier(restored)
    assert again(cmd(2, 1, set=("k", "other"), first_unacked=1)) == [Result(2, 1)]
    assert again(register(3)) == [Registration(7, 3, 3)]
    [expired] = again(cmd(4, 1, set=("k", "x"), first_unacked=1))
    assert expired.outcome is Outcome.EXPIRED and restored.get("k") == "v"


def test_a_snapshot_naming_a_session_never_registered_is_refused(tmp_path: Path) -> None:
    apply = Applier()
    apply(register(1))
    frozen = apply.sm.freeze()
    header = snapshot.header_for(frozen, 7, MEMBERS)
    header.next_session_id = 1  # session 1 is listed, but the counter says none was registered
    path = snapshot.write_atomically(tmp_path, snapshot.file_name(1), snapshot.encode_frames(header, frozen.parts()))
    with pytest.raises(SnapshotError, match="never registered"):
        snapshot.load(path)
