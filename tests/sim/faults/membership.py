"""Membership changes: those the nemesis asks for, and the operator's removal of a refused server.

Spare servers are added as learners (each starts with the configuration it
would learn from the cluster), learners promoted and members removed, the
leader included, sometimes two asked for back to back.  Every configuration
chosen must be one step from the one before it (``checks.py``), and only
the final configuration's servers must converge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from paxos.consensus.membership import ConfigMember
from tests.sim.units import MS, sim_address, sim_name

if TYPE_CHECKING:
    from tests.sim.run import Simulation


class Reconfiguration:
    """Asks the leader for membership changes."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def retire_refused(self) -> None:
        """What the operator does for a server that refused its new disk: remove it from the configuration."""
        leader = self.sim.leader()
        m = leader.replica.membership if leader is not None and leader.replica is not None else None
        refused = self.sim.disks.refused_hosts
        retiring = sorted(refused & m.ids if m is not None else refused)
        if not retiring:
            return
        self.sim.at(self.sim.now + 500 * MS, self.retire_refused)
        if leader is None or leader.replica is None or m is None or leader.replica.core.change_in_progress:
            return
        new = m.removing(retiring[0])
        if m.step_error(new):
            return
        self.sim.log(leader.id, "fault", f"operator removes n{retiring[0]}: {new.describe()}")
        leader.replica.change_membership(new, lambda error: self.change_answered(leader.id, error))

    def reconfigure(self) -> None:
        """Ask the leader for one membership change: add a spare as a learner,
        promote a learner, or remove a member (the leader itself at times).
        Now and then another follows hard on its heels, which the leader
        must refuse while the first is unfinished."""
        rng = self.sim.rng
        host = self.sim.leader()
        if host is None:
            return
        replica = host.replica
        assert replica is not None
        m = replica.membership
        if (self.sim.disks.refused_hosts | self.sim.disks.founding) & m.ids:
            # A server on a new disk may be refused: the operator removes it
            # first (retire_refused), and no other change may leave it a
            # quorum of the configuration.
            return
        spares = [h for h in self.sim.hosts if not h.active]
        learners, voters = sorted(m.learners), sorted(m.voters)
        # Adding is drawn twice as often as the others, so that learners
        # stay learners for a while: the rule about them needs them around.
        removable = bool(learners or len(voters) > 2)
        kinds = ["add"] * 2 * bool(spares) + ["promote"] * bool(learners) + ["remove"] * removable
        if not kinds:
            return
        kind = rng.choice(kinds)
        if kind == "add":
            spare = spares[0]
            # At its address, as `python -m client members add NAME ADDRESS` names it.
            new = m.adding_learner(ConfigMember(spare.id, sim_name(spare.id), sim_address(spare.id)))
            # Started with the configuration it would learn from the
            # cluster; it waits outside it until the change is chosen.
            spare.joined_with = m
            spare.start()
        elif kind == "promote":
            new = m.promoting(rng.choice(learners))
        else:
            new = m.removing(rng.choice(learners + voters if len(voters) > 2 else learners))
        self.sim.stats["changes"] += 1
        self.sim.log(host.id, "fault", f"asked to change the configuration to {new.describe()}")
        replica.change_membership(new, lambda error: self.change_answered(host.id, error))
        if rng.random() < 0.3:
            self.sim.at(self.sim.now + rng.randint(1 * MS, 50 * MS), self.reconfigure)

    def change_answered(self, node: int, error: str | None) -> None:
        if error is not None:
            self.sim.stats["changes_refused"] += 1
        self.sim.log(node, "role", f"membership change: {error or 'made'}")
