"""Translation between core messages and their protobuf form (protos/peer.proto).

Everything a peer sends is hostile until checked.  ``PeerCodec.decode``
refuses, with a ``DecodeError`` naming the reason, any message that is not
for this cluster and this server, any sender that is not a member, and any
number or size outside the bounds in ``paxos.common.limits``; what passes is safe
for the core to hold and to count on (no field it adds one to can overflow
the wire format).  What only the core can judge (a ballot far above any
seen, a slot beyond the accept window, an unsolicited catch-up reply) it
judges itself: see ``Node.receive``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import assert_never

from paxos import incarnation as incarnations
from paxos.common import limits, versions
from paxos.consensus.messages import (
    Accept,
    Accepted,
    AcceptedEntry,
    Ballot,
    CatchupReply,
    CatchupRequest,
    Heartbeat,
    HeartbeatAck,
    Message,
    NodeId,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    Reject,
    Value,
)
from protos import peer_pb2 as pb


class DecodeError(ValueError):
    """A peer message that must not reach the core; it is dropped.

    ``reason`` is short and fixed (for counting), the message says more.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def _ballot(b: Ballot) -> pb.Ballot:
    return pb.Ballot(round=b.round, node=b.node)


def _fill_ballot(out: pb.Ballot, b: Ballot) -> None:
    out.round = b.round
    out.node = b.node


def _value(v: Value) -> pb.Value:
    return pb.Value(commands=v)


def encode_body(msg: Message, out: pb.PeerMessage) -> None:
    """Fill ``out``'s body, which must not be set yet, with ``msg``."""
    # The messages of every write and heartbeat are filled in place: a
    # message built alone and then set into ``out`` would be copied whole,
    # commands and all.  (Assigning a field, even a default, sets the body.)
    match msg:
        case Accept():
            accept = out.accept
            _fill_ballot(accept.ballot, msg.ballot)
            accept.slot = msg.slot
            accept.value.commands.extend(msg.value)
            accept.commit_index = msg.commit_index
        case Accepted():
            accepted = out.accepted
            _fill_ballot(accepted.ballot, msg.ballot)
            accepted.slot = msg.slot
        case Heartbeat():
            heartbeat = out.heartbeat
            _fill_ballot(heartbeat.ballot, msg.ballot)
            heartbeat.commit_index = msg.commit_index
            heartbeat.seq = msg.seq
        case HeartbeatAck():
            ack = out.heartbeat_ack
            _fill_ballot(ack.ballot, msg.ballot)
            ack.seq = msg.seq
            ack.commit_index = msg.commit_index
        case Prepare():
            out.prepare.CopyFrom(pb.Prepare(ballot=_ballot(msg.ballot), from_slot=msg.from_slot))
        case Promise():
            entries = [pb.Entry(slot=e.slot, ballot=_ballot(e.ballot), value=_value(e.value)) for e in msg.accepted]
            out.promise.CopyFrom(
                pb.Promise(ballot=_ballot(msg.ballot), commit_index=msg.commit_index, accepted=entries)
            )
        case Reject():
            out.reject.CopyFrom(pb.Reject(promised=_ballot(msg.promised), slot=msg.slot))
        case PreVote():
            out.pre_vote.CopyFrom(pb.PreVote(ballot=_ballot(msg.ballot)))
        case PreVoteReply():
            out.pre_vote_reply.CopyFrom(pb.PreVoteReply(ballot=_ballot(msg.ballot), granted=msg.granted))
        case CatchupRequest():
            out.catchup_request.CopyFrom(pb.CatchupRequest(from_slot=msg.from_slot))
        case CatchupReply():
            entries = [pb.Entry(slot=msg.first_slot + i, value=_value(v)) for i, v in enumerate(msg.values)]
            out.catchup_reply.CopyFrom(
                pb.CatchupReply(
                    entries=entries, commit_index=msg.commit_index, compacted=msg.compacted, first_slot=msg.first_slot
                )
            )
        case _:
            assert_never(msg)


def unpack(raw: pb.PeerMessage) -> Sequence[pb.PeerMessage]:
    """The messages an envelope carries: itself, or the ones packed in it (checked for bounds and nesting)."""
    if not raw.packed:
        return (raw,)
    if raw.WhichOneof("body") is not None:
        raise DecodeError("packed envelope with a body of its own")
    _count(raw.packed, limits.MAX_PEER_PACKED_MESSAGES, "packed messages")
    if any(inner.packed for inner in raw.packed):
        raise DecodeError("packed envelopes nested")
    return raw.packed


def pack(messages: Sequence[pb.PeerMessage]) -> pb.PeerMessage:
    """One envelope for ``messages`` (all for the same receiver); a lone message goes as it is."""
    assert messages, "nothing to pack"
    if len(messages) == 1:
        return messages[0]
    first = messages[0]
    return pb.PeerMessage(
        sender=first.sender,
        cluster_id=first.cluster_id,
        receiver=first.receiver,
        incarnation=first.incarnation,
        max_cluster_version=first.max_cluster_version,
        packed=messages,
    )


class PeerCodec:
    """Encodes this server's messages and checks everything it receives."""

    def __init__(
        self,
        cluster_id: int,
        me: NodeId,
        members: Iterable[NodeId],
        incarnation: int,
        max_cluster_version: int = versions.MAX_CLUSTER_VERSION,
    ) -> None:
        """``incarnation``: this server's data dir's (paxos/incarnation.py), sent with every message.

        ``max_cluster_version``: the highest cluster version this server
        reports it runs, also sent with every message (paxos/clusterversion.py).
        """
        assert incarnations.valid(incarnation), "a server sends its own incarnation, never none"
        assert versions.BASE_CLUSTER_VERSION <= max_cluster_version <= versions.MAX_CLUSTER_VERSION
        self.cluster_id = cluster_id
        self.me = me
        self.members = frozenset(members)
        self.incarnation = incarnation
        self.max_cluster_version = max_cluster_version

    def encode(self, msg: Message, to: NodeId | None = None) -> pb.PeerMessage:
        """The envelope for ``msg``; ``to`` may be left for ``addressed``."""
        out = pb.PeerMessage(
            sender=msg.sender,
            cluster_id=self.cluster_id,
            receiver=to or 0,
            incarnation=self.incarnation,
            max_cluster_version=self.max_cluster_version,
        )
        encode_body(msg, out)
        return out

    @staticmethod
    def addressed(wire: pb.PeerMessage, to: NodeId) -> pb.PeerMessage:
        """A copy of an envelope for one receiver (a broadcast is encoded once)."""
        copy = pb.PeerMessage()
        copy.CopyFrom(wire)
        copy.receiver = to
        return copy

    def decode(self, raw: pb.PeerMessage, any_sender: bool = False) -> Message:
        """Rebuild a core message, refusing anything the core must never see.

        ``any_sender``: the transport proved the sender a member of this
        cluster that this server does not know yet (paxos/server/ingress.py).
        Whether the sender's incarnation (``raw.incarnation``, checked to be
        present here) is the one it is known by is the replica's to judge.
        """
        if raw.cluster_id != self.cluster_id:
            raise DecodeError("another cluster", f"cluster id {raw.cluster_id:016x}")
        if not incarnations.valid(raw.incarnation):
            raise DecodeError("no incarnation", "the sender names no data-dir incarnation (a server from before them)")
        if raw.receiver != self.me:
            raise DecodeError("addressed to another member", f"receiver {raw.receiver:016x}")
        sender = raw.sender
        if sender == self.me:
            raise DecodeError("claims to come from this server")
        if any_sender:
            if not 0 < sender <= limits.MAX_MEMBER_ID:
                raise DecodeError("sender is not a member", f"sender {sender:016x}")
        elif sender not in self.members:
            raise DecodeError("sender is not a member", f"sender {sender:016x}")
        return decode_body(raw, sender)


def decode_body(raw: pb.PeerMessage, sender: NodeId) -> Message:
    kind = raw.WhichOneof("body")
    match kind:
        case "accept":
            m = raw.accept
            return Accept(sender, _from_ballot(m.ballot), _slot(m.slot), _from_value(m.value), _index(m.commit_index))
        case "accepted":
            return Accepted(sender, _from_ballot(raw.accepted.ballot), _slot(raw.accepted.slot))
        case "heartbeat":
            h = raw.heartbeat
            return Heartbeat(sender, _from_ballot(h.ballot), _index(h.commit_index), h.seq)
        case "heartbeat_ack":
            a = raw.heartbeat_ack
            return HeartbeatAck(sender, _from_ballot(a.ballot), a.seq, _index(a.commit_index))
        case "prepare":
            return Prepare(sender, _from_ballot(raw.prepare.ballot), _slot(raw.prepare.from_slot))
        case "promise":
            p = raw.promise
            _count(p.accepted, limits.MAX_ACCEPT_WINDOW, "promise entries")
            entries = tuple(
                AcceptedEntry(_slot(e.slot), _from_ballot(e.ballot), _from_value(e.value)) for e in p.accepted
            )
            return Promise(sender, _from_ballot(p.ballot), _index(p.commit_index), entries)
        case "reject":
            # Slot 0 answers a prepare or a heartbeat.
            return Reject(sender, _from_ballot(raw.reject.promised), _index(raw.reject.slot))
        case "pre_vote":
            return PreVote(sender, _from_ballot(raw.pre_vote.ballot))
        case "pre_vote_reply":
            return PreVoteReply(sender, _from_ballot(raw.pre_vote_reply.ballot), raw.pre_vote_reply.granted)
        case "catchup_request":
            return CatchupRequest(sender, _slot(raw.catchup_request.from_slot))
        case "catchup_reply":
            r = raw.catchup_reply
            _count(r.entries, limits.MAX_CATCHUP_ENTRIES, "catch-up entries")
            commit_index = _index(r.commit_index)
            compacted = _index(r.compacted)
            if r.first_slot:
                first = _slot(r.first_slot)
            else:
                first = _slot(r.entries[0].slot) if r.entries else commit_index + 1
            for offset, e in enumerate(r.entries):
                if e.slot != first + offset:
                    raise DecodeError("malformed", "catch-up reply entries are not consecutive from its first slot")
            values = tuple(_from_value(e.value) for e in r.entries)
            return CatchupReply(sender, first, values, commit_index, compacted)
        case _:
            raise DecodeError("malformed", f"peer message without a known body ({kind!r})")


def _from_ballot(b: pb.Ballot) -> Ballot:
    if b.round > limits.MAX_BALLOT_ROUND:
        raise DecodeError("out of range", f"ballot round {b.round}")
    if b.node > limits.MAX_MEMBER_ID:
        raise DecodeError("out of range", f"ballot member {b.node}")
    return Ballot(b.round, b.node)


def _slot(slot: int) -> int:
    if not 1 <= slot <= limits.MAX_SLOT:
        raise DecodeError("out of range", f"slot {slot} (slots run from 1 to {limits.MAX_SLOT})")
    return slot


def _index(index: int) -> int:
    """A commit index: a slot, or 0 before anything is chosen."""
    if index > limits.MAX_SLOT:
        raise DecodeError("out of range", f"index {index}")
    return index


def _count(items: Sequence[object], most: int, what: str) -> None:
    if len(items) > most:
        raise DecodeError("too large", f"{len(items)} {what}; at most {most}")


def _from_value(v: pb.Value) -> Value:
    """A slot's value, within the bounds a leader's batches keep to."""
    _count(v.commands, limits.MAX_BATCH_COMMANDS, "commands in one slot")
    value = tuple(v.commands)
    total = 0
    for command in value:
        if len(command) > limits.MAX_COMMAND_BYTES:
            raise DecodeError("too large", f"a command of {len(command)} bytes; at most {limits.MAX_COMMAND_BYTES}")
        total += len(command)
    if total > limits.MAX_SLOT_VALUE_BYTES:
        raise DecodeError("too large", f"a slot value of {total} bytes; at most {limits.MAX_SLOT_VALUE_BYTES}")
    return value
