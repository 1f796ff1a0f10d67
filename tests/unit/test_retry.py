"""The client's retry policy (``client/retry.py``) with plain calls, the loop that drives it, and the library."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import grpc
import pytest

from client import KVError
from client.aio import AsyncKVClient, StreamBroken, _Session
from client.attempts import Attempted, with_retry
from client.kv import KVClient, classify
from client.retry import (
    SECONDS,
    Attempt,
    InvalidRequest,
    KnownLeader,
    Outcome,
    Retry,
    SessionExpired,
    Timing,
    Unavailable,
    UnknownOutcome,
    outcome_of_status,
)
from paxos.common import limits
from paxos.common.hostfile import Member
from protos import kv_pb2

# Distinct durations in milliseconds, so that a pause of the wrong kind shows.
MS = Timing(attempt=1000, error_backoff=20, no_leader_backoff=50, per_second=1000)
SERVERS = ("a", "b", "c")


def policy(
    now: int = 0,
    timeout: int = 10_000,
    write: bool = True,
    leader: KnownLeader[str] | None = None,
    any_server: bool = False,
    server_cap: int | None = None,
) -> Retry[str, int]:
    return Retry(
        SERVERS,
        leader if leader is not None else KnownLeader(),
        now,
        timeout,
        MS,
        write=write,
        any_server=any_server,
        server_cap=server_cap,
    )


def next_server(retry: Retry[str, int], now: int) -> str:
    attempt = retry.next_attempt(now)
    assert attempt is not None
    return attempt.server


# ------------------------------------------------------------ where to go


def test_rotation_over_servers_while_no_leader_is_known() -> None:
    retry = policy()
    seen = []
    for now in range(0, 400, 100):
        seen.append(next_server(retry, now))
        assert retry.record(Outcome.NOT_LEADER, now) == MS.no_leader_backoff
    assert seen == ["a", "b", "c", "a"]


def test_leader_hint_is_followed_at_once() -> None:
    leader: KnownLeader[str] = KnownLeader()
    retry = policy(leader=leader)
    assert next_server(retry, 0) == "a"
    assert retry.record(Outcome.NOT_LEADER, 1, hint="c") == 0
    assert leader.get() == "c"
    assert next_server(retry, 1) == "c"


def test_the_leader_that_answered_is_tried_first_by_the_next_operation() -> None:
    leader: KnownLeader[str] = KnownLeader()
    first = policy(leader=leader)
    next_server(first, 0)
    first.record(Outcome.NOT_LEADER, 0, hint="b")
    assert next_server(first, 0) == "b"
    first.record(Outcome.OK, 5)
    assert next_server(policy(leader=leader), 10) == "b"


def test_a_read_from_any_server_neither_seeks_nor_sets_the_leader() -> None:
    leader: KnownLeader[str] = KnownLeader()
    leader.set("c")
    retry = policy(leader=leader, write=False, any_server=True)
    assert next_server(retry, 0) == "a"
    retry.record(Outcome.OK, 1)
    assert leader.get() == "c"


@pytest.mark.parametrize("hint", [None, "a", "elsewhere"], ids=["none", "itself", "not-in-list"])
def test_an_unusable_hint_forgets_the_leader_and_pauses(hint: str | None) -> None:
    leader: KnownLeader[str] = KnownLeader()
    leader.set("a")
    retry = policy(leader=leader)
    assert next_server(retry, 0) == "a"
    assert retry.record(Outcome.NOT_LEADER, 0, hint=hint) == MS.no_leader_backoff
    assert leader.get() is None
    assert next_server(retry, 50) == "a"  # the rotation, from its start


def test_redirects_going_round_in_circles_pause() -> None:
    retry = policy()
    pauses = []
    for hint in ["b", "c", "a", "b"]:
        next_server(retry, 0)
        pauses.append(retry.record(Outcome.NOT_LEADER, 0, hint=hint))
    # One redirect per server is followed at once; more mean stale hints.
    assert pauses == [0, 0, 0, MS.no_leader_backoff]


def test_a_transport_error_forgets_only_that_server_as_leader() -> None:
    leader: KnownLeader[str] = KnownLeader()
    leader.set("b")
    retry = policy(leader=leader)
    assert next_server(retry, 0) == "b"
    leader.set("c")  # another operation learned a newer leader meanwhile
    retry.record(Outcome.MAYBE_DELIVERED, 1000)
    assert leader.get() == "c"
    assert next_server(retry, 1020) == "c"
    retry.record(Outcome.NOT_DELIVERED, 1021)
    assert leader.get() is None


# ------------------------------------------------------------ how long


def test_backoff_after_each_kind_of_failure() -> None:
    pauses = {}
    for outcome in Outcome:
        if outcome in (Outcome.OK, Outcome.INVALID, Outcome.SESSION_EXPIRED):
            continue
        retry = policy()
        next_server(retry, 0)
        pauses[outcome] = retry.record(outcome, 100)
    assert pauses == {
        Outcome.NOT_LEADER: MS.no_leader_backoff,
        Outcome.UNAVAILABLE: MS.no_leader_backoff,
        Outcome.UNKNOWN: MS.no_leader_backoff,
        Outcome.NOT_DELIVERED: MS.error_backoff,
        Outcome.MAYBE_DELIVERED: MS.error_backoff,
    }


def test_a_pause_never_runs_past_the_deadline() -> None:
    retry = policy(timeout=1000)
    next_server(retry, 0)
    assert retry.record(Outcome.MAYBE_DELIVERED, 990) == 10
    next_server(retry, 990)
    assert retry.record(Outcome.NOT_LEADER, 995) == 5
    next_server(retry, 995)
    assert retry.record(Outcome.NOT_LEADER, 1200) == 0


def test_attempt_timeout_is_the_least_of_limit_time_left_and_server_cap() -> None:
    def timeout(retry: Retry[str, int], now: int) -> int:
        attempt = retry.next_attempt(now)
        assert attempt is not None
        retry.record(Outcome.NOT_DELIVERED, now)
        return attempt.timeout

    assert timeout(policy(timeout=10_000), 0) == MS.attempt
    assert timeout(policy(timeout=10_000), 9_700) == 300
    assert timeout(policy(timeout=10_000, server_cap=400), 0) == 400
    assert timeout(policy(timeout=10_000, server_cap=400), 9_900) == 100


def test_default_timing_is_the_named_limits() -> None:
    assert (SECONDS.attempt, SECONDS.error_backoff, SECONDS.no_leader_backoff) == (
        limits.CLIENT_ATTEMPT_SECONDS,
        limits.CLIENT_ERROR_BACKOFF_SECONDS,
        limits.CLIENT_NO_LEADER_BACKOFF_SECONDS,
    )
    micro = Timing.scaled(1_000_000)
    assert (micro.attempt, micro.error_backoff, micro.no_leader_backoff) == (1_000_000, 20_000, 50_000)


# ------------------------------------------------------------ giving up


def fail_until_deadline(retry: Retry[str, int], outcomes: list[Outcome]) -> Exception:
    now = 0
    for outcome in outcomes:
        attempt = retry.next_attempt(now)
        assert attempt is not None
        now += attempt.timeout
        now += retry.record(outcome, now)
    while (attempt := retry.next_attempt(now)) is not None:
        now += attempt.timeout
        now += retry.record(Outcome.NOT_DELIVERED, now, error="connection refused")
    assert now == retry.deadline
    return retry.give_up()


def test_next_attempt_stops_exactly_at_the_deadline() -> None:
    retry = policy(now=100, timeout=500)
    assert retry.next_attempt(599) is not None
    retry.record(Outcome.NOT_DELIVERED, 599)
    assert retry.next_attempt(600) is None


@pytest.mark.parametrize(
    ("write", "outcome", "error"),
    [
        (True, Outcome.NOT_DELIVERED, Unavailable),
        (True, Outcome.NOT_LEADER, Unavailable),
        (True, Outcome.UNAVAILABLE, Unavailable),
        (True, Outcome.MAYBE_DELIVERED, UnknownOutcome),
        (True, Outcome.UNKNOWN, UnknownOutcome),
        (False, Outcome.MAYBE_DELIVERED, Unavailable),
        (False, Outcome.UNKNOWN, Unavailable),
    ],
)
def test_outcome_is_unknown_only_after_a_write_may_have_reached_a_server(
    write: bool, outcome: Outcome, error: type[Exception]
) -> None:
    retry = policy(write=write, timeout=3000)
    assert type(fail_until_deadline(retry, [outcome])) is error


def test_ambiguity_is_not_undone_by_later_clean_refusals() -> None:
    retry = policy(timeout=3000)
    error = fail_until_deadline(retry, [Outcome.MAYBE_DELIVERED, Outcome.NOT_LEADER, Outcome.NOT_DELIVERED])
    assert isinstance(error, UnknownOutcome)
    assert "may or may not have been applied" in str(error)


def test_unavailable_names_the_time_the_servers_tried_and_the_last_error() -> None:
    retry = policy(timeout=2500)
    error = fail_until_deadline(retry, [])
    assert str(error) == "cluster unavailable after 2.5s; tried a, b, c (last error: c: connection refused)"


def test_an_attempt_the_deadline_cut_short_keeps_the_error_that_says_why() -> None:
    # Attempts fail at once (a plaintext client and a TLS server); the last
    # one starts with less than an attempt's time left and runs out of it.
    retry = policy(timeout=2500)
    now, cut_short = 0, 0
    while (attempt := retry.next_attempt(now)) is not None:
        if attempt.timeout < MS.attempt:
            cut_short += 1
            now += attempt.timeout
            retry.record(Outcome.NOT_DELIVERED, now, error="deadline exceeded")
        else:
            now += 400
            now += retry.record(Outcome.NOT_DELIVERED, now, error="unavailable (Socket closed)")
    assert cut_short == 1
    error = str(retry.give_up())
    assert error.endswith(": unavailable (Socket closed))") and "deadline" not in error, error


def test_a_whole_attempt_that_times_out_is_the_last_error() -> None:
    retry = policy(timeout=2500)
    attempt = retry.next_attempt(0)
    assert attempt is not None and attempt.timeout == MS.attempt
    retry.record(Outcome.NOT_DELIVERED, 1000, error="deadline_exceeded (Deadline Exceeded)")
    assert retry.last_error == "a: deadline_exceeded (Deadline Exceeded)"


def test_invalid_request_is_final() -> None:
    retry = policy()
    next_server(retry, 0)
    with pytest.raises(InvalidRequest, match="key too long"):
        retry.record(Outcome.INVALID, 1, error="key too long")


def test_an_expired_session_ends_the_write_at_once_with_an_unknown_outcome() -> None:
    retry = policy()
    next_server(retry, 0)
    assert retry.record(Outcome.SESSION_EXPIRED, 1, error="session 3 has expired") == 0
    assert retry.next_attempt(1) is None
    error = retry.give_up()
    assert isinstance(error, SessionExpired) and isinstance(error, UnknownOutcome)
    assert "session expired" in str(error) and "session 3 has expired" in str(error)


def test_known_leader_forget_keeps_a_different_leader() -> None:
    leader: KnownLeader[int] = KnownLeader()
    leader.set(2)
    leader.forget(1)
    assert leader.get() == 2
    leader.forget(2)
    assert leader.get() is None


# ------------------------------------------------------------ classification


def test_reply_statuses_map_to_outcomes() -> None:
    assert [outcome_of_status(s) for s in kv_pb2.Status.values()] == [
        Outcome.OK,
        Outcome.NOT_LEADER,
        Outcome.UNKNOWN,
        Outcome.INVALID,
        Outcome.UNAVAILABLE,
        Outcome.SESSION_EXPIRED,
    ]
    assert outcome_of_status(99) is Outcome.UNAVAILABLE  # a status from a newer server


def aio_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_only_a_refused_connection_counts_as_not_delivered() -> None:
    refused = aio_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    reset = aio_error(grpc.StatusCode.UNAVAILABLE, "Socket closed")
    late = aio_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert classify(refused)[0] is Outcome.NOT_DELIVERED
    assert classify(reset)[0] is Outcome.MAYBE_DELIVERED
    assert classify(late) == (Outcome.MAYBE_DELIVERED, "", "deadline_exceeded (Deadline Exceeded)")
    reply = kv_pb2.WriteReply(status=kv_pb2.NOT_LEADER, leader_hint="n2", error="")
    assert classify(reply) == (Outcome.NOT_LEADER, "n2", "")


# ------------------------------------------------------------ the library


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


REFUSED = aio_error(grpc.StatusCode.UNAVAILABLE, "connection refused")
LOST = aio_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class FakeStream:
    """A session stream answering from a shared script of (server expected, reply or error), then refusing."""

    def __init__(self, name: str, script: list[tuple[str, object]], clock: FakeClock) -> None:
        self.name, self.script, self.clock = name, script, clock

    async def request(self, message: kv_pb2.SessionRequest, timeout: float) -> kv_pb2.SessionReply:
        expected, answer = self.script.pop(0) if self.script else (self.name, REFUSED)
        assert expected == self.name, f"attempt went to {self.name}, expected {expected}"
        if answer is LOST:
            self.clock.now += timeout
            raise StreamBroken(None, "deadline exceeded", sent=True)
        if isinstance(answer, grpc.aio.AioRpcError):
            raise StreamBroken(answer, answer.details() or "", sent=True)
        if isinstance(answer, kv_pb2.RegisterReply):
            assert message.WhichOneof("kind") == "register"
            return kv_pb2.SessionReply(id=message.id, register=answer)
        assert isinstance(answer, kv_pb2.WriteReply)
        assert message.WhichOneof("kind") == "write"
        return kv_pb2.SessionReply(id=message.id, write=answer)


Set = Callable[[str, str], None]


@pytest.fixture(params=["KVClient", "AsyncKVClient"])
def library(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Library]:
    """Makes a client of either kind over fake streams and a fake clock; its ``set`` is called plainly."""
    clients: list[KVClient] = []

    def make(script: list[tuple[str, object]], timeout: float = 10.0) -> tuple[Set, FakeClock]:
        clock = FakeClock()
        members = [Member(f"n{i}", "127.0.0.1", 1 + i) for i in range(3)]
        set_value: Set
        if request.param == "KVClient":
            kv = KVClient(members, timeout=timeout)
            clients.append(kv)
            inner, set_value = kv._client, kv.set
        else:
            inner = AsyncKVClient(members, timeout=timeout)
            set_value = lambda key, value: asyncio.run(inner.set(key, value))  # noqa: E731

        async def pause(seconds: float) -> None:
            clock.sleep(seconds)

        inner._session = _Session(1)  # registered already, unless a test says otherwise
        streams = {m.name: FakeStream(m.name, script, clock) for m in members}
        monkeypatch.setattr(inner, "_clock", clock.monotonic)
        monkeypatch.setattr(inner, "_pause", pause)
        monkeypatch.setattr(inner, "_stream", lambda member: streams[member.name])
        return set_value, clock

    yield make
    for kv in clients:
        kv.close()


Library = Callable[..., tuple[Set, FakeClock]]


def test_library_follows_hints_and_backs_off_as_the_policy_says(library: Library) -> None:
    script: list[tuple[str, object]] = [
        ("n0", REFUSED),
        ("n1", kv_pb2.WriteReply(status=kv_pb2.NOT_LEADER)),
        ("n2", kv_pb2.WriteReply(status=kv_pb2.NOT_LEADER, leader_hint="n1")),
        ("n1", kv_pb2.WriteReply(status=kv_pb2.OK)),
        ("n1", kv_pb2.WriteReply(status=kv_pb2.OK)),  # the next write goes to the leader at once
    ]
    set_value, clock = library(script)
    set_value("k", "v")
    set_value("k", "w")
    assert not script
    assert clock.sleeps == [SECONDS.error_backoff, SECONDS.no_leader_backoff, 0]


def test_library_write_lost_in_flight_is_unknown_outcome(library: Library) -> None:
    set_value, clock = library([("n0", LOST)], timeout=1.5)
    with pytest.raises(UnknownOutcome, match=r"after 1\.5s.*last error: 127\.0\.0\.1:\d: "):
        set_value("k", "v")
    assert clock.now >= 1001.5


def test_library_write_never_delivered_is_unavailable(library: Library) -> None:
    set_value, clock = library([], timeout=0.05)
    with pytest.raises(Unavailable, match=r"tried 127\.0\.0\.1:1, 127\.0\.0\.1:2, 127\.0\.0\.1:3 \("):
        set_value("k", "v")
    assert clock.sleeps[:2] == [SECONDS.error_backoff, SECONDS.error_backoff]


def test_library_raises_invalid_request_at_once(library: Library) -> None:
    script: list[tuple[str, object]] = [("n0", kv_pb2.WriteReply(status=kv_pb2.INVALID, error="bad command"))]
    set_value, clock = library(script)
    with pytest.raises(InvalidRequest, match="bad command"):
        set_value("k", "v")
    assert clock.sleeps == []


def test_library_write_in_an_expired_session_is_unknown_and_the_next_registers_anew(library: Library) -> None:
    script: list[tuple[str, object]] = [
        ("n0", kv_pb2.WriteReply(status=kv_pb2.SESSION_EXPIRED, error="session 1 has expired")),
        ("n0", kv_pb2.RegisterReply(status=kv_pb2.NOT_LEADER, leader_hint="n2")),
        ("n2", kv_pb2.RegisterReply(status=kv_pb2.OK, session_id=9)),
        ("n2", kv_pb2.WriteReply(status=kv_pb2.OK)),
    ]
    set_value, clock = library(script)
    with pytest.raises(SessionExpired, match="session 1 has expired"):
        set_value("k", "v")
    assert clock.now == 1000.0, "no retry and no pause in an expired session"
    set_value("k", "w")
    assert not script


# ------------------------------------------------- the loop that drives the policy


def run_with_retry(
    answers: list[Attempted[str]],
    *,
    timeout: float = 10.0,
    write: bool = True,
    leader: KnownLeader[str] | None = None,
    refused: Callable[[InvalidRequest], Awaitable[str | None]] | None = None,
    give_up: Callable[[], str] | None = None,
) -> tuple[str, list[tuple[str, str]], FakeClock, Retry[str, float]]:
    """``with_retry`` over scripted answers and a fake clock: its result, the (server, hint) of
    each attempt in the order made, the clock and the policy."""
    clock = FakeClock()
    retry = Retry(SERVERS, leader or KnownLeader(), clock.monotonic(), timeout, SECONDS, write=write)
    seen: list[tuple[str, str]] = []

    async def attempt(at: Attempt[str, float]) -> Attempted[str]:
        tried = answers.pop(0) if answers else Attempted(Outcome.NOT_DELIVERED, error="connection refused")
        seen.append((at.server, tried.hint))
        return tried

    async def follow_hint(hint: str, server: str, policy: Retry[str, float]) -> None:
        assert policy is retry and retry.current == server, "runs before the attempt is recorded"

    async def pause(seconds: float) -> None:
        clock.sleep(seconds)

    result = asyncio.run(
        with_retry(
            retry,
            attempt,
            leader_named=lambda hint: hint or None,
            clock=clock.monotonic,
            pause=pause,
            follow_hint=follow_hint,
            refused=refused,
            give_up=give_up,
        )
    )
    return result, seen, clock, retry


def test_with_retry_follows_hints_pauses_as_the_policy_says_and_returns_the_answer() -> None:
    answers = [
        Attempted[str](Outcome.MAYBE_DELIVERED, error="reset"),
        Attempted[str](Outcome.NOT_LEADER),
        Attempted[str](Outcome.NOT_LEADER, hint="b"),
        Attempted(Outcome.OK, result="done"),
    ]
    leader: KnownLeader[str] = KnownLeader()
    result, seen, clock, retry = run_with_retry(answers, leader=leader)
    assert result == "done"
    assert seen == [("a", ""), ("b", ""), ("c", "b"), ("b", "")]
    assert clock.sleeps == [SECONDS.error_backoff, SECONDS.no_leader_backoff, 0]
    assert leader.get() == "b" and retry.ambiguous


def test_with_retry_raises_the_policy_error_when_time_is_up() -> None:
    with pytest.raises(UnknownOutcome, match=r"after 0\.1s"):
        run_with_retry([Attempted(Outcome.MAYBE_DELIVERED, error="reset")], timeout=0.1)
    with pytest.raises(Unavailable, match=r"after 0\.1s; tried a, b, c"):
        run_with_retry([], timeout=0.1)


def test_with_retry_returns_what_give_up_says_instead() -> None:
    result, seen, clock, _ = run_with_retry([], timeout=0.1, give_up=lambda: "fallback")
    assert result == "fallback" and len(seen) > 1 and clock.now >= 1000.1


def test_with_retry_ends_on_a_final_attempt_after_recording_it() -> None:
    leader: KnownLeader[str] = KnownLeader()
    leader.set("a")
    result, seen, clock, retry = run_with_retry(
        [Attempted(Outcome.NOT_LEADER, result="a follower's answer", final=True)], leader=leader
    )
    assert result == "a follower's answer" and seen == [("a", "")]
    assert leader.get() is None, "recorded as a refusal that names no leader"
    assert clock.sleeps == [] and retry.last_error == "a: not leader"


def test_with_retry_raises_invalid_request_unless_refused_settles_it() -> None:
    invalid = Attempted[str](Outcome.INVALID, error="not finished")
    with pytest.raises(InvalidRequest, match="not finished"):
        run_with_retry([invalid])

    calls: list[str] = []

    async def refused(exc: InvalidRequest) -> str | None:
        calls.append(str(exc))
        return None if len(calls) == 1 else "in effect"

    result, seen, clock, _ = run_with_retry([invalid, invalid], refused=refused)
    assert result == "in effect" and calls == ["not finished", "not finished"]
    assert clock.sleeps == [SECONDS.no_leader_backoff], "asks again after the no-leader pause"
    assert len(seen) == 2


def test_unknown_outcome_is_a_kv_error() -> None:
    assert issubclass(UnknownOutcome, KVError)
