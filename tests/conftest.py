"""What every test shares: the process's logging set up as the test found it, the tiers, the order.

Each test is marked with the tier of its folder (tests/harness/tiers.py), so
that ``-m "not docker"`` and the like select by tier; a test module outside
every tier folder stops the collection.  Tests on a module's shared cluster
run last in their module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.harness.tiers import TESTS, TIER_FOLDERS, tier_of


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


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    _mark_tiers(items)
    _shared_clusters_last(items)


def _mark_tiers(items: list[pytest.Item]) -> None:
    for item in items:
        tier = tier_of(item.path)
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))


# ------------------------------------------------------- shared clusters


def _shared_clusters_last(items: list[pytest.Item]) -> None:
    """Within each module, the tests on its shared cluster run after those with clusters of their own.

    The shared cluster (a module-scoped fixture, tests/*/conftest.py) then
    starts only once the others are done, and two clusters never run side by
    side on a machine with few cores.
    """
    first_of_module: dict[Path, int] = {}
    for index, item in enumerate(items):
        first_of_module.setdefault(item.path, index)
    items.sort(key=lambda item: (first_of_module[item.path], "shared_cluster" in getattr(item, "fixturenames", ())))
