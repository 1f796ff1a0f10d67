"""Lost disks: a voter's data dir, snapshots and incarnation book are wiped, and it restarts.

It is restarted with its usual command, so it runs the founding check
(paxos/incarnation.py) on what the others recorded; a minority at most,
one at a time.  One that is refused stays down and is removed from the
configuration (``faults/membership.py``), as its operator would.  These
faults draw from a random source of their own, so that the seeds without
them run exactly as before the fault existed.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from paxos.incarnation import NONE, Founding, FoundingAnswer, FoundingDecision, decide_founding
from paxos.kv.configuration import configuration_in
from protos import peer_pb2
from tests.sim.disk import SimDisk
from tests.sim.units import MS, SECOND

if TYPE_CHECKING:
    from tests.sim.host import Host
    from tests.sim.run import Simulation

# Seeds in which servers lose their disks, and how often one is lost then;
# and the share of losses staged as the worst case (``stage_disk_loss``).
LOSE_DISK_SEEDS = 0.7
LOSE_DISK_GAP_US = 3 * SECOND
LOSE_DISK_STAGED = 0.5


class DiskLoss:
    """Draws and performs the disk losses, and follows each through the founding check."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.rng = random.Random(f"lose-disk {sim.seed}")  # see LOSE_DISK_SEEDS
        self.disks_lost = 0
        self.founding: set[int] = set()  # servers with a new disk asking before they found
        self.refused_hosts: set[int] = set()  # servers that refused to start on a new disk

    def kept_down(self, node: int) -> bool:
        """Whether the server waits on its founding check or was refused: no restart brings it up."""
        return node in self.founding or node in self.refused_hosts

    def start(self) -> None:
        """Schedule the first loss, in the seeds that have them."""
        if self.rng.random() < LOSE_DISK_SEEDS:
            self.sim.at(self.rng.randrange(LOSE_DISK_GAP_US), self.lose_disk)

    def lose_disk(self) -> None:
        """A server loses its disk and is restarted with its usual command: it runs the founding check.

        Only ever a minority of the hostfile, one at a time, so that a
        majority keeps its data; a server that refuses to start stays down.
        Half the losses are staged as the worst case an operator meets
        (``stage_disk_loss``); the others strike whoever is drawn.
        """
        rng = self.rng
        if self.sim.now < self.sim.fault_end:
            self.sim.at(self.sim.now + 1 + rng.randrange(LOSE_DISK_GAP_US), self.lose_disk)
        voters = self.voters_that_may_lose_a_disk()
        if voters is None:
            return
        if rng.random() < LOSE_DISK_STAGED:
            self.stage_disk_loss(voters)
            return
        host = self.sim.hosts[rng.choice(voters)]
        if host.id not in self.refused_hosts and self.others_know_the_configuration(voters, host):
            self.wipe_disk(host)

    def voters_that_may_lose_a_disk(self) -> list[int] | None:
        """The voters one of which may lose its disk now, or None while no loss may happen."""
        leader = self.sim.leader()
        if self.founding or self.sim.now >= self.sim.fault_end or leader is None or leader.replica is None:
            return None
        if leader.replica.core.change_in_progress:
            return None  # the configuration it would judge by is about to change
        # Nor may a change be waiting anywhere: one a deposed leader had
        # accepted may be chosen by a later leader, after the loss, and leave
        # the lost server a quorum of a smaller configuration.
        applied = leader.replica.store.applied_index
        for other in self.sim.hosts:
            for slot, (_, value) in other.disk.durable.accepted.items():
                if slot > applied and configuration_in(value) is not None:
                    return None
        # A voter of a configuration that can still lose it: the refused
        # server is removed later (retire_refused), which takes a quorum of
        # the configuration it is in.
        voters = sorted(leader.replica.membership.voters)
        if len(self.refused_hosts & set(voters)) + 1 > (len(voters) - 1) // 2:
            return None
        return voters

    def others_know_the_configuration(self, voters: list[int], host: Host) -> bool:
        """Whether every voter but ``host`` knows the configuration ``host`` is a voter of.

        One that lags behind a change only it and the lost server saw
        cannot elect.
        """
        leader = self.sim.leader()
        if leader is None or leader.replica is None:
            return False
        for other in voters:
            core = self.sim.hosts[other].core
            if other != host.id and (core is None or core.membership != leader.replica.membership):
                return False
        return True

    def stage_disk_loss(self, voters: list[int]) -> None:
        """The loss that forgets an acknowledged write unless the founding check refuses it.

        A follower stalls; writes go on acknowledged by the leader and a
        second follower; that follower loses its disk and the leader
        crashes.  The restarted server and the stalled one, if it founds,
        are a majority that never saw those writes.
        """
        rng = self.rng
        leader = self.sim.leader()
        followers = [v for v in voters if leader is None or v != leader.id]
        followers = [v for v in followers if v not in self.refused_hosts and self.sim.hosts[v].up]
        if leader is None or len(followers) < 2:
            return
        stalled, victim = rng.sample(followers, 2)
        lasts = rng.randint(400 * MS, 1500 * MS)
        self.sim.hosts[stalled].pause(self.sim.now + lasts)
        self.sim.stats["pauses"] += 1
        self.sim.log(stalled, "fault", f"process stalls for {lasts / SECOND:.3f}s (before n{victim} loses its disk)")
        self.sim.at(
            self.sim.now + rng.randint(lasts // 3, lasts - 50 * MS), self.finish_staged_disk_loss, victim, leader.id
        )

    def finish_staged_disk_loss(self, victim: int, leader_id: int) -> None:
        voters = self.voters_that_may_lose_a_disk()
        leader = self.sim.leader()
        if voters is None or victim not in voters or leader is None or leader.id != leader_id:
            return
        if not self.others_know_the_configuration(voters, self.sim.hosts[victim]):
            return
        self.wipe_disk(self.sim.hosts[victim])
        self.sim.nemesis.crash(leader, self.rng.randint(500 * MS, 2 * SECOND))

    def wipe_disk(self, host: Host) -> None:
        rng = self.rng
        self.disks_lost += 1
        if host.up:
            host.crash()
            self.sim.stats["crashes"] += 1
        else:
            host.generation += 1  # its pending restart is the founding check now
        host.disk = SimDisk(host)
        host.incarnation = self.sim.new_incarnation()
        host.joined_with = self.sim.bootstrap
        self.founding.add(host.id)
        self.sim.stats["disks_lost"] += 1
        self.sim.log(host.id, "fault", f"loses its disk; restarted with a new one (incarnation {host.incarnation})")
        self.sim.at(self.sim.now + rng.randint(1 * MS, 500 * MS), self.ask_before_founding, host.id)

    def ask_before_founding(self, node: int) -> None:
        """The founding check of a server on an empty disk, on the answers of those up and reachable."""
        host = self.sim.hosts[node]
        # Those refused before were taken out of the hostfile by the operator.
        hostfile = [h for h in self.sim.hosts if h.active and h.id not in self.refused_hosts]
        answers: dict[str, FoundingAnswer] = {}
        for other in hostfile:
            if other.id == node or self.sim.network.cut_between(node, other.id):
                continue
            if other.id in self.founding:
                answers[f"n{other.id}"] = FoundingAnswer(fresh=True, recorded=NONE)
            elif other.up and other.paused_until <= self.sim.now and other.ingress is not None:
                # Answered by the server's own code, as its Incarnation RPC does.
                question = peer_pb2.IncarnationRequest(name=host.name, member_id=node)
                reply = other.ingress.incarnation_reply(question)
                answers[f"n{other.id}"] = FoundingAnswer(fresh=reply.fresh, recorded=reply.recorded)
        decision = decide_founding(f"n{node}", [f"n{h.id}" for h in hostfile], answers)
        if self.sim.skip_incarnation_check:
            decision = FoundingDecision(Founding.FOUND, "planted bug: founds without asking")
        self.sim.log(node, "fault", f"founding check: {decision.verdict.value} ({decision.why})")
        if decision.verdict is Founding.WAIT:
            self.sim.at(self.sim.now + 150 * MS, self.ask_before_founding, node)
            return
        self.founding.discard(node)
        if decision.verdict is Founding.REFUSE:
            self.refused_hosts.add(node)
            self.sim.stats["founding_refused"] += 1
            self.sim.membership.retire_refused()
            return
        host.start()
