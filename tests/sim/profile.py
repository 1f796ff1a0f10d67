"""The fault and workload parameters of one seed (swarm testing)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from paxos.common import limits
from tests.sim.units import MS, SECOND, TICK_US

# The read lease holds while every server's clock runs within 10% of the
# nominal rate (the core caps the lease at (stickiness - 2) * 0.9 / 1.1
# ticks, see paxos/common/limits.py): the simulator drifts clocks up to
# that bound and no further.
LEASE_BOUND_DRIFT = 0.10


@dataclass(frozen=True)
class Profile:
    """The fault and workload parameters of one seed, drawn from its rng."""

    latency_us: int  # fixed part of a one-way message delay
    jitter_us: int  # plus up to this much
    loss: float
    duplicate: float
    reorder: float  # chance that a message is held back by up to reorder_us
    reorder_us: int
    client_loss: float
    fsync_us: tuple[int, int]
    fsync_stall: float  # chance that an fsync takes 20-100 ms
    fault_gap_us: int  # mean time between two nemesis actions
    # Swarm testing: each seed mixes the fault kinds in its own proportions,
    # some not at all, so that runs differ in kind and not only in timing.
    crash_weight: float
    power_loss_weight: float  # a majority (or all) crash at once
    partition_weight: float
    depose_weight: float  # cut the leader off for about an election
    pause_weight: float
    forge_weight: float  # hostile messages from outside the cluster
    clients: int
    keys: tuple[str, ...]
    client_timeout_us: int
    think_us: int
    # Snapshots: commands applied between two, and slots kept below one.
    # Small, so that snapshots, compaction and transfers happen often.
    snapshot_every: int
    snapshot_tail: int
    # Membership changes: how often one is asked for (a weight among the
    # nemesis actions), and how many servers wait outside the cluster to
    # be added.  A change is sometimes followed at once by another.
    reconfigure_weight: float
    spares: int
    # Client sessions the state machine keeps (limits.MAX_CLIENT_SESSIONS for
    # the run): in some seeds fewer than there are clients, so sessions are
    # evicted, writes in them refused as expired, and clients register anew.
    max_sessions: int
    # Clocks: each server's runs at a rate within clock_drift of the
    # nominal one (uniformly, or with clock_extremes at one end or the
    # other), at most the LEASE_BOUND_DRIFT the read lease is built for.
    clock_drift: float
    clock_extremes: bool
    # Adversity the classic bugs need (faults/nemesis.py): a leader whose
    # acknowledgements arrive late while it is cut off and a rival is
    # elected; a leader's crash followed by a stall of every other server
    # that ends at one instant (so they campaign with the same round).
    slow_acks_weight: float
    stall_all_weight: float
    # The chance that an fsync of votes (a promise or an accepted value)
    # is cut short by a crash of its server.
    fsync_crash: float

    def tick_us(self, rng: random.Random) -> int:
        """One server's tick period: its clock's rate, within ``clock_drift`` of the nominal one."""
        drift = self.clock_drift
        if self.clock_extremes:
            return round(TICK_US * rng.choice((1 - drift, 1 + drift)))
        return round(TICK_US * rng.uniform(1 - drift, 1 + drift))

    @classmethod
    def draw(cls, rng: random.Random) -> Profile:
        wan = rng.random() < 0.3
        disk = rng.choice(((50, 1 * MS), (1 * MS, 8 * MS), (5 * MS, 30 * MS)))
        return cls(
            latency_us=rng.randint(5 * MS, 30 * MS) if wan else rng.randint(100, 2 * MS),
            jitter_us=rng.randint(0, 10 * MS if wan else 3 * MS),
            loss=rng.choice((0.0, 0.01, 0.05, 0.15)),
            duplicate=rng.choice((0.0, 0.01, 0.05)),
            reorder=rng.choice((0.0, 0.02, 0.1)),
            reorder_us=rng.randint(5 * MS, 200 * MS),
            client_loss=rng.choice((0.0, 0.01, 0.03)),
            fsync_us=disk,
            fsync_stall=rng.choice((0.0, 0.01, 0.05)),
            fault_gap_us=rng.choice((200 * MS, 500 * MS, 1 * SECOND, 2 * SECOND)),
            crash_weight=rng.choice((0.0, 1.0, 2.0)),
            power_loss_weight=rng.choice((0.0, 0.5, 1.0, 2.0)),
            partition_weight=rng.choice((0.0, 1.0, 2.0)),
            depose_weight=rng.choice((0.5, 1.0, 2.0, 4.0)),
            pause_weight=rng.choice((0.0, 0.5, 1.0)),
            forge_weight=rng.choice((0.0, 0.5, 1.0, 2.0)),
            clients=rng.randint(2, 5),
            keys=("x", "y", "z")[: rng.randint(1, 3)],
            client_timeout_us=rng.choice((2 * SECOND, 5 * SECOND, 10 * SECOND)),
            think_us=rng.choice((5 * MS, 30 * MS, 100 * MS)),
            snapshot_every=rng.choice((3, 10, 40, 200)),
            snapshot_tail=rng.choice((0, 2, 20)),
            reconfigure_weight=rng.choice((0.0, 2.0, 4.0, 8.0)),
            spares=rng.choice((1, 2, 3, 4)),
            max_sessions=rng.choice((limits.MAX_CLIENT_SESSIONS, 2, 3)),
            clock_drift=rng.choice((0.05, LEASE_BOUND_DRIFT)),
            clock_extremes=rng.random() < 0.5,
            slow_acks_weight=rng.choice((0.0, 1.0, 2.0)),
            stall_all_weight=rng.choice((0.0, 0.5, 1.0)),
            fsync_crash=rng.choice((0.0, 0.002, 0.01)),
        )
