"""Deliberate mistakes the consensus core can be told to make, to prove that the simulator catches them.

A test plants one by putting its member in ``Config.planted_bugs``; the
core checks each by identity, and refuses anything that is not a member
(a bug's name alone plants nothing).  Never set outside tests.

These stay in production code because each is one decision inside a step of
the core, with no seam a test could wrap or override without copying that
step (and then testing the copy rather than the code that ships):

* ``ACCEPT_LOWER_BALLOT``: the acceptor's ballot check (``Node._on_accept``);
* ``SKIP_REPROPOSAL``: the value a new leader proposes in each slot its
  promises reported (``Node._become_leader``);
* ``UNCONFIRMED_READ``: the quorum round a read index waits for (``Node.read``);
* ``COMPACT_ABOVE_COMMIT``: which accepted values compaction forgets
  (``Node.compact``);
* ``TWO_CHANGES_IN_FLIGHT``, ``LEARNER_VOTES``, ``CHANGE_BEFORE_OWN_VALUE``:
  the membership rules inside the leader's proposals, its quorum count and
  its election (``Node.propose_change``, ``Node._set_membership``,
  ``Node._flush_proposals``, ``Node._try_to_lead``).

The simulator plants the others from outside, around the shipped code
(``tests/sim/bugs.py``): a disk that acknowledges an fsync early, one that
writes snapshots without the client-session table, a state machine that
evicts sessions of its own choosing, hosts that skip the incarnation check,
and a replica that installs a fetched snapshot older than its state.
"""

from __future__ import annotations

from enum import Enum


class PlantedBug(Enum):
    # The acceptor accepts a ballot below its promise.
    ACCEPT_LOWER_BALLOT = "accept_lower_ballot"
    # A new leader fills every open slot with a no-op.
    SKIP_REPROPOSAL = "skip_reproposal"
    # The leader answers reads without a quorum round.
    UNCONFIRMED_READ = "unconfirmed_read"
    # Compaction trusts the leader's commit index, not its own.
    COMPACT_ABOVE_COMMIT = "compact_above_commit"
    # The leader proposes a membership change while its last is unfinished
    # (each judged against the configuration chosen so far).
    TWO_CHANGES_IN_FLIGHT = "two_changes_in_flight"
    # A learner's acknowledgement counts towards a quorum before its promotion is chosen.
    LEARNER_VOTES = "learner_votes"
    # A new leader acts (and proposes a change) before a value of its own
    # ballot is chosen: it neither learns the slots its promises report
    # chosen, nor stops at an earlier leader's unfinished change.
    CHANGE_BEFORE_OWN_VALUE = "change_before_own_value"
