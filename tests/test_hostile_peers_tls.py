"""With TLS on, forged peer messages from outside processes reach no server.

The forger of tests/test_hostile_peers.py knows everything a member knows
but its key.  Against five real servers serving TLS it tries four ways in:
no certificate, the client certificate, another member's certificate (sending
as the leader), and a member certificate from another CA.  Not one message
may be accepted: every replica keeps its committed data, commit index and
ballot.  The plaintext control shows the same messages do change data when
nobody checks who sent them.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client import KVClient
from paxos.certs import ensure_certificates
from paxos.common import limits
from paxos.common.tlsfiles import CA_CERT_FILE, KeyPair, client_credentials
from paxos.consensus.messages import Accept, Ballot, CatchupReply, Heartbeat, Prepare
from protos import log_pb2, peer_pb2, peer_pb2_grpc
from tests.inprocess import in_process_cluster
from tests.polling import wait_until
from tests.test_hostile_peers import Forger, _ballot, _leader, _refusals_logged
from tools.localcluster import LocalCluster

pytestmark = pytest.mark.slow


def _command(key: str, value: str) -> bytes:
    """A set as a log holds it, one that changes the state if it is ever applied: in the form of logs from
    before sessions were registered, it opens its own session."""
    write = log_pb2.ClientWrite(client_id="forger", seq=1, first_unacked=1, set=log_pb2.SetOp(key=key, value=value))
    return log_pb2.LogCommand(client_write=write).SerializeToString()


class TlsForger(Forger):
    """The forger, speaking TLS with whatever credentials it was given."""

    def send_with(self, credentials: grpc.ChannelCredentials | None, to: str, *raw: peer_pb2.PeerMessage) -> str:
        """Send on one peer stream; the status it ended with ("OK" when the stream was taken)."""
        options = [("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES)]
        address = self.cluster.address(to)
        channel = (
            grpc.insecure_channel(address, options=options)
            if credentials is None
            else grpc.secure_channel(address, credentials, options=options)
        )
        with channel:
            try:
                peer_pb2_grpc.PeerStub(channel).Stream(iter(raw), timeout=10)
            except grpc.RpcError as err:
                return err.code().name  # type: ignore[attr-defined, no-any-return]
        return "OK"


def _forgeries(forger: Forger, kv: KVClient, to: str) -> list[peer_pb2.PeerMessage]:
    """What once changed data or took over the cluster, claiming to come from the leader or a rival."""
    state = _leader(kv)
    leader, ballot, commit = str(state["name"]), _ballot(state["ballot"]), int(str(state["commit_index"]))
    leader_id = forger.ids[leader]
    rival = next(n for n in forger.ids if n not in (leader, to))
    messages = [
        Accept(leader_id, ballot, commit + 1, (_command("account", "0"),), commit),
        Heartbeat(leader_id, ballot, commit + 1, 10**6),
        CatchupReply(leader_id, commit + 1, ((_command("owner", "mallory"),),), commit + 1),
        Prepare(forger.ids[rival], Ballot(ballot.round + 1, forger.ids[rival]), commit + 1),
    ]
    return [forger.envelope(m, to) for m in messages]


def _states(kv: KVClient) -> list[tuple[str, str, object]]:
    return [(str(n["name"]), str(n["ballot"]), n["commit_index"]) for n in kv.status()]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    with LocalCluster(tmp_path / "cluster", nodes=5, tls=True) as c:
        c.wait_for_leader(timeout=60)
        yield c


def test_no_outsider_gets_a_peer_message_accepted(cluster: LocalCluster, tmp_path: Path) -> None:
    assert cluster.tls_dir is not None
    forger = TlsForger(cluster)
    other_ca = tmp_path / "other-ca"
    ensure_certificates(cluster.hostfile, other_ca)
    ca = (cluster.tls_dir / CA_CERT_FILE).read_bytes()
    with cluster.client() as kv:
        kv.set("account", "100")
        kv.set("owner", "alice")
        wait_until(lambda: _every_replica_holds_tls(cluster, {"account": "100", "owner": "alice"}), "replicas")
        before = _states(kv)
        leader = str(_leader(kv)["name"])
        followers = [n for n in cluster.names if n != leader]
        impostor = followers[0]  # its own certificate, used to speak as the leader
        attempts = {
            "plaintext": None,
            "TLS without a certificate": grpc.ssl_channel_credentials(ca),
            "the client certificate": client_credentials(cluster.tls_dir),
            "another CA's member certificate": KeyPair.load(other_ca, leader).channel_credentials(),
            f"{impostor}'s certificate": KeyPair.load(cluster.tls_dir, impostor).channel_credentials(),
        }
        outcomes: dict[tuple[str, str], str] = {}
        for name in followers[1:]:
            forged = _forgeries(forger, kv, name)
            for attempt, credentials in attempts.items():
                outcomes[attempt, name] = forger.send_with(credentials, name, *forged)
        for (attempt, name), status in outcomes.items():
            if attempt == f"{impostor}'s certificate":
                assert status == "OK", "a member's stream is taken; its messages are checked one by one"
            else:
                assert status in ("UNAVAILABLE", "PERMISSION_DENIED"), (attempt, name, status)
        for name in followers[1:]:
            wait_until(
                lambda name=name: _refusals_logged(cluster, name, "sender is not the member named by the certificate"),
                f"{name} to log the impostor",
            )
            assert _refusals_logged(cluster, name, "peer stream without a member certificate")
        assert _states(kv) == before, "no ballot or commit index moved"
        assert kv.get("account") == "100" and kv.get("owner") == "alice"
        assert _every_replica_holds_tls(cluster, {"account": "100", "owner": "alice"})
        kv.set("next", "write")
        assert kv.get("next") == "write"
        old = leader
        cluster.kill(old, signal.SIGKILL)  # and the cluster still elects a leader over TLS
        wait_until(lambda: _leader(kv).get("name") not in (None, old), "a new leader", timeout=60)
        kv.set("after-failover", "yes")
        cluster.start_node(old)
        cluster.wait_for_nodes(timeout=60)
        assert kv.get("account") == "100"
    for name in cluster.names:
        assert "Traceback" not in cluster.log_path(name).read_text(errors="replace")
    cluster.check_alive()


def _every_replica_holds_tls(cluster: LocalCluster, expected: dict[str, str]) -> bool:
    with cluster.client() as all_servers:
        members = all_servers.servers
    for member in members:
        with KVClient([member], timeout=5, tls_dir=cluster.tls_dir) as one:
            if any(one.get(key, consistency="local") != value for key, value in expected.items()):
                return False
    return True


def test_without_tls_the_same_forgery_changes_a_replica(tmp_path: Path) -> None:
    """The control: without TLS nothing tells a forged leader from the real one."""
    with in_process_cluster(tmp_path, 3) as inproc:
        leader = wait_until(inproc.leader, "a leader")
        victim = next(n for n in inproc.servers if n != leader)
        server = inproc.servers[victim]
        members = {m.name: m for m in inproc.members}
        leader_id = inproc.servers[leader].node_id
        with KVClient(inproc.members, timeout=10) as kv:
            kv.set("account", "100")
            wait_until(lambda: inproc.call(server.store.get, "account") == "100", "the write on the victim")
        ballot = inproc.call(lambda: inproc.servers[leader].core.ballot)
        commit = inproc.call(lambda: inproc.servers[leader].core.commit_index)
        forged = [
            Accept(leader_id, ballot, commit + 1, (_command("account", "0"),), commit),
            Heartbeat(leader_id, ballot, commit + 1, 10**6),
        ]
        codec = inproc.servers[leader].codec  # exactly what the leader would send
        with grpc.insecure_channel(members[victim].address) as channel:
            wires = [codec.addressed(codec.encode(m), server.node_id) for m in forged]
            peer_pb2_grpc.PeerStub(channel).Stream(iter(wires), timeout=10)
        wait_until(lambda: inproc.call(server.store.get, "account") == "0", "the forged value applied on the victim")
