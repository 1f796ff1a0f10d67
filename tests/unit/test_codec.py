"""Core messages <-> protobuf: round trips over the wire, malformed input."""

from __future__ import annotations

import asyncio
from typing import get_args

import pytest

from paxos.common import limits
from paxos.consensus.messages import (
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
from paxos.server.codec import DecodeError, PeerCodec, pack, unpack
from protos import peer_pb2 as pb

CLUSTER_ID = 0x5EED
ME = 9  # the receiving member; the senders below are the others
MEMBERS = [0, 1, 2, 3, 4, ME]
BIG = limits.MAX_SLOT  # the largest slot and index the codec lets through
ROUND = limits.MAX_BALLOT_ROUND

MESSAGES: list[Message] = [
    PreVote(1, Ballot(4, 1)),
    PreVoteReply(2, Ballot(4, 1), True),
    PreVoteReply(3, Ballot(4, 1), False),
    Prepare(0, Ballot(1, 0), 1),
    Prepare(4, Ballot(ROUND, 4), BIG),
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
    HeartbeatAck(2, Ballot(5, 0), 2**64 - 1, 12),  # a sequence number is only compared
    CatchupRequest(3, 1),
    CatchupRequest(3, BIG),
    CatchupReply(0, 4, ((b"a",), NOOP, (b"b", b"c")), 6),
    CatchupReply(0, 7, (), 6),  # nothing new to send: first_slot is commit_index + 1
    CatchupReply(0, 2, (), 9, 5),  # compacted: fetch the snapshot
]

RECEIVER = PeerCodec(CLUSTER_ID, ME, MEMBERS, 7)


def sender_codec(member: int) -> PeerCodec:
    return PeerCodec(CLUSTER_ID, member, MEMBERS, 7)


def encode(msg: Message) -> pb.PeerMessage:
    return sender_codec(msg.sender).encode(msg, ME)


def decode(raw: pb.PeerMessage) -> Message:
    return RECEIVER.decode(raw)


def over_the_wire(msg: Message) -> Message:
    raw = encode(msg).SerializeToString()
    return decode(pb.PeerMessage.FromString(raw))


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_encode_and_decode(msg: Message) -> None:
    assert over_the_wire(msg) == msg


def test_every_message_kind_is_covered() -> None:
    assert {type(m) for m in MESSAGES} == set(get_args(Message))
    bodies = {f.name for f in pb.PeerMessage.DESCRIPTOR.oneofs_by_name["body"].fields}
    assert {encode(m).WhichOneof("body") for m in MESSAGES} == bodies


def test_empty_catchup_reply_keeps_its_first_slot() -> None:
    # The receiver matches a reply to its request by the first slot.
    decoded = over_the_wire(CatchupReply(0, 3, (), 6))
    assert isinstance(decoded, CatchupReply)
    assert (decoded.first_slot, decoded.values, decoded.commit_index) == (3, (), 6)


def test_catchup_entries_must_start_at_the_first_slot() -> None:
    raw = _raw(catchup_reply=pb.CatchupReply(entries=[pb.Entry(slot=4)], commit_index=9, first_slot=3))
    with pytest.raises(DecodeError, match="not consecutive"):
        decode(raw)


# ---------------------------------------------------------------- malformed


def _raw(**body: object) -> pb.PeerMessage:
    return pb.PeerMessage(sender=1, cluster_id=CLUSTER_ID, receiver=ME, incarnation=7, **body)  # type: ignore[arg-type]


def _ballot() -> pb.Ballot:
    return pb.Ballot(round=1, node=1)


@pytest.mark.parametrize("sender", [5, 8, 2**64 - 1])
def test_sender_outside_the_cluster_is_refused(sender: int) -> None:
    raw = encode(Heartbeat(0, Ballot(1, 0), 0, 1))
    raw.sender = sender
    with pytest.raises(DecodeError, match="sender is not a member") as caught:
        decode(raw)
    assert caught.value.reason == "sender is not a member"


def test_every_member_but_the_receiver_is_a_valid_sender() -> None:
    for member in MEMBERS[:-1]:
        assert over_the_wire(Heartbeat(member, Ballot(1, member), 0, 1)).sender == member
    raw = encode(Heartbeat(0, Ballot(1, 0), 0, 1))
    raw.sender = ME
    with pytest.raises(DecodeError, match="claims to come from this server"):
        decode(raw)


def test_message_for_another_cluster_or_receiver_is_refused() -> None:
    raw = encode(Heartbeat(0, Ballot(1, 0), 0, 1))
    raw.cluster_id = CLUSTER_ID + 1
    with pytest.raises(DecodeError, match="another cluster"):
        decode(raw)
    raw = encode(Heartbeat(0, Ballot(1, 0), 0, 1))
    raw.receiver = 3
    with pytest.raises(DecodeError, match="addressed to another member"):
        decode(raw)


def test_a_broadcast_is_addressed_per_receiver() -> None:
    wire = sender_codec(0).encode(Heartbeat(0, Ballot(1, 0), 0, 1))
    copy = PeerCodec.addressed(wire, ME)
    assert decode(copy) == Heartbeat(0, Ballot(1, 0), 0, 1)
    assert wire.receiver == 0, "the shared envelope is not changed"


@pytest.mark.parametrize(
    "raw",
    [
        _raw(heartbeat=pb.Heartbeat(ballot=pb.Ballot(round=2**64 - 1, node=1))),
        _raw(heartbeat=pb.Heartbeat(ballot=pb.Ballot(round=ROUND + 1, node=1))),
        _raw(pre_vote=pb.PreVote(ballot=pb.Ballot(round=1, node=2**64 - 1))),
        _raw(accept=pb.Accept(ballot=pb.Ballot(round=1, node=1), slot=BIG + 1)),
        _raw(accept=pb.Accept(ballot=pb.Ballot(round=1, node=1), slot=5, commit_index=BIG + 1)),
        _raw(heartbeat=pb.Heartbeat(ballot=pb.Ballot(round=1, node=1), commit_index=2**64 - 1)),
        _raw(catchup_request=pb.CatchupRequest(from_slot=2**64 - 1)),
        _raw(reject=pb.Reject(promised=pb.Ballot(round=ROUND + 1, node=1))),
        _raw(promise=pb.Promise(ballot=_ballot(), accepted=[pb.Entry(slot=3, ballot=pb.Ballot(round=2**63))])),
    ],
    ids=[
        "round-max-u64",
        "round-above-bound",
        "ballot-member",
        "slot",
        "commit-index",
        "heartbeat-commit",
        "catchup-from",
        "reject-round",
        "promise-entry-round",
    ],
)
def test_numbers_out_of_range_are_refused(raw: pb.PeerMessage) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(pb.PeerMessage.FromString(raw.SerializeToString()))
    assert caught.value.reason == "out of range"


def _accept_of(commands: list[bytes]) -> pb.PeerMessage:
    return _raw(accept=pb.Accept(ballot=_ballot(), slot=1, value=pb.Value(commands=commands)))


def test_values_on_the_peer_path_obey_the_size_limits() -> None:
    at_limit = b"v" * limits.MAX_COMMAND_BYTES
    assert isinstance(decode(_accept_of([at_limit])), Accept)
    for commands in (
        [at_limit + b"v"],  # one command too large
        [b"c"] * (limits.MAX_BATCH_COMMANDS + 1),  # too many commands in a slot
        [at_limit] * (limits.MAX_SLOT_VALUE_BYTES // limits.MAX_COMMAND_BYTES + 1),  # a slot too large
    ):
        with pytest.raises(DecodeError) as caught:
            decode(_accept_of(commands))
        assert caught.value.reason == "too large"


def test_entry_counts_are_bounded() -> None:
    entries = [pb.Entry(slot=i + 1) for i in range(limits.MAX_CATCHUP_ENTRIES + 1)]
    with pytest.raises(DecodeError, match="catch-up entries"):
        decode(_raw(catchup_reply=pb.CatchupReply(entries=entries, commit_index=len(entries))))
    entries = [pb.Entry(slot=i + 1, ballot=_ballot()) for i in range(limits.MAX_ACCEPT_WINDOW + 1)]
    with pytest.raises(DecodeError, match="promise entries"):
        decode(_raw(promise=pb.Promise(ballot=_ballot(), accepted=entries)))


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
    with pytest.raises(DecodeError, match="slots run from 1"):
        decode(raw)


def test_empty_body_is_refused() -> None:
    with pytest.raises(DecodeError, match="without a known body"):
        decode(_raw())
    with pytest.raises(DecodeError, match="another cluster"):
        decode(pb.PeerMessage.FromString(b""))


@pytest.mark.parametrize("slots", [[1, 3], [2, 1], [5, 5], [4, 5, 7]])
def test_catchup_entries_must_be_consecutive(slots: list[int]) -> None:
    raw = _raw(catchup_reply=pb.CatchupReply(entries=[pb.Entry(slot=s) for s in slots], commit_index=9))
    with pytest.raises(DecodeError, match="not consecutive"):
        decode(raw)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


# ------------------------------------------------------------------ packing


def test_packed_messages_arrive_in_order() -> None:
    codec = PeerCodec(CLUSTER_ID, 1, MEMBERS, 7)
    sent = [MESSAGES[0], MESSAGES[3], MESSAGES[1]]
    wires = [codec.encode(m, ME) for m in sent]
    envelope = pack(wires)
    assert len(envelope.packed) == 3 and envelope.WhichOneof("body") is None
    receiver = PeerCodec(CLUSTER_ID, ME, MEMBERS, 7)
    assert [receiver.decode(w) for w in unpack(pb.PeerMessage.FromString(envelope.SerializeToString()))] == sent
    assert pack(wires[:1]) is wires[0]  # a lone message goes as it is
    assert list(unpack(wires[0])) == [wires[0]]


def test_packed_envelopes_are_bounded_and_do_not_nest() -> None:
    one = PeerCodec(CLUSTER_ID, 1, MEMBERS, 7).encode(MESSAGES[0], ME)
    too_many = pb.PeerMessage(packed=[one] * (limits.MAX_PEER_PACKED_MESSAGES + 1))
    with pytest.raises(DecodeError, match="packed messages"):
        unpack(too_many)
    nested = pb.PeerMessage(packed=[one, pack([one, one])])
    with pytest.raises(DecodeError, match="nested"):
        unpack(nested)
    with_body = pb.PeerMessage(packed=[one, one])
    with_body.heartbeat.CopyFrom(pb.Heartbeat(ballot=_ballot()))
    with pytest.raises(DecodeError, match="body of its own"):
        unpack(with_body)


def test_a_peer_link_sends_everything_queued_in_one_message() -> None:
    from paxos.common.hostfile import Member
    from paxos.server.service import _PeerLink

    codec = PeerCodec(CLUSTER_ID, 1, MEMBERS, 7)
    wires = [codec.encode(m, ME) for m in MESSAGES[:5]]

    async def first_two_sent() -> list[pb.PeerMessage]:
        link = _PeerLink(Member("peer", "127.0.0.1", 1))
        outgoing = link._outgoing()
        for wire in wires[:4]:
            link.send(wire)
        first = await anext(outgoing)
        link.send(wires[4])
        return [first, await anext(outgoing)]

    first, second = asyncio.run(first_two_sent())
    assert list(first.packed) == wires[:4]
    assert second == wires[4]  # queued alone: not wrapped


def test_a_message_without_its_senders_incarnation_is_refused() -> None:
    raw = _raw(heartbeat=pb.Heartbeat(ballot=_ballot(), commit_index=0, seq=1))
    assert RECEIVER.decode(raw).sender == 1
    raw.incarnation = 0  # what a server from before incarnations sends
    with pytest.raises(DecodeError, match="no incarnation"):
        RECEIVER.decode(raw)


def test_packing_keeps_the_senders_incarnation() -> None:
    codec = PeerCodec(CLUSTER_ID, 1, MEMBERS, 2**64 - 1)
    packed = pack([codec.encode(m, ME) for m in MESSAGES[:2]])
    assert packed.incarnation == 2**64 - 1
    assert all(inner.incarnation == 2**64 - 1 for inner in unpack(packed))
