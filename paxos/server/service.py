"""A paxoskv server: the replica host (paxos/replica.py) wired to gRPC and the log.

Data flows one way:  client request -> core (leader) -> accepts to peers
while the log is fsynced -> chosen -> state machine -> reply.  The replica
owns that order of effects; ``PaxosServer`` is the composition root that
gives it its storage (the write-ahead log, fsynced on a thread of its own:
paxos/server/storage.py), its transport (one gRPC stream to each peer:
peers.py, snapshot transfers: transfer.py), the monotonic clock, and an
event loop that drives it once per turn, so that everything arriving in one
turn shares one bundle and one fsync.  Peer messages come in through the
ingress checks (ingress.py), client requests through the KV API (kvapi.py)
and the session streams (session.py), both served by services.py.  Each of
those parts is handed the few objects it needs, never the server.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from paxos.common import limits, versions
from paxos.common.files import DiskFull
from paxos.common.hostfile import Member
from paxos.common.identity import format_id
from paxos.consensus.core import Config, Node, RecoveryError
from paxos.consensus.membership import ConfigMember, Membership
from paxos.consensus.messages import Message, NodeId, Slot
from paxos.kv.statemachine import ClusterVersionTooNew, StateMachine
from paxos.replica import FetchedSnapshot, Replica
from paxos.server import connections
from paxos.server.addressbook import AddressBook
from paxos.server.callers import certified_admin, without_port
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
from paxos.server.kvapi import DEFAULT_REQUEST_SECONDS, KvApi
from paxos.server.lenient import LenientRegistrar
from paxos.server.metrics import MetricsHttp, ServerFigures, registry_for
from paxos.server.observer import ServerObserver
from paxos.server.peers import PeerLink, Peers
from paxos.server.refusals import RefusalLog
from paxos.server.roster import Roster
from paxos.server.services import KVService, PeerService
from paxos.server.session import ReplyBudget
from paxos.server.standing import Standing
from paxos.server.stats import Histogram, ServerStats
from paxos.server.storage import WalStorage, load_newest_snapshot
from paxos.server.tlsaccess import CLIENT_AUTH_CERT, NOT_A_CLIENT, ClientApiGuard
from paxos.server.transfer import SnapshotFetcher
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
_LenientRegistrar = LenientRegistrar
_KVService = KVService
_PeerService = PeerService


@dataclass(frozen=True)
class _Transport:
    """The replica's transport: the peer streams, and snapshot transfers."""

    peers: Peers
    fetcher: SnapshotFetcher

    def send(self, messages: list[tuple[NodeId, Message]]) -> None:
        self.peers.send(messages)

    def fetch_snapshot(self, peer: NodeId, after: Slot, done: Callable[[FetchedSnapshot | None], None]) -> None:
        self.fetcher.fetch(peer, after, done)


class PaxosServer:
    """One server: its parts, wired together, and their lifecycle (see the module docstring)."""

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
        max_cluster_version: int = versions.MAX_CLUSTER_VERSION,
    ) -> None:
        """``join``: this server is being added to the running cluster it describes (``--join``).

        ``max_cluster_version``: the highest cluster version this server
        reports it runs (``--max-cluster-version``), so it holds the raise
        beyond it back.
        """
        self.fault_injection = fault_injection
        self.tls = tls  # None: plaintext, and anyone who reaches the port can act as a member
        self.disk_full: DiskFull | None = None  # why the server stopped, when a write found the disk full
        # Why the server stopped, when the log raised the cluster version
        # beyond what this release runs (the entry point exits 4 with it).
        self.too_new: ClusterVersionTooNew | None = None
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
            self.codec = PeerCodec(identity.cluster_id, self.node_id, (), identity.incarnation, max_cluster_version)
            self.roster = Roster(self.book, self.codec)
            self.peers = Peers(self.roster, tls, self._task_ended)
            self.roster.follow(bootstrap)
            snapshot_dir = data_dir / SNAPSHOT_DIR
            store, skipped = load_newest_snapshot(snapshot_dir)
            wal, durable = Wal.open(data_dir / WAL_DIR)
            undo.callback(wal.close)
            self.storage = WalStorage(
                wal,
                snapshot_dir,
                lambda: (self.standing.cluster_id, self.book.snapshot_members()),
                self._internal_failure,
                book_dir=data_dir,
            )
            self.refusals = RefusalLog(clock)
            self.client_refusals = RefusalLog(clock, "client request")
            try:
                self.replica = Replica(
                    self.node_id,
                    bootstrap,
                    durable,
                    storage=self.storage,
                    transport=_Transport(
                        self.peers, SnapshotFetcher(self.book, self.standing, self.storage, tls, self._internal_failure)
                    ),
                    clock=clock,
                    wake=self._schedule_drive,
                    store=store,
                    rng=random.Random(os.urandom(16)),
                    config=config,
                    max_value_bytes=max_value_bytes,
                    observer=ServerObserver(
                        lambda: self.replica.core,
                        self.book,
                        self.stats,
                        self.storage,
                        self.refusals,
                        self._membership_applied,
                    ),
                    snapshot_every=snapshot_every,
                    snapshot_tail=snapshot_tail,
                    max_cluster_version=max_cluster_version,
                )
            except RecoveryError as exc:  # the log does not reach down to the snapshot
                damaged = "; ".join(f"{path.name} is damaged ({err})" for path, err in skipped)
                raise DataDirError(
                    f"{data_dir}: cannot recover: {exc}"
                    + (f"; {damaged}, and the log does not cover the gap" if damaged else "")
                    + f"; {repair_hint(name)}"
                ) from None
            if skipped:
                log.error("fell back to an older snapshot: %s", "; ".join(f"{p}: {e}" for p, e in skipped))
            self._check_standing(name)
            undo.pop_all()
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
        self.failed = asyncio.Event()  # set when an internal task died
        self._drive_scheduled = False
        self._tasks: list[asyncio.Task[None]] = []
        self._grpc: grpc.aio.Server | None = None
        self.health = health_aio.HealthServicer()
        self.serving = False
        self.session_budget = ReplyBudget()
        self._http: MetricsHttp | None = None

    def _check_standing(self, name: str) -> None:
        """Refuse a server the configuration removed; note that one started with --join was added meanwhile."""
        in_configuration = self.node_id in self.core.membership_ids
        if not self.identity.joining and not in_configuration:
            raise DataDirError(
                f"{name} was removed from the cluster (its configuration lists "
                f"{self.core.membership.describe()}); it cannot rejoin with its old data: start it on a fresh "
                "--data-dir with --join, then add it (python -m client members add, or members sync)"
            )
        self.roster.follow(self.core.membership)
        if self.identity.joining and in_configuration:
            self.standing.joined()

    # What the entry points and the tests read of a server.

    @property
    def core(self) -> Node:
        return self.replica.core

    @property
    def store(self) -> StateMachine:
        return self.replica.store

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
    def links(self) -> dict[NodeId, PeerLink]:
        return self.peers.links

    @property
    def leader_changes(self) -> int:
        return self.stats.leader_changes

    @property
    def snapshots_installed(self) -> int:
        return self.stats.snapshots_installed

    @property
    def session_batch_requests(self) -> Histogram:
        return self.stats.session_batch_requests

    def receive_peer(
        self, raw: peer_pb2.PeerMessage, origin: str = "", certified: NodeId | None = None, cert_name: str = ""
    ) -> None:
        """One stream message from a peer, as its stream hands it over (see ``PeerIngress.receive``)."""
        self.ingress.receive(raw, origin, certified, cert_name)

    async def linearizable_read(self, deadline: float) -> kv_pb2.Status:
        return await self.kv.linearizable_read(deadline)

    def set_partition(self, names: list[str]) -> None:
        """Fault injection: cut this server off from the members of these names (none: heal)."""
        self.peers.block(names)

    # ------------------------------------------------------------- lifecycle

    async def start(self, listen: str, metrics: str | None = None, max_connections: int | None = None) -> None:
        """Serve gRPC on ``listen``, and /metrics and /healthz over HTTP on ``metrics`` if given.

        ``max_connections`` lowers the cap on connections below the one the
        open-file limit sets (paxos/server/connections.py).
        """
        interceptors = []
        if self.tls is not None:
            is_admin = functools.partial(certified_admin, self.tls)
            interceptors.append(ClientApiGuard(KV_SERVICE, self.tls.client_auth, is_admin, self._refuse))
        cap = connections.connection_cap(connections.raise_open_file_limit())
        if max_connections is not None:
            cap = min(cap, max_connections)
        self._starvation = connections.ClientStarvation(cap, connections.open_descriptors())
        options = [*GRPC_SERVER_OPTIONS, *connections.server_options(cap)]
        self._grpc = grpc.aio.server(options=options, interceptors=interceptors)
        self._add_services(self._grpc)
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

    def _add_services(self, server: grpc.aio.Server) -> None:
        """The client API and the peer service, each parsing leniently, and health and reflection."""
        kv = KVService(self.kv, self.session_budget)
        LenientRegistrar(server, self.client_refusals).add(kv_pb2_grpc.add_KVServicer_to_server, kv)
        partition = self.peers.block if self.fault_injection else None
        peer = PeerService(self.ingress, self.refusals, self.tls, self.storage.snapshot_dir, partition)
        LenientRegistrar(server, self.refusals).add(peer_pb2_grpc.add_PeerServicer_to_server, peer)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection((KV_SERVICE, PEER_SERVICE, HEALTH_SERVICE, reflection.SERVICE_NAME), server)

    def _figures(self) -> ServerFigures:
        return ServerFigures(
            replica=self.replica,
            stats=self.stats,
            storage=self.storage,
            budget=self.session_budget,
            refusals=self.refusals,
            links=lambda: self.peers.links,
            name_of=self.book.name_of,
            membership_state=self.kv.membership_state,
        )

    def _refuse(self, context: grpc.aio.ServicerContext, reason: str) -> None:
        needed = "the client API needs client.pem" if reason == NOT_A_CLIENT else "this call needs admin.pem"
        self.client_refusals.note(without_port(context.peer()), reason, needed)

    # ------------------------------------------------------------ membership

    def _membership_applied(self, slot: Slot, membership: Membership) -> None:
        # The newest configuration chosen, not the one just applied: a
        # restarted server replays older ones first.
        self.roster.follow(self.core.membership)
        self.peers.sync(self.core.peers)
        log.info("configuration at slot %d: %s", slot, membership.describe())
        # Judged by the newest configuration chosen, not the one just
        # applied: a server that joined replays configurations from before.
        self.standing.follow(slot, self.node_id in self.core.membership_ids)

    # ------------------------------------------------------------- failures

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
        if isinstance(exc, ClusterVersionTooNew):
            self._stop_for_too_new(exc)
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

    def _stop_for_too_new(self, exc: ClusterVersionTooNew) -> None:
        """The log raised the cluster version beyond this release: it stops before applying what it cannot read.

        Nothing of that slot was applied here, and every server of this
        release stops at the same slot.  One line, naming the release to
        start instead.
        """
        if self.too_new is None:
            self.too_new = exc
            log.critical("slot %d: %s; shutting down", exc.slot, exc)
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
