"""One simulated server process: the shipped ``Replica`` on a simulated disk, network and clock."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paxos.common import limits
from paxos.common.hostfile import parse_address
from paxos.consensus.core import Node, Role
from paxos.consensus.membership import Membership
from paxos.consensus.messages import DurableState, Message, NodeId, Slot, Value
from paxos.kv import logcommand
from paxos.kv.statemachine import FrozenState
from paxos.replica import FetchedSnapshot, Observer, RegisterAnswer, Replica, Status, WriteAnswer
from paxos.server.addressbook import AddressBook
from paxos.server.codec import PeerCodec
from paxos.server.ingress import PeerIngress
from paxos.server.kvapi import wire_status, write_hints_leader
from paxos.server.refusals import RefusalLog
from paxos.server.roster import Roster
from paxos.server.standing import Standing
from paxos.storage.meta import Identity
from protos import peer_pb2
from tests.sim.bugs import SKIPPED_INCARNATION, CertificateBlindIngress, HostBug, OlderSnapshotReplica, mutate_core
from tests.sim.disk import SimDisk, thaw
from tests.sim.network import RESET, Request
from tests.sim.units import (
    MS,
    SECOND,
    SIM_CLUSTER_ID,
    TICK_JITTER_US,
    TICK_US,
    sim_address,
    sim_name,
    sim_origin,
)

if TYPE_CHECKING:
    from tests.sim.run import Simulation

# How often a snapshot transfer delivers the source's older snapshot rather
# than its newest, as a confused or hostile peer might.
STALE_SNAPSHOT = 0.2
# Fault injection's blocked senders: nobody, as on every server started
# without --fault-injection; the simulator cuts links in its network instead.
NOBODY_BLOCKED: frozenset[NodeId] = frozenset()
# Where forged messages come from.
FORGER_ORIGIN = "ipv4:192.0.2.66"


class SimRefusals(RefusalLog):
    """The server's refusal log, on the host's simulated clock, telling the host of every refusal.

    Its once-per-interval log lines read that clock, so they cannot change
    a run; the simulator quiets the logger during a run (``run.py``).
    """

    def __init__(self, host: Host) -> None:
        super().__init__(host.clock)
        self._host = host

    def note(self, peer: str, reason: str, detail: str) -> None:
        super().note(peer, reason, detail)
        self._host.ingress_refused(peer, reason, detail)


class Host(Observer):
    """One server process: the shipped ``Replica`` on a simulated disk, network and clock.

    Peer messages reach the replica as they do on a server: in wire form,
    through the server's peer ingress (paxos/server/ingress.py), while the
    server's roster (its address book and codec, paxos/server/roster.py)
    follows the configuration at the moments the server's does.  What stays
    here is what a process is and the simulator's bookkeeping: crashes and
    restarts, stalls (work piles up and runs in random order on resume), the
    clock's rate, and which client requests die with the process.
    """

    def __init__(self, sim: Simulation, node_id: int, tick_us: int) -> None:
        self.sim = sim
        self.id = node_id
        self.tick_us = tick_us  # this node's clock runs slightly fast or slow
        self.disk = SimDisk(self)
        self.up = False
        self.generation = 0
        self.replica: Replica | None = None
        self.store = thaw(None, self.store_rng())
        self.paused_until = 0
        self.deferred: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        self.requests: list[Request] = []  # received by this process, maybe unanswered
        # The data dir's incarnation: a new one with every disk (see lose_disk).
        self.incarnation = sim.new_incarnation()
        # The hostfile it is started with: the founding servers, and a spare
        # itself too (the operator's hostfile for a server started with --join).
        self.name = sim_name(node_id)  # its hostfile line's, and its member certificate's
        self.origin = sim_origin(node_id)  # where its peer streams come from
        listed = sorted({*range(sim.n), node_id})
        self.hostfile = {sim_name(i): parse_address(sim_name(i), sim_address(i)) for i in listed}
        # The peer side, made anew by every start as by a server process.
        self.roster = self.new_roster()
        self.ingress: PeerIngress | None = None
        self.received: Counter[NodeId] = Counter()  # messages the ingress let through, by sender
        # Started at least once: a spare is not, until it is added.
        self.active = False
        # The configuration a spare was given when it was added (what a
        # joining server learns from the cluster); the cluster's first one
        # for the others.
        self.joined_with = sim.bootstrap
        self.forged_refusal: str | None = None  # set while a forged message is handled

    @property
    def core(self) -> Node | None:
        return self.replica.core if self.replica is not None else None

    def store_rng(self) -> random.Random | None:
        """This replica's own random source for a state machine with the planted eviction bug, else None."""
        if HostBug.NONDETERMINISTIC_SESSION_EVICTION not in self.sim.planted:
            return None
        return random.Random(self.sim.rng.getrandbits(64))

    @property
    def durable(self) -> DurableState:
        return self.disk.durable

    # ---------------------------------------------------------- lifecycle

    def start(self) -> None:
        sim = self.sim
        self.up = True
        self.active = True
        self.generation += 1
        rng = random.Random(sim.rng.getrandbits(64))
        self.store = thaw(self.disk.snapshot, self.store_rng())
        # As PaxosServer.__init__ does: the roster follows the configuration
        # the server starts with, then the one its replica recovered.
        self.roster = self.new_roster()
        self.roster.follow(self.joined_with)
        kind = OlderSnapshotReplica if HostBug.INSTALL_OLDER_SNAPSHOT in sim.planted else Replica
        self.replica = kind(
            self.id,
            self.joined_with,
            self.disk.recovered(),
            storage=self.disk,
            transport=self,
            clock=self.clock,
            wake=self.wake,
            store=self.store,
            rng=rng,
            config=sim.config,
            observer=self,
            snapshot_every=sim.profile.snapshot_every,
            snapshot_tail=sim.profile.snapshot_tail,
        )
        mutate_core(self.replica.core, sim.planted)
        self.roster.follow(self.replica.membership)
        sim.steps.started(self)
        self.received = Counter()
        self.ingress = self.open_ingress(self.replica)
        self.paused_until = 0
        self.deferred = []
        sim.at(sim.now + self.tick_us, self.on_tick, self.generation)
        self.replica.drive()

    def new_roster(self) -> Roster:
        """An address book of this server's hostfile, and a codec that sends its data dir's incarnation."""
        return Roster(AddressBook(self.hostfile), PeerCodec(SIM_CLUSTER_ID, self.id, (), self.stamp()))

    def open_ingress(self, replica: Replica) -> PeerIngress:
        """The server's peer ingress, wired as PaxosServer wires it, under TLS.

        TLS is the shipped deployment's path (docker-compose.yml): the peer
        service hands the ingress the name on the certificate that opened
        the stream (``cert_name``), looked up in the address book for each
        message.
        """
        bug = HostBug.SKIP_CERTIFICATE_CHECK in self.sim.planted
        kind = CertificateBlindIngress if bug else PeerIngress
        return kind(
            replica,
            self.roster.codec,
            self.roster.book,
            self.standing(),
            SimRefusals(self),
            self.received,
            NOBODY_BLOCKED,
            tls=True,
        )

    def standing(self) -> Standing:
        """Who this server is, for the ingress; no data dir: only answering peers' questions reads it
        (the simulator asks none), and only ``Standing.follow`` writes one (it is not called here)."""
        founders = {sim_name(i): i for i in self.sim.bootstrap.ids}
        ids = founders if self.id in founders.values() else {sim_name(self.id): self.id}
        identity = Identity(SIM_CLUSTER_ID, self.id, ids, self.incarnation, joining=self.id not in self.joined_with.ids)
        return Standing(identity, self.hostfile[self.name], Path(f"/nonexistent/{self.name}"))

    def clock(self) -> float:
        """This node's monotonic clock, in seconds, running at its own rate."""
        return self.sim.now * TICK_US / self.tick_us / SECOND

    def crash(self) -> None:
        self.disk.crash()
        for req in self.pending_requests():
            self.sim.network.reply(req, RESET)
        self.requests = []
        self.up = False
        self.replica = None
        self.ingress = None
        self.generation += 1
        self.paused_until = 0
        self.deferred = []

    def pending_requests(self) -> Iterable[Request]:
        yield from (r for r in self.requests if not r.done)
        yield from (args[1] for fn, args in self.deferred if fn == self.sim.network.deliver_request)

    def defer(self, fn: Callable[..., None], *args: Any) -> bool:
        """A stalled process does nothing until it resumes; True if deferred."""
        if self.paused_until > self.sim.now:
            self.deferred.append((fn, args))
            return True
        return False

    def pause(self, until: int) -> None:
        if until > self.paused_until:
            self.paused_until = until
            self.sim.at(until, self.resume, self.generation)

    def resume(self, generation: int) -> None:
        if generation != self.generation or self.paused_until > self.sim.now:
            return
        work, self.deferred = self.deferred, []
        # After a stall the event loop finds the ticker and the sockets ready
        # at once and serves them in no fixed order: the overdue ticks may run
        # before or after the requests and messages that piled up meanwhile.
        rest = [w for w in work if w[0] != self.on_tick]
        for tick in (w for w in work if w[0] == self.on_tick):
            rest.insert(self.sim.rng.randint(0, len(rest)), tick)
        self.sim.log(self.id, "fault", f"resumes with {len(rest)} events piled up")
        for fn, args in rest:
            fn(*args)

    # ------------------------------------------- what the replica is given

    def on_tick(self, generation: int) -> None:
        if generation != self.generation or self.defer(self.on_tick, generation):
            return
        assert self.replica is not None
        self.replica.tick()
        # asyncio.sleep(TICK) overshoots a little; the next wake counts ticks.
        sim = self.sim
        sim.at(sim.now + self.tick_us + int(sim.rng.random() * TICK_JITTER_US), self.on_tick, generation)

    def wake(self) -> None:
        if self.replica is not None:
            self.replica.drive()

    def fsync_done(self, generation: int, done: Callable[[], None] | None) -> None:
        if generation != self.generation or self.defer(self.fsync_done, generation, done):
            return
        self.disk.complete()
        if done is not None:
            done()

    def send(self, messages: list[tuple[int, Message]]) -> None:
        """As the server's ``Peers.send``: encoded by the roster, to the members its book knows."""
        self.sim.steps.sending(self, messages)
        network = self.sim.network
        for to, wire in self.roster.envelopes(messages, NOBODY_BLOCKED):
            network.send(self.id, to, wire)

    def snapshot_written(self, generation: int, frozen: FrozenState, done: Callable[[bool], None]) -> None:
        if generation != self.generation or self.defer(self.snapshot_written, generation, frozen, done):
            return  # a crash while writing: the temp file is removed on restart
        self.disk.keep_snapshot(frozen)
        self.sim.stats["snapshots"] += 1
        self.sim.log(self.id, "disk", f"snapshot at slot {frozen.applied_index} durable")
        done(True)

    def fetch_snapshot(self, peer: int, after: Slot, done: Callable[[FetchedSnapshot | None], None]) -> None:
        """The peer's newest snapshot arrives in one piece after a while, or the transfer fails."""
        sim = self.sim
        source = sim.hosts[peer]
        frozen = source.disk.snapshot if source.up else None
        if frozen is not None and source.disk.previous_snapshot is not None and sim.rng.random() < STALE_SNAPSHOT:
            frozen = source.disk.previous_snapshot  # a stale copy: the replica must not go back to it
        network = sim.network
        lost = network.cut_between(peer, self.id) or frozen is None or sim.rng.random() < network.loss * 5
        when = sim.now + 4 * network.delay() + sim.rng.randint(0, 50 * MS)
        if lost and sim.rng.random() < 0.5:
            when = sim.now + round(limits.SNAPSHOT_CHUNK_SECONDS * SECOND)  # hung, then timed out
        sim.at(when, self.snapshot_arrived, self.generation, None if lost else frozen, after, done)

    def snapshot_arrived(
        self,
        generation: int,
        frozen: FrozenState | None,
        after: Slot,
        done: Callable[[FetchedSnapshot | None], None],
    ) -> None:
        if generation != self.generation or self.defer(self.snapshot_arrived, generation, frozen, after, done):
            return  # crashed mid-transfer: nothing was installed
        if frozen is None or frozen.applied_index <= after:
            done(None)
            return
        self.disk.keep_snapshot(frozen)  # durable before the replica hears of it
        self.sim.stats["snapshot_installs"] += 1
        self.sim.log(self.id, "disk", f"installed a peer's snapshot at slot {frozen.applied_index}")
        done(FetchedSnapshot(frozen.applied_index, thaw(frozen, self.store_rng())))

    def receive(self, wire: peer_pb2.PeerMessage) -> None:
        """A peer's message off the stream its member certificate opened, through the server's ingress."""
        assert self.ingress is not None
        sender = self.sim.hosts[wire.sender]
        self.ingress.receive(wire, sender.origin, cert_name=sender.name)

    def stamp(self) -> int:
        """The incarnation this host's messages carry.

        With the planted bug ``skip_incarnation_check`` every data dir sends
        the same one: the book records nothing new and refuses nothing, as
        if no check were made.
        """
        return SKIPPED_INCARNATION if self.sim.skip_incarnation_check else self.incarnation

    # ------------------------------------------------ what it reports back

    def role_changed(self, role: Role, leader: int | None) -> None:
        core = self.core
        assert core is not None
        self.sim.log(self.id, "role", f"{role.value} ballot {core.ballot}")
        if role is Role.LEADER:
            self.sim.stats["elections"] += 1
            self.sim.steps.leads(self)

    def applying(self, slot: Slot, value: Value) -> None:
        self.sim.checks.learn(self.id, slot, value)

    def membership_applied(self, slot: Slot, membership: Membership) -> None:
        assert self.replica is not None
        # As PaxosServer._membership_applied: the newest configuration
        # chosen, not the one just applied (a restart replays older ones).
        self.roster.follow(self.replica.membership)
        self.sim.log(self.id, "role", f"slot {slot}: configuration {membership.describe()}", slot=slot)

    def cluster_version_applied(self, slot: Slot, version: int) -> None:
        self.sim.log(self.id, "role", f"slot {slot}: cluster version {version}", slot=slot)

    def snapshot_installed(self, index: Slot, peer: int) -> None:
        assert self.replica is not None
        self.store = self.replica.store
        # As the server's observer does: the configuration the snapshot
        # holds is followed as if applied.
        if HostBug.SNAPSHOT_CONFIGURATION_NOT_FOLLOWED not in self.sim.planted:
            self.membership_applied(index, self.replica.membership)

    def refused(self, msg: Message, reason: str) -> None:
        if self.forged_refusal is not None:
            self.forged_refusal = reason
            return
        self.sim.checks.refused(self.id, msg, reason)

    def ingress_refused(self, peer: str, reason: str, detail: str) -> None:
        """The ingress (the codec's checks or the certificate's) refused a message."""
        if self.forged_refusal is not None:
            self.forged_refusal = reason
            return
        self.sim.checks.ingress_refused(self.id, peer, reason, detail)

    def receive_forged(self) -> None:
        """A hostile message, through the same checks as any peer message: it must be refused.

        It is made when it arrives, not when it was sent: a stalled process
        may have asked for a catch-up meanwhile that a reply made earlier
        would answer by chance.
        """
        if not self.up or self.ingress is None:
            return
        forgery = self.sim.forger.make(self)
        self.sim.log(self.id, "fault", f"forged message: {forgery.what} (certificate of {forgery.certificate})")
        self.forged_refusal = ""
        try:
            self.ingress.receive(forgery.wire, FORGER_ORIGIN, cert_name=forgery.certificate)
            refused = self.forged_refusal
        finally:
            self.forged_refusal = None
        if not refused:
            self.sim.violation("forgery", f"n{self.id} took a forged message: {forgery.what}")
        self.sim.stats["forged_refused"] += 1

    # ------------------------------------------------------ client requests

    def leader_hint(self) -> int | None:
        return self.core.leader if self.core is not None else None

    def on_request(self, req: Request) -> None:
        replica = self.replica
        assert replica is not None
        if len(self.requests) > 64:
            self.requests = [r for r in self.requests if not r.done]
        self.requests.append(req)
        # The server's own wait ends with the client's deadline; a request
        # that outlived it is dropped then (see ``expired``), unanswered.
        if req.register:
            replica.register(lambda answer: self.answer_register(req, answer))
        elif req.cmd is None:
            if replica.core.is_leader():
                # As Replica.read does first: a read index under the lease,
                # if the leader holds one, means no quorum round is asked
                # for (the index is answered at once, or once applied).
                replica.advance_clock()
                index = replica.core.lease_read_index()
                if index is not None:
                    self.sim.steps.lease_read(self, index)
            replica.read(lambda status: self.answer_read(req, status))
        else:
            # As the server does: the replica takes the log's copy of the client's command.
            replica.write(logcommand.from_client(req.cmd), lambda answer: self.answer_write(req, answer))

    def expired(self, req: Request) -> bool:
        if req.done:
            return True
        if self.sim.now > req.deadline:
            req.done = True
            return True
        return False

    def answer_write(self, req: Request, answer: WriteAnswer) -> None:
        if not self.expired(req):
            hint = self.leader_hint() if write_hints_leader(answer.status) else None
            self.sim.network.reply(req, wire_status(answer.status), removed=answer.removed, hint=hint)

    def answer_register(self, req: Request, answer: RegisterAnswer) -> None:
        if not self.expired(req):
            hint = self.leader_hint() if answer.status is Status.NOT_LEADER else None
            self.sim.network.reply(req, wire_status(answer.status), value=str(answer.session_id), hint=hint)

    def answer_read(self, req: Request, status: Status) -> None:
        if not self.expired(req):
            value = self.store.get(req.key) if status is Status.OK else None
            self.sim.network.reply(req, wire_status(status), value=value, hint=self.leader_hint())
