"""A session holds what its client has not read within its bounds, and serves the rest once the client reads.

The session is driven by hand here: its replies are taken one message at a
time, as gRPC takes them when the client's flow-control window has room.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from paxos.common import limits
from paxos.server.metrics import Histogram
from paxos.server.session import ClientSession, ReplyBudget
from protos import kv_pb2

VALUE = "v" * (256 * 1024)


class _Store:
    def get(self, key: str) -> str | None:
        return VALUE if key == "big" else None


class _Server:
    """What a session uses of its server, for local reads."""

    def __init__(self) -> None:
        self.store = _Store()
        self.session_batch_requests = Histogram([1.0])
        self.served = 0

    def note_request(self, method: str, status: str, seconds: float) -> None:
        self.served += 1


def _gets(first: int, count: int) -> kv_pb2.SessionBatch:
    get = kv_pb2.GetRequest(key="big", consistency=kv_pb2.LOCAL)
    return kv_pb2.SessionBatch(requests=[kv_pb2.SessionRequest(id=first + i, get=get) for i in range(count)])


def test_unread_replies_stay_within_the_bounds_and_all_come_once_the_client_reads() -> None:
    async def body() -> None:
        server, budget = _Server(), ReplyBudget()
        session = ClientSession(server, "test", budget)  # type: ignore[arg-type]
        taken: list[int] = []
        finish = asyncio.Event()

        async def batches() -> AsyncIterator[kv_pb2.SessionBatch]:
            for first in (1, 1025, 2049, 3073):
                yield _gets(first, 1024)
            await finish.wait()

        held_most = 0
        replies = session.serve(batches())
        while len(taken) < 4096:
            message = await asyncio.wait_for(anext(replies), 30)
            for _ in range(20):  # the client reads nothing for a while: nothing more is served
                await asyncio.sleep(0)
            held = budget.bytes
            held_most = max(held_most, held)
            assert held <= limits.MAX_SESSION_REPLY_BYTES + limits.MAX_REPLY_BYTES, held
            # What waits to go is the bound's worth and one reply more.
            assert server.served - len(taken) - len(message.replies) <= limits.MAX_SESSION_REPLY_BYTES // len(VALUE) + 1
            taken += [reply.id for reply in message.replies]
            assert all(reply.get.value == VALUE for reply in message.replies)
        assert taken == list(range(1, 4097)), "every read answered once, in order"
        assert held_most >= limits.MAX_SESSION_REPLY_BYTES // 2
        finish.set()
        await asyncio.wait_for(anext(replies, None), 30)
        assert budget.bytes == 0 and budget.streams == 0

    asyncio.run(body())


def test_streams_beyond_the_server_bounds_are_refused() -> None:
    budget = ReplyBudget()
    budget.streams = limits.MAX_SESSION_STREAMS
    assert budget.refusal() is not None and "session streams are open" in str(budget.refusal())
    budget.streams = 0
    budget.bytes = limits.MAX_SESSION_REPLY_BYTES_TOTAL
    assert budget.refusal() is not None and "reply bytes" in str(budget.refusal())
    budget.bytes = 0
    assert budget.refusal() is None
