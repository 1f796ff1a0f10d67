"""The simulated network: peer links as FIFO streams with loss, duplication, reordering and cuts;
client calls and their transport errors.

Every peer link is one stream per direction, carrying each message in its
wire form (``peer_pb2.PeerMessage``, stamped with the sender's incarnation)
to the receiver's peer ingress.  A cut link either holds its
traffic until the cut heals (the stream survived) or drops it (the stream
was reset), chosen per direction, and comes back after its own reconnect
delay.  Clients sit on one side of a cut, and their connection attempts
across it are refused or dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from paxos.server.codec import decode_body
from protos import kv_pb2, peer_pb2
from tests.sim.trace import describe_message
from tests.sim.units import MS

if TYPE_CHECKING:
    from tests.sim.clients import Client
    from tests.sim.run import Simulation

# Client-visible outcomes beyond kv_pb2.Status: transport errors.
REFUSED = -1  # connection refused: the request surely never arrived
RESET = -2  # connection lost mid-call: a write may have been applied
DEADLINE = -3  # the attempt's deadline passed without an answer
# A peer link that was cut comes back within this long: each stream resumes
# after its own gRPC reconnect backoff or TCP retransmission timer.
RECONNECT_US = 150 * MS


@dataclass(slots=True)
class Request:
    """One client attempt as the server sees it."""

    client: Client
    attempt: int
    key: str
    cmd: kv_pb2.Command | None  # None for a linearizable get or a registration
    deadline: int
    register: bool = False
    node: int = -1
    done: bool = False


class Network:
    """Every link between the servers, and between the clients and the servers."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        p = sim.profile
        self.loss, self.duplicate, self.reorder = p.loss, p.duplicate, p.reorder
        self.latency_us, self.jitter_us = p.latency_us, p.jitter_us
        # The current partition: blocked node links (directed), those of
        # them that hold traffic until the heal (the stream survived and its
        # buffer drains) rather than drop it (the stream was reset), and
        # which client-to-node links are cut.
        self.blocked: set[tuple[int, int]] = set()
        self.holding: set[tuple[int, int]] = set()
        self.held: list[tuple[int, peer_pb2.PeerMessage]] = []
        self.link_ready: dict[tuple[int, int], int] = {}  # reconnecting links
        self.link_last: dict[tuple[int, int], int] = {}  # last delivery, for FIFO
        self.client_blocked: set[tuple[int, int]] = set()
        self.client_reject = False
        self.partition_id = 0
        # Slowed links (directed) and how much later than usual each
        # delivers: a congested direction of a stream, in order still.
        self.slow: dict[tuple[int, int], int] = {}

    def cut_between(self, a: int, b: int) -> bool:
        """Whether the link between two servers is cut in either direction."""
        return (a, b) in self.blocked or (b, a) in self.blocked

    # ------------------------------------------------------------ peer links

    def delay(self) -> int:
        # rng.random() rather than randrange: this is the hottest draw.
        return self.latency_us + int(self.sim.rng.random() * self.jitter_us)

    def send(self, src: int, dst: int, wire: peer_pb2.PeerMessage) -> None:
        sim = self.sim
        sim.stats["messages"] += 1
        if (src, dst) in self.blocked:
            self.cut(src, dst, wire)
            return
        rng = sim.rng
        if self.loss and rng.random() < self.loss:
            sim.stats["dropped"] += 1
            return
        if sim.verbose:
            sim.log(src, "msg", f"-> n{dst} {describe_wire(wire)}")
        when = sim.now + self.delay()
        link = (src, dst)
        if self.slow:
            when += self.slow.get(link, 0)
        if self.link_ready:
            # Queued in the peer link until it has reconnected.
            ready_at = self.link_ready.get(link)
            if ready_at is not None:
                if ready_at <= sim.now:
                    del self.link_ready[link]
                else:
                    when = max(when, ready_at + sim.profile.latency_us)
        if self.reorder and rng.random() < self.reorder:
            # Held back and overtaken by later messages on the same link.
            when += int(rng.random() * sim.profile.reorder_us)
        else:
            # A peer link is one stream: in order unless a fault says not.
            when = max(when, self.link_last.get(link, 0))
            self.link_last[link] = when
        sim.at(when, self.deliver, dst, wire)
        if self.duplicate and rng.random() < self.duplicate:
            sim.at(when + rng.randrange(sim.profile.reorder_us), self.deliver, dst, wire)

    def deliver(self, dst: int, wire: peer_pb2.PeerMessage) -> None:
        host = self.sim.hosts[dst]
        if not host.up or host.defer(self.deliver, dst, wire):
            return
        src = wire.sender
        if (src, dst) in self.blocked:  # cut while in flight
            self.cut(src, dst, wire)
            return
        if wire.incarnation != self.sim.hosts[src].stamp():
            # Sent by a data dir since lost: its process died with it, and
            # so did the connections its messages were queued on.
            return
        if self.sim.verbose:
            self.sim.log(dst, "msg", f"<- n{src} {describe_wire(wire)}")
        host.receive(wire)

    def cut(self, src: int, dst: int, wire: peer_pb2.PeerMessage) -> None:
        if (src, dst) in self.holding:
            self.held.append((dst, wire))
        else:
            self.sim.stats["dropped"] += 1

    # ---------------------------------------------------------- client calls

    def send_request(self, target: int, req: Request) -> None:
        req.node = target
        if (req.client.index, target) in self.client_blocked:
            if self.client_reject:
                self.sim.at(self.sim.now + self.delay(), req.client.on_reply, req.attempt, REFUSED, None, False, None)
            return  # else the client's attempt deadline notices
        if self.sim.rng.random() < self.sim.profile.client_loss:
            return
        self.sim.at(self.sim.now + self.delay(), self.deliver_request, target, req)

    def deliver_request(self, target: int, req: Request) -> None:
        host = self.sim.hosts[target]
        if (req.client.index, target) in self.client_blocked:
            return
        if not host.up:
            self.reply(req, REFUSED)
        elif not host.defer(self.deliver_request, target, req):
            host.on_request(req)

    def reply(
        self,
        req: Request,
        status: int,
        value: str | None = None,
        removed: bool = False,
        hint: int | None = None,
    ) -> None:
        req.done = True
        if (req.client.index, req.node) in self.client_blocked or self.sim.rng.random() < self.sim.profile.client_loss:
            return
        self.sim.at(self.sim.now + self.delay(), req.client.on_reply, req.attempt, status, value, removed, hint)

    # -------------------------------------------------------------- partitions

    def set_partition(
        self, blocked: set[tuple[int, int]], holding: set[tuple[int, int]], client_blocked: set[tuple[int, int]]
    ) -> None:
        old = self.blocked
        self.blocked, self.holding, self.client_blocked = blocked, holding, client_blocked
        self.partition_id += 1
        for link in sorted(old - blocked):
            self.link_ready[link] = self.sim.now + self.sim.rng.randrange(RECONNECT_US)
        # Traffic held by the previous cut drains, in order on every link,
        # once that link is back; the new cut may hold or drop it again.
        held, self.held = self.held, []
        for dst, wire in held:
            link = (wire.sender, dst)
            if link in blocked:
                self.cut(wire.sender, dst, wire)
            else:
                ready_at = self.link_ready.get(link, self.sim.now)
                when = max(ready_at + self.sim.profile.latency_us, self.link_last.get(link, 0))
                self.link_last[link] = when
                self.sim.at(when, self.deliver, dst, wire)

    def heal_partition(self, partition_id: int) -> None:
        if partition_id == self.partition_id:
            self.set_partition(set(), set(), set())
            self.sim.log(-1, "fault", "partition healed")

    def heal(self) -> None:
        """The network is whole again, and stays so: no more cuts, slow links, loss, duplicates or reordering."""
        self.set_partition(set(), set(), set())
        self.slow = {}
        self.loss = self.duplicate = self.reorder = 0.0


def describe_wire(wire: peer_pb2.PeerMessage) -> str:
    """An honest member's message for the trace, as the core message it carries."""
    return describe_message(decode_body(wire, wire.sender))
