"""Session streams: the server's batch handling, and the sync and async clients' shared contract.

The contract tests run once with ``KVClient`` (its calls made from worker
threads) and once with ``AsyncKVClient`` (awaited on the test's own loop),
against one in-process cluster shared by the module's tests; a test that
partitions the servers gets a cluster of its own.  The raw tests speak the
Session RPC directly, to send what the library never would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest

from client import AsyncKVClient, InvalidRequest, KVClient, Unavailable, UnknownOutcome
from client.aio import _Session
from client.retry import SessionExpired
from paxos.common import limits
from paxos.common.hostfile import Member
from protos import kv_pb2, kv_pb2_grpc
from tests.harness.inprocess import InProcessCluster
from tests.harness.loop import LoopThread
from tests.harness.polling import wait_until
from tools.localcluster import free_ports

KINDS = ["KVClient", "AsyncKVClient"]


def leader_of(cluster: InProcessCluster) -> Member:
    name = wait_until(cluster.leader, "a leader")
    return next(m for m in cluster.members if m.name == name)


class _Threaded:
    """A ``KVClient`` whose calls are awaited: each runs on a worker thread, as a threaded program's would."""

    def __init__(self, kv: KVClient) -> None:
        self.kv = kv
        self.pool = ThreadPoolExecutor(max_workers=64)

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self.kv, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: method(*args, **kwargs))

        return call


@contextlib.asynccontextmanager
async def client_of_kind(kind: str, members: list[Member], timeout: float = 10.0) -> AsyncIterator[Any]:
    if kind == "AsyncKVClient":
        async with AsyncKVClient(members, timeout=timeout) as kv:
            yield kv
        return
    threaded = _Threaded(KVClient(members, timeout=timeout))
    try:
        yield threaded
    finally:
        await asyncio.to_thread(threaded.kv.close)
        threaded.pool.shutdown()


# ------------------------------------------------------------- the contract


@pytest.mark.parametrize("kind", KINDS)
def test_set_get_delete_and_status(loop: LoopThread, shared_cluster: InProcessCluster, kind: str) -> None:
    async def body() -> None:
        # Followers first: the client must follow their redirects to the leader.
        leader = leader_of(shared_cluster)
        members = sorted(shared_cluster.members, key=lambda m: m == leader)
        async with client_of_kind(kind, members) as kv:
            key = f"fruit-{kind}"
            assert await kv.get(key) is None
            await kv.set(key, "green apple")
            assert await kv.get(key) == "green apple"
            await kv.set(key, "ключ ✓")
            assert await kv.get(key) == "ключ ✓"
            assert await kv.delete(key) is True
            assert await kv.delete(key) is False
            assert await kv.get(key) is None
            nodes = await kv.status()
            assert [n["name"] for n in nodes] == [m.name for m in members]
            assert [n["role"] for n in nodes].count("leader") == 1
            assert all(n["reachable"] for n in nodes)

    loop.run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_is_refused_before_anything_is_sent(
    loop: LoopThread, shared_cluster: InProcessCluster, kind: str
) -> None:
    async def body() -> None:
        async with client_of_kind(kind, shared_cluster.members) as kv:
            with pytest.raises(InvalidRequest, match="key must be 1 to"):
                await kv.set("k" * (limits.MAX_KEY_BYTES + 1), "v")
            with pytest.raises(InvalidRequest, match="value is"):
                await kv.set("k", "v" * (limits.DEFAULT_MAX_VALUE_BYTES + 1))
            with pytest.raises(TypeError, match="value must be str, not bytes"):
                await kv.set("k", b"v")
            with pytest.raises(ValueError, match="consistency must be"):
                await kv.get("k", consistency="eventual")

    loop.run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_no_server_listening_is_unavailable_not_unknown(loop: LoopThread, kind: str) -> None:
    async def body() -> None:
        nobody = [Member("n1", "127.0.0.1", free_ports(1)[0])]
        async with client_of_kind(kind, nobody, timeout=0.5) as kv:
            with pytest.raises(Unavailable, match=r"cluster unavailable after 0\.5s"):
                await kv.set("k", "v")
            assert [n["role"] for n in await kv.status()] == ["down"]

    loop.run(body())


@pytest.mark.parametrize("kind", KINDS)
def test_each_caller_sees_its_own_operations_in_order(
    loop: LoopThread, shared_cluster: InProcessCluster, kind: str
) -> None:
    """Concurrent callers share the session streams; each one awaiting its calls sees them in order."""
    callers, steps = 24, 12

    async def caller(kv: Any, index: int) -> None:
        key = f"order-{kind}-{index}"
        for step in range(steps):
            await kv.set(key, str(step))
            assert await kv.get(key) == str(step), f"caller {index} read an older value after its write {step}"
        assert await kv.delete(key) is True
        assert await kv.get(key) is None

    async def body() -> None:
        async with client_of_kind(kind, shared_cluster.members) as kv:
            await asyncio.gather(*(caller(kv, i) for i in range(callers)))

    loop.run(body())


def test_calls_in_flight_together_share_one_message(loop: LoopThread, shared_cluster: InProcessCluster) -> None:
    """No timer, no waiting: the requests queued while the stream was busy leave together."""
    leader = leader_of(shared_cluster)
    received = shared_cluster.servers[leader.name].session_batch_requests

    def batches_and_requests() -> tuple[int, float]:
        return shared_cluster.call(lambda: (sum(received.counts), received.total))

    async def body() -> tuple[tuple[int, float], tuple[int, float]]:
        async with AsyncKVClient([leader]) as kv:
            await kv.get("warm")  # the stream is open
            before = await asyncio.to_thread(batches_and_requests)
            values = await asyncio.gather(*(kv.get(f"together-{i}") for i in range(64)))
            assert values == [None] * 64
            return before, await asyncio.to_thread(batches_and_requests)

    (batches_before, requests_before), (batches_after, requests_after) = loop.run(body())
    assert requests_after - requests_before == 64
    assert batches_after - batches_before == 1


# ----------------------------------------------------- the Session RPC raw


def write_request(request_id: int, key: str, value: str, seq: int, session: int) -> kv_pb2.SessionRequest:
    cmd = kv_pb2.Command(session_id=session, seq=seq, first_unacked=1, set=kv_pb2.SetOp(key=key, value=value))
    return kv_pb2.SessionRequest(id=request_id, write=kv_pb2.WriteRequest(command=cmd))


def register(loop: LoopThread, address: str) -> int:
    """A new session, registered on a session stream."""
    [reply] = loop.run(
        exchange(address, [kv_pb2.SessionBatch(requests=[kv_pb2.SessionRequest(id=1, register={})])], 1)
    ).values()
    assert reply.register.status == kv_pb2.OK, reply
    return int(reply.register.session_id)


def get_request(request_id: int, key: str) -> kv_pb2.SessionRequest:
    return kv_pb2.SessionRequest(id=request_id, get=kv_pb2.GetRequest(key=key))


async def exchange(
    address: str, batches: list[kv_pb2.SessionBatch], replies: int, timeout: float = 30.0
) -> dict[int, kv_pb2.SessionReply]:
    """Send ``batches`` on one session stream; the first ``replies`` replies, by id."""
    got: dict[int, kv_pb2.SessionReply] = {}
    async with grpc.aio.insecure_channel(address) as channel:
        call = kv_pb2_grpc.KVStub(channel).Session(timeout=timeout)
        for batch in batches:
            await call.write(batch)
        while len(got) < replies:
            message = await call.read()
            assert message is not grpc.aio.EOF, f"the stream ended after {len(got)} of {replies} replies"
            for reply in message.replies:
                assert reply.id not in got, f"two replies to request {reply.id}"
                got[reply.id] = reply
        await call.done_writing()
        assert await call.read() is grpc.aio.EOF, "more replies than requests"
    return got


def refusals(cluster: InProcessCluster, name: str, reason: str) -> int:
    counts = cluster.call(lambda: dict(cluster.servers[name].client_refusals.counts))
    return sum(n for (_, why), n in counts.items() if why == reason)


def test_a_batch_holding_invalid_requests_fails_only_those(loop: LoopThread, shared_cluster: InProcessCluster) -> None:
    leader = leader_of(shared_cluster)
    mixed = register(loop, leader.address)
    batch = kv_pb2.SessionBatch(
        requests=[
            write_request(1, "mixed-a", "1", seq=1, session=mixed),
            write_request(2, "", "empty key", seq=2, session=mixed),
            get_request(3, "k" * (limits.MAX_KEY_BYTES + 1)),
            kv_pb2.SessionRequest(id=4),  # no kind
            get_request(1, "mixed-a"),  # the id of a request in flight
            write_request(5, "mixed-b", "2", seq=3, session=mixed),
            kv_pb2.SessionRequest(id=6, status=kv_pb2.StatusRequest()),
        ]
    )
    no_kind_before = refusals(shared_cluster, leader.name, "request of no known kind")
    # Request 1 is answered twice: a refusal of the reused id, then the write.
    got: dict[int, list[kv_pb2.SessionReply]] = {}

    async def body() -> None:
        async with grpc.aio.insecure_channel(leader.address) as channel:
            call = kv_pb2_grpc.KVStub(channel).Session(timeout=30)
            await call.write(batch)
            await call.done_writing()
            async for message in call:
                for reply in message.replies:
                    got.setdefault(reply.id, []).append(reply)

    loop.run(body())
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    kinds = {rid: sorted(r.WhichOneof("kind") or "" for r in replies) for rid, replies in got.items()}
    assert kinds[1] == ["refused", "write"]
    refused_id = next(r for r in got[1] if r.HasField("refused")).refused
    assert refused_id.status == kv_pb2.INVALID and "reused" in refused_id.error
    assert next(r for r in got[1] if r.HasField("write")).write.status == kv_pb2.OK
    assert got[2][0].write.status == kv_pb2.INVALID and got[2][0].write.error
    assert got[3][0].get.status == kv_pb2.INVALID and "key" in got[3][0].get.error
    assert got[4][0].refused.status == kv_pb2.INVALID
    assert got[5][0].write.status == kv_pb2.OK
    assert got[6][0].status.name == leader.name
    assert refusals(shared_cluster, leader.name, "request of no known kind") == no_kind_before + 1
    with KVClient(shared_cluster.members) as kv:
        assert (kv.get("mixed-a"), kv.get("mixed-b")) == ("1", "2")


def test_a_batch_over_the_limit_is_refused_and_the_stream_goes_on(
    loop: LoopThread, shared_cluster: InProcessCluster
) -> None:
    leader = leader_of(shared_cluster)
    over = kv_pb2.SessionBatch(requests=[get_request(i, "k") for i in range(1, limits.MAX_SESSION_BATCH_REQUESTS + 2)])
    then = kv_pb2.SessionBatch(requests=[kv_pb2.SessionRequest(id=10**6, status=kv_pb2.StatusRequest())])
    before = refusals(shared_cluster, leader.name, "session batch over the limit")
    got = loop.run(exchange(leader.address, [over, then], limits.MAX_SESSION_BATCH_REQUESTS + 1))
    refused = [r for r in got.values() if r.HasField("refused")]
    # As many refusals as a batch may hold; the rest of the batch goes unanswered.
    assert len(refused) == limits.MAX_SESSION_BATCH_REQUESTS
    assert all(r.refused.status == kv_pb2.INVALID and "batch of" in r.refused.error for r in refused)
    assert got[10**6].status.name == leader.name
    assert refusals(shared_cluster, leader.name, "session batch over the limit") == before + 1


def test_requests_beyond_the_in_flight_bound_are_refused_as_unavailable(
    loop: LoopThread, shared_cluster: InProcessCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    leader = leader_of(shared_cluster)
    monkeypatch.setattr(limits, "MAX_SESSION_IN_FLIGHT", 2)
    batch = kv_pb2.SessionBatch(requests=[get_request(i, "k") for i in (1, 2, 3)])
    got = loop.run(exchange(leader.address, [batch], 3))
    assert got[1].get.status == got[2].get.status == kv_pb2.OK
    assert got[3].refused.status == kv_pb2.UNAVAILABLE and "in flight" in got[3].refused.error


def test_a_malformed_message_is_dropped_and_counted(loop: LoopThread, shared_cluster: InProcessCluster) -> None:
    leader = leader_of(shared_cluster)
    before = refusals(shared_cluster, leader.name, "malformed message")
    good = kv_pb2.SessionBatch(requests=[kv_pb2.SessionRequest(id=1, status=kv_pb2.StatusRequest())])

    async def body() -> list[kv_pb2.SessionReplies]:
        async with grpc.aio.insecure_channel(leader.address) as channel:
            session = channel.stream_stream(
                "/paxoskv.kv.KV/Session",
                request_serializer=lambda raw: raw,
                response_deserializer=kv_pb2.SessionReplies.FromString,
            )
            call = session(timeout=30)
            await call.write(b"\xff\xff\xff")  # not a SessionBatch
            await call.write(good.SerializeToString())
            await call.done_writing()
            return [message async for message in call]

    messages = loop.run(body())
    assert [r.id for m in messages for r in m.replies] == [1]
    assert refusals(shared_cluster, leader.name, "malformed message") == before + 1


def partition(cluster: InProcessCluster, isolated: list[str]) -> None:
    """Cut each server named in ``isolated`` off from every other server; ``[]`` heals."""
    for name, server in cluster.servers.items():
        if name in isolated:
            blocked = [n for n in cluster.servers if n != name]
        else:
            blocked = [n for n in isolated if n != name]
        cluster.call(server.set_partition, blocked)


def agrees_with_state(status: int, value: str | None, written: str) -> bool:
    """Whether a write's reply agrees with the key's final value: unknown agrees with either."""
    if status == kv_pb2.OK:
        return value == written
    if status == kv_pb2.UNKNOWN:
        return value in (None, written)
    return value is None  # every other status: nothing applied


def test_a_batch_cut_by_a_leader_change_reports_each_write_as_the_state_has_it(
    loop: LoopThread, cluster: InProcessCluster
) -> None:
    """Applied, not applied, or unknown: each reply agrees with the state once the cluster has healed.

    The batch reaches a leader that is cut off from the others: a retried
    write it applied earlier is answered from its results, an invalid one is
    refused, and new ones wait until it steps down and are then unknown.
    The same kind of batch sent to another server meanwhile is refused there,
    or applied if that server has become the leader by then.
    """
    leader = leader_of(cluster)
    other = next(m for m in cluster.members if m != leader)
    session = register(loop, leader.address)
    applied_before = write_request(1, "cut-0", "v0", seq=1, session=session)
    first = loop.run(exchange(leader.address, [kv_pb2.SessionBatch(requests=[applied_before])], 1))
    assert first[1].write.status == kv_pb2.OK
    new_writes = range(3, 9)
    batch = kv_pb2.SessionBatch(
        requests=[
            applied_before,  # a retry of a write already applied
            write_request(2, "", "invalid", seq=2, session=session),
            *(write_request(i, f"cut-{i}", f"v{i}", seq=i, session=session) for i in new_writes),
        ]
    )
    elsewhere = kv_pb2.SessionBatch(
        requests=[write_request(i, f"cut-{i}", f"v{i}", seq=i, session=session) for i in range(10, 13)]
    )

    async def both() -> tuple[dict[int, kv_pb2.SessionReply], dict[int, kv_pb2.SessionReply]]:
        return await asyncio.gather(
            exchange(leader.address, [batch], len(batch.requests)),
            exchange(other.address, [elsewhere], len(elsewhere.requests)),
        )

    partition(cluster, [leader.name])
    try:
        cut, redirected = loop.run(both())
    finally:
        partition(cluster, [])
    status = {rid: reply.write.status for rid, reply in (cut | redirected).items()}
    assert status[1] == kv_pb2.OK
    assert status[2] == kv_pb2.INVALID
    # The isolated leader never hears a quorum again: nothing new is chosen through it.
    assert {status[i] for i in new_writes} <= {kv_pb2.UNKNOWN, kv_pb2.NOT_LEADER, kv_pb2.UNAVAILABLE}
    wait_until(cluster.leader, "a leader after the heal")
    with KVClient(cluster.members) as kv:
        assert kv.get("cut-0") == "v0"
        for i in [*new_writes, 10, 11, 12]:
            value = kv.get(f"cut-{i}")
            assert agrees_with_state(status[i], value, f"v{i}"), f"write {i}: status {status[i]}, value {value!r}"


@pytest.mark.parametrize("kind", KINDS)
def test_client_writes_across_a_leader_change_match_the_final_state(
    loop: LoopThread, cluster: InProcessCluster, kind: str
) -> None:
    """Every write that returned was applied, every Unavailable one was not; UnknownOutcome may be either.

    Writers keep writing while every server is cut off from every other (no
    quorum anywhere, the leader steps down) and after the heal.
    """
    outcomes: dict[str, int] = {}  # a write's key, and its outcome as a reply status
    stop = asyncio.Event()

    async def writer(kv: Any, index: int) -> None:
        for step in itertools.count():
            if stop.is_set():
                return
            key = f"change-{kind}-{index}-{step}"
            try:
                await kv.set(key, "v")
                outcomes[key] = kv_pb2.OK
            except UnknownOutcome:
                outcomes[key] = kv_pb2.UNKNOWN
            except Unavailable:
                outcomes[key] = kv_pb2.UNAVAILABLE

    def count(status: int) -> int:
        return sum(1 for s in outcomes.values() if s == status)

    async def wait_for(what: str, done: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not done():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: {len(outcomes)} writes")
            await asyncio.sleep(0.05)

    async def body() -> list[str | None]:
        async with client_of_kind(kind, cluster.members, timeout=1.0) as kv:
            await kv.set(f"change-{kind}-warm", "v")  # the client knows the leader
            writing = asyncio.gather(*(writer(kv, i) for i in range(16)))
            try:
                await wait_for("writes applied", lambda: count(kv_pb2.OK) >= 16)
                await asyncio.to_thread(partition, cluster, [m.name for m in cluster.members])
                try:
                    await wait_for("writes failing", lambda: count(kv_pb2.UNAVAILABLE) + count(kv_pb2.UNKNOWN) >= 16)
                finally:
                    await asyncio.to_thread(partition, cluster, [])
                failed = len(outcomes)
                await wait_for("writes applied after the heal", lambda: len(outcomes) >= failed + 16)
            finally:
                stop.set()
                await writing
            return list(await asyncio.gather(*(kv.get(key) for key in outcomes)))

    values = loop.run(body())
    assert count(kv_pb2.OK) and count(kv_pb2.UNAVAILABLE) + count(kv_pb2.UNKNOWN)
    for (key, status), value in zip(outcomes.items(), values, strict=True):
        assert agrees_with_state(status, value, "v"), f"{key}: outcome {status}, value {value!r}"


# ------------------------------------------------------------------ sessions


@pytest.mark.parametrize("kind", KINDS)
def test_a_write_whose_session_expired_is_unknown_and_the_next_opens_a_new_session(
    loop: LoopThread, shared_cluster: InProcessCluster, kind: str
) -> None:
    async def body() -> None:
        async with client_of_kind(kind, shared_cluster.members) as kv:
            client = kv if kind == "AsyncKVClient" else kv.kv._client
            await kv.set(f"expiring-{kind}", "1")
            first = client.session_id
            assert first is not None
            # As if the shared_cluster had evicted it: a session it never registered.
            client._session = _Session(first + 1_000_000)
            with pytest.raises(SessionExpired, match="session expired") as raised:
                await kv.set(f"expiring-{kind}", "2")
            assert isinstance(raised.value, UnknownOutcome)
            assert client.session_id is None
            assert await kv.get(f"expiring-{kind}") == "1", "the refused write was not applied"
            await kv.set(f"expiring-{kind}", "3")
            assert client.session_id is not None and client.session_id > first
            assert await kv.get(f"expiring-{kind}") == "3"

    loop.run(body())


def test_concurrent_first_writes_share_one_registration(loop: LoopThread, shared_cluster: InProcessCluster) -> None:
    async def body() -> None:
        async with AsyncKVClient(shared_cluster.members, timeout=10) as kv:
            before = max(
                shared_cluster.call(lambda: [s.store.next_session_id for s in shared_cluster.servers.values()])
            )
            await asyncio.gather(*(kv.set(f"together-first-{i}", "v") for i in range(32)))
            assert kv.session_id is not None
            wait_until(
                lambda: (
                    max(shared_cluster.call(lambda: [s.store.next_session_id for s in shared_cluster.servers.values()]))
                    == before + 1
                ),
                "the registration to apply",
            )

    loop.run(body())
