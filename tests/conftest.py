"""What every test shares: logging left as found, the tiers, and how a run is laid out.

Each test is marked with the tier of its folder (tests/harness/tiers.py), so
that ``-m "not docker"`` and the like select by tier; a test module outside
every tier folder stops the collection.  Long modules start first, and the
tests on a module's shared cluster run last in their module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.harness.tiers import TESTS, TIER_FOLDERS, tier_of
from tools.localcluster import PORT_RANGE_ENV


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """Undo the root logger's handlers and level that a command's ``main()`` run in-process set up.

    A handler bound to a test's captured stderr outlives the capture; the
    servers of a later in-process test would then log into a closed stream
    and print "--- Logging error ---" into that test's output.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _mark_tiers(items)
    _long_modules_first(items)
    _shared_clusters_last(items)


# ------------------------------------------------------------------ tiers


class _OutsideEveryTier(pytest.File):
    """A test module under tests/ but in no tier folder: collecting it is an error naming the folders."""

    def collect(self) -> list[pytest.Item]:
        folders = ", ".join(f"tests/{tier}/" for tier in TIER_FOLDERS)
        raise self.CollectError(f"{self.path}: a test module must live in a tier folder: one of {folders}")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if not _is_test_module(file_path, parent.config) or tier_of(file_path) is not None:
        return None
    if not file_path.resolve().is_relative_to(TESTS):
        return None  # a test file named on the command line from elsewhere has no tier to check
    return _OutsideEveryTier.from_parent(parent, path=file_path)


def _is_test_module(path: Path, config: pytest.Config) -> bool:
    return path.suffix == ".py" and any(fnmatch(path.name, pattern) for pattern in config.getini("python_files"))


def _mark_tiers(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


# ------------------------------------------------------------ parallel runs
#
# The suite runs in parallel (pytest-xdist, ``-n 4 --dist loadfile`` in
# pyproject.toml): a module's tests stay together on one worker, so a
# module-scoped cluster starts once.  Most of the suite's time is spent
# waiting (for the Docker build, for servers to start and elect, for an idle
# period to pass), not computing, so four workers on two cores finish in
# about the time of the longest module chain.

# Modules that run for minutes go first, so that they do not start last and
# keep the run going on their own.  Longest first.
LONG_MODULES = (
    "docker/test_cluster.py",
    "processes/test_keepalive.py",
    "docker/test_scaling.py",
    "simulation/test_sim.py",
)
# Ports below the kernel's ephemeral range (32768 and up on Linux), shared out
# among the workers: see tools.localcluster.free_ports.
PARALLEL_PORTS = (20000, 32000)


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw"):
        count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
        low, high = PARALLEL_PORTS
        span = (high - low) // count
        start = low + int(worker[2:]) * span
        # Inherited by the server processes and commands that tests start.
        os.environ[PORT_RANGE_ENV] = f"{start}-{start + span - 1}"


def _long_modules_first(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = f"{item.path.parent.name}/{item.path.name}"
        return LONG_MODULES.index(name) if name in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: the rest keep their order


# ------------------------------------------------------- shared clusters


def _shared_clusters_last(items: list[pytest.Item]) -> None:
    """Within each module, the tests on its shared cluster run after those with clusters of their own.

    The shared cluster (a module-scoped fixture, tests/*/conftest.py) then
    starts only once the others are done, and two clusters of one module
    never run side by side.
    """
    first_of_module: dict[Path, int] = {}
    for index, item in enumerate(items):
        first_of_module.setdefault(item.path, index)
    items.sort(key=lambda item: (first_of_module[item.path], "shared_cluster" in getattr(item, "fixturenames", ())))
