"""A flood of new sessions cannot undo exactly-once: real servers on loopback.

A client writes ``balance=100`` in its session, another client writes
``balance=0``, and the first client's exact request, replayed, is answered
from its session.  Then one Session stream opens more sessions than the
cluster keeps, so the first client's session is evicted.  The replay must
now be refused as SESSION_EXPIRED and never applied: ``balance`` stays ``0``
on every replica.  (When an unknown client was taken for a new one, the
replay was applied a second time and ``balance`` read ``100`` everywhere.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import pytest

from paxos.common import limits
from paxos.common.hostfile import parse_hostfile
from protos import kv_pb2, kv_pb2_grpc
from tests.harness.polling import wait_until
from tools.localcluster import LocalCluster

# More new sessions than the cluster keeps, opened after the victim's write.
FLOOD_SESSIONS = 200_000
# Generous deadlines for a loaded 2-core machine (the flood takes seconds).
FLOOD_SECONDS = 300.0
CALL_SECONDS = 20.0
RETRY_SECONDS = 120.0
R = TypeVar("R")


@pytest.fixture(scope="module")
def cluster_options() -> dict[str, Any]:
    return {"nodes": 3}


def _at_leader(cluster: LocalCluster, call: Callable[[kv_pb2_grpc.KVStub], R], what: str) -> R:
    """``call`` at the current leader, again while it answers NOT_LEADER or UNAVAILABLE (the flood may move it)."""
    deadline = time.monotonic() + RETRY_SECONDS
    while True:
        with grpc.insecure_channel(cluster.address(cluster.wait_for_leader(timeout=60))) as channel:
            reply = call(kv_pb2_grpc.KVStub(channel))
        status = getattr(reply, "status", kv_pb2.OK)
        if status not in (kv_pb2.NOT_LEADER, kv_pb2.UNAVAILABLE):
            return reply
        assert time.monotonic() < deadline, f"{what}: still {kv_pb2.Status.Name(status)} after {RETRY_SECONDS:g} s"
        time.sleep(0.1)


def _register(cluster: LocalCluster) -> int:
    reply = _at_leader(cluster, lambda stub: stub.Register(kv_pb2.RegisterRequest(), timeout=CALL_SECONDS), "register")
    assert reply.status == kv_pb2.OK, f"{kv_pb2.Status.Name(reply.status)}: {reply.error}"
    assert reply.session_id > 0
    return int(reply.session_id)


def _write(cluster: LocalCluster, command: kv_pb2.Command) -> kv_pb2.WriteReply:
    request = kv_pb2.WriteRequest(command=command)
    reply: kv_pb2.WriteReply = _at_leader(cluster, lambda stub: stub.Write(request, timeout=CALL_SECONDS), "write")
    return reply


def _registered(replies: kv_pb2.SessionReplies) -> int:
    return sum(r.WhichOneof("kind") == "register" and r.register.status == kv_pb2.OK for r in replies.replies)


async def _open_sessions(address: str, count: int) -> int:
    """Open up to ``count`` sessions on one Session stream, many registrations a message; the number opened.

    Stops early once the server is no longer the leader.
    """
    batch_size = limits.MAX_SESSION_BATCH_REQUESTS
    async with grpc.aio.insecure_channel(address) as channel:
        call = kv_pb2_grpc.KVStub(channel).Session()
        opened, in_flight, next_id, deposed = 0, 0, 0, False
        while opened < count and not deposed:
            while opened + in_flight < count and in_flight + batch_size <= limits.MAX_SESSION_IN_FLIGHT:
                ids = range(next_id, next_id + batch_size)
                next_id += batch_size
                in_flight += batch_size
                batch = kv_pb2.SessionBatch(requests=[kv_pb2.SessionRequest(id=i, register={}) for i in ids])
                await call.write(batch)
            replies = await call.read()
            assert replies is not grpc.aio.EOF, "the session stream ended early"
            in_flight -= len(replies.replies)
            opened += _registered(replies)
            deposed = any(r.register.status == kv_pb2.NOT_LEADER for r in replies.replies)
        await call.done_writing()
        while in_flight > 0:
            replies = await call.read()
            if replies is grpc.aio.EOF:
                break
            in_flight -= len(replies.replies)
            opened += _registered(replies)
        return opened


def _flood(cluster: LocalCluster, count: int) -> None:
    """Open ``count`` new sessions, following the leader if the flood moves it."""
    deadline = time.monotonic() + FLOOD_SECONDS
    opened = 0
    while opened < count:
        assert time.monotonic() < deadline, f"opened {opened} of {count} sessions in {FLOOD_SECONDS:g} s"
        address = cluster.address(cluster.wait_for_leader(timeout=60))
        opened += asyncio.run(_open_sessions(address, count - opened))


def test_a_replay_after_a_flood_of_new_sessions_is_refused_and_never_applied(cluster: LocalCluster) -> None:
    assert FLOOD_SESSIONS > limits.MAX_CLIENT_SESSIONS
    victim = kv_pb2.Command(
        session_id=_register(cluster), seq=5, first_unacked=5, set=kv_pb2.SetOp(key="balance", value="100")
    )
    assert _write(cluster, victim).status == kv_pb2.OK
    other = kv_pb2.Command(
        session_id=_register(cluster), seq=1, first_unacked=1, set=kv_pb2.SetOp(key="balance", value="0")
    )
    assert _write(cluster, other).status == kv_pb2.OK
    assert _write(cluster, victim).status == kv_pb2.OK  # a replay while the session is kept: its first result

    started = time.monotonic()
    _flood(cluster, FLOOD_SESSIONS)
    flood_seconds = time.monotonic() - started

    replay = _write(cluster, victim)
    assert replay.status == kv_pb2.SESSION_EXPIRED, f"{kv_pb2.Status.Name(replay.status)}: {replay.error}"
    assert "expired" in replay.error
    commit = _at_leader(cluster, lambda stub: stub.Status(kv_pb2.StatusRequest(), timeout=CALL_SECONDS), "status")
    commit_index = commit.commit_index

    # Every replica has applied the replay's slot; its own (stale) state says 0.
    for member in parse_hostfile(cluster.hostfile):
        with grpc.insecure_channel(member.address) as channel:
            stub = kv_pb2_grpc.KVStub(channel)

            def caught_up(stub: kv_pb2_grpc.KVStub = stub) -> bool:
                return bool(stub.Status(kv_pb2.StatusRequest(), timeout=CALL_SECONDS).applied_index >= commit_index)

            wait_until(caught_up, timeout=60, what=f"{member.name} applying slot {commit_index}")
            read = stub.Get(kv_pb2.GetRequest(key="balance", consistency=kv_pb2.LOCAL), timeout=CALL_SECONDS)
            assert read.status == kv_pb2.OK and read.found
            assert read.value == "0", f"{member.name} reads balance={read.value} after the flood ({flood_seconds:.0f}s)"
