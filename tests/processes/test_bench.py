"""A five-second smoke run of the benchmark tool on each path, to keep it working (no speed assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.harness import PROJECT
from tests.harness.processes import running_cluster
from tools.localcluster import LocalCluster


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"nodes": 3}


@pytest.mark.parametrize("path", ["session", "unary"])
def test_bench_smoke_run_reports_json(shared_cluster: LocalCluster, path: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "paxos.bench", "-h", str(shared_cluster.hostfile),
         "--clients", "4", "--seconds", "5", "--op", "mixed", "--json", *(["--unary"] if path == "unary" else [])],
        capture_output=True, text=True, timeout=120, cwd=PROJECT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"ops_per_sec", "p50_ms", "p99_ms", "errors"} <= set(summary)
    assert summary["path"] == path
    assert summary["ops"] > 0, summary
    assert summary["errors"] == 0, (summary, result.stderr[-2000:])
    assert summary["tls"] is False


def test_bench_runs_over_tls(tmp_path: Path) -> None:
    with running_cluster(tmp_path / "cluster", nodes=3, tls=True) as cluster:
        result = subprocess.run(
            [sys.executable, "-m", "paxos.bench", "-h", str(cluster.hostfile), "--tls-dir", str(cluster.tls_dir),
             "--clients", "2", "--seconds", "2", "--op", "mixed", "--json"],
            capture_output=True, text=True, timeout=120, cwd=PROJECT,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["tls"] is True and summary["ops"] > 0 and summary["errors"] == 0
