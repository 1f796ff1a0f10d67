"""What peers send this server, checked before the replica sees it, and the questions peers ask.

A peer stream's messages pass the codec (paxos/server/codec.py: every bound,
the cluster, the receiver, a known sender), then, under TLS, the check that
the certificate which opened the stream names the sender.  A refused
message changes nothing but a counter and a log line once per interval
(paxos/server/refusals.py).  The gRPC servicer (paxos/server/services.py)
hands over what it read and who the certificate names; the decisions here
read no gRPC call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Container

from paxos.consensus.messages import NodeId
from paxos.replica import Replica
from paxos.server.addressbook import AddressBook
from paxos.server.codec import DecodeError, PeerCodec, unpack
from paxos.server.refusals import RefusalLog
from paxos.server.standing import Standing
from protos import peer_pb2


class PeerIngress:
    """Peer messages in, snapshot requests judged, and the configuration and incarnation questions answered."""

    def __init__(
        self,
        replica: Replica,
        codec: PeerCodec,
        book: AddressBook,
        standing: Standing,
        refusals: RefusalLog,
        received: Counter[NodeId],
        blocked: Container[NodeId],
        tls: bool,
    ) -> None:
        """``received`` counts the messages taken, by sender; ``blocked``: senders cut off by fault injection."""
        self._replica = replica
        self._codec = codec
        self._book = book
        self._standing = standing
        self._refusals = refusals
        self._received = received
        self._blocked = blocked
        self._tls = tls

    # ------------------------------------------------------ peer messages in

    def receive(
        self, raw: peer_pb2.PeerMessage, origin: str = "", certified: NodeId | None = None, cert_name: str = ""
    ) -> None:
        """One stream message from a peer, maybe packing several; ``origin`` is the transport's peer address.

        ``certified`` is the member whose certificate opened the stream (with
        TLS); a message claiming any other sender is refused.  ``cert_name``
        instead names the member by its certificate's name, looked up for
        each message: the name's member id may change while the stream is
        open (a server added after it connected, or re-added under its old
        name).  While the configuration holds no member of that name, its
        messages may claim only ids no known member has.
        """
        try:
            messages = unpack(raw)
        except DecodeError as exc:
            self._refusals.note(self.label(raw.sender, origin), exc.reason, str(exc))
            return
        unbound = ""
        if cert_name:
            certified = self._book.ids_by_name.get(cert_name)
            unbound = cert_name if certified is None else ""
        for one in messages:
            self._receive_one(one, origin, certified, unbound)

    def _receive_one(self, raw: peer_pb2.PeerMessage, origin: str, certified: NodeId | None, unbound: str) -> None:
        members = self._book.members
        if unbound:
            if raw.sender in members:
                self._refusals.note(
                    self.label(raw.sender, origin),
                    "sender is not the member named by the certificate",
                    f"certificate of {unbound!r}",
                )
                return
            # The core judges it: a non-member's heartbeat only tells this
            # server to catch up.
            try:
                msg = self._codec.decode(raw, any_sender=True)
            except DecodeError as exc:
                self._refusals.note(self.label(raw.sender, origin), exc.reason, str(exc))
                return
            self._replica.receive(msg, raw.incarnation, raw.max_cluster_version)
            return
        try:
            # A sender this server does not know may be a member added while
            # it was away: the core takes only a hint to catch up from it.
            msg = self._codec.decode(raw, any_sender=not self._tls and raw.sender not in members)
        except DecodeError as exc:
            self._refusals.note(self.label(raw.sender, origin), exc.reason, str(exc))
            return
        if certified is not None and msg.sender != certified:
            self._refusals.note(
                self.label(raw.sender, origin),
                "sender is not the member named by the certificate",
                f"certificate of {self._book.name_of(certified)}",
            )
            return
        if msg.sender in self._blocked:
            return
        self._received[msg.sender] += 1
        self._replica.receive(msg, raw.incarnation, raw.max_cluster_version)

    def label(self, sender: int, origin: str) -> str:
        """How a refusal names where a message came from, and whom it claimed to be from."""
        member = self._book.members.get(sender)
        claimed = f"claimed member {member.name}" if member else "a non-member"
        return f"{origin or 'unknown address'} ({claimed})"

    # ------------------------------------------------------ who is asking

    def member_certified(self, name: str | None, why: str) -> tuple[NodeId | None, str]:
        """The member whose certificate carries ``name`` (None: none, for ``why``), or None and why not."""
        if name is None:
            return None, why
        member_id = self._book.ids_by_name.get(name)
        return member_id, "" if member_id is not None else f"certificate of {name!r}, not a member"

    def snapshot_request_refusal(self, request: peer_pb2.SnapshotRequest) -> str | None:
        """Why a peer's snapshot request is refused, or None."""
        standing = self._standing
        if request.cluster_id != standing.cluster_id:
            return "another cluster"
        if request.receiver != standing.node_id:
            return "addressed to another member"
        if request.sender not in self._book.members or request.sender == standing.node_id:
            return "sender is not a member"
        if request.sender in self._blocked:
            return "partitioned (fault injection)"
        return None

    # ------------------------------------------------------ peers' questions

    def incarnation_reply(self, request: peer_pb2.IncarnationRequest) -> peer_pb2.IncarnationReply:
        """What this server recorded of the asker: by the member id it asks with, or its name's id here."""
        ids = [request.member_id]
        by_name = self._book.ids_by_name.get(request.name)
        if by_name is not None:
            ids.append(by_name)
        recorded = self._replica.incarnations.recorded_for(ids)
        # A server started with --join learned from the cluster that it
        # exists: it is never fresh.  Counted as fresh, servers waiting to be
        # added could outnumber the members in the hostfile and let a member
        # that lost its disk found anew over the data the others still hold.
        fresh = self._replica.untouched and not self._standing.identity.joining
        return peer_pb2.IncarnationReply(cluster_id=self._standing.cluster_id, fresh=fresh, recorded=recorded)

    def configuration_reply(self) -> peer_pb2.ConfigurationReply:
        """The configuration as this server knows it, and this server's place in it (asked by a joiner)."""
        core, standing = self._replica.core, self._standing
        return peer_pb2.ConfigurationReply(
            cluster_id=standing.cluster_id,
            members=[
                peer_pb2.ConfigurationMember(id=m.id, name=m.name, address=m.address, voter=m.voter)
                for m in core.membership.members
            ],
            leader=self._book.hint(core.leader),
            name=standing.me.name,
            member_id=standing.node_id,
            membership=standing.state(core.membership),
            max_cluster_version=self._replica.max_cluster_version,
        )
