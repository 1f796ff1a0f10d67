"""With TLS on, forged peer messages from outside processes reach no server.

The forger of tests/harness/forger.py knows everything a member knows
but its key.  Against five real servers serving TLS it tries four ways in:
no certificate, the client certificate, another member's certificate (sending
as the leader), and a member certificate from another CA.  Not one message
may be accepted: every replica keeps its committed data, commit index and
ballot.  The plaintext control, tests/inprocess/test_hostile_peers_tls.py,
shows the same messages do change data when nobody checks who sent them.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import KVClient
from paxos.certs import ensure_certificates
from paxos.common import limits
from paxos.common.tlsfiles import CA_CERT_FILE, KeyPair, client_credentials
from paxos.consensus.messages import Accept, Ballot, CatchupReply, Heartbeat, Prepare
from protos import peer_pb2, peer_pb2_grpc
from tests.harness.forger import Forger, forged_command, leader_status, parse_ballot, refusals_logged
from tests.harness.polling import wait_until
from tools.localcluster import LocalCluster


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
    state = leader_status(kv)
    leader, ballot, commit = str(state["name"]), parse_ballot(state["ballot"]), int(str(state["commit_index"]))
    leader_id = forger.ids[leader]
    rival = next(n for n in forger.ids if n not in (leader, to))
    messages = [
        Accept(leader_id, ballot, commit + 1, (forged_command("account", "0"),), commit),
        Heartbeat(leader_id, ballot, commit + 1, 10**6),
        CatchupReply(leader_id, commit + 1, ((forged_command("owner", "mallory"),),), commit + 1),
        Prepare(forger.ids[rival], Ballot(ballot.round + 1, forger.ids[rival]), commit + 1),
    ]
    return [forger.envelope(m, to) for m in messages]


def _states(kv: KVClient) -> list[tuple[str, str, object]]:
    return [(str(n["name"]), str(n["ballot"]), n["commit_index"]) for n in kv.status()]


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"nodes": 5, "tls": True}


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
        leader = str(leader_status(kv)["name"])
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
                lambda name=name: refusals_logged(cluster, name, "sender is not the member named by the certificate"),
                f"{name} to log the impostor",
            )
            assert refusals_logged(cluster, name, "peer stream without a member certificate")
        assert _states(kv) == before, "no ballot or commit index moved"
        assert kv.get("account") == "100" and kv.get("owner") == "alice"
        assert _every_replica_holds_tls(cluster, {"account": "100", "owner": "alice"})
        kv.set("next", "write")
        assert kv.get("next") == "write"
        old = leader
        cluster.kill(old, signal.SIGKILL)  # and the cluster still elects a leader over TLS
        wait_until(lambda: leader_status(kv).get("name") not in (None, old), "a new leader", timeout=60)
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
