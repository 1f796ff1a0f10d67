"""What the real-process tests share: clusters of server processes on loopback.

``cluster`` is a cluster of the test's own, to kill, pause, restart or
reconfigure as it likes.  Its size and LocalCluster options come from
``cluster_options``, five plain servers unless a module overrides that
fixture, e.g. ``{"nodes": 3, "tls": True}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from paxos.local import LocalCluster
from tests.harness.processes import running_cluster


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"nodes": 5}


@pytest.fixture
def cluster(tmp_path: Path, cluster_options: dict[str, Any]) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "cluster", **cluster_options) as started:
        yield started
