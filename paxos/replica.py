"""One replica host: the consensus core, its log, its peers and its store.

``Replica`` owns the order of effects around the sans-I/O core, and nothing
else.  For each ``Ready`` bundle it sends the early messages, appends the
records to its storage, waits for the fsync when the bundle needs one, and
only then sends the other messages, applies the chosen slots to the state
machine and answers the requests waiting for them; then it hands the bundle
back with ``Node.advance``.  While an fsync runs, new input piles up in the
core and goes out in the next bundle, so many commands share one fsync.

Everything with a side effect comes in as a parameter: the storage, the
transport, the clock and the state machine, and a ``wake`` callable that
arranges for ``drive`` to run soon.  The gRPC server (paxos/server/service.py)
gives it a write-ahead log, gRPC streams and the monotonic clock; the
simulator (tests/sim/) gives it a simulated disk, network and clock.  Both
run this class, so the simulator tests the code that ships.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, assert_never

from paxos.clusterversion import VersionReports
from paxos.common import limits, versions
from paxos.consensus.core import Config, HostContractError, Node, Role
from paxos.consensus.membership import Membership
from paxos.consensus.messages import DurableState, Message, NodeId, Ready, Record, Slot, Value
from paxos.incarnation import IncarnationBook, Verdict
from paxos.kv import logcommand
from paxos.kv.configuration import LOG_CONFIGURATIONS, configuration_in
from paxos.kv.logcommand import ClientWrite
from paxos.kv.statemachine import (
    FrozenState,
    Outcome,
    Registration,
    Result,
    SessionKey,
    StateMachine,
    VersionRaised,
    session_of,
    validate_command,
)

log = logging.getLogger("paxos.replica")


class Storage(Protocol):
    """The durable log, as the replica needs it."""

    def append(self, records: list[Record]) -> None:
        """Buffer records, in order, after everything appended before."""

    def unsynced(self) -> bool:
        """Whether anything appended is not yet durable."""

    def sync(self, done: Callable[[], None]) -> None:
        """Make everything appended so far durable, then call ``done`` (now or later, once)."""

    def log_bytes(self) -> int:
        """How big the log is now."""

    def save_snapshot(self, frozen: FrozenState, done: Callable[[bool], None]) -> None:
        """Write ``frozen`` durably as the newest snapshot (in the background); ``done(ok)`` once."""

    def compact(self, snapshot_index: Slot) -> None:
        """A durable snapshot holds every slot up to ``snapshot_index``: drop the log only it needed."""

    def recorded_incarnations(self) -> dict[NodeId, int]:
        """The incarnation book as last recorded (paxos/incarnation.py)."""

    def record_incarnation(self, member: NodeId, incarnation: int) -> None:
        """Add ``member``'s incarnation to the durable book; durable when this returns."""


@dataclass(frozen=True)
class FetchedSnapshot:
    """A peer's snapshot, already durable as this server's newest, and its state."""

    applied_index: Slot
    store: StateMachine


class Transport(Protocol):
    def send(self, messages: list[tuple[NodeId, Message]]) -> None:
        """Send each message to its member; losing some is allowed, reordering on one link is not."""

    def fetch_snapshot(self, peer: NodeId, after: Slot, done: Callable[[FetchedSnapshot | None], None]) -> None:
        """Fetch ``peer``'s newest snapshot if it is newer than ``after``; ``done`` once, with None on failure.

        The snapshot is made durable as this server's own before ``done``
        hears of it, so a crash at any point leaves the old state or the new.
        """


class Observer:
    """What the replica reports besides its answers; the default ignores it all."""

    def role_changed(self, role: Role, leader: NodeId | None) -> None:
        pass

    def applying(self, slot: Slot, value: Value) -> None:
        pass

    def refused(self, msg: Message, reason: str) -> None:
        pass

    def snapshot_frozen(self, index: Slot, seconds: float) -> None:
        """A snapshot's consistent copy was taken; it held up the apply loop for ``seconds``."""

    def snapshot_saved(self, index: Slot) -> None:
        pass

    def snapshot_installed(self, index: Slot, peer: NodeId) -> None:
        pass

    def membership_applied(self, slot: Slot, membership: Membership) -> None:
        """A configuration was applied here (this server may have left it)."""

    def cluster_version_applied(self, slot: Slot, version: int) -> None:
        """From ``slot`` on the cluster runs ``version`` (a raise applied, or a snapshot installed that holds it)."""


class Status(enum.Enum):
    """How the replica answers a request; the server says it in its client API's words."""

    OK = "ok"
    NOT_LEADER = "not leader"  # not handled here: this server does not lead
    # A write may or may not have been applied: leadership was lost before
    # its outcome was known, or it came again after its client moved on.
    UNKNOWN = "unknown"
    INVALID = "invalid"  # refused; nothing applied
    UNAVAILABLE = "unavailable"  # cannot be handled now (overloaded, no quorum); nothing applied
    SESSION_EXPIRED = "session expired"  # the write's session is not kept; this copy was not applied


@dataclass(frozen=True, slots=True)
class WriteAnswer:
    status: Status
    removed: bool = False
    error: str = ""


WriteCallback = Callable[[WriteAnswer], None]


@dataclass(frozen=True, slots=True)
class RegisterAnswer:
    status: Status
    session_id: int = 0
    error: str = ""


RegisterCallback = Callable[[RegisterAnswer], None]
# A membership change's answer: None once applied here, else why it was not
# made (it may still be made later if leadership was lost; look again).
ChangeCallback = Callable[[str | None], None]
# A read's answer is a status; on OK the caller reads the store at once.
ReadCallback = Callable[[Status], None]


def _answer(result: Result) -> WriteAnswer:
    match result.outcome:
        case Outcome.APPLIED:
            return WriteAnswer(Status.OK, removed=result.removed)
        case Outcome.REFUSED:
            return WriteAnswer(Status.INVALID, error=result.error)
        case Outcome.UNKNOWN:
            # Not INVALID: that would tell the client nothing was applied,
            # and an earlier copy of this write may have been.
            return WriteAnswer(Status.UNKNOWN, error=result.error)
        case Outcome.EXPIRED:
            return WriteAnswer(Status.SESSION_EXPIRED, error=result.error)
        case unreachable:
            assert_never(unreachable)


class Replica:
    """One server's consensus host; see the module docstring."""

    def __init__(
        self,
        member_id: NodeId,
        members: Iterable[NodeId] | Membership,
        durable: DurableState,
        storage: Storage,
        transport: Transport,
        clock: Callable[[], float],
        wake: Callable[[], None],
        store: StateMachine | None = None,
        rng: random.Random | None = None,
        config: Config | None = None,
        max_value_bytes: int = limits.DEFAULT_MAX_VALUE_BYTES,
        observer: Observer | None = None,
        snapshot_every: int = limits.SNAPSHOT_EVERY_COMMANDS,
        snapshot_log_bytes: int = limits.SNAPSHOT_LOG_BYTES,
        snapshot_tail: int = limits.SNAPSHOT_TAIL_SLOTS,
        max_cluster_version: int = versions.MAX_CLUSTER_VERSION,
    ) -> None:
        """``store``: the state as of the newest snapshot (empty without one); the log replays above it.

        ``max_cluster_version``: the highest cluster version this server says
        it runs (``--max-cluster-version``; at most what the release runs).

        ``members``: the configuration the cluster was created with (or, for
        a server joining it, the one it learned); a snapshot's configuration
        and those chosen in the log take over from it.
        """
        self.store = store or StateMachine()
        if self.store.membership is None:
            self.store.membership = members if isinstance(members, Membership) else Membership.of_voters(members)
        self.snapshot_index: Slot = self.store.applied_index
        rng = rng or random.Random()
        # Registrations proposed here, by nonce.  (member id, nonce) tells
        # this process's apart from any other leader's, and from those an
        # earlier process of this member proposed that are chosen only now:
        # counting from a random start, a restart never reuses a nonce.
        self._registrations: dict[int, RegisterCallback] = {}
        self._next_nonce = rng.getrandbits(limits.REGISTRATION_NONCE_BITS)
        self.core = Node(
            member_id,
            self.store.membership,
            rng,
            # Whatever the caller's config, slots hold configurations as the log writes them.
            dataclasses.replace(config or Config(), configurations=LOG_CONFIGURATIONS),
            durable,
            snapshot_index=self.snapshot_index,
        )
        self.storage = storage
        self.incarnations = IncarnationBook(storage.recorded_incarnations())
        self.transport = transport
        self.max_value_bytes = max_value_bytes
        self.observer = observer or Observer()
        self._now = clock  # seconds, monotonic
        self._clock = clock()  # the core's clock has run up to here
        self._wake = wake
        self._waiting: Ready | None = None  # a bundle waiting for its fsync
        self._seen_role: tuple[Role, NodeId | None] = (self.core.role, self.core.leader)
        self._writes: dict[tuple[SessionKey, int], list[WriteCallback]] = {}
        self._reads: dict[int, ReadCallback] = {}
        self._index_waiters: list[tuple[Slot, ReadCallback]] = []
        self._next_read_id = 0
        self._snapshot_every = snapshot_every
        self._snapshot_log_bytes = snapshot_log_bytes
        self._snapshot_tail = snapshot_tail
        self._applied_since_snapshot = 0
        self._saving_snapshot = False
        self._fetching_snapshot = False
        self._fetched_snapshot: tuple[NodeId, FetchedSnapshot | None] | None = None
        self._changes: list[tuple[Membership, ChangeCallback]] = []
        assert versions.BASE_CLUSTER_VERSION <= max_cluster_version <= versions.MAX_CLUSTER_VERSION
        self.max_cluster_version = max_cluster_version
        # What the other members said they run, and the raise this leader
        # proposed and has not seen applied: (version, when proposed).
        self.versions = VersionReports()
        self._raise_pending: tuple[int, float] | None = None

    # ------------------------------------------------------------- inputs

    def tick(self) -> None:
        """The clock moved: run the core's timers, then let the bundle out."""
        self.advance_clock()
        if self.core.is_leader():
            self._maybe_raise_version()
        self._wake()

    def advance_clock(self) -> None:
        """Run the core's clock up to now.

        Called on every tick, and before the core sees a peer message or a
        read: after a stall the event loop may serve those before the ticker,
        and the read lease and leader stickiness need the real elapsed time.
        """
        now = self._now()
        ticks = int((now - self._clock) / limits.TICK_SECONDS)
        if ticks <= 0:
            return
        if ticks > limits.MAX_CATCHUP_TICKS:
            ticks, self._clock = limits.MAX_CATCHUP_TICKS, now
        else:
            self._clock += ticks * limits.TICK_SECONDS
        for _ in range(ticks):
            self.core.tick()

    def receive(self, msg: Message, incarnation: int, max_cluster_version: int = 0) -> None:
        """One peer message that passed the codec's checks, from a data dir of that ``incarnation``.

        A member's first incarnation is recorded durably before its first
        message reaches the core; a message of any other is refused, so no
        vote of a data dir that forgot is ever counted here.
        ``max_cluster_version`` is the sender's report of what it runs (0:
        none, a release from before cluster versions); only a message let
        through counts as one.
        """
        match self.incarnations.judge(msg.sender, incarnation):
            case Verdict.REFUSED:
                self.observer.refused(msg, "sender's data dir is not the one it was first heard from")
                return
            case Verdict.NEW:
                self.storage.record_incarnation(msg.sender, incarnation)
                self.incarnations.record(msg.sender, incarnation)
            case Verdict.KNOWN:
                pass
            case unreachable:
                assert_never(unreachable)
        self.versions.heard(msg.sender, max_cluster_version, self._now())
        self.advance_clock()
        refused = self.core.receive(msg)
        if refused is not None:
            self.observer.refused(msg, refused)
        self._wake()

    def step_down(self, abstain_ticks: int) -> bool:
        """Hand leadership over (``Node.step_down``); False if this server does not lead."""
        self.advance_clock()
        stepped = self.core.step_down(abstain_ticks)
        self._wake()
        return stepped

    def write(self, cmd: ClientWrite, answer: WriteCallback) -> None:
        """Propose a client's write; ``answer`` is called exactly once, unless the replica is dropped.

        ``cmd`` is the log's copy of the client's command (``logcommand.from_client``), not yet validated.
        """
        if not self.core.is_leader():
            answer(WriteAnswer(Status.NOT_LEADER))
            return
        # The leader's own limits are checked here, before proposing, and
        # only here: once chosen, every replica applies the command whatever
        # its own --max-value-bytes.  (So a follower redirects rather than
        # judging by limits that are not the ones that count.)
        error = validate_command(cmd, self.max_value_bytes)
        if error:
            answer(WriteAnswer(Status.INVALID, error=error))
            return
        cached = self.store.cached_result(session_of(cmd), cmd.seq)
        if cached is not None:
            answer(_answer(cached))
            return
        key = (session_of(cmd), cmd.seq)
        if key not in self._writes and not self.core.propose(logcommand.encode_write(cmd)):
            answer(WriteAnswer(Status.UNAVAILABLE, error="leader is overloaded; retry later"))
            return
        self._writes.setdefault(key, []).append(answer)
        self._wake()

    def register(self, answer: RegisterCallback) -> int | None:
        """Propose a new client session; ``answer`` is called once, with its id when it applied here.

        Returns an id for ``forget_registration`` while it waits, or None when it was answered already.
        """
        if not self.core.is_leader():
            answer(RegisterAnswer(Status.NOT_LEADER))
            return None
        self._next_nonce += 1
        if not self.core.propose(logcommand.register_session(self.core.id, self._next_nonce)):
            answer(RegisterAnswer(Status.UNAVAILABLE, error="leader is overloaded; retry later"))
            return None
        self._registrations[self._next_nonce] = answer
        self._wake()
        return self._next_nonce

    def forget_registration(self, nonce: int) -> None:
        """The caller gave up on a registration (its deadline passed); if it applies, its session goes unused."""
        self._registrations.pop(nonce, None)

    def read(self, answer: ReadCallback) -> int | None:
        """Start a linearizable read; ``answer`` gets its status exactly once.

        Returns an id for ``forget_read`` while the read waits for a quorum
        round, or None when it was answered already.
        """
        if not self.core.is_leader():
            answer(Status.NOT_LEADER)
            return None
        self.advance_clock()
        index = self.core.lease_read_index()
        if index is not None and index <= self.store.applied_index:
            answer(Status.OK)  # under the lease, no round needed
            return None
        self._next_read_id += 1
        read_id = self._next_read_id
        if not self.core.read(read_id):
            answer(Status.UNAVAILABLE)
            return None
        self._reads[read_id] = answer
        self._wake()
        return read_id

    def change_membership(self, membership: Membership, answer: ChangeCallback) -> None:
        """Ask this leader to move the cluster to ``membership`` (one step); ``answer`` once."""
        self.advance_clock()
        error = self.core.propose_change(membership)
        if error is not None:
            answer(error)
            return
        self._changes.append((membership, answer))
        self._wake()

    @property
    def membership(self) -> Membership:
        """The configuration as of the core's commit index."""
        return self.core.membership

    @property
    def removed(self) -> bool:
        """Whether this server is outside the configuration (removed, or not yet added)."""
        return self.core.id not in self.core.membership_ids

    def forget_read(self, read_id: int) -> None:
        """The caller gave up on a read (its deadline passed)."""
        self._reads.pop(read_id, None)

    @property
    def untouched(self) -> bool:
        """Whether this replica never heard from a peer and holds nothing chosen or accepted.

        Such a server took part in no quorum yet, so the founding check of
        another counts it as fresh: servers started together found their
        cluster whichever asks first (paxos/incarnation.py).
        """
        core = self.core
        holds_nothing = core.commit_index == 0 and not core.accepted and self.snapshot_index == 0
        return holds_nothing and not self.incarnations.recorded

    @property
    def pending_writes(self) -> int:
        """Client writes proposed here and not answered yet (for the server's metrics)."""
        return len(self._writes)

    # ------------------------------------------------------- the bundles

    def drive(self) -> None:
        """Take bundles from the core and carry them out, until it has none or one waits for its fsync."""
        while self._waiting is None:
            if self._fetched_snapshot is not None:
                fetched, self._fetched_snapshot = self._fetched_snapshot, None
                self._install_fetched(*fetched)
            ready = self.core.ready()
            self._note_role()
            if ready.empty():
                self.core.advance(ready)
                return
            self.transport.send(ready.early)
            if ready.persist:
                self.storage.append(ready.persist)
            if self.storage.unsynced() and ready.must_sync():
                self._waiting = ready
                self.storage.sync(self._synced)
                return
            self._act(ready)

    def _synced(self) -> None:
        ready, self._waiting = self._waiting, None
        assert ready is not None, "sync reported done twice"
        self._act(ready)
        self.drive()

    def _act(self, ready: Ready) -> None:
        if self.storage.unsynced() and ready.must_sync():
            raise HostContractError("acting on a bundle whose records are not durable yet")
        self.transport.send(ready.messages)
        for slot, value in ready.committed:
            self.observer.applying(slot, value)
            # A raise above what this release runs stops the replica here
            # (ClusterVersionTooNew), with nothing of the slot applied: the
            # host stops the server, as every replica of this release does
            # at this same slot.
            for result in self.store.apply(slot, value):
                if isinstance(result, Registration):
                    self._finish_registration(result)
                elif isinstance(result, VersionRaised):
                    self._version_raised(result)
                else:
                    self._finish_write(result)
            self._applied_since_snapshot += len(value)
            if configuration_in(value) is not None and self.store.membership is not None:
                self._membership_applied(slot, self.store.membership)
        for read_id, read_index in ready.reads:
            answer = self._reads.pop(read_id, None)
            if answer is not None:
                self._index_waiters.append((read_index, answer))
        if self._index_waiters:
            self._release_index_waiters()
        if ready.lost_leadership:
            changes, self._changes = self._changes, []
            for _, told in changes:
                told("leadership changed before the change was chosen; it may still be made: look again")
            if self._writes or self._reads:
                log.info(
                    "lost leadership; %d writes and %d reads waiting here are told to retry",
                    len(self._writes),
                    len(self._reads),
                )
            self._fail_pending()
            self._raise_pending = None
        if ready.snapshot_wanted is not None:
            self._fetch_snapshot(ready.snapshot_wanted)
        self.core.advance(ready)
        if ready.committed:
            self._maybe_snapshot()

    # ---------------------------------------------------------- snapshots

    def _maybe_snapshot(self) -> None:
        if self._saving_snapshot or self._applied_since_snapshot == 0:
            return
        if self._applied_since_snapshot < self._snapshot_every and self.storage.log_bytes() < self._snapshot_log_bytes:
            return
        started = self._now()
        frozen = self.store.freeze()
        self.observer.snapshot_frozen(frozen.applied_index, self._now() - started)
        self._saving_snapshot = True
        self._applied_since_snapshot = 0
        self.storage.save_snapshot(frozen, lambda ok: self._snapshot_saved(frozen.applied_index, ok))

    def _snapshot_saved(self, index: Slot, ok: bool) -> None:
        self._saving_snapshot = False
        if not ok:
            return  # the storage said why; the next applied slot tries again
        if index > self.snapshot_index:
            self.snapshot_index = index
            self.core.compact(max(0, index - self._snapshot_tail))
            self.storage.compact(index)
            self.observer.snapshot_saved(index)

    def _fetch_snapshot(self, peer: NodeId) -> None:
        if self._fetching_snapshot:
            return
        self._fetching_snapshot = True
        self.transport.fetch_snapshot(peer, self.store.applied_index, lambda got: self._fetched(peer, got))

    def _fetched(self, peer: NodeId, got: FetchedSnapshot | None) -> None:
        # Installed by ``drive`` between bundles: a bundle waiting for its
        # fsync holds slots for the store it was made for.
        self._fetched_snapshot = (peer, got)
        self._wake()

    def _install_fetched(self, peer: NodeId, got: FetchedSnapshot | None) -> None:
        self._fetching_snapshot = False
        if got is None or not self._moves_forward(got):
            self.core.snapshot_failed()
            return
        version_before = self.store.cluster_version
        self.store = got.store
        self.snapshot_index = got.applied_index
        self._applied_since_snapshot = 0
        self.core.install_snapshot(got.applied_index, got.store.membership)
        self.storage.compact(got.applied_index)
        self.observer.snapshot_installed(got.applied_index, peer)
        if self.store.cluster_version != version_before:
            self.observer.cluster_version_applied(got.applied_index, self.store.cluster_version)
        # Writes waiting here whose slots the snapshot covered: their results
        # are in its session table.
        for session, seq in list(self._writes):
            cached = self.store.cached_result(session, seq)
            if cached is not None:
                self._finish_write(cached)
        # Registrations the snapshot covered are lost with their ids: those
        # clients register again (wasting a session, nothing worse).
        self._fail_registrations("a snapshot was installed before the registration applied; retry")
        self._release_index_waiters()

    def _moves_forward(self, got: FetchedSnapshot) -> bool:
        """Whether a fetched snapshot is ahead of the store: a stale copy must never take it back."""
        return got.applied_index > self.store.applied_index

    def _membership_applied(self, slot: Slot, membership: Membership) -> None:
        self.observer.membership_applied(slot, membership)
        done = [answer for wanted, answer in self._changes if wanted == membership]
        self._changes = [(wanted, answer) for wanted, answer in self._changes if wanted != membership]
        for answer in done:
            answer(None)

    def _finish_write(self, result: Result) -> None:
        # Apply reports a result for every client write it meets, skipped
        # copies included, so each waiter is answered when its slot applies.
        for answer in self._writes.pop((result.session, result.seq), ()):
            answer(_answer(result))

    # ---------------------------------------------------- cluster versions

    def _maybe_raise_version(self) -> None:
        """As leader: propose a raise once every member reported it can run more than the cluster does.

        At most one raise is pending at a time; it is dropped when it
        applies, when leadership is lost, or when it did not apply within
        ``VERSION_RAISE_RETRY_SECONDS`` (then proposed again).
        """
        now = self._now()
        current = self.store.cluster_version
        if self._raise_pending is not None:
            version, since = self._raise_pending
            if version > current and now - since < limits.VERSION_RAISE_RETRY_SECONDS:
                return
            self._raise_pending = None
        target = self.versions.raise_to(self.core.membership_ids, self.core.id, self.max_cluster_version, current, now)
        if target is None:
            return
        if self.core.propose(logcommand.raise_cluster_version(target, self.core.id)):
            self._raise_pending = (target, now)
            log.info("every member runs cluster version %d; raising the cluster version from %d", target, current)

    def _version_raised(self, raised: VersionRaised) -> None:
        if self._raise_pending is not None and self._raise_pending[0] <= raised.version:
            self._raise_pending = None
        self.observer.cluster_version_applied(raised.slot, raised.version)

    def _finish_registration(self, registration: Registration) -> None:
        if registration.proposer != self.core.id:
            return
        answer = self._registrations.pop(registration.nonce, None)
        if answer is not None:
            answer(RegisterAnswer(Status.OK, session_id=registration.session_id))

    def _fail_registrations(self, why: str) -> None:
        registrations, self._registrations = self._registrations, {}
        for answer in registrations.values():
            answer(RegisterAnswer(Status.UNAVAILABLE, error=why))

    def _release_index_waiters(self) -> None:
        applied = self.store.applied_index
        ready = [answer for index, answer in self._index_waiters if index <= applied]
        self._index_waiters = [(index, answer) for index, answer in self._index_waiters if index > applied]
        for answer in ready:
            answer(Status.OK)

    def _fail_pending(self) -> None:
        # Pending writes may or may not be chosen later; pending reads can no
        # longer be confirmed here.
        writes, self._writes = self._writes, {}
        reads, self._reads = self._reads, {}
        for answers in writes.values():
            for answer in answers:
                answer(WriteAnswer(Status.UNKNOWN))
        for read in reads.values():
            read(Status.NOT_LEADER)
        self._fail_registrations("leadership changed before the registration applied; retry")

    def _note_role(self) -> None:
        seen = (self.core.role, self.core.leader)
        if seen != self._seen_role:
            self._seen_role = seen
            self.observer.role_changed(*seen)
