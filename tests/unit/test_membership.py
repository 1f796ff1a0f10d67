"""Membership changes in the consensus core (docs/membership.md).

Hand-driven networks from tests/harness/corenet.py: servers 0, 1 and 2 found the
cluster and server 3 waits outside it until it is added.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from paxos.common import limits
from paxos.consensus.core import Node, Role
from paxos.consensus.membership import ConfigMember, Membership
from paxos.consensus.messages import Ballot, DurableState
from paxos.kv import configuration
from paxos.kv.configuration import LOG_CONFIGURATIONS, configuration_in
from tests.harness.corenet import FIXED as CORE_FIXED
from tests.harness.corenet import Net

# Membership changes are written in slots as the log writes them.
FIXED = replace(CORE_FIXED, configurations=LOG_CONFIGURATIONS)

FOUNDERS = Membership.of(ConfigMember(i, f"s{i}", f"host{i}:1") for i in range(3))
NEWCOMER = ConfigMember(3, "s3", "host3:1")


def cluster(size: int = 4) -> Net:
    net = Net(size)
    net.nodes = [Node(i, FOUNDERS, random.Random(i), FIXED) for i in range(size)]
    return net


def write(net: Net, leader: int, command: bytes = b"w") -> None:
    assert net.nodes[leader].propose(command)
    net.deliver()


def change(net: Net, leader: int, membership: Membership) -> None:
    assert net.nodes[leader].propose_change(membership) is None
    net.deliver()


def test_a_learner_is_added_through_the_log_and_copies_it() -> None:
    net = cluster()
    net.elect(0, [1, 2])
    write(net, 0)
    change(net, 0, FOUNDERS.adding_learner(NEWCOMER))
    for node in net.nodes:
        assert node.membership.learners == {3}
    # The change started a new ballot under the new configuration.
    net.step()
    leader = next(n for n in net.nodes if n.is_leader())
    write(net, leader.id, b"after")
    net.heartbeat(leader.id)
    assert net.nodes[3].commit_index == leader.commit_index
    assert net.nodes[3].role is Role.FOLLOWER
    assert any(configuration_in(v) for _, v in net.traces[3].committed)


def test_a_learner_acknowledgement_never_counts_towards_a_quorum() -> None:
    net = cluster()
    net.elect(0, [1, 2])
    change(net, 0, FOUNDERS.adding_learner(NEWCOMER))
    net.step()
    leader = next(n for n in net.nodes if n.is_leader())
    others = [i for i in range(3) if i != leader.id]
    net.partition([leader.id, 3], others)
    before = leader.commit_index
    assert leader.propose(b"x")
    net.deliver()
    assert leader.commit_index == before, "chosen by the leader and a learner alone"


def test_a_learner_never_campaigns() -> None:
    net = cluster()
    net.elect(0, [1, 2])
    change(net, 0, FOUNDERS.adding_learner(NEWCOMER))
    net.isolate(3)
    net.drop_queued()
    net.tick(3, 10 * FIXED.election_ticks_max)
    assert net.nodes[3].role is Role.FOLLOWER
    assert not net.queue


def test_one_change_at_a_time_and_each_one_step() -> None:
    net = cluster()
    net.elect(0, [1, 2])
    leader = net.nodes[0]
    assert net.nodes[1].propose_change(FOUNDERS.removing(2)) == "this server is not the leader"
    as_voter = Membership.of((*FOUNDERS.members, NEWCOMER))
    assert "must join as a learner" in (leader.propose_change(as_voter) or "")
    assert "exactly one member" in (leader.propose_change(FOUNDERS.removing(1).removing(2)) or "")
    with pytest.raises(ValueError, match="share a name"):
        FOUNDERS.adding_learner(ConfigMember(3, "s0", "host9:1"))
    write(net, 0)  # a value of the leader's own ballot is chosen: a change goes out at once
    assert leader.propose_change(FOUNDERS.removing(2)) is None
    busy = "another membership change is not finished yet"
    assert leader.propose_change(FOUNDERS.removing(1)) == busy, "refused while the first waits to be proposed"
    net.collect(0)
    # The first change is proposed and on its way, not chosen: still refused.
    [(slot, (_, value))] = [(s, entry) for s, entry in leader.accepted.items() if s > leader.commit_index]
    assert configuration_in(value) is not None and leader.change_in_progress
    assert leader.propose_change(FOUNDERS.removing(1)) == busy, "refused only while the first was queued"
    net.deliver()
    assert net.nodes[1].commit_index >= slot
    assert net.nodes[1].membership.voters == {0, 1}


def test_a_change_waits_for_a_value_of_the_leaders_own_ballot() -> None:
    net = cluster()
    net.elect(0, [1, 2])
    leader = net.nodes[0]
    assert leader.propose_change(FOUNDERS.removing(2)) is None
    ready = net.collect(0)
    proposed = [m.value for _, m in ready.early if hasattr(m, "value")]
    assert proposed and all(configuration_in(v) is None for v in proposed), "the change went out first"
    net.deliver()
    assert net.nodes[1].membership.voters == {0, 1}


def test_no_read_and_nothing_above_a_change_until_it_is_chosen() -> None:
    net = cluster()
    net.elect(0, [1, 2])
    write(net, 0)
    leader = net.nodes[0]
    net.isolate(0)
    assert leader.propose_change(FOUNDERS.removing(2)) is None
    net.deliver()  # the change goes out and nobody answers
    assert leader.is_leader() and leader.change_in_progress
    assert not leader.read(1)
    assert leader.lease_read_index() is None
    assert leader.propose(b"queued")
    net.deliver()
    slots = [m.slot for _, _, m in net.delivered if hasattr(m, "slot") and hasattr(m, "value")]
    top = max((r.slot for r in net.traces[0].records if hasattr(r, "slot")), default=0)
    assert all(s <= top for s in slots)
    assert configuration_in(leader.accepted[top][1]) is not None, "something was proposed above the change"


def test_a_removed_leader_steps_down_and_the_others_go_on() -> None:
    net = cluster(3)
    net.elect(0, [1, 2])
    write(net, 0)
    change(net, 0, FOUNDERS.removing(0))
    assert not net.nodes[0].is_leader()
    assert 0 not in net.nodes[1].membership.ids
    # The lowest remaining voter took over at once, without a timeout.
    assert net.nodes[1].is_leader()
    net.drop_queued()
    net.tick(0, 5 * FIXED.election_ticks_max)
    assert not net.queue, "a removed server still campaigns"
    write(net, 1, b"after removal")
    net.heartbeat(1)
    assert net.nodes[2].commit_index == net.nodes[1].commit_index


def test_a_removed_follower_is_told_it_was_removed() -> None:
    net = cluster(3)
    net.elect(0, [1, 2])
    write(net, 0)
    change(net, 0, FOUNDERS.removing(2))
    net.deliver()
    assert net.nodes[2].membership.ids == {0, 1}, "server 2 never learned it left"
    net.drop_queued()
    net.tick(2, 5 * FIXED.election_ticks_max)
    assert not net.queue, "a removed server still campaigns"


def test_a_candidate_learns_a_chosen_configuration_before_it_leads() -> None:
    net = cluster()
    net.elect(0, [1, 2])
    net.isolate(2)
    change(net, 0, FOUNDERS.adding_learner(NEWCOMER))
    assert 3 not in net.nodes[2].membership.ids
    # Server 0 goes away; server 2, which missed the change, campaigns and
    # wins server 1's promise, which reports the change's slot as chosen.
    net.heal()
    net.isolate(0)
    net.elect(2, [1])
    assert 3 in net.nodes[2].membership.ids
    write(net, 2, b"under the new configuration")
    net.heartbeat(2)
    assert net.nodes[3].commit_index == net.nodes[2].commit_index


def _learner_left_behind(writes: int) -> tuple[Net, Node]:
    """Server 3 added as a learner, then cut off while the leader commits ``writes`` slots."""
    net = cluster()
    net.elect(0, [1, 2])
    change(net, 0, FOUNDERS.adding_learner(NEWCOMER))
    net.step()
    leader = next(n for n in net.nodes if n.is_leader())
    net.isolate(3)
    for i in range(writes):
        write(net, leader.id, b"%d" % i)
    return net, leader


def test_a_learner_far_behind_is_not_promoted() -> None:
    net, leader = _learner_left_behind(limits.PROMOTION_LAG_SLOTS + 5)
    error = leader.propose_change(leader.membership.promoting(3))
    assert error is not None and "slots behind the leader" in error
    net.heal()
    net.heartbeat(leader.id)
    net.heartbeat(leader.id)
    assert leader.propose_change(leader.membership.promoting(3)) is None
    net.deliver()
    assert net.nodes[1].membership.voters == {0, 1, 2, 3}


def test_a_learner_that_needs_a_snapshot_is_not_promoted() -> None:
    # Within the lag allowed, but below the leader's compacted log: it can
    # only catch up by a snapshot, which may never arrive.
    net, leader = _learner_left_behind(5)
    net.heal()
    net.heartbeat(leader.id)
    learner_commit = leader.member_progress()[3]
    leader.compact(leader.commit_index)
    assert learner_commit < leader.compacted
    error = leader.propose_change(leader.membership.promoting(3))
    assert error is not None and "installed a snapshot" in error


@pytest.mark.parametrize("size", [1, 4])
def test_step_rules_of_the_membership_itself(size: int) -> None:
    base = Membership.of(ConfigMember(i + 1, f"s{i}", f"h{i}:1") for i in range(size))
    assert (
        base.step_error(base.removing(1)) is None
        if size > 1
        else "at least one voter" in (base.step_error(base.removing(1)) or "")
    )
    same_address = base.adding_learner(ConfigMember(99, "new", "h0:1"))
    assert "already a member's" in (base.step_error(same_address) or "")
    assert base.step_error(base) is not None


def test_the_only_voter_that_campaigns_learns_the_round_the_others_promised() -> None:
    # The leader, server 4, removed itself in slot 2 ({1, 5}) under ballot
    # 15.4 and only it learned that.  Server 1 missed ballot 15 (its promise
    # is 14.1) and knows slot 1 ({1, 4, 5}); server 5 promised 15.4 but
    # knows no slot, so it believes itself a learner and never campaigns.
    # Server 1 is left to campaign: the refusals of its pre-votes must tell
    # it the round to go above, or it asks with ballot 15.1 for ever.
    member = [ConfigMember(i, f"s{i}", f"host{i}:1") for i in range(6)]
    before = Membership.of([*member[:3], member[4], replace(member[5], voter=False)])
    removing_4 = Membership.of([member[1], member[4], member[5]])
    removed_4 = removing_4.removing(4)
    net = Net(6)
    net.nodes = [Node(i, before, random.Random(i), FIXED) for i in range(6)]
    for down in (0, 2, 3):
        net.isolate(down)
    chosen = {1: configuration.value(removing_4), 2: configuration.value(removed_4)}
    net.nodes[1] = Node(1, before, random.Random(1), FIXED, DurableState(Ballot(14, 1), {}, {1: chosen[1]}, 1))
    net.nodes[4] = Node(4, before, random.Random(4), FIXED, DurableState(Ballot(15, 4), {}, chosen, 2))
    net.nodes[5] = Node(5, before, random.Random(5), FIXED, DurableState(Ballot(15, 4)))
    assert net.nodes[1].membership == removing_4 and net.nodes[4].membership == removed_4
    assert net.nodes[5].membership.learners == {5}
    for _ in range(6 * FIXED.election_ticks_max):
        net.step([1, 4, 5])
        if net.leaders():
            break
    assert net.leaders() == [1], f"no leader; server 1 still asks with {net.nodes[1].promised}"
    assert net.nodes[1].membership == removed_4
    write(net, 1, b"after the hand-over")
    net.heartbeat(1)
    assert net.nodes[5].commit_index == net.nodes[1].commit_index == 3
    assert net.nodes[5].membership == removed_4
