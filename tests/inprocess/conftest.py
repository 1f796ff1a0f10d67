"""What the in-process tests share: one event loop per module, and clusters of servers in this process.

``cluster`` is a cluster of the test's own, to stop, restart or partition as
it likes.  ``shared_cluster`` is one cluster for all the tests of a module
that only read and write, each with keys of its own; a test that leaves a
server of it stopped or partitioned fails.  Both have a leader when handed
out; their options come from ``cluster_options``: three plain servers unless
a module overrides that fixture, e.g. with ``{"size": 3, "tls": True}`` (the
certificates in the cluster's folder, under tls/).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.harness.inprocess import InProcessCluster, in_process_cluster
from tests.harness.loop import LoopThread
from tests.harness.polling import wait_until
from tests.harness.shared import shared_cluster_guard


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    """The module's coroutines run here, and its fake servers are served from here."""
    runner = LoopThread()
    yield runner
    runner.close()


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"size": 3}


@contextmanager
def _leading_cluster(folder: Path, size: int, tls: bool = False, **options: Any) -> Iterator[InProcessCluster]:
    with in_process_cluster(folder, size, tls_dir=folder / "tls" if tls else None, **options) as started:
        wait_until(started.leader, "a leader")
        yield started


@pytest.fixture
def cluster(tmp_path: Path, cluster_options: dict[str, Any]) -> Iterator[InProcessCluster]:
    with _leading_cluster(tmp_path, **cluster_options) as started:
        yield started


@pytest.fixture(scope="module")
def shared_cluster(
    tmp_path_factory: pytest.TempPathFactory, cluster_options: dict[str, Any]
) -> Iterator[InProcessCluster]:
    with _leading_cluster(tmp_path_factory.mktemp("shared"), **cluster_options) as started:
        yield started


@pytest.fixture(autouse=True)
def _shared_cluster_left_whole(request: pytest.FixtureRequest) -> Iterator[None]:
    yield from shared_cluster_guard(request, InProcessCluster.intact)
