"""What every step of the consensus core keeps true, checked after each one in tests and the simulator.

A section of ``Node`` (paxos/consensus/core.py) kept in a file of its own:
``Node`` inherits it, and the attributes declared here are ``Node``'s.
"""

from __future__ import annotations

from paxos.consensus.membership import Membership
from paxos.consensus.messages import Ballot, NodeId, Slot, Value
from paxos.consensus.quorum import MajorityConfig
from paxos.consensus.state import Config, InvariantError, LeaderState, Role


class InvariantChecks:
    """``Node``'s invariants.

    Each check returns what is broken, or None.  They run after every step
    (Config.check_invariants), so the common case (nothing broken) uses
    the cheapest test there is; the message is only built on failure.
    """

    id: NodeId
    config: Config
    role: Role
    leader: NodeId | None
    promised: Ballot
    membership: Membership
    voters: MajorityConfig
    accepted: dict[Slot, tuple[Ballot, Value]]
    chosen: dict[Slot, Value]
    compacted: Slot
    commit_index: Slot
    _emitted_index: Slot
    _lead: LeaderState | None
    _max_round_seen: int
    _candidate_ballot: Ballot | None
    _checked_log_shape: tuple[Slot, Slot, int] | None

    def _check_invariants(self, step: str) -> None:
        """Raise InvariantError unless what every step keeps true holds.

        Only what the core's own steps guarantee whatever its peers send, so
        a failure is a bug here (or a planted one), never hostile input.
        """
        lead = self._lead
        broken = (
            self._log_broken() or self._promises_broken() or (self._leader_broken(lead) if lead is not None else None)
        )
        if broken is not None:
            raise InvariantError(f"node {self.id} after {step}: {broken}")

    def _log_broken(self) -> str | None:
        compacted, applied, commit = self.compacted, self._emitted_index, self.commit_index
        # A snapshot holds what is compacted, the host applied what was
        # emitted, and every slot up to the commit index is chosen.
        if not compacted <= applied <= commit:
            return f"compacted {compacted}, applied {applied} and commit index {commit} out of order"
        # A chosen slot lives in ``chosen`` only: a promise reports accepted values above the commit index.
        if self.accepted and min(self.accepted) <= commit:
            return f"slot {min(self.accepted)} at or below the commit index {commit} is still held as accepted"
        # Chosen values are kept from the snapshot on, to apply and to serve
        # catch-up.  Only learning and compaction change which slots are held,
        # and each moves the commit index, the compaction point or the count:
        # the slots are walked again only when one of those moved.
        chosen = self.chosen
        shape = (compacted, commit, len(chosen))
        if shape == self._checked_log_shape:
            return None
        if not all(map(chosen.__contains__, range(compacted + 1, commit + 1))):
            missing = [slot for slot in range(compacted + 1, commit + 1) if slot not in chosen]
            return f"slots {missing[:5]} at or below the commit index {commit} have no chosen value"
        if chosen and min(chosen) <= compacted:
            return f"slot {min(chosen)} is compacted (up to {compacted}) but still held"
        self._checked_log_shape = shape
        return None

    def _promises_broken(self) -> str | None:
        promised = self.promised
        # An acceptor promises a ballot before (or as) it accepts in it.
        # (Rounds and ids compared inline: this runs after every step.)
        top_round, top_node = promised.round, promised.node
        for slot, (ballot, _) in self.accepted.items():
            if ballot.round > top_round or (ballot.round == top_round and ballot.node > top_node):
                return f"slot {slot} accepted in ballot {ballot}, above the promised ballot {promised}"
        if self._max_round_seen < top_round:
            return f"promised round {top_round} above the highest round seen {self._max_round_seen}"
        leading = self._lead is not None
        if (self.role is Role.LEADER) != leading or (self.leader == self.id) != leading:
            return f"role {self.role.value} and leader {self.leader} disagree on whether this server leads"
        # A candidate promised its own ballot, and a higher promise ends its candidacy.
        candidate = self._candidate_ballot
        if (self.role is Role.CANDIDATE) != (candidate is not None):
            return f"role {self.role.value} with candidate ballot {candidate}"
        if candidate is not None and candidate != promised:
            return f"candidate ballot {candidate} is not the promised ballot {promised}"
        return None

    def _leader_broken(self, lead: LeaderState) -> str | None:
        # A higher promise makes a leader step down.
        if lead.ballot != self.promised:
            return f"leader ballot {lead.ballot} is not the promised ballot {self.promised}"
        fresh = 0
        for slot, proposal in lead.in_flight.items():
            if not self.commit_index < slot < lead.next_slot:
                return f"slot {slot} in flight outside ({self.commit_index}, {lead.next_slot})"
            if self.accepted.get(slot) != (lead.ballot, proposal.value):
                return f"slot {slot} in flight is not what this leader accepted in its ballot {lead.ballot}"
            if slot in self.chosen and self.chosen[slot] != proposal.value:
                return f"slot {slot} in flight with a value other than the one learned chosen there"
            # Nothing is proposed above an unfinished membership change.
            if lead.change_slot is not None and slot > lead.change_slot:
                return f"slot {slot} in flight above the unfinished membership change in slot {lead.change_slot}"
            fresh += slot >= lead.fresh_from
        # Fresh proposals wait while the pipeline is full.
        if fresh and len(lead.in_flight) > self.config.max_in_flight:
            limit = self.config.max_in_flight
            return f"{len(lead.in_flight)} slots in flight, {fresh} of them fresh: more than {limit}"
        return None

    def _quorum_broken(self) -> str | None:
        """Checked where the configuration is set: learners never count towards a quorum."""
        voters = sorted(self.membership.voters)
        if self.voters.voters != self.membership.voters:
            return f"quorums counted over {sorted(self.voters.voters)}, not the voters {voters}"
        # Every learner with a voter short of a majority is no quorum.
        learners = sorted(self.membership.learners)
        if learners and self.voters.is_quorum([*voters[: len(voters) // 2], *learners]):
            return f"learners {learners} count towards a quorum"
        return None
