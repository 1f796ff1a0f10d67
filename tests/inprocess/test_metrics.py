"""Prometheus metrics: the /metrics text and /healthz of real servers in this process.

A real Prometheus scraping a cluster of server processes is tests/processes/test_metrics.py."""

from __future__ import annotations

import json
import re
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from paxos.common.versions import MAX_CLUSTER_VERSION
from paxos.storage.meta import DATA_FORMAT
from protos import kv_pb2, kv_pb2_grpc
from tests.harness import PROJECT
from tests.harness.inprocess import InProcessCluster, in_process_cluster
from tests.harness.metrics import SERIES, http_get
from tests.harness.polling import wait_until

WRITES = 5


def _samples(address: str) -> dict[str, list[Sample]]:
    status, text = http_get(f"http://{address}/metrics")
    assert status == 200, text
    found: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def _value(samples: dict[str, list[Sample]], name: str, **labels: str) -> float:
    matching = [s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, f"{name}{labels}: {matching}"
    return matching[0]


# A machine loaded enough can stall a leader past its election timeout; the
# exact counts below are of one leader's term, so a run whose leadership
# moved starts over on a fresh cluster.
TRIES = 3


def _write_through(cluster: InProcessCluster, count: int) -> str | None:
    """The leader, after ``count`` writes and a read through it; None if it stopped leading meanwhile."""
    leader = wait_until(cluster.leader, "a leader")
    address = next(m.address for m in cluster.members if m.name == leader)
    with grpc.insecure_channel(address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        session = stub.Register(kv_pb2.RegisterRequest(), timeout=10).session_id
        for seq in range(1, count + 1):
            cmd = kv_pb2.Command(session_id=session, seq=seq, set=kv_pb2.SetOp(key=f"k{seq}", value="v"))
            reply = stub.Write(kv_pb2.WriteRequest(command=cmd), timeout=10)
            if reply.status == kv_pb2.NOT_LEADER:
                return None
            assert reply.status == kv_pb2.OK, reply
        stub.Get(kv_pb2.GetRequest(key="k1"), timeout=10)
    return leader


def test_metrics_endpoint_reports_the_servers_numbers(tmp_path: Path) -> None:
    for attempt in range(TRIES):
        with in_process_cluster(tmp_path / f"try{attempt}", 3) as cluster:
            leader = _write_through(cluster, WRITES)
            if leader is None:
                continue
            samples = {name: _samples(address) for name, address in cluster.metrics.items()}
            if cluster.leader() != leader:
                continue
            _check_metrics(cluster, leader, samples)
            return
    pytest.fail(f"leadership moved while writing in each of {TRIES} clusters")


def _check_metrics(cluster: InProcessCluster, leader: str, samples: dict[str, dict[str, list[Sample]]]) -> None:
    for name, found in samples.items():
        missing = [s for s in SERIES if s not in found]
        assert not missing, f"{name} lacks {missing}"
        assert _value(found, "paxoskv_is_leader") == float(name == leader)
        assert _value(found, "paxoskv_role", role="leader") == float(name == leader)
        assert _value(found, "paxoskv_ballot_round") >= 1
        assert _value(found, "paxoskv_leader_changes_total") >= 1
        assert _value(found, "paxoskv_wal_fsync_duration_seconds_count") >= 1
        assert _value(found, "paxoskv_pending_writes") == 0
        assert _value(found, "paxoskv_max_cluster_version") == MAX_CLUSTER_VERSION
        assert _value(found, "paxoskv_cluster_version") in (1, MAX_CLUSTER_VERSION)  # raised soon after the start
        assert _value(found, "paxoskv_data_format") == DATA_FORMAT
        assert _value(found, "paxoskv_session_unread_reply_bytes") == 0  # the client read every reply
        # Every follower talks with the leader (not necessarily with other followers).
        for peer in [leader] if name != leader else [p for p in cluster.servers if p != leader]:
            assert _value(found, "paxoskv_peer_messages_total", peer=peer, direction="sent") > 0
            assert _value(found, "paxoskv_peer_messages_total", peer=peer, direction="received") > 0
    lead = samples[leader]
    assert _value(lead, "paxoskv_commit_index") >= WRITES
    assert _value(lead, "paxoskv_applied_index") >= WRITES
    assert _value(lead, "paxoskv_client_requests_total", method="Write", status="OK") == WRITES
    assert _value(lead, "paxoskv_client_request_duration_seconds_count", method="Write") == WRITES
    assert _value(lead, "paxoskv_client_requests_total", method="Get", status="OK") == 1
    # Every write is one client command in some applied slot.
    commands = _value(lead, "paxoskv_slot_commands_sum")
    assert commands >= WRITES
    assert _value(lead, "paxoskv_slot_commands_bucket", le="+Inf") == _value(lead, "paxoskv_slot_commands_count")


def test_refused_peer_messages_are_counted_as_dropped(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3) as cluster:
        wait_until(cluster.leader, "a leader")
        server = cluster.servers["s0"]
        cluster.call(server.refusals.note, "somewhere (a non-member)", "bad cluster id", "test")
        found = _samples(cluster.metrics["s0"])
        assert (
            _value(
                found, "paxoskv_peer_messages_dropped_total", peer="somewhere (a non-member)", reason="bad cluster id"
            )
            == 1
        )


def test_healthz_answers_serving_until_the_server_stops(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 1) as cluster:
        address = cluster.metrics["s0"]
        assert http_get(f"http://{address}/healthz") == (200, "SERVING\n")
        assert http_get(f"http://{address}/nothing")[0] == 404
        server = cluster.servers["s0"]
        cluster.call(setattr, server, "serving", False)  # as stop() does first
        assert http_get(f"http://{address}/healthz") == (503, "NOT_SERVING\n")
        cluster.stop("s0")
        with pytest.raises(OSError):
            http_get(f"http://{address}/healthz")


DOCS = PROJECT / "docs"


def test_docs_and_dashboard_name_only_metrics_the_servers_export(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 1) as cluster:
        # Declared families count too: a one-server cluster sends no peer messages.
        status, text = http_get(f"http://{cluster.metrics['s0']}/metrics")
        assert status == 200, text
    exported = set(re.findall(r"^(\w+)", text, re.M)) | set(re.findall(r"^# TYPE (\w+)", text, re.M))
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported}
    operations = (DOCS / "operations.md").read_text()
    for family in sorted(f for f in families if f.startswith("paxoskv_")):
        assert f"`{family}" in operations, f"docs/operations.md does not describe {family}"
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b((?:paxoskv|process)_[a-z_]+)", target["expr"])
    }
    assert used, "the dashboard queries nothing"
    assert used <= exported | {"up"}, f"the dashboard queries series no server exports: {sorted(used - exported)}"
