"""What a run is judged by: safety, lost writes, divergence, liveness and linearizability.

* safety: no two nodes ever learn different values for a slot (every
  ``Ready.committed`` is compared with the first value learned there, which
  also makes every applied sequence a prefix of the longest), each
  configuration chosen is one step from the one before it, and no session
  id is handed out twice;
* lost writes: every acknowledged write took effect in the final log;
* divergence: every final member ends with the data and the client
  sessions that replaying the log gives;
* liveness: after the heal, every pending operation and one more write and
  read per client complete within ``LIVENESS_US`` of simulated time, and all
  nodes converge to the same applied index;
* linearizability: the client history is linearizable (``tests/harness/lincheck.py``);
* refusals: no honest message is refused by the peer ingress, nor by the
  core except for the kinds an honest cluster can cause (``HONEST_REFUSALS``).
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from paxos.consensus.messages import Message, Slot, Value
from paxos.kv.configuration import configuration_in
from paxos.kv.statemachine import Result, SessionKey, StateMachine
from tests.harness import lincheck
from tests.sim.trace import Event, command_names, describe_message, describe_value
from tests.sim.units import MS, SECOND, fmt_time

if TYPE_CHECKING:
    from tests.sim.host import Host
    from tests.sim.run import Simulation

# After the heal, pending and final client operations must finish this soon.
LIVENESS_US = 30 * SECOND
CONVERGENCE_POLL_US = 50 * MS


class Checks:
    """What the run records to judge it by, and the judging."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        # The first value learned for each slot, and the slots of those that are configurations, in order.
        self.chosen: dict[Slot, Value] = {}
        self.configuration_slots: list[Slot] = []
        # The clients' completed operations, for lincheck.
        self.history: list[lincheck.Op] = []
        # Writes whose outcome the client never learned, with their (session, seq).
        self.unknown: list[tuple[lincheck.Op, tuple[SessionKey, int]]] = []
        # Acknowledged writes: (session, seq, when).
        self.acked: list[tuple[SessionKey, int, int]] = []
        # Which client each session id was handed to: an id is never handed out twice.
        self.session_holders: dict[int, str] = {}
        # What replaying the chosen log gives (see replay_log).
        self.reference_data: dict[str, str] = {}
        self.reference_sessions: list[tuple[SessionKey, int, list[Result]]] = []
        self.reference_cluster_version = 0

    # Refusals an honest cluster may cause: an accept for a follower that
    # lags more than the accept window behind (it catches up first), and
    # the answer to a catch-up request that a server sent before it
    # restarted (it forgot asking, so it cannot tell that answer from a
    # forgery and refuses it).
    HONEST_REFUSALS = frozenset(
        {
            "accept beyond the accept window",
            "unsolicited catch-up reply",
            # a server that lags behind the change that added the sender
            "sender is not in this server's configuration",
        }
    )

    def refused(self, node: int, msg: Message, reason: str) -> None:
        """The core refused a message that an honest member sent."""
        self.sim.stats["refused"] += 1
        self.sim.log(node, "msg", f"refused from n{msg.sender}: {reason}: {describe_message(msg)}")
        if reason not in self.HONEST_REFUSALS:
            self.sim.violation("refusal", f"n{node} refused an honest message from n{msg.sender} ({reason})")

    def ingress_refused(self, node: int, peer: str, reason: str, detail: str) -> None:
        """The peer ingress (the codec's checks, the certificate's) refused a message that an honest member sent.

        No honest message is refused there: each claims the member its
        certificate names, and a member the receiver does not know yet is
        left for the core to judge.
        """
        self.sim.stats["refused"] += 1
        self.sim.violation("refusal", f"n{node}'s ingress refused an honest message from {peer}: {reason} ({detail})")

    # ------------------------------------------------------------- safety

    def learn(self, node: int, slot: Slot, value: Value) -> None:
        self.sim.trace.append(Event(self.sim.now, node, "commit", "", slot=slot, value=value))
        known = self.chosen.get(slot)
        if known is None:
            self.chosen[slot] = value
            if configuration_in(value) is not None:
                bisect.insort(self.configuration_slots, slot)
        elif known != value:
            self.sim.violation(
                "safety",
                f"n{node} learned {describe_value(value)} for slot {slot}, "
                f"but {describe_value(known)} was learned there before",
                slot=slot,
                commands=frozenset(command_names(known) + command_names(value)),
            )

    # ------------------------------------------------------------ liveness

    def final_members(self) -> list[Host]:
        """The servers of the configuration the chosen log ends with."""
        membership = self.sim.bootstrap
        for slot in sorted(self.chosen):
            membership = configuration_in(self.chosen[slot]) or membership
        return [self.sim.hosts[i] for i in sorted(membership.ids)]

    def converged(self) -> bool:
        if not all(c.done for c in self.sim.clients):
            return False
        top = max(self.chosen, default=0)
        return all(h.up and h.store.applied_index == top for h in self.final_members() if self.expected_up(h))

    def expected_up(self, host: Host) -> bool:
        """Whether the liveness phase expects ``host`` to converge: not if it refused its new disk."""
        return host.id not in self.sim.disks.refused_hosts

    def poll_convergence(self) -> None:
        if self.converged():
            self.sim.finished = True
            self.sim.log(-1, "check", f"converged: every node applied {max(self.chosen, default=0)} slots")
            return
        if self.sim.now >= self.sim.liveness_deadline:
            pending = "; ".join(c.describe_pending() for c in self.sim.clients if not c.done)
            applied = ", ".join(f"n{h.id}={h.store.applied_index}" for h in self.sim.hosts if h.active)
            roles = ", ".join(f"n{h.id}={h.core.role.value if h.core else 'down'}" for h in self.sim.hosts if h.active)
            members = self.final_members()[0].replica
            if members is not None:
                applied += f"; configuration {members.membership.describe()}"
            self.sim.violation(
                "liveness",
                f"{LIVENESS_US // SECOND}s after the heal: {pending or 'clients done'}; "
                f"applied {applied}; roles {roles}",
                window=(self.sim.fault_end, self.sim.now),
            )
        self.sim.at(self.sim.now + CONVERGENCE_POLL_US, self.poll_convergence)

    # ---------------------------------------------------------- final checks

    def check_configurations(self) -> None:
        """Each configuration chosen is one step from the one before it: the
        rule that keeps a quorum of the old voters and one of the new in touch."""
        membership = self.sim.bootstrap
        for slot in sorted(self.chosen):
            chosen = configuration_in(self.chosen[slot])
            if chosen is None:
                continue
            error = membership.step_error(chosen)
            if error:
                self.sim.violation(
                    "safety",
                    f"slot {slot} holds configuration [{chosen.describe()}], not one step from "
                    f"[{membership.describe()}] ({error})",
                    slot=slot,
                )
            membership = chosen

    def final_checks(self) -> None:
        self.check_configurations()
        effects = self.replay_log()
        for session, seq, when in self.acked:
            if (session, seq) not in effects:
                self.sim.now = when
                self.sim.violation("lost-write", f"write s{session}#{seq} was acknowledged but never took effect")
        reference = self.reference_data
        for host in self.final_members():
            if not self.expected_up(host):
                continue
            if host.store.data != reference:
                self.sim.violation("divergence", f"n{host.id} ends with {host.store.data}, the log gives {reference}")
            elif host.store.session_table() != self.reference_sessions:
                # What a retried write would be answered with: it must not
                # depend on whether this node restarted from a snapshot.
                self.sim.violation("divergence", f"n{host.id} ends with client sessions unlike those the log gives")
            elif host.store.cluster_version != self.reference_cluster_version:
                self.sim.violation(
                    "divergence",
                    f"n{host.id} ends at cluster version {host.store.cluster_version}, "
                    f"the log gives {self.reference_cluster_version}",
                )
        # An unknown-outcome write that provably never took effect (it is
        # not in the log, or the state machine skipped it as superseded) is
        # dropped: the client's view allows it to take effect at any time,
        # but the log says it did not, so keeping it would only hide a read
        # of a value nobody wrote, and makes the search exponential.
        history = self.history + [op for op, write in self.unknown if write in effects]
        self.sim.stats["ops_unknown_applied"] = len(history) - len(self.history)
        verdict = lincheck.check(history)
        if not verdict.ok:
            key = verdict.key
            assert key is not None
            when, culprit = first_nonlinearizable_moment([op for op in history if op.key == key])
            self.sim.now = when
            message = (
                f"key {key!r}: no legal order exists once {describe_op(culprit)} returns "
                f"(the history cut just before that is linearizable)\n"
                f"  lincheck's witness:\n" + "\n".join(f"    {describe_op(op)}" for op in verdict.witness)
            )
            self.sim.violation("linearizability", message, key=key, window=(when - 3 * SECOND, when))

    def replay_log(self) -> dict[tuple[SessionKey, int], Slot]:
        """Apply the chosen log to a fresh state machine: the slot where each
        (session, seq) took effect; ``reference_data`` is the end state."""
        store = StateMachine()
        effects: dict[tuple[SessionKey, int], Slot] = {}
        for slot in range(1, max(self.chosen, default=0) + 1):
            for result in store.apply(slot, self.chosen[slot]):
                if isinstance(result, Result) and result.ok:
                    effects.setdefault((result.session, result.seq), slot)
        self.reference_data = store.data
        self.reference_sessions = store.session_table()
        self.reference_cluster_version = store.cluster_version
        return effects


def describe_op(op: lincheck.Op) -> str:
    shown = f"={op.arg}" if op.kind == "set" else ""
    result = "" if op.kind == "set" or op.ret is None else f" -> {op.result!r}"
    # Op times are this simulation's integer microseconds.
    called = fmt_time(int(op.call)).strip()
    ret = "never (outcome unknown)" if op.ret is None else fmt_time(int(op.ret)).strip()
    return f"{op.process} {op.kind} {op.key}{shown}{result} (called {called}, returned {ret})"


def first_nonlinearizable_moment(ops: list[lincheck.Op]) -> tuple[int, lincheck.Op]:
    """The earliest return after which ``ops`` (one key) cannot be linearized.

    The history as it stood at time t keeps the operations called by then;
    those still running are cut to an unknown outcome.  Such cuts are
    prefix-closed (a later cut only adds constraints), so a binary search
    over return times finds the moment the violation became certain and the
    operation whose result made it so.
    """

    def cut(t: float) -> list[lincheck.Op]:
        kept = []
        for op in ops:
            if op.call > t:
                continue
            if op.ret is not None and op.ret > t:
                op = lincheck.Op(op.process, op.key, op.kind, op.arg, op.call, None, None)
            kept.append(op)
        return kept

    returns = sorted({op.ret for op in ops if op.ret is not None})
    lo, hi = 0, len(returns) - 1  # cut(returns[hi]) is known to fail
    while lo < hi:
        mid = (lo + hi) // 2
        if lincheck.check(cut(returns[mid])).ok:
            lo = mid + 1
        else:
            hi = mid
    when = returns[lo]
    culprit = next(op for op in ops if op.ret == when)
    return int(when), culprit
