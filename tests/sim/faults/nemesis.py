"""The nemesis: crashes, power loss, partitions of any shape, deposed leaders, stalls and forgeries.

For ``fault_seconds`` it strikes now and then, each seed mixing the fault
kinds in its own proportions (swarm testing); membership changes
(``faults/membership.py``) are drawn among its actions, and lost disks
(``faults/disks.py``) run on a random source of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.sim.units import MS, SECOND, TICK_US

if TYPE_CHECKING:
    from tests.sim.host import Host
    from tests.sim.run import Simulation


class Nemesis:
    """Draws and performs the faults of the fault phase."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def act(self) -> None:
        """One action, drawn by the seed's weights; then the next is scheduled."""
        if self.sim.now >= self.sim.fault_end:
            return
        p = self.sim.profile
        rng = self.sim.rng
        # One cut at a time: a cut replaced before it heals would blur the
        # scenario it was drawn for (the deposed leader must see the heal).
        cutting = 0.0 if self.sim.network.blocked or self.sim.network.slow else 1.0
        actions = (
            (p.crash_weight, self.crash_one),
            (p.power_loss_weight, self.power_loss),
            (p.partition_weight * cutting, self.partition),
            (p.depose_weight * cutting, self.depose_leader),
            (p.pause_weight, self.pause_one),
            (p.forge_weight, self.forge),
            (p.reconfigure_weight, self.sim.membership.reconfigure),
            (p.slow_acks_weight * cutting, self.slow_acks),
            (p.stall_all_weight, self.stall_all),
        )
        r = rng.random() * sum(weight for weight, _ in actions)
        for weight, action in actions:
            if not weight:
                continue
            if r < weight:
                action()
                break
            r -= weight
        self.sim.at(self.sim.now + 1 + int(rng.expovariate(1 / p.fault_gap_us)), self.act)

    def pick_node(self) -> Host | None:
        """An up node, the leader half of the time (it hurts the most)."""
        up = [h for h in self.sim.hosts if h.up]
        if not up:
            return None
        leaders = [h for h in up if h.core is not None and h.core.is_leader()]
        if leaders and self.sim.rng.random() < 0.5:
            return max(leaders, key=lambda h: h.core.ballot if h.core else 0)
        return self.sim.rng.choice(up)

    def crash_one(self) -> None:
        rng = self.sim.rng
        down_now = sum(not h.up for h in self.sim.hosts if h.active)
        if down_now >= self.sim.n // 2 and rng.random() < 0.8:
            return  # mostly keep a quorum up, so the clients get work done
        host = self.pick_node()
        if host is None:
            return
        # Quick restarts find lost-promise bugs; long ones force elections.
        down = rng.randint(1 * MS, 100 * MS) if rng.random() < 0.5 else rng.randint(100 * MS, 2 * SECOND)
        self.crash(host, down)

    def power_loss(self) -> None:
        """A majority or more lose power at once and come back one by one."""
        rng = self.sim.rng
        active = [h for h in self.sim.hosts if h.active]
        count = len(active) if rng.random() < 0.5 else rng.randint(len(active) // 2 + 1, len(active))
        victims = rng.sample(active, count)
        self.sim.log(-1, "fault", f"power loss on {', '.join(f'n{h.id}' for h in victims)}")
        for host in victims:
            if host.up:
                self.crash(host, rng.randint(1 * MS, 2 * SECOND))

    def crash(self, host: Host, down: int) -> None:
        host.crash()
        self.sim.stats["crashes"] += 1
        self.sim.log(host.id, "fault", f"crash (restart in {down / SECOND:.3f}s)")
        self.sim.at(min(self.sim.now + down, self.sim.fault_end), self.restart, host.id, host.generation)

    def restart(self, node: int, generation: int) -> None:
        host = self.sim.hosts[node]
        if not host.up and host.generation == generation and not self.sim.disks.kept_down(node):
            host.start()
            d = host.durable
            self.sim.log(node, "fault", f"restart: promised {d.promised}, commit {d.commit_index}")

    def partition(self) -> None:
        rng = self.sim.rng
        ids = [h.id for h in self.sim.hosts if h.active]
        n = len(ids)
        nodes = list(ids)
        rng.shuffle(nodes)
        shape = rng.random()
        blocked: set[tuple[int, int]] = set()
        groups: list[list[int]] = []  # what a client on each side can reach
        voters = self.even_voters()
        if voters and rng.random() < 0.5:
            # An even number of voters split in two equal halves: neither
            # holds a quorum, unless quorums are counted wrong.
            rng.shuffle(voters)
            half = voters[: len(voters) // 2]
            side = half + [y for y in nodes if y not in voters and rng.random() < 0.5]
            rest = [y for y in ids if y not in side]
            blocked = {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}
            groups = [side, rest]
            what = f"split the {len(voters)} voters in halves {sorted(side)} | {sorted(rest)}"
        elif shape < 0.45:
            # Two sides; a third of the time the leader ends up in the
            # minority, which is where stale leaders come from.
            k = rng.randint(1, n // 2)
            leader = self.pick_node()
            if leader is not None and rng.random() < 0.7:
                nodes.remove(leader.id)
                nodes.insert(0, leader.id)
            side, rest = nodes[:k], nodes[k:]
            blocked = {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}
            groups = [side, rest]
            what = f"split {sorted(side)} | {sorted(rest)}"
        elif shape < 0.65:
            x = nodes[0]
            if rng.random() < 0.5:
                blocked = {(y, x) for y in ids if y != x}
                what = f"one-way: n{x} hears nobody (its sends still arrive)"
            else:
                blocked = {(x, y) for y in ids if y != x}
                what = f"one-way: nobody hears n{x} (it still receives)"
        elif shape < 0.8:
            bridge, rest = nodes[0], nodes[1:]
            k = len(rest) // 2
            a, b = rest[:k], rest[k:]
            blocked = {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
            groups = [[*a, bridge], [*b, bridge]]
            what = f"bridge n{bridge} between {sorted(a)} and {sorted(b)}"
        else:
            blocked = {(x, y) for x in ids for y in ids if x != y and rng.random() < 0.35}
            what = "random links down: " + (" ".join(f"{x}->{y}" for x, y in sorted(blocked)) or "none")
        # Most cuts last about an election, so the old leader may still
        # believe it leads when they heal; some last long.
        lasts = rng.randint(250 * MS, 700 * MS) if rng.random() < 0.5 else rng.randint(50 * MS, 3 * SECOND)
        self.cut_network(what, blocked, groups, lasts)

    def even_voters(self) -> list[int]:
        """The voters of the leader's configuration when they are an even number, else none."""
        leader = self.sim.leader()
        core = leader.core if leader is not None else None
        if core is None or len(core.voters) % 2:
            return []
        return sorted(core.voters.voters)

    def depose_leader(self) -> None:
        """Cut the leader (and maybe a few followers) off from the majority
        for longer than the shortest election timeout but shorter than its
        quorum timeout: a new leader is elected while the old one still
        believes it leads, and then the two meet (Jepsen's partition-leader).
        """
        rng = self.sim.rng
        leaders = [h for h in self.sim.hosts if h.up and h.core is not None and h.core.is_leader()]
        if not leaders:
            return
        leader = max(leaders, key=lambda h: h.core.ballot if h.core else 0).id
        ids = [h.id for h in self.sim.hosts if h.active]
        others = [y for y in ids if y != leader]
        rng.shuffle(others)
        core = self.sim.hosts[leader].core
        learners = sorted(core.membership.learners) if core is not None else []
        most = max(0, (len(ids) - 1) // 2 - 1)
        count = rng.randint(0, most)
        if learners and rng.random() < 0.5:
            # The leader cut off with the learners: none of them may count.
            others = [y for y in others if y in learners] + [y for y in others if y not in learners]
            count = max(count, min(len(learners), most))
        side = [leader, *others[:count]]
        rest = [y for y in ids if y not in side]
        blocked = {(a, b) for a in side for b in rest} | {(b, a) for a in side for b in rest}
        low = self.sim.config.election_ticks_min * TICK_US + 50 * MS
        high = self.sim.config.leader_quorum_timeout_ticks * TICK_US - 20 * MS
        self.cut_network(
            f"depose leader: {sorted(side)} | {sorted(rest)}", blocked, [side, rest], rng.randint(low, high), side
        )

    def slow_acks(self) -> None:
        """The leader's acknowledgements arrive late while a rival is elected.

        Every follower's stream to the leader slows down (its messages
        arrive up to about an election later, in order), then the
        leader's streams to the followers are cut: they elect a rival
        while the acknowledgements of the leader's last heartbeats are
        still on their way to it.  A leader that measured its read lease
        from when those arrived, not from when it sent the heartbeat,
        would answer reads under a lease it no longer holds; clients stuck
        on its side keep asking it.
        """
        leader = self.sim.leader()
        if leader is None:
            return
        rng = self.sim.rng
        config = self.sim.config
        ids = [h.id for h in self.sim.hosts if h.active]
        others = [y for y in ids if y != leader.id]
        slower = rng.randint(config.election_ticks_min * TICK_US, config.leader_quorum_timeout_ticks * TICK_US)
        network = self.sim.network
        network.slow = {(y, leader.id): slower for y in others}
        self.sim.log(-1, "fault", f"streams to n{leader.id} slowed by {slower / SECOND:.3f}s")
        # The heartbeats sent meanwhile are acknowledged on the slow streams.
        cut_in = rng.randint(config.heartbeat_ticks * TICK_US, 4 * config.heartbeat_ticks * TICK_US)
        lasts = slower + rng.randint(100 * MS, 500 * MS)
        self.sim.at(self.sim.now + cut_in, self.cut_from_leader, leader.id, others, lasts)
        self.sim.at(self.sim.now + cut_in + lasts, self.end_slow)

    def cut_from_leader(self, leader: int, others: list[int], lasts: int) -> None:
        blocked = {(leader, y) for y in others}
        self.cut_network(f"n{leader} heard by nobody (slow streams back)", blocked, [[leader], others], lasts, [leader])

    def end_slow(self) -> None:
        self.sim.network.slow = {}
        self.sim.log(-1, "fault", "slow streams back to speed")

    def stall_all(self) -> None:
        """The leader crashes and every other server stalls until one instant.

        When they resume together, each finds its election timer long
        expired and campaigns at once with the same round: ballots of one
        round from different members meet.
        """
        rng = self.sim.rng
        leader = self.sim.leader()
        config = self.sim.config
        until = self.sim.now + rng.randint(config.election_ticks_max * TICK_US, 1 * SECOND)
        if leader is not None:
            self.crash(leader, until - self.sim.now + rng.randint(0, 1 * SECOND))
        stalled = [h for h in self.sim.hosts if h.up]
        for host in stalled:
            host.pause(until)
        self.sim.stats["pauses"] += len(stalled)
        names = " ".join(f"n{h.id}" for h in stalled)
        self.sim.log(-1, "fault", f"{names} stall until {until / SECOND:.3f}s, together")

    def crash_in_fsync(self, host: Host, generation: int) -> None:
        """A crash while an fsync of votes is under way (see ``SimDisk.sync``)."""
        sim = self.sim
        if host.generation != generation or not host.up or sim.now >= sim.fault_end:
            return
        if sum(not h.up for h in sim.hosts if h.active) >= sim.n // 2:
            return  # keep a quorum up
        rng = sim.rng
        sim.log(host.id, "fault", "crash during the fsync of a vote")
        self.crash(host, rng.randint(1 * MS, 100 * MS) if rng.random() < 0.7 else rng.randint(100 * MS, 1 * SECOND))

    def cut_network(
        self,
        what: str,
        blocked: set[tuple[int, int]],
        groups: list[list[int]],
        lasts: int,
        old_side: list[int] | None = None,
    ) -> None:
        """Cut ``blocked`` for ``lasts``; clients sit on a side of ``groups``, most on ``old_side`` if given
        (a deposed leader's, whose clients keep asking it)."""
        rng = self.sim.rng
        n = self.sim.size
        # A client sits on one side of the cut, or outside it and sees all.
        client_blocked: set[tuple[int, int]] = set()
        for client in self.sim.clients:
            if groups and rng.random() < 0.6:
                reach = old_side if old_side is not None and rng.random() < 0.6 else rng.choice(groups)
                client_blocked |= {(client.index, y) for y in range(n) if y not in reach}
        # Each peer stream (one per direction) either survives the cut and
        # delivers its buffer at the heal, or is reset and loses it.  A
        # client's connection attempt is dropped or refused.
        holding = {link for link in sorted(blocked) if rng.random() < 0.5}
        self.sim.network.client_reject = rng.random() < 0.5
        if client_blocked:
            cut = " ".join(f"c{c}-n{y}" for c, y in sorted(client_blocked))
            what += f"; clients cut off ({'refused' if self.sim.network.client_reject else 'dropped'}): {cut}"
        self.sim.network.set_partition(blocked, holding, client_blocked)
        self.sim.stats["partitions"] += 1
        if holding:
            what += "; buffered: " + " ".join(f"{x}->{y}" for x, y in sorted(holding))
        self.sim.log(-1, "fault", f"partition {what} for {lasts / SECOND:.3f}s")
        self.sim.at(self.sim.now + lasts, self.sim.network.heal_partition, self.sim.network.partition_id)

    def forge(self) -> None:
        """A burst of messages no honest member sends, at one running node."""
        up = [h for h in self.sim.hosts if h.up and h.core is not None]
        if not up:
            return
        host = self.sim.rng.choice(up)
        count = self.sim.rng.randint(1, 5)
        self.sim.stats["forged"] += count
        for _ in range(count):
            if not host.defer(host.receive_forged):
                host.receive_forged()

    def pause_one(self) -> None:
        host = self.pick_node()
        if host is None:
            return
        rng = self.sim.rng
        lasts = rng.randint(20 * MS, 500 * MS) if rng.random() < 0.5 else rng.randint(500 * MS, 3 * SECOND)
        host.pause(self.sim.now + lasts)
        self.sim.stats["pauses"] += 1
        self.sim.log(host.id, "fault", f"process stalls for {lasts / SECOND:.3f}s")

    # ------------------------------------------------------------ liveness
