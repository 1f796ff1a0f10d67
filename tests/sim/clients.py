"""Simulated clients: ``client/kv.py``'s KVClient on ``client/retry.py``, in simulated time.

Each drives the retry policy ``KVClient`` ships with (leader hints, a
rotation over the servers, 1 s attempts inside an operation deadline,
"unknown outcome" only when some attempt may have reached a server), sends
the same (session, seq, first_unacked) on every retry of a write, and
records its operations for ``tests/harness/lincheck.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from client.retry import KnownLeader, Outcome, Retry, Timing, UnknownOutcome, outcome_of_status
from paxos.kv.statemachine import session_of
from paxos.server import service as paxos_server
from protos import kv_pb2
from tests.harness import lincheck
from tests.sim.network import DEADLINE, REFUSED, RESET, Request
from tests.sim.units import SECOND, fmt_time

if TYPE_CHECKING:
    from tests.sim.run import Simulation

CLIENT_TIMING = Timing.scaled(SECOND)
SERVER_REQUEST_US = round(paxos_server.DEFAULT_REQUEST_SECONDS * SECOND)


@dataclass(slots=True)
class ClientOp:
    kind: str  # set | get | delete | register (before a write, when the client has no session)
    key: str
    arg: str | None
    call: int
    retry: Retry[int, int]  # the library's retry decisions, over server indexes
    seq: int = 0
    cmd: kv_pb2.Command | None = None
    final: bool = False

    @property
    def deadline(self) -> int:
        return self.retry.deadline

    @deadline.setter
    def deadline(self, deadline: int) -> None:
        self.retry.deadline = deadline


class Client:
    """``client/kv.py``'s KVClient, one operation at a time, on ``client/retry.py``."""

    # The simulated transport errors as the library classifies gRPC's.
    TRANSPORT_OUTCOMES = {
        REFUSED: Outcome.NOT_DELIVERED,
        RESET: Outcome.MAYBE_DELIVERED,
        DEADLINE: Outcome.MAYBE_DELIVERED,
    }

    def __init__(self, sim: Simulation, index: int) -> None:
        self.sim = sim
        self.index = index
        self.name = f"c{index}"
        # The session the client's writes go in, registered before its
        # first write and again after one expired (as client/aio.py does).
        self.session: int | None = None
        self.next_seq = 1
        self.open_seqs: set[int] = set()
        self.after_register: tuple[str, str] | None = None  # the write waiting for a session
        self.leader: KnownLeader[int] = KnownLeader()
        self.op: ClientOp | None = None
        self.attempt = 0
        self.waiting = False
        self.final_ops = 0  # set by the heal: operations still to run
        # Some clients mostly read, some mostly write, like real workloads.
        self.read_ratio = sim.rng.choice((0.1, 0.5, 0.9))
        self.done = False

    def next_op(self) -> None:
        sim = self.sim
        rng = sim.rng
        final = sim.healed
        if final:
            if self.final_ops == 0:
                self.op = None
                self.done = True
                return
            kind = "set" if self.final_ops == 2 else "get"
            self.final_ops -= 1
        else:
            r = rng.random()
            kind = "get" if r < self.read_ratio else "delete" if r > 0.9 + self.read_ratio / 10 else "set"
        key = rng.choice(sim.profile.keys)
        if kind != "get" and self.session is None:
            self.after_register = (kind, key)
            kind, key = "register", ""
        self.start_op(kind, key, final)

    def start_op(self, kind: str, key: str, final: bool) -> None:
        sim = self.sim
        deadline = sim.liveness_deadline if final else sim.now + sim.profile.client_timeout_us
        retry = Retry(
            range(sim.size),
            self.leader,
            sim.now,
            deadline - sim.now,
            CLIENT_TIMING,
            write=kind in ("set", "delete"),
            server_cap=SERVER_REQUEST_US,
        )
        op = ClientOp(kind, key, None, sim.now, retry, final=final)
        if kind in ("set", "delete"):
            assert self.session is not None
            op.seq = self.next_seq
            self.next_seq += 1
            self.open_seqs.add(op.seq)
            cmd = kv_pb2.Command(session_id=self.session, seq=op.seq, first_unacked=min(self.open_seqs))
            if kind == "set":
                op.arg = f"{self.name}.{op.seq}"
                cmd.set.CopyFrom(kv_pb2.SetOp(key=key, value=op.arg))
            else:
                cmd.delete.CopyFrom(kv_pb2.DeleteOp(key=key))
            op.cmd = cmd
        self.op = op
        what = f"{kind} {key}" + (f"={op.arg}" if op.arg else "") + (f" (#{op.seq})" if op.seq else "")
        sim.log_client(self, f"call {what}", op)
        self.send_attempt()

    def send_attempt(self) -> None:
        sim = self.sim
        op = self.op
        assert op is not None
        attempt = op.retry.next_attempt(sim.now)
        if attempt is None:
            self.give_up()
            return
        self.attempt += 1
        self.waiting = True
        deadline = sim.now + attempt.timeout
        req = Request(self, self.attempt, op.key, op.cmd, deadline, register=op.kind == "register")
        sim.network.send_request(attempt.server, req)
        sim.at(deadline, self.on_attempt_timeout, self.attempt)

    def on_attempt_timeout(self, attempt: int) -> None:
        if attempt == self.attempt and self.waiting:
            self.on_reply(attempt, DEADLINE, None, False, None)

    def on_reply(self, attempt: int, status: int, value: str | None, removed: bool, hint: int | None) -> None:
        if attempt != self.attempt or not self.waiting:
            return  # a late answer to an attempt the client gave up on
        self.waiting = False
        op = self.op
        assert op is not None
        sim = self.sim
        if sim.verbose:
            sim.log_client(self, f"attempt {attempt} at n{op.retry.current}: {status_name(status)}", op)
        outcome = self.TRANSPORT_OUTCOMES.get(status) or outcome_of_status(status)
        if outcome is Outcome.INVALID:
            sim.violation("client", f"{self.name}: a valid {op.kind} was refused as invalid")
            return
        pause = op.retry.record(outcome, sim.now, hint)
        if outcome is Outcome.OK:
            self.finish(value if op.kind in ("get", "register") else removed if op.kind == "delete" else None)
        elif pause > 0:
            sim.at(sim.now + pause, self.send_attempt)
        else:
            self.send_attempt()

    def finish(self, result: object) -> None:
        op = self.op
        assert op is not None
        sim = self.sim
        if op.kind == "register":
            assert isinstance(result, str)
            self.session, self.next_seq, self.open_seqs = int(result), 1, set()
            sim.log_client(self, f"registered session {self.session}", op)
            holder = sim.checks.session_holders.get(self.session)
            if holder is not None:
                sim.violation("safety", f"session {self.session} was handed to {self.name}, and to {holder} before")
            sim.checks.session_holders[self.session] = self.name
            sim.stats["sessions_registered"] += 1
            assert self.after_register is not None
            (kind, key), self.after_register = self.after_register, None
            self.op = None
            self.start_op(kind, key, op.final)
            return
        sim.checks.history.append(lincheck.Op(self.name, op.key, op.kind, op.arg, op.call, sim.now, result))
        if op.cmd is not None:
            assert self.session is not None
            sim.checks.acked.append((self.session, op.seq, sim.now))
        shown = "" if op.kind == "set" else f" -> {result!r}"
        seq = f" #{op.seq}" if op.seq else ""
        sim.log_client(self, f"ok {op.kind} {op.key}{seq}{shown} (called {fmt_time(op.call).strip()})", op)
        sim.stats["ops_ok"] += 1
        self.end_op()

    def give_up(self) -> None:
        op = self.op
        assert op is not None
        sim = self.sim
        expired = op.retry.session_expired
        if expired:
            self.session = None  # the next write registers a new one
            sim.stats["sessions_expired"] += 1
        if op.final and not expired:
            return  # left pending: the liveness check reports it
        if op.kind == "register":
            sim.stats["ops_failed"] += 1
            sim.log_client(self, "registration gave up (the write waiting for it was never sent)", op)
            self.after_register = None
            self.end_op()
            return
        if isinstance(op.retry.give_up(), UnknownOutcome):
            assert op.cmd is not None
            op_unknown = lincheck.Op(self.name, op.key, op.kind, op.arg, op.call, None, None)
            sim.checks.unknown.append((op_unknown, (session_of(op.cmd), op.seq)))
            sim.stats["ops_unknown"] += 1
            outcome = "unknown outcome" + (" (session expired)" if expired else "")
        else:
            sim.stats["ops_failed"] += 1
            outcome = "unavailable (not applied)"
        sim.log_client(self, f"{op.kind} {op.key} gave up: {outcome}", op)
        if op.final:
            self.final_ops += 1  # a final write whose session expired runs again, in a new session
        self.end_op()

    def end_op(self) -> None:
        op = self.op
        assert op is not None
        self.open_seqs.discard(op.seq)
        self.op = None
        sim = self.sim
        sim.at(sim.now + sim.rng.randrange(sim.profile.think_us), self.next_op)

    def describe_pending(self) -> str:
        op = self.op
        if op is None:
            return f"{self.name}: idle" + ("" if self.done else f", {self.final_ops} final ops to run")
        return f"{self.name}: {op.kind} {op.key} called at {fmt_time(op.call).strip()} still pending"


def status_name(status: int) -> str:
    names = {REFUSED: "connection refused", RESET: "connection reset", DEADLINE: "deadline exceeded"}
    return names.get(status) or kv_pb2.Status.Name(status).lower()
