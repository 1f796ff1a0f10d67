"""The core refuses peer messages no honest member could have sent.

Each forged message below once changed acknowledged data or wedged a
cluster of real servers; here it is refused, counted, and changes nothing.
The codec's bounds (sizes, numbers out of range) are in tests/unit/test_codec.py.
"""

from __future__ import annotations

import pytest

from paxos.common import limits
from paxos.consensus.messages import (
    Accept,
    AcceptedEntry,
    Ballot,
    CatchupReply,
    CatchupRequest,
    Heartbeat,
    Message,
    Prepare,
    PreVote,
    Promise,
)
from tests.harness.corenet import FIXED, STICKY, Net


def _committed_cluster() -> Net:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a", b"b")
    assert [n.commit_index for n in net.nodes] == [2, 2, 2]
    return net


def test_unsolicited_catchup_reply_is_refused_and_changes_nothing() -> None:
    net = _committed_cluster()
    for node in (1, 2):
        before = dict(net.nodes[node].chosen)
        forged = CatchupReply(0, 1, ((b"forged",), (b"x",), (b"y",)), 3)
        assert net.nodes[node].receive(forged) == "unsolicited catch-up reply"
        assert net.nodes[node].refused["unsolicited catch-up reply"] == 1
        assert net.nodes[node].chosen == before
        assert net.nodes[node].commit_index == 2
        assert net.collect(node).persist == []
    # The leader still proposes into the next free slot and gets it chosen.
    net.commit(0, b"c")
    assert [n.chosen.get(3) for n in net.nodes] == [(b"c",)] * 3


def test_catchup_reply_is_accepted_only_from_the_peer_asked_for_the_range_asked() -> None:
    net = Net(3)
    net.elect(0)
    net.isolate(2)
    net.commit(0, b"a", b"b", b"c")
    net.heal()
    net.heartbeat(0)  # tells 2 the commit index; it asks 0 for slots 1..
    asked = [msg for src, dst, msg in net.delivered if src == 2 and isinstance(msg, CatchupRequest)]
    assert asked == [CatchupRequest(2, 1)]
    lagging = net.nodes[2]
    assert lagging.commit_index == 3, "the true answer was taken"
    net.isolate(2)
    net.commit(0, b"d")
    # A new request is outstanding once 2 hears of the commit: forge answers around it.
    net.heal()
    net.heartbeat(0)
    net.isolate(2)
    assert lagging.commit_index == 4
    lagging._catchup_asked = (0, 5)  # an outstanding request to 0 from slot 5
    for forged in (
        CatchupReply(1, 5, ((b"x",),), 5),  # from a peer not asked
        CatchupReply(0, 2, ((b"x",), (b"y",)), 5),  # for another range
    ):
        assert lagging.receive(forged) == "unsolicited catch-up reply"
    assert lagging.receive(CatchupReply(0, 5, tuple((b"z",) for _ in range(1025)), 1029)) is not None
    assert lagging.commit_index == 4 and 5 not in lagging.chosen
    assert lagging.receive(CatchupReply(0, 5, ((b"e",),), 5)) is None
    assert lagging.chosen[5] == (b"e",)


def test_late_duplicate_catchup_reply_is_ignored_without_being_refused() -> None:
    net = Net(3)
    net.elect(0)
    net.isolate(2)
    net.commit(0, b"a")
    net.heal()
    net.heartbeat(0)
    replies = [msg for src, dst, msg in net.delivered if dst == 2 and isinstance(msg, CatchupReply)]
    assert len(replies) == 1 and net.nodes[2].commit_index == 1
    assert net.nodes[2].receive(replies[0]) is None
    assert not net.nodes[2].refused


@pytest.mark.parametrize(
    "ballot_round",
    [limits.MAX_BALLOT_ROUND, limits.MAX_BALLOT_ROUND - 1, 1 + limits.MAX_ROUND_STEP + 1],
)
def test_ballot_far_above_any_seen_is_refused(ballot_round: int) -> None:
    net = _committed_cluster()
    follower = net.nodes[1]
    promised = follower.promised
    for forged in (
        Heartbeat(0, Ballot(ballot_round, 0), 2, 1),
        Prepare(2, Ballot(ballot_round, 2), 1),
        PreVote(2, Ballot(ballot_round, 2)),
        Accept(0, Ballot(ballot_round, 0), 3, (b"x",), 2),
    ):
        assert follower.receive(forged) == "ballot round far above any seen"
    assert follower.promised == promised
    assert net.collect(1).persist == []
    # Nothing stops the next honest election, with a small round.
    net.isolate(0)
    net.elect(2, voters=[1])
    assert net.nodes[2].ballot.round < 10
    net.commit(2, b"c")
    assert net.nodes[1].chosen[3] == (b"c",)


def test_ballot_a_step_above_the_highest_seen_is_taken() -> None:
    net = _committed_cluster()
    follower = net.nodes[1]
    net.tick(1, STICKY)  # no longer bound to its leader
    ballot = Ballot(follower.promised.round + limits.MAX_ROUND_STEP, 2)
    assert follower.receive(Prepare(2, ballot, 3)) is None
    assert follower.promised == ballot


def test_accept_beyond_the_window_is_refused() -> None:
    net = _committed_cluster()
    follower = net.nodes[1]
    ballot = net.nodes[0].ballot
    far = follower.commit_index + 100_000
    assert follower.receive(Accept(0, ballot, far, (b"x",), 2)) == "accept beyond the accept window"
    edge = follower.commit_index + limits.MAX_ACCEPT_WINDOW
    assert follower.receive(Accept(0, ballot, edge + 1, (b"x",), 2)) == "accept beyond the accept window"
    assert far not in follower.accepted and edge + 1 not in follower.accepted
    assert follower.receive(Accept(0, ballot, edge, (b"x",), 2)) is None
    assert follower.accepted[edge] == (ballot, (b"x",))


def test_new_leader_reproposes_at_most_the_window() -> None:
    net = _committed_cluster()
    ballot = net.nodes[0].ballot
    # The farthest accept a forger can still place, on every follower.
    edge = 2 + limits.MAX_ACCEPT_WINDOW
    for node in (1, 2):
        net.nodes[node].receive(Accept(0, ballot, edge, (b"x",), 2))
    net.drop_queued()
    net.isolate(0)
    net.elect(1, voters=[2])
    assert net.nodes[1].is_leader()
    net.deliver()
    assert net.nodes[1].commit_index == edge, "the gap was filled and the cluster moved on"


def test_inconsistent_fields_are_refused() -> None:
    net = _committed_cluster()
    follower = net.nodes[1]
    ballot = net.nodes[0].ballot
    cases: dict[str, Message] = {
        "claims to come from this server": Heartbeat(1, Ballot(ballot.round, 1), 2, 9),
        "sender is not in this server's configuration": Accept(7, Ballot(ballot.round, 7), 3, (b"x",), 2),
        "ballot of another member": Heartbeat(2, ballot, 2, 9),
        "accept for a slot its own commit index covers": Accept(0, ballot, 3, (b"x",), 3),
    }
    for reason, forged in cases.items():
        assert follower.receive(forged) == reason
        assert follower.refused[reason] == 1
    assert net.collect(1).persist == []


def test_promise_contradicting_itself_is_refused() -> None:
    net = Net(3)
    candidate = net.nodes[0]
    candidate._start_phase1()  # a candidate waiting for promises
    ballot = Ballot(1, 0)
    assert candidate._candidate_ballot == ballot
    above = Promise(1, ballot, 0, (AcceptedEntry(1, Ballot(2, 1), (b"x",)),))
    assert candidate.receive(above) == "promise reports a value accepted above the promised ballot"
    far = Promise(1, ballot, 0, (AcceptedEntry(limits.MAX_ACCEPT_WINDOW + 1, Ballot(1, 0), (b"x",)),))
    assert candidate.receive(far) == "promise reports a slot beyond the accept window"
    assert not candidate.is_leader()


def test_promise_window_runs_from_the_higher_commit_index() -> None:
    """A member far behind the candidate (its slots in the others' snapshots) may hold accepted
    values far above its own commit index: it led for a moment and proposed at the top."""
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a", b"b", b"c")
    candidate = net.nodes[2]
    assert candidate.commit_index == 3
    ballot = Ballot(5, 2)
    # A candidate of that ballot, as phase 1 leaves it, with no promise counted yet.
    candidate._candidate_ballot = candidate.promised = ballot
    candidate._max_round_seen = ballot.round
    candidate.role = candidate.role.CANDIDATE
    top = 3 + limits.MAX_ACCEPT_WINDOW
    behind = Promise(1, ballot, 0, (AcceptedEntry(top, Ballot(4, 1), (b"x",)),))
    assert candidate.receive(behind) is None
    beyond = Promise(1, ballot, 0, (AcceptedEntry(top + 1, Ballot(4, 1), (b"x",)),))
    assert candidate.receive(beyond) == "promise reports a slot beyond the accept window"


def test_leader_stops_asking_for_a_slot_it_learned_was_chosen_elsewhere() -> None:
    # Found by the simulation (seed 992): a new leader re-proposed a slot,
    # then learned by catch-up that it was chosen, and kept retransmitting
    # it with a commit index above the slot, which followers now refuse.
    net = Net(3)
    net.elect(0)
    leader = net.nodes[0]
    assert leader.propose(b"x")
    net.collect(0)
    net.drop_queued()  # the accepts are lost
    leader._catchup_asked = (1, 1)  # as if it had asked node 1 from slot 1
    assert leader.receive(CatchupReply(1, 1, ((b"x",),), 1)) is None
    assert leader.commit_index == 1
    net.tick(0, FIXED.retransmit_ticks + 1)
    resent = [m for src, _, m in net.queue if src == 0 and isinstance(m, Accept)]
    assert resent == [], "a chosen slot is not asked for again"
    net.deliver()
    assert not any(n.refused for n in net.nodes)
    net.commit(0, b"y")
    assert [n.chosen.get(2) for n in net.nodes] == [(b"y",)] * 3
