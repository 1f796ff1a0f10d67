"""Data-dir incarnations: a server that forgot is never trusted again.

A member's id says which server it is; it does not say whether that server
still remembers what it promised and accepted.  A data dir lost and made
anew under the same name would come back as the same member with an empty
log, and two such members, or one and a lagging peer, could make a majority
that never saw an acknowledged write.  So every data dir gets a random
nonzero 64-bit *incarnation* when it is created, and every peer message
carries its sender's.

The ``IncarnationBook`` is what a server remembers of the others: for each
member id, the incarnation it first heard from.  The host records a new
entry durably before the first message of that incarnation reaches the core,
and refuses every message whose incarnation differs from the one recorded.
Hence any vote of a data dir that was ever counted was counted by a server
that recorded its incarnation.

``decide_founding`` uses that: a server with an empty data dir, started
without ``--join``, asks the others what they recorded for it before it
founds anything.  An answer naming an earlier incarnation means the cluster
may have counted votes this data dir no longer holds: the server refuses to
start.  No answer naming one, from every other server, means no established
cluster could have counted a vote of it.  Neither do answers from a
majority of the hostfile, not counting the asker, that they are fresh: every
quorum holds one of them, and a fresh server took part in no quorum, so
nothing was ever chosen or promised by a quorum.  The asker does not count
itself: it cannot vouch for what its lost data dir voted for (with it, two
fresh servers of three would found over the third and the lost one's
chosen values).  A server that founded a moment ago and has heard from no
peer, and holds nothing chosen or accepted, still answers "fresh": it took
part in no quorum, and servers started together must found whichever asks
first.  The rule takes a majority of the hostfile to keep its data, as the
design does: it cannot tell a cluster whose majority lost its disks from
one never started.

Pure code: no I/O, so the gRPC server and the simulator both run it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from paxos.common import limits
from paxos.consensus.messages import NodeId

NONE = 0  # "no incarnation" on the wire and in answers


def new_incarnation() -> int:
    """A random incarnation for a new data dir: 64 bits, never 0."""
    while True:
        value = int.from_bytes(os.urandom(8), "big")
        if value != NONE:
            return value


def valid(incarnation: int) -> bool:
    return 0 < incarnation <= limits.MAX_INCARNATION


class Verdict(Enum):
    KNOWN = "known"  # the recorded incarnation: let it through
    NEW = "new"  # first heard: record it durably, then let it through
    REFUSED = "refused"


class IncarnationBook:
    """Per member id, the incarnation first heard from it (see the module docstring)."""

    def __init__(self, recorded: Mapping[NodeId, int] | None = None) -> None:
        self.recorded: dict[NodeId, int] = dict(recorded or {})
        assert all(valid(i) for i in self.recorded.values()), "a recorded incarnation out of range"

    def judge(self, member: NodeId, incarnation: int) -> Verdict:
        known = self.recorded.get(member)
        if known is None:
            if not valid(incarnation) or len(self.recorded) >= limits.MAX_INCARNATION_BOOK:
                return Verdict.REFUSED
            return Verdict.NEW
        return Verdict.KNOWN if known == incarnation else Verdict.REFUSED

    def record(self, member: NodeId, incarnation: int) -> None:
        """Note ``incarnation`` for ``member`` (only once it is durable)."""
        assert self.judge(member, incarnation) is Verdict.NEW, "recorded twice, or over a different incarnation"
        self.recorded[member] = incarnation

    def recorded_for(self, ids: Iterable[NodeId]) -> int:
        """The incarnation recorded under any of ``ids``, or NONE."""
        for member in ids:
            known = self.recorded.get(member)
            if known is not None:
                return known
        return NONE


# ----------------------------------------------------------- founding check


@dataclass(frozen=True, slots=True)
class FoundingAnswer:
    """What another server of the hostfile said when asked about this one."""

    fresh: bool  # it has no data dir yet either
    recorded: int  # the incarnation it recorded for this server, or NONE


class Founding(Enum):
    FOUND = "found"  # write the meta file and start
    REFUSE = "refuse"  # an earlier data dir of this server was heard from
    WAIT = "wait"  # ask again


@dataclass(frozen=True, slots=True)
class FoundingDecision:
    verdict: Founding
    why: str


def decide_founding(me: str, hostfile: Iterable[str], answers: Mapping[str, FoundingAnswer]) -> FoundingDecision:
    """Whether a server with an empty data dir, started without --join, may found the cluster.

    ``answers``: the servers of the hostfile that answered, by name.
    """
    names = sorted(set(hostfile))
    assert me in names, "the asking server is not in the hostfile"
    others = [n for n in names if n != me]
    remembered = sorted(n for n in others if n in answers and answers[n].recorded != NONE)
    if remembered:
        return FoundingDecision(
            Founding.REFUSE,
            f"{', '.join(remembered)} heard from an earlier data dir of {me}, which this one does not hold",
        )
    missing = [n for n in others if n not in answers]
    if not missing:
        return FoundingDecision(Founding.FOUND, "every other server answered and none heard from this one before")
    # Not counting itself: its own past is what is in question.
    fresh = sum(1 for n in others if n in answers and answers[n].fresh)
    if fresh > len(names) // 2:
        return FoundingDecision(
            Founding.FOUND,
            f"{fresh} other servers of {len(names)} have no data yet, a majority: no cluster to have forgotten",
        )
    members = sorted(n for n in others if n in answers and not answers[n].fresh)
    why = f"waiting for {', '.join(missing)} to answer"
    if members:
        held = ", ".join(members)
        why += f" (data held by {held}, which did not hear from {me}; {fresh} others fresh, not a majority)"
    return FoundingDecision(Founding.WAIT, why)
