"""Core messages <-> protobuf: round trips over the wire, malformed input."""

from __future__ import annotations

from typing import get_args

import pytest

from paxos.codec import DecodeError, decode, encode
from paxos.messages import (
    NOOP,
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
)
from protos import peer_pb2 as pb

CLUSTER = 5
BIG = 2**63 + 5  # uint64 fields must keep their full range

MESSAGES: list[Message] = [
    PreVote(1, Ballot(4, 1)),
    PreVoteReply(2, Ballot(4, 1), True),
    PreVoteReply(3, Ballot(4, 1), False),
    Prepare(0, Ballot(1, 0), 1),
    Prepare(4, Ballot(BIG, 4), BIG),
    Promise(2, Ballot(3, 1), 0, ()),
    Promise(
        2,
        Ballot(3, 1),
        7,
        (
            AcceptedEntry(8, Ballot(2, 0), (b"a", b"", b"\x00\xff")),
            AcceptedEntry(10, Ballot(3, 1), NOOP),
        ),
    ),
    Accept(1, Ballot(2, 1), 1, (b"cmd",), 0),
    Accept(1, Ballot(2, 1), BIG, NOOP, BIG - 1),
    Accept(1, Ballot(2, 1), 3, tuple(bytes([i]) * i for i in range(50)), 2),
    Accepted(3, Ballot(2, 1), 9),
    Reject(4, Ballot(9, 2), 0),
    Reject(4, Ballot(9, 2), 17),
    Heartbeat(0, Ballot(5, 0), 12, 99),
    HeartbeatAck(2, Ballot(5, 0), 99, 12),
    CatchupRequest(3, 1),
    CatchupRequest(3, BIG),
    CatchupReply(0, 4, ((b"a",), NOOP, (b"b", b"c")), 6),
    CatchupReply(0, 7, (), 6),  # nothing new to send: first_slot is commit_index + 1
]


def over_the_wire(msg: Message) -> Message:
    raw = encode(msg).SerializeToString()
    return decode(pb.PeerMessage.FromString(raw), CLUSTER)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_encode_and_decode(msg: Message) -> None:
    assert over_the_wire(msg) == msg


def test_every_message_kind_is_covered() -> None:
    assert {type(m) for m in MESSAGES} == set(get_args(Message))
    bodies = {f.name for f in pb.PeerMessage.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert {encode(m).WhichOneof("body") for m in MESSAGES} == bodies


def test_empty_catchup_reply_keeps_its_meaning() -> None:
    # An empty reply has no entry to carry its first slot; only the values
    # and the commit index matter to the receiver.
    decoded = over_the_wire(CatchupReply(0, 3, (), 6))
    assert isinstance(decoded, CatchupReply)
    assert (decoded.values, decoded.commit_index) == ((), 6)


# ---------------------------------------------------------------- malformed


def _raw(**body: object) -> pb.PeerMessage:
    return pb.PeerMessage(sender=1, **body)  # type: ignore[arg-type]


def _ballot() -> pb.Ballot:
    return pb.Ballot(round=1, node=1)


@pytest.mark.parametrize("sender", [CLUSTER, CLUSTER + 1, 2**32 - 1])
def test_sender_outside_the_cluster_is_refused(sender: int) -> None:
    raw = encode(Heartbeat(0, Ballot(1, 0), 0, 1))
    raw.sender = sender
    with pytest.raises(DecodeError, match=f"sender {sender} is not a member of this {CLUSTER}-server cluster"):
        decode(raw, CLUSTER)


def test_last_member_is_a_valid_sender() -> None:
    assert over_the_wire(Heartbeat(CLUSTER - 1, Ballot(1, 0), 0, 1)).sender == CLUSTER - 1


@pytest.mark.parametrize(
    "raw",
    [
        _raw(accept=pb.Accept(ballot=_ballot(), slot=0)),
        _raw(prepare=pb.Prepare(ballot=_ballot(), from_slot=0)),
        _raw(promise=pb.Promise(ballot=_ballot(), accepted=[pb.Entry(slot=3), pb.Entry(slot=0)])),
        _raw(catchup_request=pb.CatchupRequest(from_slot=0)),
        _raw(catchup_reply=pb.CatchupReply(entries=[pb.Entry(slot=0), pb.Entry(slot=1)], commit_index=1)),
    ],
    ids=["accept", "prepare", "promise-entry", "catchup-request", "catchup-reply"],
)
def test_slot_zero_is_refused(raw: pb.PeerMessage) -> None:
    with pytest.raises(DecodeError, match="slot numbers start at 1"):
        decode(raw, CLUSTER)


def test_empty_body_is_refused() -> None:
    with pytest.raises(DecodeError, match="without a known body"):
        decode(pb.PeerMessage(sender=1), CLUSTER)
    with pytest.raises(DecodeError, match="without a known body"):
        decode(pb.PeerMessage.FromString(b""), CLUSTER)


@pytest.mark.parametrize("slots", [[1, 3], [2, 1], [5, 5], [4, 5, 7]])
def test_catchup_entries_must_be_consecutive(slots: list[int]) -> None:
    raw = _raw(catchup_reply=pb.CatchupReply(entries=[pb.Entry(slot=s) for s in slots], commit_index=9))
    with pytest.raises(DecodeError, match="not consecutive"):
        decode(raw, CLUSTER)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)
