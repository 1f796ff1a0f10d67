"""Property-based fuzzing of both services of a live server: three servers in this process.

Whatever arrives on the client API or a peer stream, the server keeps
answering, its refusal bookkeeping stays bounded and what was committed stays
committed.  The strategies and the codec and core properties are
tests/unit/test_fuzz.py; PAXOSKV_FUZZ_EXAMPLES sets the budget as there.
"""

from __future__ import annotations

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import KVClient
from paxos.server.service import _RefusalLog
from protos import kv_pb2, kv_pb2_grpc, peer_pb2
from tests.harness.fuzzing import fuzz_settings, mutated, peer_messages, u32, u64
from tests.harness.inprocess import InProcessCluster
from tests.harness.polling import wait_until

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


@pytest.fixture(scope="module")
def live(shared_cluster: InProcessCluster) -> InProcessCluster:
    """The module's shared cluster, with a value committed before any fuzzing."""
    with KVClient(shared_cluster.members, timeout=10) as kv:
        kv.set("committed", "before fuzzing")
    return shared_cluster


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
