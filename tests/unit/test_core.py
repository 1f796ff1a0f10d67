"""Unit tests of the sans-I/O Multi-Paxos core, driven by plain calls.

``Net`` (tests/harness/corenet.py) is a hand-operated network: it collects
each node's ``Ready`` bundles, keeps the durable records each node was asked
to persist, and delivers queued messages only when a test says so, dropping
those that cross a cut link.  Nothing here sleeps, opens a socket or reads a
clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace

import pytest

from paxos.consensus.core import Config, HostContractError, InvariantError, Node, Role
from paxos.consensus.membership import ConfigMember, Membership
from paxos.consensus.messages import (
    NO_BALLOT,
    NOOP,
    Accept,
    Accepted,
    AcceptRecord,
    Ballot,
    CatchupReply,
    CatchupRequest,
    ChosenRecord,
    CommitRecord,
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
    Ready,
    Record,
    Reject,
    Value,
)
from paxos.consensus.planted import PlantedBug
from tests.harness.corenet import ELECTION, FIXED, NO_LEASE, STICKY, Net, Trace, restart, slots, take

# ------------------------------------------------------------------ ballots


def test_ballot_orders_by_round_then_node() -> None:
    assert Ballot(1, 4) < Ballot(2, 0)
    assert Ballot(2, 0) < Ballot(2, 1)
    assert Ballot(3, 1) == Ballot(3, 1)
    assert NO_BALLOT < Ballot(1, 0)
    assert max(Ballot(2, 1), Ballot(1, 9), Ballot(2, 0)) == Ballot(2, 1)
    assert sorted([Ballot(2, 1), Ballot(1, 2), Ballot(2, 0), Ballot(1, 0)]) == [
        Ballot(1, 0),
        Ballot(1, 2),
        Ballot(2, 0),
        Ballot(2, 1),
    ]
    assert str(Ballot(7, 2)) == "7.2"


# ---------------------------------------------------------- construction


def test_planted_bug_switch_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="no_such_bug"):
        Node(0, range(3), random.Random(0), Config(planted_bugs=frozenset({"no_such_bug"})))  # type: ignore[arg-type]
    mixed = frozenset({PlantedBug.UNCONFIRMED_READ, "no_such_bug"})
    with pytest.raises(ValueError, match="no_such_bug"):
        Node(0, range(3), random.Random(0), Config(planted_bugs=mixed))  # type: ignore[arg-type]
    # A bug's name is not the bug: checked by identity, it would plant nothing.
    name = frozenset({"unconfirmed_read"})
    with pytest.raises(ValueError, match="unconfirmed_read"):
        Node(0, range(3), random.Random(0), Config(planted_bugs=name))  # type: ignore[arg-type]
    for bug in PlantedBug:
        Node(0, range(3), random.Random(0), Config(planted_bugs=frozenset({bug})))


def test_planted_skip_reproposal_is_caught_by_the_reproposal_scenario() -> None:
    config = replace(FIXED, planted_bugs=frozenset({PlantedBug.SKIP_REPROPOSAL}))
    net = _minority_value_then_new_leader(5, [0, 1], [1, 2, 3], config)
    net.heartbeat(3)
    assert net.traces[3].committed == slots(NOOP), "with the bug, x is lost: the scenario can see it"


def test_planted_accept_lower_ballot_is_caught_by_the_acceptor_check() -> None:
    node = Node(1, range(3), random.Random(0), replace(FIXED, planted_bugs=frozenset({PlantedBug.ACCEPT_LOWER_BALLOT})))
    node.receive(Prepare(2, Ballot(5, 2), 1))
    node.receive(Accept(0, Ballot(5, 0), 1, (b"x",), 0))
    assert take(node).messages[-1] == (0, Accepted(1, Ballot(5, 0), 1))


def test_planted_unconfirmed_read_is_caught_by_the_read_check() -> None:
    net = Net(3, replace(FIXED, planted_bugs=frozenset({PlantedBug.UNCONFIRMED_READ})))
    net.elect(0)
    net.isolate(0)
    assert net.nodes[0].read(1)
    assert net.collect(0).reads == [(1, 0)], "with the bug, a read completes with no quorum round"


# ------------------------------------------------------------ invariants
# FIXED checks them after every step, so every scenario here passes them;
# these show that each kind bites on a state no step may leave.


def test_a_chosen_slot_held_again_as_accepted_breaks_an_invariant() -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a")
    follower = net.nodes[1]
    assert follower.commit_index == 1
    follower.accepted[1] = (follower.promised, (b"a",))
    with pytest.raises(InvariantError, match="node 1 after tick: slot 1 at or below the commit index 1"):
        follower.tick()


def test_a_chosen_slot_gone_missing_breaks_an_invariant() -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a", b"b")
    follower = net.nodes[2]
    del follower.chosen[1]
    with pytest.raises(InvariantError, match=r"slots \[1\] at or below the commit index 2 have no chosen value"):
        follower.tick()


def test_a_leader_whose_promise_moved_on_breaks_an_invariant() -> None:
    net = Net(3)
    net.elect(0)
    leader = net.nodes[0]
    leader.promised = Ballot(leader.promised.round, 2)
    with pytest.raises(InvariantError, match=r"leader ballot .* is not the promised ballot"):
        leader.propose(b"x")


def test_a_leader_that_lost_its_own_accept_in_flight_breaks_an_invariant() -> None:
    net = Net(3)
    net.elect(0)
    leader = net.nodes[0]
    assert leader.propose(b"x")
    net.collect(0)  # slot 1 in flight, the accepts queued
    del leader.accepted[1]
    with pytest.raises(InvariantError, match="slot 1 in flight is not what this leader accepted"):
        leader.tick()


def test_learners_counted_towards_a_quorum_break_an_invariant() -> None:
    membership = Membership.of_voters(range(3)).adding_learner(ConfigMember(3, "n3", ""))
    Node(0, membership, random.Random(0), FIXED)
    counted = replace(FIXED, planted_bugs=frozenset({PlantedBug.LEARNER_VOTES}))
    with pytest.raises(InvariantError, match=r"learners \[3\] count towards a quorum"):
        Node(0, membership, random.Random(0), counted)


def test_invariants_are_checked_only_when_asked() -> None:
    node = Node(0, range(3), random.Random(0), replace(FIXED, check_invariants=False))
    node.accepted[0] = (node.promised, (b"x",))  # at the commit index: broken
    node.tick()
    with pytest.raises(InvariantError):
        node._check_invariants("a test")


def test_a_server_outside_the_configuration_never_campaigns() -> None:
    # A server waiting to join, or one that was removed, stays quiet.
    node = Node(3, range(3), random.Random(0))
    for _ in range(10 * FIXED.election_ticks_max):
        node.tick()
    ready = node.ready()
    assert node.role is Role.FOLLOWER and not ready.messages


def test_fresh_node_is_a_quiet_follower() -> None:
    node = Node(0, range(3), random.Random(0))
    assert node.role is Role.FOLLOWER and not node.is_leader()
    assert node.ballot == NO_BALLOT
    assert not node.propose(b"x")
    assert not node.read(1)
    assert take(node).empty()


# ------------------------------------------------------- phases 1 and 2


@pytest.mark.parametrize("size", [3, 5])
def test_election_happens_only_after_the_timeout(size: int) -> None:
    config = Config()  # the real timing: a random timeout per node
    net = Net(size, config, seed=size)
    for _ in range(config.election_ticks_min - 1):
        net.step()
        assert all(n.role is Role.FOLLOWER for n in net.nodes)
        assert not any(t.records for t in net.traces)
    for _ in range(config.election_ticks_max * 4):
        net.step()
        if net.leaders():
            break
    [leader] = net.leaders()
    ballot = net.nodes[leader].ballot
    assert ballot.node == leader and ballot.round >= 1
    for _ in range(3 * config.heartbeat_ticks):
        net.step()
    assert net.leaders() == [leader]
    for node in net.nodes:
        assert node.leader == leader
        assert node.promised == ballot


@pytest.mark.parametrize("size", [3, 5])
def test_proposals_are_chosen_and_committed_in_slot_order_everywhere(size: int) -> None:
    net = Net(size)
    net.elect(1)
    leader = net.nodes[1]
    assert leader.ballot == Ballot(1, 1)
    assert all(node.promised == Ballot(1, 1) for node in net.nodes)
    assert all(trace.committed == [] for trace in net.traces)

    net.commit(1, b"a", b"b")
    # Two commands proposed before one ready() share a slot (a batch).
    assert leader.propose(b"c") and leader.propose(b"d")
    net.deliver()
    net.heartbeat(1)

    expected = slots((b"a",), (b"b",), (b"c", b"d"))
    for node, trace in zip(net.nodes, net.traces, strict=True):
        assert trace.committed == expected
        assert node.commit_index == 3
    # Phase 2 was really run: every acceptor accepted each slot under the ballot.
    accepts = [m for _, _, m in net.delivered if isinstance(m, Accept)]
    assert {(m.slot, m.ballot) for m in accepts} == {(1, Ballot(1, 1)), (2, Ballot(1, 1)), (3, Ballot(1, 1))}
    for trace in net.traces:
        assert {(r.slot, r.value) for r in trace.records if isinstance(r, AcceptRecord)} == set(expected)


def test_a_value_needs_a_quorum_of_accepts_to_be_chosen() -> None:
    net = Net(5)
    net.elect(0)
    net.partition([0, 1], [2, 3, 4])
    net.nodes[0].propose(b"x")
    net.deliver()
    net.heartbeat(0)
    assert net.nodes[0].commit_index == 0
    assert all(trace.committed == [] for trace in net.traces)
    net.heal()
    # The leader retransmits unacknowledged accepts.
    for _ in range(FIXED.retransmit_ticks):
        net.tick(0)
    net.deliver()
    net.heartbeat(0)
    assert all(trace.committed == slots((b"x",)) for trace in net.traces)


def test_propose_is_refused_by_followers() -> None:
    net = Net(3)
    net.elect(0)
    assert not net.nodes[1].propose(b"x")
    assert not net.nodes[2].read(1)


# --------------------------------------------------------------- pre-vote


def test_pre_vote_is_granted_only_without_a_live_leader_and_changes_nothing() -> None:
    net = Net(3)
    net.elect(0)
    follower = net.nodes[1]
    records = len(net.traces[1].records)
    follower.receive(PreVote(2, Ballot(2, 2)))
    follower.receive(PreVote(2, Ballot(0, 2)))  # not above the promise
    out = net.collect(1)
    assert [m for _, m in out.messages] == [
        PreVoteReply(1, Ballot(2, 2), False),  # heard from leader 0 just now
        PreVoteReply(1, Ballot(0, 2), False),
        Reject(1, Ballot(1, 0), 0),  # the promise it is below, so the next try goes above it
    ]
    net.tick(1, STICKY)
    follower.receive(PreVote(2, Ballot(2, 2)))
    out = net.collect(1)
    assert (2, PreVoteReply(1, Ballot(2, 2), True)) in out.messages
    assert len(net.traces[1].records) == records, "a pre-vote must not be persisted or promised"
    assert follower.promised == Ballot(1, 0) and follower.leader == 0


def test_cut_off_node_does_not_raise_its_ballot_nor_disrupt_the_leader() -> None:
    net = Net(3)
    net.elect(0)
    net.isolate(2)
    for _ in range(5 * ELECTION):
        net.tick(2)
        net.tick(0)
        net.tick(1)
        net.deliver()
    assert net.nodes[2].promised == Ballot(1, 0)
    assert not any(isinstance(r, PromiseRecord) and r.ballot > Ballot(1, 0) for r in net.traces[2].records)
    net.heal()
    for _ in range(3 * ELECTION):
        net.step()
    assert net.leaders() == [0] and net.nodes[0].ballot == Ballot(1, 0)
    assert net.traces[0].lost_leadership == 0
    assert net.nodes[2].leader == 0


# ------------------------------------------------------------ pre-emption


def test_higher_ballot_preempts_lower_one() -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a")
    old = net.nodes[0]
    assert old.ballot == Ballot(1, 0)

    net.isolate(0)
    net.elect(2, voters=[1, 2])
    assert net.nodes[2].ballot == Ballot(2, 2)
    assert net.nodes[1].promised == Ballot(2, 2)
    assert old.is_leader(), "the cut-off leader has not noticed yet"

    net.heal()
    assert old.propose(b"stale")
    net.deliver()
    rejects = [(src, m) for src, dst, m in net.delivered if dst == 0 and isinstance(m, Reject)]
    assert rejects and all(m.promised == Ballot(2, 2) for _, m in rejects)
    assert not old.is_leader() and old.role is Role.FOLLOWER
    assert net.traces[0].lost_leadership == 1
    # The stale command was never accepted by anyone else, nor chosen.
    for node in (1, 2):
        assert all(
            not (isinstance(r, AcceptRecord) and r.ballot == Ballot(1, 0) and r.slot == 2)
            for r in net.traces[node].records
        )
    net.commit(2, b"b")
    for trace in net.traces:
        assert trace.committed == slots((b"a",), (b"b",))


def test_acceptor_rejects_lower_prepare_and_accept() -> None:
    node = Node(1, range(3), random.Random(0), NO_LEASE)
    node.receive(Prepare(2, Ballot(5, 2), 1))
    first = take(node)
    assert first.persist == [PromiseRecord(Ballot(5, 2))]
    assert first.messages == [(2, Promise(1, Ballot(5, 2), 0, ()))]

    node.receive(Prepare(0, Ballot(5, 0), 1))
    node.receive(Prepare(0, Ballot(4, 0), 1))
    node.receive(Accept(0, Ballot(5, 0), 1, (b"x",), 0))
    out = take(node)
    assert out.persist == []
    assert out.messages == [
        (0, Reject(1, Ballot(5, 2), 0)),
        (0, Reject(1, Ballot(5, 2), 0)),
        (0, Reject(1, Ballot(5, 2), 1)),
    ]
    assert node.accepted == {}
    assert node.promised == Ballot(5, 2)

    # The promised ballot itself, and higher ones, are accepted.
    node.receive(Accept(2, Ballot(5, 2), 1, (b"y",), 0))
    out = take(node)
    assert out.persist == [AcceptRecord(1, Ballot(5, 2), (b"y",))]
    assert out.messages == [(2, Accepted(1, Ballot(5, 2), 1))]


def test_leader_steps_down_on_a_higher_heartbeat() -> None:
    net = Net(3)
    net.elect(0)
    node = net.nodes[0]
    node.receive(Heartbeat(2, Ballot(9, 2), 0, 1))
    out = net.collect(0)
    assert out.lost_leadership
    assert not node.is_leader()
    assert node.leader == 2
    assert PromiseRecord(Ballot(9, 2)) in out.persist
    assert (2, HeartbeatAck(0, Ballot(9, 2), 1, 0)) in out.messages


def test_leader_without_a_quorum_steps_down() -> None:
    net = Net(3)
    net.elect(0)
    net.isolate(0)
    for _ in range(FIXED.leader_quorum_timeout_ticks + 1):
        net.tick(0)
        if not net.nodes[0].is_leader():
            break
    assert not net.nodes[0].is_leader()
    assert net.traces[0].lost_leadership == 1


def test_a_leader_handing_over_stays_out_of_elections_until_another_leads() -> None:
    net = Net(3)
    net.elect(0)
    assert not net.nodes[1].step_down(10 * ELECTION)  # a follower has nothing to hand over
    assert net.nodes[0].step_down(10 * ELECTION)
    net.collect(0)
    before = len(net.delivered)
    assert not net.nodes[0].is_leader()
    assert net.traces[0].lost_leadership == 1
    for _ in range(4 * ELECTION):
        net.step()
        if net.nodes[1].is_leader() or net.nodes[2].is_leader():
            break
    assert net.nodes[1].is_leader() or net.nodes[2].is_leader(), "nobody took over"
    campaigned = [msg for src, _, msg in net.delivered[before:] if src == 0 and isinstance(msg, PreVote)]
    assert not campaigned, "node 0 campaigned"
    new_leader = 1 if net.nodes[1].is_leader() else 2
    for _ in range(12 * ELECTION):  # its abstention long over, node 0 follows and never campaigns
        net.step()
    assert net.nodes[new_leader].is_leader() and net.nodes[0].leader == new_leader


# -------------------------------------------------------------- re-proposal


def _minority_value_then_new_leader(
    size: int, holders: list[NodeId], new_quorum: list[NodeId], config: Config = FIXED
) -> Net:
    """Leader 0 gets "x" accepted by ``holders`` only (a minority, so not
    chosen), then the last node of ``new_quorum`` is elected by that quorum."""
    net = Net(size, config)
    net.elect(0)
    old_ballot = net.nodes[0].ballot
    net.nodes[0].propose(b"x")
    # The Accept reaches only the holders, and no Accepted gets back.
    net.deliver(keep=lambda env: isinstance(env[2], Accept) and env[1] in holders)
    holding = [n for n in range(size) if net.nodes[n].accepted.get(1) == (old_ballot, (b"x",))]
    assert holding == holders
    assert len(holders) < net.nodes[0].voters.quorum_size, "x was accepted by a minority only: not chosen"
    assert all(trace.committed == [] for trace in net.traces)

    # The old leader steps down for want of a quorum (or is simply gone).
    net.isolate(0)
    net.tick(0, config.leader_quorum_timeout_ticks)
    assert not net.nodes[0].is_leader()
    net.partition(new_quorum)
    new = new_quorum[-1]
    net.elect(new, voters=new_quorum)
    assert net.nodes[new].ballot > old_ballot
    return net


@pytest.mark.parametrize(("size", "holders", "new_quorum"), [(5, [0, 1], [1, 2, 3]), (3, [0], [0, 1])])
def test_value_accepted_by_a_minority_is_reproposed_in_its_slot(
    size: int, holders: list[NodeId], new_quorum: list[NodeId]
) -> None:
    net = _minority_value_then_new_leader(size, holders, new_quorum)
    new = new_quorum[-1]
    new_ballot = net.nodes[new].ballot
    reproposals = [m for _, _, m in net.delivered if isinstance(m, Accept) and m.ballot == new_ballot]
    assert {(m.slot, m.value) for m in reproposals} == {(1, (b"x",))}
    net.heartbeat(new)
    for node in new_quorum:
        assert net.traces[node].committed == slots((b"x",))
    # New commands go after the re-proposed slot, and everyone learns both.
    net.commit(new, b"y")
    net.heal()
    net.heartbeat(new)
    net.heartbeat(new)
    for trace in net.traces:
        assert trace.committed == slots((b"x",), (b"y",))


def test_highest_ballot_value_wins_the_reproposal() -> None:
    """Two different values accepted in slot 1 under two ballots: the later one is re-proposed."""
    net = Net(5)
    net.elect(0)
    net.nodes[0].propose(b"old")
    net.deliver(keep=lambda env: isinstance(env[2], Accept) and env[1] == 1)
    net.isolate(0)
    net.tick(0, FIXED.leader_quorum_timeout_ticks)
    # Node 2 wins with {2, 3, 4}: it never heard of "old", so proposes its own.
    net.partition([2, 3, 4])
    net.elect(2, voters=[2, 3, 4])
    assert net.nodes[2].propose(b"new")
    net.deliver(keep=lambda env: isinstance(env[2], Accept) and env[1] == 3)
    assert net.nodes[3].accepted[1] == (Ballot(2, 2), (b"new",))
    assert net.nodes[1].accepted[1] == (Ballot(1, 0), (b"old",))
    net.isolate(2)
    net.tick(2, FIXED.leader_quorum_timeout_ticks)
    # Node 4 wins with {1, 3, 4}: both values are reported, 2.2 beats 1.0.
    net.partition([1, 3, 4])
    net.elect(4, voters=[1, 3, 4])
    net.heartbeat(4)
    for node in (1, 3, 4):
        assert net.traces[node].committed == slots((b"new",))


# ------------------------------------------------------------ gap filling


def test_empty_slot_below_an_accepted_one_becomes_a_noop() -> None:
    net = Net(3)
    net.elect(0)
    net.nodes[0].propose(b"a")
    net.collect(0)
    net.nodes[0].propose(b"b")
    # Slot 1 ("a") reaches nobody; slot 2 ("b") reaches node 1 only.
    net.deliver(keep=lambda env: isinstance(env[2], Accept) and env[2].slot == 2 and env[1] == 1)
    assert 1 not in net.nodes[1].accepted and 2 in net.nodes[1].accepted
    net.isolate(0)
    net.tick(0, FIXED.leader_quorum_timeout_ticks)
    net.partition([1, 2])
    net.elect(1, voters=[1, 2])
    net.heartbeat(1)
    for node in (1, 2):
        assert net.traces[node].committed == slots(NOOP, (b"b",))
    # The old leader accepted "a" in slot 1 itself, but learns the no-op.
    net.heal()
    net.heartbeat(1)
    net.heartbeat(1)
    assert net.traces[0].committed == slots(NOOP, (b"b",))


# --------------------------------------------------------------- catch-up


def test_cut_off_node_catches_up_in_order() -> None:
    config = replace(FIXED, max_catchup_entries=2)
    net = Net(3, config)
    net.elect(0)
    net.isolate(2)
    net.commit(0, b"a", b"b", b"c", b"d", b"e")
    assert net.traces[2].committed == []
    assert net.traces[1].committed == slots(*[(c,) for c in (b"a", b"b", b"c", b"d", b"e")])

    net.heal()
    net.heartbeat(0)
    requests = [(src, m) for src, _, m in net.delivered if isinstance(m, CatchupRequest)]
    replies = [m for _, dst, m in net.delivered if isinstance(m, CatchupReply) and dst == 2]
    assert [(src, m.from_slot) for src, m in requests] == [(2, 1), (2, 3), (2, 5)]
    assert [(m.first_slot, len(m.values)) for m in replies] == [(1, 2), (3, 2), (5, 1)]
    assert net.traces[2].committed == net.traces[0].committed
    assert net.nodes[2].commit_index == 5


def test_catch_up_request_is_retransmitted_when_lost() -> None:
    net = Net(3)
    net.elect(0)
    net.isolate(2)
    net.commit(0, b"a")
    net.heal()
    net.nodes[0].tick()
    net.nodes[0].tick()
    net.deliver(keep=lambda env: not isinstance(env[2], CatchupRequest))
    assert net.traces[2].committed == []
    for _ in range(FIXED.retransmit_ticks):
        net.tick(2)
    net.deliver()
    assert net.traces[2].committed == slots((b"a",))


# ------------------------------------------------------- snapshots


def _lagging_follower_meets_compaction() -> Net:
    """Node 2 is cut off while the leader commits five slots and compacts four."""
    net = Net(3)
    net.elect(0)
    net.isolate(2)
    net.commit(0, b"a", b"b", b"c", b"d", b"e")
    net.nodes[0].compact(4)
    net.nodes[1].compact(4)
    net.heal()
    return net


def test_a_peer_asking_for_compacted_slots_is_told_to_fetch_a_snapshot() -> None:
    net = _lagging_follower_meets_compaction()
    net.heartbeat(0)
    replies = [m for _, dst, m in net.delivered if isinstance(m, CatchupReply) and dst == 2]
    assert [(m.first_slot, m.values, m.compacted) for m in replies] == [(1, (), 4)]
    wanted = [r.snapshot_wanted for r in net.traces[2].readies if r.snapshot_wanted is not None]
    assert wanted == [0]
    # While the host fetches, no more catch-up requests go out.
    net.delivered.clear()
    for _ in range(3 * FIXED.retransmit_ticks):
        net.tick(2)
    net.deliver()
    assert not [m for src, _, m in net.delivered if isinstance(m, CatchupRequest) and src == 2]
    # The snapshot is installed: the log after it comes by catch-up.
    net.nodes[2].install_snapshot(4)
    net.collect(2)
    net.deliver()
    assert net.nodes[2].commit_index == 5
    assert net.traces[2].committed == [(5, (b"e",))]
    assert CommitRecord(4) in net.traces[2].records


def test_a_failed_snapshot_fetch_resumes_catch_up() -> None:
    net = _lagging_follower_meets_compaction()
    net.heartbeat(0)
    net.nodes[2].snapshot_failed()
    net.collect(2)
    requests = [m for _, _, m in net.queue if isinstance(m, CatchupRequest)]
    assert [m.from_slot for m in requests] == [1]


def test_compaction_and_install_respect_the_applied_index() -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a", b"b")
    leader = net.nodes[0]
    with pytest.raises(HostContractError, match="compact"):
        leader.compact(leader.commit_index + 1)
    leader.compact(1)
    assert 1 not in leader.chosen and 2 in leader.chosen and leader.compacted == 1
    with pytest.raises(HostContractError, match="install_snapshot"):
        leader.install_snapshot(2)


def test_a_node_restarts_on_top_of_its_snapshot() -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a", b"b", b"c")
    durable = net.traces[1].durable()
    del durable.accepted[1], durable.accepted[2]  # the log was compacted below the snapshot
    node = Node(1, range(3), random.Random(5), FIXED, durable, snapshot_index=2)
    assert node.commit_index == 3 and node.compacted == 2
    assert take(node).committed == [(3, (b"c",))]


@pytest.mark.parametrize(
    ("values", "compacted", "commit_index", "reason"),
    [
        (((b"x",),), 4, 5, "with values and a compacted log"),
        ((), 9, 5, "compacted outside what was asked"),
    ],
)
def test_bad_compacted_catch_up_replies_are_refused(
    values: tuple[Value, ...], compacted: int, commit_index: int, reason: str
) -> None:
    net = _lagging_follower_meets_compaction()
    net.tick(0, FIXED.heartbeat_ticks)
    net.deliver(keep=lambda env: not isinstance(env[2], CatchupReply))
    follower = net.nodes[2]
    asked = [m for _, _, m in net.delivered if isinstance(m, CatchupRequest)]
    assert asked
    refused = follower.receive(CatchupReply(0, asked[-1].from_slot, values, commit_index, compacted))
    assert refused is not None and reason in refused
    assert follower.commit_index == 0


# ---------------------------------------------------------------- restart


def test_restarted_node_keeps_its_promise_and_reemits_committed_slots() -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a", b"b")
    net.isolate(0)
    net.elect(2, voters=[1, 2])
    net.commit(2, b"c")
    before = list(net.traces[1].committed)
    assert before == slots((b"a",), (b"b",), (b"c",))

    node = restart(net, 1)
    assert node.promised == Ballot(2, 2)
    assert node.commit_index == 3
    assert node.role is Role.FOLLOWER
    out = net.collect(1)
    assert out.committed == before
    assert out.persist == [] and out.messages == []
    # Right after a start it ignores rivals' prepares (it may have backed a
    # read lease before it crashed); past the stickiness window it answers.
    node.receive(Prepare(0, Ballot(3, 0), 4))
    assert net.collect(1).messages == []
    net.tick(1, STICKY)
    net.drop_queued()

    node.receive(Prepare(0, Ballot(2, 0), 4))
    node.receive(Accept(0, Ballot(1, 0), 4, (b"stale",), 2))
    node.receive(Heartbeat(0, Ballot(1, 0), 2, 7))
    out = net.collect(1)
    assert out.persist == []
    assert [m for _, m in out.messages] == [
        Reject(1, Ballot(2, 2), 0),
        Reject(1, Ballot(2, 2), 4),
        Reject(1, Ballot(2, 2), 0),
    ]
    net.drop_queued()
    # It rejoins the cluster and keeps learning.
    net.heal()
    net.commit(2, b"d")
    assert net.traces[1].committed == slots((b"a",), (b"b",), (b"c",), (b"d",))


def test_restarted_node_reports_its_open_accepts_to_the_next_leader() -> None:
    net = Net(3)
    net.elect(0)
    net.nodes[0].propose(b"x")
    net.deliver(keep=lambda env: isinstance(env[2], Accept) and env[1] == 1)
    node = restart(net, 1)
    assert node.accepted == {1: (Ballot(1, 0), (b"x",))}
    net.isolate(0)
    net.tick(0, FIXED.leader_quorum_timeout_ticks)
    net.partition([1, 2])
    net.elect(2, voters=[1, 2])
    net.heartbeat(2)
    assert net.traces[2].committed == slots((b"x",))


def test_restart_from_a_commit_record_without_values_is_refused() -> None:
    state = DurableState()
    state.apply(CommitRecord(2))
    state.apply(AcceptRecord(1, Ballot(1, 0), (b"a",)))
    with pytest.raises(ValueError, match="slot 2"):
        Node(0, range(3), random.Random(0), FIXED, state)


def test_restart_counts_a_learned_slot_whose_commit_record_was_lost() -> None:
    # Catch-up wrote the slot's value, then the process died before the
    # commit record that followed it reached the disk.
    state = DurableState()
    state.apply(AcceptRecord(1, Ballot(1, 0), (b"a",)))
    state.apply(CommitRecord(1))
    state.apply(ChosenRecord(2, (b"b",)))
    node = Node(0, range(3), random.Random(0), FIXED, state)
    assert node.commit_index == 2
    assert take(node).committed == slots((b"a",), (b"b",))


def test_leader_counts_its_own_accept_only_in_the_bundle_after_persisting_it() -> None:
    net = Net(3)
    net.elect(0)
    net.drop_queued()
    leader = net.nodes[0]
    assert leader.propose(b"x")
    out = leader.ready()
    assert out.persist == [AcceptRecord(1, leader.ballot, (b"x",))]
    assert sorted(to for to, m in out.early if isinstance(m, Accept)) == [1, 2]
    assert not any(isinstance(m, Accept) for _, m in out.messages)
    assert out.must_sync()
    # A follower's vote arrives while the leader's own record is being
    # written: one vote of three is no quorum yet.
    leader.receive(Accepted(1, leader.ballot, 1))
    assert leader.commit_index == 0
    # The host hands the bundle back once it is durable: now it counts.
    leader.advance(out)
    assert leader.commit_index == 1
    assert take(leader).committed == slots((b"x",))


def test_host_must_advance_each_bundle_before_taking_the_next() -> None:
    node = Node(0, range(3), random.Random(0))
    first = node.ready()
    with pytest.raises(HostContractError, match="before advance"):
        node.ready()
    with pytest.raises(HostContractError, match="not the one"):
        node.advance(Ready())
    node.advance(first)
    with pytest.raises(HostContractError, match="not the one"):
        node.advance(first)  # twice
    node.advance(node.ready())


def test_a_bundle_that_only_learns_commits_needs_no_sync() -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a")
    net.drop_queued()
    leader = net.nodes[0]
    assert leader.propose(b"b")
    net.collect(0)
    leader.receive(Accepted(1, leader.ballot, 2))
    out = take(leader)
    assert out.persist == [CommitRecord(2)] and out.messages == [] and out.early == []
    assert not out.must_sync()
    assert out.committed == [(2, (b"b",))]


# ---------------------------------------------------------- Ready contract


def _check_ready_contract(trace: Trace, node: NodeId) -> None:
    """Every reply is backed by records persisted in its own bundle or earlier."""
    durable = DurableState()
    for index, ready in enumerate(trace.readies):
        for record in ready.persist:
            durable.apply(record)
        where = f"node {node}, ready #{index}"
        for _, msg in ready.early:
            # Only a leader's accepts may leave before its records are durable,
            # and only with the promise for their ballot already durable.
            assert isinstance(msg, Accept), f"{where}: {msg} sent early"
            assert durable.promised >= msg.ballot, f"{where}: {msg} before its ballot's PromiseRecord"
        if ready.early or ready.messages:
            assert ready.must_sync(), f"{where}: sends without syncing first"
        for _, msg in ready.messages:
            if isinstance(msg, Promise):
                assert durable.promised >= msg.ballot, f"{where}: {msg} before its PromiseRecord"
                for entry in msg.accepted:
                    assert durable.accepted.get(entry.slot) == (entry.ballot, entry.value), f"{where}: {entry}"
            elif isinstance(msg, Accepted):
                assert durable.promised >= msg.ballot, f"{where}: {msg} before its PromiseRecord"
                stored = durable.accepted.get(msg.slot)
                assert (stored is not None and stored[0] == msg.ballot) or msg.slot <= durable.commit_index, (
                    f"{where}: {msg} before its AcceptRecord"
                )
            elif isinstance(msg, HeartbeatAck):
                assert durable.promised >= msg.ballot, f"{where}: {msg} before its PromiseRecord"
            elif isinstance(msg, Prepare):
                assert durable.promised >= msg.ballot, f"{where}: {msg} before the candidate's own promise"
            elif isinstance(msg, Accept):
                stored = durable.accepted.get(msg.slot)
                assert stored == (msg.ballot, msg.value) or msg.slot <= durable.commit_index, (
                    f"{where}: {msg} before the leader's own AcceptRecord"
                )


def _chaos(seed: int, size: int, rounds: int) -> Net:
    """A seeded run with loss, reordering, partitions and proposals."""
    rng = random.Random(seed)
    net = Net(
        size,
        Config(
            heartbeat_ticks=2,
            election_ticks_min=6,
            election_ticks_max=14,
            leader_quorum_timeout_ticks=14,
            retransmit_ticks=3,
        ),
        seed=seed,
    )
    counter = 0
    for _ in range(rounds):
        roll = rng.random()
        if roll < 0.05:
            net.isolate(rng.randrange(size))
        elif roll < 0.15:
            net.heal()
        for node in range(size):
            if rng.random() < 0.9:
                net.tick(node)
        for leader in net.leaders():
            for _ in range(rng.randrange(3)):
                counter += 1
                net.nodes[leader].propose(f"cmd{counter}".encode())
        net.collect_all()
        rng.shuffle(net.queue)
        pending, net.queue = net.queue, []
        for env in pending:
            src, dst, msg = env
            if net.is_cut(src, dst) or rng.random() < 0.1:
                continue
            if rng.random() < 0.2:
                net.queue.append(env)  # delayed to the next round
                continue
            net.delivered.append(env)
            net.nodes[dst].receive(msg)
            net.collect(dst)
    return net


@pytest.mark.parametrize("seed", range(4))
def test_every_reply_follows_the_records_it_depends_on(seed: int) -> None:
    net = _chaos(seed, 3 + 2 * (seed % 2), 300)
    assert any(trace.committed for trace in net.traces), "the run chose nothing; the check saw too little"
    for node, trace in enumerate(net.traces):
        _check_ready_contract(trace, node)
    # And the runs agree: every node's committed log is a prefix of the longest.
    longest = max((t.committed for t in net.traces), key=len)
    for trace in net.traces:
        assert trace.committed == longest[: len(trace.committed)]
        assert [slot for slot, _ in trace.committed] == list(range(1, len(trace.committed) + 1))


def test_ready_contract_on_a_single_exchange() -> None:
    node = Node(1, range(3), random.Random(0), NO_LEASE)
    node.receive(Prepare(0, Ballot(1, 0), 1))
    node.receive(Accept(0, Ballot(1, 0), 1, (b"v",), 0))
    out = take(node)
    assert out.persist == [PromiseRecord(Ballot(1, 0)), AcceptRecord(1, Ballot(1, 0), (b"v",))]
    assert [m for _, m in out.messages] == [
        Promise(1, Ballot(1, 0), 0, ()),
        Accepted(1, Ballot(1, 0), 1),
    ]


# ------------------------------------------------------ linearizable reads


def test_read_completes_only_after_a_quorum_heartbeat_round() -> None:
    net = Net(5, NO_LEASE)
    net.elect(0)
    net.commit(0, b"a")
    leader = net.nodes[0]
    assert leader.read(7)
    out = net.collect(0)
    assert out.reads == []
    beats = [(dst, m) for src, dst, m in net.queue if src == 0 and isinstance(m, Heartbeat)]
    assert sorted(dst for dst, _ in beats) == [1, 2, 3, 4]
    seq = beats[0][1].seq

    # Heartbeats arrive, but only one ack gets back: 2 of 5 is no quorum.
    net.deliver(keep=lambda env: not isinstance(env[2], HeartbeatAck) or env[0] == 1)
    assert net.traces[0].reads == []
    acks = [src for src, _, m in net.delivered if isinstance(m, HeartbeatAck) and m.seq == seq]
    assert acks == [1]
    # Acks for an older round do not count either.
    leader.receive(HeartbeatAck(2, leader.ballot, seq - 1, 1))
    net.collect(0)
    assert net.traces[0].reads == []

    leader.receive(HeartbeatAck(2, leader.ballot, seq, 1))
    out = net.collect(0)
    assert out.reads == [(7, 1)]


def test_read_waits_for_the_commit_index_to_reach_its_read_index() -> None:
    net = Net(3)
    net.elect(0)
    leader = net.nodes[0]
    leader.propose(b"a")
    net.collect(0)  # slot 1 in flight, not chosen
    net.drop_queued()
    assert leader.read(1)
    net.collect(0)
    # The heartbeat round is acked, but slot 1 is not chosen yet.
    net.deliver(keep=lambda env: isinstance(env[2], Heartbeat | HeartbeatAck))
    assert net.traces[0].reads == []
    net.tick(0, FIXED.retransmit_ticks)
    net.deliver()
    assert leader.commit_index == 1
    assert net.traces[0].reads == [(1, 1)]


def test_deposed_leader_never_completes_a_read() -> None:
    # Without a lease: here the old leader's clock stands still while the
    # others elect a new leader, which no lease can survive (see the lease
    # tests for clocks that run together).
    net = Net(5, NO_LEASE)
    net.elect(0)
    net.commit(0, b"a")
    old = net.nodes[0]
    # {2, 3, 4} elect node 4: a quorum promised a higher ballot.
    net.partition([0, 1], [2, 3, 4])
    net.elect(4, voters=[2, 3, 4])
    net.commit(4, b"b")
    assert old.is_leader()
    assert old.read(11)
    # Node 1 still acks the old ballot, but two acks are not a quorum of five.
    for _ in range(3 * FIXED.heartbeat_ticks):
        net.tick(1)
        net.tick(0)
        net.deliver()
        assert net.traces[0].reads == []
    # Reconnected, the old leader hears rejections and steps down.
    net.heal()
    net.tick(0, FIXED.heartbeat_ticks)
    net.deliver()
    assert not old.is_leader()
    assert net.traces[0].lost_leadership == 1
    for _ in range(5):
        net.step()
    assert net.traces[0].reads == []
    assert not old.read(12)


def test_lease_answers_reads_without_a_round_until_it_runs_out() -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a")  # ends with an acknowledged heartbeat: the lease
    leader = net.nodes[0]
    assert leader.lease_read_index() == 1
    net.drop_queued()
    assert leader.read(5)
    out = net.collect(0)
    assert out.reads == [(5, 1)]
    assert not net.sent(0, Heartbeat)
    # Cut off, the leader keeps its lease only until it runs out.
    net.isolate(0)
    for _ in range(FIXED.heartbeat_ticks * 3):
        net.tick(0)
        net.deliver()
    assert leader.is_leader()
    assert leader.lease_read_index() is None
    assert leader.read(6)
    net.deliver()
    assert net.traces[0].reads == [(5, 1)]


def test_follower_backing_a_lease_ignores_rival_prepares() -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a")
    follower = net.nodes[1]
    net.drop_queued()
    follower.receive(Prepare(2, Ballot(9, 2), 2))
    out = net.collect(1)
    assert out.messages == [] and out.persist == []
    assert follower.promised == net.nodes[0].ballot
    net.tick(1, STICKY)
    follower.receive(Prepare(2, Ballot(9, 2), 2))
    assert [m for _, m in net.collect(1).messages] == [Promise(1, Ballot(9, 2), 1, ())]


def test_no_rival_leads_while_the_old_leader_holds_its_lease() -> None:
    # Every clock runs at the same rate; the old leader is cut off right
    # after renewing its lease, and the others elect a new leader.
    net = Net(5, Config())
    for _ in range(500):
        net.step()
        leaders = [n for n in range(5) if net.nodes[n].is_leader()]
        if leaders:
            break
    first = leaders[0]
    net.commit(first, b"a")
    old = net.nodes[first]
    assert old.lease_read_index() is not None
    net.isolate(first)
    rival_at = None
    for tick in range(500):
        net.step()
        rivals = [n for n in range(5) if n != first and net.nodes[n].is_leader()]
        if rivals:
            rival_at = rival_at if rival_at is not None else tick
            assert old.lease_read_index() is None, f"node {rivals} leads at tick {tick} while the old lease holds"
    assert rival_at is not None, "no new leader was elected"


def test_deposed_leader_stepping_down_drops_its_reads() -> None:
    net = Net(3)
    net.elect(0)
    old = net.nodes[0]
    assert old.read(5)
    net.collect(0)
    net.drop_queued()
    old.receive(Accept(2, Ballot(3, 2), 1, (b"z",), 0))
    out = net.collect(0)
    assert out.lost_leadership and out.reads == []
    # A late ack for the old ballot changes nothing.
    old.receive(HeartbeatAck(1, Ballot(1, 0), 2, 0))
    assert net.collect(0).reads == []


# --------------------------------------------------------- duelling


@pytest.mark.parametrize("seed", range(6))
def test_duelling_candidates_converge_to_one_leader(seed: int) -> None:
    """All nodes time out together; seeded loss and delay; one leader wins."""
    size = 5 if seed % 2 else 3
    config = Config(
        heartbeat_ticks=2,
        election_ticks_min=8,
        election_ticks_max=16,
        leader_quorum_timeout_ticks=16,
        retransmit_ticks=4,
    )
    # Identical timeout draws: every node times out on the same tick.
    net = Net(size, config, seed=seed, same_rng=True)
    rng = random.Random(seed)
    leaders_by_ballot: dict[Ballot, NodeId] = {}
    stable = 0
    for _ in range(400):
        for n in range(size):
            net.tick(n)
        net.collect_all()
        rng.shuffle(net.queue)
        pending, net.queue = net.queue, []
        for env in pending:
            if rng.random() < 0.1:
                continue
            net.nodes[env[1]].receive(env[2])
            net.collect(env[1])
        for leader in net.leaders():
            ballot = net.nodes[leader].ballot
            assert leaders_by_ballot.setdefault(ballot, leader) == leader
        leaders = net.leaders()
        followers_agree = len(leaders) == 1 and all(n.leader == leaders[0] for n in net.nodes)
        stable = stable + 1 if followers_agree else 0
        if stable >= 3 * config.heartbeat_ticks:
            break
    assert stable >= 3 * config.heartbeat_ticks, f"no stable leader after 400 ticks: {net.leaders()}"
    assert len(leaders_by_ballot) >= 1


def test_replica_refuses_to_act_on_a_bundle_that_is_not_durable() -> None:
    from paxos.replica import Replica

    class LyingDisk:
        """Reports an fsync done while records are still pending."""

        def __init__(self) -> None:
            self.pending: list[Record] = []

        def append(self, records: list[Record]) -> None:
            self.pending.extend(records)

        def unsynced(self) -> bool:
            return bool(self.pending)

        def sync(self, done: Callable[[], None]) -> None:
            done()

        def recorded_incarnations(self) -> dict[NodeId, int]:
            return {}

    class Wire:
        def send(self, messages: list[tuple[NodeId, Message]]) -> None:
            pass

    now = [0.0]
    replica = Replica(0, [0], DurableState(), LyingDisk(), Wire(), lambda: now[0], lambda: None)
    now[0] = 10.0  # past any election timeout: a one-member cluster elects itself and persists a promise
    replica.tick()
    with pytest.raises(HostContractError, match="not durable"):
        for _ in range(100):
            now[0] += 1.0
            replica.tick()
            replica.drive()
