"""Plain data the consensus core consumes and produces.

Peer messages, write-ahead-log records and the output bundle of the core.
They are immutable, hashable and free of any I/O, so the simulator can copy,
reorder and duplicate them freely; ``paxos.server.codec`` maps them to protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import assert_never

# A member's permanent id (paxos/common/identity.py); never its place in a file.
NodeId = int
Slot = int
# A log value is a batch of encoded client commands; the empty batch is a no-op.
Value = tuple[bytes, ...]
NOOP: Value = ()


@dataclass(frozen=True, order=True, slots=True)
class Ballot:
    """Proposal number: a higher round wins, the proposer's member id breaks ties."""

    round: int
    node: NodeId

    def __str__(self) -> str:
        return f"{self.round}.{self.node:x}"


# Real ballots have round >= 1, so this is lower than all of them.
NO_BALLOT = Ballot(0, 0)


@dataclass(frozen=True, slots=True)
class AcceptedEntry:
    slot: Slot
    ballot: Ballot
    value: Value


@dataclass(frozen=True, slots=True)
class PreVote:
    """Would you promise ``ballot``?  Asked before phase 1 and changes nothing,
    so a server cut off from the leader cannot disrupt it when it returns."""

    sender: NodeId
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class PreVoteReply:
    sender: NodeId
    ballot: Ballot
    granted: bool


@dataclass(frozen=True, slots=True)
class Prepare:
    sender: NodeId
    ballot: Ballot
    from_slot: Slot


@dataclass(frozen=True, slots=True)
class Promise:
    sender: NodeId
    ballot: Ballot
    commit_index: Slot
    accepted: tuple[AcceptedEntry, ...]


@dataclass(frozen=True, slots=True)
class Accept:
    sender: NodeId
    ballot: Ballot
    slot: Slot
    value: Value
    commit_index: Slot


@dataclass(frozen=True, slots=True)
class Accepted:
    sender: NodeId
    ballot: Ballot
    slot: Slot


@dataclass(frozen=True, slots=True)
class Reject:
    sender: NodeId
    promised: Ballot
    slot: Slot


@dataclass(frozen=True, slots=True)
class Heartbeat:
    sender: NodeId
    ballot: Ballot
    commit_index: Slot
    seq: int


@dataclass(frozen=True, slots=True)
class HeartbeatAck:
    sender: NodeId
    ballot: Ballot
    seq: int
    commit_index: Slot


@dataclass(frozen=True, slots=True)
class CatchupRequest:
    sender: NodeId
    from_slot: Slot


@dataclass(frozen=True, slots=True)
class CatchupReply:
    sender: NodeId
    # Chosen values of consecutive slots starting at first_slot.
    first_slot: Slot
    values: tuple[Value, ...]
    commit_index: Slot
    # Nonzero: the sender has forgotten every slot up to here (they are in
    # its snapshot), so it sends no values; fetch its snapshot instead.
    compacted: Slot = 0


Message = (
    PreVote
    | PreVoteReply
    | Prepare
    | Promise
    | Accept
    | Accepted
    | Reject
    | Heartbeat
    | HeartbeatAck
    | CatchupRequest
    | CatchupReply
)


# --- records the core asks its host to make durable -----------------------


@dataclass(frozen=True, slots=True)
class PromiseRecord:
    ballot: Ballot


@dataclass(frozen=True, slots=True)
class AcceptRecord:
    slot: Slot
    ballot: Ballot
    value: Value


@dataclass(frozen=True, slots=True)
class ChosenRecord:
    """A chosen value learned from a peer rather than accepted here."""

    slot: Slot
    value: Value


@dataclass(frozen=True, slots=True)
class CommitRecord:
    """Every slot up to ``index`` is chosen and its value is in the log."""

    index: Slot


Record = PromiseRecord | AcceptRecord | ChosenRecord | CommitRecord


@dataclass(slots=True)
class DurableState:
    """What a server recovers from its log after a restart."""

    promised: Ballot = NO_BALLOT
    accepted: dict[Slot, tuple[Ballot, Value]] = field(default_factory=dict)
    chosen: dict[Slot, Value] = field(default_factory=dict)
    commit_index: Slot = 0

    def apply(self, record: Record) -> None:
        match record:
            case PromiseRecord():
                self.promised = max(self.promised, record.ballot)
            case AcceptRecord():
                self.accepted[record.slot] = (record.ballot, record.value)
                self.promised = max(self.promised, record.ballot)
            case ChosenRecord():
                self.chosen[record.slot] = record.value
            case CommitRecord():
                self.commit_index = max(self.commit_index, record.index)
            case _:
                assert_never(record)


@dataclass(slots=True)
class Ready:
    """One bundle of work for the host, in the order it must be done.

    1. send ``early`` at once: the leader's accepts, which may travel while
       its own copy is being written (it counts its own vote only later);
    2. append ``persist`` to the log; if ``must_sync()``, fsync everything
       appended so far;
    3. only then send ``messages``, apply ``committed`` in order and answer
       ``reads`` (each read may be answered once the applied index reaches
       its read index).

    then hand the bundle back with ``Node.advance``; the core refuses to
    hand out another before that (``HostContractError``).
    Records left unsynced by step 2 (commit indexes and values learned from
    others, in a bundle that sends nothing) become durable with the next
    fsync; a crash before then loses only what the cluster knows anyway.
    """

    early: list[tuple[NodeId, Message]] = field(default_factory=list)
    persist: list[Record] = field(default_factory=list)
    messages: list[tuple[NodeId, Message]] = field(default_factory=list)
    committed: list[tuple[Slot, Value]] = field(default_factory=list)
    reads: list[tuple[int, Slot]] = field(default_factory=list)
    # Leadership was lost: pending writes may or may not be chosen later and
    # pending reads can no longer be confirmed here.
    lost_leadership: bool = False
    # A peer that has compacted the slots this server lacks: fetch its
    # snapshot, then call Node.install_snapshot or Node.snapshot_failed.
    snapshot_wanted: NodeId | None = None

    def must_sync(self) -> bool:
        """Whether what was appended must be durable before step 3.

        Promises and accepted values must be durable before anything else
        happens; any message may carry a commit index or a promise that the
        receiver relies on, so everything before it must be durable too.
        """
        return bool(self.messages) or any(isinstance(r, PromiseRecord | AcceptRecord) for r in self.persist)

    def empty(self) -> bool:
        return not (
            self.early
            or self.persist
            or self.messages
            or self.committed
            or self.reads
            or self.lost_leadership
            or self.snapshot_wanted is not None
        )
