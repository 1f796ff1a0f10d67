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
    """A test that uses the module's shared cluster finds it whole and must leave it so."""
    if "shared_cluster" not in request.fixturenames:
        yield
        return
    shared: LocalCluster = request.getfixturevalue("shared_cluster")
    shared.check_alive()  # a server that died since the last test: its log tail, not a puzzling failure here
    yield
    changed = intact(shared)
    if changed is not None:
        pytest.fail(f"this test changed the module's shared cluster ({changed}): give it a cluster of its own")
