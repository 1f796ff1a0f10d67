"""The simulated disk: a log whose unsynced tail a crash may lose, snapshots, the incarnation book."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from paxos.consensus.messages import NO_BALLOT, AcceptRecord, Ballot, DurableState, PromiseRecord, Record, Slot
from paxos.kv.statemachine import FrozenState, StateMachine
from paxos.storage.snapshot import header_for
from tests.sim.bugs import ForgetfulStateMachine, HostBug
from tests.sim.trace import describe_record
from tests.sim.units import MS, SIM_CLUSTER_ID

if TYPE_CHECKING:
    from tests.sim.host import Host


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


class SimDisk:
    """The replica's storage here: a log whose unsynced tail a crash may lose.

    ``append`` buffers; ``sync`` makes everything appended so far durable
    after a simulated latency (with occasional stalls) and then reports
    done.  With the planted bug ``ack_before_fsync`` the disk says nothing
    is pending and flushes in the background, like a log written through a
    cache it wrongly believes durable: the replica then acts on bundles that
    are not yet durable, and the simulation's checks must notice.  With
    ``snapshot_without_sessions`` it writes every snapshot without the
    client-session table.  With ``votes_before_fsync`` it lets the messages
    of the bundle waiting for an fsync out as the fsync starts.
    """

    def __init__(self, host: Host) -> None:
        self.host = host
        self.write_back = HostBug.ACK_BEFORE_FSYNC in host.sim.planted
        self.drop_sessions = HostBug.SNAPSHOT_WITHOUT_SESSIONS in host.sim.planted
        self.eager_votes = HostBug.VOTES_BEFORE_FSYNC in host.sim.planted
        self.durable = DurableState()
        # The highest ballot the server on this disk has voted for or
        # promised in a message it sent (see stepchecks.py): a new disk
        # starts from nothing, as its server does.
        self.voted = NO_BALLOT
        # Each slot's highest ballot the server on this disk sent an
        # ``Accepted`` for: its promises must keep reporting them.
        self.votes: dict[Slot, Ballot] = {}
        # Records written but not yet durable, the first ``flushing`` of
        # which an fsync is making durable right now.
        self.pending: list[Record] = []
        self.flushing = 0
        self.latency = 0  # of the fsync in progress
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
        if self.write_back and not self.flushing:
            self._start(None)

    def unsynced(self) -> bool:
        # The planted bug: a log written through a cache it believes durable.
        return bool(self.pending) and not self.write_back

    def sync(self, done: Callable[[], None]) -> None:
        assert not self.flushing, "the replica waits for one fsync at a time"
        self._start(done)
        replica = self.host.replica
        if self.eager_votes and replica is not None and replica._waiting is not None:
            # The planted bug: the bundle waiting for this fsync sends its messages now.
            waiting = replica._waiting
            self.host.send(waiting.messages)
            waiting.messages.clear()
        sim = self.host.sim
        if sim.profile.fsync_crash and any(isinstance(r, PromiseRecord | AcceptRecord) for r in self.pending):
            if sim.rng.random() < sim.profile.fsync_crash:
                # Before the fsync is done: sometimes at once, as the votes were written.
                when = sim.now + sim.rng.randint(0, max(0, self.latency - 1))
                sim.at(when, sim.nemesis.crash_in_fsync, self.host, self.host.generation)

    def _start(self, done: Callable[[], None] | None) -> None:
        sim = self.host.sim
        self.flushing = len(self.pending)
        self.latency = sim.fsync_latency()
        sim.at(sim.now + self.latency, self.host.fsync_done, self.host.generation, done)

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
        if self.write_back and self.pending:
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
        if self.drop_sessions:
            frozen = dataclasses.replace(frozen, sessions={})
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
