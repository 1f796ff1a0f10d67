"""Data-dir incarnations: the book, the founding decision, the replica's check and the data dir's record."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from paxos.common import limits
from paxos.common.hostfile import Member
from paxos.consensus.messages import (
    Ballot,
    ChosenRecord,
    CommitRecord,
    DurableState,
    Heartbeat,
    Message,
    NodeId,
)
from paxos.incarnation import (
    NONE,
    Founding,
    FoundingAnswer,
    IncarnationBook,
    Verdict,
    decide_founding,
    new_incarnation,
)
from paxos.replica import Observer, Replica
from paxos.server.addressbook import AddressBook
from paxos.server.codec import PeerCodec
from paxos.server.ingress import PeerIngress
from paxos.server.refusals import RefusalLog
from paxos.server.service import (
    META_FILE,
    DataDirError,
    PaxosServer,
    check_data_dir,
    load_incarnation_book,
    save_incarnation_book,
)
from paxos.server.standing import Standing
from paxos.storage.meta import Identity
from paxos.storage.wal import Wal
from protos import peer_pb2
from tests.harness.replicafakes import MemoryStorage, NullTransport

NAMES = ["a", "b", "c"]
MEMBERS = [Member(n, "127.0.0.1", 7100 + i) for i, n in enumerate(NAMES)]
FRESH = FoundingAnswer(fresh=True, recorded=NONE)
MEMBER_WITHOUT_RECORD = FoundingAnswer(fresh=False, recorded=NONE)


# ------------------------------------------------------------------ the book


def test_the_book_records_a_first_incarnation_and_refuses_any_other() -> None:
    book = IncarnationBook()
    assert book.judge(2, 77) is Verdict.NEW
    book.record(2, 77)
    assert book.judge(2, 77) is Verdict.KNOWN
    assert book.judge(2, 78) is Verdict.REFUSED
    assert book.judge(3, NONE) is Verdict.REFUSED  # no incarnation is never recorded
    assert book.recorded_for([5, 2]) == 77 and book.recorded_for([5]) == NONE


def test_a_full_book_refuses_members_it_never_heard_from() -> None:
    book = IncarnationBook({i: 1 for i in range(1, limits.MAX_INCARNATION_BOOK + 1)})
    assert book.judge(limits.MAX_INCARNATION_BOOK + 1, 5) is Verdict.REFUSED
    assert book.judge(1, 1) is Verdict.KNOWN


def test_new_incarnations_are_nonzero_64_bit_and_differ() -> None:
    made = {new_incarnation() for _ in range(100)}
    assert len(made) == 100 and all(0 < i <= limits.MAX_INCARNATION for i in made)


# ------------------------------------------------------- founding decision


def test_a_single_server_founds_at_once() -> None:
    assert decide_founding("a", ["a"], {}).verdict is Founding.FOUND


def test_any_record_of_an_earlier_incarnation_refuses() -> None:
    answers = {"b": FoundingAnswer(fresh=False, recorded=9), "c": FRESH}
    decision = decide_founding("a", NAMES, answers)
    assert decision.verdict is Founding.REFUSE and "b heard from an earlier data dir of a" in decision.why
    # Even one answer is enough to refuse; the others need not be waited for.
    assert decide_founding("a", NAMES, {"b": FoundingAnswer(False, 9)}).verdict is Founding.REFUSE


def test_every_other_server_answering_without_a_record_founds() -> None:
    answers = {"b": MEMBER_WITHOUT_RECORD, "c": MEMBER_WITHOUT_RECORD}
    assert decide_founding("a", NAMES, answers).verdict is Founding.FOUND


def test_a_fresh_majority_of_the_others_founds_with_a_minority_down() -> None:
    five = [*NAMES, "d", "e"]
    assert decide_founding("a", five, {"b": FRESH, "c": FRESH, "d": FRESH}).verdict is Founding.FOUND
    assert decide_founding("a", five, {"b": FRESH, "c": FRESH}).verdict is Founding.WAIT


def test_the_asker_does_not_count_itself_as_fresh() -> None:
    # Of three, a lost data dir and one server that never took part would be
    # two with no data; but the lost one and c may have chosen values
    # together, and c is not answering.
    decision = decide_founding("a", NAMES, {"b": FRESH})
    assert decision.verdict is Founding.WAIT and "waiting for c" in decision.why
    assert decide_founding("a", NAMES, {"b": FRESH, "c": FRESH}).verdict is Founding.FOUND


def test_a_member_without_a_record_alone_is_not_enough() -> None:
    # c may be the one that recorded this server: an established cluster
    # (b holds data) could have counted its votes.
    decision = decide_founding("a", NAMES, {"b": MEMBER_WITHOUT_RECORD})
    assert decision.verdict is Founding.WAIT
    assert "waiting for c" in decision.why and "data held by b, which did not hear from a" in decision.why
    assert decide_founding("a", NAMES, {}).verdict is Founding.WAIT


# -------------------------------------------------------- replica's check


class _Refusals(Observer):
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def refused(self, msg: Message, reason: str) -> None:
        self.reasons.append(reason)


def _replica(storage: MemoryStorage, observer: Observer) -> Replica:
    return Replica(1, [1, 2, 3], DurableState(), storage, NullTransport(), lambda: 0.0, lambda: None, None,
                   random.Random(1), observer=observer)  # fmt: skip


def test_the_replica_records_a_new_incarnation_durably_before_the_core_sees_the_message() -> None:
    storage, refusals = MemoryStorage(), _Refusals()
    replica = _replica(storage, refusals)
    heartbeat = Heartbeat(2, Ballot(1, 2), 0, 1)
    recorded_when_seen: list[dict[NodeId, int]] = []
    receive = replica.core.receive

    def spying(msg: Message) -> str | None:
        recorded_when_seen.append(dict(storage.book))
        return receive(msg)

    replica.core.receive = spying  # type: ignore[method-assign]
    replica.receive(heartbeat, 41)
    assert recorded_when_seen == [{2: 41}]
    assert replica.core.leader == 2


def test_the_replica_refuses_a_member_whose_data_dir_changed_and_the_core_never_sees_it() -> None:
    storage, refusals = MemoryStorage({2: 41}), _Refusals()
    replica = _replica(storage, refusals)
    replica.receive(Heartbeat(2, Ballot(1, 2), 0, 1), 42)  # b's new, empty data dir
    assert refusals.reasons == ["sender's data dir is not the one it was first heard from"]
    assert replica.core.leader is None
    assert storage.book == {2: 41}
    replica.receive(Heartbeat(2, Ballot(1, 2), 0, 1), 41)
    assert replica.core.leader == 2


# ------------------------------------------------------------ the data dir


def test_a_new_data_dir_gets_an_incarnation_that_stays(tmp_path: Path) -> None:
    first = check_data_dir(tmp_path / "one", "a", MEMBERS)
    assert 0 < first.incarnation <= limits.MAX_INCARNATION
    assert check_data_dir(tmp_path / "one", "a", MEMBERS) == first
    other = check_data_dir(tmp_path / "two", "a", MEMBERS)
    # Same member and cluster (the hostfile's), another data dir.
    assert (other.member_id, other.cluster_id) == (first.member_id, first.cluster_id)
    assert other.incarnation != first.incarnation


def test_a_data_dir_of_the_previous_release_gets_an_incarnation_on_first_start(tmp_path: Path) -> None:
    made = check_data_dir(tmp_path, "a", MEMBERS)
    meta = json.loads((tmp_path / META_FILE).read_text())
    del meta["incarnation"]
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    upgraded = check_data_dir(tmp_path, "a", MEMBERS)
    assert upgraded.member_id == made.member_id and upgraded.incarnation not in (NONE, made.incarnation)
    assert check_data_dir(tmp_path, "a", MEMBERS) == upgraded  # written down, not made anew each start


def test_a_data_dir_without_its_log_is_refused_with_the_repair(tmp_path: Path) -> None:
    check_data_dir(tmp_path, "a", MEMBERS)
    (tmp_path / "wal").rmdir()
    with pytest.raises(DataDirError, match=r"no wal/ directory.*members remove a.*--join"):
        check_data_dir(tmp_path, "a", MEMBERS)


def test_a_log_emptied_beside_a_snapshot_is_refused(tmp_path: Path) -> None:
    check_data_dir(tmp_path, "a", MEMBERS)
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / f"{7:020d}.snap").write_bytes(b"x")
    with pytest.raises(DataDirError, match=r"holds no log segment.*members remove a"):
        check_data_dir(tmp_path, "a", MEMBERS)


def test_the_book_round_trips_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    assert load_incarnation_book(tmp_path) == {}
    save_incarnation_book(tmp_path, {5: 2**64 - 1, 6: 3})
    assert load_incarnation_book(tmp_path) == {5: 2**64 - 1, 6: 3}
    (tmp_path / "incarnations.json").write_text('{"incarnations": {"0000000000000005": "0"}}')
    with pytest.raises(DataDirError, match="damaged"):
        load_incarnation_book(tmp_path)


def test_a_replica_that_heard_from_no_peer_counts_as_fresh_until_it_does() -> None:
    storage = MemoryStorage()
    replica = _replica(storage, _Refusals())
    assert replica.untouched
    replica.receive(Heartbeat(2, Ballot(1, 2), 0, 1), 41)
    assert not replica.untouched
    assert not _replica(MemoryStorage({3: 5}), _Refusals()).untouched  # heard from a peer before a restart


def test_a_log_that_no_longer_reaches_its_snapshot_is_refused_with_the_repair(tmp_path: Path) -> None:
    check_data_dir(tmp_path, "a", MEMBERS)
    wal, _ = Wal.open(tmp_path / "wal", segment_bytes=64)
    for slot in range(1, 9):  # each sync fills a segment: one slot per segment
        wal.append([ChosenRecord(slot, (b"x" * 80,)), CommitRecord(slot)])
        wal.sync()
    wal.close()
    oldest = sorted((tmp_path / "wal").glob("*.wal"))[0]
    oldest.unlink()  # slot 1 is gone; no snapshot holds it
    with pytest.raises(DataDirError, match=r"cannot recover.*members remove a.*--join"):
        PaxosServer(MEMBERS, "a", tmp_path)


@pytest.mark.parametrize("joining", [False, True], ids=["founding-member", "waiting-to-join"])
def test_a_server_waiting_to_join_never_answers_fresh(joining: bool) -> None:
    # A server started with --join learned from the cluster that it exists.
    # Were it fresh, servers waiting to be added could outnumber the members
    # in the hostfile and let a member that lost its disk found anew.
    me = Member("n5", "127.0.0.1", 1)
    replica = Replica(
        5, [0, 1, 2], DurableState(), MemoryStorage(), NullTransport(), lambda: 0.0, lambda: None, rng=random.Random(5)
    )
    assert replica.untouched
    identity = Identity(cluster_id=7, member_id=5, ids={"n5": 5}, incarnation=3, joining=joining)
    ingress = PeerIngress(
        replica,
        PeerCodec(7, 5, (), 3),
        AddressBook({"n5": me}),
        Standing(identity, me, Path("/nonexistent")),
        RefusalLog(lambda: 0.0),
        Counter(),
        (),
        tls=False,
    )
    reply = ingress.incarnation_reply(peer_pb2.IncarnationRequest(name="n0", member_id=0))
    assert reply.fresh is not joining
    answer = FoundingAnswer(fresh=reply.fresh, recorded=reply.recorded)
    # With the members n1 and n2 silent, four servers waiting to join are a
    # majority of seven: were they fresh, n0 would found over n1's and n2's data.
    hostfile = [f"n{i}" for i in range(7)]
    answers = {name: answer for name in ("n3", "n4", "n5", "n6")}
    verdict = decide_founding("n0", hostfile, answers).verdict
    assert verdict is (Founding.FOUND if not joining else Founding.WAIT)
