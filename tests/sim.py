"""Deterministic simulation of a whole paxoskv cluster, FoundationDB style.

One ``random.Random(seed)`` drives everything: the cluster size (3, 5 or 7),
every node's core rng, the network, the disks, the clocks, the faults and
the clients.  Time is simulated in integer microseconds and nothing reads a
real clock or iterates an unordered collection, so a seed replays exactly::

    python -m tests.sim --seed 1234 [--verbose | --timeline] [--bug NAME]
    python -m tests.sim --seeds 10000 [--start N] [--nodes 3,5,7] [--bug NAME] [--jobs J]

What is simulated, each piece mirroring the real thing it stands for:

* ``Host`` is one server process running the shipped ``paxos.replica.Replica``
  (the same class the gRPC server runs) on a simulated disk, network and
  clock.  ``SimDisk`` makes appended records durable after a simulated fsync
  latency (with occasional stalls); a crash loses what was not fsynced,
  except for a random prefix (a torn WAL tail).  Each node's clock runs at
  its own rate (+-5%) and its ticker wakes late now and then; after a stall
  the piled-up ticks, messages and requests run in random order.  What the
  replica does with all that (order of effects, apply, answers, leases) is
  the product's own code, not a copy.
* ``Client`` drives ``client/retry.py``, the retry policy ``KVClient`` ships
  with (leader hints, a rotation over the servers, 1 s attempts inside an
  operation deadline, "unknown outcome" only when some attempt may have
  reached a server), in simulated time, and sends the same (client_id, seq,
  first_unacked) on every retry of a write.  Each client records its
  operations for ``tests/lincheck.py``.
* the network: every peer link is one FIFO stream (LAN or WAN latency and
  jitter per seed) with per-seed loss, duplication and reordering.  A cut
  link either holds its traffic until the cut heals (the stream survived) or
  drops it (the stream was reset), chosen per direction, and comes back
  after its own reconnect delay.  Clients sit on one side of a cut, and their
  connection attempts across it are refused or dropped.
* snapshots: every seed snapshots every few commands (``Profile``) and keeps
  a short tail, so replicas compact their logs, restart from snapshots and
  fetch each other's snapshots all the time.  A snapshot is written after
  a while and a crash before then loses it (a torn temporary file); a
  transfer takes a while, may fail, hang until its timeout, or deliver the
  source's older snapshot (which the replica must ignore); a crash at any
  of these steps is survived from what was durable.  ``thaw`` rebuilds a
  state machine through the same parts a snapshot file holds.
* membership changes (``Simulation.reconfigure``), at a rate drawn per seed:
  spare servers are added as learners (each starts with the configuration
  it would learn from the cluster), learners promoted and members removed,
  the leader included, sometimes two asked for back to back; deposing the
  leader sometimes cuts it off together with the learners.  Every
  configuration chosen must be one step from the one before it, and only
  the final configuration's servers must converge.
* the nemesis, for ``fault_seconds``: crashes (quick or slow restarts from
  what was persisted), power loss of a majority or of all nodes, partitions
  of any shape (halves, one-way, a bridge node, random links), deposing the
  leader (cutting it off for longer than the shortest election timeout and
  shorter than its quorum timeout, so two leaders meet when it heals), and
  process stalls (piled-up work runs in random order on resume), and forged
  peer messages (``Forger``: malformed, out of range, oversized, from
  another cluster or a non-member, ballots far above any seen, accepts
  beyond the window, unsolicited catch-up replies), each of which must be
  refused by the codec or the core.  In most seeds, also lost disks
  (``Simulation.lose_disk``): a voter's disk, snapshots and incarnation
  book are wiped and it is restarted with its usual command, so it runs the
  founding check (paxos/incarnation.py) on what the others recorded; a
  minority at most, one at a time.  One that is refused stays down and is
  removed from the configuration, as its operator would.  Each seed
  mixes these in its own proportions (swarm testing).  Then everything
  heals, every node is up, faults stop, and the liveness phase starts.

Checked, with the seed and a timeline of the events that matter on failure:

* safety: no two nodes ever learn different values for a slot (every
  ``Ready.committed`` is compared with the first value learned there, which
  also makes every applied sequence a prefix of the longest); every
  acknowledged write took effect in the final log; every node ends with the
  data that replaying the log gives;
* the client history is linearizable;
* liveness: after the heal, every pending operation and one more write and
  read per client complete within ``LIVENESS_US`` of simulated time, and all
  nodes converge to the same applied index;
* no honest message is refused (except the two kinds an honest cluster can
  cause, see ``HONEST_REFUSALS``), and every forged one is.

Planted bugs (``--bug``, see ``ALL_BUGS``) prove that these checks bite: the
core's and the replica's (``paxos.consensus.core.PLANTABLE_BUGS``: among them
compaction that forgets accepted values above the commit index, snapshots
without the client-session table, and installing a snapshot older than the
applied index) and the host's ``ack_before_fsync``, planted in ``SimDisk``,
which then reports an fsync done at once and fsyncs in the background, and
``skip_incarnation_check``: every host stamps its messages with the same
incarnation, so nothing new is recorded or refused, and a server that lost
its disk founds anew without asking.
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import multiprocessing
import os
import random
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, assert_never

from client.retry import KnownLeader, Outcome, Retry, Timing, UnknownOutcome, outcome_of_status
from paxos.common import limits
from paxos.consensus.core import PLANTABLE_BUGS, Config, Node, Role
from paxos.consensus.membership import ConfigMember, Membership
from paxos.consensus.messages import (
    Accept,
    AcceptedEntry,
    AcceptRecord,
    Ballot,
    CatchupReply,
    ChosenRecord,
    CommitRecord,
    DurableState,
    Heartbeat,
    Message,
    Promise,
    PromiseRecord,
    Record,
    Slot,
    Value,
)
from paxos.incarnation import NONE, Founding, FoundingAnswer, FoundingDecision, decide_founding
from paxos.kv.configuration import configuration_in
from paxos.kv.statemachine import FrozenState, Registration, Result, SessionKey, StateMachine, session_of
from paxos.replica import FetchedSnapshot, Observer, RegisterAnswer, Replica, WriteAnswer
from paxos.server import service as paxos_server
from paxos.server.codec import DecodeError, PeerCodec
from paxos.storage.snapshot import header_for
from protos import kv_pb2, log_pb2, peer_pb2
from tests import lincheck

# How often a snapshot transfer delivers the source's older snapshot rather
# than its newest, as a confused or hostile peer might.
STALE_SNAPSHOT = 0.2


def thaw(frozen: FrozenState | None, rng: random.Random | None = None) -> StateMachine:
    """A new state machine from a snapshot, through the same parts a snapshot file holds.

    With ``rng``: one that evicts sessions at random (the planted bug
    ``nondeterministic_session_eviction``), drawing from ``rng``.
    """
    kind = StateMachine if rng is None else ForgetfulStateMachine
    store = kind() if frozen is None else kind.restore(header_for(frozen, SIM_CLUSTER_ID, []), frozen.parts())
    if isinstance(store, ForgetfulStateMachine):
        store.rng = rng
    return store


class ForgetfulStateMachine(StateMachine):
    """The planted bug ``nondeterministic_session_eviction``: now and then, a
    replica evicts a session of its own random choosing, as one that evicted
    by its own clock or memory pressure would.  Replicas then disagree on
    which writes a session refuses, and on the session table."""

    EVICT_CHANCE = 0.05  # per applied slot

    rng: random.Random | None = None

    def apply(self, slot: Slot, value: Value) -> list[Result | Registration]:
        results = super().apply(slot, value)
        sessions = [key for key, _, _ in self.session_table()]
        if self.rng is not None and sessions and self.rng.random() < self.EVICT_CHANCE:
            victim = self.rng.choice(sessions)
            del self._sessions[victim]
            del self._lru[victim]
        return results


# Mistakes planted in the simulated host rather than in the core.
HOST_BUGS = frozenset(
    {
        "ack_before_fsync",  # the disk reports an fsync done before it is durable
        "nondeterministic_session_eviction",  # see ForgetfulStateMachine
        # Incarnations are neither recorded nor checked, and a server that
        # lost its disk founds anew without asking the others.
        "skip_incarnation_check",
    }
)
# The one incarnation every data dir sends under skip_incarnation_check.
SKIPPED_INCARNATION = 1
ALL_BUGS = PLANTABLE_BUGS | HOST_BUGS

SECOND = 1_000_000
MS = 1_000
TICK_US = round(limits.TICK_SECONDS * SECOND)
# Seeds in which servers lose their disks (drawn from a random source of
# their own, so that the other seeds run exactly as before the fault
# existed), and how often one is lost then.
LOSE_DISK_SEEDS = 0.7
LOSE_DISK_GAP_US = 3 * SECOND
LOSE_DISK_STAGED = 0.5
CLIENT_TIMING = Timing.scaled(SECOND)
SERVER_REQUEST_US = round(paxos_server.DEFAULT_REQUEST_SECONDS * SECOND)

DEFAULT_NODES = (3, 5, 7)
DEFAULT_FAULT_SECONDS = 20.0
# After the heal, pending and final client operations must finish this soon.
LIVENESS_US = 30 * SECOND
CONVERGENCE_POLL_US = 50 * MS
# A peer link that was cut comes back within this long: each stream resumes
# after its own gRPC reconnect backoff or TCP retransmission timer.
RECONNECT_US = 150 * MS
# asyncio.sleep(TICK) wakes up to this late.
TICK_JITTER_US = TICK_US // 10
# Client-visible outcomes beyond kv_pb2.Status: transport errors.
REFUSED = -1  # connection refused: the request surely never arrived
RESET = -2  # connection lost mid-call: a write may have been applied
DEADLINE = -3  # the attempt's deadline passed without an answer
# Printed timeline length on failure (the full trace is --verbose).
TIMELINE_LINES = 250


# ------------------------------------------------------------------ profile


@dataclass(frozen=True)
class Profile:
    """The fault and workload parameters of one seed, drawn from its rng."""

    latency_us: int  # fixed part of a one-way message delay
    jitter_us: int  # plus up to this much
    loss: float
    duplicate: float
    reorder: float  # chance that a message is held back by up to reorder_us
    reorder_us: int
    client_loss: float
    fsync_us: tuple[int, int]
    fsync_stall: float  # chance that an fsync takes 20-100 ms
    fault_gap_us: int  # mean time between two nemesis actions
    # Swarm testing: each seed mixes the fault kinds in its own proportions,
    # some not at all, so that runs differ in kind and not only in timing.
    crash_weight: float
    power_loss_weight: float  # a majority (or all) crash at once
    partition_weight: float
    depose_weight: float  # cut the leader off for about an election
    pause_weight: float
    forge_weight: float  # hostile messages from outside the cluster
    clients: int
    keys: tuple[str, ...]
    client_timeout_us: int
    think_us: int
    # Snapshots: commands applied between two, and slots kept below one.
    # Small, so that snapshots, compaction and transfers happen often.
    snapshot_every: int
    snapshot_tail: int
    # Membership changes: how often one is asked for (a weight among the
    # nemesis actions), and how many servers wait outside the cluster to
    # be added.  A change is sometimes followed at once by another.
    reconfigure_weight: float
    spares: int
    # Client sessions the state machine keeps (limits.MAX_CLIENT_SESSIONS for
    # the run): in some seeds fewer than there are clients, so sessions are
    # evicted, writes in them refused as expired, and clients register anew.
    max_sessions: int

    @classmethod
    def draw(cls, rng: random.Random) -> Profile:
        wan = rng.random() < 0.3
        disk = rng.choice(((50, 1 * MS), (1 * MS, 8 * MS), (5 * MS, 30 * MS)))
        return cls(
            latency_us=rng.randint(5 * MS, 30 * MS) if wan else rng.randint(100, 2 * MS),
            jitter_us=rng.randint(0, 10 * MS if wan else 3 * MS),
            loss=rng.choice((0.0, 0.01, 0.05, 0.15)),
            duplicate=rng.choice((0.0, 0.01, 0.05)),
            reorder=rng.choice((0.0, 0.02, 0.1)),
            reorder_us=rng.randint(5 * MS, 200 * MS),
            client_loss=rng.choice((0.0, 0.01, 0.03)),
            fsync_us=disk,
            fsync_stall=rng.choice((0.0, 0.01, 0.05)),
            fault_gap_us=rng.choice((200 * MS, 500 * MS, 1 * SECOND, 2 * SECOND)),
            crash_weight=rng.choice((0.0, 1.0, 2.0)),
            power_loss_weight=rng.choice((0.0, 0.5, 1.0, 2.0)),
            partition_weight=rng.choice((0.0, 1.0, 2.0)),
            depose_weight=rng.choice((0.5, 1.0, 2.0, 4.0)),
            pause_weight=rng.choice((0.0, 0.5, 1.0)),
            forge_weight=rng.choice((0.0, 0.5, 1.0, 2.0)),
            clients=rng.randint(2, 5),
            keys=("x", "y", "z")[: rng.randint(1, 3)],
            client_timeout_us=rng.choice((2 * SECOND, 5 * SECOND, 10 * SECOND)),
            think_us=rng.choice((5 * MS, 30 * MS, 100 * MS)),
            snapshot_every=rng.choice((3, 10, 40, 200)),
            snapshot_tail=rng.choice((0, 2, 20)),
            reconfigure_weight=rng.choice((0.0, 2.0, 4.0, 8.0)),
            spares=rng.choice((1, 2, 3, 4)),
            max_sessions=rng.choice((limits.MAX_CLIENT_SESSIONS, 2, 3)),
        )


# ------------------------------------------------------------ run results


@dataclass(frozen=True)
class Event:
    """One line of the timeline; ``key``/``slot`` let a failure filter it."""

    time: int
    node: int  # -1 when no node is involved
    kind: str  # fault | role | client | commit | msg | disk | check
    text: str
    key: str | None = None
    slot: int | None = None
    value: Value | None = None  # of a commit, formatted only when printed
    command: str | None = None  # "client#seq" of a write


@dataclass(frozen=True)
class Violation:
    kind: str  # safety | lost-write | divergence | linearizability | liveness | client | refusal | forgery | exception
    time: int
    message: str
    key: str | None = None
    slot: int | None = None
    window: tuple[int, int] | None = None
    commands: frozenset[str] = frozenset()  # writes involved: "client#seq"


@dataclass
class RunResult:
    seed: int
    nodes: int
    bugs: tuple[str, ...]
    violations: list[Violation]
    stats: dict[str, int]
    digest: str
    trace: list[Event] = field(default_factory=list)
    # The chosen log, kept with the trace to show what each slot held.
    chosen: dict[Slot, Value] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        if self.ok:
            return f"seed {self.seed}: ok ({self.nodes} nodes)"
        first = self.violations[0]
        return f"seed {self.seed}: FAIL ({self.nodes} nodes) {first.kind} at {fmt_time(first.time)}: {first.message}"


class SimulationStop(Exception):
    """A violation that ends the run at once (safety cannot recover)."""


def fmt_time(us: int) -> str:
    return f"{us / SECOND:10.6f}s"


def _client_write(raw: bytes) -> log_pb2.ClientWrite | None:
    """The client write a log command carries; None for any other kind.

    The simulated leaders encode every command themselves, so it decodes.
    """
    command = log_pb2.LogCommand.FromString(raw)
    match command.WhichOneof("kind"):
        case "client_write":
            return command.client_write
        case None | "configuration" | "register_session":
            return None
        case kind:
            raise AssertionError(f"log command kind {kind!r} has no description")


def describe_value(value: Value) -> str:
    if not value:
        return "noop"
    membership = configuration_in(value)
    if membership is not None:
        return f"configuration [{membership.describe()}]"
    parts = []
    for raw in value:
        write = _client_write(raw)
        if write is None:
            parts.append("unknown command")
            continue
        name = f"s{session_of(write)}#{write.seq}"
        match write.WhichOneof("op"):
            case "set":
                parts.append(f"{name} set {write.set.key}={write.set.value}")
            case "delete":
                parts.append(f"{name} delete {write.delete.key}")
            case op:
                parts.append(f"{name} {op}")
    return "[" + ", ".join(parts) + "]"


def command_names(value: Value) -> list[str]:
    names = []
    for raw in value:
        write = _client_write(raw)
        names.append(f"s{session_of(write)}#{write.seq}" if write is not None else "unknown command")
    return names


def describe_record(record: Record) -> str:
    match record:
        case PromiseRecord():
            return f"promise {record.ballot}"
        case AcceptRecord():
            return f"accept {record.slot}@{record.ballot}={describe_value(record.value)}"
        case ChosenRecord():
            return f"chosen {record.slot}={describe_value(record.value)}"
        case CommitRecord():
            return f"commit {record.index}"
        case _:
            assert_never(record)


def describe_message(msg: Message) -> str:
    name = type(msg).__name__
    fields = []
    for attr in msg.__slots__:  # type: ignore[union-attr]
        if attr == "sender":
            continue
        val = getattr(msg, attr)
        if attr == "value":
            val = describe_value(val)
        elif attr == "values":
            val = "(" + ", ".join(describe_value(v) for v in val) + ")"
        elif attr == "accepted":
            val = "(" + ", ".join(f"{e.slot}@{e.ballot}:{describe_value(e.value)}" for e in val) + ")"
        fields.append(f"{attr}={val}")
    return f"{name} " + " ".join(fields)


# ------------------------------------------------------------------- host


@dataclass(slots=True)
class Request:
    """One client attempt as the server sees it."""

    client: Client
    attempt: int
    key: str
    cmd: kv_pb2.Command | None  # None for a linearizable get or a registration
    deadline: int
    register: bool = False
    node: int = -1
    done: bool = False


class SimDisk:
    """The replica's storage here: a log whose unsynced tail a crash may lose.

    ``append`` buffers; ``sync`` makes everything appended so far durable
    after a simulated latency (with occasional stalls) and then reports
    done.  With the planted bug ``ack_before_fsync`` the disk says nothing
    is pending and flushes in the background, like a log written through a
    cache it wrongly believes durable: the replica then acts on bundles that
    are not yet durable, and the simulation's checks must notice.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self.durable = DurableState()
        # Records written but not yet durable, the first ``flushing`` of
        # which an fsync is making durable right now.
        self.pending: list[Record] = []
        self.flushing = 0
        self.snapshot: FrozenState | None = None
        self.previous_snapshot: FrozenState | None = None  # a server keeps more than one
        # The incarnation book: written whole and at once (an atomic file).
        self.book: dict[int, int] = {}

    def recorded_incarnations(self) -> dict[int, int]:
        return dict(self.book)

    def record_incarnation(self, member: int, incarnation: int) -> None:
        self.book[member] = incarnation

    def append(self, records: list[Record]) -> None:
        self.pending.extend(records)
        if self.host.sim.ack_before_fsync and not self.flushing:
            self._start(None)

    def unsynced(self) -> bool:
        # The planted bug: a log written through a cache it believes durable.
        return bool(self.pending) and not self.host.sim.ack_before_fsync

    def sync(self, done: Callable[[], None]) -> None:
        assert not self.flushing, "the replica waits for one fsync at a time"
        self._start(done)

    def _start(self, done: Callable[[], None] | None) -> None:
        sim = self.host.sim
        self.flushing = len(self.pending)
        sim.at(sim.now + sim.fsync_latency(), self.host.fsync_done, self.host.generation, done)

    def complete(self) -> None:
        """The fsync in progress finished."""
        synced = self.pending[: self.flushing]
        del self.pending[: self.flushing]
        self.flushing = 0
        apply = self.durable.apply
        for record in synced:
            apply(record)
        sim = self.host.sim
        if sim.verbose:
            sim.log(self.host.id, "disk", "fsynced " + ", ".join(map(describe_record, synced)))
        if sim.ack_before_fsync and self.pending:
            self._start(None)

    def crash(self) -> None:
        sim = self.host.sim
        if self.pending:
            # The disk may have kept any prefix of what was written (a torn
            # tail of the log is cut off on recovery).
            records = self.pending
            kept = 0 if sim.rng.random() < 0.5 else sim.rng.randint(0, len(records))
            for record in records[:kept]:
                self.durable.apply(record)
            sim.log(self.host.id, "disk", f"crash before fsync: kept {kept} of {len(records)} records")
        self.pending, self.flushing = [], 0

    def recovered(self) -> DurableState:
        d = self.durable
        return DurableState(d.promised, dict(d.accepted), dict(d.chosen), d.commit_index)

    # Snapshots: the newest durable one, as the frozen state it was made
    # from (frozen states never change).  Writing one takes a while; a
    # crash before it is done leaves the older one (a torn temp file).

    def log_bytes(self) -> int:
        return 0  # snapshots here are triggered by command counts alone

    def save_snapshot(self, frozen: FrozenState, done: Callable[[bool], None]) -> None:
        sim = self.host.sim
        when = sim.now + sim.fsync_latency() + sim.rng.randint(0, 20 * MS)
        sim.at(when, self.host.snapshot_written, self.host.generation, frozen, done)

    def keep_snapshot(self, frozen: FrozenState) -> None:
        if self.snapshot is None or frozen.applied_index > self.snapshot.applied_index:
            self.previous_snapshot, self.snapshot = self.snapshot, frozen

    def compact(self, snapshot_index: Slot) -> None:
        """Drop the durable log's values the snapshot holds (a real log drops whole segments)."""
        assert self.snapshot is not None and self.snapshot.applied_index >= snapshot_index
        d = self.durable
        for slot in [s for s in d.accepted if s <= snapshot_index]:
            del d.accepted[slot]
        for slot in [s for s in d.chosen if s <= snapshot_index]:
            del d.chosen[slot]


class Host(Observer):
    """One server process: the shipped ``Replica`` on a simulated disk, network and clock.

    What stays here is what a process is and the simulator's bookkeeping:
    crashes and restarts, stalls (work piles up and runs in random order on
    resume), the clock's rate, and which client requests die with the
    process.
    """

    def __init__(self, sim: Simulation, node_id: int, tick_us: int) -> None:
        self.sim = sim
        self.id = node_id
        self.tick_us = tick_us  # this node's clock runs slightly fast or slow
        self.disk = SimDisk(self)
        self.up = False
        self.generation = 0
        self.replica: Replica | None = None
        self.store = thaw(None, self.store_rng())
        self.paused_until = 0
        self.deferred: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.requests: list[Request] = []  # received by this process, maybe unanswered
        # The data dir's incarnation: a new one with every disk (see lose_disk).
        self.incarnation = sim.new_incarnation()
        self.codec = PeerCodec(SIM_CLUSTER_ID, node_id, range(sim.size), self.incarnation)
        # Started at least once: a spare is not, until it is added.
        self.active = False
        # The configuration a spare was given when it was added (what a
        # joining server learns from the cluster); the cluster's first one
        # for the others.
        self.joined_with = sim.bootstrap
        self.forged_refusal: str | None = None  # set while a forged message is handled

    @property
    def core(self) -> Node | None:
        return self.replica.core if self.replica is not None else None

    def store_rng(self) -> random.Random | None:
        """This replica's own random source for a state machine with the planted eviction bug, else None."""
        if "nondeterministic_session_eviction" not in self.sim.bugs:
            return None
        return random.Random(self.sim.rng.getrandbits(64))

    @property
    def durable(self) -> DurableState:
        return self.disk.durable

    # ---------------------------------------------------------- lifecycle

    def start(self) -> None:
        sim = self.sim
        self.up = True
        self.active = True
        self.generation += 1
        rng = random.Random(sim.rng.getrandbits(64))
        self.store = thaw(self.disk.snapshot, self.store_rng())
        self.replica = Replica(
            self.id,
            self.joined_with,
            self.disk.recovered(),
            storage=self.disk,
            transport=self,
            clock=self.clock,
            wake=self.wake,
            store=self.store,
            rng=rng,
            config=sim.config,
            observer=self,
            snapshot_every=sim.profile.snapshot_every,
            snapshot_tail=sim.profile.snapshot_tail,
        )
        self.paused_until = 0
        self.deferred = []
        sim.at(sim.now + self.tick_us, self.on_tick, self.generation)
        self.replica.drive()

    def clock(self) -> float:
        """This node's monotonic clock, in seconds, running at its own rate."""
        return self.sim.now * TICK_US / self.tick_us / SECOND

    def crash(self) -> None:
        self.disk.crash()
        for req in self.pending_requests():
            self.sim.reply(req, RESET)
        self.requests = []
        self.up = False
        self.replica = None
        self.generation += 1
        self.paused_until = 0
        self.deferred = []

    def pending_requests(self) -> Iterable[Request]:
        yield from (r for r in self.requests if not r.done)
        yield from (args[1] for fn, args in self.deferred if fn == self.sim.deliver_request)

    def defer(self, fn: Callable[..., None], *args: Any) -> bool:
        """A stalled process does nothing until it resumes; True if deferred."""
        if self.paused_until > self.sim.now:
            self.deferred.append((fn, args))
            return True
        return False

    def pause(self, until: int) -> None:
        if until > self.paused_until:
            self.paused_until = until
            self.sim.at(until, self.resume, self.generation)

    def resume(self, generation: int) -> None:
        if generation != self.generation or self.paused_until > self.sim.now:
            return
        work, self.deferred = self.deferred, []
        # After a stall the event loop finds the ticker and the sockets ready
        # at once and serves them in no fixed order: the overdue ticks may run
        # before or after the requests and messages that piled up meanwhile.
        rest = [w for w in work if w[0] != self.on_tick]
        for tick in (w for w in work if w[0] == self.on_tick):
            rest.insert(self.sim.rng.randint(0, len(rest)), tick)
        self.sim.log(self.id, "fault", f"resumes with {len(rest)} events piled up")
        for fn, args in rest:
            fn(*args)

    # ------------------------------------------- what the replica is given

    def on_tick(self, generation: int) -> None:
        if generation != self.generation or self.defer(self.on_tick, generation):
            return
        assert self.replica is not None
        self.replica.tick()
        # asyncio.sleep(TICK) overshoots a little; the next wake counts ticks.
        sim = self.sim
        sim.at(sim.now + self.tick_us + int(sim.rng.random() * TICK_JITTER_US), self.on_tick, generation)

    def wake(self) -> None:
        if self.replica is not None:
            self.replica.drive()

    def fsync_done(self, generation: int, done: Callable[[], None] | None) -> None:
        if generation != self.generation or self.defer(self.fsync_done, generation, done):
            return
        self.disk.complete()
        if done is not None:
            done()

    def send(self, messages: list[tuple[int, Message]]) -> None:
        for to, msg in messages:
            self.sim.send(self.id, to, msg)

    def snapshot_written(self, generation: int, frozen: FrozenState, done: Callable[[bool], None]) -> None:
        if generation != self.generation or self.defer(self.snapshot_written, generation, frozen, done):
            return  # a crash while writing: the temp file is removed on restart
        self.disk.keep_snapshot(frozen)
        self.sim.stats["snapshots"] += 1
        self.sim.log(self.id, "disk", f"snapshot at slot {frozen.applied_index} durable")
        done(True)

    def fetch_snapshot(self, peer: int, after: Slot, done: Callable[[FetchedSnapshot | None], None]) -> None:
        """The peer's newest snapshot arrives in one piece after a while, or the transfer fails."""
        sim = self.sim
        source = sim.hosts[peer]
        frozen = source.disk.snapshot if source.up else None
        if frozen is not None and source.disk.previous_snapshot is not None and sim.rng.random() < STALE_SNAPSHOT:
            frozen = source.disk.previous_snapshot  # a stale copy: the replica must not go back to it
        cut = (peer, self.id) in sim.blocked or (self.id, peer) in sim.blocked
        lost = cut or frozen is None or sim.rng.random() < sim.loss * 5
        when = sim.now + 4 * sim.delay() + sim.rng.randint(0, 50 * MS)
        if lost and sim.rng.random() < 0.5:
            when = sim.now + round(limits.SNAPSHOT_CHUNK_SECONDS * SECOND)  # hung, then timed out
        sim.at(when, self.snapshot_arrived, self.generation, None if lost else frozen, after, done)

    def snapshot_arrived(
        self,
        generation: int,
        frozen: FrozenState | None,
        after: Slot,
        done: Callable[[FetchedSnapshot | None], None],
    ) -> None:
        if generation != self.generation or self.defer(self.snapshot_arrived, generation, frozen, after, done):
            return  # crashed mid-transfer: nothing was installed
        if frozen is None or frozen.applied_index <= after:
            done(None)
            return
        self.disk.keep_snapshot(frozen)  # durable before the replica hears of it
        self.sim.stats["snapshot_installs"] += 1
        self.sim.log(self.id, "disk", f"installed a peer's snapshot at slot {frozen.applied_index}")
        done(FetchedSnapshot(frozen.applied_index, thaw(frozen, self.store_rng())))

    def receive(self, msg: Message, stamp: int) -> None:
        assert self.replica is not None
        self.replica.receive(msg, stamp)

    def stamp(self) -> int:
        """The incarnation this host's messages carry.

        With the planted bug ``skip_incarnation_check`` every data dir sends
        the same one: the book records nothing new and refuses nothing, as
        if no check were made.
        """
        return SKIPPED_INCARNATION if self.sim.skip_incarnation_check else self.incarnation

    # ------------------------------------------------ what it reports back

    def role_changed(self, role: Role, leader: int | None) -> None:
        core = self.core
        assert core is not None
        self.sim.log(self.id, "role", f"{role.value} ballot {core.ballot}")
        if role is Role.LEADER:
            self.sim.stats["elections"] += 1

    def applying(self, slot: Slot, value: Value) -> None:
        self.sim.learn(self.id, slot, value)

    def membership_applied(self, slot: Slot, membership: Membership) -> None:
        self.sim.log(self.id, "role", f"slot {slot}: configuration {membership.describe()}", slot=slot)

    def snapshot_installed(self, index: Slot, peer: int) -> None:
        assert self.replica is not None
        self.store = self.replica.store

    def refused(self, msg: Message, reason: str) -> None:
        if self.forged_refusal is not None:
            self.forged_refusal = reason
            return
        self.sim.refused(self.id, msg, reason)

    def receive_forged(self) -> None:
        """A hostile message, through the same checks as any peer message: it must be refused.

        It is made when it arrives, not when it was sent: a stalled process
        may have asked for a catch-up meanwhile that a reply made earlier
        would answer by chance.
        """
        if not self.up or self.replica is None:
            return
        forgery = self.sim.forger.make(self)
        self.sim.log(self.id, "fault", f"forged message: {forgery.what}")
        if forgery.wire is not None:
            try:
                msg = self.codec.decode(forgery.wire)
            except DecodeError:
                self.sim.stats["forged_refused"] += 1
                return
        else:
            assert forgery.message is not None
            msg = forgery.message
        self.forged_refusal = ""
        try:
            self.replica.receive(msg, self.sim.hosts[msg.sender].stamp() if msg.sender < self.sim.size else 1)
            refused = self.forged_refusal
        finally:
            self.forged_refusal = None
        if not refused:
            self.sim.violation("forgery", f"n{self.id} took a forged message: {forgery.what}")
        self.sim.stats["forged_refused"] += 1

    # ------------------------------------------------------ client requests

    def leader_hint(self) -> int | None:
        return self.core.leader if self.core is not None else None

    def on_request(self, req: Request) -> None:
        replica = self.replica
        assert replica is not None
        if len(self.requests) > 64:
            self.requests = [r for r in self.requests if not r.done]
        self.requests.append(req)
        # The server's own wait ends with the client's deadline; a request
        # that outlived it is dropped then (see ``expired``), unanswered.
        if req.register:
            replica.register(lambda answer: self.answer_register(req, answer))
        elif req.cmd is None:
            replica.read(lambda status: self.answer_read(req, status))
        else:
            replica.write(req.cmd, lambda answer: self.answer_write(req, answer))

    def expired(self, req: Request) -> bool:
        if req.done:
            return True
        if self.sim.now > req.deadline:
            req.done = True
            return True
        return False

    def answer_write(self, req: Request, answer: WriteAnswer) -> None:
        if not self.expired(req):
            hint = self.leader_hint() if answer.status in (kv_pb2.NOT_LEADER, kv_pb2.UNKNOWN) else None
            self.sim.reply(req, answer.status, removed=answer.removed, hint=hint)

    def answer_register(self, req: Request, answer: RegisterAnswer) -> None:
        if not self.expired(req):
            hint = self.leader_hint() if answer.status == kv_pb2.NOT_LEADER else None
            self.sim.reply(req, answer.status, value=str(answer.session_id), hint=hint)

    def answer_read(self, req: Request, status: int) -> None:
        if not self.expired(req):
            value = self.store.get(req.key) if status == kv_pb2.OK else None
            self.sim.reply(req, status, value=value, hint=self.leader_hint())


# ---------------------------------------------------------------- forgery

SIM_CLUSTER_ID = 0xC1A5_7E12


@dataclass(frozen=True)
class Forgery:
    what: str
    wire: peer_pb2.PeerMessage | None = None  # checked by the codec first
    message: Message | None = None  # well-formed: only the core can tell


class Forger:
    """Builds messages that an outside process could send to a peer port.

    Each is one that the codec or the core must refuse: another cluster or
    receiver, a sender that is no member or the receiver itself, numbers out
    of range, oversized values, malformed bodies, ballots far above any
    seen, accepts beyond the window, self-contradicting promises, and
    catch-up replies nobody asked for.  A forger that guesses an outstanding
    catch-up request exactly could still be believed; it never does here,
    because only authentication (TLS) can stop that.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def make(self, host: Host) -> Forgery:
        rng = self.sim.rng
        kinds = (self._wire, self._far_ballot, self._far_accept, self._unsolicited_catchup, self._bad_promise)
        return rng.choice(kinds)(host)

    def _member_other_than(self, host: Host) -> int:
        return self.sim.rng.choice([i for i in range(self.sim.size) if i != host.id])

    def _honest_wire(self, host: Host) -> peer_pb2.PeerMessage:
        sender = self._member_other_than(host)
        ballot = Ballot(1, sender)
        codec = PeerCodec(SIM_CLUSTER_ID, sender, range(self.sim.size), self.sim.hosts[sender].stamp())
        return codec.encode(Heartbeat(sender, ballot, 0, 1), host.id)

    def _wire(self, host: Host) -> Forgery:
        rng = self.sim.rng
        raw = self._honest_wire(host)
        kind = rng.randrange(9)
        if kind == 0:
            raw.cluster_id = SIM_CLUSTER_ID + 1
            what = "from another cluster"
        elif kind == 1:
            raw.receiver = self._member_other_than(host)
            what = "for another receiver"
        elif kind == 2:
            raw.sender = rng.choice([host.id, self.sim.size + rng.randrange(100)])
            what = f"from sender {raw.sender}"
        elif kind == 3:
            raw.heartbeat.ballot.round = rng.choice([2**64 - 1, limits.MAX_BALLOT_ROUND + 1])
            what = "ballot round out of range"
        elif kind == 4:
            raw.heartbeat.commit_index = limits.MAX_SLOT + 1 + rng.randrange(1000)
            what = "commit index out of range"
        elif kind == 5:
            raw.ClearField("heartbeat")
            raw.accept.ballot.round = 1
            raw.accept.ballot.node = raw.sender
            raw.accept.slot = rng.choice([0, limits.MAX_SLOT + 1])
            what = "accept slot out of range"
        elif kind == 6:
            raw.ClearField("heartbeat")
            raw.accept.ballot.round = 1
            raw.accept.ballot.node = raw.sender
            raw.accept.slot = 1
            if rng.random() < 0.05:
                raw.accept.value.commands.append(b"x" * (limits.MAX_COMMAND_BYTES + 1))
                what = "oversized command"
            else:
                raw.accept.value.commands.extend([b""] * (limits.MAX_BATCH_COMMANDS + 1))
                what = "too many commands in a slot"
        elif kind == 7:
            raw.ClearField("heartbeat")
            entries = [peer_pb2.Entry(slot=s) for s in (1, 3)]
            raw.catchup_reply.CopyFrom(peer_pb2.CatchupReply(entries=entries, commit_index=3))
            what = "catch-up entries not consecutive"
        else:
            raw.ClearField("heartbeat")
            what = "no body"
        return Forgery(what, wire=raw)

    def _far_ballot(self, host: Host) -> Forgery:
        core = host.core
        assert core is not None
        sender = self._member_other_than(host)
        rnd = core._max_round_seen + limits.MAX_ROUND_STEP + 1 + self.sim.rng.randrange(1000)
        msg = Heartbeat(sender, Ballot(min(rnd, limits.MAX_BALLOT_ROUND), sender), 0, 1)
        return Forgery(f"ballot round {msg.ballot.round}", message=msg)

    def _far_accept(self, host: Host) -> Forgery:
        core = host.core
        assert core is not None
        sender = self._member_other_than(host)
        slot = core.commit_index + limits.MAX_ACCEPT_WINDOW + 1 + self.sim.rng.randrange(100_000)
        msg = Accept(sender, Ballot(max(core.promised.round, 1), sender), slot, (b"forged",), 0)
        return Forgery(f"accept for slot {slot}", message=msg)

    def _unsolicited_catchup(self, host: Host) -> Forgery:
        core = host.core
        assert core is not None
        rng = self.sim.rng
        sender = self._member_other_than(host)
        while True:
            first = core.commit_index + 1 + rng.randrange(1000)
            asked = (sender, first)
            if asked != core._catchup_asked and asked not in core._catchup_asked_before:
                break
        msg = CatchupReply(sender, first, ((b"forged",),), first)
        return Forgery(f"catch-up reply from n{sender} for slot {first}", message=msg)

    def _bad_promise(self, host: Host) -> Forgery:
        sender = self._member_other_than(host)
        ballot = Ballot(1, host.id)
        entry = AcceptedEntry(1, Ballot(2, sender), (b"forged",))
        return Forgery("promise reporting a ballot above its own", message=Promise(sender, ballot, 0, (entry,)))


# ----------------------------------------------------------------- client


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
        sim.send_request(attempt.server, req)
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
            holder = sim.session_holders.get(self.session)
            if holder is not None:
                sim.violation("safety", f"session {self.session} was handed to {self.name}, and to {holder} before")
            sim.session_holders[self.session] = self.name
            sim.stats["sessions_registered"] += 1
            assert self.after_register is not None
            (kind, key), self.after_register = self.after_register, None
            self.op = None
            self.start_op(kind, key, op.final)
            return
        sim.history.append(lincheck.Op(self.name, op.key, op.kind, op.arg, op.call, sim.now, result))
        if op.cmd is not None:
            assert self.session is not None
            sim.acked.append((self.session, op.seq, sim.now))
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
            sim.unknown.append((op_unknown, (session_of(op.cmd), op.seq)))
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


# ------------------------------------------------------------- simulation


class Simulation:
    def __init__(
        self,
        seed: int,
        nodes: Sequence[int] = DEFAULT_NODES,
        bugs: Iterable[str] = (),
        fault_seconds: float = DEFAULT_FAULT_SECONDS,
        verbose: bool = False,
    ) -> None:
        if not nodes or min(nodes) < 3:
            raise ValueError(f"cluster sizes must be 3 or more (a cut needs two sides and a quorum), got {nodes}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.n = self.rng.choice(list(nodes))
        self.bugs = tuple(sorted(set(bugs)))
        unknown = set(self.bugs) - ALL_BUGS
        if unknown:
            raise ValueError(f"unknown planted bugs {sorted(unknown)}; choose from {sorted(ALL_BUGS)}")
        self.config = Config(planted_bugs=frozenset(self.bugs) & PLANTABLE_BUGS)
        self.ack_before_fsync = "ack_before_fsync" in self.bugs
        self.skip_incarnation_check = "skip_incarnation_check" in self.bugs
        self.disk_rng = random.Random(f"lose-disk {seed}")  # see LOSE_DISK_SEEDS
        self.incarnations_made = 0
        self.disks_lost = 0
        self.founding: set[int] = set()  # servers with a new disk asking before they found
        self.refused_hosts: set[int] = set()  # servers that refused to start on a new disk
        self.profile = Profile.draw(self.rng)
        self.verbose = verbose
        self.now = 0
        self.queue: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self.seq = 0
        self.fault_end = round(fault_seconds * SECOND)
        self.healed = False
        self.liveness_deadline = self.fault_end + LIVENESS_US
        self.finished = False
        p = self.profile
        self.loss, self.duplicate, self.reorder = p.loss, p.duplicate, p.reorder
        self.latency_us, self.jitter_us = p.latency_us, p.jitter_us
        # The current partition: blocked node links (directed), those of
        # them that hold traffic until the heal (the stream survived and its
        # buffer drains) rather than drop it (the stream was reset), and
        # which client-to-node links are cut.
        self.blocked: set[tuple[int, int]] = set()
        self.holding: set[tuple[int, int]] = set()
        self.held: list[tuple[int, Message, int]] = []
        self.link_ready: dict[tuple[int, int], int] = {}  # reconnecting links
        self.link_last: dict[tuple[int, int], int] = {}  # last delivery, for FIFO
        self.client_blocked: set[tuple[int, int]] = set()
        self.client_reject = False
        self.partition_id = 0
        # Servers 0..n-1 found the cluster; the spares wait to be added.
        self.size = self.n + p.spares
        self.bootstrap = Membership.of(ConfigMember(i, f"n{i}", "") for i in range(self.n))
        self.hosts = [Host(self, i, round(TICK_US * self.rng.uniform(0.95, 1.05))) for i in range(self.size)]
        self.changes_asked = 0
        self.clients = [Client(self, i) for i in range(p.clients)]
        self.forger = Forger(self)
        self.chosen: dict[Slot, Value] = {}
        self.history: list[lincheck.Op] = []
        # Writes whose outcome the client never learned, with their (session, seq).
        self.unknown: list[tuple[lincheck.Op, tuple[SessionKey, int]]] = []
        self.acked: list[tuple[SessionKey, int, int]] = []
        # Which client each session id was handed to: an id is never handed out twice.
        self.session_holders: dict[int, str] = {}
        self.reference_data: dict[str, str] = {}
        self.reference_sessions: list[tuple[SessionKey, int, list[Result]]] = []
        self.violations: list[Violation] = []
        self.trace: list[Event] = []
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "events",
                "messages",
                "dropped",
                "elections",
                "crashes",
                "partitions",
                "pauses",
                "refused",
                "snapshots",
                "snapshot_installs",
                "disks_lost",
                "founding_refused",
                "changes",
                "changes_refused",
                "forged",
                "forged_refused",
                "ops_ok",
                "ops_unknown",
                "ops_failed",
                "sessions_registered",
                "sessions_expired",
            ),
            0,
        )

    # -------------------------------------------------------------- events

    def new_incarnation(self) -> int:
        """A new data dir's incarnation: distinct, and reproducible from the seed."""
        self.incarnations_made += 1
        return SKIPPED_INCARNATION + self.incarnations_made

    def at(self, when: int, fn: Callable[..., None], *args: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, fn, args))

    def log(self, node: int, kind: str, text: str, key: str | None = None, slot: int | None = None) -> None:
        self.trace.append(Event(self.now, node, kind, text, key, slot))

    def log_client(self, client: Client, text: str, op: ClientOp) -> None:
        command = f"{client.name}#{op.seq}" if op.seq else None
        self.trace.append(Event(self.now, -1, "client", f"{client.name} {text}", op.key, command=command))

    def violation(
        self,
        kind: str,
        message: str,
        key: str | None = None,
        slot: int | None = None,
        window: tuple[int, int] | None = None,
        commands: frozenset[str] = frozenset(),
    ) -> None:
        self.violations.append(Violation(kind, self.now, message, key, slot, window, commands))
        self.log(-1, "check", f"VIOLATION {kind}: {message}", key=key, slot=slot)
        raise SimulationStop(message)

    def run(self) -> RunResult:
        for host in self.hosts[: self.n]:
            host.start()
        for client in self.clients:
            self.at(self.rng.randrange(self.profile.think_us), client.next_op)
        self.at(self.rng.randrange(self.profile.fault_gap_us), self.nemesis)
        if self.disk_rng.random() < LOSE_DISK_SEEDS:
            self.at(self.disk_rng.randrange(LOSE_DISK_GAP_US), self.lose_disk)
        self.at(self.fault_end, self.heal)
        queue = self.queue
        pop = heapq.heappop
        events = 0
        # The bound is a constant of the code every replica runs; a run sets
        # it for all of its replicas alike, and puts it back afterwards.
        bound, limits.MAX_CLIENT_SESSIONS = limits.MAX_CLIENT_SESSIONS, self.profile.max_sessions
        try:
            while queue and not self.finished:
                when, _, fn, args = pop(queue)
                self.now = when
                fn(*args)
                events += 1
            self.stats["events"] = events
            self.final_checks()
        except SimulationStop:
            self.stats["events"] = events
        except Exception:  # a crash of the core or the host is a finding too
            self.stats["events"] = events
            self.violations.append(Violation("exception", self.now, traceback.format_exc(limit=8).strip()))
        finally:
            limits.MAX_CLIENT_SESSIONS = bound
        self.stats["slots"] = max(self.chosen, default=0)
        self.stats["sim_us"] = self.now
        return RunResult(
            self.seed, self.n, self.bugs, self.violations, self.stats, self.digest(), self.trace, self.chosen
        )

    def digest(self) -> str:
        h = hashlib.sha256()
        for slot in sorted(self.chosen):
            h.update(repr((slot, self.chosen[slot])).encode())
        for op in self.history:
            h.update(repr(op).encode())
        for op, seq in self.unknown:
            h.update(repr((op, seq)).encode())
        h.update(repr(sorted(self.stats.items())).encode())
        return h.hexdigest()[:16]

    # ------------------------------------------------------------- network

    def delay(self) -> int:
        # rng.random() rather than randrange: this is the hottest draw.
        return self.latency_us + int(self.rng.random() * self.jitter_us)

    def send(self, src: int, dst: int, msg: Message) -> None:
        self.stats["messages"] += 1
        stamp = self.hosts[src].stamp()
        if (src, dst) in self.blocked:
            self.cut(src, dst, msg, stamp)
            return
        if self.loss and self.rng.random() < self.loss:
            self.stats["dropped"] += 1
            return
        if self.verbose:
            self.log(src, "msg", f"-> n{dst} {describe_message(msg)}")
        when = self.now + self.delay()
        link = (src, dst)
        if self.link_ready:
            # Queued in the peer link until it has reconnected.
            ready_at = self.link_ready.get(link)
            if ready_at is not None:
                if ready_at <= self.now:
                    del self.link_ready[link]
                else:
                    when = max(when, ready_at + self.profile.latency_us)
        rng = self.rng
        if self.reorder and rng.random() < self.reorder:
            # Held back and overtaken by later messages on the same link.
            when += int(rng.random() * self.profile.reorder_us)
        else:
            # A peer link is one stream: in order unless a fault says not.
            when = max(when, self.link_last.get(link, 0))
            self.link_last[link] = when
        self.at(when, self.deliver, dst, msg, stamp)
        if self.duplicate and rng.random() < self.duplicate:
            self.at(when + rng.randrange(self.profile.reorder_us), self.deliver, dst, msg, stamp)

    def deliver(self, dst: int, msg: Message, stamp: int) -> None:
        """``stamp``: the sender's data-dir incarnation, as its message envelope carries it."""
        host = self.hosts[dst]
        if not host.up or host.defer(self.deliver, dst, msg, stamp):
            return
        if (msg.sender, dst) in self.blocked:  # cut while in flight
            self.cut(msg.sender, dst, msg, stamp)
            return
        if stamp != self.hosts[msg.sender].stamp():
            # Sent by a data dir since lost: its process died with it, and
            # so did the connections its messages were queued on.
            return
        if self.verbose:
            self.log(dst, "msg", f"<- n{msg.sender} {describe_message(msg)}")
        host.receive(msg, stamp)

    def cut(self, src: int, dst: int, msg: Message, stamp: int) -> None:
        if (src, dst) in self.holding:
            self.held.append((dst, msg, stamp))
        else:
            self.stats["dropped"] += 1

    def send_request(self, target: int, req: Request) -> None:
        req.node = target
        if (req.client.index, target) in self.client_blocked:
            if self.client_reject:
                self.at(self.now + self.delay(), req.client.on_reply, req.attempt, REFUSED, None, False, None)
            return  # else the client's attempt deadline notices
        if self.rng.random() < self.profile.client_loss:
            return
        self.at(self.now + self.delay(), self.deliver_request, target, req)

    def deliver_request(self, target: int, req: Request) -> None:
        host = self.hosts[target]
        if (req.client.index, target) in self.client_blocked:
            return
        if not host.up:
            self.reply(req, REFUSED)
        elif not host.defer(self.deliver_request, target, req):
            host.on_request(req)

    def reply(
        self,
        req: Request,
        status: int,
        value: str | None = None,
        removed: bool = False,
        hint: int | None = None,
    ) -> None:
        req.done = True
        if (req.client.index, req.node) in self.client_blocked or self.rng.random() < self.profile.client_loss:
            return
        self.at(self.now + self.delay(), req.client.on_reply, req.attempt, status, value, removed, hint)

    def fsync_latency(self) -> int:
        rng = self.rng
        low, high = self.profile.fsync_us
        took = rng.randint(low, high)
        if rng.random() < self.profile.fsync_stall:
            took += rng.randint(20 * MS, 100 * MS)
        return took

    # Refusals an honest cluster may cause: an accept for a follower that
    # lags more than the accept window behind (it catches up first), and
    # the answer to a catch-up request that a server sent before it
    # restarted (it forgot asking, so it cannot tell that answer from a
    # forgery and refuses it).
    HONEST_REFUSALS = frozenset(
        {
            "accept beyond the accept window",
            "unsolicited catch-up reply",
            # a server that lags behind the change that added the sender
            "sender is not in this server's configuration",
        }
    )

    def refused(self, node: int, msg: Message, reason: str) -> None:
        """The core refused a message that an honest member sent."""
        self.stats["refused"] += 1
        self.log(node, "msg", f"refused from n{msg.sender}: {reason}: {describe_message(msg)}")
        if reason not in self.HONEST_REFUSALS:
            self.violation("refusal", f"n{node} refused an honest message from n{msg.sender} ({reason})")

    # ------------------------------------------------------------- safety

    def learn(self, node: int, slot: Slot, value: Value) -> None:
        self.trace.append(Event(self.now, node, "commit", "", slot=slot, value=value))
        known = self.chosen.get(slot)
        if known is None:
            self.chosen[slot] = value
        elif known != value:
            self.violation(
                "safety",
                f"n{node} learned {describe_value(value)} for slot {slot}, "
                f"but {describe_value(known)} was learned there before",
                slot=slot,
                commands=frozenset(command_names(known) + command_names(value)),
            )

    # ------------------------------------------------------------- nemesis

    def nemesis(self) -> None:
        if self.now >= self.fault_end:
            return
        p = self.profile
        rng = self.rng
        # One cut at a time: a cut replaced before it heals would blur the
        # scenario it was drawn for (the deposed leader must see the heal).
        cutting = 0.0 if self.blocked else 1.0
        actions = (
            (p.crash_weight, self.crash_one),
            (p.power_loss_weight, self.power_loss),
            (p.partition_weight * cutting, self.partition),
            (p.depose_weight * cutting, self.depose_leader),
            (p.pause_weight, self.pause_one),
            (p.forge_weight, self.forge),
            (p.reconfigure_weight, self.reconfigure),
        )
        r = rng.random() * sum(weight for weight, _ in actions)
        for weight, action in actions:
            if not weight:
                continue
            if r < weight:
                action()
                break
            r -= weight
        self.at(self.now + 1 + int(rng.expovariate(1 / p.fault_gap_us)), self.nemesis)

    def pick_node(self) -> Host | None:
        """An up node, the leader half of the time (it hurts the most)."""
        up = [h for h in self.hosts if h.up]
        if not up:
            return None
        leaders = [h for h in up if h.core is not None and h.core.is_leader()]
        if leaders and self.rng.random() < 0.5:
            return max(leaders, key=lambda h: h.core.ballot if h.core else 0)
        return self.rng.choice(up)

    def crash_one(self) -> None:
        rng = self.rng
        down_now = sum(not h.up for h in self.hosts if h.active)
        if down_now >= self.n // 2 and rng.random() < 0.8:
            return  # mostly keep a quorum up, so the clients get work done
        host = self.pick_node()
        if host is None:
            return
        # Quick restarts find lost-promise bugs; long ones force elections.
        down = rng.randint(1 * MS, 100 * MS) if rng.random() < 0.5 else rng.randint(100 * MS, 2 * SECOND)
        self.crash(host, down)

    def power_loss(self) -> None:
        """A majority or more lose power at once and come back one by one."""
        rng = self.rng
        active = [h for h in self.hosts if h.active]
        count = len(active) if rng.random() < 0.5 else rng.randint(len(active) // 2 + 1, len(active))
        victims = rng.sample(active, count)
        self.log(-1, "fault", f"power loss on {', '.join(f'n{h.id}' for h in victims)}")
        for host in victims:
            if host.up:
                self.crash(host, rng.randint(1 * MS, 2 * SECOND))

    def crash(self, host: Host, down: int) -> None:
        host.crash()
        self.stats["crashes"] += 1
        self.log(host.id, "fault", f"crash (restart in {down / SECOND:.3f}s)")
        self.at(min(self.now + down, self.fault_end), self.restart, host.id, host.generation)

    def restart(self, node: int, generation: int) -> None:
        host = self.hosts[node]
        if not host.up and host.generation == generation and node not in self.founding | self.refused_hosts:
            host.start()
            d = host.durable
            self.log(node, "fault", f"restart: promised {d.promised}, commit {d.commit_index}")

    def partition(self) -> None:
        rng = self.rng
        ids = [h.id for h in self.hosts if h.active]
        n = len(ids)
        nodes = list(ids)
        rng.shuffle(nodes)
        shape = rng.random()
        blocked: set[tuple[int, int]] = set()
        groups: list[list[int]] = []  # what a client on each side can reach
        if shape < 0.45:
            # Two sides; a third of the time the leader ends up in the
            # minority, which is where stale leaders come from.
            k = rng.randint(1, n // 2)
            leader = self.pick_node()
            if leader is not None and rng.random() < 0.7:
                nodes.remove(leader.id)
                nodes.insert(0, leader.id)
            side, rest = nodes[:k], nodes[k:]
            blocked = {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}
            groups = [side, rest]
            what = f"split {sorted(side)} | {sorted(rest)}"
        elif shape < 0.65:
            x = nodes[0]
            if rng.random() < 0.5:
                blocked = {(y, x) for y in ids if y != x}
                what = f"one-way: n{x} hears nobody (its sends still arrive)"
            else:
                blocked = {(x, y) for y in ids if y != x}
                what = f"one-way: nobody hears n{x} (it still receives)"
        elif shape < 0.8:
            bridge, rest = nodes[0], nodes[1:]
            k = len(rest) // 2
            a, b = rest[:k], rest[k:]
            blocked = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
            groups = [[*a, bridge], [*b, bridge]]
            what = f"bridge n{bridge} between {sorted(a)} and {sorted(b)}"
        else:
            blocked = {(x, y) for x in ids for y in ids if x != y and rng.random() < 0.35}
            what = "random links down: " + (" ".join(f"{x}->{y}" for x, y in sorted(blocked)) or "none")
        # Most cuts last about an election, so the old leader may still
        # believe it leads when they heal; some last long.
        lasts = rng.randint(250 * MS, 700 * MS) if rng.random() < 0.5 else rng.randint(50 * MS, 3 * SECOND)
        self.cut_network(what, blocked, groups, lasts)

    def depose_leader(self) -> None:
        """Cut the leader (and maybe a few followers) off from the majority
        for longer than the shortest election timeout but shorter than its
        quorum timeout: a new leader is elected while the old one still
        believes it leads, and then the two meet (Jepsen's partition-leader).
        """
        rng = self.rng
        leaders = [h for h in self.hosts if h.up and h.core is not None and h.core.is_leader()]
        if not leaders:
            return
        leader = max(leaders, key=lambda h: h.core.ballot if h.core else 0).id
        ids = [h.id for h in self.hosts if h.active]
        others = [y for y in ids if y != leader]
        rng.shuffle(others)
        core = self.hosts[leader].core
        learners = sorted(core.membership.learners) if core is not None else []
        most = max(0, (len(ids) - 1) // 2 - 1)
        count = rng.randint(0, most)
        if learners and rng.random() < 0.5:
            # The leader cut off with the learners: none of them may count.
            others = [y for y in others if y in learners] + [y for y in others if y not in learners]
            count = max(count, min(len(learners), most))
        side = [leader, *others[:count]]
        rest = [y for y in ids if y not in side]
        blocked = {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}
        low = self.config.election_ticks_min * TICK_US + 50 * MS
        high = self.config.leader_quorum_timeout_ticks * TICK_US - 20 * MS
        self.cut_network(
            f"depose leader: {sorted(side)} | {sorted(rest)}", blocked, [side, rest], rng.randint(low, high)
        )

    def cut_network(self, what: str, blocked: set[tuple[int, int]], groups: list[list[int]], lasts: int) -> None:
        rng = self.rng
        n = self.size
        # A client sits on one side of the cut, or outside it and sees all.
        client_blocked: set[tuple[int, int]] = set()
        for client in self.clients:
            if groups and rng.random() < 0.6:
                reach = rng.choice(groups)
                client_blocked |= {(client.index, y) for y in range(n) if y not in reach}
        # Each peer stream (one per direction) either survives the cut and
        # delivers its buffer at the heal, or is reset and loses it.  A
        # client's connection attempt is dropped or refused.
        holding = {link for link in sorted(blocked) if rng.random() < 0.5}
        self.client_reject = rng.random() < 0.5
        if client_blocked:
            cut = " ".join(f"c{c}-n{y}" for c, y in sorted(client_blocked))
            what += f"; clients cut off ({'refused' if self.client_reject else 'dropped'}): {cut}"
        self.set_partition(blocked, holding, client_blocked)
        self.stats["partitions"] += 1
        if holding:
            what += "; buffered: " + " ".join(f"{x}->{y}" for x, y in sorted(holding))
        self.log(-1, "fault", f"partition {what} for {lasts / SECOND:.3f}s")
        self.at(self.now + lasts, self.heal_partition, self.partition_id)

    def set_partition(
        self, blocked: set[tuple[int, int]], holding: set[tuple[int, int]], client_blocked: set[tuple[int, int]]
    ) -> None:
        old = self.blocked
        self.blocked, self.holding, self.client_blocked = blocked, holding, client_blocked
        self.partition_id += 1
        for link in sorted(old - blocked):
            self.link_ready[link] = self.now + self.rng.randrange(RECONNECT_US)
        # Traffic held by the previous cut drains, in order on every link,
        # once that link is back; the new cut may hold or drop it again.
        held, self.held = self.held, []
        for dst, msg, stamp in held:
            link = (msg.sender, dst)
            if link in blocked:
                self.cut(msg.sender, dst, msg, stamp)
            else:
                when = max(self.link_ready.get(link, self.now) + self.profile.latency_us, self.link_last.get(link, 0))
                self.link_last[link] = when
                self.at(when, self.deliver, dst, msg, stamp)

    def heal_partition(self, partition_id: int) -> None:
        if partition_id == self.partition_id:
            self.set_partition(set(), set(), set())
            self.log(-1, "fault", "partition healed")

    def lose_disk(self) -> None:
        """A server loses its disk and is restarted with its usual command: it runs the founding check.

        Only ever a minority of the hostfile, one at a time, so that a
        majority keeps its data; a server that refuses to start stays down.
        Half the losses are staged as the worst case an operator meets
        (``stage_disk_loss``); the others strike whoever is drawn.
        """
        rng = self.disk_rng
        if self.now < self.fault_end:
            self.at(self.now + 1 + rng.randrange(LOSE_DISK_GAP_US), self.lose_disk)
        voters = self.voters_that_may_lose_a_disk()
        if voters is None:
            return
        if rng.random() < LOSE_DISK_STAGED:
            self.stage_disk_loss(voters)
            return
        host = self.hosts[rng.choice(voters)]
        if host.id not in self.refused_hosts and self.others_know_the_configuration(voters, host):
            self.wipe_disk(host)

    def voters_that_may_lose_a_disk(self) -> list[int] | None:
        """The voters one of which may lose its disk now, or None while no loss may happen."""
        leader = self.leader()
        if self.founding or self.now >= self.fault_end or leader is None or leader.replica is None:
            return None
        if leader.replica.core.change_in_progress:
            return None  # the configuration it would judge by is about to change
        # Nor may a change be waiting anywhere: one a deposed leader had
        # accepted may be chosen by a later leader, after the loss, and leave
        # the lost server a quorum of a smaller configuration.
        applied = leader.replica.store.applied_index
        for other in self.hosts:
            for slot, (_, value) in other.disk.durable.accepted.items():
                if slot > applied and configuration_in(value) is not None:
                    return None
        # A voter of a configuration that can still lose it: the refused
        # server is removed later (retire_refused), which takes a quorum of
        # the configuration it is in.
        voters = sorted(leader.replica.membership.voters)
        if len(self.refused_hosts & set(voters)) + 1 > (len(voters) - 1) // 2:
            return None
        return voters

    def others_know_the_configuration(self, voters: list[int], host: Host) -> bool:
        """Whether every voter but ``host`` knows the configuration ``host`` is a voter of.

        One that lags behind a change only it and the lost server saw
        cannot elect.
        """
        leader = self.leader()
        if leader is None or leader.replica is None:
            return False
        for other in voters:
            core = self.hosts[other].core
            if other != host.id and (core is None or core.membership != leader.replica.membership):
                return False
        return True

    def stage_disk_loss(self, voters: list[int]) -> None:
        """The loss that forgets an acknowledged write unless the founding check refuses it.

        A follower stalls; writes go on acknowledged by the leader and a
        second follower; that follower loses its disk and the leader
        crashes.  The restarted server and the stalled one, if it founds,
        are a majority that never saw those writes.
        """
        rng = self.disk_rng
        leader = self.leader()
        followers = [v for v in voters if leader is None or v != leader.id]
        followers = [v for v in followers if v not in self.refused_hosts and self.hosts[v].up]
        if leader is None or len(followers) < 2:
            return
        stalled, victim = rng.sample(followers, 2)
        lasts = rng.randint(400 * MS, 1500 * MS)
        self.hosts[stalled].pause(self.now + lasts)
        self.stats["pauses"] += 1
        self.log(stalled, "fault", f"process stalls for {lasts / SECOND:.3f}s (before n{victim} loses its disk)")
        self.at(self.now + rng.randint(lasts // 3, lasts - 50 * MS), self.finish_staged_disk_loss, victim, leader.id)

    def finish_staged_disk_loss(self, victim: int, leader_id: int) -> None:
        voters = self.voters_that_may_lose_a_disk()
        leader = self.leader()
        if voters is None or victim not in voters or leader is None or leader.id != leader_id:
            return
        if not self.others_know_the_configuration(voters, self.hosts[victim]):
            return
        self.wipe_disk(self.hosts[victim])
        self.crash(leader, self.disk_rng.randint(500 * MS, 2 * SECOND))

    def wipe_disk(self, host: Host) -> None:
        rng = self.disk_rng
        self.disks_lost += 1
        if host.up:
            host.crash()
            self.stats["crashes"] += 1
        else:
            host.generation += 1  # its pending restart is the founding check now
        host.disk = SimDisk(host)
        host.incarnation = self.new_incarnation()
        host.joined_with = self.bootstrap
        self.founding.add(host.id)
        self.stats["disks_lost"] += 1
        self.log(host.id, "fault", f"loses its disk; restarted with a new one (incarnation {host.incarnation})")
        self.at(self.now + rng.randint(1 * MS, 500 * MS), self.ask_before_founding, host.id)

    def ask_before_founding(self, node: int) -> None:
        """The founding check of a server on an empty disk, on the answers of those up and reachable."""
        host = self.hosts[node]
        # Those refused before were taken out of the hostfile by the operator.
        hostfile = [h for h in self.hosts if h.active and h.id not in self.refused_hosts]
        answers: dict[str, FoundingAnswer] = {}
        for other in hostfile:
            if other.id == node or (node, other.id) in self.blocked or (other.id, node) in self.blocked:
                continue
            if other.id in self.founding:
                answers[f"n{other.id}"] = FoundingAnswer(fresh=True, recorded=NONE)
            elif other.up and other.paused_until <= self.now and other.replica is not None:
                recorded = other.replica.incarnations.recorded_for([node])
                answers[f"n{other.id}"] = FoundingAnswer(fresh=other.replica.untouched, recorded=recorded)
        decision = decide_founding(f"n{node}", [f"n{h.id}" for h in hostfile], answers)
        if self.skip_incarnation_check:
            decision = FoundingDecision(Founding.FOUND, "planted bug: founds without asking")
        self.log(node, "fault", f"founding check: {decision.verdict.value} ({decision.why})")
        if decision.verdict is Founding.WAIT:
            self.at(self.now + 150 * MS, self.ask_before_founding, node)
            return
        self.founding.discard(node)
        if decision.verdict is Founding.REFUSE:
            self.refused_hosts.add(node)
            self.stats["founding_refused"] += 1
            self.retire_refused()
            return
        host.start()

    def leader(self) -> Host | None:
        leaders = [h for h in self.hosts if h.up and h.replica is not None and h.replica.core.is_leader()]
        return max(leaders, key=lambda h: h.core.ballot if h.core else 0) if leaders else None

    def retire_refused(self) -> None:
        """What the operator does for a server that refused its new disk: remove it from the configuration."""
        leader = self.leader()
        m = leader.replica.membership if leader is not None and leader.replica is not None else None
        retiring = sorted(self.refused_hosts & m.ids) if m is not None else sorted(self.refused_hosts)
        if not retiring:
            return
        self.at(self.now + 500 * MS, self.retire_refused)
        if leader is None or leader.replica is None or m is None or leader.replica.core.change_in_progress:
            return
        new = m.removing(retiring[0])
        if m.step_error(new):
            return
        self.log(leader.id, "fault", f"operator removes n{retiring[0]}: {new.describe()}")
        leader.replica.change_membership(new, lambda error: self.change_answered(leader.id, error))

    def reconfigure(self) -> None:
        """Ask the leader for one membership change: add a spare as a learner,
        promote a learner, or remove a member (the leader itself at times).
        Now and then another follows hard on its heels, which the leader
        must refuse while the first is unfinished."""
        rng = self.rng
        leaders = [h for h in self.hosts if h.up and h.replica is not None and h.replica.core.is_leader()]
        if not leaders:
            return
        host = max(leaders, key=lambda h: h.core.ballot if h.core else 0)
        replica = host.replica
        assert replica is not None
        m = replica.membership
        if (self.refused_hosts | self.founding) & m.ids:
            # A server on a new disk may be refused: the operator removes it
            # first (retire_refused), and no other change may leave it a
            # quorum of the configuration.
            return
        spares = [h for h in self.hosts if not h.active]
        learners, voters = sorted(m.learners), sorted(m.voters)
        # Adding is drawn twice as often as the others, so that learners
        # stay learners for a while: the rule about them needs them around.
        removable = bool(learners or len(voters) > 2)
        kinds = ["add"] * 2 * bool(spares) + ["promote"] * bool(learners) + ["remove"] * removable
        if not kinds:
            return
        kind = rng.choice(kinds)
        if kind == "add":
            spare = spares[0]
            new = m.adding_learner(ConfigMember(spare.id, f"n{spare.id}", ""))
            # Started with the configuration it would learn from the
            # cluster; it waits outside it until the change is chosen.
            spare.joined_with = m
            spare.start()
        elif kind == "promote":
            new = m.promoting(rng.choice(learners))
        else:
            new = m.removing(rng.choice(learners + voters if len(voters) > 2 else learners))
        self.stats["changes"] += 1
        self.log(host.id, "fault", f"asked to change the configuration to {new.describe()}")
        replica.change_membership(new, lambda error: self.change_answered(host.id, error))
        if rng.random() < 0.3:
            self.at(self.now + rng.randint(1 * MS, 50 * MS), self.reconfigure)

    def change_answered(self, node: int, error: str | None) -> None:
        if error is not None:
            self.stats["changes_refused"] += 1
        self.log(node, "role", f"membership change: {error or 'made'}")

    def forge(self) -> None:
        """A burst of messages no honest member sends, at one running node."""
        up = [h for h in self.hosts if h.up and h.core is not None]
        if not up:
            return
        host = self.rng.choice(up)
        count = self.rng.randint(1, 5)
        self.stats["forged"] += count
        for _ in range(count):
            if not host.defer(host.receive_forged):
                host.receive_forged()

    def pause_one(self) -> None:
        host = self.pick_node()
        if host is None:
            return
        rng = self.rng
        lasts = rng.randint(20 * MS, 500 * MS) if rng.random() < 0.5 else rng.randint(500 * MS, 3 * SECOND)
        host.pause(self.now + lasts)
        self.stats["pauses"] += 1
        self.log(host.id, "fault", f"process stalls for {lasts / SECOND:.3f}s")

    # ------------------------------------------------------------ liveness

    def heal(self) -> None:
        self.healed = True
        self.set_partition(set(), set(), set())
        self.loss = self.duplicate = self.reorder = 0.0
        self.log(-1, "fault", "heal: network whole, faults stop, every node up")
        for host in self.hosts:
            if host.active and not host.up and host.id not in self.founding | self.refused_hosts:
                host.start()
        for client in self.clients:
            client.final_ops = 2
            if client.op is not None:
                client.op.final = True
                client.op.deadline = max(client.op.deadline, self.liveness_deadline)
        self.at(self.now + CONVERGENCE_POLL_US, self.poll_convergence)

    def final_members(self) -> list[Host]:
        """The servers of the configuration the chosen log ends with."""
        membership = self.bootstrap
        for slot in sorted(self.chosen):
            membership = configuration_in(self.chosen[slot]) or membership
        return [self.hosts[i] for i in sorted(membership.ids)]

    def converged(self) -> bool:
        if not all(c.done for c in self.clients):
            return False
        top = max(self.chosen, default=0)
        return all(h.up and h.store.applied_index == top for h in self.final_members() if self.expected_up(h))

    def expected_up(self, host: Host) -> bool:
        """Whether the liveness phase expects ``host`` to converge: not if it refused its new disk."""
        return host.id not in self.refused_hosts

    def poll_convergence(self) -> None:
        if self.converged():
            self.finished = True
            self.log(-1, "check", f"converged: every node applied {max(self.chosen, default=0)} slots")
            return
        if self.now >= self.liveness_deadline:
            pending = "; ".join(c.describe_pending() for c in self.clients if not c.done)
            applied = ", ".join(f"n{h.id}={h.store.applied_index}" for h in self.hosts if h.active)
            roles = ", ".join(f"n{h.id}={h.core.role.value if h.core else 'down'}" for h in self.hosts if h.active)
            members = self.final_members()[0].replica
            if members is not None:
                applied += f"; configuration {members.membership.describe()}"
            self.violation(
                "liveness",
                f"{LIVENESS_US // SECOND}s after the heal: {pending or 'clients done'}; "
                f"applied {applied}; roles {roles}",
                window=(self.fault_end, self.now),
            )
        self.at(self.now + CONVERGENCE_POLL_US, self.poll_convergence)

    # ---------------------------------------------------------- final checks

    def check_configurations(self) -> None:
        """Each configuration chosen is one step from the one before it: the
        rule that keeps a quorum of the old voters and one of the new in touch."""
        membership = self.bootstrap
        for slot in sorted(self.chosen):
            chosen = configuration_in(self.chosen[slot])
            if chosen is None:
                continue
            error = membership.step_error(chosen)
            if error:
                self.violation(
                    "safety",
                    f"slot {slot} holds configuration [{chosen.describe()}], not one step from "
                    f"[{membership.describe()}] ({error})",
                    slot=slot,
                )
            membership = chosen

    def final_checks(self) -> None:
        self.check_configurations()
        effects = self.replay_log()
        for session, seq, when in self.acked:
            if (session, seq) not in effects:
                self.now = when
                self.violation("lost-write", f"write s{session}#{seq} was acknowledged but never took effect")
        reference = self.reference_data
        for host in self.final_members():
            if not self.expected_up(host):
                continue
            if host.store.data != reference:
                self.violation("divergence", f"n{host.id} ends with {host.store.data}, the log gives {reference}")
            elif host.store.session_table() != self.reference_sessions:
                # What a retried write would be answered with: it must not
                # depend on whether this node restarted from a snapshot.
                self.violation("divergence", f"n{host.id} ends with client sessions unlike those the log gives")
        # An unknown-outcome write that provably never took effect (it is
        # not in the log, or the state machine skipped it as superseded) is
        # dropped: the client's view allows it to take effect at any time,
        # but the log says it did not, so keeping it would only hide a read
        # of a value nobody wrote, and makes the search exponential.
        history = self.history + [op for op, write in self.unknown if write in effects]
        self.stats["ops_unknown_applied"] = len(history) - len(self.history)
        verdict = lincheck.check(history)
        if not verdict.ok:
            key = verdict.key
            assert key is not None
            when, culprit = first_nonlinearizable_moment([op for op in history if op.key == key])
            self.now = when
            message = (
                f"key {key!r}: no legal order exists once {describe_op(culprit)} returns "
                f"(the history cut just before that is linearizable)\n"
                f"  lincheck's witness:\n" + "\n".join(f"    {describe_op(op)}" for op in verdict.witness)
            )
            self.violation("linearizability", message, key=key, window=(when - 3 * SECOND, when))

    def replay_log(self) -> dict[tuple[SessionKey, int], Slot]:
        """Apply the chosen log to a fresh state machine: the slot where each
        (session, seq) took effect; ``reference_data`` is the end state."""
        store = StateMachine()
        effects: dict[tuple[SessionKey, int], Slot] = {}
        for slot in range(1, max(self.chosen, default=0) + 1):
            for result in store.apply(slot, self.chosen[slot]):
                if isinstance(result, Result) and result.ok:
                    effects.setdefault((result.session, result.seq), slot)
        self.reference_data = store.data
        self.reference_sessions = store.session_table()
        return effects


def describe_op(op: lincheck.Op) -> str:
    shown = f"={op.arg}" if op.kind == "set" else ""
    result = "" if op.kind == "set" or op.ret is None else f" -> {op.result!r}"
    # Op times are this simulation's integer microseconds.
    called = fmt_time(int(op.call)).strip()
    ret = "never (outcome unknown)" if op.ret is None else fmt_time(int(op.ret)).strip()
    return f"{op.process} {op.kind} {op.key}{shown}{result} (called {called}, returned {ret})"


def first_nonlinearizable_moment(ops: list[lincheck.Op]) -> tuple[int, lincheck.Op]:
    """The earliest return after which ``ops`` (one key) cannot be linearized.

    The history as it stood at time t keeps the operations called by then;
    those still running are cut to an unknown outcome.  Such cuts are
    prefix-closed (a later cut only adds constraints), so a binary search
    over return times finds the moment the violation became certain and the
    operation whose result made it so.
    """

    def cut(t: float) -> list[lincheck.Op]:
        kept = []
        for op in ops:
            if op.call > t:
                continue
            if op.ret is not None and op.ret > t:
                op = lincheck.Op(op.process, op.key, op.kind, op.arg, op.call, None, None)
            kept.append(op)
        return kept

    returns = sorted({op.ret for op in ops if op.ret is not None})
    lo, hi = 0, len(returns) - 1  # cut(returns[hi]) is known to fail
    while lo < hi:
        mid = (lo + hi) // 2
        if lincheck.check(cut(returns[mid])).ok:
            lo = mid + 1
        else:
            hi = mid
    when = returns[lo]
    culprit = next(op for op in ops if op.ret == when)
    return int(when), culprit


# ------------------------------------------------------------------ timeline


def timeline(result: RunResult, everything: bool = False) -> list[str]:
    """The events that matter for the first violation, as printable lines."""
    # Final checks log at the time of what they found, after the end.
    events = sorted(result.trace, key=lambda e: e.time)
    if not everything and result.violations:
        v = result.violations[0]
        events = [e for e in events if _matters(e, v)]
    lines = []
    for e in events:
        text = e.text
        if e.kind == "commit" and not text:
            text = f"learned slot {e.slot}" + (f" = {describe_value(e.value)}" if e.value is not None else "")
        who = f"n{e.node}" if e.node >= 0 else "  "
        lines.append(f"{fmt_time(e.time)} {who:>3} {e.kind:<6} {text}")
    if not everything and len(lines) > TIMELINE_LINES:
        omitted = len(lines) - TIMELINE_LINES
        lines = [f"... {omitted} earlier events omitted (--verbose shows everything)", *lines[-TIMELINE_LINES:]]
    return lines


def _matters(e: Event, v: Violation) -> bool:
    if e.kind == "check":
        return True
    start, end = v.window if v.window else (v.time - 3 * SECOND, v.time)
    if not start - SECOND <= e.time <= end:
        return False
    if e.kind in ("fault", "role", "disk"):
        return True
    if e.kind == "client":
        if v.commands:
            return e.command in v.commands
        return v.key is None or e.key == v.key
    if e.kind == "commit":
        return v.slot is not None and e.slot == v.slot
    return False


# ------------------------------------------------------------------- runners


def run_seed(
    seed: int,
    nodes: Sequence[int] = DEFAULT_NODES,
    bugs: Iterable[str] = (),
    fault_seconds: float = DEFAULT_FAULT_SECONDS,
    verbose: bool = False,
    keep_trace: bool = True,
) -> RunResult:
    result = Simulation(seed, nodes, bugs, fault_seconds, verbose).run()
    if not keep_trace:
        result.trace, result.chosen = [], {}
    return result


def _run_quiet(args: tuple[int, tuple[int, ...], tuple[str, ...], float]) -> RunResult:
    seed, nodes, bugs, fault_seconds = args
    return run_seed(seed, nodes, bugs, fault_seconds, keep_trace=False)


def run_many(
    seeds: Iterable[int],
    nodes: Sequence[int] = DEFAULT_NODES,
    bugs: Iterable[str] = (),
    fault_seconds: float = DEFAULT_FAULT_SECONDS,
    jobs: int = 1,
    stop_at_first_failure: bool = False,
    progress: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run seeds in order (in ``jobs`` processes); results in seed order."""
    work = [(seed, tuple(nodes), tuple(sorted(bugs)), fault_seconds) for seed in seeds]
    results: list[RunResult] = []
    if jobs <= 1:
        for item in work:
            result = _run_quiet(item)
            results.append(result)
            if progress:
                progress(result)
            if stop_at_first_failure and not result.ok:
                break
        return results
    # Fresh worker processes, not forks: a fork inherits whatever the caller
    # runs (under pytest, gRPC's threads from earlier tests, which slowed
    # forked workers down by orders of magnitude).
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        # Ordered map in chunks: a failure stops the run soon after it is seen.
        chunk = jobs * 4
        for i in range(0, len(work), chunk):
            for result in pool.map(_run_quiet, work[i : i + chunk]):
                results.append(result)
                if progress:
                    progress(result)
            if stop_at_first_failure and any(not r.ok for r in results):
                break
    if stop_at_first_failure:
        first_bad = next((i for i, r in enumerate(results) if not r.ok), None)
        if first_bad is not None:
            results = results[: first_bad + 1]
    return results


# ----------------------------------------------------------------------- CLI


def _parse_nodes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        sizes = ()
    if not sizes or any(size < 3 for size in sizes):
        raise argparse.ArgumentTypeError(f"wants cluster sizes of 3 or more like 3,5,7, got {text!r}")
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.split("\n\n")[0])
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--seed", type=int, help="replay one seed and print its timeline on failure")
    what.add_argument("--seeds", type=int, help="run this many seeds and print a summary")
    parser.add_argument("--start", type=int, default=0, help="first seed of --seeds (default 0)")
    parser.add_argument("--nodes", type=_parse_nodes, default=DEFAULT_NODES, help="cluster sizes to draw from")
    parser.add_argument("--bug", action="append", default=[], choices=sorted(ALL_BUGS), help="plant a bug")
    parser.add_argument("--fault-seconds", type=float, default=DEFAULT_FAULT_SECONDS, help="simulated fault phase")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for --seeds")
    parser.add_argument("--first-failure", action="store_true", help="with --seeds: stop at the first failing seed")
    parser.add_argument("--timeline", action="store_true", help="print the timeline of faults, roles and clients")
    parser.add_argument("--verbose", action="store_true", help="print the whole trace, messages included")
    args = parser.parse_args(argv)
    if args.seed is not None:
        return _replay(args)
    return _many(args)


def _replay(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    result = run_seed(args.seed, args.nodes, args.bug, args.fault_seconds, verbose=args.verbose)
    took = time.perf_counter() - started
    if args.verbose or args.timeline or not result.ok:
        print("\n".join(timeline(result, everything=args.verbose or args.timeline)))
        print()
    for v in result.violations:
        print(f"{v.kind} violation at {fmt_time(v.time).strip()}:\n{v.message}\n")
    stats = ", ".join(f"{k}={v}" for k, v in result.stats.items())
    bugs = f", planted {', '.join(result.bugs)}" if result.bugs else ""
    print(f"seed {result.seed}: {'ok' if result.ok else 'FAIL'} ({result.nodes} nodes{bugs}) digest {result.digest}")
    print(f"  {stats}")
    print(f"  {took:.2f}s wall clock")
    return 0 if result.ok else 1


def _many(args: argparse.Namespace) -> int:
    seeds = range(args.start, args.start + args.seeds)
    started = time.perf_counter()
    failures: list[RunResult] = []

    def progress(result: RunResult) -> None:
        if not result.ok:
            failures.append(result)
            print(result.summary().splitlines()[0], flush=True)

    results = run_many(
        seeds, args.nodes, args.bug, args.fault_seconds, args.jobs, args.first_failure, progress=progress
    )
    took = time.perf_counter() - started
    by_size: dict[int, int] = {}
    for r in results:
        by_size[r.nodes] = by_size.get(r.nodes, 0) + 1
    sizes = ", ".join(f"{count} x {size} nodes" for size, count in sorted(by_size.items()))
    print(
        f"\n{len(results)} seeds run ({sizes}) in {took:.1f}s, {100 * took / max(len(results), 1):.1f}s per 100 seeds"
    )
    if failures:
        print(f"{len(failures)} failed: {' '.join(str(r.seed) for r in failures)}")
        flags = "".join(f" --bug {b}" for b in args.bug)
        if tuple(args.nodes) != DEFAULT_NODES:
            flags += " --nodes " + ",".join(map(str, args.nodes))
        if args.fault_seconds != DEFAULT_FAULT_SECONDS:
            flags += f" --fault-seconds {args.fault_seconds:g}"
        print(f"replay one with: python -m tests.sim --seed {failures[0].seed}{flags}")
        return 1
    print("no failures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
