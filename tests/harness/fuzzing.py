"""Hypothesis strategies for peer messages and their encodings, and the example budget of the fuzz tests.

CI runs a fixed, derandomized budget of examples per test; $PAXOSKV_FUZZ_EXAMPLES
asks for that many random ones instead.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from paxos.common import limits
from protos import peer_pb2

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
