"""The server's side of a client session stream (the KV ``Session`` RPC).

A client sends batches of requests, each with an id of its choosing, and
gets batches of replies, each naming the id it answers.  A batch is handled
as a batch: its writes are handed to the replica in one go (so they share
one bundle and one fsync), its linearizable reads share one lease check or
read index, and whatever replies are ready when the stream can take the next
message leave together in it.

Ordering: every request is handled as soon as its batch arrives and replies
go out as they are ready, in any order.  A caller that waits for each reply
before it sends its next request therefore sees its operations take effect
in the order it made them; requests in flight at the same time are
concurrent, exactly as the same requests on separate unary calls would be.

Everything a client sends is bounded (paxos/common/limits.py): a batch with too
many requests or too many bytes has its requests refused, a request beyond
the session's in-flight bound is refused as UNAVAILABLE, and a request
reusing an id still in flight, or of no known kind, is refused as INVALID.
Each refusal answers only its own request, is counted and is logged once
per sender and reason per interval.

What the server holds for a client is bounded too.  Replies leave as fast
as the client reads them and no faster: gRPC finishes sending a message only
once the client's flow-control window takes it, and the stream sends one
message at a time.  A read is served only while the replies its stream holds
(queued, and the message being sent) come to less than
MAX_SESSION_REPLY_BYTES, and while all streams together hold less than
MAX_SESSION_REPLY_BYTES_TOTAL; otherwise it waits, in order, and the stream
stops reading the client's batches until there is room again.  At most
MAX_SESSION_STREAMS streams are open at once (``ReplyBudget``).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import AsyncIterator

from paxos.common import limits
from paxos.kv import logcommand
from paxos.replica import RegisterAnswer, Status, WriteAnswer
from paxos.server.kvapi import (
    DEFAULT_REQUEST_SECONDS,
    KvApi,
    get_error,
    image_get_error,
    serve_image_get,
    wire_status,
    write_hints_leader,
)
from protos import kv_pb2

# What a reply other than a read's counts for against the reply bounds (its
# id, status and a leader hint); their number is bounded by the in-flight bound.
SMALL_REPLY_BYTES = 128
_STATUS_NAMES = {value: name for name, value in kv_pb2.Status.items()}


# ------------------------------------------------------------ the session


class ReplyBudget:
    """The server-wide bounds of session streams: how many are open, and the reply bytes they hold."""

    def __init__(self) -> None:
        self.streams = 0
        self.bytes = 0
        self._waiting: set[ClientSession] = set()  # sessions with reads held for the total bound

    def refusal(self) -> str | None:
        """Why a new stream may not open now, or None."""
        if self.streams >= limits.MAX_SESSION_STREAMS:
            return f"{self.streams} session streams are open, the most this server allows; retry later"
        if self.bytes >= limits.MAX_SESSION_REPLY_BYTES_TOTAL:
            return f"session streams hold {self.bytes} reply bytes their clients have not read; retry later"
        return None

    def has_room(self) -> bool:
        return self.bytes < limits.MAX_SESSION_REPLY_BYTES_TOTAL

    def add(self, delta: int) -> None:
        self.bytes += delta
        if delta < 0 and self._waiting and self.has_room():
            for session in list(self._waiting):
                self._waiting.discard(session)
                session.release()

    def wait(self, session: ClientSession) -> None:
        self._waiting.add(session)

    def forget(self, session: ClientSession) -> None:
        self._waiting.discard(session)


class _Pending:
    """One request of the session waiting for its reply."""

    __slots__ = ("deadline", "deadlines", "id", "kind", "registered", "request", "started")

    def __init__(
        self, request_id: int, kind: str, request: kv_pb2.SessionRequest, started: float, monotonic: float
    ) -> None:
        """``started`` is time.perf_counter() and ``monotonic`` time.monotonic(), both now (read once a batch)."""
        self.id = request_id
        self.kind = kind
        self.request = request
        self.started = started
        seconds = request.timeout_ms / 1000
        if not 0 < seconds <= DEFAULT_REQUEST_SECONDS:
            seconds = DEFAULT_REQUEST_SECONDS
        self.deadline = monotonic + seconds  # on the clock of KvApi.write and linearizable_read
        self.deadlines: _Deadlines | None = None
        self.registered: int | None = None  # a registration's id at the replica, while it waits


class _Deadlines:
    """One timer for the writes of one batch, rather than one each.

    It fires at the earliest deadline among the writes still unanswered,
    answers those whose deadline has passed, and is set again for the rest;
    it is cancelled once every one of them is answered.
    """

    __slots__ = ("left", "session", "timer", "writes")

    def __init__(self, session: ClientSession, writes: list[_Pending]) -> None:
        self.session = session
        self.writes = writes
        self.left = len(writes)
        for pending in writes:
            pending.deadlines = self
        self.timer: asyncio.TimerHandle | None = None
        self._set(time.monotonic())

    def _set(self, now: float) -> None:
        earliest = min(p.deadline for p in self.writes)
        self.timer = self.session._loop.call_later(max(earliest - now, 0.001), self._fire)
        self.session._timers.add(self)

    def answered(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.cancel()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.session._timers.discard(self)

    def _fire(self) -> None:
        self.timer = None
        self.session._timers.discard(self)
        in_flight = self.session._in_flight
        self.writes = [p for p in self.writes if in_flight.get(p.id) is p]
        now = time.monotonic()
        for pending in [p for p in self.writes if p.deadline <= now + 0.001]:
            self.session._write_expired(pending)
        self.writes = [p for p in self.writes if in_flight.get(p.id) is p]
        if self.writes:
            self._set(now)


class ClientSession:
    """One client's session stream on this server; lives on the server's event loop."""

    def __init__(self, api: KvApi, peer: str, budget: ReplyBudget) -> None:
        """Opens one of ``budget``'s streams: check ``budget.refusal()`` first."""
        self.api = api
        self.peer = peer
        self._loop = asyncio.get_running_loop()
        self._in_flight: dict[int, _Pending] = {}
        # The replies ready to go, built in place in the next message (a
        # reply built alone and then added would be copied).
        self._out = kv_pb2.SessionReplies()
        # Reply bytes held for the client: queued in _out, and in the message
        # gRPC is sending.  Reads waiting for room below the bounds, in order.
        self._budget = budget
        budget.streams += 1
        self._queued_bytes = 0
        self._sending_bytes = 0
        self._held: collections.deque[_Pending] = collections.deque()
        self._timers: set[_Deadlines] = set()
        self._wake = asyncio.Event()  # replies are ready, or the client finished sending
        self._room = asyncio.Event()  # fewer replies wait to be sent than the bound
        self._room.set()
        self._reads: set[asyncio.Task[None]] = set()
        self._closed = False

    async def serve(self, batches: AsyncIterator[kv_pb2.SessionBatch]) -> AsyncIterator[kv_pb2.SessionReplies]:
        """The replies to ``batches``, as messages; ends once the client has finished and all are answered."""
        reader = asyncio.create_task(self._read(batches))
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._out.replies:
                    yield self._take_message()
                    # gRPC has sent it, as far as the client's window let it.
                    self._held_bytes(-self._sending_bytes, sending=True)
                    self.release()
                if reader.done() and not self._in_flight:
                    reader.result()  # a failure of the reader is the stream's failure
                    return
        finally:
            self._close()
            reader.cancel()

    async def _read(self, batches: AsyncIterator[kv_pb2.SessionBatch]) -> None:
        incoming = aiter(batches)
        try:
            while True:
                await self._room.wait()  # before reading: gRPC then stops taking the client's batches
                batch = await anext(incoming, None)
                if batch is None:
                    return
                self.take(batch)
        finally:
            self._wake.set()

    def _take_message(self) -> kv_pb2.SessionReplies:
        """Ready replies up to the batch bounds, at least one, as one message."""
        message, self._out = self._out, kv_pb2.SessionReplies()
        replies = message.replies
        if len(replies) > limits.MAX_SESSION_BATCH_REQUESTS or message.ByteSize() > limits.MAX_SESSION_BATCH_BYTES:
            count, size = 0, 0
            for reply in replies:
                size += reply.ByteSize() + 8  # and its field tag and length
                if count and (count >= limits.MAX_SESSION_BATCH_REQUESTS or size > limits.MAX_SESSION_BATCH_BYTES):
                    break
                count += 1
            self._out = kv_pb2.SessionReplies(replies=replies[count:])
            message = kv_pb2.SessionReplies(replies=replies[:count])
        size = message.ByteSize() if self._out.replies else self._queued_bytes
        size = min(size, self._queued_bytes)
        self._held_bytes(size, sending=True)
        self._held_bytes(-size)
        self._update_room()
        return message

    def _close(self) -> None:
        self._closed = True
        for deadlines in list(self._timers):
            deadlines.cancel()
        self._in_flight.clear()
        self._held.clear()
        for task in self._reads:
            task.cancel()
        self._budget.forget(self)
        self._budget.add(-self._queued_bytes - self._sending_bytes)
        self._queued_bytes = self._sending_bytes = 0
        self._budget.streams -= 1

    # ------------------------------------------------------------ the reply bounds

    def _held_bytes(self, delta: int, sending: bool = False) -> None:
        if self._closed:
            return  # _close gave back what the stream held
        if sending:
            self._sending_bytes += delta
        else:
            self._queued_bytes += delta
        self._budget.add(delta)

    def _has_room(self) -> bool:
        """Whether a read may be served now (it may overshoot the bounds by its own reply)."""
        if self._queued_bytes + self._sending_bytes >= limits.MAX_SESSION_REPLY_BYTES:
            return False
        if not self._budget.has_room():
            self._budget.wait(self)  # woken when any stream frees bytes
            return False
        return True

    def _update_room(self) -> None:
        """Read the client's next batch only while its replies fit and no read waits for room."""
        if (
            self._held
            or len(self._out.replies) >= limits.MAX_SESSION_IN_FLIGHT
            or self._queued_bytes + self._sending_bytes >= limits.MAX_SESSION_REPLY_BYTES
        ):
            self._room.clear()
        else:
            self._room.set()

    def release(self) -> None:
        """Serve the reads that waited for room, as far as there is room now."""
        while self._held and not self._closed and self._has_room():
            pending = self._held.popleft()
            if self._in_flight.get(pending.id) is pending:
                self._serve_now(pending)
        self._update_room()

    # ------------------------------------------------------------ a batch

    def take(self, batch: kv_pb2.SessionBatch) -> None:
        """Start every request of ``batch``; their replies arrive through ``serve``."""
        requests = batch.requests
        self.api.session_batch_requests.observe(len(requests))
        too_many = len(requests) > limits.MAX_SESSION_BATCH_REQUESTS
        if too_many or batch.ByteSize() > limits.MAX_SESSION_BATCH_BYTES:
            what = (
                f"{len(requests)} requests; the limit is {limits.MAX_SESSION_BATCH_REQUESTS}"
                if too_many
                else f"{batch.ByteSize()} bytes; the limit is {limits.MAX_SESSION_BATCH_BYTES}"
            )
            error = f"batch of {what}"
            self.api.client_refusals.note(self.peer, "session batch over the limit", error)
            # Only as many refusals as a batch may hold: the rest of a
            # hostile batch goes unanswered rather than growing the replies.
            for request in requests[: limits.MAX_SESSION_BATCH_REQUESTS]:
                self._refuse(request.id, kv_pb2.INVALID, error)
            return
        writes: list[_Pending] = []  # and registrations: both go to the replica, on one timer
        reads: list[_Pending] = []
        started, monotonic = time.perf_counter(), time.monotonic()
        for request in requests:
            pending = self._admit(request, started, monotonic)
            if pending is None:
                continue
            match pending.kind:
                case "write" | "register":
                    writes.append(pending)
                case "get":
                    self._start_read(pending, reads, get_error(request.get), request.get.consistency)
                case "iget":
                    self._start_read(pending, reads, image_get_error(request.iget), request.iget.consistency)
                case "status":
                    reply = self._reply(pending, kv_pb2.OK)
                    reply.status.CopyFrom(self.api.status())
                    self._held_bytes(reply.ByteSize() - SMALL_REPLY_BYTES)
                case _:
                    raise AssertionError(f"admitted a request of kind {pending.kind!r}")
        # All of the batch's writes enter the replica in this turn of the
        # loop, so they go out in one bundle with one fsync.
        if writes:
            _Deadlines(self, writes)
        for pending in writes:
            if pending.kind == "register":
                pending.registered = self.api.replica.register(functools.partial(self._register_done, pending))
            else:
                write = logcommand.from_client(pending.request.write.command)
                self.api.replica.write(write, functools.partial(self._write_done, pending))
        if reads:
            task = self._loop.create_task(self._read_together(reads))
            self._reads.add(task)
            task.add_done_callback(self._reads.discard)

    def _admit(self, request: kv_pb2.SessionRequest, started: float, monotonic: float) -> _Pending | None:
        kind = request.WhichOneof("kind")
        if kind is None:
            self._note_refusal(request.id, kv_pb2.INVALID, "request of no known kind", "no kind set")
            return None
        if request.id in self._in_flight:
            self._note_refusal(request.id, kv_pb2.INVALID, "request id reused", f"id {request.id} is in flight")
            return None
        if len(self._in_flight) + len(self._out.replies) >= limits.MAX_SESSION_IN_FLIGHT:
            self._note_refusal(
                request.id,
                kv_pb2.UNAVAILABLE,
                "too many requests in flight",
                f"the session has {limits.MAX_SESSION_IN_FLIGHT} requests in flight; retry later",
            )
            return None
        pending = self._in_flight[request.id] = _Pending(request.id, kind, request, started, monotonic)
        return pending

    def _start_read(self, pending: _Pending, reads: list[_Pending], error: str | None, consistency: int) -> None:
        if error:
            self._read_reply(pending, kv_pb2.INVALID, error=error)
        elif consistency == kv_pb2.LOCAL:
            self._serve_read(pending)
        else:
            reads.append(pending)

    async def _read_together(self, reads: list[_Pending]) -> None:
        """One lease check or read index for all of a batch's linearizable reads."""
        deadline = max(p.deadline for p in reads)
        status = await self.api.linearizable_read(deadline)
        hint = self.api.leader_hint() if status != kv_pb2.OK else ""
        for pending in reads:
            if self._in_flight.get(pending.id) is not pending:
                continue
            if status == kv_pb2.OK:
                self._serve_read(pending)
            else:
                self._read_reply(pending, status, leader_hint=hint)

    def _serve_read(self, pending: _Pending) -> None:
        """Answer a read from this server's state once its stream has room for the reply.

        A linearizable read waiting here stays linearizable: it is answered
        from a state at least as new as the one its read index confirmed.
        """
        if self._held or not self._has_room():
            self._held.append(pending)
            self._room.clear()
        else:
            self._serve_now(pending)

    def _serve_now(self, pending: _Pending) -> None:
        """Answer a read from this server's state, now (as ``serve_get`` and ``serve_image_get``)."""
        if pending.kind == "get":
            value = self.api.store.get(pending.request.get.key)
            reply = self._reply(pending, kv_pb2.OK)
            get = reply.get
            get.status = kv_pb2.OK
            if value is not None:
                get.found, get.value = True, value
        else:
            iget = serve_image_get(self.api, pending.request.iget)
            reply = self._reply(pending, kv_pb2.OK)
            reply.iget.CopyFrom(iget)
        self._held_bytes(reply.ByteSize() - SMALL_REPLY_BYTES)  # _add_reply counted it as small

    def _read_reply(self, pending: _Pending, status: kv_pb2.Status, error: str = "", leader_hint: str = "") -> None:
        reply = self._reply(pending, status)
        answer = reply.get if pending.kind == "get" else reply.iget
        answer.status = status
        if error:
            answer.error = error
        if leader_hint:
            answer.leader_hint = leader_hint

    def _write_done(self, pending: _Pending, answer: WriteAnswer) -> None:
        """Answer a write (as ``write_reply``), unless it was answered already (its deadline passed)."""
        if self._in_flight.get(pending.id) is not pending:
            return
        status = wire_status(answer.status)
        write = self._reply(pending, status).write
        write.status = status
        if answer.removed:
            write.removed = True
        if answer.error:
            write.error = answer.error
        if write_hints_leader(answer.status):
            write.leader_hint = self.api.leader_hint()

    def _register_done(self, pending: _Pending, answer: RegisterAnswer) -> None:
        """Answer a registration (as ``register_reply``), unless it was answered already."""
        if self._in_flight.get(pending.id) is not pending:
            return
        status = wire_status(answer.status)
        reply = self._reply(pending, status).register
        reply.status, reply.session_id = status, answer.session_id
        if answer.error:
            reply.error = answer.error
        if answer.status is Status.NOT_LEADER:
            reply.leader_hint = self.api.leader_hint()

    def _write_expired(self, pending: _Pending) -> None:
        if pending.kind == "register":
            # If it is chosen later, its session goes unused: a retry registers another.
            if pending.registered is not None:
                self.api.replica.forget_registration(pending.registered)
            self._register_done(pending, RegisterAnswer(Status.UNAVAILABLE, error="registration timed out; retry"))
            return
        # Proposed and not yet answered: it may still be chosen.
        self._write_done(pending, WriteAnswer(Status.UNKNOWN))

    # ------------------------------------------------------------ replies

    def _reply(self, pending: _Pending, status: int) -> kv_pb2.SessionReply:
        """The reply to ``pending``, with its id set and ready to go: the caller fills in the rest now.

        ``status`` is the reply's, for the metrics.
        """
        del self._in_flight[pending.id]
        if pending.deadlines is not None:
            pending.deadlines.answered()
        seconds = time.perf_counter() - pending.started
        self.api.note_request(_METHODS[pending.kind], _STATUS_NAMES.get(status, "ERROR"), seconds)
        return self._add_reply(pending.id)

    def _note_refusal(self, request_id: int, status: kv_pb2.Status, reason: str, error: str) -> None:
        self.api.client_refusals.note(self.peer, reason, error)
        self._refuse(request_id, status, f"{reason}: {error}")

    def _refuse(self, request_id: int, status: kv_pb2.Status, error: str) -> None:
        refused = self._add_reply(request_id).refused
        refused.status, refused.error = status, error

    def _add_reply(self, request_id: int) -> kv_pb2.SessionReply:
        """A new reply in the next message, to be filled in before the loop turns."""
        if self._closed:
            return kv_pb2.SessionReply()  # nobody to send it to
        reply = self._out.replies.add(id=request_id)
        self._held_bytes(SMALL_REPLY_BYTES)
        if len(self._out.replies) >= limits.MAX_SESSION_IN_FLIGHT:
            self._room.clear()  # the client is not reading: stop reading its batches
        self._wake.set()
        return reply


# A request that came through a session is counted under the method of its
# unary twin: the metrics (and the alerts on them) are about operations,
# whichever way they travel.
_METHODS = {"write": "Write", "get": "Get", "iget": "ImageGet", "status": "Status", "register": "Register"}
