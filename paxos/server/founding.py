"""The founding check of a server with an empty data dir started without --join.

Before it writes its meta file, such a server serves nothing but the
``Peer.Incarnation`` question (answering "fresh") and its status (membership
"founding", so that ``status`` shows it up and waiting) and asks every other
server of the hostfile what it recorded for it, until ``decide_founding``
(paxos/incarnation.py) says found or refuse.  See that module for why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from paxos.common import limits, versions
from paxos.common.hostfile import Member
from paxos.common.identity import bootstrap_ids, format_id
from paxos.incarnation import Founding, FoundingAnswer, decide_founding
from paxos.server.callers import certified_name
from paxos.server.endpoint import GRPC_SERVER_OPTIONS, VERSION, bind_failure
from paxos.server.peers import peer_channel
from paxos.storage.datadir import DataDirError
from paxos.storage.meta import DATA_FORMAT, repair_hint
from protos import kv_pb2, peer_pb2, peer_pb2_grpc

if TYPE_CHECKING:
    from paxos.server.tlsserver import ServerTls

log = logging.getLogger("paxos.founding")

INCARNATION_METHOD = "/" + peer_pb2.DESCRIPTOR.services_by_name["Peer"].full_name + "/Incarnation"
STATUS_METHOD = "/" + kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name + "/Status"
SESSION_METHOD = "/" + kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name + "/Session"
WAITING = "this server is checking, before it founds the cluster, that no other server knew an earlier data dir of it"


class _FoundingHandler(grpc.GenericRpcHandler):
    """Answers ``Peer.Incarnation`` with "fresh" and ``KV.Status``; every other call gets UNAVAILABLE."""

    def __init__(self, tls: ServerTls | None, status: kv_pb2.NodeStatus) -> None:
        self._tls = tls
        self._status = status
        self._started = time.monotonic()

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        if handler_call_details.method == INCARNATION_METHOD:
            return grpc.unary_unary_rpc_method_handler(
                self._incarnation,
                request_deserializer=peer_pb2.IncarnationRequest.FromString,
                response_serializer=peer_pb2.IncarnationReply.SerializeToString,
            )
        if handler_call_details.method == STATUS_METHOD:
            return grpc.unary_unary_rpc_method_handler(
                self._node_status,
                request_deserializer=kv_pb2.StatusRequest.FromString,
                response_serializer=kv_pb2.NodeStatus.SerializeToString,
            )
        if handler_call_details.method == SESSION_METHOD:
            return grpc.stream_stream_rpc_method_handler(
                self._session,
                request_deserializer=kv_pb2.SessionBatch.FromString,
                response_serializer=kv_pb2.SessionReplies.SerializeToString,
            )
        return grpc.unary_unary_rpc_method_handler(self._unavailable)

    async def _node_status(self, request: kv_pb2.StatusRequest, context: grpc.aio.ServicerContext) -> kv_pb2.NodeStatus:
        status = kv_pb2.NodeStatus()
        status.CopyFrom(self._status)
        status.uptime_seconds = time.monotonic() - self._started
        return status

    async def _session(
        self, batches: AsyncIterator[kv_pb2.SessionBatch], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[kv_pb2.SessionReplies]:
        """The clients' stream: status is answered, everything else is refused as UNAVAILABLE (retry later)."""
        async for batch in batches:
            if len(batch.requests) > limits.MAX_SESSION_BATCH_REQUESTS:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many requests in one batch")
            replies = kv_pb2.SessionReplies()
            for request in batch.requests:
                reply = replies.replies.add(id=request.id)
                if request.WhichOneof("kind") == "status":
                    reply.status.CopyFrom(await self._node_status(request.status, context))
                else:
                    reply.refused.status = kv_pb2.UNAVAILABLE
                    reply.refused.error = f"{WAITING}; retry shortly"
            yield replies

    async def _incarnation(
        self, request: peer_pb2.IncarnationRequest, context: grpc.aio.ServicerContext
    ) -> peer_pb2.IncarnationReply:
        if self._tls is not None:
            name, why = certified_name(self._tls, context)
            if name is None:
                await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"a member certificate is needed ({why})")
        return peer_pb2.IncarnationReply(fresh=True)

    async def _unavailable(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{WAITING}; retry shortly")


async def _ask(
    member: Member, stub: peer_pb2_grpc.PeerStub, request: peer_pb2.IncarnationRequest, tls: ServerTls | None
) -> FoundingAnswer | str:
    """One server's answer, or why there is none."""
    metadata = tls.peer_metadata(member.name, time.time()) if tls is not None else None
    try:
        reply = await stub.Incarnation(request, timeout=limits.FOUNDING_ASK_SECONDS, metadata=metadata)
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name} {exc.details()}"
    return FoundingAnswer(fresh=reply.fresh, recorded=reply.recorded)


async def check_founding(
    members: list[Member],
    name: str,
    tls: ServerTls | None,
    listen: str,
    max_cluster_version: int = versions.MAX_CLUSTER_VERSION,
) -> None:
    """Return once this server may found the cluster; DataDirError if it must not.

    Serves on ``listen`` meanwhile (only the question; it votes for nothing).
    Its status says what it will run: a new cluster starts at the base
    cluster version, and ``max_cluster_version`` is what it will report.
    """
    others = [m for m in members if m.name != name]
    if not others:
        return  # a single server: nobody else could have counted its votes
    _, ids = bootstrap_ids(members)
    request = peer_pb2.IncarnationRequest(name=name, member_id=ids[name])
    me = next(m for m in members if m.name == name)
    # A follower of nobody yet, in no configuration: "founding" beside joining.
    status = kv_pb2.NodeStatus(
        name=name,
        address=me.address,
        role="follower",
        membership="founding",
        version=VERSION,
        member_id=ids[name],
        cluster_version=versions.BASE_CLUSTER_VERSION,
        max_cluster_version=max_cluster_version,
        data_format=DATA_FORMAT,
    )
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
    server.add_generic_rpc_handlers((_FoundingHandler(tls, status),))
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, tls.server_credentials())
    except RuntimeError:  # what grpcio raises, without the reason, when the bind fails
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {listen}: {bind_failure(listen)}")
    await server.start()
    channels = {m.name: peer_channel(m, tls)[0] for m in others}
    stubs = {n: peer_pb2_grpc.PeerStub(c) for n, c in channels.items()}
    answers: dict[str, FoundingAnswer] = {}
    started = time.monotonic()
    last_logged = started - limits.REFUSAL_LOG_SECONDS
    try:
        while True:
            asking = [m for m in others if m.name not in answers]
            results = await asyncio.gather(*(_ask(m, stubs[m.name], request, tls) for m in asking))
            failures = {}
            for member, result in zip(asking, results, strict=True):
                if isinstance(result, FoundingAnswer):
                    answers[member.name] = result
                else:
                    failures[member.name] = result
            decision = decide_founding(name, [m.name for m in members], answers)
            if decision.verdict is Founding.FOUND:
                log.info("founding the cluster: %s", decision.why)
                return
            if decision.verdict is Founding.REFUSE:
                raise DataDirError(
                    f"this data dir is new, but {decision.why}: founding anew could lose acknowledged writes; "
                    + repair_hint(name)
                )
            now = time.monotonic()
            if now - last_logged >= limits.REFUSAL_LOG_SECONDS:
                last_logged = now
                reasons = "; ".join(f"{n}: {why}" for n, why in sorted(failures.items()))
                # Servers started together wait a moment for each other: no warning for that.
                level = logging.WARNING if now - started >= limits.REFUSAL_LOG_SECONDS else logging.INFO
                log.log(
                    level,
                    "empty data dir: not founding the cluster yet (member %s): %s%s",
                    format_id(ids[name]),
                    decision.why,
                    f" (last errors: {reasons})" if reasons else "",
                )
            await asyncio.sleep(limits.FOUNDING_RETRY_SECONDS)
    finally:
        for channel in channels.values():
            await channel.close()
        await server.stop(None)
