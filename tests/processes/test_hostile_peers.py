"""Forged peer messages against five real servers on loopback.

An outside process that knows everything a member knows (the cluster id and
member ids from a data dir, the ballot from ``status``) opens each server's
peer stream and sends what once changed acknowledged data or wedged the
cluster.  Every such message must be refused and logged, the data must stay
as acknowledged, and the cluster must keep serving, through an election.
The tests that fail the leader over get a cluster each; the others share one,
each with keys of its own.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from functools import partial
from pathlib import Path

import grpc
import pytest

from client import KVClient
from paxos.common import limits
from paxos.consensus.messages import Accept, Ballot, CatchupReply, Heartbeat
from protos import peer_pb2
from tests.harness.forger import Forger, forged_command, leader_status, parse_ballot, refusals_logged
from tests.harness.polling import wait_until
from tests.harness.processes import rss_bytes
from tools.localcluster import LocalCluster


def _every_replica_holds(cluster: LocalCluster, expected: dict[str, str]) -> bool:
    for name in cluster.names:
        with KVClient([m for m in KVClient.from_hostfile(cluster.hostfile).servers if m.name == name]) as one:
            for key, value in expected.items():
                if one.get(key, consistency="local") != value:
                    return False
    return True


def _refused_by_followers(
    forger: Forger, leader: str, reason: str, make: Callable[[str], list[peer_pb2.PeerMessage]]
) -> None:
    """Send every follower what ``make`` builds for it, then wait until each logs the refusal."""
    cluster = forger.cluster
    followers = [name for name in cluster.names if name != leader]
    for name in followers:
        forger.send(name, *make(name))
    for name in followers:
        wait_until(partial(refusals_logged, cluster, name, reason), f"{name} to log {reason!r}")


def _fail_over(cluster: LocalCluster, kv: KVClient) -> None:
    """Kill the leader, wait for another, write through it, restart the old one."""
    old = str(leader_status(kv)["name"])
    cluster.kill(old, signal.SIGKILL)
    wait_until(lambda: leader_status(kv).get("name") not in (None, old), "a new leader", timeout=60)
    kv.set("after-failover", "yes")
    cluster.start_node(old)
    cluster.wait_for_nodes(timeout=60)
    cluster.check_alive()


def test_forged_catchup_reply_is_refused_and_data_stays(shared_cluster: LocalCluster) -> None:
    forger = Forger(shared_cluster)
    with shared_cluster.client() as kv:
        kv.set("account", "100")
        kv.set("owner", "alice")
        leader = str(leader_status(kv)["name"])
        leader_id = forger.ids[leader]
        forged = CatchupReply(
            leader_id, 1, ((forged_command("account", "0"),), (forged_command("owner", "mallory"),)), 2
        )
        _refused_by_followers(
            forger, leader, "unsolicited catch-up reply", lambda name: [forger.envelope(forged, name)]
        )
        assert kv.get("account") == "100" and kv.get("owner") == "alice"
        kv.set("next", "write")  # not UnknownOutcome: the leader's next slot is really free
        assert kv.get("next") == "write"
        wait_until(lambda: _every_replica_holds(shared_cluster, {"account": "100", "owner": "alice"}), "replicas agree")
        shared_cluster.check_alive()


def test_ballot_overflow_is_refused_and_elections_still_work(cluster: LocalCluster) -> None:
    forger = Forger(cluster)
    with cluster.client() as kv:
        kv.set("k", "v")
        leader = str(leader_status(kv)["name"])
        leader_id = forger.ids[leader]

        def overflowing(name: str) -> list[peer_pb2.PeerMessage]:
            overflow = forger.envelope(Heartbeat(leader_id, Ballot(1, leader_id), 0, 1), name)
            overflow.heartbeat.ballot.round = 2**64 - 1  # beyond what the codec lets through
            huge = forger.envelope(Heartbeat(leader_id, Ballot(limits.MAX_BALLOT_ROUND - 1, leader_id), 0, 1), name)
            return [overflow, huge]

        _refused_by_followers(forger, leader, "ballot round far above any seen", overflowing)
        assert all(refusals_logged(cluster, name, "out of range") for name in cluster.names if name != leader)
        _fail_over(cluster, kv)
        assert parse_ballot(leader_status(kv)["ballot"]).round < 1000
        assert kv.get("k") == "v"


def test_accept_for_a_far_slot_is_refused_and_a_new_leader_takes_over(cluster: LocalCluster) -> None:
    forger = Forger(cluster)
    with cluster.client() as kv:
        kv.set("k", "v")
        state = leader_status(kv)
        leader, ballot = str(state["name"]), parse_ballot(state["ballot"])
        far = int(str(state["commit_index"])) + 100_000
        forged = Accept(forger.ids[leader], ballot, far, (forged_command("k", "forged"),), 0)
        _refused_by_followers(
            forger, leader, "accept beyond the accept window", lambda name: [forger.envelope(forged, name)]
        )
        _fail_over(cluster, kv)
        assert kv.get("k") == "v"


def _wal_bytes(cluster: LocalCluster, name: str) -> int:
    return sum(p.stat().st_size for p in (cluster.data_dir(name) / "wal").iterdir())


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory use from /proc")
def test_huge_values_on_the_peer_path_are_refused(shared_cluster: LocalCluster) -> None:
    forger = Forger(shared_cluster)
    with shared_cluster.client() as kv:
        kv.set("huge", "v")
        state = leader_status(kv)
        leader, ballot = str(state["name"]), parse_ballot(state["ballot"])
        victim = next(n for n in shared_cluster.names if n != leader)
        wal_before = _wal_bytes(shared_cluster, victim)
        commit = int(str(state["commit_index"]))
        huge = b"x" * (50 * 1024 * 1024)
        for offset in range(8):
            slot = commit + 1 + offset
            forger.send(victim, forger.envelope(Accept(forger.ids[leader], ballot, slot, (huge,), commit), victim))
        wait_until(lambda: refusals_logged(shared_cluster, victim, "too large"), "log")
        assert _wal_bytes(shared_cluster, victim) - wal_before < 1024 * 1024, "nothing forged was written to the log"
        pid = shared_cluster.pid(victim)
        assert pid is not None
        assert rss_bytes(pid) < 400 * 1024 * 1024, "the forged values were not kept in memory"
        kv.set("huge", "still served")
        assert kv.get("huge") == "still served"
        shared_cluster.check_alive()


def test_unparsable_requests_and_messages_are_refused_without_tracebacks(shared_cluster: LocalCluster) -> None:
    garbage = b"\xff\xff\xff\xff\x0f"  # not a protobuf message of any type
    name = shared_cluster.names[0]
    start = shared_cluster.log_path(name).stat().st_size  # what earlier tests logged is not this test's to count

    def logged() -> str:
        return shared_cluster.log_path(name).read_bytes()[start:].decode(errors="replace")

    with grpc.insecure_channel(shared_cluster.address(name)) as channel:
        for method in ("Write", "Get", "ImageGet"):
            call = channel.unary_unary(f"/paxoskv.kv.KV/{method}", request_serializer=None, response_deserializer=None)
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as caught:
                    call(garbage, timeout=10)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stream = channel.stream_unary("/paxoskv.peer.Peer/Stream", request_serializer=None, response_deserializer=None)
        summary = peer_pb2.StreamSummary.FromString(stream(iter([garbage] * 20), timeout=10))
        assert summary.received == 0, "nothing unparsable reached the server's peer handling"
    wait_until(lambda: "refused" in logged() and "malformed message" in logged(), "the peer stream refusal in the log")
    log = logged()
    assert "malformed request" in log
    assert "Traceback" not in shared_cluster.log_path(name).read_text(errors="replace")  # nor from any earlier test
    # Once per sender, reason and interval: far fewer lines than the 80 refused.
    assert log.count("refused") <= 8
    with shared_cluster.client() as kv:
        kv.set("still", "serving")
        assert kv.get("still") == "serving"
    shared_cluster.check_alive()
