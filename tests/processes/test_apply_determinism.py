"""Applying the log depends on the log alone, and every write gets an answer.

Real servers on loopback, started with different --max-value-bytes: the
flag is each server's check before it proposes, and replicas never disagree
about what was chosen.  Also: a write skipped at apply is answered at once,
and a data dir from before the log had its own command type is refused.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import InvalidRequest, KVClient
from paxos.common.hostfile import Member, parse_hostfile
from paxos.server.service import META_FILE
from protos import kv_pb2, kv_pb2_grpc
from tests.harness.cli import run_server
from tests.harness.polling import wait_until
from tests.harness.processes import applied_everywhere, running_cluster
from tools.localcluster import LocalCluster

MIB = 1024 * 1024
# Each server's --max-value-bytes; the largest is the one that must lead once.
LIMITS = {"node1": 1 * MIB, "node2": 2 * MIB, "node3": 4 * MIB}
WIDEST = max(LIMITS, key=LIMITS.__getitem__)
SIZES = (3 * MIB // 2, 3 * MIB)
CLIENT_TIMEOUT = 20.0
# Restarting a leader hands leadership to another server at random; this
# many tries (each about even odds for the wanted one) within LEAD_SECONDS.
LEAD_ATTEMPTS = 15
LEAD_SECONDS = 120.0


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"nodes": 3}


@pytest.fixture
def mixed_limits(tmp_path: Path) -> Iterator[LocalCluster]:
    node_args = {name: ["--max-value-bytes", str(limit)] for name, limit in LIMITS.items()}
    with running_cluster(tmp_path / "cluster", nodes=3, node_args=node_args) as cluster:
        yield cluster


def client(cluster: LocalCluster, members: list[Member] | None = None) -> KVClient:
    """A library client that leaves the value size to the servers."""
    members = members or parse_hostfile(cluster.hostfile)
    return KVClient(members, timeout=CLIENT_TIMEOUT, max_value_bytes=8 * MIB)


def value_for(key: str, size: int) -> str:
    return f"{key}:".ljust(size, "x")


def write_both_sizes(kv: KVClient, tag: str, acknowledged: dict[str, str]) -> list[str]:
    """Set one value of each size; keys tried.  A leader whose limit is
    smaller refuses a value as invalid before proposing: that is fine."""
    keys = []
    for size in SIZES:
        key = f"{tag}-{size}"
        keys.append(key)
        try:
            kv.set(key, value_for(key, size))
        except InvalidRequest:
            continue
        acknowledged[key] = value_for(key, size)
    return keys


def make_lead(cluster: LocalCluster, wanted: str) -> None:
    """Restart leaders until ``wanted`` leads; bounded in tries and time."""
    deadline = time.monotonic() + LEAD_SECONDS
    for _ in range(LEAD_ATTEMPTS):
        leader = cluster.wait_for_leader(timeout=60)
        if leader == wanted:
            return
        if time.monotonic() > deadline:
            break
        cluster.kill(leader, signal.SIGTERM)
        # The two left elect one of themselves; then the old leader rejoins.
        cluster.wait_for_leader(timeout=60)
        cluster.start_node(leader)
        cluster.wait_for_nodes(timeout=60)
    pytest.fail(f"{wanted} did not become leader in {LEAD_ATTEMPTS} leader restarts")


def local_reads(cluster: LocalCluster, names: list[str], keys: list[str]) -> dict[str, dict[str, str | None]]:
    """Each named replica's own value for each key (consistency="local", the CLI's --stale)."""
    members = {m.name: m for m in parse_hostfile(cluster.hostfile)}
    views = {}
    for name in names:
        with client(cluster, [members[name]]) as one:
            views[name] = {key: one.get(key, consistency="local") for key in keys}
    return views


def _size(value: str | None) -> str:
    return "nothing" if value is None else f"{len(value)} bytes"


def test_replicas_with_different_value_limits_hold_the_same_values(mixed_limits: LocalCluster) -> None:
    cluster = mixed_limits
    names = cluster.names
    acknowledged: dict[str, str] = {}
    keys = []
    with client(cluster) as kv:
        first = cluster.wait_for_leader()
        keys += write_both_sizes(kv, f"under-{first}", acknowledged)
        # The case that diverged: a leader admits values that the other
        # servers' own limits would refuse.
        # Leadership may move between the two steps on a loaded machine.
        for _ in range(3):
            make_lead(cluster, WIDEST)
            keys += write_both_sizes(kv, f"under-{WIDEST}", acknowledged)
            if all(f"under-{WIDEST}-{size}" in acknowledged for size in SIZES):
                break
        else:
            pytest.fail(f"{WIDEST}, leading, did not acknowledge values of {SIZES} bytes")
        wait_until(lambda: applied_everywhere(kv, names), what="every replica to apply the commit index", timeout=60)
    views = local_reads(cluster, names, keys)
    for key in keys:
        held = [views[name][key] for name in names]
        shown = ", ".join(f"{name} {_size(views[name][key])}" for name in names)
        agree = all(v == held[0] for v in held)
        assert agree, f"replicas disagree on {key}: {shown}"
        if key in acknowledged:
            intact = held[0] == acknowledged[key]
            assert intact, f"acknowledged write of {key} is missing: {shown}"
    # And the symptom as a user saw it: the wide leader stops, and a
    # linearizable read through a server with a small limit finds the value.
    cluster.kill(WIDEST, signal.SIGTERM)
    assert cluster.wait_for_leader(timeout=60) != WIDEST
    big = f"under-{WIDEST}-{SIZES[-1]}"
    with client(cluster) as kv:
        assert kv.get(big) == acknowledged[big]


def test_write_skipped_at_apply_is_answered_at_once(shared_cluster: LocalCluster) -> None:
    leader = shared_cluster.wait_for_leader()
    with grpc.insecure_channel(shared_cluster.address(leader)) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        registered = stub.Register(kv_pb2.RegisterRequest(), timeout=10)
        assert registered.status == kv_pb2.OK and registered.session_id > 0
        session = registered.session_id
        ten = kv_pb2.Command(session_id=session, seq=10, first_unacked=10, set=kv_pb2.SetOp(key="k", value="ten"))
        assert stub.Write(kv_pb2.WriteRequest(command=ten), timeout=10).status == kv_pb2.OK
        # Valid, not cached, so proposed; but the session is past seq 5, so
        # apply skips it.  Without an answer from apply the leader would
        # hold the call until its deadline (DEADLINE_EXCEEDED, or UNKNOWN
        # with no error).
        five = kv_pb2.Command(session_id=session, seq=5, first_unacked=5, set=kv_pb2.SetOp(key="k", value="five"))
        reply = stub.Write(kv_pb2.WriteRequest(command=five), timeout=10)
        assert reply.status == kv_pb2.UNKNOWN, kv_pb2.Status.Name(reply.status)
        assert "moved on to 10" in reply.error
        # The cached result of seq 10 is still what a retry of it gets.
        assert stub.Write(kv_pb2.WriteRequest(command=ten), timeout=10).status == kv_pb2.OK
    with client(shared_cluster) as kv:
        assert kv.get("k") == "ten"


# ----------------------------------------------------- data directory format


def test_data_dir_of_an_older_paxoskv_is_refused_with_exit_4(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text("a 127.0.0.1:1\n")
    data_dir = tmp_path / "a"
    data_dir.mkdir()
    (data_dir / META_FILE).write_text(json.dumps({"name": "a", "cluster": ["a"]}) + "\n")
    result = run_server(hostfile, "a", data_dir)
    assert result.returncode == 4
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "written by an older paxoskv" in result.stderr and "fresh --data-dir" in result.stderr
