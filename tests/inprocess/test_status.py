"""`status --json` shows each server's version, uptime, log and data sizes and its latest fsync time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from client import cli
from paxos.server.service import VERSION
from tests.harness.inprocess import in_process_cluster
from tests.harness.polling import wait_until


def test_status_json_shows_version_uptime_sizes_and_fsync(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with in_process_cluster(tmp_path, 1) as cluster:
        hostfile = tmp_path / "hostfile.txt"
        hostfile.write_text("".join(f"{m.name} {m.address}\n" for m in cluster.members))

        def status() -> dict[str, Any] | None:
            cli.main(["-h", str(hostfile), "status", "--json"])  # not 0 until there is a leader
            node: dict[str, Any] = json.loads(capsys.readouterr().out)["nodes"][0]
            return node if node["role"] == "leader" and node["last_fsync_seconds"] > 0 else None

        node = wait_until(status, "the server to lead after an fsync of its log")
    assert tuple(node) == cli.STATUS_FIELDS + cli.STATUS_DETAIL_FIELDS
    assert node["version"] == VERSION != ""
    assert node["uptime_seconds"] > 0
    assert 0 < node["log_bytes"] <= node["data_bytes"]
