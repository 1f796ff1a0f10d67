"""What every test shares: the process's logging set up as the test found it."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


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
