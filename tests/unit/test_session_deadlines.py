"""A session's write deadlines: each write of a batch is answered Unknown at its own deadline, not before.

The writes of one batch share one timer (paxos/server/session.py); here a replica
that never answers stands in for a leader that cannot reach a quorum.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from paxos.kv.logcommand import ClientWrite
from paxos.replica import Status, WriteAnswer
from paxos.server.metrics import Histogram
from paxos.server.session import ClientSession, ReplyBudget
from protos import kv_pb2


class _SilentReplica:
    """Takes writes and keeps their answer callbacks: it answers none by itself."""

    def __init__(self) -> None:
        self.answers: dict[int, Callable[[WriteAnswer], None]] = {}

    def write(self, cmd: ClientWrite, answer: Callable[[WriteAnswer], None]) -> None:
        self.answers[cmd.seq] = answer


class _Server:
    """What a session uses of its server."""

    def __init__(self) -> None:
        self.replica = _SilentReplica()
        self.session_batch_requests = Histogram([1.0])
        self.requests: list[tuple[str, str]] = []

    def note_request(self, method: str, status: str, seconds: float) -> None:
        self.requests.append((method, status))

    def leader_hint(self) -> str:
        return "node1"


def _write(request_id: int, seq: int, timeout_ms: int) -> kv_pb2.SessionRequest:
    request = kv_pb2.SessionRequest(id=request_id, timeout_ms=timeout_ms)
    cmd = request.write.command
    cmd.client_id, cmd.seq, cmd.first_unacked = "c", seq, 1
    cmd.set.key, cmd.set.value = f"k{seq}", "v"
    return request


def test_each_write_of_a_batch_expires_at_its_own_deadline() -> None:
    async def body() -> tuple[dict[int, tuple[int, float]], ClientSession, _Server]:
        server = _Server()
        session = ClientSession(server, "test", ReplyBudget())  # type: ignore[arg-type]
        batch = kv_pb2.SessionBatch(requests=[_write(1, 1, 400), _write(2, 2, 100), _write(3, 3, 5000)])
        sent = asyncio.Event()
        finish = asyncio.Event()

        async def batches() -> AsyncIterator[kv_pb2.SessionBatch]:
            yield batch
            sent.set()
            await finish.wait()

        replies: dict[int, tuple[int, float]] = {}
        started = time.monotonic()

        async def collect() -> None:
            async for message in session.serve(batches()):
                for reply in message.replies:
                    replies[reply.id] = (reply.write.status, time.monotonic() - started)
                if 1 in replies and 2 in replies and 3 not in replies:
                    # The third is still open: answer it as the replica would.
                    server.replica.answers[3](WriteAnswer(Status.OK))
                if len(replies) == 3:
                    finish.set()

        await asyncio.wait_for(collect(), 30)
        return replies, session, server

    replies, session, server = asyncio.run(body())
    assert replies[2][0] == kv_pb2.UNKNOWN and replies[2][1] >= 0.099
    assert replies[1][0] == kv_pb2.UNKNOWN and replies[1][1] >= 0.399
    assert replies[3][0] == kv_pb2.OK
    assert not session._timers  # every timer cancelled or spent
    assert sorted(server.requests) == [("Write", "OK"), ("Write", "UNKNOWN"), ("Write", "UNKNOWN")]
