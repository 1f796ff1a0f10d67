"""The rule of a module's shared cluster: each test finds it whole and leaves it so."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest


def shared_cluster_guard(request: pytest.FixtureRequest, changes: Callable[[Any], str | None]) -> Iterator[None]:
    """For an autouse fixture: fail a test that uses ``shared_cluster`` and leaves it changed.

    ``changes(cluster)`` says what is not as the cluster started (servers
    stopped, partitions set), or None.
    """
    if "shared_cluster" not in request.fixturenames:
        yield
        return
    shared = request.getfixturevalue("shared_cluster")
    found = changes(shared)
    if found is not None:  # a server died since the last test: say so here, not as a puzzling failure
        pytest.fail(f"the module's shared cluster was not whole before this test ({found})")
    yield
    left = changes(shared)
    if left is not None:
        pytest.fail(f"this test changed the module's shared cluster ({left}): give it a cluster of its own")
