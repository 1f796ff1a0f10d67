"""The consensus core's vocabulary: its errors, roles and configuration, and what a leader tracks.

paxos/consensus/core.py's ``Node`` holds these; its role sections
(paxos/consensus/learner.py, paxos/consensus/invariants.py) read them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from enum import Enum

from paxos.common import limits
from paxos.consensus.membership import NO_CONFIGURATIONS, ConfigurationFormat, Membership
from paxos.consensus.messages import Ballot, NodeId, Slot, Value
from paxos.consensus.planted import PlantedBug
from paxos.consensus.quorum import MajorityConfig


class HostContractError(RuntimeError):
    """The host broke the ready/advance protocol: a bug in the host, never input."""


class RecoveryError(ValueError):
    """The log and the snapshot a node starts from do not fit together (a slot is missing)."""


class InvariantError(AssertionError):
    """An invariant of the core does not hold after a step (``Config.check_invariants``): a bug here, never input."""


class Role(Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@dataclass(frozen=True)
class Config:
    heartbeat_ticks: int = limits.HEARTBEAT_TICKS
    election_ticks_min: int = limits.ELECTION_TICKS_MIN
    election_ticks_max: int = limits.ELECTION_TICKS_MAX
    leader_quorum_timeout_ticks: int = limits.LEADER_QUORUM_TIMEOUT_TICKS
    retransmit_ticks: int = limits.RETRANSMIT_TICKS
    lease_ticks: int = limits.LEASE_TICKS
    max_in_flight: int = limits.MAX_IN_FLIGHT_SLOTS
    max_batch_commands: int = limits.MAX_BATCH_COMMANDS
    max_batch_bytes: int = limits.MAX_BATCH_BYTES
    max_pending_commands: int = limits.MAX_PENDING_COMMANDS
    max_pending_reads: int = limits.MAX_PENDING_READS
    max_catchup_entries: int = limits.MAX_CATCHUP_ENTRIES
    max_catchup_bytes: int = limits.MAX_CATCHUP_BYTES
    # Deliberate mistakes, for proving that the simulator catches them.
    # Never set outside tests (paxos/consensus/planted.py).
    planted_bugs: frozenset[PlantedBug] = frozenset()
    # How configurations are written in slots (the log's: paxos/kv/configuration.py).
    configurations: ConfigurationFormat = NO_CONFIGURATIONS
    # Check the core's invariants after every step (see Node._check_invariants).
    # On in tests and the simulator (which takes 10-20% longer for it); off
    # by default, because each time the commit index moves they walk every
    # chosen slot the core holds (up to a snapshot's worth: tens of thousands).
    check_invariants: bool = False


# Every bug the core can be told to plant (see paxos/consensus/planted.py).
PLANTABLE_BUGS = frozenset(PlantedBug)


class LearnersCounted(MajorityConfig):
    """The planted bug ``learner_votes``: learners' acknowledgements count."""

    __slots__ = ("members",)

    def __init__(self, voters: Iterable[NodeId], members: Iterable[NodeId]) -> None:
        super().__init__(voters)
        self.members = frozenset(members)

    def is_quorum(self, members: Collection[NodeId]) -> bool:
        return sum(1 for m in members if m in self.members) >= self.quorum_size


@dataclass
class Proposal:
    value: Value
    acks: set[NodeId]
    sent_at: int


@dataclass
class PendingRead:
    read_id: int
    read_index: Slot
    need_seq: int


@dataclass
class LeaderState:
    ballot: Ballot
    next_slot: Slot
    in_flight: dict[Slot, Proposal] = field(default_factory=dict)
    heartbeat_seq: int = 0
    confirmed_seq: int = 0
    # When each unconfirmed heartbeat went out; the lease runs from there.
    heartbeat_sent: dict[int, int] = field(default_factory=dict)
    lease_until: int = 0
    started: int = 0  # when this ballot began to lead
    acked_seq: dict[NodeId, int] = field(default_factory=dict)
    # Each member's commit index, as its last heartbeat ack reported it.
    peer_commit: dict[NodeId, Slot] = field(default_factory=dict)
    last_heard: dict[NodeId, int] = field(default_factory=dict)
    reads: deque[PendingRead] = field(default_factory=deque)
    # Reads confirmed by a quorum round, waiting for the commit index.
    confirmed_reads: deque[PendingRead] = field(default_factory=deque)
    read_round_wanted: bool = False
    # Membership changes (docs/membership.md).  The slot of the change this
    # ballot proposed or re-proposed: nothing is proposed above it, and no
    # read is served, until it is chosen; then the leader starts a new
    # ballot under the new configuration.
    change_slot: Slot | None = None
    # A change asked for and not yet proposed: it waits until a value of
    # this ballot is chosen and nothing else is in flight.
    change_wanted: Membership | None = None
    own_value_chosen: bool = False
    # The first slot this ballot proposed afresh; below it, it re-proposed
    # what its promises reported (any number of slots, all at once).
    fresh_from: Slot = 0
