"""The cluster version of real servers: a new cluster raises it to this release's, and one member can hold it back.

The leader raises the cluster version once every member reported that it
runs it (paxos/clusterversion.py); ``status --json`` and the metrics show
what each server applied and what it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import cli
from paxos.common import limits
from paxos.common.versions import BASE_CLUSTER_VERSION, MAX_CLUSTER_VERSION
from paxos.kv import logcommand
from paxos.storage.meta import DATA_FORMAT
from protos import kv_pb2, kv_pb2_grpc
from tests.harness.inprocess import InProcessCluster, in_process_cluster
from tests.harness.metrics import http_get
from tests.harness.polling import wait_until


def _status(cluster: InProcessCluster, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    hostfile = cluster.tmp_path / "hostfile.txt"
    hostfile.write_text("".join(f"{m.name} {m.address}\n" for m in cluster.members))
    cli.main(["-h", str(hostfile), "status", "--json"])  # not 0 until there is a leader
    nodes: list[dict[str, Any]] = json.loads(capsys.readouterr().out)["nodes"]
    return nodes


def _all_at(cluster: InProcessCluster, capsys: pytest.CaptureFixture[str], version: int) -> list[dict[str, Any]]:
    nodes = _status(cluster, capsys)
    return nodes if all(n["reachable"] and n["cluster_version"] == version for n in nodes) else []


def test_a_new_cluster_runs_this_releases_cluster_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with in_process_cluster(tmp_path, 3) as cluster:
        nodes = wait_until(lambda: _all_at(cluster, capsys, MAX_CLUSTER_VERSION), "every server to apply the raise")
        for node in nodes:
            assert node["max_cluster_version"] == MAX_CLUSTER_VERSION
            assert node["data_format"] == DATA_FORMAT
        status, text = http_get(f"http://{cluster.metrics['s0']}/metrics")
        assert status == 200
        assert f"paxoskv_cluster_version {float(MAX_CLUSTER_VERSION)}" in text
        # One raise, applied once, at the same slot everywhere: no leader
        # proposes another while one is pending.
        for server in cluster.servers.values():
            assert cluster.call(lambda s=server: s.store.cluster_version) == MAX_CLUSTER_VERSION


def _write(cluster: InProcessCluster, key: str) -> None:
    leader = wait_until(cluster.leader, "a leader")
    address = next(m.address for m in cluster.members if m.name == leader)
    with grpc.insecure_channel(address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        session = stub.Register(kv_pb2.RegisterRequest(), timeout=10).session_id
        command = kv_pb2.Command(session_id=session, seq=1, set=kv_pb2.SetOp(key=key, value="v"))
        reply = stub.Write(kv_pb2.WriteRequest(command=command), timeout=10)
        assert reply.status == kv_pb2.OK, reply


def _holds_back(cluster: InProcessCluster, held: str) -> bool:
    """Whether a leader other than ``held`` heard from every member within the window, and still would not raise.

    ``held`` itself would not raise whatever the others said: when it leads
    it is asked to hand over.
    """
    name = cluster.leader()
    if name is None:
        return False
    server = cluster.servers[name]
    if name == held:
        cluster.call(server.replica.step_down, limits.STEP_DOWN_ABSTAIN_TICKS)
        return False

    def check() -> bool:
        replica = server.replica
        now, reports = replica._now(), replica.versions
        others = [m for m in replica.core.membership_ids if m != replica.core.id]
        heard = [reports.reported(m) for m in others]
        if not all(r is not None and now - r.at <= reports.window for r in heard):
            return False
        current = replica.store.cluster_version
        return reports.raise_to(others, replica.core.id, replica.max_cluster_version, current, now) is None

    return bool(cluster.call(check))


def test_one_server_held_back_keeps_the_cluster_at_the_base_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    held = {"s2": {"max_cluster_version": BASE_CLUSTER_VERSION}}
    with in_process_cluster(tmp_path, 3, options_of=held) as cluster:
        _write(cluster, "k")
        wait_until(
            lambda: all(cluster.call(lambda s=s: s.store.get("k")) == "v" for s in cluster.servers.values()),
            "the write to apply everywhere",
        )
        # Every member reported recently, and the leader would still not raise: s2 runs only 1.
        wait_until(lambda: _holds_back(cluster, "s2"), "a leader other than s2 to hear from every member")
        nodes = _status(cluster, capsys)
        assert [n["cluster_version"] for n in nodes] == [BASE_CLUSTER_VERSION] * 3
        assert {n["name"]: n["max_cluster_version"] for n in nodes} == {
            "s0": MAX_CLUSTER_VERSION,
            "s1": MAX_CLUSTER_VERSION,
            "s2": BASE_CLUSTER_VERSION,
        }
        # Started again without the flag, it lets the raise through.
        cluster.stop("s2")
        cluster.options_of.clear()
        cluster.restart("s2")
        wait_until(lambda: _all_at(cluster, capsys, MAX_CLUSTER_VERSION), "every server to apply the raise")


def test_a_raise_beyond_this_release_stops_the_server_naming_the_release(tmp_path: Path) -> None:
    # As if a newer release led: a raise to a version this one cannot run.
    too_new = MAX_CLUSTER_VERSION + 1
    with in_process_cluster(tmp_path, 1) as cluster:
        server = cluster.servers["s0"]
        wait_until(lambda: cluster.call(lambda: server.store.cluster_version) == MAX_CLUSTER_VERSION, "the raise")
        applied = cluster.call(lambda: server.store.applied_index)
        assert cluster.call(server.core.propose, logcommand.raise_cluster_version(too_new, server.node_id))
        cluster.call(server.replica.drive)
        wait_until(server.failed.is_set, "the server to stop")
        assert server.too_new is not None and server.too_new.version == too_new
        assert f"the cluster runs version {too_new}" in str(server.too_new)
        assert "start release" in str(server.too_new)
        # Nothing of that slot was applied.
        assert cluster.call(lambda: server.store.applied_index) == applied
        assert cluster.call(lambda: server.store.cluster_version) == MAX_CLUSTER_VERSION
