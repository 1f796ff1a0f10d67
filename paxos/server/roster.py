"""Whom this server takes peer messages from and sends them to, following the configuration.

The address book (addressbook.py) and the members the codec takes messages
from (codec.py) follow the configuration together; what goes out goes only
to a member the book has an address for.  The gRPC server (service.py) and
the simulator (tests/sim/host.py) both follow the configuration through a
``Roster``, at the same moments, so the simulator runs this code and not a
copy of it.  Pure: no gRPC, no asyncio.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from paxos.consensus.membership import Membership
from paxos.consensus.messages import Message, NodeId
from paxos.server.addressbook import AddressBook
from paxos.server.codec import PeerCodec
from protos import peer_pb2


class Roster:
    """The address book and the codec, following the same configuration."""

    def __init__(self, book: AddressBook, codec: PeerCodec) -> None:
        self.book = book
        self.codec = codec

    def follow(self, membership: Membership) -> None:
        """Know the names and addresses of ``membership``'s members, and take messages from them."""
        self.book.follow(membership)
        self.codec.members = frozenset(self.book.members)

    def envelopes(
        self, messages: Iterable[tuple[NodeId, Message]], blocked: Container[NodeId]
    ) -> list[tuple[NodeId, peer_pb2.PeerMessage]]:
        """Each message's envelope, for a receiver the book has an address for and that is not ``blocked``.

        A message to a server the book does not know has nowhere to go and
        is dropped (the protocol sends again what matters).  A broadcast is
        one message object sent to every peer: it is encoded once, for its
        first receiver, and that envelope copied for each other one.
        """
        members = self.book.members
        encoded: dict[int, peer_pb2.PeerMessage] = {}
        out: list[tuple[NodeId, peer_pb2.PeerMessage]] = []
        for to, msg in messages:
            if to in blocked or to not in members:
                continue
            wire = encoded.get(id(msg))
            if wire is None:
                wire = encoded[id(msg)] = self.codec.encode(msg, to)
            else:
                wire = self.codec.addressed(wire, to)
            out.append((to, wire))
        return out
