"""A paxoskv server: the consensus core wired to gRPC, the log and the store.

Data flows one way:  client request -> core (leader) -> accepts to peers
while the log is fsynced -> chosen -> state machine -> reply.  One asyncio
task (``_drive``) owns the order of effects: it takes the core's ``Ready``
bundle, sends its early messages, makes its records durable, and only then
sends its other messages, applies its chosen slots and answers its reads.
While one fsync runs, new input piles up in the core and goes out in the
next bundle, so many commands share one fsync.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from paxos import limits
from paxos.codec import DecodeError, decode, encode
from paxos.core import Config, Node, Role
from paxos.datadir import LOCK_FILE, DataDirError, lock_data_dir
from paxos.hostfile import Member
from paxos.messages import Message, Ready
from paxos.statemachine import Result, StateMachine, validate_command, validate_image_hash, validate_key
from paxos.wal import Wal
from protos import kv_pb2, kv_pb2_grpc, peer_pb2, peer_pb2_grpc

log = logging.getLogger("paxos.server")

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Accept the peers' keepalive pings on idle streams instead of answering
    # them with GOAWAY "too_many_pings".
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# gRPC binds listeners with SO_REUSEPORT by default, so a second server on the
# same port would start and share the traffic; binding exclusively makes it fail.
GRPC_SERVER_OPTIONS = [*GRPC_OPTIONS, ("grpc.so_reuseport", 0)]
# How long a write or read waits in the server when the client set no deadline.
DEFAULT_REQUEST_SECONDS = 10.0
META_FILE = "paxoskv-meta.json"


def check_data_dir(data_dir: Path, name: str, members: list[Member]) -> None:
    """Stamp a new data dir with its owner; refuse one made for another."""
    data_dir.mkdir(parents=True, exist_ok=True)
    meta_path = data_dir / META_FILE
    cluster = sorted(m.name for m in members)
    if not meta_path.exists():
        if any(p.name != LOCK_FILE for p in data_dir.iterdir()):
            raise DataDirError(f"{data_dir} is not empty and holds no {META_FILE}; refusing to use it as a data dir")
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"name": name, "cluster": cluster}) + "\n")
        os.replace(tmp, meta_path)
        return
    meta = json.loads(meta_path.read_text())
    if meta.get("name") != name:
        raise DataDirError(
            f"{data_dir} belongs to server {meta.get('name')!r}, not {name!r}; pass that server's own --data-dir"
        )
    if meta.get("cluster") != cluster:
        raise DataDirError(
            f"{data_dir} was created for a cluster of {meta.get('cluster')}, but the hostfile lists {cluster}; "
            "use a fresh --data-dir for a new cluster"
        )


@dataclass
class _Waiter:
    future: asyncio.Future[Result]


class PaxosServer:
    def __init__(
        self,
        members: list[Member],
        node_id: int,
        data_dir: Path,
        max_value_bytes: int = limits.DEFAULT_MAX_VALUE_BYTES,
        fault_injection: bool = False,
        config: Config | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.members = members
        self.node_id = node_id
        self.me = members[node_id]
        self.max_value_bytes = max_value_bytes
        self.fault_injection = fault_injection
        with ExitStack() as undo:  # a server that fails to open releases what it took
            self._data_dir_lock = lock_data_dir(data_dir)
            undo.callback(self._data_dir_lock.release)
            check_data_dir(data_dir, self.me.name, members)
            self.wal, durable = Wal.open(data_dir / "wal")
            undo.callback(self.wal.close)
            self.core = Node(node_id, len(members), random.Random(os.urandom(16)), config, durable)
            undo.pop_all()
        self.store = StateMachine(max_value_bytes)
        self._wal_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal")
        self._writes: dict[tuple[str, int], list[asyncio.Future[Result]]] = {}
        self._reads: dict[int, asyncio.Future[int]] = {}
        self._index_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._next_read_id = 0
        self._now = clock  # for the core's clock; tests pass their own
        self._clock = clock()  # the core's clock has run up to here
        self._wake = asyncio.Event()
        self.failed = asyncio.Event()  # set when an internal task died
        self._seen_role: tuple[Role, int | None] = (Role.FOLLOWER, None)
        self._links: dict[int, _PeerLink] = {}
        self._blocked: set[int] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: grpc.aio.Server | None = None
        self.health = health_aio.HealthServicer()

    # ------------------------------------------------------------- lifecycle

    async def start(self, listen: str) -> None:
        self._grpc = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
        kv_pb2_grpc.add_KVServicer_to_server(_KVService(self), self._grpc)
        peer_pb2_grpc.add_PeerServicer_to_server(_PeerService(self), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        try:
            port = self._grpc.add_insecure_port(listen)
        except RuntimeError:  # what grpcio raises, without the reason, when the bind fails
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {listen}: {_bind_failure(listen)}")
        for peer in self.core.peers:
            self._links[peer] = _PeerLink(self.members[peer])
        await self._grpc.start()
        self._tasks = [asyncio.create_task(self._drive()), asyncio.create_task(self._ticker())]
        self._tasks += [asyncio.create_task(link.run()) for link in self._links.values()]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        await _set_health(self.health, health_pb2.HealthCheckResponse.SERVING)
        self._wake.set()
        log.info("%s listening on %s (%d servers in the cluster)", self.me.name, listen, len(self.members))

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        # Every task runs forever; one that ends on its own is a bug, and a
        # server that silently stopped driving its core must not linger.
        if task.cancelled():
            return
        exc = task.exception()
        log.critical("internal task %s stopped: %r; shutting down", task.get_coro(), exc, exc_info=exc)
        self.failed.set()

    async def stop(self) -> None:
        await _set_health(self.health, health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self._links.values():
            await link.close()
        self._wal_thread.submit(self.wal.close).result()
        self._wal_thread.shutdown()
        self._data_dir_lock.release()

    async def wait(self) -> None:
        assert self._grpc is not None
        await self._grpc.wait_for_termination()

    # ----------------------------------------------------- driving the core

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(limits.TICK_SECONDS)
            self._advance_clock()
            self._wake.set()

    def _advance_clock(self) -> None:
        """Run the core's clock up to now.

        Called by the ticker, and before the core sees a peer message or a
        read: after a stall the event loop may serve those before the ticker,
        and the read lease and leader stickiness need the real elapsed time.
        """
        now = self._now()
        ticks = int((now - self._clock) / limits.TICK_SECONDS)
        if ticks <= 0:
            return
        if ticks > limits.MAX_CATCHUP_TICKS:
            ticks, self._clock = limits.MAX_CATCHUP_TICKS, now
        else:
            self._clock += ticks * limits.TICK_SECONDS
        for _ in range(ticks):
            self.core.tick()

    async def _drive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            ready = self.core.ready()
            self._log_role_change()
            if ready.empty():
                continue
            self._send(ready.early)
            if ready.persist:
                self.wal.append(ready.persist)
            if ready.must_sync() and self.wal.unsynced():
                await loop.run_in_executor(self._wal_thread, self.wal.sync)
            self._act(ready)
            if self.core.awaits_own_accepts():
                self._wake.set()  # they are durable now: let the core count them

    def _log_role_change(self) -> None:
        seen = (self.core.role, self.core.leader)
        if seen == self._seen_role:
            return
        self._seen_role = seen
        role, leader = seen
        if role is Role.LEADER:
            log.info("became leader with ballot %s (commit index %d)", self.core.ballot, self.core.commit_index)
        elif role is Role.CANDIDATE:
            log.info("no leader heard; running phase 1 with ballot %s", self.core.ballot)
        elif leader is not None:
            log.info("following %s (ballot %s)", self.members[leader].name, self.core.ballot)
        else:
            log.info("no leader known")

    def _send(self, messages: list[tuple[int, Message]]) -> None:
        # A broadcast is one message object sent to every peer: encode it once.
        encoded: dict[int, peer_pb2.PeerMessage] = {}
        for to, msg in messages:
            if to not in self._blocked:
                wire = encoded.get(id(msg))
                if wire is None:
                    wire = encoded[id(msg)] = encode(msg)
                self._links[to].send(wire)

    def _act(self, ready: Ready) -> None:
        self._send(ready.messages)
        for slot, value in ready.committed:
            for result in self.store.apply(slot, value):
                self._finish_write(result)
        for read_id, read_index in ready.reads:
            future = self._reads.pop(read_id, None)
            if future is not None and not future.done():
                future.set_result(read_index)
        self._release_index_waiters()
        if ready.lost_leadership:
            log.info(
                "lost leadership; %d writes and %d reads waiting here are told to retry",
                len(self._writes),
                len(self._reads),
            )
            self._fail_pending("leadership lost")

    def _finish_write(self, result: Result) -> None:
        for future in self._writes.pop((result.client_id, result.seq), []):
            if not future.done():
                future.set_result(result)

    def _fail_pending(self, why: str) -> None:
        for futures in self._writes.values():
            for future in futures:
                if not future.done():
                    future.set_exception(_LostLeadership(why))
        self._writes.clear()
        for read in self._reads.values():
            if not read.done():
                read.set_exception(_LostLeadership(why))
        self._reads.clear()

    def _release_index_waiters(self) -> None:
        applied = self.store.applied_index
        keep = []
        for index, future in self._index_waiters:
            if index <= applied:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((index, future))
        self._index_waiters = keep

    async def _wait_applied(self, index: int) -> None:
        if index <= self.store.applied_index:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._index_waiters.append((index, future))
        await future

    # ------------------------------------------------------ peer messages in

    def receive_peer(self, raw: peer_pb2.PeerMessage) -> None:
        try:
            msg = decode(raw, len(self.members))
        except DecodeError as exc:
            log.warning("dropped a malformed peer message: %s", exc)
            return
        if msg.sender == self.node_id or msg.sender in self._blocked:
            return
        self._advance_clock()
        self.core.receive(msg)
        self._wake.set()

    def set_partition(self, names: list[str]) -> None:
        index = {m.name: i for i, m in enumerate(self.members)}
        self._blocked = {index[n] for n in names if n in index}
        log.warning("fault injection: blocking traffic with %s", sorted(names))

    # ------------------------------------------------------- client requests

    def leader_hint(self) -> str:
        leader = self.core.leader
        return self.members[leader].name if leader is not None else ""

    async def write(self, cmd: kv_pb2.Command, deadline: float) -> kv_pb2.WriteReply:
        error = validate_command(cmd, self.max_value_bytes)
        if error:
            return kv_pb2.WriteReply(status=kv_pb2.INVALID, error=error)
        if not self.core.is_leader():
            return kv_pb2.WriteReply(status=kv_pb2.NOT_LEADER, leader_hint=self.leader_hint())
        cached = self.store.cached_result(cmd.client_id, cmd.seq)
        if cached is not None:
            return _write_reply(cached)
        key = (cmd.client_id, cmd.seq)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        first = key not in self._writes
        self._writes.setdefault(key, []).append(future)
        if first and not self.core.propose(cmd.SerializeToString()):
            self._writes.pop(key, None)
            return kv_pb2.WriteReply(status=kv_pb2.UNAVAILABLE, error="leader is overloaded; retry later")
        self._wake.set()
        try:
            result = await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
        except (TimeoutError, _LostLeadership):
            return kv_pb2.WriteReply(status=kv_pb2.UNKNOWN, leader_hint=self.leader_hint())
        return _write_reply(result)

    async def linearizable_read(self, deadline: float) -> kv_pb2.Status:
        """Wait until a read may be served here; the status to reply with."""
        if not self.core.is_leader():
            return kv_pb2.NOT_LEADER
        self._advance_clock()
        index = self.core.lease_read_index()
        if index is not None and index <= self.store.applied_index:
            return kv_pb2.OK  # answered under the lease, no round needed
        self._next_read_id += 1
        read_id = self._next_read_id
        if not self.core.read(read_id):
            return kv_pb2.UNAVAILABLE
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._reads[read_id] = future
        self._wake.set()
        try:
            read_index = await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
            await asyncio.wait_for(self._wait_applied(read_index), max(deadline - time.monotonic(), 0.001))
        except _LostLeadership:
            return kv_pb2.NOT_LEADER
        except TimeoutError:
            self._reads.pop(read_id, None)
            return kv_pb2.UNAVAILABLE
        return kv_pb2.OK

    def status(self) -> kv_pb2.NodeStatus:
        return kv_pb2.NodeStatus(
            name=self.me.name,
            address=self.me.address,
            role=self.core.role.value,
            leader=self.leader_hint(),
            ballot=str(self.core.ballot),
            commit_index=self.core.commit_index,
            applied_index=self.store.applied_index,
        )


class _LostLeadership(Exception):
    pass


def _write_reply(result: Result) -> kv_pb2.WriteReply:
    if not result.ok:
        return kv_pb2.WriteReply(status=kv_pb2.INVALID, error=result.error)
    return kv_pb2.WriteReply(status=kv_pb2.OK, removed=result.removed)


def _deadline(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    if remaining is None or remaining > DEFAULT_REQUEST_SECONDS:
        remaining = DEFAULT_REQUEST_SECONDS
    return time.monotonic() + remaining


async def _set_health(servicer: health_aio.HealthServicer, status: int) -> None:
    await servicer.set("", status)


def _bind_failure(listen: str) -> str:
    """Why gRPC could not bind ``listen``, found by trying a plain socket the same way."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        addresses = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (ValueError, OSError) as exc:
        return f"not a usable HOST:PORT ({exc})"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return "address in use (is another server listening on that port?)"
                return exc.strerror or str(exc)
    return "gRPC refused it (GRPC_VERBOSITY=debug tells why)"


class _KVService(kv_pb2_grpc.KVServicer):
    def __init__(self, server: PaxosServer) -> None:
        self.s = server

    async def Write(self, request: kv_pb2.WriteRequest, context: grpc.aio.ServicerContext) -> kv_pb2.WriteReply:
        return await self.s.write(request.command, _deadline(context))

    async def Get(self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext) -> kv_pb2.GetReply:
        error = validate_key(request.key)
        if error:
            return kv_pb2.GetReply(status=kv_pb2.INVALID, error=error)
        if request.consistency != kv_pb2.LOCAL:
            status = await self.s.linearizable_read(_deadline(context))
            if status != kv_pb2.OK:
                return kv_pb2.GetReply(status=status, leader_hint=self.s.leader_hint())
        value = self.s.store.get(request.key)
        return kv_pb2.GetReply(status=kv_pb2.OK, found=value is not None, value=value or "")

    async def ImageGet(
        self, request: kv_pb2.ImageGetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.ImageGetReply:
        error = validate_image_hash(request.hash)
        if error is None and request.max_distance > limits.IMAGE_HASH_BYTES * 8:
            error = f"max_distance must be at most {limits.IMAGE_HASH_BYTES * 8} bits"
        if error is None and request.limit > limits.MAX_IMAGE_MATCHES:
            error = f"limit must be at most {limits.MAX_IMAGE_MATCHES}"
        if error:
            return kv_pb2.ImageGetReply(status=kv_pb2.INVALID, error=error)
        if request.consistency != kv_pb2.LOCAL:
            status = await self.s.linearizable_read(_deadline(context))
            if status != kv_pb2.OK:
                return kv_pb2.ImageGetReply(status=status, leader_hint=self.s.leader_hint())
        found = self.s.store.image_matches(request.hash, request.max_distance, max(request.limit, 1))
        matches = [kv_pb2.ImageMatch(hash=m.hash, distance=m.distance, metadata=m.metadata) for m in found]
        return kv_pb2.ImageGetReply(status=kv_pb2.OK, matches=matches)

    async def Status(self, request: kv_pb2.StatusRequest, context: grpc.aio.ServicerContext) -> kv_pb2.NodeStatus:
        return self.s.status()


class _PeerService(peer_pb2_grpc.PeerServicer):
    def __init__(self, server: PaxosServer) -> None:
        self.s = server

    async def Stream(self, request_iterator, context: grpc.aio.ServicerContext) -> peer_pb2.StreamSummary:  # type: ignore[no-untyped-def]
        received = 0
        try:
            async for raw in request_iterator:
                received += 1
                self.s.receive_peer(raw)
        except asyncio.CancelledError:
            pass  # this server is shutting down; the peer reconnects elsewhere
        return peer_pb2.StreamSummary(received=received)

    async def SetPartition(
        self, request: peer_pb2.Partition, context: grpc.aio.ServicerContext
    ) -> peer_pb2.PartitionAck:
        if not self.s.fault_injection:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "fault injection is off on this server")
        self.s.set_partition(list(request.blocked))
        return peer_pb2.PartitionAck()


class _PeerLink:
    """One long-lived outbound stream to a peer, reconnected with backoff.

    Messages queued while the peer is unreachable beyond the queue limit are
    dropped: the protocol retransmits what matters.
    """

    def __init__(self, member: Member) -> None:
        self.member = member
        self._queue: asyncio.Queue[peer_pb2.PeerMessage | None] = asyncio.Queue(limits.PEER_QUEUE_LIMIT)
        self._channel: grpc.aio.Channel | None = None
        self._connected = False

    def send(self, msg: peer_pb2.PeerMessage) -> None:
        if not self._connected and self._queue.qsize() > 64:
            return  # peer down: do not hoard stale messages
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            pass

    async def run(self) -> None:
        backoff = 0.05
        while True:
            self._channel = grpc.aio.insecure_channel(self.member.address, options=GRPC_OPTIONS)
            stub = peer_pb2_grpc.PeerStub(self._channel)
            try:
                await asyncio.wait_for(self._channel.channel_ready(), timeout=1.0)
                self._connected = True
                backoff = 0.05
                await stub.Stream(self._outgoing())
            except (TimeoutError, grpc.aio.AioRpcError):
                pass
            finally:
                self._connected = False
                await self._channel.close()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 1.0)

    async def _outgoing(self):  # type: ignore[no-untyped-def]
        while True:
            msg = await self._queue.get()
            if msg is None:
                return
            yield msg

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
