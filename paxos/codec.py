"""Translation between core messages and their protobuf form (protos/peer.proto)."""

from __future__ import annotations

from paxos.messages import (
    Accept,
    Accepted,
    AcceptedEntry,
    Ballot,
    CatchupReply,
    CatchupRequest,
    Heartbeat,
    HeartbeatAck,
    Message,
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    Reject,
    Value,
)
from protos import peer_pb2 as pb


class DecodeError(ValueError):
    """A peer message that does not make sense; it is dropped."""


def _ballot(b: Ballot) -> pb.Ballot:
    return pb.Ballot(round=b.round, node=b.node)


def _from_ballot(b: pb.Ballot) -> Ballot:
    return Ballot(b.round, b.node)


def _value(v: Value) -> pb.Value:
    return pb.Value(commands=v)


def encode(msg: Message) -> pb.PeerMessage:
    out = pb.PeerMessage(sender=msg.sender)
    if isinstance(msg, Accept):
        out.accept.CopyFrom(
            pb.Accept(ballot=_ballot(msg.ballot), slot=msg.slot, value=_value(msg.value), commit_index=msg.commit_index)
        )
    elif isinstance(msg, Accepted):
        out.accepted.CopyFrom(pb.Accepted(ballot=_ballot(msg.ballot), slot=msg.slot))
    elif isinstance(msg, Heartbeat):
        out.heartbeat.CopyFrom(pb.Heartbeat(ballot=_ballot(msg.ballot), commit_index=msg.commit_index, seq=msg.seq))
    elif isinstance(msg, HeartbeatAck):
        out.heartbeat_ack.CopyFrom(
            pb.HeartbeatAck(ballot=_ballot(msg.ballot), seq=msg.seq, commit_index=msg.commit_index)
        )
    elif isinstance(msg, Prepare):
        out.prepare.CopyFrom(pb.Prepare(ballot=_ballot(msg.ballot), from_slot=msg.from_slot))
    elif isinstance(msg, Promise):
        entries = [pb.Entry(slot=e.slot, ballot=_ballot(e.ballot), value=_value(e.value)) for e in msg.accepted]
        out.promise.CopyFrom(pb.Promise(ballot=_ballot(msg.ballot), commit_index=msg.commit_index, accepted=entries))
    elif isinstance(msg, Reject):
        out.reject.CopyFrom(pb.Reject(promised=_ballot(msg.promised), slot=msg.slot))
    elif isinstance(msg, PreVote):
        out.pre_vote.CopyFrom(pb.PreVote(ballot=_ballot(msg.ballot)))
    elif isinstance(msg, PreVoteReply):
        out.pre_vote_reply.CopyFrom(pb.PreVoteReply(ballot=_ballot(msg.ballot), granted=msg.granted))
    elif isinstance(msg, CatchupRequest):
        out.catchup_request.CopyFrom(pb.CatchupRequest(from_slot=msg.from_slot))
    elif isinstance(msg, CatchupReply):
        entries = [pb.Entry(slot=msg.first_slot + i, value=_value(v)) for i, v in enumerate(msg.values)]
        out.catchup_reply.CopyFrom(pb.CatchupReply(entries=entries, commit_index=msg.commit_index))
    else:  # pragma: no cover - exhaustive over Message
        raise TypeError(f"cannot encode {type(msg).__name__}")
    return out


def decode(raw: pb.PeerMessage, cluster_size: int) -> Message:
    """Rebuild a core message, rejecting anything the core must never see."""
    sender = raw.sender
    if sender >= cluster_size:
        raise DecodeError(f"sender {sender} is not a member of this {cluster_size}-server cluster")
    kind = raw.WhichOneof("body")
    if kind == "accept":
        m = raw.accept
        _check_slot(m.slot)
        return Accept(sender, _from_ballot(m.ballot), m.slot, tuple(m.value.commands), m.commit_index)
    if kind == "accepted":
        return Accepted(sender, _from_ballot(raw.accepted.ballot), raw.accepted.slot)
    if kind == "heartbeat":
        h = raw.heartbeat
        return Heartbeat(sender, _from_ballot(h.ballot), h.commit_index, h.seq)
    if kind == "heartbeat_ack":
        a = raw.heartbeat_ack
        return HeartbeatAck(sender, _from_ballot(a.ballot), a.seq, a.commit_index)
    if kind == "prepare":
        _check_slot(raw.prepare.from_slot)
        return Prepare(sender, _from_ballot(raw.prepare.ballot), raw.prepare.from_slot)
    if kind == "promise":
        p = raw.promise
        entries = []
        for e in p.accepted:
            _check_slot(e.slot)
            entries.append(AcceptedEntry(e.slot, _from_ballot(e.ballot), tuple(e.value.commands)))
        return Promise(sender, _from_ballot(p.ballot), p.commit_index, tuple(entries))
    if kind == "reject":
        return Reject(sender, _from_ballot(raw.reject.promised), raw.reject.slot)
    if kind == "pre_vote":
        return PreVote(sender, _from_ballot(raw.pre_vote.ballot))
    if kind == "pre_vote_reply":
        return PreVoteReply(sender, _from_ballot(raw.pre_vote_reply.ballot), raw.pre_vote_reply.granted)
    if kind == "catchup_request":
        _check_slot(raw.catchup_request.from_slot)
        return CatchupRequest(sender, raw.catchup_request.from_slot)
    if kind == "catchup_reply":
        r = raw.catchup_reply
        first = r.entries[0].slot if r.entries else r.commit_index + 1
        for offset, e in enumerate(r.entries):
            if e.slot != first + offset:
                raise DecodeError("catch-up reply entries are not consecutive")
        _check_slot(first)
        return CatchupReply(sender, first, tuple(tuple(e.value.commands) for e in r.entries), r.commit_index)
    raise DecodeError(f"peer message without a known body ({kind!r})")


def _check_slot(slot: int) -> None:
    if slot < 1:
        raise DecodeError("slot numbers start at 1")
