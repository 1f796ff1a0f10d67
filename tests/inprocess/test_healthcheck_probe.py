"""The Docker image's HEALTHCHECK command, run with bash outside Docker against a real server."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks.healthcheck_cpu import healthcheck_command
from tests.harness.inprocess import in_process_cluster

PROBE_SECONDS = 10.0

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="the HEALTHCHECK runs bash, and there is none")


def _probe(metrics: str) -> int:
    env = {**os.environ, "PAXOSKV_METRICS": metrics}
    return subprocess.run(healthcheck_command(), env=env, capture_output=True, timeout=PROBE_SECONDS).returncode


def test_the_dockerfile_healthcheck_passes_while_serving_and_fails_after(tmp_path: Path) -> None:
    assert healthcheck_command()[0] == "bash", "the probe must start no Python"
    with in_process_cluster(tmp_path, 1) as cluster:
        metrics = cluster.metrics["s0"]
        assert _probe(metrics) == 0
        cluster.call(setattr, cluster.servers["s0"], "serving", False)  # as stop() does first
        assert _probe(metrics) != 0
        cluster.stop("s0")
        assert _probe(metrics) != 0  # nothing listens
