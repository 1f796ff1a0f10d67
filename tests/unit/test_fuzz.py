"""Property-based fuzzing of the codec and the core, with plain calls.

Hypothesis throws random bytes, truncated and spliced encodings (a field
given twice merges or overrides), valid shapes with absurd values (huge
ballots and slots, empty and oversized fields, unknown enum values) and
sequences of valid-looking peer messages.  Whatever arrives: nothing but a
refusal is raised and what was chosen stays chosen.  A live server's two
services get the same treatment in tests/inprocess/test_fuzz.py.

CI runs a fixed, derandomized budget of examples per test.  For a longer,
random run set PAXOSKV_FUZZ_EXAMPLES, e.g.

    PAXOSKV_FUZZ_EXAMPLES=5000 python -m pytest tests/unit/test_fuzz.py tests/inprocess/test_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

from google.protobuf.message import DecodeError as ProtobufDecodeError
from hypothesis import given
from hypothesis import strategies as st

from paxos.common import limits
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
    Prepare,
    PreVote,
    PreVoteReply,
    Promise,
    Reject,
)
from paxos.server.codec import DecodeError, PeerCodec
from protos import peer_pb2
from tests.harness.corenet import Net, take
from tests.harness.fuzzing import fuzz_settings, mutated, peer_messages

# ------------------------------------------------------------------ codec

CLUSTER, ME, MEMBERS = 0x1234, 7, [7, 8, 9]


def _decode_or_refuse(codec: PeerCodec, raw: peer_pb2.PeerMessage) -> Message | None:
    try:
        return codec.decode(raw)
    except DecodeError:
        return None


@fuzz_settings(400)
@given(peer_messages(CLUSTER, ME, MEMBERS))
def test_codec_refuses_or_round_trips_any_message(raw: peer_pb2.PeerMessage) -> None:
    codec = PeerCodec(CLUSTER, ME, MEMBERS, 7)
    msg = _decode_or_refuse(codec, raw)
    if msg is None:
        return
    assert msg.sender in MEMBERS and msg.sender != ME
    again = PeerCodec(CLUSTER, msg.sender, MEMBERS, 7)
    wire = again.encode(msg, ME)
    assert codec.decode(peer_pb2.PeerMessage.FromString(wire.SerializeToString())) == msg


def _encoded_peer_messages() -> st.SearchStrategy[bytes]:
    return peer_messages(CLUSTER, ME, MEMBERS).map(lambda m: m.SerializeToString())


@fuzz_settings(400)
@given(mutated(_encoded_peer_messages()))
def test_codec_refuses_mangled_bytes(data: bytes) -> None:
    codec = PeerCodec(CLUSTER, ME, MEMBERS, 7)
    try:
        raw = peer_pb2.PeerMessage.FromString(data)
    except ProtobufDecodeError:
        return
    _decode_or_refuse(codec, raw)


# ------------------------------------------------------------------- core

rounds = st.one_of(st.integers(0, 5), st.integers(0, limits.MAX_BALLOT_ROUND))
slots = st.one_of(st.integers(1, 6), st.integers(1, limits.MAX_SLOT))
indexes = st.one_of(st.integers(0, 6), st.integers(0, limits.MAX_SLOT))
senders = st.sampled_from([0, 2])  # node 1 is the target; 0 leads
core_ballots = st.builds(Ballot, rounds, st.sampled_from([0, 1, 2]))
values = st.lists(st.binary(max_size=8), max_size=3).map(tuple)
core_messages = st.one_of(
    st.builds(PreVote, senders, core_ballots),
    st.builds(PreVoteReply, senders, core_ballots, st.booleans()),
    st.builds(Prepare, senders, core_ballots, slots),
    st.builds(
        Promise,
        senders,
        core_ballots,
        indexes,
        st.lists(st.builds(AcceptedEntry, slots, core_ballots, values), max_size=3).map(tuple),
    ),
    st.builds(Accept, senders, core_ballots, slots, values, indexes),
    st.builds(Accepted, senders, core_ballots, slots),
    st.builds(Reject, senders, core_ballots, indexes),
    st.builds(Heartbeat, senders, core_ballots, indexes, st.integers(0, 2**64 - 1)),
    st.builds(HeartbeatAck, senders, core_ballots, st.integers(0, 2**64 - 1), indexes),
    st.builds(CatchupRequest, senders, slots),
    st.builds(CatchupReply, senders, slots, st.lists(values, max_size=3).map(tuple), indexes),
)


@fuzz_settings(150)
@given(st.lists(st.tuples(core_messages, st.booleans()), max_size=12))
def test_core_keeps_what_was_chosen_whatever_peers_send(script: list[tuple[Message, bool]]) -> None:
    net = Net(3)
    net.elect(0)
    net.commit(0, b"a", b"b")
    node = net.nodes[1]
    chosen = {slot: node.chosen[slot] for slot in (1, 2)}
    for msg, tick in script:
        before = (node.promised, dict(node.accepted), dict(node.chosen), node.commit_index)
        refused = node.receive(msg)
        if refused is not None:
            assert (node.promised, node.accepted, node.chosen, node.commit_index) == before, refused
        if tick:
            node.tick()
        ready = take(node)
        for _to, out in ready.early + ready.messages:  # every answer must be encodable
            PeerCodec(1, 1, [1, 2, 3], 7).encode(out, 2).SerializeToString()
        assert node.commit_index >= before[3]
        assert all(node.chosen.get(slot, value) == value for slot, value in chosen.items())
