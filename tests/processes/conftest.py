"""What the real-process tests share: clusters of server processes on loopback.

``cluster`` is a cluster of the test's own, to kill, pause, restart or
reconfigure as it likes.  ``shared_cluster`` is one cluster for all the tests
of a module that only read and write, each with keys of its own; a test that
leaves a server of it stopped fails.  The size and LocalCluster options of
both come from ``cluster_options``: five plain servers unless a module
overrides that fixture, e.g. with ``{"nodes": 3, "tls": True}``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.processes import intact, running_cluster
from tests.harness.shared import shared_cluster_guard
from tools.localcluster import LocalCluster


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"nodes": 5}


@pytest.fixture
def cluster(tmp_path: Path, cluster_options: dict[str, Any]) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path / "cluster", **cluster_options) as started:
        yield started


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory, cluster_options: dict[str, Any]) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("shared") / "cluster", **cluster_options) as started:
        yield started


@pytest.fixture(autouse=True)
def _shared_cluster_left_whole(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from shared_cluster_guard(request, intact)
