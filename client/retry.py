"""How a client retries one operation: which server, how long, when to stop.

``Retry`` is a sans-I/O policy, one per operation.  It never reads a clock,
sleeps or touches the network: the caller asks it for the next attempt (a
server and how long the attempt may take), makes the call, tells it what came
back, and pauses as long as it says.  Times are plain numbers in the caller's
unit, so the library's threads (seconds from ``time.monotonic``), the load
generator's asyncio tasks and the simulator's event loop (integer
microseconds) all drive the same decisions:

* the known leader is tried first, else the next server in a rotation that
  starts with the first server for every operation;
* an attempt lasts at most ``Timing.attempt``, the time left, and any cap the
  server puts on a request;
* a refusal that names another server in the client's list as leader is
  followed at once; one that names no leader, an unknown server or the server
  itself, and redirects that go round in circles, pause for
  ``Timing.no_leader_backoff`` (an election is running);
* a transport error forgets that server as leader and pauses for
  ``Timing.error_backoff``, so a dead cluster is not hammered;
* a write's outcome becomes unknown only when an attempt may have reached a
  server (a transport error other than a refused connection or a name that
  does not resolve, or a server that lost leadership with the write
  pending); giving up then raises ``UnknownOutcome``, else ``Unavailable``
  (nothing was applied);
* a write refused because its session expired ends at once with
  ``SessionExpired``, an ``UnknownOutcome``: an earlier attempt may have
  applied it before the session was evicted, and no retry in that session
  can tell.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar, assert_never

from client.errors import InvalidRequest, KVError, SessionExpired, Unavailable, UnknownOutcome
from paxos.common.limits import CLIENT_ATTEMPT_SECONDS, CLIENT_ERROR_BACKOFF_SECONDS, CLIENT_NO_LEADER_BACKOFF_SECONDS
from protos import kv_pb2

# The errors were defined here first: ``from client.retry import KVError`` still works.
__all__ = [
    "SECONDS",
    "Attempt",
    "InvalidRequest",
    "KVError",
    "KnownLeader",
    "Outcome",
    "Retry",
    "SessionExpired",
    "Timing",
    "Unavailable",
    "UnknownOutcome",
    "outcome_of_status",
]

S = TypeVar("S", bound=Hashable)  # how the caller names a server
N = TypeVar("N", int, float)  # the caller's unit of time
NO_ATTEMPT = "no attempt made"  # the last error before any


class Outcome(enum.Enum):
    """What one attempt came back with."""

    OK = "ok"
    NOT_LEADER = "not leader"  # refused, nothing applied; the reply may name the leader
    UNAVAILABLE = "unavailable"  # refused for want of a quorum, nothing applied
    UNKNOWN = "unknown"  # the server lost leadership with the write pending: it may still apply
    INVALID = "invalid"  # malformed request, nothing applied; no retry can help
    NOT_DELIVERED = "not delivered"  # transport error before the request reached a server
    MAYBE_DELIVERED = "maybe delivered"  # transport error after the request may have reached one
    SESSION_EXPIRED = "session expired"  # a write's session is not kept: not applied now, maybe before


_STATUS_OUTCOMES: dict[int, Outcome] = {
    kv_pb2.OK: Outcome.OK,
    kv_pb2.NOT_LEADER: Outcome.NOT_LEADER,
    kv_pb2.UNAVAILABLE: Outcome.UNAVAILABLE,
    kv_pb2.UNKNOWN: Outcome.UNKNOWN,
    kv_pb2.INVALID: Outcome.INVALID,
    kv_pb2.SESSION_EXPIRED: Outcome.SESSION_EXPIRED,
}


def outcome_of_status(status: int) -> Outcome:
    """The outcome a reply's ``Status`` stands for.

    A status this client does not know (from a newer server, or garbage) is
    taken as a refusal that applied nothing, the meaning of every status a
    server sends without doing the work.
    """
    return _STATUS_OUTCOMES.get(status, Outcome.UNAVAILABLE)


@dataclass(frozen=True)
class Timing(Generic[N]):
    """The retry durations in the caller's unit of time."""

    attempt: N  # longest one attempt may take
    error_backoff: N  # pause after a transport error
    no_leader_backoff: N  # pause when no usable leader is named
    per_second: int = 1  # units in a second, for messages

    @classmethod
    def scaled(cls, per_second: int, attempt_seconds: float = CLIENT_ATTEMPT_SECONDS) -> Timing[int]:
        """The default durations in integer units, ``per_second`` of them a second."""
        return Timing(
            round(attempt_seconds * per_second),
            round(CLIENT_ERROR_BACKOFF_SECONDS * per_second),
            round(CLIENT_NO_LEADER_BACKOFF_SECONDS * per_second),
            per_second,
        )


SECONDS: Timing[float] = Timing(CLIENT_ATTEMPT_SECONDS, CLIENT_ERROR_BACKOFF_SECONDS, CLIENT_NO_LEADER_BACKOFF_SECONDS)


class KnownLeader(Generic[S]):
    """The server a client last saw acting as leader, shared by all its operations.

    Safe to share between threads: each change is made under a lock, so an
    operation that forgets a failed server never erases a leader another
    operation has just learned.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: S | None = None

    def get(self) -> S | None:
        return self._server

    def set(self, server: S | None) -> None:
        with self._lock:
            self._server = server

    def forget(self, server: S) -> None:
        with self._lock:
            if self._server == server:
                self._server = None


@dataclass(frozen=True)
class Attempt(Generic[S, N]):
    server: S
    timeout: N  # how long this attempt may take, in the caller's unit


class Retry(Generic[S, N]):
    """The retry decisions for one operation; see the module docstring."""

    def __init__(
        self,
        servers: Sequence[S],
        leader: KnownLeader[S],
        now: N,
        timeout: N,
        timing: Timing[N],
        *,
        write: bool,
        any_server: bool = False,
        server_cap: N | None = None,
        describe: Callable[[S], str] = str,
    ) -> None:
        """``any_server``: a read any server may answer, so the leader is not sought.

        ``server_cap`` bounds an attempt where servers end a request sooner
        than its deadline; ``describe`` names a server in error messages.
        """
        if not servers:
            raise ValueError("a client needs at least one server")
        self.servers = tuple(servers)
        self._known = frozenset(self.servers)
        self.leader = leader
        self.timing: Timing[N] = timing
        self.timeout: N = timeout
        # Public so that a caller may extend the operation's time (the
        # simulator does, at the heal); the policy itself never moves it.
        self.deadline: N = now + timeout
        self.write = write
        self.any_server = any_server
        self.server_cap: N | None = server_cap
        self.describe = describe
        self.ambiguous = False
        self.session_expired = False
        self.current: S | None = None  # the server of the attempt in flight
        self.tried: list[S] = []
        self.last_error = NO_ATTEMPT
        self._rotation = 0
        self._refusals = 0
        self._cut_short = False  # the attempt in flight was given less than a whole attempt's time

    def add_servers(self, servers: Sequence[S]) -> None:
        """Servers learned while the operation runs (a leader the client's list lacked): they join the rotation."""
        fresh: tuple[S, ...] = tuple(s for s in servers if s not in self._known)
        if fresh:
            self.servers = self.servers + fresh
            self._known = frozenset(self.servers)

    def next_attempt(self, now: N) -> Attempt[S, N] | None:
        """Where to send the next attempt and for how long; None when the time is up."""
        remaining = self.deadline - now
        if remaining <= 0:
            return None
        leader = self.leader.get()
        if leader is not None and leader in self._known and not self.any_server:
            server = leader
        else:
            server = self.servers[self._rotation % len(self.servers)]
            self._rotation += 1
        if server not in self.tried:
            self.tried.append(server)
        self.current = server
        timeout = min(self.timing.attempt, remaining)
        self._cut_short = remaining < self.timing.attempt
        if self.server_cap is not None:
            timeout = min(timeout, self.server_cap)
        return Attempt(server, timeout)

    def record(self, outcome: Outcome, now: N, hint: S | None = None, error: str = "") -> N:
        """Take in the current attempt's outcome; how long to pause before the next attempt.

        After ``OK`` the operation is done (the answering server becomes the
        known leader, unless any server may answer).  ``INVALID`` raises
        ``InvalidRequest`` with the server's ``error``: no retry can help.
        ``hint`` is the leader a refusal names, if any.
        """
        server = self.current
        assert server is not None, "record() without an attempt in flight"
        self.current = None
        pause_left = max(self.deadline - now, 0)
        match outcome:
            case Outcome.OK:
                if not self.any_server:
                    self.leader.set(server)
                return 0
            case Outcome.INVALID:
                raise InvalidRequest(error or "request refused as invalid")
            case Outcome.SESSION_EXPIRED:
                # No retry in this session can help: the operation ends now.
                self._note(server, outcome, error)
                self.session_expired = self.ambiguous = True
                self.deadline = now
                return 0
            case Outcome.NOT_DELIVERED | Outcome.MAYBE_DELIVERED:
                self._note(server, outcome, error)
                if outcome is Outcome.MAYBE_DELIVERED and self.write:
                    self.ambiguous = True
                self.leader.forget(server)
                return min(self.timing.error_backoff, pause_left)
            case Outcome.NOT_LEADER | Outcome.UNAVAILABLE | Outcome.UNKNOWN:
                self._note(server, outcome, error)
                if outcome is Outcome.UNKNOWN and self.write:
                    self.ambiguous = True
                self._refusals += 1
                usable = hint is not None and hint in self._known and hint != server
                self.leader.set(hint if usable else None)
                # Redirects beyond one per server go round in circles on stale hints.
                if usable and self._refusals <= len(self.servers):
                    return 0
                return min(self.timing.no_leader_backoff, pause_left)
            case _:
                assert_never(outcome)

    def give_up(self) -> KVError:
        """The error to raise once ``next_attempt`` has said the time is up."""
        seconds = f"{self.timeout / self.timing.per_second:g}s"
        if self.session_expired:
            return SessionExpired(
                "write outcome unknown: its session expired (the cluster keeps a bounded number), so it was "
                "not applied now and may or may not have been before; the next write opens a new session "
                f"(last error: {self.last_error})"
            )
        if self.ambiguous:
            return UnknownOutcome(
                f"write outcome unknown after {seconds}: it may or may not have been applied "
                f"(last error: {self.last_error})"
            )
        tried = ", ".join(self.describe(s) for s in self.tried)
        return Unavailable(f"cluster unavailable after {seconds}; tried {tried} (last error: {self.last_error})")

    def _note(self, server: S, outcome: Outcome, error: str) -> None:
        detail = error if outcome in (Outcome.NOT_DELIVERED, Outcome.MAYBE_DELIVERED) else f"{outcome.value} {error}"
        if self._cut_short and _time_ran_out(error) and self.last_error != NO_ATTEMPT:
            # The operation's own deadline ended this attempt: it says only
            # that time ran out, where the error before it says why the
            # attempts failed (a server that wants TLS, say).
            return
        self.last_error = f"{self.describe(server)}: {detail.strip()}"


def _time_ran_out(error: str) -> bool:
    """Whether an attempt's error says only that its deadline passed (a gRPC status, or a stream's)."""
    return error.strip().lower().replace("_", " ").startswith("deadline exceeded")
