"""Planted bugs (``--bug NAME``), which prove that the simulation's checks bite.

The core's (``paxos.consensus.planted.PlantedBug``) are switched on through
its ``Config``: each is a decision inside a step of the core.  Those of
``HostBug`` are planted here, from outside the shipped code, by wrapping
or subclassing what the simulator hands the replica:

* ``ack_before_fsync``: ``SimDisk`` reports every fsync done at once and
  flushes in the background, like a log written through a cache it wrongly
  believes durable;
* ``votes_before_fsync``: ``SimDisk.sync`` lets the waiting bundle's
  messages out as the fsync starts, as a replica that sent before syncing
  would (what ``Replica.drive`` must never do);
* ``snapshot_without_sessions``: ``SimDisk`` writes each snapshot without
  the exactly-once session table;
* ``nondeterministic_session_eviction``: ``ForgetfulStateMachine`` evicts
  sessions of its own choosing;
* ``skip_incarnation_check``: every host stamps its messages with the same
  incarnation, so nothing new is recorded or refused, and a server that
  lost its disk founds anew without asking;
* ``install_older_snapshot``: ``OlderSnapshotReplica`` installs a fetched
  snapshot older than its applied index;
* ``skip_certificate_check``: ``CertificateBlindIngress``, the server's peer
  ingress, takes a message from a stream opened with any member's
  certificate whichever member it claims to be from;
* ``snapshot_configuration_not_followed``: a host that installs a snapshot
  does not follow the configuration it holds (as the server did not, until
  the simulator ran its address book): a member added while it was away
  stays unknown to its address book, so nothing is sent to it;
* ``lease_from_ack``, ``lease_never_expires``, ``half_voters_quorum`` and
  ``snapshot_forgets_accepted``: the replica's core is a subclass of the
  shipped ``Node`` that wraps one step with the mistake (``mutate_core``),
  so the step itself is the code that ships.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from enum import Enum

from paxos.consensus.core import Node
from paxos.consensus.membership import Membership
from paxos.consensus.messages import HeartbeatAck, NodeId, Slot, Value
from paxos.consensus.planted import PlantedBug
from paxos.consensus.state import LeaderState
from paxos.kv.statemachine import Applied, StateMachine
from paxos.replica import FetchedSnapshot, Replica
from paxos.server.ingress import PeerIngress
from protos import peer_pb2


class HostBug(Enum):
    """Mistakes planted around the shipped code rather than in the core."""

    # The disk reports an fsync done before it is durable.
    ACK_BEFORE_FSYNC = "ack_before_fsync"
    # The replica's replies to peers (promises, accepted values) go out
    # while the fsync of the votes they report is still under way.
    VOTES_BEFORE_FSYNC = "votes_before_fsync"
    # Snapshots leave out the exactly-once session table.
    SNAPSHOT_WITHOUT_SESSIONS = "snapshot_without_sessions"
    # A replica evicts client sessions of its own choosing (ForgetfulStateMachine).
    NONDETERMINISTIC_SESSION_EVICTION = "nondeterministic_session_eviction"
    # Incarnations are neither recorded nor checked, and a server that lost
    # its disk founds anew without asking the others.
    SKIP_INCARNATION_CHECK = "skip_incarnation_check"
    # The replica installs a fetched snapshot older than its applied index.
    INSTALL_OLDER_SNAPSHOT = "install_older_snapshot"
    # The peer ingress does not hold a member's certificate to the sender
    # its messages claim (CertificateBlindIngress).
    SKIP_CERTIFICATE_CHECK = "skip_certificate_check"
    # A server that installs a snapshot does not follow the configuration it
    # holds: the address book and the codec keep the one from before.
    SNAPSHOT_CONFIGURATION_NOT_FOLLOWED = "snapshot_configuration_not_followed"
    # Classic mistakes of the core's own steps, planted around them
    # (``mutate_core``): the read lease measured from when a quorum's
    # acknowledgement arrived rather than from when the heartbeat was sent;
    # a leader that always believes it holds its lease; quorums of half
    # the voters when they are an even number; installing a snapshot
    # forgets the values accepted above it too.
    LEASE_FROM_ACK = "lease_from_ack"
    LEASE_NEVER_EXPIRES = "lease_never_expires"
    HALF_VOTERS_QUORUM = "half_voters_quorum"
    SNAPSHOT_FORGETS_ACCEPTED = "snapshot_forgets_accepted"


Bug = PlantedBug | HostBug
HOST_BUGS = frozenset(HostBug)
# Every bug by its name, as --bug and the tests name it.
ALL_BUGS: dict[str, Bug] = {bug.value: bug for bug in (*PlantedBug, *HostBug)}
# The one incarnation every data dir sends under skip_incarnation_check.
SKIPPED_INCARNATION = 1


def planted(bugs: Iterable[str | Bug]) -> frozenset[Bug]:
    """The bugs named (or given); ValueError for a name that is none."""
    bugs = list(bugs)
    unknown = sorted(b for b in bugs if isinstance(b, str) and b not in ALL_BUGS)
    if unknown:
        raise ValueError(f"unknown planted bugs {unknown}; choose from {sorted(ALL_BUGS)}")
    return frozenset(ALL_BUGS[b] if isinstance(b, str) else b for b in bugs)


def names(bugs: Iterable[str | Bug]) -> tuple[str, ...]:
    """The bugs' names, sorted, each once."""
    return tuple(sorted({b if isinstance(b, str) else b.value for b in bugs}))


class ForgetfulStateMachine(StateMachine):
    """The planted bug ``nondeterministic_session_eviction``: now and then, a
    replica evicts a session of its own random choosing, as one that evicted
    by its own clock or memory pressure would.  Replicas then disagree on
    which writes a session refuses, and on the session table."""

    EVICT_CHANCE = 0.05  # per applied slot

    rng: random.Random | None = None

    def apply(self, slot: Slot, value: Value) -> list[Applied]:
        results = super().apply(slot, value)
        sessions = [key for key, _, _ in self.session_table()]
        if self.rng is not None and sessions and self.rng.random() < self.EVICT_CHANCE:
            victim = self.rng.choice(sessions)
            del self._sessions[victim]
            del self._lru[victim]
        return results


class OlderSnapshotReplica(Replica):
    """The planted bug ``install_older_snapshot``: a fetched snapshot is installed even when it is
    older than the state it replaces (a transfer may deliver the source's older snapshot)."""

    def _moves_forward(self, got: FetchedSnapshot) -> bool:
        return True


class CertificateBlindIngress(PeerIngress):
    """The planted bug ``skip_certificate_check``: a stream opened with a member's certificate
    may claim to be any member, as if TLS proved only that the caller belongs to the cluster.
    (A certificate of a name no member has is still held to the ids no known member has.)"""

    def receive(
        self, raw: peer_pb2.PeerMessage, origin: str = "", certified: NodeId | None = None, cert_name: str = ""
    ) -> None:
        if self.member_certified(cert_name, "")[0] is not None:
            cert_name = ""
        super().receive(raw, origin, None, cert_name)


class LeaseFromAckNode(Node):
    """The planted bug ``lease_from_ack``: the lease runs from when a quorum's acknowledgement arrived.

    An acknowledgement that was slow to arrive then stretches the lease
    past the moment the followers stopped refusing a rival.
    """

    def _on_heartbeat_ack(self, msg: HeartbeatAck) -> None:
        lead = self._lead
        before = lead.lease_until if lead is not None else None
        super()._on_heartbeat_ack(msg)
        if lead is not None and lead.lease_until != before:
            lead.lease_until = max(lead.lease_until, self.now + self._lease_ticks)


class LeaseNeverExpiresNode(Node):
    """The planted bug ``lease_never_expires``: a leader always believes it holds its read lease."""

    def _holds_lease(self, lead: LeaderState) -> bool:
        return True


class HalfVotersQuorumNode(Node):
    """The planted bug ``half_voters_quorum``: quorums are counted wrong for even numbers of voters only."""

    def _set_membership(self, membership: Membership) -> None:
        super()._set_membership(membership)
        self.voters.quorum_size = (len(self.voters) + 1) // 2


class SnapshotForgetsAcceptedNode(Node):
    """The planted bug ``snapshot_forgets_accepted``: installing a snapshot forgets every accepted value,
    those above its index included, so a promise no longer reports them."""

    def install_snapshot(self, index: Slot, membership: Membership | None = None) -> None:
        self.accepted.clear()
        super().install_snapshot(index, membership)


CORE_MUTANTS: dict[HostBug, type[Node]] = {
    HostBug.LEASE_FROM_ACK: LeaseFromAckNode,
    HostBug.LEASE_NEVER_EXPIRES: LeaseNeverExpiresNode,
    HostBug.HALF_VOTERS_QUORUM: HalfVotersQuorumNode,
    HostBug.SNAPSHOT_FORGETS_ACCEPTED: SnapshotForgetsAcceptedNode,
}


def mutate_core(core: Node, bugs: frozenset[Bug]) -> None:
    """Make a replica's new core one with the planted core mutant, if any (one at a time).

    Its state is the shipped core's as the replica built it; only the one
    step the mutant wraps behaves differently from then on.
    """
    for bug, kind in CORE_MUTANTS.items():
        if bug in bugs:
            core.__class__ = kind
            if isinstance(core, HalfVotersQuorumNode):
                core.voters.quorum_size = (len(core.voters) + 1) // 2
            return
