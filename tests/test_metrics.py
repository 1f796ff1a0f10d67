"""Prometheus metrics: the /metrics text of real servers, and a real Prometheus scraping a cluster."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from protos import kv_pb2, kv_pb2_grpc
from tests.inprocess import InProcessCluster, free_port, in_process_cluster
from tests.polling import wait_until
from tools.localcluster import LocalCluster

# Every metric docs/operations.md promises, by the name Prometheus stores
# (counters with _total, histograms with _bucket/_sum/_count).
SERIES = [
    "paxoskv_is_leader",
    "paxoskv_role",
    "paxoskv_ballot_round",
    "paxoskv_commit_index",
    "paxoskv_applied_index",
    "paxoskv_leader_changes_total",
    "paxoskv_wal_fsync_duration_seconds_bucket",
    "paxoskv_slot_commands_bucket",
    "paxoskv_client_requests_total",
    "paxoskv_client_request_duration_seconds_bucket",
    "paxoskv_peer_messages_total",
    "paxoskv_pending_writes",
    "paxoskv_session_streams",
    "paxoskv_session_unread_reply_bytes",
]
WRITES = 5
HTTP_SECONDS = 5.0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_SECONDS) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _samples(address: str) -> dict[str, list[Sample]]:
    status, text = _get(f"http://{address}/metrics")
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


def _write_through(cluster: InProcessCluster, count: int) -> str:
    leader = wait_until(cluster.leader, "a leader")
    address = next(m.address for m in cluster.members if m.name == leader)
    with grpc.insecure_channel(address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        session = stub.Register(kv_pb2.RegisterRequest(), timeout=10).session_id
        for seq in range(1, count + 1):
            cmd = kv_pb2.Command(session_id=session, seq=seq, set=kv_pb2.SetOp(key=f"k{seq}", value="v"))
            reply = stub.Write(kv_pb2.WriteRequest(command=cmd), timeout=10)
            assert reply.status == kv_pb2.OK, reply
        stub.Get(kv_pb2.GetRequest(key="k1"), timeout=10)
    return leader


def test_metrics_endpoint_reports_the_servers_numbers(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 3) as cluster:
        leader = _write_through(cluster, WRITES)
        samples = {name: _samples(address) for name, address in cluster.metrics.items()}
        for name, found in samples.items():
            missing = [s for s in SERIES if s not in found]
            assert not missing, f"{name} lacks {missing}"
            assert _value(found, "paxoskv_is_leader") == float(name == leader)
            assert _value(found, "paxoskv_role", role="leader") == float(name == leader)
            assert _value(found, "paxoskv_ballot_round") >= 1
            assert _value(found, "paxoskv_leader_changes_total") >= 1
            assert _value(found, "paxoskv_wal_fsync_duration_seconds_count") >= 1
            assert _value(found, "paxoskv_pending_writes") == 0
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
        assert _get(f"http://{address}/healthz") == (200, "SERVING\n")
        assert _get(f"http://{address}/nothing")[0] == 404
        server = cluster.servers["s0"]
        cluster.call(setattr, server, "serving", False)  # as stop() does first
        assert _get(f"http://{address}/healthz") == (503, "NOT_SERVING\n")
        cluster.stop("s0")
        with pytest.raises(OSError):
            _get(f"http://{address}/healthz")


DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_docs_and_dashboard_name_only_metrics_the_servers_export(tmp_path: Path) -> None:
    with in_process_cluster(tmp_path, 1) as cluster:
        # Declared families count too: a one-server cluster sends no peer messages.
        status, text = _get(f"http://{cluster.metrics['s0']}/metrics")
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


# ---------------------------------------------------------------- Prometheus

PROMETHEUS = shutil.which("prometheus")
PROMETHEUS_NODES = 5
SCRAPE_SECONDS = 1
CLUSTER_SECONDS = 120.0  # deadline for the cluster, then Prometheus, to reach a state
PROMETHEUS_CONFIG = """\
global:
  scrape_interval: {interval}s
  scrape_timeout: {interval}s
scrape_configs:
  - job_name: paxoskv
    static_configs:
      - targets: [{targets}]
"""


def _query(prometheus: str, query: str) -> list[dict[str, Any]]:
    url = f"http://{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    status, text = _get(url)
    if status == 503:
        raise ConnectionError("Prometheus is still starting")
    assert status == 200, text
    reply = json.loads(text)
    assert reply["status"] == "success", reply
    result: list[dict[str, Any]] = reply["data"]["result"]
    return result


@pytest.fixture
def prometheus_binary() -> str:
    if PROMETHEUS is None:
        pytest.skip("Prometheus is not installed (apt-get install prometheus; .ci/run installs it)")
    return PROMETHEUS


def test_prometheus_scrapes_every_series_from_a_five_server_cluster(tmp_path: Path, prometheus_binary: str) -> None:
    directory = tmp_path / "cluster"
    names = LocalCluster(directory, nodes=PROMETHEUS_NODES).names  # writes the hostfile the real one reuses
    metrics = {name: f"127.0.0.1:{free_port()}" for name in names}
    web = f"127.0.0.1:{free_port()}"
    config = tmp_path / "prometheus.yml"
    targets = ", ".join(f"'{address}'" for address in metrics.values())
    config.write_text(PROMETHEUS_CONFIG.format(interval=SCRAPE_SECONDS, targets=targets))
    node_args = {name: ["--metrics", address] for name, address in metrics.items()}
    with LocalCluster(directory, nodes=PROMETHEUS_NODES, node_args=node_args) as cluster:
        cluster.wait_for_leader(timeout=CLUSTER_SECONDS)
        with cluster.client() as kv:
            for i in range(WRITES):
                kv.set(f"key{i}", "value")
        log = (tmp_path / "prometheus.log").open("wb")
        prometheus = subprocess.Popen(
            [
                prometheus_binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={web}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def scraped_everywhere() -> bool:
                assert prometheus.poll() is None, f"prometheus exited; see {tmp_path / 'prometheus.log'}"
                try:
                    up = _query(web, "up == 1")
                    if len(up) < PROMETHEUS_NODES:
                        return False
                    for series in SERIES:
                        if len(_query(web, f"count by (instance) ({series})")) < PROMETHEUS_NODES:
                            return False
                    # Every server has applied the writes, and the leader counted them.
                    applied = _query(web, f"paxoskv_applied_index >= {WRITES}")
                    writes = _query(web, 'sum(paxoskv_client_requests_total{method="Write",status="OK"})')
                except OSError:  # ConnectionError included
                    return False  # Prometheus still starting
                return len(applied) == PROMETHEUS_NODES and bool(writes) and float(writes[0]["value"][1]) >= WRITES

            wait_until(scraped_everywhere, "Prometheus to scrape every series from all five servers", CLUSTER_SECONDS)
            leaders = _query(web, "paxoskv_is_leader == 1")
            assert len(leaders) == 1, leaders
        finally:
            prometheus.terminate()
            prometheus.wait(CLUSTER_SECONDS)
            log.close()
