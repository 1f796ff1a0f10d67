"""A real Prometheus scraping every series from five real server processes.

The /metrics text of servers in this process is tests/inprocess/test_metrics.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.harness.inprocess import free_port
from tests.harness.metrics import SERIES, http_get
from tests.harness.polling import wait_until
from tools.localcluster import LocalCluster

PROMETHEUS = shutil.which("prometheus")
PROMETHEUS_NODES = 5
SCRAPE_SECONDS = 1
WRITES = 5
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
    status, text = http_get(url)
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
