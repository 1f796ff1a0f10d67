"""The replica host's order of effects: nothing that relies on a record leaves before that record is durable.

A real ``Replica`` around a real core, with a storage, a transport and a
clock that only record what happens, into one shared log.  The storage
finishes an fsync only when the test says so, so each test can look at what
left while a record was still on its way to the disk, and what a crash at
that moment would have left behind.

The rule, from ``Ready``'s contract (paxos/consensus/messages.py):

* a message leaves only once everything appended before it is durable: a
  promise, an accepted value or a commit index may ride on any message;
* the leader's own ``Accept`` may leave while its record is being written
  (its own vote counts only later), but not before the promise for its
  ballot is durable;
* a slot is applied, and a client answered, only once every promise and
  accepted value appended before it is durable (a commit index may lag: the
  cluster knows it anyway).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from paxos.common import limits
from paxos.consensus.messages import (
    Accept,
    Accepted,
    AcceptRecord,
    Ballot,
    DurableState,
    Heartbeat,
    HeartbeatAck,
    Message,
    NodeId,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    PromiseRecord,
    Record,
    Slot,
    Value,
)
from paxos.kv.statemachine import FrozenState
from paxos.replica import FetchedSnapshot, Observer, RegisterAnswer, Replica, Status, WriteAnswer
from protos import log_pb2
from tests.harness.corenet import ELECTION, NO_LEASE

# One entry of the shared log: what happened, and its details.
Event = tuple[str, object]


@dataclass
class Recorder:
    """The storage, transport and observer of one replica, writing one log."""

    events: list[Event] = field(default_factory=list)
    appended: list[Record] = field(default_factory=list)
    durable: int = 0  # how many of ``appended`` an fsync has covered
    # Requested fsyncs not finished yet: how many records each covers, and whom to tell.
    syncs: list[tuple[int, Callable[[], None]]] = field(default_factory=list)
    book: dict[NodeId, int] = field(default_factory=dict)
    snapshots_succeed: bool = False  # what a snapshot save reports

    # -- Storage

    def append(self, records: list[Record]) -> None:
        self.appended.extend(records)
        self.events.append(("append", tuple(records)))

    def unsynced(self) -> bool:
        return self.durable < len(self.appended)

    def sync(self, done: Callable[[], None]) -> None:
        self.syncs.append((len(self.appended), done))
        self.events.append(("sync requested", len(self.appended)))

    def finish_sync(self) -> None:
        """The disk reports the oldest requested fsync done."""
        covered, done = self.syncs.pop(0)
        self.durable = max(self.durable, covered)
        self.events.append(("sync completed", covered))
        done()

    def log_bytes(self) -> int:
        return 0

    def save_snapshot(self, frozen: FrozenState, done: Callable[[bool], None]) -> None:
        self.events.append(("save snapshot", frozen.applied_index))
        done(self.snapshots_succeed)

    def compact(self, snapshot_index: Slot) -> None:
        self.events.append(("compact", snapshot_index))

    def recorded_incarnations(self) -> dict[NodeId, int]:
        return dict(self.book)

    def record_incarnation(self, member: NodeId, incarnation: int) -> None:
        self.book[member] = incarnation  # durable when this returns, as the protocol says

    # -- Transport

    def send(self, messages: list[tuple[NodeId, Message]]) -> None:
        # Copied now: the caller may reuse the list.
        self.events.extend(("send", (to, msg)) for to, msg in list(messages))

    def fetch_snapshot(self, peer: NodeId, after: Slot, done: Callable[[FetchedSnapshot | None], None]) -> None:
        self.events.append(("fetch snapshot", peer))

    # -- what the test reads

    def sent(self, kind: type) -> list[tuple[NodeId, Message]]:
        return [
            detail
            for what, detail in self.events
            if what == "send" and isinstance(detail, tuple) and isinstance(detail[1], kind)
        ]

    def answer(self, answer: RegisterAnswer | WriteAnswer) -> None:
        """A client's callback: the answer goes into the log."""
        self.events.append(("answer", answer))

    def answers(self) -> list[object]:
        return [detail for what, detail in self.events if what == "answer"]


class _Applies(Observer):
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def applying(self, slot: Slot, value: Value) -> None:
        self.recorder.events.append(("apply", slot))


def order_violations(events: list[Event]) -> list[str]:
    """Each event that went out before a record it relies on was durable (the rule in the module docstring)."""
    appended: list[Record] = []
    durable = 0
    violations = []
    for index, (what, detail) in enumerate(events):
        pending = appended[durable:]
        votes_pending = [r for r in pending if isinstance(r, PromiseRecord | AcceptRecord)]
        promises_pending = [r for r in pending if isinstance(r, PromiseRecord)]
        match what:
            case "append":
                assert isinstance(detail, tuple)
                appended.extend(detail)
            case "sync completed":
                assert isinstance(detail, int)
                durable = max(durable, detail)
            case "send":
                assert isinstance(detail, tuple)
                msg = detail[1]
                waiting = promises_pending if isinstance(msg, Accept) else pending
                if waiting:
                    violations.append(f"event {index}: {msg} sent before {waiting} were durable")
            case "apply" | "answer":
                if votes_pending:
                    violations.append(f"event {index}: {what} {detail} before {votes_pending} were durable")
    return violations


class Clock:
    """Time in whole ticks, read half a tick late so float rounding never loses one."""

    def __init__(self) -> None:
        self.ticks = 0
        self.seconds = 0.0

    def __call__(self) -> float:
        return self.seconds

    def advance(self, ticks: int) -> None:
        self.ticks += ticks
        self.seconds = (self.ticks + 0.5) * limits.TICK_SECONDS


@dataclass
class Host:
    replica: Replica
    recorder: Recorder
    clock: Clock

    def receive(self, msg: Message) -> None:
        self.recorder.events.append(("receive", msg))
        self.replica.receive(msg, incarnation=1)
        self.replica.drive()

    def tick(self, ticks: int = 1) -> None:
        self.clock.advance(ticks)
        self.replica.tick()
        self.replica.drive()

    def finish_sync(self) -> None:
        self.recorder.finish_sync()

    def check(self) -> None:
        assert order_violations(self.recorder.events) == []


def _host(member: NodeId, snapshot_every: int = limits.SNAPSHOT_EVERY_COMMANDS) -> Host:
    recorder = Recorder()
    clock = Clock()
    replica = Replica(
        member,
        [0, 1, 2],
        DurableState(),
        recorder,
        recorder,
        clock,
        lambda: None,  # the test calls drive itself, after every input
        rng=random.Random(member),
        config=NO_LEASE,
        observer=_Applies(recorder),
        snapshot_every=snapshot_every,
    )
    return Host(replica, recorder, clock)


def _events_after(host: Host, marker: Event) -> list[Event]:
    events = host.recorder.events
    return events[events.index(marker) + 1 :]


# ------------------------------------------------------------ a follower


def test_a_follower_sends_its_promise_only_once_the_promise_is_durable() -> None:
    follower = _host(1)
    prepare = Prepare(0, Ballot(1, 0), 1)
    follower.receive(prepare)
    assert follower.recorder.appended == [PromiseRecord(Ballot(1, 0))]
    assert follower.recorder.syncs, "a promise must be synced"
    assert follower.recorder.sent(Promise) == [], "the promise left while its record was being written"
    follower.finish_sync()
    assert follower.recorder.sent(Promise) == [(0, Promise(1, Ballot(1, 0), 0, ()))]
    follower.check()


def test_a_follower_sends_accepted_only_once_the_accepted_value_is_durable() -> None:
    follower = _host(1)
    follower.receive(Prepare(0, Ballot(1, 0), 1))
    follower.finish_sync()
    follower.receive(Accept(0, Ballot(1, 0), 1, (b"v",), 0))
    assert follower.recorder.appended[-1] == AcceptRecord(1, Ballot(1, 0), (b"v",))
    assert follower.recorder.sent(Accepted) == []
    follower.finish_sync()
    assert follower.recorder.sent(Accepted) == [(0, Accepted(1, Ballot(1, 0), 1))]
    follower.check()


def test_a_follower_whose_fsync_never_finishes_sends_nothing_that_relies_on_it() -> None:
    # As if the process died with the accepted value still on its way to the
    # disk: the leader must never have counted that vote.
    follower = _host(1)
    follower.receive(Prepare(0, Ballot(1, 0), 1))
    follower.finish_sync()
    accept = Accept(0, Ballot(1, 0), 1, (b"v",), 0)
    follower.receive(accept)
    assert follower.recorder.syncs
    # More input while the fsync hangs: it piles up in the core.
    follower.receive(Heartbeat(0, Ballot(1, 0), 0, 1))
    follower.receive(Accept(0, Ballot(1, 0), 2, (b"w",), 0))
    follower.tick(3)
    assert follower.recorder.syncs, "the test holds the fsync: nothing may finish it"
    after = _events_after(follower, ("receive", accept))
    assert [e for e in after if e[0] in ("send", "apply", "answer")] == []
    assert follower.recorder.sent(Accepted) == [] and follower.recorder.sent(HeartbeatAck) == []
    follower.check()


# ------------------------------------------------------------- a leader


def _elected(host: Host) -> Ballot:
    """Make member 0 lead with member 1's votes, checking the order on the way."""
    for _ in range(4 * ELECTION):
        host.tick()
        if host.recorder.sent(PreVote):
            break
    [(_, prevote), *_] = host.recorder.sent(PreVote)
    assert isinstance(prevote, PreVote)
    ballot = prevote.ballot
    host.receive(PreVoteReply(1, ballot, True))
    assert host.recorder.appended == [PromiseRecord(ballot)]
    assert host.recorder.sent(Prepare) == [], "a prepare left before the candidate's own promise was durable"
    host.finish_sync()
    assert sorted(to for to, _ in host.recorder.sent(Prepare)) == [1, 2]
    host.receive(Promise(1, ballot, 0, ()))
    assert host.replica.core.is_leader()
    host.check()
    return ballot


def _propose_and_choose(host: Host, ballot: Ballot, slot: Slot, ack_first: bool) -> None:
    """The proposal for ``slot`` is out; its record syncs and member 1 accepts, in either order."""
    assert host.recorder.appended[-1] == AcceptRecord(slot, ballot, host.replica.core.accepted[slot][1])
    assert host.recorder.syncs, "the leader's own accepted value must be synced"
    early = [to for to, msg in host.recorder.sent(Accept) if isinstance(msg, Accept) and msg.slot == slot]
    assert sorted(early) == [1, 2], "the leader's accepts may travel while its own copy is written"
    answered = len(host.recorder.answers())
    if ack_first:
        host.receive(Accepted(1, ballot, slot))
        assert len(host.recorder.answers()) == answered, "answered while the leader's own vote was not durable"
        host.finish_sync()
    else:
        host.finish_sync()
        assert len(host.recorder.answers()) == answered, "answered with one vote of three: not chosen"
        host.receive(Accepted(1, ballot, slot))


@pytest.mark.parametrize("ack_first", [False, True], ids=["sync-then-ack", "ack-then-sync"])
def test_a_leader_answers_a_write_only_once_it_is_durable_and_chosen(ack_first: bool) -> None:
    leader = _host(0)
    ballot = _elected(leader)
    leader.replica.register(leader.recorder.answer)
    leader.replica.drive()
    _propose_and_choose(leader, ballot, 1, ack_first)
    [registration] = leader.recorder.answers()
    assert isinstance(registration, RegisterAnswer) and registration.status is Status.OK

    write = log_pb2.ClientWrite(session_id=registration.session_id, session_required=True, seq=1, first_unacked=1)
    write.set.key, write.set.value = "k", "v"
    leader.replica.write(write, leader.recorder.answer)
    leader.replica.drive()
    _propose_and_choose(leader, ballot, 2, ack_first)
    assert leader.recorder.answers()[-1] == WriteAnswer(Status.OK)
    events = leader.recorder.events
    answer_at = events.index(("answer", WriteAnswer(Status.OK)))
    assert events.index(("receive", Accepted(1, ballot, 2))) < answer_at, "answered before it was chosen"
    assert events.index(("apply", 2)) < answer_at
    leader.check()


def test_a_leader_whose_fsync_never_finishes_never_answers() -> None:
    leader = _host(0)
    ballot = _elected(leader)
    leader.replica.register(leader.recorder.answer)
    leader.replica.drive()
    assert leader.recorder.syncs
    leader.receive(Accepted(1, ballot, 1))
    leader.tick(3)
    assert leader.recorder.answers() == []
    assert [e for e in leader.recorder.events if e[0] == "apply"] == []
    leader.check()


# ------------------------------------------------------------ snapshots


@pytest.mark.parametrize("saved", [False, True], ids=["save-failed", "saved"])
def test_the_log_is_compacted_only_once_a_snapshot_of_it_is_durable(saved: bool) -> None:
    # A snapshot whose save failed holds nothing: dropping the log it was
    # meant to replace would lose chosen slots on the next restart.
    leader = _host(0, snapshot_every=1)
    leader.recorder.snapshots_succeed = saved
    ballot = _elected(leader)
    leader.replica.register(leader.recorder.answer)
    leader.replica.drive()
    _propose_and_choose(leader, ballot, 1, ack_first=False)
    events = leader.recorder.events
    assert ("save snapshot", 1) in events, "no snapshot was taken: the test checks nothing"
    compacted = [detail for what, detail in events if what == "compact"]
    if saved:
        assert compacted == [1] and leader.replica.snapshot_index == 1
    else:
        assert compacted == [], "the log was compacted under a snapshot that was never saved"
        assert leader.replica.snapshot_index == 0
    leader.check()


# ------------------------------------------------------- the check itself


def test_the_order_check_sees_a_message_that_left_early() -> None:
    promise = Promise(1, Ballot(1, 0), 0, ())
    record = PromiseRecord(Ballot(1, 0))
    early: list[Event] = [("append", (record,)), ("sync requested", 1), ("send", (0, promise)), ("sync completed", 1)]
    [violation] = order_violations(early)
    assert "Promise" in violation and "event 2" in violation
    in_order = [early[0], early[1], early[3], early[2]]
    assert order_violations(in_order) == []
