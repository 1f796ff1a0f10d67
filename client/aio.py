"""The asyncio paxoskv client: ``from client import AsyncKVClient``.

``AsyncKVClient`` has the methods of ``KVClient``, as coroutines, and the
same semantics: it follows the leader, retries through leader changes until
its timeout as ``client.retry`` decides, tags each write with its session id
and a sequence number so that a retried write is applied at most once, and
raises ``UnknownOutcome`` only when a write may have been applied.

The session is registered with the cluster before the client's first write
(the cluster assigns its id) and kept for the client's life.  When the
cluster has evicted it (it keeps a bounded number), the write in question
raises ``SessionExpired``, an ``UnknownOutcome``, and the next write
registers a new session.  Reads need no session.

Its requests travel on one session stream per server (the KV ``Session``
RPC, see paxos/server/session.py), shared by every call of the client.  While one
message is being written to a stream, new requests queue, and everything
queued goes out together in the next message; a lone caller's request goes
out at once, with no timer waiting for company.  Replies come back batched
the same way, each naming the request it answers.  So many concurrent
callers cost the client and the servers a few messages, not a call each.

Ordering: a caller that awaits each operation before starting the next sees
its operations take effect in order; operations in flight together are
concurrent, as they would be on separate unary calls.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from client import members as membership
from client.attempts import Attempted, with_retry
from client.channel import open_channel
from client.checks import (
    backup_target,
    check_key,
    check_metadata,
    check_server,
    check_value,
    consistency_level,
    image_query,
)
from client.errors import InvalidRequest, KVError, SessionExpired, Unavailable
from client.outcomes import classify, describe, surely_not_delivered
from client.results import ImageMatch, unreachable_status
from client.retry import SECONDS, Attempt, KnownLeader, Outcome, Retry, Timing, outcome_of_status
from paxos.common import files, limits, snapshotfile
from paxos.common.hostfile import Member, parse_hostfile
from paxos.common.identity import format_id
from paxos.common.tlsfiles import KeyPair, admin_pair, client_credentials, find_tls_dir
from protos import kv_pb2, kv_pb2_grpc

if TYPE_CHECKING:
    from client.images import ImageSource

__all__ = ["AsyncKVClient"]

STATUS_SECONDS = 1.0
# A backup streams the whole state: it may take minutes for a large store.
BACKUP_SECONDS = 600.0

# How often sync_members asks again to promote a learner that is behind, and reports that it waits.
SYNC_RECHECK_SECONDS = 0.5
SYNC_REPORT_SECONDS = 5.0
# A membership change is answered once it is applied on the leader, which may take a few rounds.
CHANGE_ATTEMPT_SECONDS = 5.0
# How long a client waits before asking again where a leader it does not know is.
HINT_LOOKUP_SECONDS = 1.0
# How far the first_unacked a write carries may lag the lowest seq of the
# client's writes still open, beyond the number open.  A server drops a
# session's older results in a pass over all of them whenever first_unacked
# rises, so reporting it in steps makes that pass once a step instead of once
# a write, on every server, for up to a step more results kept.  A lower
# first_unacked is always safe: the servers only keep more.
FIRST_UNACKED_STEP = 64

R = TypeVar("R")  # what an operation returns


class _Session:
    """Sequence numbers of one client session: the next to use, and those of writes not yet answered."""

    def __init__(self, session_id: int) -> None:
        self.id = session_id
        self.next_seq = 1
        self.open: set[int] = set()
        self.first_unacked = 1  # the one the last write carried (AsyncKVClient._open_seq)


class _Request:
    """One request on a session stream, from queued to answered."""

    __slots__ = ("future", "message", "sent", "size")

    def __init__(self, message: kv_pb2.SessionRequest, future: asyncio.Future[kv_pb2.SessionReply]) -> None:
        self.message = message
        self.future = future
        self.size = message.ByteSize() + 8  # and its field tag and length in the batch
        self.sent = False


class _TimeUp(Exception):
    """A request's time ran out before its reply came."""


def _time_up(future: asyncio.Future[kv_pb2.SessionReply]) -> None:
    if not future.done():
        future.set_exception(_TimeUp())


class StreamBroken(Exception):
    """The session stream failed; ``sent`` says whether the request had gone out on it."""

    def __init__(self, error: grpc.RpcError | None, detail: str, sent: bool) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail
        self.sent = sent


class SessionStream:
    """One session stream to one server, shared by every call of a client."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._loop = asyncio.get_running_loop()
        self._call = kv_pb2_grpc.KVStub(channel).Session()
        self._ids = itertools.count(1)
        self._queue: collections.deque[_Request] = collections.deque()
        self._in_flight: dict[int, _Request] = {}
        self._wake = asyncio.Event()
        self.broken = False
        self._tasks = [asyncio.create_task(self._send()), asyncio.create_task(self._receive())]

    async def request(self, message: kv_pb2.SessionRequest, timeout: float) -> kv_pb2.SessionReply:
        """Send ``message`` (its id is set here) and wait up to ``timeout`` for its reply.

        Raises ``StreamBroken`` when the stream fails or the time is up; its
        ``sent`` says whether the request may have reached the server.
        """
        message.id = next(self._ids)
        message.timeout_ms = max(1, min(round(timeout * 1000), 2**32 - 1))
        future = self._loop.create_future()
        request = _Request(message, future)
        self._queue.append(request)
        self._wake.set()
        # One timer on the loop rather than a timeout context: it is set and
        # cancelled once per request, and a timeout context costs several
        # times as much.
        timer = self._loop.call_later(timeout, _time_up, future)
        try:
            return await future
        except _TimeUp:
            raise StreamBroken(None, "deadline exceeded", request.sent) from None
        finally:
            timer.cancel()
            # Given up on (its time is up, or its caller was cancelled): a
            # queued request is skipped by the sender, a late reply ignored.
            if not future.done():
                future.cancel()
            if future.cancelled() or isinstance(future.exception(), _TimeUp):
                self._in_flight.pop(message.id, None)

    async def _send(self) -> None:
        try:
            # Nothing is taken from the queue, and so nothing counts as sent,
            # before the call is connected: a request still queued when its
            # time is up (a refused or slow connection) surely never arrived.
            await self._call.wait_for_connection()
            while True:
                await self._wake.wait()
                self._wake.clear()
                while (batch := self._next_batch()) is not None:
                    await self._call.write(batch)
        except grpc.RpcError as exc:
            self._break(exc, describe(exc))
        except asyncio.InvalidStateError:  # the call ended: the receiver reports why
            self._break(None, "session stream closed")

    def _next_batch(self) -> kv_pb2.SessionBatch | None:
        """Everything queued that fits in one message and the in-flight bound, or None."""
        requests: list[kv_pb2.SessionRequest] = []
        size = 0
        while self._queue and len(self._in_flight) < limits.MAX_SESSION_IN_FLIGHT:
            request = self._queue[0]
            if request.future.done():  # its caller gave up before it was sent
                self._queue.popleft()
                continue
            if requests and (
                len(requests) >= limits.MAX_SESSION_BATCH_REQUESTS
                or size + request.size > limits.MAX_SESSION_BATCH_BYTES
            ):
                break
            self._queue.popleft()
            request.sent = True
            self._in_flight[request.message.id] = request
            requests.append(request.message)
            size += request.size
        return kv_pb2.SessionBatch(requests=requests) if requests else None

    async def _receive(self) -> None:
        try:
            while True:
                message = await self._call.read()
                if message is grpc.aio.EOF:
                    self._break(None, "the server ended the session stream")
                    return
                assert isinstance(message, kv_pb2.SessionReplies)
                for reply in message.replies:
                    request = self._in_flight.pop(reply.id, None)
                    if request is not None and not request.future.done():
                        request.future.set_result(reply)
                if self._queue:
                    self._wake.set()  # room in flight again
        except grpc.RpcError as exc:
            self._break(exc, describe(exc))

    def _break(self, error: grpc.RpcError | None, detail: str) -> None:
        """Fail every request waiting on this stream; a new one takes its place."""
        self.broken = True
        waiting = [*self._in_flight.values(), *self._queue]
        self._in_flight.clear()
        self._queue.clear()
        for request in waiting:
            if not request.future.done():
                request.future.set_exception(StreamBroken(error, detail, request.sent))
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self._call.cancel()

    async def close(self) -> None:
        self._break(None, "the client closed")
        await asyncio.gather(*self._tasks, return_exceptions=True)


class AsyncKVClient:
    """The paxoskv client for asyncio; see the module docstring.  Use it from one event loop."""

    def __init__(
        self,
        members: list[Member],
        timeout: float = 10.0,
        max_value_bytes: int = limits.DEFAULT_MAX_VALUE_BYTES,
        timing: Timing[float] = SECONDS,
        tls_dir: str | Path | None = None,
    ) -> None:
        """With ``tls_dir``: TLS, trusting its ca.pem and presenting its client.pem (``TlsError`` now if unreadable);
        changing the members and taking a backup present its admin.pem instead when it has one."""
        if not members:
            raise ValueError("a client needs at least one server address")
        # The servers this client sends to: those it was given, then those
        # it learns from the cluster's configuration (``_learn``).
        self.servers = list(members)
        self._by_name = {m.name: m for m in self.servers}
        self.timeout = timeout
        self.max_value_bytes = max_value_bytes
        self.timing = timing
        self._clock = time.monotonic  # the retry policy's clock (tests replace it, and _pause)
        self._session: _Session | None = None  # registered before the first write
        self._registering: asyncio.Future[_Session] | None = None  # shared by writes that wait for it
        self._leader: KnownLeader[Member] = KnownLeader()
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._hint_lookups: dict[str, float] = {}  # unknown leader names, when last asked where they are
        self._streams: dict[str, SessionStream] = {}
        self.tls_dir = tls_dir
        self._credentials = client_credentials(tls_dir) if tls_dir is not None else None
        self._admin: KeyPair | None = admin_pair(tls_dir) if tls_dir is not None else None
        self._admin_channels: dict[str, grpc.aio.Channel] = {}

    @classmethod
    def from_hostfile(cls, path: str | Path, timeout: float = 10.0, tls_dir: str | Path | None = None) -> AsyncKVClient:
        """As ``KVClient.from_hostfile``: TLS with ``tls_dir``, else $PAXOSKV_TLS_DIR, else a ``tls`` directory
        beside the hostfile when there is one, else plaintext."""
        return cls(parse_hostfile(path), timeout=timeout, tls_dir=find_tls_dir(path, tls_dir))

    async def __aenter__(self) -> AsyncKVClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        streams, self._streams = list(self._streams.values()), {}
        channels, self._channels = list(self._channels.values()), {}
        channels += self._admin_channels.values()
        self._admin_channels = {}
        for stream in streams:
            await stream.close()
        for channel in channels:
            await channel.close()

    # ------------------------------------------------------------- the API

    async def set(self, key: str, value: str) -> None:
        check_key(key)
        check_value(value, self.max_value_bytes)
        request = kv_pb2.SessionRequest()
        op = request.write.command.set  # filled in place: nested constructors would copy
        op.key, op.value = key, value
        await self._write(request)

    async def delete(self, key: str) -> bool:
        check_key(key)
        request = kv_pb2.SessionRequest()
        request.write.command.delete.key = key
        reply = await self._write(request)
        return reply.removed

    async def get(self, key: str, consistency: str = "linearizable") -> str | None:
        """The value of ``key``, or None; ``consistency="local"`` as in ``KVClient.get``."""
        check_key(key)
        level = consistency_level(consistency)
        request = kv_pb2.SessionRequest()
        request.get.key, request.get.consistency = key, level
        reply = (await self._retry(request, is_write=False, any_server=level == kv_pb2.LOCAL)).get
        return reply.value if reply.found else None

    async def iset(self, image: ImageSource, metadata: str) -> str:
        """Store ``metadata`` for a photo (a path or the file's bytes); returns its hash in hex."""
        from client import images

        check_metadata(metadata)
        # Decoding a photo takes a while: off the event loop, so other calls go on.
        hashes = await asyncio.to_thread(images.index_hashes, image)
        request = kv_pb2.SessionRequest()
        request.write.command.iset.hashes.extend(hashes)
        request.write.command.iset.metadata = metadata
        await self._write(request)
        return images.hash_hex(hashes[0])

    async def iget(
        self, image: ImageSource, max_distance: int | None = None, consistency: str = "linearizable"
    ) -> str | None:
        """The metadata of the stored photo nearest to ``image``, or None; as ``KVClient.iget``."""
        from client import images

        distance = images.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance
        found = await self.inearest(image, limit=1, max_distance=distance, consistency=consistency)
        return found[0].metadata if found else None

    async def inearest(
        self,
        image: ImageSource,
        limit: int = 5,
        max_distance: int | None = None,
        consistency: str = "linearizable",
    ) -> list[ImageMatch]:
        """Up to ``limit`` stored photos nearest to ``image``, nearest first; as ``KVClient.inearest``."""
        from client import images

        query = await asyncio.to_thread(image_query, image, limit, max_distance, consistency)
        request = kv_pb2.SessionRequest(iget=query)
        reply = (await self._retry(request, is_write=False, any_server=query.consistency == kv_pb2.LOCAL)).iget
        return [ImageMatch(images.hash_hex(m.hash), m.distance, m.metadata) for m in reply.matches]

    async def status(self) -> list[dict[str, object]]:
        """One entry per server in hostfile order; unreachable ones are 'down'."""
        return list(await asyncio.gather(*(self._probe(m) for m in self.servers)))

    async def _probe(self, member: Member) -> dict[str, object]:
        entry = unreachable_status(member)
        tried = await self._attempt(member, kv_pb2.SessionRequest(status=kv_pb2.StatusRequest()), STATUS_SECONDS)
        if tried.outcome is not Outcome.OK or tried.result is None:
            entry["error"] = tried.error  # not shown by status; says why, e.g. a TLS mismatch
        else:
            s = tried.result.status
            entry.update(
                reachable=True,
                role=s.role,
                leader=s.leader,
                ballot=s.ballot,
                commit_index=s.commit_index,
                applied_index=s.applied_index,
                version=s.version,
                uptime_seconds=round(s.uptime_seconds, 3),
                log_bytes=s.log_bytes,
                data_bytes=s.data_bytes,
                last_fsync_seconds=s.last_fsync_seconds,
                snapshot_index=s.snapshot_index,
                membership=s.membership,
                cluster_version=s.cluster_version,
                max_cluster_version=s.max_cluster_version,
                data_format=s.data_format,
            )
        return entry

    async def backup(
        self,
        path: str | Path,
        progress: Callable[[int, int], None] | None = None,
        timeout: float = BACKUP_SECONDS,
    ) -> int:
        """Write a consistent snapshot of the cluster to ``path``; as ``KVClient.backup``."""
        target = backup_target(path)
        # The file first: a place the backup cannot be written is the
        # caller's mistake, found before the cluster is asked for anything.
        try:
            out = await asyncio.to_thread(files.AtomicFile, target.parent, target.name, "a backup")
        except OSError as exc:
            raise InvalidRequest(f"cannot write a backup in {target.parent}: {exc.strerror or exc}") from None
        try:
            call, first = await self._open_backup(timeout)
        except BaseException:
            await asyncio.to_thread(out.abort)
            raise
        received = 0
        try:
            while True:
                chunk = await call.read()
                if chunk is grpc.aio.EOF:
                    break
                assert isinstance(chunk, kv_pb2.BackupChunk)
                await asyncio.to_thread(out.write, chunk.data)
                received += len(chunk.data)
                if progress is not None:
                    progress(received, max(first.estimated_bytes, received))
            await asyncio.to_thread(out.commit, snapshotfile.verify)
        except grpc.aio.AioRpcError as err:
            await asyncio.to_thread(out.abort)
            raise KVError(
                f"the backup was cut off after {received} bytes: {describe(err)}; nothing was written"
            ) from None
        except snapshotfile.SnapshotError as exc:
            raise KVError(f"the backup received does not check out ({exc}); nothing was written") from None
        except BaseException:
            await asyncio.to_thread(out.abort)
            raise
        return int(first.applied_index)

    async def _open_backup(self, timeout: float) -> tuple[Any, kv_pb2.BackupChunk]:
        """A backup stream from the leader and its first message, found as ``client.retry`` decides."""
        retry = Retry(
            self.servers, self._leader, self._clock(), self.timeout, self.timing, write=False, describe=_address
        )

        async def attempt(at: Attempt[Member, float]) -> Attempted[tuple[Any, kv_pb2.BackupChunk]]:
            channel, metadata = self._admin_channel(at.server)
            call = kv_pb2_grpc.KVStub(channel).Backup(kv_pb2.BackupRequest(), timeout=timeout, metadata=metadata)
            try:
                # Only the first message must come within the attempt's time.
                first = await asyncio.wait_for(call.read(), at.timeout)
            except TimeoutError:
                call.cancel()
                return Attempted(Outcome.MAYBE_DELIVERED, error="no answer in time")
            except grpc.aio.AioRpcError as err:
                _raise_if_not_admin(err)
                call.cancel()
                return Attempted(*classify(err))
            if first is grpc.aio.EOF:
                call.cancel()
                return Attempted(Outcome.UNAVAILABLE, error="the server sent no backup")
            assert isinstance(first, kv_pb2.BackupChunk)
            outcome, hint, error = classify(first)
            if outcome is not Outcome.OK:
                call.cancel()
                return Attempted(outcome, hint, error)
            # Its leader hint is not followed: the stream is open.
            return Attempted(Outcome.OK, result=(call, first))

        return await self._with_retry(retry, attempt)

    # ---------------------------------------------------------- membership

    async def members(self) -> list[membership.Member]:
        """The cluster's configuration in name order, as the leader knows it; as ``KVClient.members``."""
        view = await self._members_view(self._clock() + self.timeout, need_leader=False)
        return list(view.members)

    async def add_member(self, name: str, address: str) -> list[membership.Member]:
        """Add the server at ``address`` (started with ``--join``) as learner ``name``; as ``KVClient.add_member``."""
        target = check_server(name, address)
        deadline = self._clock() + self.timeout
        view = await self._members_view(deadline, need_leader=True)
        membership.check_addition(view, target.name, target.address)
        member_id = await self._joining_id(target, view, deadline)
        return await self._change(membership.Step("add", target.name, target.address), member_id, deadline)

    async def promote_member(self, name: str) -> list[membership.Member]:
        """Make learner ``name`` a voter; as ``KVClient.promote_member``."""
        deadline = self._clock() + self.timeout
        view = await self._members_view(deadline, need_leader=True)
        membership.check_promotion(view, name)
        return await self._change(membership.Step("promote", name), 0, deadline)

    async def remove_member(self, name: str) -> list[membership.Member]:
        """Remove member ``name``; as ``KVClient.remove_member``."""
        deadline = self._clock() + self.timeout
        view = await self._members_view(deadline, need_leader=True)
        await self._check_removal(view, name)
        return await self._change(membership.Step("remove", name), 0, deadline)

    async def sync_members(
        self,
        hostfile: str | Path | Sequence[Member],
        timeout: float = membership.SYNC_SECONDS,
        progress: Callable[[str], None] | None = None,
    ) -> list[membership.Member]:
        """Change the configuration, a step at a time, to exactly ``hostfile``'s servers; see ``KVClient``."""
        targets = parse_hostfile(hostfile) if isinstance(hostfile, str | Path) else list(hostfile)
        say = progress or _quiet
        deadline = self._clock() + timeout
        view: membership.View | None = None
        problem = ""  # why the latest step did not go through, for the timeout's message
        steps_made = 0
        waiting: tuple[membership.Step, float] | None = None  # the step being waited for, and when last reported
        while True:
            try:
                view = await self._members_view(deadline, need_leader=True)
            except KVError as exc:  # the leader's view is read until the deadline
                raise _sync_timeout(timeout, view, problem or str(exc)) from None
            step = membership.next_step(view, targets)
            if step is None:
                done = "the configuration matches the hostfile" if steps_made else "nothing to do: already in sync"
                say(f"{done}: {view.describe()}")
                return list(view.members)
            member_id = 0
            try:
                if step.kind == "add":
                    member_id = await self._joining_id(check_server(step.name, step.address), view, deadline)
                elif step.kind == "remove":
                    await self._check_removal(view, step.name)
            except InvalidRequest:
                raise
            except KVError as exc:  # the new server did not answer before the deadline
                raise _sync_timeout(timeout, view, str(exc)) from None
            if waiting is None or waiting[0] != step:
                say(step.describe())
            try:
                await self._change(step, member_id, deadline)
            except InvalidRequest as exc:
                if not membership.passing_refusal(str(exc)):
                    raise
                problem = str(exc)
                now = self._clock()
                if waiting is None or waiting[0] != step or now - waiting[1] >= SYNC_REPORT_SECONDS:
                    say(f"waiting: {exc}")
                    waiting = (step, now)
                await self._pause(min(SYNC_RECHECK_SECONDS, max(deadline - now, 0)))
                continue
            except KVError as exc:  # Unavailable or UnknownOutcome: the deadline has passed
                raise _sync_timeout(timeout, view, str(exc)) from None
            waiting, problem = None, ""
            steps_made += 1
            say(step.done())

    async def _members_view(self, deadline: float, need_leader: bool) -> membership.View:
        """The leader's answer to ``Members``, following redirects until ``deadline``.

        Without ``need_leader``, when every server has been tried and none
        says it leads, the first answer will do.
        """
        now = self._clock()
        timeout = max(deadline - now, 0)
        retry = Retry(self.servers, self._leader, now, timeout, self.timing, write=False, describe=_address)
        first: membership.View | None = None

        async def attempt(at: Attempt[Member, float]) -> Attempted[membership.View]:
            nonlocal first
            stub = kv_pb2_grpc.KVStub(self._channel(at.server))
            try:
                reply = await stub.Members(kv_pb2.MembersRequest(), timeout=at.timeout)
            except grpc.aio.AioRpcError as err:
                return Attempted(*classify(err))
            # A MembersReply has no error text.
            outcome, hint = outcome_of_status(reply.status), reply.leader_hint
            self._learn(reply.members, retry)
            if outcome is not Outcome.OK:
                return Attempted(outcome, hint)
            view = membership.view_of(reply, at.server.name)
            if view.from_leader:
                return Attempted(Outcome.OK, result=view)
            first = first or view
            if not need_leader and set(retry.servers) <= set(retry.tried):
                return Attempted(Outcome.NOT_LEADER, result=first, final=True)
            leader = view.leader
            hint = hint or (leader.name if leader else "")
            return Attempted(Outcome.NOT_LEADER, hint, "answered with a follower's view")

        def give_up() -> membership.View:
            if first is not None and not need_leader:
                return first
            raise retry.give_up()

        return await self._with_retry(retry, attempt, give_up=give_up)

    async def _change(self, step: membership.Step, member_id: int, deadline: float) -> list[membership.Member]:
        """Ask the leader for ``step``; the configuration after it.

        An attempt that may have reached the leader and is then refused (the
        change came in twice) counts as done when the leader's view shows it.
        """
        request = step.request(member_id)
        now = self._clock()
        timing = dataclasses.replace(self.timing, attempt=CHANGE_ATTEMPT_SECONDS)
        retry = Retry(self.servers, self._leader, now, max(deadline - now, 0), timing, write=True, describe=_address)

        async def attempt(at: Attempt[Member, float]) -> Attempted[kv_pb2.ChangeMembersReply | membership.View]:
            channel, metadata = self._admin_channel(at.server)
            try:
                reply = await kv_pb2_grpc.KVStub(channel).ChangeMembers(request, timeout=at.timeout, metadata=metadata)
            except grpc.aio.AioRpcError as err:
                _raise_if_not_admin(err)
                return Attempted(*classify(err))
            outcome, hint, error = classify(reply)
            self._learn(reply.members, retry)
            return Attempted(outcome, hint, error, reply)

        async def refused(exc: InvalidRequest) -> membership.View | None:
            """The leader's view when it shows the change made by an earlier attempt; None to ask again."""
            if not retry.ambiguous:
                raise exc
            view = await self._members_view(max(deadline, self._clock() + STATUS_SECONDS), need_leader=True)
            if _in_effect(step, view):
                return view
            if "not finished" not in str(exc):  # else it may be this very change, still in flight
                raise exc
            return None

        done = await self._with_retry(retry, attempt, refused=refused)
        if isinstance(done, membership.View):
            return list(done.members)
        if done.members:
            return sorted((membership.member_of(m) for m in done.members), key=lambda m: m.name)
        return list((await self._members_view(self._clock() + self.timeout, need_leader=False)).members)

    async def _joining_id(self, target: Member, view: membership.View, deadline: float) -> int:
        """The member id of the server at ``target.address``, once it shows it is waiting to join this cluster."""
        cluster_id = view.cluster_id or await self._cluster_id(view)
        error = "no attempt made"
        channel = self._new_channel(target.address)  # not a member yet: a channel apart from the members'
        try:
            while (left := deadline - self._clock()) > 0:
                try:
                    status = await kv_pb2_grpc.KVStub(channel).Status(
                        kv_pb2.StatusRequest(), timeout=min(STATUS_SECONDS, left)
                    )
                except grpc.aio.AioRpcError as err:
                    error = describe(err)
                    await self._pause(min(self.timing.error_backoff * 10, max(deadline - self._clock(), 0)))
                    continue
                return _check_joining(target, status, cluster_id)
        finally:
            await channel.close()
        raise Unavailable(
            f"{target.name} at {target.address} does not answer ({error}); start it first with: "
            f"python -m paxos -h HOSTFILE -n {target.name} --data-dir DIR --join"
        )

    async def _cluster_id(self, view: membership.View) -> int:
        """The cluster id from a member's status, for a view that did not carry it."""
        for member in sorted(view.members, key=lambda m: not m.leader):
            status = await self._node_status(member.address)
            if status is not None and status.cluster_id:
                return int(status.cluster_id)
        raise Unavailable("no member reports the cluster id; try again")

    async def _check_removal(self, view: membership.View, name: str) -> None:
        """Refuse to remove ``name`` when the voters left, of those answering now, could not form a quorum."""
        left = membership.remaining_voters(view, name)
        statuses = await asyncio.gather(*(self._node_status(m.address) for m in left))
        answering = {m.name for m, s in zip(left, statuses, strict=True) if s is not None and s.membership != "removed"}
        membership.check_quorum_after_removal(name, left, answering)

    async def _node_status(self, address: str) -> kv_pb2.NodeStatus | None:
        """The server's status, or None when it does not answer within ``STATUS_SECONDS``.

        On a channel of its own: a shared one may still be waiting out its
        reconnection backoff after the server came back, and this asks "now".
        """
        channel = self._new_channel(address)
        try:
            status = await kv_pb2_grpc.KVStub(channel).Status(kv_pb2.StatusRequest(), timeout=STATUS_SECONDS)
        except grpc.aio.AioRpcError:
            return None
        finally:
            await channel.close()
        assert isinstance(status, kv_pb2.NodeStatus)
        return status

    def _learn(self, infos: Iterable[kv_pb2.MemberInfo], retry: Retry[Member, float] | None = None) -> None:
        """Members a server reported that this client did not know join the servers it sends to."""
        learned = []
        for info in infos:
            if info.name in self._by_name or not info.address:
                continue
            try:
                server = check_server(info.name, info.address)
            except InvalidRequest:  # not an address this client can dial
                continue
            self._by_name[server.name] = server
            self.servers.append(server)
            learned.append(server)
        if learned and retry is not None:
            retry.add_servers(learned)

    async def _resolve_hint(self, hint: str, server: Member, retry: Retry[Member, float]) -> None:
        """A leader ``server`` names that this client does not know: ask ``server`` where it is."""
        if not hint or hint in self._by_name:
            return
        now = self._clock()
        if now - self._hint_lookups.get(hint, -HINT_LOOKUP_SECONDS) < HINT_LOOKUP_SECONDS:
            return  # asked lately: the answer did not name it
        self._hint_lookups[hint] = now
        try:
            reply = await kv_pb2_grpc.KVStub(self._channel(server)).Members(
                kv_pb2.MembersRequest(), timeout=STATUS_SECONDS
            )
        except grpc.aio.AioRpcError:
            return
        self._learn(reply.members, retry)

    # ----------------------------------------------------------- machinery

    @property
    def session_id(self) -> int | None:
        """The session this client's writes go in, once registered."""
        return self._session.id if self._session is not None else None

    async def _write(self, request: kv_pb2.SessionRequest) -> kv_pb2.WriteReply:
        """Send ``request``, whose write command has its operation set, numbered in the client's session."""
        session = await self._current_session()
        session, seq, first_unacked = self._open_seq(session)
        try:
            cmd = request.write.command
            cmd.session_id, cmd.seq, cmd.first_unacked = session.id, seq, first_unacked
            return (await self._retry(request, is_write=True)).write
        except SessionExpired:
            if self._session is session:
                self._session = None  # the next write registers a new one
            raise
        finally:
            session.open.discard(seq)

    async def _current_session(self) -> _Session:
        """The session for a new write: the current one while its window has room, else a newly registered one.

        Writes that need a new session at the same time wait for one registration.
        """
        while True:
            session = self._session
            if session is not None and not self._window_full(session):
                return session
            if self._registering is None or self._registering.done():
                self._registering = asyncio.ensure_future(self._register())
            new = await asyncio.shield(self._registering)
            if self._session is session:
                self._session = new

    async def _register(self) -> _Session:
        """A new session, registered through the cluster's log (not a write: a retry only wastes a session)."""
        request = kv_pb2.SessionRequest()
        request.register.SetInParent()
        reply = await self._retry(request, is_write=False)
        if not reply.register.session_id:
            raise Unavailable("the server answered the registration without a session id; nothing was written")
        return _Session(reply.register.session_id)

    @staticmethod
    def _window_full(session: _Session) -> bool:
        return session.next_seq - min(session.open, default=session.next_seq) >= limits.SESSION_WINDOW - 1

    def _open_seq(self, session: _Session) -> tuple[_Session, int, int]:
        """A sequence number for a new write, in a session whose window has room, and the first_unacked to send.

        The first_unacked sent is at most the lowest seq still open, so the
        servers never drop a result a retry may need; it is brought up to
        that lowest seq only once it lags by ``FIRST_UNACKED_STEP`` beyond
        the writes open, or when the window depends on it.
        """
        behind = session.next_seq - session.first_unacked
        if behind >= FIRST_UNACKED_STEP + len(session.open) or behind >= limits.SESSION_WINDOW - 1:
            session.first_unacked = min(session.open, default=session.next_seq)
        assert session.next_seq - session.first_unacked < limits.SESSION_WINDOW - 1, "session window full"
        seq = session.next_seq
        session.next_seq += 1
        session.open.add(seq)
        return session, seq, session.first_unacked

    async def _retry(
        self, request: kv_pb2.SessionRequest, is_write: bool, any_server: bool = False
    ) -> kv_pb2.SessionReply:
        """Send ``request`` to the servers as ``client.retry`` decides, until it succeeds or time is up."""
        retry = Retry(
            self.servers,
            self._leader,
            self._clock(),
            self.timeout,
            self.timing,
            write=is_write,
            any_server=any_server,
            describe=_address,
        )

        async def attempt(at: Attempt[Member, float]) -> Attempted[kv_pb2.SessionReply]:
            return await self._attempt(at.server, request, at.timeout)

        return await self._with_retry(retry, attempt)

    async def _with_retry(
        self,
        retry: Retry[Member, float],
        attempt: Callable[[Attempt[Member, float]], Awaitable[Attempted[R]]],
        refused: Callable[[InvalidRequest], Awaitable[R | None]] | None = None,
        give_up: Callable[[], R] | None = None,
    ) -> R:
        """Run one operation's attempts under ``retry``, with this client's clock, pauses and leader lookups."""
        return await with_retry(
            retry,
            attempt,
            leader_named=self._by_name.get,
            clock=self._clock,
            pause=self._pause,
            follow_hint=self._resolve_hint,
            refused=refused,
            give_up=give_up,
        )

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def _attempt(
        self, member: Member, request: kv_pb2.SessionRequest, timeout: float
    ) -> Attempted[kv_pb2.SessionReply]:
        """One attempt of ``request`` at ``member``, on its session stream.

        Each attempt gives ``request`` an id of its own.  It is not copied:
        once an attempt is over, its stream skips it if still queued, and a
        batch that carried it holds a copy of its own.
        """
        try:
            reply = await self._stream(member).request(request, timeout)
        except StreamBroken as exc:
            surely_not = not exc.sent or (exc.error is not None and surely_not_delivered(exc.error))
            return Attempted(Outcome.NOT_DELIVERED if surely_not else Outcome.MAYBE_DELIVERED, error=exc.detail)
        which = reply.WhichOneof("kind")
        if which == "refused":
            return Attempted(outcome_of_status(reply.refused.status), error=reply.refused.error)
        if which == "status":
            return Attempted(Outcome.OK, result=reply)
        answer: kv_pb2.WriteReply | kv_pb2.GetReply | kv_pb2.ImageGetReply | kv_pb2.RegisterReply
        if which == "register":
            answer = reply.register
        elif which == "write":
            answer = reply.write
        elif which == "get":
            answer = reply.get
        elif which == "iget":
            answer = reply.iget
        else:  # a reply of a kind this client does not know: taken as a refusal
            return Attempted(Outcome.UNAVAILABLE, error=f"reply of unknown kind {which!r}")
        return Attempted(outcome_of_status(answer.status), answer.leader_hint, answer.error, reply)

    def _stream(self, member: Member) -> SessionStream:
        stream = self._streams.get(member.address)
        if stream is None or stream.broken:
            stream = self._streams[member.address] = SessionStream(self._channel(member))
        return stream

    def _channel(self, member: Member) -> grpc.aio.Channel:
        return self._channel_to(member.address)

    def _channel_to(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = self._new_channel(address)
        return channel

    def _admin_channel(self, member: Member) -> tuple[grpc.aio.Channel, list[tuple[str, str | bytes]] | None]:
        """A channel to ``member`` for a call only the admin may make, and the call's metadata.

        With admin.pem in the TLS directory the channel presents it, and the
        metadata carries its signature for ``member`` (the proof a server
        under ``--client-auth none``, which asks for no certificate, checks).
        Without it, the client's own channel: the server refuses the call.
        """
        if self._admin is None:
            return self._channel(member), None
        channel = self._admin_channels.get(member.address)
        if channel is None:
            channel = open_channel(member.address, self._admin.channel_credentials())
            self._admin_channels[member.address] = channel
        from paxos.common.proofs import admin_proof  # cryptography: loaded only for the admin's calls

        return channel, admin_proof(self._admin, member.name, time.time())

    def _new_channel(self, address: str) -> grpc.aio.Channel:
        """A channel of its own to ``address``, with this client's TLS settings."""
        return open_channel(address, self._credentials)


def _address(member: Member) -> str:
    return member.address


def _raise_if_not_admin(err: grpc.aio.AioRpcError) -> None:
    """A call only the admin may make, refused for want of its certificate: no retry can help."""
    if err.code() == grpc.StatusCode.PERMISSION_DENIED:
        raise InvalidRequest(f"the server refused: {err.details()}") from None


def _quiet(message: str) -> None:
    """The default ``progress`` of ``sync_members``: say nothing."""


def _check_joining(target: Member, status: kv_pb2.NodeStatus, cluster_id: int) -> int:
    """The member id of a server waiting to join cluster ``cluster_id``; ``InvalidRequest`` for any other."""
    where = f"the server at {target.address}"
    if status.name and status.name != target.name:
        raise InvalidRequest(f"{where} is named {status.name!r}, not {target.name!r}")
    if status.membership != membership.JOINING:
        if status.membership in ("member", "learner"):
            why = "it is already a member of a cluster"
        elif status.membership == "removed":
            why = "it was removed from its cluster; start it afresh, with an empty data dir and --join"
        else:
            why = "it was not started with --join"
        raise InvalidRequest(f"{where} reports membership {status.membership or 'unknown'!r}, not 'joining': {why}")
    if status.cluster_id != cluster_id:
        raise InvalidRequest(
            f"{where} is joining cluster {format_id(status.cluster_id)}, not this one ({format_id(cluster_id)}): "
            "give it this cluster's hostfile"
        )
    if not status.member_id:
        raise InvalidRequest(f"{where} reports no member id")
    return int(status.member_id)


def _in_effect(step: membership.Step, view: membership.View) -> bool:
    """Whether the configuration in ``view`` already shows ``step`` made."""
    member = view.find(step.name)
    if step.kind == "add":
        return member is not None and member.address == step.address
    if step.kind == "promote":
        return member is not None and member.voter
    return member is None


def _sync_timeout(timeout: float, view: membership.View | None, problem: str) -> membership.SyncTimeout:
    now = f"; the configuration is {view.describe()} (each step is whole, so it is a valid one)" if view else ""
    return membership.SyncTimeout(
        f"the configuration does not match the hostfile after {timeout:g}s (last: {problem}){now}; "
        "run sync again to go on"
    )
