"""Bugs planted by the simulator around the shipped code, to prove that its checks bite.

The core's own (``paxos.consensus.core.PLANTABLE_BUGS``) are switched on
through its ``Config``; these are planted from outside.
"""

from __future__ import annotations

import random

from paxos.consensus.core import PLANTABLE_BUGS
from paxos.consensus.messages import Slot, Value
from paxos.kv.statemachine import Registration, Result, StateMachine

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
