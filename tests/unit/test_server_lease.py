"""The server judges read leases by the real clock, not by its ticker.

After a stall (SIGSTOP, a long pause) the event loop may serve waiting reads
and peer messages before the ticker has run, with the core's clock still at
the time the stall began.  The server must bring that clock up to date
first, on both sides of a lease: the leader answering a read, and the
follower noting when it last heard from its leader.  Driven in-process with
a clock the test moves; nothing listens on the members' addresses.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from paxos.common.hostfile import Member
from paxos.consensus.messages import (
    Ballot,
    Heartbeat,
    HeartbeatAck,
    Message,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    Ready,
)
from paxos.server.codec import PeerCodec
from paxos.server.service import PaxosServer
from protos import kv_pb2

MEMBERS = [Member(f"s{i}", "127.0.0.1", 1 + i) for i in range(3)]


def _from_peer(server: PaxosServer, msg: Message) -> None:
    """Deliver ``msg`` to ``server`` as its sender's stream would."""
    codec = PeerCodec(server.identity.cluster_id, msg.sender, server.members, incarnation=7)
    server.receive_peer(codec.encode(msg, server.node_id))


def _close(server: PaxosServer) -> None:
    server.storage.close()


def _bundle(server: PaxosServer) -> Ready:
    """Take the core's next bundle as the replica would (the server is not running)."""
    ready = server.core.ready()
    server.core.advance(ready)
    return ready


def _leader_with_a_lease(tmp_path: Path, clock: list[float]) -> PaxosServer:
    server = PaxosServer(MEMBERS, "s0", tmp_path, clock=lambda: clock[0])
    core = server.core
    peer = server.identity.ids["s1"]
    clock[0] += 1.0  # past any election timeout: node 0 asks for pre-votes
    server.replica.advance_clock()
    prevote = [m for _, m in _bundle(server).messages if isinstance(m, PreVote)][-1]
    core.receive(PreVoteReply(peer, prevote.ballot, True))
    prepare = next(m for _, m in _bundle(server).messages if isinstance(m, Prepare))
    core.receive(Promise(peer, prepare.ballot, 0, ()))
    beat = next(m for _, m in _bundle(server).messages if isinstance(m, Heartbeat))
    core.receive(HeartbeatAck(peer, beat.ballot, beat.seq, 0))
    _bundle(server)
    assert core.is_leader() and core.lease_read_index() == 0
    return server


def test_read_after_a_stall_is_not_served_on_an_expired_lease(tmp_path: Path) -> None:
    clock = [1000.0]
    server = _leader_with_a_lease(tmp_path, clock)
    try:

        async def read() -> int:
            return await server.linearizable_read(time.monotonic() + 0.3)

        assert asyncio.run(read()) == kv_pb2.OK  # served under the lease
        clock[0] += 2.0  # the process stalled; its ticker has not run since
        assert asyncio.run(read()) != kv_pb2.OK
    finally:
        _close(server)


def test_follower_that_acked_after_a_stall_refuses_a_rival(tmp_path: Path) -> None:
    clock = [1000.0]
    follower = PaxosServer(MEMBERS, "s1", tmp_path, clock=lambda: clock[0])
    leader, rival = follower.identity.ids["s0"], follower.identity.ids["s2"]
    try:
        clock[0] += 1.0
        follower.replica.advance_clock()
        _bundle(follower)
        leader_ballot = Ballot(5, leader)
        _from_peer(follower, Heartbeat(leader, leader_ballot, 0, 1))
        assert follower.core.leader == leader
        _bundle(follower)
        # It stalls; a heartbeat that waited in its socket is handled first,
        # and it acknowledges it: the leader's lease now counts on it.
        clock[0] += 2.0
        _from_peer(follower, Heartbeat(leader, leader_ballot, 0, 2))
        assert any(isinstance(m, HeartbeatAck) for _, m in _bundle(follower).messages)
        follower.replica.advance_clock()  # then its ticker runs
        _from_peer(follower, Prepare(rival, Ballot(6, rival), 1))
        out = _bundle(follower)
        assert not any(isinstance(m, Promise) for _, m in out.messages)
        assert follower.core.promised == leader_ballot
    finally:
        _close(follower)
