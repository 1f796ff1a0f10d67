"""A hand-operated network of sans-I/O cores (paxos.consensus.core), and the timing the core tests use.

``Net`` collects each node's ``Ready`` bundles, keeps the durable records each
node was asked to persist, and delivers queued messages only when a test says
so, dropping those that cross a cut link.  Nothing here sleeps, opens a socket
or reads a clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

import pytest

from paxos.consensus.core import Config, Node
from paxos.consensus.messages import (
    DurableState,
    Message,
    NodeId,
    PreVote,
    Ready,
    Record,
    Slot,
    Value,
)

# Every node times out after exactly ELECTION ticks, so a test decides who
# campaigns by deciding whom it ticks.  The stickiness window (a follower
# refuses a rival while it heard from its leader less than ELECTION // 2
# ticks ago) is then exactly STICKY ticks.
ELECTION = 10
STICKY = ELECTION // 2
FIXED = Config(
    heartbeat_ticks=2,
    election_ticks_min=ELECTION,
    election_ticks_max=ELECTION + 1,
    leader_quorum_timeout_ticks=12,
    retransmit_ticks=4,
    check_invariants=True,
)
# The same timing with read leases off: every read waits for its own round,
# and a freshly started acceptor answers prepares at once.
NO_LEASE = replace(FIXED, lease_ticks=0)

Envelope = tuple[NodeId, NodeId, Message]


@dataclass
class Trace:
    """Everything one node handed to its host, in order."""

    readies: list[Ready] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    committed: list[tuple[Slot, Value]] = field(default_factory=list)
    reads: list[tuple[int, Slot]] = field(default_factory=list)
    lost_leadership: int = 0

    def durable(self) -> DurableState:
        state = DurableState()
        for record in self.records:
            state.apply(record)
        return state


class Net:
    """A network delivered by hand; see the module docstring."""

    def __init__(self, size: int, config: Config = FIXED, seed: int = 0, same_rng: bool = False) -> None:
        """``same_rng``: every node draws the same timeouts from the same seed."""
        self.size = size
        self.config = config
        self.nodes = [
            Node(i, range(size), random.Random(seed if same_rng else seed * 1000 + i), config) for i in range(size)
        ]
        self.traces = [Trace() for _ in range(size)]
        self.queue: list[Envelope] = []
        self.delivered: list[Envelope] = []
        self._cut: set[tuple[NodeId, NodeId]] = set()

    # -- links

    def isolate(self, node: NodeId) -> None:
        for other in range(self.size):
            if other != node:
                self._cut |= {(node, other), (other, node)}

    def partition(self, *groups: Iterable[NodeId]) -> None:
        """Only nodes in the same group can talk."""
        home = {n: i for i, group in enumerate(groups) for n in group}
        self._cut = {(a, b) for a in range(self.size) for b in range(self.size) if home.get(a) != home.get(b)}

    def heal(self) -> None:
        self._cut.clear()

    def is_cut(self, src: NodeId, dst: NodeId) -> bool:
        return (src, dst) in self._cut

    # -- driving nodes

    def collect(self, node: NodeId) -> Ready:
        ready = take(self.nodes[node])
        trace = self.traces[node]
        trace.readies.append(ready)
        trace.records += ready.persist
        trace.committed += ready.committed
        trace.reads += ready.reads
        trace.lost_leadership += ready.lost_leadership
        for to, msg in ready.early + ready.messages:
            assert to != node, f"node {node} sent {msg} to itself"
            self.queue.append((node, to, msg))
        return ready

    def collect_all(self) -> None:
        for node in range(self.size):
            self.collect(node)

    def tick(self, node: NodeId, times: int = 1) -> None:
        for _ in range(times):
            self.nodes[node].tick()
            self.collect(node)

    def deliver(self, keep: Callable[[Envelope], bool] = lambda env: True, limit: int = 10_000) -> int:
        """Deliver queued messages (and what they cause) until none is left.

        Messages for which ``keep`` is false, or that cross a cut link, are
        dropped.  Returns how many were delivered.
        """
        self.collect_all()
        count = 0
        while self.queue:
            env = self.queue.pop(0)
            src, dst, msg = env
            if self.is_cut(src, dst) or not keep(env):
                continue
            count += 1
            assert count <= limit, "message storm: the cluster never went quiet"
            self.delivered.append(env)
            self.nodes[dst].receive(msg)
            self.collect(dst)
        return count

    def drop_queued(self) -> None:
        self.queue.clear()

    def step(self, nodes: Iterable[NodeId] | None = None) -> None:
        """One tick on ``nodes`` (default: all), then deliver everything."""
        for node in range(self.size) if nodes is None else nodes:
            self.tick(node)
        self.deliver()

    # -- scenarios

    def elect(self, candidate: NodeId, voters: Iterable[NodeId] | None = None) -> None:
        """Make ``candidate`` run pre-vote and phase 1 and win with ``voters``.

        Voters are first aged past the stickiness window, so that a leader
        they followed no longer keeps them from granting a pre-vote; only the
        candidate reaches its election timeout.
        """
        voters = [v for v in (range(self.size) if voters is None else voters) if v != candidate]
        for voter in voters:
            self.tick(voter, STICKY)
            assert not self.sent(voter, PreVote), f"voter {voter} timed out itself; fix the scenario"
        self.deliver()  # whatever the ageing produced, e.g. catch-up requests
        for _ in range(4 * ELECTION):
            self.tick(candidate)
            if self.sent(candidate, PreVote):
                break
        else:
            pytest.fail(f"node {candidate} never timed out")
        self.deliver()
        assert self.nodes[candidate].is_leader(), f"node {candidate} was not elected"

    def sent(self, node: NodeId, kind: type) -> bool:
        return any(src == node and isinstance(msg, kind) for src, _, msg in self.queue)

    def heartbeat(self, leader: NodeId) -> None:
        """Tick the leader until it sends a heartbeat round, then deliver."""
        for _ in range(self.config.heartbeat_ticks):
            self.tick(leader)
        self.deliver()

    def commit(self, leader: NodeId, *commands: bytes) -> None:
        """Propose each command in a slot of its own and spread the commit index."""
        for command in commands:
            assert self.nodes[leader].propose(command)
            self.deliver()
        self.heartbeat(leader)

    def leaders(self) -> list[NodeId]:
        return [n for n in range(self.size) if self.nodes[n].is_leader()]


def take(node: Node) -> Ready:
    """The next bundle, done at once (the records are durable as soon as handed out)."""
    ready = node.ready()
    node.advance(ready)
    return ready


def slots(*values: Value) -> list[tuple[Slot, Value]]:
    return [(i, v) for i, v in enumerate(values, start=1)]


def restart(net: Net, node: NodeId, seed: int = 99) -> Node:
    """Replace ``node`` by one recovered from the records it persisted."""
    net.nodes[node] = Node(node, range(net.size), random.Random(seed), net.config, net.traces[node].durable())
    net.traces[node] = Trace(records=list(net.traces[node].records))
    return net.nodes[node]
