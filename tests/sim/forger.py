"""Forged peer messages: what a hostile process could send to a peer port, each of which must be refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from paxos.common import limits
from paxos.consensus.messages import (
    Accept,
    AcceptedEntry,
    Ballot,
    CatchupReply,
    Heartbeat,
    HeartbeatAck,
    Message,
    Promise,
)
from paxos.server.codec import PeerCodec
from protos import peer_pb2
from tests.sim.units import SIM_CLUSTER_ID, sim_name

if TYPE_CHECKING:
    from tests.sim.host import Host
    from tests.sim.run import Simulation

# What each kind of forgery makes: what it is, its wire form, and the
# certificate it must come with (None: drawn by ``Forger._certificate``).
Made = tuple[str, peer_pb2.PeerMessage, str | None]


@dataclass(frozen=True)
class Forgery:
    what: str
    wire: peer_pb2.PeerMessage
    # The name on the member certificate that opened the stream it comes on.
    certificate: str


class Forger:
    """Builds messages that a hostile process could send to a peer port.

    The simulated servers run TLS, so a stream is opened only with a
    certificate of the cluster's CA that names a server: the forger holds
    one, mostly the claimed sender's own (a member gone wrong, or its key
    stolen), else another server's or that of a name no server has.  Each
    message is one that the ingress, the codec or the core must refuse:
    another cluster or receiver, a sender that is no member or the receiver
    itself, numbers out of range, oversized values, malformed bodies,
    ballots far above any seen, accepts beyond the window,
    self-contradicting promises, catch-up replies nobody asked for, and
    well-formed messages claiming a member other than the one the
    certificate names.  A forger holding the claimed sender's own
    certificate that guesses an outstanding catch-up request exactly could
    still be believed (nothing but that member's key tells its messages
    apart); it never guesses right here.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def make(self, host: Host) -> Forgery:
        rng = self.sim.rng
        kinds = (
            self._wire,
            self._far_ballot,
            self._far_accept,
            self._unsolicited_catchup,
            self._bad_promise,
            self._impersonation,
        )
        what, wire, certificate = rng.choice(kinds)(host)
        return Forgery(what, wire, certificate or self._certificate(wire.sender))

    def _certificate(self, claimed: int) -> str:
        """The certificate a forger opens its stream with: mostly the claimed sender's own."""
        rng = self.sim.rng
        draw = rng.random()
        if draw < 0.8:
            return sim_name(claimed)
        if draw < 0.9:
            return sim_name(rng.randrange(self.sim.size))
        return sim_name(self.sim.size + rng.randrange(100))  # a name no server has

    def _encoded(self, msg: Message, host: Host) -> peer_pb2.PeerMessage:
        """``msg`` as its claimed sender would send it, with that sender's incarnation."""
        sender = msg.sender
        stamp = self.sim.hosts[sender].stamp() if sender < self.sim.size else 1
        return PeerCodec(SIM_CLUSTER_ID, sender, (), stamp).encode(msg, host.id)

    def _member_other_than(self, host: Host) -> int:
        return self.sim.rng.choice([i for i in range(self.sim.size) if i != host.id])

    def _honest_wire(self, host: Host) -> peer_pb2.PeerMessage:
        sender = self._member_other_than(host)
        return self._encoded(Heartbeat(sender, Ballot(1, sender), 0, 1), host)

    def _wire(self, host: Host) -> Made:
        rng = self.sim.rng
        raw = self._honest_wire(host)
        kind = rng.randrange(9)
        if kind == 0:
            raw.cluster_id = SIM_CLUSTER_ID + 1
            what = "from another cluster"
        elif kind == 1:
            raw.receiver = self._member_other_than(host)
            what = "for another receiver"
        elif kind == 2:
            raw.sender = rng.choice([host.id, self.sim.size + rng.randrange(100)])
            what = f"from sender {raw.sender}"
        elif kind == 3:
            raw.heartbeat.ballot.round = rng.choice([2**64 - 1, limits.MAX_BALLOT_ROUND + 1])
            what = "ballot round out of range"
        elif kind == 4:
            raw.heartbeat.commit_index = limits.MAX_SLOT + 1 + rng.randrange(1000)
            what = "commit index out of range"
        elif kind == 5:
            raw.ClearField("heartbeat")
            raw.accept.ballot.round = 1
            raw.accept.ballot.node = raw.sender
            raw.accept.slot = rng.choice([0, limits.MAX_SLOT + 1])
            what = "accept slot out of range"
        elif kind == 6:
            raw.ClearField("heartbeat")
            raw.accept.ballot.round = 1
            raw.accept.ballot.node = raw.sender
            raw.accept.slot = 1
            if rng.random() < 0.05:
                raw.accept.value.commands.append(b"x" * (limits.MAX_COMMAND_BYTES + 1))
                what = "oversized command"
            else:
                raw.accept.value.commands.extend([b""] * (limits.MAX_BATCH_COMMANDS + 1))
                what = "too many commands in a slot"
        elif kind == 7:
            raw.ClearField("heartbeat")
            entries = [peer_pb2.Entry(slot=s) for s in (1, 3)]
            raw.catchup_reply.CopyFrom(peer_pb2.CatchupReply(entries=entries, commit_index=3))
            what = "catch-up entries not consecutive"
        else:
            raw.ClearField("heartbeat")
            what = "no body"
        return what, raw, None

    def _far_ballot(self, host: Host) -> Made:
        core = host.core
        assert core is not None
        sender = self._member_other_than(host)
        rnd = core._max_round_seen + limits.MAX_ROUND_STEP + 1 + self.sim.rng.randrange(1000)
        msg = Heartbeat(sender, Ballot(min(rnd, limits.MAX_BALLOT_ROUND), sender), 0, 1)
        return f"ballot round {msg.ballot.round}", self._encoded(msg, host), None

    def _far_accept(self, host: Host) -> Made:
        core = host.core
        assert core is not None
        sender = self._member_other_than(host)
        slot = core.commit_index + limits.MAX_ACCEPT_WINDOW + 1 + self.sim.rng.randrange(100_000)
        msg = Accept(sender, Ballot(max(core.promised.round, 1), sender), slot, (b"forged",), 0)
        return f"accept for slot {slot}", self._encoded(msg, host), None

    def _unsolicited_catchup(self, host: Host) -> Made:
        core = host.core
        assert core is not None
        rng = self.sim.rng
        sender = self._member_other_than(host)
        while True:
            first = core.commit_index + 1 + rng.randrange(1000)
            asked = (sender, first)
            if asked != core._catchup_asked and asked not in core._catchup_asked_before:
                break
        msg = CatchupReply(sender, first, ((b"forged",),), first)
        return f"catch-up reply from n{sender} for slot {first}", self._encoded(msg, host), None

    def _bad_promise(self, host: Host) -> Made:
        sender = self._member_other_than(host)
        ballot = Ballot(1, host.id)
        entry = AcceptedEntry(1, Ballot(2, sender), (b"forged",))
        msg = Promise(sender, ballot, 0, (entry,))
        return "promise reporting a ballot above its own", self._encoded(msg, host), None

    def _impersonation(self, host: Host) -> Made:
        """A harmless message claiming one member, on a stream another member's certificate opened.

        Only the ingress's certificate check refuses it: the codec and the
        core would take it (an acknowledgement of a heartbeat of no ballot,
        which changes nothing).
        """
        assert host.replica is not None
        others = sorted(i for i in host.replica.membership.ids if i != host.id)
        if len(others) < 2:
            return self._wire(host)
        claimed, holder = self.sim.rng.sample(others, 2)
        msg = HeartbeatAck(claimed, Ballot(0, 0), 0, 0)
        return f"n{claimed}'s heartbeat ack", self._encoded(msg, host), sim_name(holder)
