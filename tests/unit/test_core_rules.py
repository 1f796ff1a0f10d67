"""The consensus core's safety rules, one rule a test, each test named for its rule.

Each scenario is built so that the rule it names decides the outcome: a core
that broke that one rule (and kept every other) would fail it.  The
scenarios in test_core.py show the same rules at work in longer runs.
Driven by plain calls and the hand-operated network of tests/harness/corenet.py.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from paxos.common import limits
from paxos.consensus.core import Node, Role
from paxos.consensus.messages import (
    Accept,
    Accepted,
    AcceptedEntry,
    AcceptRecord,
    Ballot,
    DurableState,
    Heartbeat,
    HeartbeatAck,
    NodeId,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    PromiseRecord,
    Reject,
)
from tests.harness.corenet import FIXED, NO_LEASE, Net, take

# ------------------------------------------------------------ read lease

# The production ratio of election timeout to lease: with FIXED's short
# timeout the core caps the lease at 2 ticks, too short to tell when it ends.
LONG_LEASE = replace(FIXED, election_ticks_min=30, election_ticks_max=31, leader_quorum_timeout_ticks=40)


def _leading_with_a_long_lease() -> tuple[Net, Node]:
    net = Net(3, LONG_LEASE)
    # A server just started refuses pre-votes for the stickiness window (it
    # may have backed a lease before a crash): age the voters past it.
    for voter in (1, 2):
        net.tick(voter, LONG_LEASE.election_ticks_min // 2)
    net.elect(0)
    net.commit(0, b"a")
    leader = net.nodes[0]
    assert leader._lease_ticks == limits.LEASE_TICKS, "the lease is not the one this test times"
    return net, leader


def test_the_lease_runs_from_when_the_heartbeat_was_sent_not_from_when_it_was_acknowledged() -> None:
    net, leader = _leading_with_a_long_lease()
    net.drop_queued()
    while not net.sent(0, Heartbeat):
        net.tick(0)
    beat = next(m for _, _, m in net.queue if isinstance(m, Heartbeat))
    sent_at = leader.now
    net.drop_queued()
    # The acks take three ticks to come back (the leader beats again meanwhile).
    delay = 3
    net.tick(0, delay)
    net.drop_queued()
    for follower in (1, 2):
        leader.receive(HeartbeatAck(follower, leader.ballot, beat.seq, leader.commit_index))
    net.collect(0)
    # Held while the core's clock is more than a tick short of sent_at +
    # LEASE_TICKS (the host's clock may run a tick ahead of it), no longer.
    last = sent_at + limits.LEASE_TICKS - 2
    assert leader.now < last, "the acks came back after the lease ran out: the test times nothing"
    net.tick(0, last - leader.now)
    assert leader.lease_read_index() == leader.commit_index
    net.tick(0)
    assert leader.lease_read_index() is None, f"lease still held {delay} ticks after it ran out"
    net.drop_queued()


def test_a_leader_cut_off_past_its_lease_answers_no_read_without_a_quorum_round() -> None:
    net, leader = _leading_with_a_long_lease()
    assert leader.lease_read_index() == 1
    net.isolate(0)
    for _ in range(limits.LEASE_TICKS):
        net.tick(0)
        net.deliver()
    assert leader.is_leader(), "still leads (its quorum timeout is longer): only the lease may stop it"
    assert leader.lease_read_index() is None
    assert leader.read(7)
    net.deliver()
    for _ in range(3 * LONG_LEASE.heartbeat_ticks):
        net.tick(0)
        net.deliver()
    assert net.traces[0].reads == [], "a read was answered with no quorum behind it"
    # Reconnected, a heartbeat round confirms the ballot and the read completes.
    net.heal()
    net.heartbeat(0)
    assert net.traces[0].reads == [(7, 1)]


def test_a_leader_deposed_while_its_lease_ran_out_answers_no_read() -> None:
    net, old = _leading_with_a_long_lease()
    net.isolate(0)
    net.tick(0, limits.LEASE_TICKS)
    assert old.lease_read_index() is None
    # Meanwhile the others elect one of themselves (their clocks ran too).
    net.tick(1, LONG_LEASE.election_ticks_min // 2)
    net.tick(2, LONG_LEASE.election_ticks_min // 2)
    net.elect(2, voters=[1, 2])
    net.commit(2, b"b")
    assert old.is_leader(), "the old leader has not heard of it"
    assert old.lease_read_index() is None
    assert old.read(8)
    net.tick(0, 2 * LONG_LEASE.heartbeat_ticks)
    net.deliver()
    assert net.traces[0].reads == []


# -------------------------------------------------- ballots in one round

# Acceptor 0 among four voters: members 1, 2 and 3 each propose in round 5.
SAME_ROUND = (Ballot(5, 1), Ballot(5, 2), Ballot(5, 3))


def _acceptor_that_promised(ballot: Ballot) -> Node:
    acceptor = Node(0, range(4), random.Random(0), NO_LEASE)
    acceptor.receive(Prepare(ballot.node, ballot, 1))
    out = take(acceptor)
    assert out.messages == [(ballot.node, Promise(0, ballot, 0, ()))]
    return acceptor


def test_an_acceptor_refuses_an_accept_from_a_lower_member_in_the_round_it_promised() -> None:
    low, promised, high = SAME_ROUND
    acceptor = _acceptor_that_promised(promised)
    acceptor.receive(Accept(1, low, 1, (b"low",), 0))
    out = take(acceptor)
    assert out.messages == [(1, Reject(0, promised, 1))]
    assert out.persist == [] and acceptor.accepted == {}
    acceptor.receive(Accept(3, high, 1, (b"high",), 0))
    out = take(acceptor)
    assert out.messages[0] == (3, Accepted(0, high, 1))
    assert AcceptRecord(1, high, (b"high",)) in out.persist
    assert acceptor.accepted == {1: (high, (b"high",))}


def test_an_acceptor_refuses_a_prepare_from_a_lower_member_in_the_round_it_promised() -> None:
    low, promised, high = SAME_ROUND
    acceptor = _acceptor_that_promised(promised)
    acceptor.receive(Prepare(1, low, 1))
    out = take(acceptor)
    assert out.messages == [(1, Reject(0, promised, 0))]
    assert out.persist == [] and acceptor.promised == promised
    acceptor.receive(Prepare(3, high, 1))
    out = take(acceptor)
    assert out.messages == [(3, Promise(0, high, 0, ()))]
    assert out.persist == [PromiseRecord(high)]


# ------------------------------------------------------------ re-proposal


def _candidate(durable: DurableState) -> tuple[Node, Ballot]:
    """Member 0 of five, through its pre-vote, waiting for promises."""
    node = Node(0, range(5), random.Random(0), NO_LEASE, durable)
    for _ in range(4 * FIXED.election_ticks_max):
        node.tick()
        out = take(node)
        prevotes = [m for _, m in out.messages if isinstance(m, PreVote)]
        if prevotes:
            break
    else:
        pytest.fail("member 0 never campaigned")
    node.receive(PreVoteReply(1, prevotes[0].ballot, True))
    node.receive(PreVoteReply(2, prevotes[0].ballot, True))
    out = take(node)
    assert node.role is Role.CANDIDATE
    [ballot] = {m.ballot for _, m in out.messages if isinstance(m, Prepare)}
    return node, ballot


@pytest.mark.parametrize("order", list(itertools.permutations([1, 2])), ids=str)
def test_a_new_leader_reproposes_the_value_accepted_under_the_highest_ballot(order: tuple[NodeId, ...]) -> None:
    # Slot 1 was accepted three times, with three values, under three
    # ballots: by the candidate itself, and by the two members that promise.
    own, low, high = Ballot(3, 4), Ballot(2, 3), Ballot(4, 2)
    durable = DurableState(promised=Ballot(4, 4), accepted={1: (own, (b"own",))})
    candidate, ballot = _candidate(durable)
    reports = {
        1: Promise(1, ballot, 0, (AcceptedEntry(1, low, (b"low",)),)),
        2: Promise(2, ballot, 0, (AcceptedEntry(1, high, (b"high",)),)),
    }
    for sender in order:
        candidate.receive(reports[sender])
    out = take(candidate)
    assert candidate.is_leader()
    proposed = {(m.slot, m.value) for _, m in out.early if isinstance(m, Accept)}
    assert proposed == {(1, (b"high",))}
    assert candidate.accepted[1] == (ballot, (b"high",))


# ------------------------------------------------------------- snapshots


def test_installing_a_snapshot_keeps_the_values_accepted_above_it() -> None:
    # Member 1 lagged: slots 1 and 2 are chosen elsewhere, and it accepted
    # values in slots 3 and 4, not chosen yet.  Its vote for them must
    # survive the snapshot that brings it up to slot 2.
    accepted = {3: (Ballot(1, 0), (b"c",)), 4: (Ballot(1, 0), (b"d",))}
    durable = DurableState(promised=Ballot(1, 0), accepted=dict(accepted))
    node = Node(1, range(3), random.Random(0), NO_LEASE, durable)
    node.install_snapshot(2)
    take(node)
    assert node.commit_index == 2
    assert node.accepted == accepted
    node.receive(Prepare(2, Ballot(2, 2), 1))
    out = take(node)
    assert out.messages == [
        (2, Promise(1, Ballot(2, 2), 2, (AcceptedEntry(3, *accepted[3]), AcceptedEntry(4, *accepted[4]))))
    ]


def test_installing_a_snapshot_forgets_the_values_it_covers() -> None:
    accepted = {2: (Ballot(1, 0), (b"b",)), 3: (Ballot(1, 0), (b"c",))}
    node = Node(1, range(3), random.Random(0), NO_LEASE, DurableState(Ballot(1, 0), dict(accepted)))
    node.install_snapshot(2)
    take(node)
    assert node.accepted == {3: accepted[3]}


# ------------------------------------------------------------ quorum size


def test_with_four_voters_a_leader_and_one_acceptor_choose_nothing() -> None:
    net = Net(4, replace(FIXED, lease_ticks=0))
    net.elect(0)
    leader = net.nodes[0]
    net.partition([0, 1], [2, 3])
    assert leader.propose(b"x")
    net.deliver()
    acks = [src for src, dst, m in net.delivered if dst == 0 and isinstance(m, Accepted)]
    assert acks == [1]
    assert leader.commit_index == 0, "chosen by two of four voters"
    assert all(trace.committed == [] for trace in net.traces)
    # A third vote chooses it.
    net.heal()
    net.tick(0, FIXED.retransmit_ticks)
    net.deliver()
    assert leader.commit_index == 1


def test_with_four_voters_two_promises_elect_no_one() -> None:
    net = Net(4, NO_LEASE)
    net.partition([0, 1], [2, 3])
    for _ in range(4 * FIXED.election_ticks_max):
        net.tick(0)
        net.deliver()
    granted = [m for src, _, m in net.delivered if src == 1 and isinstance(m, PreVoteReply) and m.granted]
    assert granted, "member 1 never backed member 0: the test saw nothing"
    assert not net.nodes[0].is_leader(), "elected by two of four voters"


# ------------------------------------------------------------ counting votes


def test_a_vote_counts_only_in_the_ballot_it_was_cast_in() -> None:
    # An Accepted of an earlier ballot for the same slot (late, or sent to the
    # leader this one replaced) says nothing about the value this ballot
    # proposes there: counting it could choose a value no quorum accepted.
    net = Net(3, NO_LEASE)
    net.elect(0)
    leader = net.nodes[0]
    earlier = leader.ballot
    # Cut off until it steps down, then elected again under a new ballot.
    net.isolate(0)
    net.tick(0, FIXED.leader_quorum_timeout_ticks)
    assert not leader.is_leader()
    net.heal()
    net.drop_queued()
    net.elect(0)
    assert leader.ballot > earlier
    net.isolate(0)
    assert leader.propose(b"x")
    net.deliver()  # the accepts are lost on the cut links
    slot = leader.commit_index + 1
    for acceptor in (1, 2):
        assert leader.receive(Accepted(acceptor, earlier, slot)) is None
    net.collect(0)
    assert leader.commit_index == 0, "chosen with votes cast in another ballot"
    # The votes of its own ballot choose it.
    net.heal()
    net.tick(0, FIXED.retransmit_ticks)
    net.deliver()
    assert leader.commit_index == slot
