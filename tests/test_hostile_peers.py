"""Forged peer messages against five real servers on loopback.

An outside process that knows everything a member knows (the cluster id and
member ids from a data dir, the ballot from ``status``) opens each server's
peer stream and sends what once changed acknowledged data or wedged the
cluster.  Every such message must be refused and logged, the data must stay
as acknowledged, and the cluster must keep serving, through an election.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import grpc
import pytest

from client import KVClient
from paxos.common import limits
from paxos.common.identity import parse_id
from paxos.consensus.messages import Accept, Ballot, CatchupReply, Heartbeat, Message
from paxos.server.codec import PeerCodec
from paxos.server.service import META_FILE
from protos import log_pb2, peer_pb2, peer_pb2_grpc
from tests.polling import wait_until
from tools.localcluster import LocalCluster

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster", nodes=5) as c:
        # Every server, not just a quorum: the forger speaks to each of them.
        c.wait_for_nodes(timeout=60)
        c.wait_for_leader(timeout=60)
        yield c


class Forger:
    """Speaks the peer protocol to any server, claiming to be any member."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        meta = json.loads((cluster.data_dir(cluster.names[0]) / META_FILE).read_text())
        self.cluster_id = parse_id(meta["cluster_id"])
        self.ids = {name: parse_id(text) for name, text in meta["members"].items()}
        # Each member's data-dir incarnation, as its own messages carry it.
        self.incarnations = {
            parse_id(m["member_id"]): int(m["incarnation"], 16)
            for m in (json.loads((cluster.data_dir(n) / META_FILE).read_text()) for n in cluster.names)
        }

    def envelope(self, msg: Message, to: str) -> peer_pb2.PeerMessage:
        codec = PeerCodec(self.cluster_id, msg.sender, self.ids.values(), self.incarnations.get(msg.sender, 1))
        return codec.encode(msg, self.ids[to])

    def send(self, to: str, *raw: peer_pb2.PeerMessage) -> None:
        options = [("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES)]
        with grpc.insecure_channel(self.cluster.address(to), options=options) as channel:
            peer_pb2_grpc.PeerStub(channel).Stream(iter(raw), timeout=60)


def _leader(kv: KVClient) -> dict[str, object]:
    leaders = [n for n in kv.status() if n["role"] == "leader"]
    return leaders[0] if leaders else {}


def _ballot(text: object) -> Ballot:
    round_text, node_text = str(text).split(".")
    return Ballot(int(round_text), int(node_text, 16))


def _command(key: str, value: str) -> bytes:
    """A set as a log holds it, one that changes the state if it is ever applied: in the form of logs from
    before sessions were registered, it opens its own session."""
    write = log_pb2.ClientWrite(client_id="forger", seq=1, first_unacked=1, set=log_pb2.SetOp(key=key, value=value))
    return log_pb2.LogCommand(client_write=write).SerializeToString()


def _refusals_logged(cluster: LocalCluster, name: str, reason: str) -> bool:
    text = cluster.log_path(name).read_text(errors="replace")
    return "refused" in text and reason in text


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
        wait_until(partial(_refusals_logged, cluster, name, reason), f"{name} to log {reason!r}")


def _fail_over(cluster: LocalCluster, kv: KVClient) -> None:
    """Kill the leader, wait for another, write through it, restart the old one."""
    old = str(_leader(kv)["name"])
    cluster.kill(old, signal.SIGKILL)
    wait_until(lambda: _leader(kv).get("name") not in (None, old), "a new leader", timeout=60)
    kv.set("after-failover", "yes")
    cluster.start_node(old)
    cluster.wait_for_nodes(timeout=60)
    cluster.check_alive()


def test_forged_catchup_reply_is_refused_and_data_stays(cluster: LocalCluster) -> None:
    forger = Forger(cluster)
    with cluster.client() as kv:
        kv.set("account", "100")
        kv.set("owner", "alice")
        leader = str(_leader(kv)["name"])
        leader_id = forger.ids[leader]
        forged = CatchupReply(leader_id, 1, ((_command("account", "0"),), (_command("owner", "mallory"),)), 2)
        _refused_by_followers(
            forger, leader, "unsolicited catch-up reply", lambda name: [forger.envelope(forged, name)]
        )
        assert kv.get("account") == "100" and kv.get("owner") == "alice"
        kv.set("next", "write")  # not UnknownOutcome: the leader's next slot is really free
        assert kv.get("next") == "write"
        wait_until(lambda: _every_replica_holds(cluster, {"account": "100", "owner": "alice"}), "replicas agree")
        cluster.check_alive()


def test_ballot_overflow_is_refused_and_elections_still_work(cluster: LocalCluster) -> None:
    forger = Forger(cluster)
    with cluster.client() as kv:
        kv.set("k", "v")
        leader = str(_leader(kv)["name"])
        leader_id = forger.ids[leader]

        def overflowing(name: str) -> list[peer_pb2.PeerMessage]:
            overflow = forger.envelope(Heartbeat(leader_id, Ballot(1, leader_id), 0, 1), name)
            overflow.heartbeat.ballot.round = 2**64 - 1  # beyond what the codec lets through
            huge = forger.envelope(Heartbeat(leader_id, Ballot(limits.MAX_BALLOT_ROUND - 1, leader_id), 0, 1), name)
            return [overflow, huge]

        _refused_by_followers(forger, leader, "ballot round far above any seen", overflowing)
        assert all(_refusals_logged(cluster, name, "out of range") for name in cluster.names if name != leader)
        _fail_over(cluster, kv)
        assert _ballot(_leader(kv)["ballot"]).round < 1000
        assert kv.get("k") == "v"


def test_accept_for_a_far_slot_is_refused_and_a_new_leader_takes_over(cluster: LocalCluster) -> None:
    forger = Forger(cluster)
    with cluster.client() as kv:
        kv.set("k", "v")
        state = _leader(kv)
        leader, ballot = str(state["name"]), _ballot(state["ballot"])
        far = int(str(state["commit_index"])) + 100_000
        forged = Accept(forger.ids[leader], ballot, far, (_command("k", "forged"),), 0)
        _refused_by_followers(
            forger, leader, "accept beyond the accept window", lambda name: [forger.envelope(forged, name)]
        )
        _fail_over(cluster, kv)
        assert kv.get("k") == "v"


def _wal_bytes(cluster: LocalCluster, name: str) -> int:
    return sum(p.stat().st_size for p in (cluster.data_dir(name) / "wal").iterdir())


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory use from /proc")
def test_huge_values_on_the_peer_path_are_refused(cluster: LocalCluster) -> None:
    forger = Forger(cluster)
    with cluster.client() as kv:
        kv.set("k", "v")
        state = _leader(kv)
        leader, ballot = str(state["name"]), _ballot(state["ballot"])
        victim = next(n for n in cluster.names if n != leader)
        wal_before = _wal_bytes(cluster, victim)
        commit = int(str(state["commit_index"]))
        huge = b"x" * (50 * 1024 * 1024)
        for offset in range(8):
            slot = commit + 1 + offset
            forger.send(victim, forger.envelope(Accept(forger.ids[leader], ballot, slot, (huge,), commit), victim))
        wait_until(lambda: _refusals_logged(cluster, victim, "too large"), "log")
        assert _wal_bytes(cluster, victim) - wal_before < 1024 * 1024, "nothing forged was written to the log"
        pid = cluster.pid(victim)
        assert pid is not None
        assert _rss_bytes(pid) < 400 * 1024 * 1024, "the forged values were not kept in memory"
        kv.set("k", "still served")
        assert kv.get("k") == "still served"
        cluster.check_alive()


def test_unparsable_requests_and_messages_are_refused_without_tracebacks(cluster: LocalCluster) -> None:
    garbage = b"\xff\xff\xff\xff\x0f"  # not a protobuf message of any type
    name = cluster.names[0]
    with grpc.insecure_channel(cluster.address(name)) as channel:
        for method in ("Write", "Get", "ImageGet"):
            call = channel.unary_unary(f"/paxoskv.kv.KV/{method}", request_serializer=None, response_deserializer=None)
            for _ in range(20):
                with pytest.raises(grpc.RpcError) as caught:
                    call(garbage, timeout=10)
                assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stream = channel.stream_unary("/paxoskv.peer.Peer/Stream", request_serializer=None, response_deserializer=None)
        summary = peer_pb2.StreamSummary.FromString(stream(iter([garbage] * 20), timeout=10))
        assert summary.received == 0, "nothing unparsable reached the server's peer handling"
    wait_until(lambda: _refusals_logged(cluster, name, "malformed message"), "the peer stream refusal in the log")
    log = cluster.log_path(name).read_text(errors="replace")
    assert "malformed request" in log
    assert "Traceback" not in log
    # Once per sender, reason and interval: far fewer lines than the 80 refused.
    assert log.count("refused") <= 8
    with cluster.client() as kv:
        kv.set("still", "serving")
        assert kv.get("still") == "serving"
    cluster.check_alive()
