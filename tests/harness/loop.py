"""An event loop in a thread of its own, for tests that drive asyncio code from plain blocking code."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
RUN_SECONDS = 120.0  # a hang guard for one coroutine, not a speed check


class LoopThread:
    """One loop for many coroutines, closed only at the end.

    Not ``asyncio.run`` per test: gRPC's asyncio layer serves all the loops
    of a process together, and a closed loop with calls still due upsets the
    others (see ``client.kv._client_loop``).
    """

    def __init__(self, name: str = "test-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = RUN_SECONDS) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a plain function on the loop's thread (for objects that are not thread-safe)."""

        async def called() -> T:
            return fn(*args)

        return self.run(called())

    def close(self, grace: float = 5.0) -> None:
        """Give what still runs ``grace`` seconds to end, cancel the rest, then stop and close the loop."""
        self.run(_finish_the_rest(grace))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(RUN_SECONDS)
        self.loop.close()


async def _finish_the_rest(grace: float) -> None:
    """What gRPC left running (a peer stream's request pump, say) ends before the loop closes."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others and grace > 0:
        await asyncio.wait(others, timeout=grace)
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)
