"""What the in-process tests share: one event loop per module, in a thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.loop import LoopThread


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    """The module's coroutines run here, and its fake servers are served from here."""
    runner = LoopThread()
    yield runner
    runner.close()
