"""The control for tests/processes/test_hostile_peers_tls.py: without TLS a forged peer message changes a replica.

Three servers in this process; the forgery is exactly what the leader would
send, and nothing tells it from the real leader's.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from client import KVClient
from paxos.consensus.messages import Accept, Heartbeat
from protos import peer_pb2_grpc
from tests.harness.forger import forged_command
from tests.harness.inprocess import in_process_cluster
from tests.harness.polling import wait_until


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
            Accept(leader_id, ballot, commit + 1, (forged_command("account", "0"),), commit),
            Heartbeat(leader_id, ballot, commit + 1, 10**6),
        ]
        codec = inproc.servers[leader].codec  # exactly what the leader would send
        with grpc.insecure_channel(members[victim].address) as channel:
            wires = [codec.addressed(codec.encode(m), server.node_id) for m in forged]
            peer_pb2_grpc.PeerStub(channel).Stream(iter(wires), timeout=10)
        wait_until(lambda: inproc.call(server.store.get, "account") == "0", "the forged value applied on the victim")
