"""A paxoskv server: the replica host (paxos/replica.py) wired to gRPC and the log.

Data flows one way:  client request -> core (leader) -> accepts to peers
while the log is fsynced -> chosen -> state machine -> reply.  The replica
owns that order of effects; this module gives it its storage (the
write-ahead log, fsynced on a thread of its own), its transport (one gRPC
stream to each peer, every message checked by the codec on the way in), the
monotonic clock, and an event loop that drives it once per turn, so that
everything arriving in one turn shares one bundle and one fsync.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import importlib.metadata
import json
import logging
import os
import random
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from paxos import limits
from paxos.codec import DecodeError, PeerCodec
from paxos.core import Config, Node, Role
from paxos.datadir import LOCK_FILE, DataDirError, lock_data_dir
from paxos.hostfile import Member
from paxos.identity import bootstrap_ids, format_id, parse_id
from paxos.messages import Message, NodeId, Record, Slot, Value
from paxos.metrics import FSYNC_BUCKETS, REQUEST_BUCKETS, SLOT_COMMAND_BUCKETS, Histogram, MetricsHttp, registry_for
from paxos.replica import Observer, Replica, WriteAnswer
from paxos.statemachine import StateMachine, validate_image_hash, validate_key
from paxos.tlsaccess import CLIENT_AUTH_CERT, ClientApiGuard
from paxos.tlsfiles import TlsError, member_named
from paxos.wal import Wal
from protos import kv_pb2, kv_pb2_grpc, peer_pb2, peer_pb2_grpc

if TYPE_CHECKING:  # the cryptography package is loaded only by servers that run TLS
    from paxos.tlsserver import ServerTls

log = logging.getLogger("paxos.server")

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Accept the peers' keepalive pings on idle streams instead of answering
    # them with GOAWAY "too_many_pings": the server's ping policy must allow a
    # ping at least as often as keepalive_time_ms above.  The key is gRPC's
    # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, whose string has
    # no "recv" in it; a misspelt key is silently ignored (default 5 minutes).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# gRPC binds listeners with SO_REUSEPORT by default, so a second server on the
# same port would start and share the traffic; binding exclusively makes it fail.
GRPC_SERVER_OPTIONS = [*GRPC_OPTIONS, ("grpc.so_reuseport", 0)]
# How long a write or read waits in the server when the client set no deadline.
DEFAULT_REQUEST_SECONDS = 10.0
# The services this server offers: health reports on each of them (and on
# "", the whole server), reflection lists them for grpcurl and grpcui.
KV_SERVICE = kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name
PEER_SERVICE = peer_pb2.DESCRIPTOR.services_by_name["Peer"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
try:
    VERSION = importlib.metadata.version("paxoskv")
except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
    VERSION = "unknown (not installed)"
META_FILE = "paxoskv-meta.json"
# The data dir layout.  2: member ids (ballots carry them, not hostfile line
# numbers), and log_pb2.LogCommand in the log's slots.  Before it (no
# "format" in the meta file): the client API's kv_pb2.Command, which this
# version does not read.
DATA_FORMAT = 2


@dataclass(frozen=True)
class Identity:
    """Who this server is, fixed when its cluster was created (paxos/identity.py)."""

    cluster_id: int
    member_id: NodeId
    ids: dict[str, NodeId]  # every member's id, by name


def check_data_dir(data_dir: Path, name: str, members: list[Member]) -> Identity:
    """This server's identity from its data dir, stamping a new one first.

    A new data dir gets ids computed from the hostfile; from then on the ids
    come from the data dir, so the hostfile's line order does not matter.
    A data dir made for another server, another cluster or an older format
    is refused.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    meta_path = data_dir / META_FILE
    names = sorted(m.name for m in members)
    if not meta_path.exists():
        if any(p.name != LOCK_FILE for p in data_dir.iterdir()):
            raise DataDirError(f"{data_dir} is not empty and holds no {META_FILE}; refusing to use it as a data dir")
        cluster_id, ids = bootstrap_ids(members)
        meta = {
            "format": DATA_FORMAT,
            "name": name,
            "member_id": format_id(ids[name]),
            "cluster_id": format_id(cluster_id),
            "members": {n: format_id(ids[n]) for n in names},
        }
        _write_durably(meta_path, json.dumps(meta, indent=1) + "\n")
        return Identity(cluster_id, ids[name], ids)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataDirError(f"{meta_path} cannot be read ({exc})") from None
    if meta.get("format") != DATA_FORMAT:
        written_by = "an older paxoskv" if "format" not in meta else f"a paxoskv with data format {meta['format']!r}"
        raise DataDirError(
            f"{data_dir} was written by {written_by}, and this one (data format {DATA_FORMAT}) cannot read its log; "
            "there is no migration: start this server on a fresh --data-dir"
        )
    if meta.get("name") != name:
        raise DataDirError(
            f"{data_dir} belongs to server {meta.get('name')!r}, not {name!r}; pass that server's own --data-dir"
        )
    try:
        stored = {n: parse_id(i) for n, i in meta["members"].items()}
        identity = Identity(parse_id(meta["cluster_id"]), parse_id(meta["member_id"]), stored)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataDirError(f"{meta_path} is damaged ({exc!r})") from None
    if sorted(stored) != names:
        raise DataDirError(
            f"{data_dir} was created for a cluster of {sorted(stored)}, but the hostfile lists {names}; "
            "use a fresh --data-dir for a new cluster"
        )
    return identity


def _write_durably(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _RefusalLog:
    """Counts refused messages; logs each sender's reason once per interval."""

    MAX_KEYS = 1024  # distinct (sender, reason) pairs remembered for the log

    def __init__(self, clock: Callable[[], float], what: str = "peer message") -> None:
        self._clock = clock
        self._what = what
        self.counts: dict[tuple[str, str], int] = {}
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def note(self, peer: str, reason: str, detail: str) -> None:
        key = (peer, reason)
        if key not in self.counts and len(self.counts) >= self.MAX_KEYS:
            key = ("(others)", reason)  # a flood of new names must not grow this without bound
        self.counts[key] = count = self.counts.get(key, 0) + 1
        now = self._clock()
        last = self._logged.get(key)
        if last is None or now - last[0] >= limits.REFUSAL_LOG_SECONDS:
            since = count - last[1] if last else count
            log.warning("refused %d %s(s) from %s since last report: %s (%s)", since, self._what, peer, reason, detail)
            self._logged[key] = (now, count)


class _WalStorage:
    """The write-ahead log as the replica's storage: fsync on a thread of its own."""

    def __init__(self, wal: Wal, on_failure: Callable[[BaseException], None]) -> None:
        self.wal = wal
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal")
        self._on_failure = on_failure
        self.fsync_seconds = Histogram(FSYNC_BUCKETS)
        self.last_fsync_seconds = 0.0

    def append(self, records: list[Record]) -> None:
        self.wal.append(records)

    def unsynced(self) -> bool:
        return self.wal.unsynced()

    def sync(self, done: Callable[[], None]) -> None:
        future = asyncio.get_running_loop().run_in_executor(self.thread, self._timed_sync)
        future.add_done_callback(lambda f: self._synced(f, done))

    def _timed_sync(self) -> float:
        started = time.perf_counter()
        self.wal.sync()
        return time.perf_counter() - started

    def _synced(self, future: asyncio.Future[float], done: Callable[[], None]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            # A failed fsync may have dropped the pages it was writing: the
            # log can no longer be trusted, so the server stops.
            self._on_failure(exc)
            return
        # Recorded here, on the event loop, so a scrape never sees half an update.
        self.last_fsync_seconds = future.result()
        self.fsync_seconds.observe(self.last_fsync_seconds)
        try:
            done()
        except Exception as error:  # a bug in the replica: stop rather than idle
            self._on_failure(error)

    def close(self) -> None:
        self.thread.submit(self.wal.close).result()
        self.thread.shutdown()


class _ServerObserver(Observer):
    def __init__(self, server: PaxosServer) -> None:
        self.s = server
        self._leader: NodeId | None = None

    def role_changed(self, role: Role, leader: NodeId | None) -> None:
        ballot = self.s.core.ballot
        if leader is not None and leader != self._leader:
            self.s.leader_changes += 1
            self._leader = leader
        commit = self.s.core.commit_index
        context = {"ballot": str(ballot), "slot": commit}
        if role is Role.LEADER:
            log.info("became leader with ballot %s (commit index %d)", ballot, commit, extra=context)
        elif role is Role.CANDIDATE:
            log.info("no leader heard; running phase 1 with ballot %s", ballot, extra=context)
        elif leader is not None:
            log.info("following %s (ballot %s)", self.s.members[leader].name, ballot, extra=context)
        else:
            log.info("no leader known", extra=context)

    def applying(self, slot: Slot, value: Value) -> None:
        self.s.slot_commands.observe(len(value))

    def refused(self, msg: Message, reason: str) -> None:
        member = self.s.members.get(msg.sender)
        sender = member.name if member else f"member {format_id(msg.sender)}"
        self.s.refusals.note(sender, reason, type(msg).__name__)


class PaxosServer:
    def __init__(
        self,
        members: list[Member],
        name: str,
        data_dir: Path,
        max_value_bytes: int = limits.DEFAULT_MAX_VALUE_BYTES,
        fault_injection: bool = False,
        config: Config | None = None,
        clock: Callable[[], float] = time.monotonic,
        tls: ServerTls | None = None,
    ) -> None:
        self.fault_injection = fault_injection
        self.tls = tls  # None: plaintext, and anyone who reaches the port can act as a member
        with ExitStack() as undo:  # a server that fails to open releases what it took
            self.data_dir = data_dir
            self._data_dir_lock = lock_data_dir(data_dir)
            undo.callback(self._data_dir_lock.release)
            self.identity = check_data_dir(data_dir, name, members)
            self.node_id = self.identity.member_id
            # The hostfile says where each member is; the data dir says who it is.
            self.members: dict[NodeId, Member] = {self.identity.ids[m.name]: m for m in members}
            self.me = self.members[self.node_id]
            self.codec = PeerCodec(self.identity.cluster_id, self.node_id, self.members)
            wal, durable = Wal.open(data_dir / "wal")
            undo.callback(wal.close)
            self.storage = _WalStorage(wal, self._internal_failure)
            self.refusals = _RefusalLog(clock)
            self.client_refusals = _RefusalLog(clock, "client request")
            self.replica = Replica(
                self.node_id,
                self.members,
                durable,
                storage=self.storage,
                transport=self,
                clock=clock,
                wake=self._schedule_drive,
                rng=random.Random(os.urandom(16)),
                config=config,
                max_value_bytes=max_value_bytes,
                observer=_ServerObserver(self),
            )
            undo.pop_all()
        self.failed = asyncio.Event()  # set when an internal task died
        self._drive_scheduled = False
        self._links: dict[NodeId, _PeerLink] = {}
        self._blocked: set[NodeId] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: grpc.aio.Server | None = None
        self.health = health_aio.HealthServicer()
        # Plain numbers for paxos/metrics.py, read when Prometheus scrapes.
        self.serving = False
        self._started = time.monotonic()
        self.leader_changes = 0
        self.slot_commands = Histogram(SLOT_COMMAND_BUCKETS)
        self.received: Counter[NodeId] = Counter()
        self.request_counts: Counter[tuple[str, str]] = Counter()
        # Every method's series exist from the start, so a follower that has
        # answered nothing still shows them (at zero).
        self.request_seconds = {
            m: Histogram(REQUEST_BUCKETS) for m in kv_pb2.DESCRIPTOR.services_by_name["KV"].methods_by_name
        }
        self.request_counts.update(dict.fromkeys(((m, "OK") for m in self.request_seconds), 0))
        self._http: MetricsHttp | None = None

    @property
    def core(self) -> Node:
        return self.replica.core

    @property
    def store(self) -> StateMachine:
        return self.replica.store

    @property
    def links(self) -> dict[NodeId, _PeerLink]:
        return self._links

    # ------------------------------------------------------------- lifecycle

    async def start(self, listen: str, metrics: str | None = None) -> None:
        """Serve gRPC on ``listen``, and /metrics and /healthz over HTTP on ``metrics`` if given."""
        interceptors = []
        if self.tls is not None and self.tls.client_auth == CLIENT_AUTH_CERT:
            interceptors.append(ClientApiGuard(KV_SERVICE, self._refuse_non_client))
        self._grpc = grpc.aio.server(options=GRPC_SERVER_OPTIONS, interceptors=interceptors)
        _LenientRegistrar(self._grpc, self.client_refusals).add(kv_pb2_grpc.add_KVServicer_to_server, _KVService(self))
        _LenientRegistrar(self._grpc, self.refusals).add(peer_pb2_grpc.add_PeerServicer_to_server, _PeerService(self))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        reflection.enable_server_reflection(
            (KV_SERVICE, PEER_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), self._grpc
        )
        try:
            if self.tls is None:
                port = self._grpc.add_insecure_port(listen)
            else:
                port = self._grpc.add_secure_port(listen, self.tls.server_credentials())
        except RuntimeError:  # what grpcio raises, without the reason, when the bind fails
            port = 0
        if port == 0:
            raise OSError(f"cannot listen on {listen}: {_bind_failure(listen)}")
        for peer in self.core.peers:
            self._links[peer] = _PeerLink(self.members[peer], self.tls)
        await self._grpc.start()
        self._tasks = [asyncio.create_task(self._ticker())]
        self._tasks += [asyncio.create_task(link.run()) for link in self._links.values()]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        await _set_health(self.health, health_pb2.HealthCheckResponse.SERVING)
        self.serving = True
        self._started = time.monotonic()
        if metrics is not None:
            self._http = MetricsHttp(registry_for(self), lambda: self.serving)
            try:
                await self._http.start(metrics)
            except (OSError, ValueError) as exc:
                raise OSError(f"cannot serve metrics on {metrics}: {exc}") from None
            log.info("metrics at http://%s/metrics, health at /healthz", metrics)
        self._schedule_drive()
        log.info(
            "%s (member %s of cluster %s) listening on %s (%d servers in the cluster)",
            self.me.name,
            format_id(self.node_id),
            format_id(self.identity.cluster_id),
            listen,
            len(self.members),
        )
        if self.tls is None:
            log.warning(
                "running without TLS: anyone who can reach %s can act as a member and read or change every value; "
                "start with --tls-dir DIR (python -m paxos.certs creates one)",
                listen,
            )
        else:
            clients = "a client certificate" if self.tls.client_auth == CLIENT_AUTH_CERT else "any TLS client"
            log.info(
                "TLS on: peers need their member certificate, the client API %s; serving %s",
                clients,
                self.tls.describe(),
            )

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        # Every task runs forever; one that ends on its own is a bug, and a
        # server that silently stopped driving its core must not linger.
        if task.cancelled():
            return
        exc = task.exception()
        log.critical("internal task %s stopped: %r; shutting down", task.get_coro(), exc, exc_info=exc)
        self.failed.set()

    def _internal_failure(self, exc: BaseException) -> None:
        log.critical("driving the replica failed: %r; shutting down", exc, exc_info=exc)
        self.failed.set()

    async def stop(self) -> None:
        self.serving = False
        # Every service turns NOT_SERVING for good (later sets are ignored),
        # and watchers hear it during the grace period below.
        await self.health.enter_graceful_shutdown()
        if self._http is not None:
            await self._http.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace=0.5)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for link in self._links.values():
            await link.close()
        self.storage.close()
        self._data_dir_lock.release()

    async def wait(self) -> None:
        assert self._grpc is not None
        await self._grpc.wait_for_termination()

    # ----------------------------------------------------- driving the core

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(limits.TICK_SECONDS)
            self.replica.tick()

    def _schedule_drive(self) -> None:
        """Drive the replica once the event loop has taken in what is ready now.

        Everything that arrives in one turn of the loop goes out in one
        bundle.  Before the server starts there is no loop and nothing to do.
        """
        if self._drive_scheduled or self.failed.is_set():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._drive_scheduled = True
        loop.call_soon(self._drive)

    def _drive(self) -> None:
        self._drive_scheduled = False
        try:
            self.replica.drive()
        except Exception as exc:  # a bug in the replica: stop rather than idle
            self._internal_failure(exc)

    def send(self, messages: list[tuple[NodeId, Message]]) -> None:
        """The replica's transport: one stream per peer."""
        # A broadcast is one message object sent to every peer: encode it
        # once, then copy the envelope for each receiver.
        encoded: dict[int, peer_pb2.PeerMessage] = {}
        for to, msg in messages:
            if to not in self._blocked:
                wire = encoded.get(id(msg))
                if wire is None:
                    wire = encoded[id(msg)] = self.codec.encode(msg)
                self._links[to].send(self.codec.addressed(wire, to))

    # ------------------------------------------------------ peer messages in

    def receive_peer(self, raw: peer_pb2.PeerMessage, origin: str = "", certified: NodeId | None = None) -> None:
        """One message from a peer stream; ``origin`` is the transport's peer address.

        ``certified`` is the member whose certificate opened the stream (with
        TLS); a message claiming any other sender is refused.
        """
        try:
            msg = self.codec.decode(raw)
        except DecodeError as exc:
            self.refusals.note(self._peer_label(raw.sender, origin), exc.reason, str(exc))
            return
        if certified is not None and msg.sender != certified:
            self.refusals.note(
                self._peer_label(raw.sender, origin),
                "sender is not the member named by the certificate",
                f"certificate of {self.members[certified].name}",
            )
            return
        if msg.sender in self._blocked:
            return
        self.received[msg.sender] += 1
        self.replica.receive(msg)

    def certified_member(self, context: grpc.aio.ServicerContext) -> tuple[NodeId | None, str]:
        """The member whose verified certificate opened this call, or None and why not.

        TLS verified the certificate when the server asks for one
        (``--client-auth cert``); otherwise the caller signed its opening.
        """
        assert self.tls is not None
        name = member_named(context.auth_context())
        if name is None and self.tls.client_auth != CLIENT_AUTH_CERT:
            try:
                name = self.tls.member_from_proof(context.invocation_metadata(), time.time())
            except TlsError as exc:
                return None, str(exc)
        if name is None:
            return None, "no member certificate"
        member_id = self.identity.ids.get(name)
        return member_id, "" if member_id is not None else f"certificate of {name!r}, not a member"

    def _refuse_non_client(self, context: grpc.aio.ServicerContext) -> None:
        self.client_refusals.note(
            _without_port(context.peer()), "no client certificate", "the client API needs client.pem"
        )

    def _peer_label(self, sender: int, origin: str) -> str:
        member = self.members.get(sender)
        claimed = f"claimed member {member.name}" if member else "a non-member"
        return f"{origin or 'unknown address'} ({claimed})"

    def set_partition(self, names: list[str]) -> None:
        index = {m.name: i for i, m in self.members.items()}
        self._blocked = {index[n] for n in names if n in index}
        log.warning("fault injection: blocking traffic with %s", sorted(names))

    # ------------------------------------------------------- client requests

    def leader_hint(self) -> str:
        leader = self.core.leader
        return self.members[leader].name if leader is not None else ""

    async def write(self, cmd: kv_pb2.Command, deadline: float) -> kv_pb2.WriteReply:
        future: asyncio.Future[WriteAnswer] = asyncio.get_running_loop().create_future()
        self.replica.write(cmd, lambda answer: _settle(future, answer))
        try:
            answer = await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            answer = WriteAnswer(kv_pb2.UNKNOWN)
        hint = self.leader_hint() if answer.status in (kv_pb2.NOT_LEADER, kv_pb2.UNKNOWN) else ""
        return kv_pb2.WriteReply(status=answer.status, removed=answer.removed, error=answer.error, leader_hint=hint)

    async def linearizable_read(self, deadline: float) -> kv_pb2.Status:
        """Wait until a read may be served here; the status to reply with."""
        future: asyncio.Future[kv_pb2.Status] = asyncio.get_running_loop().create_future()
        read_id = self.replica.read(lambda status: _settle(future, status))
        try:
            return await asyncio.wait_for(future, max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            if read_id is not None:
                self.replica.forget_read(read_id)
            return kv_pb2.UNAVAILABLE

    def status(self) -> kv_pb2.NodeStatus:
        return kv_pb2.NodeStatus(
            name=self.me.name,
            address=self.me.address,
            role=self.core.role.value,
            leader=self.leader_hint(),
            ballot=str(self.core.ballot),
            commit_index=self.core.commit_index,
            applied_index=self.store.applied_index,
            version=VERSION,
            uptime_seconds=time.monotonic() - self._started,
            log_bytes=_bytes_in(self.storage.wal.segments()),
            data_bytes=_bytes_in(p for p in self.data_dir.rglob("*") if p.is_file()),
            last_fsync_seconds=self.storage.last_fsync_seconds,
        )

    def note_request(self, method: str, status: str, seconds: float) -> None:
        self.request_counts[method, status] += 1
        histogram = self.request_seconds.get(method)
        if histogram is None:
            histogram = self.request_seconds[method] = Histogram(REQUEST_BUCKETS)
        histogram.observe(seconds)


T = TypeVar("T")


def _bytes_in(paths: Iterable[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:  # a log segment removed meanwhile
            pass
    return total


def _without_port(peer: str) -> str:
    """A gRPC peer address without its port ("ipv4:10.0.0.5"), so that each new connection
    from one host counts and logs under one name."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


def _settle(future: asyncio.Future[T], value: T) -> None:
    if not future.done():  # the caller may have timed out already
        future.set_result(value)


def _deadline(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    if remaining is None or remaining > DEFAULT_REQUEST_SECONDS:
        remaining = DEFAULT_REQUEST_SECONDS
    return time.monotonic() + remaining


async def _set_health(servicer: health_aio.HealthServicer, status: int) -> None:
    for service in ("", KV_SERVICE, PEER_SERVICE):
        await servicer.set(service, status)


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


@dataclass(frozen=True, slots=True)
class _Malformed:
    """A request whose bytes did not parse; it reaches no servicer method."""

    method: str
    detail: str


class _LenientRegistrar:
    """Registers a generated servicer with request parsing that cannot raise.

    gRPC logs a full traceback for every request its deserializer fails on.
    Here a request that does not parse is counted and logged once per sender
    and interval instead: a unary call ends with INVALID_ARGUMENT, and a
    stream's message is dropped while the stream goes on.
    """

    def __init__(self, server: grpc.aio.Server, refusals: _RefusalLog) -> None:
        self._server = server
        self._refusals = refusals
        self._registered = False

    def add(self, add_servicer: Callable[[Any, Any], None], servicer: object) -> None:
        add_servicer(servicer, self)
        if not self._registered:
            raise RuntimeError(f"{add_servicer.__name__} registered no method handlers; grpcio-tools changed")

    # The two calls generated code makes on a server.
    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same handlers arrive by name below, and are registered from there

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        wrapped = {name: self._wrap(f"{service}/{name}", h) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        self._server.add_registered_method_handlers(service, wrapped)
        self._registered = True

    def _wrap(self, method: str, handler: Any) -> Any:
        parse = handler.request_deserializer
        refusals = self._refusals

        def lenient(raw: bytes) -> object:
            try:
                return parse(raw)
            except ProtobufDecodeError as exc:
                return _Malformed(method, str(exc))

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: object, context: grpc.aio.ServicerContext) -> object:
                if isinstance(request, _Malformed):
                    refusals.note(context.peer(), "malformed request", f"{request.method}: {request.detail}")
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {request.method} request")
                return await inner(request, context)

            return handler._replace(request_deserializer=lenient, unary_unary=unary)
        if handler.stream_unary is not None:
            stream_inner = handler.stream_unary

            async def stream(requests: AsyncIterator[object], context: grpc.aio.ServicerContext) -> object:
                async def parsed() -> AsyncIterator[object]:
                    async for request in requests:
                        if isinstance(request, _Malformed):
                            refusals.note(context.peer(), "malformed message", f"{request.method}: {request.detail}")
                            continue
                        yield request

                return await stream_inner(parsed(), context)

            return handler._replace(request_deserializer=lenient, stream_unary=stream)
        raise TypeError(f"{method}: no lenient form for this kind of method")


_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])
_STATUS_NAMES = {value: name for name, value in kv_pb2.Status.items()}


def _measured(handler: _Handler) -> _Handler:
    """Count a client method's replies by status and time them (paxoskv_client_requests_total and _duration)."""
    method = handler.__name__

    @functools.wraps(handler)
    async def measured(self: _KVService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        status = "ERROR"  # an abort, or the client went away
        try:
            reply = await handler(self, request, context)
            status = _STATUS_NAMES.get(getattr(reply, "status", kv_pb2.OK), "ERROR")
            return reply
        finally:
            self.s.note_request(method, status, time.perf_counter() - started)

    return measured  # type: ignore[return-value]


class _KVService(kv_pb2_grpc.KVServicer):
    def __init__(self, server: PaxosServer) -> None:
        self.s = server

    @_measured
    async def Write(self, request: kv_pb2.WriteRequest, context: grpc.aio.ServicerContext) -> kv_pb2.WriteReply:
        return await self.s.write(request.command, _deadline(context))

    @_measured
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

    @_measured
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

    @_measured
    async def Status(self, request: kv_pb2.StatusRequest, context: grpc.aio.ServicerContext) -> kv_pb2.NodeStatus:
        return self.s.status()


class _PeerService(peer_pb2_grpc.PeerServicer):
    def __init__(self, server: PaxosServer) -> None:
        self.s = server

    async def Stream(self, request_iterator, context: grpc.aio.ServicerContext) -> peer_pb2.StreamSummary:  # type: ignore[no-untyped-def]
        received = 0
        origin = _without_port(context.peer())
        certified = None
        if self.s.tls is not None:
            certified, why = self.s.certified_member(context)
            if certified is None:
                self.s.refusals.note(origin, "peer stream without a member certificate", why)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a peer stream needs a member certificate")
        try:
            async for raw in request_iterator:
                received += 1
                self.s.receive_peer(raw, origin, certified)
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

    def __init__(self, member: Member, tls: ServerTls | None = None) -> None:
        self.member = member
        # With TLS, each new connection asks for the credentials again, so a
        # rotated certificate is used from the next reconnect on.
        self._tls = tls
        self._queue: asyncio.Queue[peer_pb2.PeerMessage | None] = asyncio.Queue(limits.PEER_QUEUE_LIMIT)
        self._channel: grpc.aio.Channel | None = None
        self._connected = False
        self.sent = 0  # queued for the stream
        self.dropped_down = 0
        self.dropped_full = 0

    def send(self, msg: peer_pb2.PeerMessage) -> None:
        if not self._connected and self._queue.qsize() > 64:
            self.dropped_down += 1
            return  # peer down: do not hoard stale messages
        try:
            self._queue.put_nowait(msg)
        except asyncio.QueueFull:
            self.dropped_full += 1
            return
        self.sent += 1

    async def run(self) -> None:
        backoff = 0.05
        while True:
            metadata = None
            if self._tls is None:
                self._channel = grpc.aio.insecure_channel(self.member.address, options=GRPC_OPTIONS)
            else:
                credentials = self._tls.peer_credentials()
                self._channel = grpc.aio.secure_channel(self.member.address, credentials, options=GRPC_OPTIONS)
                metadata = self._tls.peer_metadata(self.member.name, time.time())
            stub = peer_pb2_grpc.PeerStub(self._channel)
            try:
                await asyncio.wait_for(self._channel.channel_ready(), timeout=1.0)
                self._connected = True
                backoff = 0.05
                await stub.Stream(self._outgoing(), metadata=metadata)
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
