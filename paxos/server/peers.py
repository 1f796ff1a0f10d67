"""The outbound side of the peer protocol: one long-lived gRPC stream to each other member.

``Peers`` is the replica's ``send``: it keeps a ``PeerLink`` open to every
other member of the configuration, has the roster (roster.py) encode each
message once however many peers it goes to, and queues it on the peer's
stream.  Messages to a peer
that is down are dropped beyond a small queue: the protocol retransmits
what matters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import grpc

from paxos.common import limits
from paxos.common.hostfile import Member
from paxos.consensus.messages import Message, NodeId
from paxos.server.codec import pack
from paxos.server.endpoint import GRPC_OPTIONS
from paxos.server.roster import Roster
from protos import peer_pb2, peer_pb2_grpc

if TYPE_CHECKING:  # the cryptography package is loaded only by servers that run TLS
    from paxos.server.tlsserver import ServerTls

log = logging.getLogger("paxos.server")


class Peers:
    """The links to the other members, following the configuration; see the module docstring."""

    def __init__(
        self,
        roster: Roster,
        tls: ServerTls | None,
        task_ended: Callable[[asyncio.Task[None]], None],
    ) -> None:
        """``task_ended`` hears of a link's task that ended (each runs until cancelled)."""
        self._roster = roster
        self._book = roster.book
        self._tls = tls
        self._task_ended = task_ended
        self.links: dict[NodeId, PeerLink] = {}
        self._tasks: dict[NodeId, asyncio.Task[None]] = {}
        # Members cut off by fault injection, neither sent to nor heard from:
        # the peer ingress holds this same set, so it is only changed in place.
        self.blocked: set[NodeId] = set()
        self.running = False  # links are opened only between start() and halt()

    def start(self, peers: Iterable[NodeId]) -> None:
        self.running = True
        self.sync(peers)

    def sync(self, peers: Iterable[NodeId]) -> None:
        """One outbound stream to each of ``peers`` (the configuration's others), and none to anyone else."""
        if not self.running:
            return
        wanted = {p for p in peers if p in self._book.members}
        for peer in wanted - self.links.keys():
            self._open(peer)
        for peer in [p for p in self.links if p not in wanted]:
            link = self.links.pop(peer)
            task = self._tasks.pop(peer, None)
            if task is not None:
                task.cancel()
            asyncio.get_running_loop().create_task(link.close())

    def _open(self, peer: NodeId) -> PeerLink:
        link = self.links[peer] = PeerLink(self._book.members[peer], self._tls)
        task = self._tasks[peer] = asyncio.get_running_loop().create_task(link.run())
        task.add_done_callback(self._task_ended)
        return link

    def send(self, messages: list[tuple[NodeId, Message]]) -> None:
        """The replica's transport: one stream per peer."""
        for to, wire in self._roster.envelopes(messages, self.blocked):
            link = self.links.get(to)
            if link is None:
                # A member this configuration does not hold yet (a server
                # catching up asks a leader added after it lagged).
                if not self.running:
                    continue
                link = self._open(to)
            link.send(wire)

    def block(self, names: list[str]) -> None:
        """Fault injection: cut this server off from the members of these names (none: heal)."""
        self.blocked.clear()
        self.blocked.update(self._book.ids_named(names))
        log.warning("fault injection: blocking traffic with %s", sorted(names))

    def halt(self) -> list[asyncio.Task[None]]:
        """Open no more links; the links' tasks, for the caller to cancel and await."""
        self.running = False
        return list(self._tasks.values())

    async def close(self) -> None:
        for link in self.links.values():
            await link.close()


def peer_channel(
    member: Member, tls: ServerTls | None
) -> tuple[grpc.aio.Channel, list[tuple[str, str | bytes]] | None]:
    """A new channel to a peer, and the metadata that proves who opens calls on it.

    With TLS the credentials are asked for anew, so a rotated certificate is
    used from the next channel on; under --client-auth none the metadata
    carries this member's signed proof (paxos/server/tlsserver.py).
    """
    if tls is None:
        return grpc.aio.insecure_channel(member.address, options=GRPC_OPTIONS), None
    channel = grpc.aio.secure_channel(member.address, tls.peer_credentials(), options=GRPC_OPTIONS)
    return channel, tls.peer_metadata(member.name, time.time())


class PeerLink:
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
            self._channel, metadata = peer_channel(self.member, self._tls)
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
        # Everything queued while the last message was going out leaves packed in one.
        while True:
            msg = await self._queue.get()
            if msg is None:
                return
            if self._queue.empty():  # alone: no packing, and no size to add up
                yield msg
                continue
            batch, size = [msg], msg.ByteSize()
            while len(batch) < limits.MAX_PEER_PACKED_MESSAGES and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    yield pack(batch)
                    return
                size += nxt.ByteSize()
                if size > limits.MAX_PEER_PACKED_BYTES:
                    yield pack(batch)
                    batch, size = [], nxt.ByteSize()
                batch.append(nxt)
            yield pack(batch)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
