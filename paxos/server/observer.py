"""What the replica reports besides its answers, turned into log lines and counters.

Leadership changes and snapshots are logged (logger "paxos.server"); the
commands per slot, snapshot timings and installs are counted in
``ServerStats``; a peer message the replica or the core refused is counted
and logged once per interval with the other refusals.  A configuration
applied, or installed with a snapshot, is handed on: the composition root
follows it with the address book, the peer links and this server's standing.
A cluster version raised is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from paxos.common.identity import format_id
from paxos.consensus.core import Node, Role
from paxos.consensus.membership import Membership
from paxos.consensus.messages import Message, NodeId, Slot, Value
from paxos.replica import Observer
from paxos.server.addressbook import AddressBook
from paxos.server.refusals import RefusalLog
from paxos.server.stats import ServerStats
from paxos.server.storage import WalStorage

log = logging.getLogger("paxos.server")


class ServerObserver(Observer):
    """What the replica reports, as log lines and counters (see the module docstring)."""

    def __init__(
        self,
        core: Callable[[], Node],
        book: AddressBook,
        stats: ServerStats,
        storage: WalStorage,
        refusals: RefusalLog,
        membership_applied: Callable[[Slot, Membership], None],
    ) -> None:
        """``core``: the replica's core, asked for when a report comes (the replica is made after its observer).

        ``membership_applied`` hears of every configuration applied, and of
        the one a snapshot installed holds.
        """
        self._core = core
        self._book = book
        self._stats = stats
        self._storage = storage
        self._refusals = refusals
        self._membership_applied = membership_applied
        self._leader: NodeId | None = None

    def role_changed(self, role: Role, leader: NodeId | None) -> None:
        ballot = self._core().ballot
        if leader is not None and leader != self._leader:
            self._stats.leader_changes += 1
            self._leader = leader
        commit = self._core().commit_index
        context = {"ballot": str(ballot), "slot": commit}
        if role is Role.LEADER:
            log.info("became leader with ballot %s (commit index %d)", ballot, commit, extra=context)
        elif role is Role.CANDIDATE:
            log.info("no leader heard; running phase 1 with ballot %s", ballot, extra=context)
        elif leader is not None:
            log.info("following %s (ballot %s)", self._book.name_of(leader), ballot, extra=context)
        else:
            log.info("no leader known", extra=context)

    def applying(self, slot: Slot, value: Value) -> None:
        self._stats.slot_commands.observe(len(value))

    def snapshot_frozen(self, index: Slot, seconds: float) -> None:
        self._stats.snapshot_frozen(seconds)

    def snapshot_saved(self, index: Slot) -> None:
        storage = self._storage
        log.info(
            "snapshot at slot %d written (%d bytes in %.3f s; its copy held up the apply loop %.2f ms)",
            index,
            storage.last_snapshot_bytes,
            storage.last_snapshot_seconds,
            self._stats.last_snapshot_freeze_seconds * 1000,
        )

    def membership_applied(self, slot: Slot, membership: Membership) -> None:
        self._membership_applied(slot, membership)

    def cluster_version_applied(self, slot: Slot, version: int) -> None:
        log.info("the cluster runs version %d from slot %d", version, slot, extra={"slot": slot})

    def snapshot_installed(self, index: Slot, peer: NodeId) -> None:
        self._stats.snapshots_installed += 1
        log.info(
            "now at slot %d, from the snapshot of %s; catching up on the log after it",
            index,
            self._book.name_of(peer),
        )
        # The snapshot may hold configurations this server never applied
        # from the log (a member added while it was away): followed as if
        # applied, or it would neither send to nor know such a member.
        self._membership_applied(index, self._core().membership)

    def refused(self, msg: Message, reason: str) -> None:
        member = self._book.members.get(msg.sender)
        sender = member.name if member else f"member {format_id(msg.sender)}"
        self._refusals.note(sender, reason, type(msg).__name__)
