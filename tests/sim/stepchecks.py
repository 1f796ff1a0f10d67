"""Rules checked at every step of a run, where they can break, rather than judged at the end.

* durability: every vote a server sends (a ``Promise``, an ``Accepted``, a
  ``HeartbeatAck``, a ``Reject`` naming its promise, its own ``Prepare``)
  is backed by its disk's durable state when the replica hands it to the
  transport, before the network sees it: a promise at least that high, and
  for an ``Accepted`` an accept record of at least that ballot for that
  slot (or the slot durably chosen, or held by its durable snapshot).  So
  is the ballot of a leader of more than one voter, in its accepts and
  heartbeats: it was elected by promises that came after its prepares.  A
  server that restarts recovers a promise at least as high as any vote it
  sent from that disk, and a promise it sends reports, for every slot the
  prepare asked about and its commit index does not cover, a value accepted
  with a ballot at least as high as any ``Accepted`` it sent for that slot
  from that disk (the acceptor's rule that makes a new leader re-propose a
  value that may have been chosen);
* ballot order: an acceptor never votes for a ballot below one it promised
  before (across restarts, on the same disk); a ballot that a message
  proposes or asserts (``PreVote``, ``Prepare``, ``Accept``, ``Heartbeat``)
  and a leader's ballot name the server itself; no ballot leads twice, nor
  proposes two values for one slot;
* lease reads: when a leader would answer a read under its lease (no quorum
  round), no other server leads with a higher ballot at that instant, and
  its read index covers every slot any server has learned.

A broken rule ends the run with a violation of kind ``durability``,
``ballot-order`` or ``lease``.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from paxos.consensus.messages import (
    NO_BALLOT,
    Accept,
    Accepted,
    Ballot,
    Heartbeat,
    HeartbeatAck,
    Message,
    NodeId,
    Prepare,
    PreVote,
    Promise,
    Reject,
    Slot,
    Value,
)

if TYPE_CHECKING:
    from tests.sim.host import Host
    from tests.sim.run import Simulation


class StepChecks:
    """The rules of ``tests/sim/stepchecks.py``, checked as the run goes."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        # Every ballot that has led, and the server that led with it.
        self.ballots_led: dict[Ballot, NodeId] = {}
        # The value each ballot proposed for each slot.
        self.proposed: dict[tuple[Ballot, Slot], Value] = {}
        # The highest first slot each ballot's prepares asked about.
        self.prepared_from: dict[Ballot, Slot] = {}
        self.lease_reads = 0  # reads answered under a lease, each checked

    # ------------------------------------------------------------- sending

    def sending(self, host: Host, messages: list[tuple[NodeId, Message]]) -> None:
        """``host``'s replica hands ``messages`` to its transport: each vote must be durable by now."""
        disk = host.disk
        durable = disk.durable
        for _, msg in messages:
            kind = type(msg)
            if kind is Accept or kind is Heartbeat or kind is PreVote:
                ballot = msg.ballot  # type: ignore[union-attr]
                if ballot.node != host.id:
                    self.violation("ballot-order", host, f"sends {kind.__name__} with ballot {ballot} of another")
                if kind is not PreVote and durable.promised < ballot and self.voters(host) > 1:
                    # A leader of more than one voter heard promises only
                    # after its prepares went out, so after its own promise
                    # was durable.  (A lone voter leads at once, and counts
                    # its own accepts, which carry its promise, once durable.)
                    self.not_durable(host, msg, f"its durable promise is {durable.promised}")
                if kind is Accept:
                    assert isinstance(msg, Accept)
                    proposed = self.proposed.setdefault((ballot, msg.slot), msg.value)
                    if proposed != msg.value:
                        self.violation("ballot-order", host, f"proposes a second value for slot {msg.slot} in {ballot}")
                continue
            if kind is Accepted:
                assert isinstance(msg, Accepted)
                ballot = msg.ballot
                entry = durable.accepted.get(msg.slot)
                snapshot = disk.snapshot
                covered = (
                    (entry is not None and entry[0] >= ballot)
                    or msg.slot <= durable.commit_index
                    or msg.slot in durable.chosen
                    or (snapshot is not None and snapshot.applied_index >= msg.slot)
                )
                if not covered:
                    held = f"ballot {entry[0]}" if entry is not None else "nothing"
                    self.not_durable(host, msg, f"its disk durably holds {held} for slot {msg.slot}")
                if ballot > disk.votes.get(msg.slot, NO_BALLOT):
                    disk.votes[msg.slot] = ballot
            elif kind is Promise or kind is HeartbeatAck or kind is Prepare:
                ballot = msg.ballot  # type: ignore[union-attr]
                if kind is Prepare:
                    assert isinstance(msg, Prepare)
                    if ballot.node != host.id:
                        self.violation("ballot-order", host, f"sends Prepare with ballot {ballot} of another")
                    self.prepared_from[ballot] = max(self.prepared_from.get(ballot, 0), msg.from_slot)
                if kind is Promise:
                    assert isinstance(msg, Promise)
                    self.promise_keeps_votes(host, msg)
                if durable.promised < ballot:
                    self.not_durable(host, msg, f"its durable promise is {durable.promised}")
            elif kind is Reject:
                assert isinstance(msg, Reject)
                ballot = msg.promised
                if durable.promised < ballot:
                    self.not_durable(host, msg, f"its durable promise is {durable.promised}")
            else:
                continue
            # A vote: never below a promise this disk's server made before.
            if kind is not Reject and ballot < disk.voted:
                self.violation(
                    "ballot-order",
                    host,
                    f"sends {kind.__name__} for ballot {ballot} after promising {disk.voted}",
                )
            if ballot > disk.voted:
                disk.voted = ballot

    def promise_keeps_votes(self, host: Host, promise: Promise) -> None:
        """A promise reports every vote its disk sent for a slot the prepare asked about, unless known chosen."""
        asked = self.prepared_from.get(promise.ballot)
        core = host.core
        if asked is None or core is None:
            return  # a forged prepare's: no honest candidate waits for it
        disk = host.disk
        # Slots up to the commit index (and the snapshot's, which it covers)
        # are chosen, and the promise's commit index tells the candidate so.
        known = max(promise.commit_index, core.compacted)
        for slot in [s for s in disk.votes if s <= known]:
            del disk.votes[slot]
        reported = {entry.slot: entry.ballot for entry in promise.accepted}
        for slot, ballot in sorted(disk.votes.items()):
            if slot < asked:
                continue
            if reported.get(slot, NO_BALLOT) < ballot:
                self.violation(
                    "durability",
                    host,
                    f"promises {promise.ballot} without its vote for slot {slot} in {ballot}, sent from this "
                    f"disk (it reports {reported.get(slot, 'nothing')} there; commit index {promise.commit_index})",
                )
                return

    @staticmethod
    def voters(host: Host) -> int:
        core = host.core
        return len(core.voters) if core is not None else 0

    def not_durable(self, host: Host, msg: Message, why: str) -> None:
        self.violation("durability", host, f"sends {type(msg).__name__} {msg} before it is durable ({why})")

    # ------------------------------------------------------------ lifecycle

    def started(self, host: Host) -> None:
        """``host`` recovered from its disk: no vote it sent from that disk is forgotten."""
        core = host.core
        assert core is not None
        if core.promised < host.disk.voted:
            self.violation(
                "durability",
                host,
                f"restarts with promise {core.promised} after it voted for {host.disk.voted} on this disk",
            )

    def leads(self, host: Host) -> None:
        """``host`` became leader: with a ballot of its own that never led before."""
        core = host.core
        assert core is not None
        ballot = core.ballot
        if ballot.node != host.id:
            self.violation("ballot-order", host, f"leads with ballot {ballot} of another member")
        before = self.ballots_led.get(ballot)
        if before is not None:
            self.violation("ballot-order", host, f"leads with ballot {ballot}, which n{before} led with before")
        self.ballots_led[ballot] = host.id

    # --------------------------------------------------------------- reads

    def lease_read(self, host: Host, read_index: int) -> None:
        """``host`` answers a read under its lease with ``read_index``: it must still be the only leader."""
        self.lease_reads += 1
        core = host.core
        assert core is not None
        mine = core.ballot
        # The slot that chose this leader's configuration (0: the first one).
        # A rival that has not learned it leads an older configuration: before
        # it can touch a slot this configuration decides it must re-propose
        # the change in that slot (a quorum of its own configuration holds
        # it), and then campaign again among this configuration's voters,
        # which keep this lease.
        configurations = self.sim.checks.configuration_slots
        known = bisect.bisect_right(configurations, core.commit_index)
        since = configurations[known - 1] if known else 0
        for other in self.sim.hosts:
            rival = other.core
            if other is host or not other.up or rival is None or not rival.is_leader():
                continue
            if rival.commit_index < since:
                continue
            if rival.ballot > mine:
                self.violation(
                    "lease",
                    host,
                    f"answers a read under its lease with ballot {mine} while n{other.id} leads with {rival.ballot}",
                )
        top = max(self.sim.checks.chosen, default=0)
        if read_index < top:
            self.violation(
                "lease",
                host,
                f"answers a read under its lease at read index {read_index}, but slot {top} is chosen",
            )

    def violation(self, kind: str, host: Host, text: str) -> None:
        self.sim.violation(kind, f"n{host.id} {text}")
