"""What every test shares: logging left as found, and how a parallel run is laid out."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

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
LONG_MODULES = ("test_docker.py", "test_keepalive.py", "test_sim.py")
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONG_MODULES.index(name) if name in LONG_MODULES else len(LONG_MODULES)

    items.sort(key=rank)  # stable: the rest keep their order
