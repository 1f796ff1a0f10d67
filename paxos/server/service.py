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
import functools
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from paxos.common import limits
from paxos.common.files import DiskFull
from paxos.common.hostfile import Member
from paxos.common.identity import format_id
from paxos.consensus.core import Config, Node, RecoveryError, Role
from paxos.consensus.membership import ConfigMember, Membership
from paxos.consensus.messages import Message, NodeId, Slot, Value
from paxos.kv.statemachine import StateMachine
from paxos.replica import FetchedSnapshot, Observer, Replica
from paxos.server import connections
from paxos.server.addressbook import AddressBook
from paxos.server.callers import certified_admin, certified_name, without_port
from paxos.server.codec import PeerCodec
from paxos.server.endpoint import (
    GRPC_SERVER_OPTIONS,
    HEALTH_SERVICE,
    KV_SERVICE,
    PEER_SERVICE,
    VERSION,
    bind_failure,
    set_health,
)
from paxos.server.ingress import PeerIngress
from paxos.server.join import discover_cluster, joiner_refusal
from paxos.server.kvapi import DEFAULT_REQUEST_SECONDS, KvApi, get_error, image_get_error, serve_get, serve_image_get
from paxos.server.metrics import MetricsHttp, ServerFigures, registry_for
from paxos.server.peers import PeerLink, Peers
from paxos.server.refusals import RefusalLog
from paxos.server.session import ClientSession, ReplyBudget
from paxos.server.standing import Standing
from paxos.server.stats import Histogram, ServerStats
from paxos.server.storage import WalStorage, load_newest_snapshot
from paxos.server.tlsaccess import CLIENT_AUTH_CERT, NOT_A_CLIENT, ClientApiGuard
from paxos.server.transfer import SnapshotFetcher, snapshot_chunks
from paxos.storage import snapshot as snapshots
from paxos.storage.datadir import DataDirError, lock_data_dir
from paxos.storage.incarnationbook import load_incarnation_book, save_incarnation_book
from paxos.storage.meta import (
    DATA_FORMAT,
    META_FILE,
    SNAPSHOT_DIR,
    WAL_DIR,
    Identity,
    JoinTarget,
    check_data_dir,
    data_dir_is_joining,
    repair_hint,
)
from paxos.storage.wal import Wal
from protos import kv_pb2, kv_pb2_grpc, peer_pb2, peer_pb2_grpc

if TYPE_CHECKING:  # the cryptography package is loaded only by servers that run TLS
    from paxos.server.tlsserver import ServerTls

log = logging.getLogger("paxos.server")

# What the entry points and the tests import from here: the server, and the
# names that lived in this module before it was split by job.
__all__ = [
    "DATA_FORMAT",
    "DEFAULT_REQUEST_SECONDS",
    "KV_SERVICE",
    "META_FILE",
    "PEER_SERVICE",
    "SNAPSHOT_DIR",
    "VERSION",
    "WAL_DIR",
    "DataDirError",
    "JoinTarget",
    "PaxosServer",
    "check_data_dir",
    "data_dir_is_joining",
    "discover_cluster",
    "load_incarnation_book",
    "save_incarnation_book",
]
# Under the names they had here before they moved.
_RefusalLog = RefusalLog
_WalStorage = WalStorage
_PeerLink = PeerLink


class _ServerObserver(Observer):
    def __init__(self, server: PaxosServer) -> None:
        self.s = server
        self._leader: NodeId | None = None

    def role_changed(self, role: Role, leader: NodeId | None) -> None:
        ballot = self.s.core.ballot
        if leader is not None and leader != self._leader:
            self.s.stats.leader_changes += 1
            self._leader = leader
        commit = self.s.core.commit_index
        context = {"ballot": str(ballot), "slot": commit}
        if role is Role.LEADER:
            log.info("became leader with ballot %s (commit index %d)", ballot, commit, extra=context)
        elif role is Role.CANDIDATE:
            log.info("no leader heard; running phase 1 with ballot %s", ballot, extra=context)
        elif leader is not None:
            log.info("following %s (ballot %s)", self.s.name_of(leader), ballot, extra=context)
        else:
            log.info("no leader known", extra=context)

    def applying(self, slot: Slot, value: Value) -> None:
        self.s.stats.slot_commands.observe(len(value))

    def snapshot_frozen(self, index: Slot, seconds: float) -> None:
        self.s.stats.snapshot_frozen(seconds)

    def snapshot_saved(self, index: Slot) -> None:
        storage = self.s.storage
        log.info(
            "snapshot at slot %d written (%d bytes in %.3f s; its copy held up the apply loop %.2f ms)",
            index,
            storage.last_snapshot_bytes,
            storage.last_snapshot_seconds,
            self.s.stats.last_snapshot_freeze_seconds * 1000,
        )

    def membership_applied(self, slot: Slot, membership: Membership) -> None:
        self.s.membership_applied(slot, membership)

    def snapshot_installed(self, index: Slot, peer: NodeId) -> None:
        self.s.stats.snapshots_installed += 1
        log.info(
            "now at slot %d, from the snapshot of %s; catching up on the log after it",
            index,
            self.s.name_of(peer),
        )

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
        snapshot_every: int = limits.SNAPSHOT_EVERY_COMMANDS,
        snapshot_tail: int = limits.SNAPSHOT_TAIL_SLOTS,
        tls: ServerTls | None = None,
        join: JoinTarget | None = None,
    ) -> None:
        """``join``: this server is being added to the running cluster it describes (``--join``)."""
        self.fault_injection = fault_injection
        self.tls = tls  # None: plaintext, and anyone who reaches the port can act as a member
        self.disk_full: DiskFull | None = None  # why the server stopped, when a write found the disk full
        self.stats = ServerStats()  # plain numbers for paxos/server/metrics.py and the status
        with ExitStack() as undo:  # a server that fails to open releases what it took
            self.data_dir = data_dir
            self._data_dir_lock = lock_data_dir(data_dir)
            undo.callback(self._data_dir_lock.release)
            identity = check_data_dir(data_dir, name, members, join)
            self.node_id = identity.member_id
            if identity.joining and join is None:
                raise DataDirError(
                    f"{data_dir} belongs to a server that is joining a cluster and was not added yet; "
                    "start it with --join"
                )
            hostfile = {m.name: m for m in members}
            self.standing = Standing(identity, hostfile[name], data_dir)
            if identity.joining and join is not None:
                bootstrap = join.membership
            else:
                bootstrap = Membership.of(
                    ConfigMember(i, n, hostfile[n].address if n in hostfile else "") for n, i in identity.ids.items()
                )
            self.book = AddressBook(hostfile)
            self.codec = PeerCodec(identity.cluster_id, self.node_id, (), identity.incarnation)
            self.peers = Peers(self.book, self.codec, tls, self._task_ended)
            self._note_membership(bootstrap)
            snapshot_dir = data_dir / SNAPSHOT_DIR
            store, skipped = load_newest_snapshot(snapshot_dir)
            wal, durable = Wal.open(data_dir / WAL_DIR)
            undo.callback(wal.close)
            self.storage = WalStorage(
                wal, snapshot_dir, self._snapshot_header, self._internal_failure, book_dir=data_dir
            )
            self.fetcher = SnapshotFetcher(self.book, self.standing, self.storage, tls, self._internal_failure)
            self.refusals = RefusalLog(clock)
            self.client_refusals = RefusalLog(clock, "client request")
            try:
                self.replica = Replica(
                    self.node_id,
                    bootstrap,
                    durable,
                    storage=self.storage,
                    transport=self,
                    clock=clock,
                    wake=self._schedule_drive,
                    store=store,
                    rng=random.Random(os.urandom(16)),
                    config=config,
                    max_value_bytes=max_value_bytes,
                    observer=_ServerObserver(self),
                    snapshot_every=snapshot_every,
                    snapshot_tail=snapshot_tail,
                )
            except RecoveryError as exc:  # the log does not reach down to the snapshot
                damaged = "; ".join(f"{path.name} is damaged ({err})" for path, err in skipped)
                raise DataDirError(
                    f"{data_dir}: cannot recover: {exc}"
                    + (f"; {damaged}, and the log does not cover the gap" if damaged else "")
                    + f"; {repair_hint(name)}"
                ) from None
            self.ingress = PeerIngress(
                self.replica,
                self.codec,
                self.book,
                self.standing,
                self.refusals,
                self.stats.received,
                self.peers.blocked,
                tls is not None,
            )
            self.kv = KvApi(
                self.replica,
                self.book,
                self.standing,
                self.stats,
                self.storage,
                self.client_refusals,
                functools.partial(joiner_refusal, asker=name, cluster_id=identity.cluster_id, tls=tls),
            )
            if skipped:
                log.error("fell back to an older snapshot: %s", "; ".join(f"{p}: {e}" for p, e in skipped))
            in_configuration = self.node_id in self.core.membership_ids
            if not self.identity.joining and not in_configuration:
                raise DataDirError(
                    f"{name} was removed from the cluster (its configuration lists "
                    f"{self.core.membership.describe()}); it cannot rejoin with its old data: start it on a fresh "
                    "--data-dir with --join, then add it (python -m client members add, or members sync)"
                )
            self._note_membership(self.core.membership)
            if self.identity.joining and in_configuration:
                self.standing.joined()
            undo.pop_all()
        self.failed = asyncio.Event()  # set when an internal task died
        self._drive_scheduled = False
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: grpc.aio.Server | None = None
        self.health = health_aio.HealthServicer()
        self.serving = False
        self.session_budget = ReplyBudget()
        self._http: MetricsHttp | None = None

    @property
    def core(self) -> Node:
        return self.replica.core

    @property
    def identity(self) -> Identity:
        return self.standing.identity

    @property
    def me(self) -> Member:
        return self.standing.me

    @property
    def members(self) -> dict[NodeId, Member]:
        return self.book.members

    @property
    def ids_by_name(self) -> dict[str, NodeId]:
        return self.book.ids_by_name

    @property
    def store(self) -> StateMachine:
        return self.replica.store

    @property
    def links(self) -> dict[NodeId, PeerLink]:
        return self.peers.links

    # What the tests read, from before the numbers moved to ServerStats.
    @property
    def leader_changes(self) -> int:
        return self.stats.leader_changes

    @property
    def snapshots_installed(self) -> int:
        return self.stats.snapshots_installed

    @property
    def session_batch_requests(self) -> Histogram:
        return self.stats.session_batch_requests

    # ------------------------------------------------------------- lifecycle

    async def start(self, listen: str, metrics: str | None = None, max_connections: int | None = None) -> None:
        """Serve gRPC on ``listen``, and /metrics and /healthz over HTTP on ``metrics`` if given.

        ``max_connections`` lowers the cap on connections below the one the
        open-file limit sets (paxos/server/connections.py).
        """
        interceptors = []
        if self.tls is not None:
            interceptors.append(ClientApiGuard(KV_SERVICE, self.tls.client_auth, self.certified_admin, self._refuse))
        cap = connections.connection_cap(connections.raise_open_file_limit())
        if max_connections is not None:
            cap = min(cap, max_connections)
        self._starvation = connections.ClientStarvation(cap, connections.open_descriptors())
        options = [*GRPC_SERVER_OPTIONS, *connections.server_options(cap)]
        self._grpc = grpc.aio.server(options=options, interceptors=interceptors)
        kv_service = _KVService(self.kv, self.session_budget)
        _LenientRegistrar(self._grpc, self.client_refusals).add(kv_pb2_grpc.add_KVServicer_to_server, kv_service)
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
            raise OSError(f"cannot listen on {listen}: {bind_failure(listen)}")
        await self._grpc.start()
        self._tasks = [asyncio.create_task(self._ticker()), asyncio.create_task(self._watch_clients())]
        for task in self._tasks:
            task.add_done_callback(self._task_ended)
        self.peers.start(self.core.peers)
        await set_health(self.health, health_pb2.HealthCheckResponse.SERVING)
        self.serving = True
        self.stats.started = time.monotonic()
        if metrics is not None:
            self._http = MetricsHttp(registry_for(self._figures()), lambda: self.serving)
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
            len(self.core.membership.voters),
        )
        if self.identity.joining:
            log.info(
                "joining: waiting to be added to the cluster as a learner (its members: %s)",
                self.core.membership.describe(),
            )
        if self.tls is None:
            log.warning(
                "running without TLS: anyone who can reach %s is an admin (may change the members, take a backup, "
                "and act as a member), and may read or change every value; "
                "start with --tls-dir DIR (python -m paxos.certs creates one)",
                listen,
            )
        else:
            clients = "a client certificate" if self.tls.client_auth == CLIENT_AUTH_CERT else "any TLS client"
            log.info(
                "TLS on: peers need their member certificate, the client API %s, member changes and backups "
                "the admin certificate; serving %s",
                clients,
                self.tls.describe(),
            )

    # ------------------------------------------------------------ membership

    def _note_membership(self, membership: Membership) -> None:
        """Know the names and addresses of ``membership``'s members, and take messages from them."""
        self.book.follow(membership)
        self.codec.members = frozenset(self.book.members)

    def name_of(self, member_id: NodeId) -> str:
        return self.book.name_of(member_id)

    def membership_applied(self, slot: Slot, membership: Membership) -> None:
        # The newest configuration chosen, not the one just applied: a
        # restarted server replays older ones first.
        self._note_membership(self.core.membership)
        self.peers.sync(self.core.peers)
        log.info("configuration at slot %d: %s", slot, membership.describe())
        # Judged by the newest configuration chosen, not the one just
        # applied: a server that joined replays configurations from before.
        self.standing.follow(slot, self.node_id in self.core.membership_ids)

    def membership_state(self) -> str:
        return self.standing.state(self.core.membership)

    def _snapshot_header(self) -> tuple[int, list[snapshots.SnapshotMember]]:
        return self.identity.cluster_id, self.book.snapshot_members()

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        # Every task runs forever; one that ends on its own is a bug, and a
        # server that silently stopped driving its core must not linger.
        if task.cancelled():
            return
        exc = task.exception()
        log.critical("internal task %s stopped: %r; shutting down", task.get_coro(), exc, exc_info=exc)
        self.failed.set()

    def _internal_failure(self, exc: BaseException) -> None:
        if isinstance(exc, DiskFull):
            self._stop_for_disk_full(exc)
            return
        log.critical("driving the replica failed: %r; shutting down", exc, exc_info=exc)
        self.failed.set()

    def _stop_for_disk_full(self, exc: DiskFull) -> None:
        """A write found no room: what this server promises can no longer be kept, so it stops.

        One line, the first time: the file, what was being written, the
        bytes free.  Nothing more is driven from here on (``failed``).
        """
        if self.disk_full is None:
            self.disk_full = exc
            log.critical("%s; shutting down", exc)
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
        tasks = [*self._tasks, *self.peers.halt()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.peers.close()
        try:
            self.storage.close()
        except DiskFull as exc:  # records appended since the last sync found no room
            self._stop_for_disk_full(exc)
        self._data_dir_lock.release()

    async def wait(self) -> None:
        assert self._grpc is not None
        await self._grpc.wait_for_termination()

    # ----------------------------------------------------- driving the core

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(limits.TICK_SECONDS)
            self.replica.tick()

    async def _watch_clients(self) -> None:
        """Hand leadership over when clients cannot get in (see paxos/server/connections.py)."""
        while True:
            await asyncio.sleep(1.0)
            leading = self.core.is_leader()
            descriptors = connections.open_descriptors() if leading else None
            if not self._starvation.observe(time.monotonic(), leading, descriptors, self.stats.requests_served):
                continue
            if self.replica.step_down(limits.STEP_DOWN_ABSTAIN_TICKS):
                log.warning(
                    "handing leadership over: %s file descriptors open (connections capped at %d) and no client "
                    "request served for %g s; raise the open-file limit (ulimit -n) or find who holds the connections",
                    descriptors,
                    self._starvation.cap,
                    limits.CLIENT_STARVED_SECONDS,
                )

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
        self.peers.send(messages)

    def fetch_snapshot(self, peer: NodeId, after: Slot, done: Callable[[FetchedSnapshot | None], None]) -> None:
        """The replica's transport: stream ``peer``'s newest snapshot into the data dir, then load it."""
        self.fetcher.fetch(peer, after, done)

    # ------------------------------------------------------ peer messages in

    def receive_peer(
        self, raw: peer_pb2.PeerMessage, origin: str = "", certified: NodeId | None = None, cert_name: str = ""
    ) -> None:
        self.ingress.receive(raw, origin, certified, cert_name)

    def certified_member(self, context: grpc.aio.ServicerContext) -> tuple[NodeId | None, str]:
        """The member whose verified certificate opened this call, or None and why not."""
        return self.ingress.member_certified(*self.certified_name(context))

    def certified_name(self, context: grpc.aio.ServicerContext) -> tuple[str | None, str]:
        assert self.tls is not None
        return certified_name(self.tls, context)

    def certified_admin(self, context: grpc.aio.ServicerContext) -> bool:
        assert self.tls is not None
        return certified_admin(self.tls, context)

    def _refuse(self, context: grpc.aio.ServicerContext, reason: str) -> None:
        needed = "the client API needs client.pem" if reason == NOT_A_CLIENT else "this call needs admin.pem"
        self.client_refusals.note(without_port(context.peer()), reason, needed)

    def set_partition(self, names: list[str]) -> None:
        self.peers.block(names)

    # ------------------------------------------------------- client requests

    async def linearizable_read(self, deadline: float) -> kv_pb2.Status:
        return await self.kv.linearizable_read(deadline)

    def _figures(self) -> ServerFigures:
        return ServerFigures(
            replica=self.replica,
            stats=self.stats,
            storage=self.storage,
            budget=self.session_budget,
            refusals=self.refusals,
            links=lambda: self.peers.links,
            name_of=self.name_of,
            membership_state=self.membership_state,
        )


def _deadline(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    if remaining is None or remaining > DEFAULT_REQUEST_SECONDS:
        remaining = DEFAULT_REQUEST_SECONDS
    return time.monotonic() + remaining


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

        async def parsed(requests: AsyncIterator[object], context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
            """A stream's messages, without those that did not parse (counted and logged)."""
            async for request in requests:
                if isinstance(request, _Malformed):
                    refusals.note(context.peer(), "malformed message", f"{request.method}: {request.detail}")
                    continue
                yield request

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
                return await stream_inner(parsed(requests, context), context)

            return handler._replace(request_deserializer=lenient, stream_unary=stream)
        if handler.unary_stream is not None:
            unary_stream_inner = handler.unary_stream

            async def unary_stream(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
                if isinstance(request, _Malformed):
                    refusals.note(context.peer(), "malformed request", f"{request.method}: {request.detail}")
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {request.method} request")
                async for reply in unary_stream_inner(request, context):
                    yield reply

            return handler._replace(request_deserializer=lenient, unary_stream=unary_stream)
        if handler.stream_stream is not None:
            both_inner = handler.stream_stream

            # An async generator function itself: gRPC asks which kind of handler it was given.
            async def both(requests: AsyncIterator[object], context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
                async for reply in both_inner(parsed(requests, context), context):
                    yield reply

            return handler._replace(request_deserializer=lenient, stream_stream=both)
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
            self.api.note_request(method, status, time.perf_counter() - started)

    return measured  # type: ignore[return-value]


class _KVService(kv_pb2_grpc.KVServicer):
    def __init__(self, api: KvApi, budget: ReplyBudget) -> None:
        self.api = api
        self.budget = budget  # the session streams' server-wide bounds

    @_measured
    async def Register(
        self, request: kv_pb2.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.RegisterReply:
        return await self.api.register(_deadline(context))

    @_measured
    async def Write(self, request: kv_pb2.WriteRequest, context: grpc.aio.ServicerContext) -> kv_pb2.WriteReply:
        return await self.api.write(request.command, _deadline(context))

    @_measured
    async def Get(self, request: kv_pb2.GetRequest, context: grpc.aio.ServicerContext) -> kv_pb2.GetReply:
        error = get_error(request)
        if error:
            return kv_pb2.GetReply(status=kv_pb2.INVALID, error=error)
        if request.consistency != kv_pb2.LOCAL:
            status = await self.api.linearizable_read(_deadline(context))
            if status != kv_pb2.OK:
                return kv_pb2.GetReply(status=status, leader_hint=self.api.leader_hint())
        return serve_get(self.api, request)

    @_measured
    async def ImageGet(
        self, request: kv_pb2.ImageGetRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.ImageGetReply:
        error = image_get_error(request)
        if error:
            return kv_pb2.ImageGetReply(status=kv_pb2.INVALID, error=error)
        if request.consistency != kv_pb2.LOCAL:
            status = await self.api.linearizable_read(_deadline(context))
            if status != kv_pb2.OK:
                return kv_pb2.ImageGetReply(status=status, leader_hint=self.api.leader_hint())
        return serve_image_get(self.api, request)

    async def Backup(
        self, request: kv_pb2.BackupRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kv_pb2.BackupChunk]:
        started = time.monotonic()
        status = "OK"
        async for chunk in self.api.backup(_deadline(context)):
            if chunk.status != kv_pb2.OK:
                status = _STATUS_NAMES.get(chunk.status, str(chunk.status))
            yield chunk
        self.api.note_request("Backup", status, time.monotonic() - started)

    @_measured
    async def Members(self, request: kv_pb2.MembersRequest, context: grpc.aio.ServicerContext) -> kv_pb2.MembersReply:
        return self.api.members_reply()

    @_measured
    async def ChangeMembers(
        self, request: kv_pb2.ChangeMembersRequest, context: grpc.aio.ServicerContext
    ) -> kv_pb2.ChangeMembersReply:
        return await self.api.change_members(request, _deadline(context))

    @_measured
    async def Status(self, request: kv_pb2.StatusRequest, context: grpc.aio.ServicerContext) -> kv_pb2.NodeStatus:
        return self.api.status()

    async def Session(  # type: ignore[override]
        self, request_iterator: AsyncIterator[kv_pb2.SessionBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kv_pb2.SessionReplies]:
        """Batches of requests in, batches of replies out: see paxos/server/session.py."""
        refusal = self.budget.refusal()
        if refusal is not None:
            self.api.client_refusals.note(context.peer(), "session stream over the server's bounds", refusal)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        async for replies in ClientSession(self.api, context.peer(), self.budget).serve(request_iterator):
            yield replies


class _PeerService(peer_pb2_grpc.PeerServicer):
    def __init__(self, server: PaxosServer) -> None:
        self.s = server

    async def Stream(self, request_iterator, context: grpc.aio.ServicerContext) -> peer_pb2.StreamSummary:  # type: ignore[no-untyped-def]
        received = 0
        origin = without_port(context.peer())
        cert_name = ""
        if self.s.tls is not None:
            # The certificate proves a member of this cluster by name; which
            # member id that name means is looked up for every message.
            name, why = self.s.certified_name(context)
            if name is None:
                self.s.refusals.note(origin, "peer stream without a member certificate", why)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a peer stream needs a member certificate")
            cert_name = name or ""
        try:
            async for raw in request_iterator:
                received += 1
                self.s.receive_peer(raw, origin, cert_name=cert_name)
        except asyncio.CancelledError:
            pass  # this server is shutting down; the peer reconnects elsewhere
        return peer_pb2.StreamSummary(received=received)

    async def Configuration(
        self, request: peer_pb2.ConfigurationRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.ConfigurationReply:
        # Any server with a certificate from this cluster's CA may ask: a
        # joining server is no member yet.
        await self._require_server_certificate(context, "configuration request")
        return self.s.ingress.configuration_reply()

    async def Incarnation(
        self, request: peer_pb2.IncarnationRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.IncarnationReply:
        # Asked by a server with an empty data dir: no member yet, but it
        # must hold a certificate from this cluster's CA.
        await self._require_server_certificate(context, "incarnation request")
        return self.s.ingress.incarnation_reply(request)

    async def _require_server_certificate(self, context: grpc.aio.ServicerContext, what: str) -> None:
        """Under TLS, refuse (counted, logged, PERMISSION_DENIED) a caller whose certificate names no server."""
        if self.s.tls is None:
            return
        named, why = self.s.certified_name(context)
        if named is None:
            self.s.refusals.note(context.peer(), "no member certificate", f"{what} ({why})")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a member certificate is needed")

    async def FetchSnapshot(
        self, request: peer_pb2.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[peer_pb2.SnapshotChunk]:
        refusal = self.s.ingress.snapshot_request_refusal(request)
        if refusal is None and self.s.tls is not None:
            certified, why = self.s.certified_member(context)
            if certified is None:
                refusal = f"snapshot request without a member certificate ({why})"
            elif certified != request.sender:
                refusal = "sender is not the member named by the certificate"
        if refusal is not None:
            self.s.refusals.note(context.peer(), refusal, "snapshot request")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"snapshot request refused: {refusal}")
        async for chunk in snapshot_chunks(self.s.storage.snapshot_dir, request.after):
            yield chunk

    async def SetPartition(
        self, request: peer_pb2.Partition, context: grpc.aio.ServicerContext
    ) -> peer_pb2.PartitionAck:
        if not self.s.fault_injection:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "fault injection is off on this server")
        self.s.set_partition(list(request.blocked))
        return peer_pb2.PartitionAck()
