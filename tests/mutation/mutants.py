"""The semantic mutants: one believable bug each, that the tests must catch.

Each mutant is a small edit of the shipped code (one or two lines, with
enough context around them that the original text occurs exactly once in its
file) that breaks one rule the README or the module docstrings promise.  None
of them is a syntax or type error or fails at import, and none is
equivalent: each changes what a cluster does, at least in some run.

``tests/checks/test_mutants.py`` checks, in every CI run, that each original
text still occurs exactly once, so a change to the code that moves a mutant's
target fails there rather than silently at mutation time; fix the text here
when it does (the mutant should still make the same mistake).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    replacement: str
    rule: str  # the rule it breaks, in one line


CORE = "paxos/consensus/core.py"
LEARNER = "paxos/consensus/learner.py"
QUORUM = "paxos/consensus/quorum.py"
MEMBERSHIP = "paxos/consensus/membership.py"
REPLICA = "paxos/replica.py"
STATEMACHINE = "paxos/kv/statemachine.py"
INCARNATION = "paxos/incarnation.py"
SNAPSHOT = "paxos/storage/snapshot.py"


MUTANTS: tuple[Mutant, ...] = (
    # ------------------------------------------------------- durability, acceptor
    Mutant(
        "replica_votes_before_sync",
        REPLICA,
        "                self._waiting = ready\n                self.storage.sync(self._synced)",
        "                self._waiting = ready\n                self.transport.send(ready.messages)\n"
        "                ready.messages.clear()\n                self.storage.sync(self._synced)",
        "promises and accepted values are fsync'd before any reply that depends on them",
    ),
    Mutant(
        "promise_not_persisted",
        CORE,
        "            self.promised = ballot\n            self._out.persist.append(PromiseRecord(ballot))",
        "            self.promised = ballot",
        "a promise is durable before the Promise that reports it is sent",
    ),
    Mutant(
        "accept_not_persisted",
        CORE,
        "            self._out.persist.append(AcceptRecord(msg.slot, msg.ballot, msg.value))",
        "            pass",
        "an accepted value is durable before the Accepted that reports it is sent",
    ),
    Mutant(
        "leader_counts_own_vote_before_persist",
        CORE,
        "lead.in_flight[slot] = Proposal(value, set(), self.now)",
        "lead.in_flight[slot] = Proposal(value, {self.id}, self.now)",
        "the leader counts its own vote once its write of the slot is durable",
    ),
    Mutant(
        "accept_compares_rounds_only",
        CORE,
        "if msg.ballot < self.promised and PlantedBug",
        "if msg.ballot.round < self.promised.round and PlantedBug",
        "an acceptor refuses an accept below its promise (ballots are (round, member id))",
    ),
    Mutant(
        "prepare_compares_rounds_only",
        CORE,
        "        if msg.ballot < self.promised:\n"
        "            self._send(msg.sender, Reject(self.id, self.promised, 0))\n"
        "            return\n        self._promise(msg.ballot)",
        "        if msg.ballot.round < self.promised.round:\n"
        "            self._send(msg.sender, Reject(self.id, self.promised, 0))\n"
        "            return\n        self._promise(msg.ballot)",
        "an acceptor refuses a prepare below its promise (ballots are (round, member id))",
    ),
    Mutant(
        "heartbeat_ack_despite_higher_promise",
        CORE,
        "        if msg.ballot < self.promised:\n"
        "            self._send(msg.sender, Reject(self.id, self.promised, 0))\n"
        "            return\n        self._follow(msg.sender, msg.ballot)",
        "        self._follow(msg.sender, msg.ballot)",
        "a server that promised a higher ballot no longer acknowledges the old leader's heartbeats",
    ),
    # ------------------------------------------------------------ proposer
    Mutant(
        "repropose_lowest_ballot",
        CORE,
        "entry.ballot > best[entry.slot][0]",
        "entry.ballot < best[entry.slot][0]",
        "a new leader re-proposes the highest-ballot value each promise reported",
    ),
    Mutant(
        "promise_omits_first_open_slot",
        CORE,
        "            if slot >= first\n",
        "            if slot > first\n",
        "a promise reports every value accepted above the commit index",
    ),
    Mutant(
        "gaps_not_filled",
        CORE,
        "        for slot in range(max(known_chosen, self.commit_index) + 1, top + 1):",
        "        for slot in sorted(s for s in best if s > max(known_chosen, self.commit_index)):",
        "a new leader fills the gaps between recovered slots with no-ops",
    ),
    Mutant(
        "new_commands_over_recovered_slots",
        CORE,
        "LeaderState(ballot=ballot, next_slot=top + 1, started=self.now)",
        "LeaderState(ballot=ballot, next_slot=known_chosen + 1, started=self.now)",
        "a new leader proposes new commands only above every slot its promises reported",
    ),
    # ------------------------------------------------------------- quorums
    Mutant(
        "quorum_wrong_for_even",
        QUORUM,
        "len(self.voters) // 2 + 1",
        "(len(self.voters) + 1) // 2",
        "a quorum is a strict majority of the voters",
    ),
    Mutant(
        "quorum_value_one_short",
        QUORUM,
        "return values[self.quorum_size - 1]",
        "return values[max(0, self.quorum_size - 2)]",
        "a read index waits for a quorum round of heartbeats started after the read arrived",
    ),
    Mutant(
        "quorum_counts_non_voters",
        QUORUM,
        "return sum(1 for m in members if m in self.voters) >= self.quorum_size",
        "return len(members) >= self.quorum_size",
        "only voters count towards a quorum; a learner's acknowledgements never do",
    ),
    Mutant(
        "learners_vote",
        CORE,
        "self.voters = MajorityConfig(membership.voters)",
        "self.voters = MajorityConfig(membership.ids)",
        "a learner receives the log but never votes until its promotion is chosen",
    ),
    # ------------------------------------------------------------- learner
    Mutant(
        "accepted_of_another_ballot_counted",
        CORE,
        "        if lead is None or msg.ballot != lead.ballot:\n            return\n"
        "        lead.last_heard[msg.sender] = self.now\n        proposal",
        "        if lead is None:\n            return\n"
        "        lead.last_heard[msg.sender] = self.now\n        proposal",
        "a slot is chosen when a quorum has accepted it in the same ballot",
    ),
    Mutant(
        "commit_learned_from_older_ballot",
        LEARNER,
        "if entry is None or entry[0] != ballot:",
        "if entry is None:",
        "a follower takes a slot as chosen from the leader's commit index only if it accepted it in that ballot",
    ),
    Mutant(
        "catchup_values_shifted",
        LEARNER,
        "            slot = msg.first_slot + offset\n",
        "            slot = msg.first_slot + offset + 1\n",
        "catch-up learns each chosen value in its own slot",
    ),
    Mutant(
        "unsolicited_catchup_accepted",
        LEARNER,
        "        if asked != self._catchup_asked:\n            if asked in self._catchup_asked_before:",
        "        if False:\n            if asked in self._catchup_asked_before:",
        "a catch-up reply that answers no request this server made is refused",
    ),
    # ------------------------------------------------------- reads and leases
    Mutant(
        "read_index_is_commit_index",
        CORE,
        "        read_index = lead.next_slot - 1\n",
        "        read_index = self.commit_index\n",
        "the read index is the highest slot the leader has proposed, not only what it knows chosen",
    ),
    Mutant(
        "lease_from_ack_arrival",
        CORE,
        "sent + self._lease_ticks",
        "self.now + self._lease_ticks",
        "a lease runs from when the confirmed heartbeat was sent, not from when its acks arrived",
    ),
    Mutant(
        "lease_always_held",
        CORE,
        "return self.now + 1 < lead.lease_until",
        "return True",
        "a leader answers reads without a round trip only while a quorum-confirmed lease holds",
    ),
    Mutant(
        "no_leader_stickiness",
        CORE,
        "and (self._lead is not None or self.now - self._last_leader_contact < window)",
        "and self._lead is not None",
        "a follower that heard from its leader within the lease window refuses to pre-vote for a rival",
    ),
    Mutant(
        "prepare_ignores_lease",
        CORE,
        "        if self._lease_ticks and self._leader_is_alive(msg.sender):\n            return  # our leader",
        "        if False:\n            return  # our leader",
        "a follower that heard from its leader within the lease window refuses to promise a rival",
    ),
    Mutant(
        "restart_forgets_lease_window",
        CORE,
        "if self._lease_ticks and self.now < window and candidate != self.id:",
        "if False:",
        "a server refuses to vote for a rival in its first lease window after starting",
    ),
    # ---------------------------------------------------------- membership
    Mutant(
        "change_two_steps_allowed",
        MEMBERSHIP,
        "if len(added) + len(removed) + len(changed) != 1:",
        "if not 1 <= len(added) + len(removed) + len(changed) <= 2:",
        "a membership change adds, promotes or removes exactly one member",
    ),
    Mutant(
        "join_as_voter_allowed",
        MEMBERSHIP,
        '            if member.voter:\n                return f"{member.name} must join',
        '            if False:\n                return f"{member.name} must join',
        "a new server joins as a learner and is promoted once it has caught up",
    ),
    Mutant(
        "commands_above_unfinished_change",
        CORE,
        "        if lead.change_slot is not None and PlantedBug.TWO_CHANGES_IN_FLIGHT not in bugs:\n"
        "            return  # nothing above an unfinished change",
        "        if False:\n            return  # nothing above an unfinished change",
        "nothing is proposed above a configuration change until it is chosen",
    ),
    Mutant(
        "change_before_own_value_chosen",
        CORE,
        "if (lead.own_value_chosen and drained) or hasty:",
        "if drained or hasty:",
        "a new leader proposes a change only once a value of its own ballot is chosen",
    ),
    Mutant(
        "promotion_lag_unchecked",
        CORE,
        "if lag > limits.PROMOTION_LAG_SLOTS and checked:",
        "if lag > 1000 * limits.PROMOTION_LAG_SLOTS and checked:",
        "a learner more than PROMOTION_LAG_SLOTS behind the leader is not promoted",
    ),
    # ------------------------------------------------- snapshots, compaction
    Mutant(
        "snapshot_install_forgets_accepted",
        CORE,
        "for slot in [s for s in self.accepted if s <= index]:",
        "for slot in list(self.accepted):",
        "installing a snapshot forgets only the slots it covers; votes above it are kept",
    ),
    Mutant(
        "compact_after_failed_snapshot",
        REPLICA,
        "        if not ok:\n            return  # the storage said why",
        "        if False:\n            return  # the storage said why",
        "the log below a slot is forgotten only once a durable snapshot covers it",
    ),
    Mutant(
        "install_older_snapshot",
        REPLICA,
        "return got.applied_index > self.store.applied_index",
        "return got.applied_index > 0",
        "a fetched snapshot never takes a replica's state back",
    ),
    Mutant(
        "snapshot_files_oldest_first",
        SNAPSHOT,
        "    return sorted(found, reverse=True)",
        "    return sorted(found)",
        "a server starts from its newest snapshot and prunes the oldest",
    ),
    Mutant(
        "snapshot_session_order",
        STATEMACHINE,
        "for session_key, session in sorted(self.sessions.items(), key=lambda item: item[1].touched):",
        "for session_key, session in self.sessions.items():",
        "sessions are evicted least recently used first, at the same point of the log on every replica",
    ),
    # ------------------------------------------------------------- identity
    Mutant(
        "incarnation_mismatch_let_through",
        REPLICA,
        '                self.observer.refused(msg, "sender\'s data dir is not the one it was first heard from")\n'
        "                return\n",
        '                self.observer.refused(msg, "sender\'s data dir is not the one it was first heard from")\n',
        "messages from a data dir other than the one first heard from are refused",
    ),
    Mutant(
        "incarnation_book_knows_any",
        INCARNATION,
        "return Verdict.KNOWN if known == incarnation else Verdict.REFUSED",
        "return Verdict.KNOWN",
        "a member's incarnation, once recorded, is the only one accepted from it",
    ),
    Mutant(
        "founding_with_half_fresh",
        INCARNATION,
        "if fresh > len(names) // 2:",
        "if fresh >= len(names) // 2:",
        "a server founds on fresh answers only from a majority of the hostfile, not counting itself",
    ),
    # ------------------------------------------------- exactly-once sessions
    Mutant(
        "retry_applied_twice",
        STATEMACHINE,
        "        if cached is not None:\n            return cached\n        if write.seq < session.first_unacked:",
        "        if write.seq < session.first_unacked:",
        "a retried write gets the first result and is applied at most once",
    ),
    Mutant(
        "session_drops_unacked_result",
        STATEMACHINE,
        "for seq in [s for s in session.results if s < write.first_unacked]:",
        "for seq in [s for s in session.results if s <= write.first_unacked]:",
        "a session keeps the result of every write the client has not acknowledged",
    ),
    Mutant(
        "expired_session_reopened",
        STATEMACHINE,
        "                return Result(key, write.seq, Outcome.EXPIRED, error=_expired_error(key))",
        "                found = self._open_session(key)",
        "a write in a session that is not kept is refused as expired and never applied",
    ),
    # ----------------------------------------------------- key-value semantics
    Mutant(
        "delete_keeps_value",
        STATEMACHINE,
        "removed = self.data.pop(write.delete.key, None) is not None",
        "removed = self.data.get(write.delete.key) is not None",
        "delete removes the key",
    ),
    Mutant(
        "iset_names_by_last_hash",
        STATEMACHINE,
        "self._image_meta[ref] = (op.hashes[0], op.metadata)",
        "self._image_meta[ref] = (op.hashes[-1], op.metadata)",
        "an image is named by its first hash, the full-frame one (the others are variants)",
    ),
    Mutant(
        "key_limit_counts_characters",
        STATEMACHINE,
        'size = len(key.encode("utf-8", "surrogatepass"))',
        "size = len(key)",
        "a key is 1 to 1024 bytes of UTF-8",
    ),
    # ------------------------------------------------------ peer input checks
    Mutant(
        "accept_window_unchecked",
        CORE,
        "            if msg.slot > self.commit_index + limits.MAX_ACCEPT_WINDOW:\n                return",
        "            if False:\n                return",
        "an accept more than MAX_ACCEPT_WINDOW slots above the commit index is refused",
    ),
)

# The mutants the project's evidence is measured by first (docs/evidence.md):
# the classic Multi-Paxos mistakes.
REQUIRED: tuple[str, ...] = (
    "replica_votes_before_sync",
    "lease_from_ack_arrival",
    "lease_always_held",
    "accept_compares_rounds_only",
    "prepare_compares_rounds_only",
    "repropose_lowest_ballot",
    "snapshot_install_forgets_accepted",
    "quorum_wrong_for_even",
)


def by_name() -> dict[str, Mutant]:
    return {m.name: m for m in MUTANTS}
