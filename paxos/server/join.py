"""Joining a running cluster: what a ``--join`` server learns of it, and the leader's check of a joiner.

Both ask a server the ``Peer.Configuration`` question over the peer channel.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import grpc

from paxos.common import limits
from paxos.common.hostfile import Member, parse_address
from paxos.common.identity import format_id
from paxos.consensus.membership import ConfigMember, Membership
from paxos.server.peers import peer_channel
from paxos.storage.datadir import DataDirError
from paxos.storage.meta import JoinTarget
from protos import kv_pb2, peer_pb2, peer_pb2_grpc

if TYPE_CHECKING:  # the cryptography package is loaded only by servers that run TLS
    from paxos.server.tlsserver import ServerTls

log = logging.getLogger("paxos.server")


async def discover_cluster(members: list[Member], name: str, tls: ServerTls | None, timeout: float) -> JoinTarget:
    """Ask the hostfile's other servers for the cluster a ``--join`` server is joining.

    Tries each in turn until one answers, for up to ``timeout`` seconds;
    servers that answer with different clusters are an error.
    """
    others = [m for m in members if m.name != name]
    if not others:
        raise DataDirError("--join needs the hostfile to list at least one server of the running cluster")
    deadline = time.monotonic() + timeout
    last_error = ""
    while True:
        answers: dict[int, JoinTarget] = {}
        for member in others:
            channel, metadata = peer_channel(member, tls)
            try:
                reply = await peer_pb2_grpc.PeerStub(channel).Configuration(
                    peer_pb2.ConfigurationRequest(name=name), timeout=2.0, metadata=metadata
                )
                membership = Membership.of(ConfigMember(m.id, m.name, m.address, m.voter) for m in reply.members)
                error = membership.shape_error()
                if error:
                    raise ValueError(error)
            except grpc.aio.AioRpcError as exc:
                last_error = f"{member.name} at {member.address}: {exc.code().name} {exc.details()}"
                continue
            except ValueError as exc:
                last_error = f"{member.name} at {member.address} sent an unusable configuration: {exc}"
                continue
            finally:
                await channel.close()
            answers[reply.cluster_id] = JoinTarget(reply.cluster_id, membership)
        if len(answers) > 1:
            raise DataDirError(
                "the servers in the hostfile belong to different clusters ("
                + ", ".join(format_id(c) for c in sorted(answers))
                + "); fix the hostfile"
            )
        if answers:
            return next(iter(answers.values()))
        if time.monotonic() >= deadline:
            raise DataDirError(f"--join: no server of the cluster answered within {timeout:.0f}s (last: {last_error})")
        log.info("--join: waiting for a server of the cluster to answer (last: %s)", last_error)
        await asyncio.sleep(1.0)


async def joiner_refusal(
    add: kv_pb2.MemberInfo, deadline: float, asker: str, cluster_id: int, tls: ServerTls | None
) -> str | None:
    """Why the server at ``add.address`` may not be added as asked; None once it answers as a
    server started with --join for this cluster, under the name and member id of ``add``.

    Asked over the peer channel by the member named ``asker`` (under TLS
    with its member certificate), before anything is proposed.
    """
    where = f"the server at {add.address}"
    channel, metadata = peer_channel(parse_address(add.name, add.address), tls)
    timeout = max(min(limits.JOINER_CHECK_SECONDS, deadline - time.monotonic()), 0.001)
    try:
        reply = await peer_pb2_grpc.PeerStub(channel).Configuration(
            peer_pb2.ConfigurationRequest(name=asker), timeout=timeout, metadata=metadata
        )
    except grpc.aio.AioRpcError as exc:
        detail = " ".join((exc.details() or "").split())[:200]
        return (
            f"{where} does not answer as a server waiting to join ({exc.code().name}: {detail}); "
            f"start it first with: python -m paxos -h HOSTFILE -n {add.name} --data-dir DIR --join"
        )
    finally:
        await channel.close()
    # Its words are quoted back to the admin, so no longer than a name may be.
    name, membership = reply.name[: limits.MAX_MEMBER_NAME_BYTES], reply.membership[: limits.MAX_MEMBER_NAME_BYTES]
    if membership != "joining":
        return (
            f"{where} reports membership {membership or 'unknown'!r}, not 'joining': only a server "
            "started with --join and not yet added can be added"
        )
    if reply.cluster_id != cluster_id:
        return (
            f"{where} is joining another cluster ({format_id(reply.cluster_id)}, not "
            f"{format_id(cluster_id)}): start it on an empty data directory with --join "
            "and this cluster's hostfile"
        )
    if reply.name != add.name or reply.member_id != add.id:
        return (
            f"{where} is {name!r} with member id {format_id(reply.member_id)}, not {add.name!r} with "
            f"{format_id(add.id)}: take the name and id from its status"
        )
    return None
