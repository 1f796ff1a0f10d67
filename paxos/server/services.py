"""The gRPC servicers: the client API (``KVService``) and the peer service (``PeerService``).

They are thin: they read who is calling (paxos/server/callers.py) and the
call's deadline, and hand the rest to ``KvApi`` (paxos/server/kvapi.py), the
session streams (paxos/server/session.py) or the peer ingress
(paxos/server/ingress.py).  Every client method's replies are counted by
status and timed (paxoskv_client_requests_total and _duration).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from paxos.server.callers import certified_name, without_port
from paxos.server.ingress import PeerIngress
from paxos.server.kvapi import DEFAULT_REQUEST_SECONDS, KvApi, get_error, image_get_error, serve_get, serve_image_get
from paxos.server.refusals import RefusalLog
from paxos.server.session import ClientSession, ReplyBudget
from paxos.server.transfer import snapshot_chunks
from protos import kv_pb2, kv_pb2_grpc, peer_pb2, peer_pb2_grpc

if TYPE_CHECKING:  # the cryptography package is loaded only by servers that run TLS
    from paxos.server.tlsserver import ServerTls

_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[Any]])
_STATUS_NAMES = {value: name for name, value in kv_pb2.Status.items()}


def _measured(handler: _Handler) -> _Handler:
    """Count a client method's replies by status and time them (paxoskv_client_requests_total and _duration)."""
    method = handler.__name__

    @functools.wraps(handler)
    async def measured(self: KVService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        status = "ERROR"  # an abort, or the client went away
        try:
            reply = await handler(self, request, context)
            status = _STATUS_NAMES.get(getattr(reply, "status", kv_pb2.OK), "ERROR")
            return reply
        finally:
            self.api.note_request(method, status, time.perf_counter() - started)

    return measured  # type: ignore[return-value]


class KVService(kv_pb2_grpc.KVServicer):
    """The client API: each method reads its call's deadline and hands the request to ``KvApi``."""

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


class PeerService(peer_pb2_grpc.PeerServicer):
    """The peer service: who the caller's certificate names is read here, the rest is the ingress's to judge."""

    def __init__(
        self,
        ingress: PeerIngress,
        refusals: RefusalLog,
        tls: ServerTls | None,
        snapshot_dir: Path,
        partition: Callable[[list[str]], None] | None,
    ) -> None:
        """``partition`` cuts this server off from the named members; None: fault injection is off."""
        self._ingress = ingress
        self._refusals = refusals
        self._tls = tls
        self._snapshot_dir = snapshot_dir
        self._partition = partition

    async def Stream(self, request_iterator, context: grpc.aio.ServicerContext) -> peer_pb2.StreamSummary:  # type: ignore[no-untyped-def]
        received = 0
        origin = without_port(context.peer())
        cert_name = ""
        if self._tls is not None:
            # The certificate proves a member of this cluster by name; which
            # member id that name means is looked up for every message.
            name, why = certified_name(self._tls, context)
            if name is None:
                self._refusals.note(origin, "peer stream without a member certificate", why)
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a peer stream needs a member certificate")
            cert_name = name or ""
        try:
            async for raw in request_iterator:
                received += 1
                self._ingress.receive(raw, origin, cert_name=cert_name)
        except asyncio.CancelledError:
            pass  # this server is shutting down; the peer reconnects elsewhere
        return peer_pb2.StreamSummary(received=received)

    async def Configuration(
        self, request: peer_pb2.ConfigurationRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.ConfigurationReply:
        # Any server with a certificate from this cluster's CA may ask: a
        # joining server is no member yet.
        await self._require_server_certificate(context, "configuration request")
        return self._ingress.configuration_reply()

    async def Incarnation(
        self, request: peer_pb2.IncarnationRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.IncarnationReply:
        # Asked by a server with an empty data dir: no member yet, but it
        # must hold a certificate from this cluster's CA.
        await self._require_server_certificate(context, "incarnation request")
        return self._ingress.incarnation_reply(request)

    async def _require_server_certificate(self, context: grpc.aio.ServicerContext, what: str) -> None:
        """Under TLS, refuse (counted, logged, PERMISSION_DENIED) a caller whose certificate names no server."""
        if self._tls is None:
            return
        named, why = certified_name(self._tls, context)
        if named is None:
            self._refusals.note(context.peer(), "no member certificate", f"{what} ({why})")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "a member certificate is needed")

    async def FetchSnapshot(
        self, request: peer_pb2.SnapshotRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[peer_pb2.SnapshotChunk]:
        refusal = self._ingress.snapshot_request_refusal(request)
        if refusal is None and self._tls is not None:
            certified, why = self._ingress.member_certified(*certified_name(self._tls, context))
            if certified is None:
                refusal = f"snapshot request without a member certificate ({why})"
            elif certified != request.sender:
                refusal = "sender is not the member named by the certificate"
        if refusal is not None:
            self._refusals.note(context.peer(), refusal, "snapshot request")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"snapshot request refused: {refusal}")
        async for chunk in snapshot_chunks(self._snapshot_dir, request.after):
            yield chunk

    async def SetPartition(
        self, request: peer_pb2.Partition, context: grpc.aio.ServicerContext
    ) -> peer_pb2.PartitionAck:
        if self._partition is None:
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "fault injection is off on this server")
        else:
            self._partition(list(request.blocked))
        return peer_pb2.PartitionAck()


def _deadline(context: grpc.aio.ServicerContext) -> float:
    remaining = context.time_remaining()
    if remaining is None or remaining > DEFAULT_REQUEST_SECONDS:
        remaining = DEFAULT_REQUEST_SECONDS
    return time.monotonic() + remaining
