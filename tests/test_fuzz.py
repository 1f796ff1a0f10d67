"""Property-based fuzzing: the codec, the core and both services of a live server.

Hypothesis throws random bytes, truncated and spliced encodings (a field
given twice merges or overrides), valid shapes with absurd values (huge
ballots and slots, empty and oversized fields, unknown enum values) and
sequences of valid-looking peer messages.  Whatever arrives: nothing but a
refusal is raised, the server keeps answering, its refusal bookkeeping stays
bounded, and what was committed stays committed.

CI runs a fixed, derandomized budget of examples per test.  For a longer,
random run set PAXOSKV_FUZZ_EXAMPLES, e.g.

    PAXOSKV_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import DecodeError as ProtobufDecodeError
from hypothesis import HealthCheck, given, settings
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
from paxos.server.service import _RefusalLog
from protos import kv_pb2, kv_pb2_grpc, peer_pb2
from tests.inprocess import InProcessCluster, in_process_cluster
from tests.polling import wait_until
from tests.test_core import Net, take

EXAMPLES_ENV = "PAXOSKV_FUZZ_EXAMPLES"
LONG_RUN = EXAMPLES_ENV in os.environ


def fuzz_settings(ci_examples: int) -> settings:
    """``ci_examples`` derandomized examples, or $PAXOSKV_FUZZ_EXAMPLES random ones."""
    return settings(
        max_examples=int(os.environ.get(EXAMPLES_ENV, ci_examples)),
        deadline=None,
        derandomize=not LONG_RUN,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


# ------------------------------------------------------------ strategies

EDGES = [0, 1, 2, limits.MAX_SLOT, limits.MAX_SLOT + 1, limits.MAX_MEMBER_ID, 2**63, 2**64 - 1]
u64 = st.one_of(st.integers(0, 8), st.sampled_from(EDGES), st.integers(0, 2**64 - 1))
u32 = st.one_of(st.integers(0, 300), st.just(2**32 - 1), st.integers(0, 2**32 - 1))
commands = st.one_of(
    st.lists(st.binary(max_size=48), max_size=4),
    st.just([b""] * (limits.MAX_BATCH_COMMANDS + 1)),
    st.just([b"x" * (limits.MAX_COMMAND_BYTES + 1)]),
)
pb_ballot = st.builds(peer_pb2.Ballot, round=u64, node=u64)
pb_value = st.builds(peer_pb2.Value, commands=commands)
pb_entry = st.builds(peer_pb2.Entry, slot=u64, ballot=pb_ballot, value=pb_value)
entries = st.lists(pb_entry, max_size=4)
BODIES = {
    "prepare": st.builds(peer_pb2.Prepare, ballot=pb_ballot, from_slot=u64),
    "promise": st.builds(peer_pb2.Promise, ballot=pb_ballot, commit_index=u64, accepted=entries),
    "accept": st.builds(peer_pb2.Accept, ballot=pb_ballot, slot=u64, value=pb_value, commit_index=u64),
    "accepted": st.builds(peer_pb2.Accepted, ballot=pb_ballot, slot=u64),
    "reject": st.builds(peer_pb2.Reject, promised=pb_ballot, slot=u64),
    "heartbeat": st.builds(peer_pb2.Heartbeat, ballot=pb_ballot, commit_index=u64, seq=u64),
    "heartbeat_ack": st.builds(peer_pb2.HeartbeatAck, ballot=pb_ballot, seq=u64, commit_index=u64),
    "catchup_request": st.builds(peer_pb2.CatchupRequest, from_slot=u64),
    "catchup_reply": st.builds(peer_pb2.CatchupReply, entries=entries, commit_index=u64),
    "pre_vote": st.builds(peer_pb2.PreVote, ballot=pb_ballot),
    "pre_vote_reply": st.builds(peer_pb2.PreVoteReply, ballot=pb_ballot, granted=st.booleans()),
}


@st.composite
def peer_messages(draw: st.DrawFn, cluster_id: int, me: int, members: list[int]) -> peer_pb2.PeerMessage:
    """A PeerMessage, mostly for this cluster and receiver, from a member or anyone."""
    msg = peer_pb2.PeerMessage(
        sender=draw(st.one_of(st.sampled_from(members), u64)),
        cluster_id=draw(st.one_of(st.just(cluster_id), st.just(cluster_id), u64)),
        receiver=draw(st.one_of(st.just(me), st.just(me), u64)),
    )
    kind = draw(st.sampled_from([*BODIES, "none"]))
    if kind != "none":
        getattr(msg, kind).CopyFrom(draw(BODIES[kind]))
    return msg


@st.composite
def mutated(draw: st.DrawFn, encoded: st.SearchStrategy[bytes]) -> bytes:
    """Valid encodings cut short, spliced, repeated (fields given twice) or with bytes flipped; or pure noise."""
    data = draw(encoded)
    match draw(st.sampled_from(["truncate", "splice", "repeat", "flip", "noise"])):
        case "truncate":
            return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
        case "splice":
            return data + draw(encoded)
        case "repeat":
            return data * draw(st.integers(2, 4))
        case "flip":
            if not data:
                return b"\xff"
            at = draw(st.integers(0, len(data) - 1))
            return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
        case _:
            return draw(st.binary(max_size=200))


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


# ---------------------------------------------------------- a live server


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessCluster]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    with in_process_cluster(tmp, 3) as cluster:
        wait_until(cluster.leader, "a leader")
        from client import KVClient

        with KVClient(cluster.members, timeout=10) as kv:
            kv.set("committed", "before fuzzing")
        yield cluster


def _victim(cluster: InProcessCluster) -> tuple[str, object]:
    name = cluster.members[0].name
    return name, cluster.servers[name]


def _still_serving(cluster: InProcessCluster) -> None:
    """The server answers, and what was committed before is still there."""
    with grpc.insecure_channel(cluster.members[0].address) as channel:
        status = kv_pb2_grpc.KVStub(channel).Status(kv_pb2.StatusRequest(), timeout=10)
        assert status.name == cluster.members[0].name
    server = cluster.servers[cluster.members[0].name]
    wait_until(lambda: cluster.call(server.store.get, "committed") == "before fuzzing", "the committed value")
    assert len(server.refusals.counts) <= _RefusalLog.MAX_KEYS + 64
    assert len(server.client_refusals.counts) <= _RefusalLog.MAX_KEYS + 64


KV_METHODS = {
    "Write": st.builds(
        kv_pb2.WriteRequest,
        command=st.builds(
            kv_pb2.Command,
            client_id=st.text(max_size=200),
            session_id=u64,
            seq=u64,
            first_unacked=u64,
            delete=st.builds(kv_pb2.DeleteOp, key=st.text(max_size=1100)),
        ),
    ),
    "Get": st.builds(kv_pb2.GetRequest, key=st.text(max_size=1100), consistency=st.integers(-3, 2**31 - 1)),
    "ImageGet": st.builds(
        kv_pb2.ImageGetRequest,
        hash=st.binary(max_size=80),
        max_distance=u32,
        limit=u32,
        consistency=st.integers(-3, 5),
    ),
    "Status": st.just(kv_pb2.StatusRequest()),
    "Register": st.just(kv_pb2.RegisterRequest()),
}
# What the client API may answer with: a reply, or a refusal of the request.
# UNKNOWN or INTERNAL would be an exception in a handler.
ACCEPTABLE_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED}


@st.composite
def kv_calls(draw: st.DrawFn) -> tuple[str, bytes]:
    method = draw(st.sampled_from(sorted(KV_METHODS)))
    encoded = KV_METHODS[method].map(lambda m: m.SerializeToString())
    return method, draw(st.one_of(encoded, mutated(encoded)))


@fuzz_settings(60)
@given(st.lists(kv_calls(), min_size=1, max_size=4))
def test_client_api_of_a_live_server_survives_anything(live: InProcessCluster, calls: list[tuple[str, bytes]]) -> None:
    with grpc.insecure_channel(live.members[0].address) as channel:
        for method, data in calls:
            call = channel.unary_unary(f"/paxoskv.kv.KV/{method}", request_serializer=None, response_deserializer=None)
            try:
                call(data, timeout=10)
            except grpc.RpcError as err:
                assert err.code() in ACCEPTABLE_CODES, (method, data, err)  # type: ignore[attr-defined]
    _still_serving(live)


@st.composite
def peer_streams(draw: st.DrawFn, cluster: InProcessCluster) -> list[bytes]:
    server = cluster.servers[cluster.members[0].name]
    ids = sorted(server.members)
    typed = peer_messages(server.identity.cluster_id, server.node_id, [i for i in ids if i != server.node_id])
    encoded = typed.map(lambda m: m.SerializeToString())
    return draw(st.lists(st.one_of(encoded, mutated(encoded)), min_size=1, max_size=6))


@fuzz_settings(60)
@given(st.data())
def test_peer_stream_of_a_live_server_survives_anything(live: InProcessCluster, data: st.DataObject) -> None:
    stream = data.draw(peer_streams(live))
    server = live.servers[live.members[0].name]
    commit_before = live.call(lambda: server.core.commit_index)
    with grpc.insecure_channel(live.members[0].address) as channel:
        send = channel.stream_unary("/paxoskv.peer.Peer/Stream", request_serializer=None, response_deserializer=None)
        summary = peer_pb2.StreamSummary.FromString(send(iter(stream), timeout=10))
    assert summary.received <= len(stream)
    assert live.call(lambda: server.core.commit_index) >= commit_before
    assert not live.call(server.failed.is_set), "an internal task of the server died"
    _still_serving(live)
