"""Forged peer messages: what an outside process could send to a peer port, each of which must be refused."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from paxos.common import limits
from paxos.consensus.messages import Accept, AcceptedEntry, Ballot, CatchupReply, Heartbeat, Message, Promise
from paxos.server.codec import PeerCodec
from protos import peer_pb2
from tests.sim.units import SIM_CLUSTER_ID

if TYPE_CHECKING:
    from tests.sim.host import Host
    from tests.sim.run import Simulation


@dataclass(frozen=True)
class Forgery:
    what: str
    wire: peer_pb2.PeerMessage | None = None  # checked by the codec first
    message: Message | None = None  # well-formed: only the core can tell


class Forger:
    """Builds messages that an outside process could send to a peer port.

    Each is one that the codec or the core must refuse: another cluster or
    receiver, a sender that is no member or the receiver itself, numbers out
    of range, oversized values, malformed bodies, ballots far above any
    seen, accepts beyond the window, self-contradicting promises, and
    catch-up replies nobody asked for.  A forger that guesses an outstanding
    catch-up request exactly could still be believed; it never does here,
    because only authentication (TLS) can stop that.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    def make(self, host: Host) -> Forgery:
        rng = self.sim.rng
        kinds = (self._wire, self._far_ballot, self._far_accept, self._unsolicited_catchup, self._bad_promise)
        return rng.choice(kinds)(host)

    def _member_other_than(self, host: Host) -> int:
        return self.sim.rng.choice([i for i in range(self.sim.size) if i != host.id])

    def _honest_wire(self, host: Host) -> peer_pb2.PeerMessage:
        sender = self._member_other_than(host)
        ballot = Ballot(1, sender)
        codec = PeerCodec(SIM_CLUSTER_ID, sender, range(self.sim.size), self.sim.hosts[sender].stamp())
        return codec.encode(Heartbeat(sender, ballot, 0, 1), host.id)

    def _wire(self, host: Host) -> Forgery:
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
        return Forgery(what, wire=raw)

    def _far_ballot(self, host: Host) -> Forgery:
        core = host.core
        assert core is not None
        sender = self._member_other_than(host)
        rnd = core._max_round_seen + limits.MAX_ROUND_STEP + 1 + self.sim.rng.randrange(1000)
        msg = Heartbeat(sender, Ballot(min(rnd, limits.MAX_BALLOT_ROUND), sender), 0, 1)
        return Forgery(f"ballot round {msg.ballot.round}", message=msg)

    def _far_accept(self, host: Host) -> Forgery:
        core = host.core
        assert core is not None
        sender = self._member_other_than(host)
        slot = core.commit_index + limits.MAX_ACCEPT_WINDOW + 1 + self.sim.rng.randrange(100_000)
        msg = Accept(sender, Ballot(max(core.promised.round, 1), sender), slot, (b"forged",), 0)
        return Forgery(f"accept for slot {slot}", message=msg)

    def _unsolicited_catchup(self, host: Host) -> Forgery:
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
        return Forgery(f"catch-up reply from n{sender} for slot {first}", message=msg)

    def _bad_promise(self, host: Host) -> Forgery:
        sender = self._member_other_than(host)
        ballot = Ballot(1, host.id)
        entry = AcceptedEntry(1, Ballot(2, sender), (b"forged",))
        return Forgery("promise reporting a ballot above its own", message=Promise(sender, ballot, 0, (entry,)))
