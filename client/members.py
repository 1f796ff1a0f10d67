"""The cluster's membership as a client sees it, and the plan that moves it to a hostfile.

The configuration lives in the log (docs/membership.md): the leader changes
it one step at a time, each step atomic, on a ``ChangeMembers`` request.
This module holds what needs no network: the ``Member`` a client reports,
one server's answer to ``Members`` (a ``View``), the next step towards a
hostfile (``next_step``), and the checks before a removal.  The calls are
made by ``client.aio.AsyncKVClient`` (``members``, ``add_member``,
``promote_member``, ``remove_member``, ``sync_members``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from client.errors import InvalidRequest, KVError
from paxos.common import hostfile
from protos import kv_pb2

__all__ = ["SYNC_SECONDS", "Member", "Step", "SyncTimeout", "View", "next_step", "quorum"]

# How long sync_members may take by default: a learner may have a long log to catch up on.
SYNC_SECONDS = 300.0
# A server started with --join reports this membership until it is added.
JOINING = "joining"
# Words of the leader's refusals that pass by themselves: a learner still
# catching up, a change still in flight.  Sync waits and asks again.
_PASSING_REFUSALS = ("behind", "not finished")


@dataclass(frozen=True)
class Member:
    """One member of the configuration."""

    name: str
    address: str  # host:port
    voter: bool  # False: a learner, copying the log without voting
    leader: bool
    applied_index: int  # as the answering server knows it
    id: int


class SyncTimeout(KVError):
    """``sync_members`` could not finish in time; the configuration is a valid one on the way."""


def member_of(info: kv_pb2.MemberInfo) -> Member:
    return Member(info.name, info.address, info.voter, info.leader, info.applied_index, info.id)


@dataclass(frozen=True)
class View:
    """One server's answer to ``Members``."""

    members: tuple[Member, ...]
    cluster_id: int
    change_in_progress: bool
    from_leader: bool  # the answering server is the leader: its view is the one to trust

    @property
    def leader(self) -> Member | None:
        return next((m for m in self.members if m.leader), None)

    @property
    def voters(self) -> list[Member]:
        return [m for m in self.members if m.voter]

    def find(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    def describe(self) -> str:
        """The configuration in one line: ``n1 (voter, leader), n4 (learner)``."""
        parts = []
        for m in self.members:
            marks = ["voter" if m.voter else "learner"] + (["leader"] if m.leader else [])
            parts.append(f"{m.name} ({', '.join(marks)})")
        return ", ".join(parts) or "no members"


def view_of(reply: kv_pb2.MembersReply, answered_by: str) -> View:
    """``reply`` as a ``View``; ``answered_by`` is the name of the server that sent it."""
    members = tuple(sorted((member_of(m) for m in reply.members), key=lambda m: m.name))
    leads = any(m.leader and m.name == answered_by for m in members) or reply.leader_hint == answered_by
    return View(members, reply.cluster_id, reply.change_in_progress, from_leader=leads)


def passing_refusal(error: str) -> bool:
    """True for a refusal that time cures: a learner still behind, another change unfinished."""
    return any(words in error for words in _PASSING_REFUSALS)


def quorum(voters: int) -> int:
    """How many of ``voters`` voters make a majority."""
    return voters // 2 + 1


@dataclass(frozen=True)
class Step:
    """One membership change: add a learner, promote a learner, remove a member."""

    kind: Literal["add", "promote", "remove"]
    name: str
    address: str = ""  # for add

    def request(self, member_id: int = 0) -> kv_pb2.ChangeMembersRequest:
        if self.kind == "add":
            info = kv_pb2.MemberInfo(name=self.name, address=self.address, id=member_id)
            return kv_pb2.ChangeMembersRequest(add=info)
        if self.kind == "promote":
            return kv_pb2.ChangeMembersRequest(promote=self.name)
        return kv_pb2.ChangeMembersRequest(remove=self.name)

    def describe(self) -> str:
        if self.kind == "add":
            return f"adding {self.name} ({self.address}) as a learner"
        if self.kind == "promote":
            return f"promoting learner {self.name} to voter"
        return f"removing {self.name}"

    def done(self) -> str:
        if self.kind == "add":
            return f"{self.name} is a learner"
        if self.kind == "promote":
            return f"{self.name} is a voter"
        return f"{self.name} is removed"


def next_step(view: View, targets: Sequence[hostfile.Member]) -> Step | None:
    """The next change that brings ``view`` towards exactly ``targets``, all voters; None once there.

    Adding comes before removing, so the cluster never has fewer voters on
    the way than at either end: the hostfile's servers in its order, each
    added and then promoted, then the members it does not list, the leader
    last.  Raises ``InvalidRequest`` when the hostfile contradicts the
    configuration (a member's name at another address, an address taken by
    another member).
    """
    check_targets(view, targets)
    for target in targets:
        member = view.find(target.name)
        if member is None:
            return Step("add", target.name, target.address)
        if not member.voter:
            return Step("promote", target.name)
    wanted = {t.name for t in targets}
    extra = sorted((m for m in view.members if m.name not in wanted), key=lambda m: (m.leader, m.name))
    return Step("remove", extra[0].name) if extra else None


def check_targets(view: View, targets: Sequence[hostfile.Member]) -> None:
    """Refuse a hostfile that no sequence of steps can reach."""
    by_address = {m.address: m for m in view.members}
    for target in targets:
        member = view.find(target.name)
        if member is not None and member.address != target.address:
            raise InvalidRequest(
                f"{target.name} is a member at {member.address}, but the hostfile lists it at {target.address}; "
                f"a member keeps its address: fix the hostfile, or remove {target.name} and add it again"
            )
        holder = by_address.get(target.address)
        if holder is not None and holder.name != target.name:
            raise InvalidRequest(
                f"the hostfile lists {target.name} at {target.address}, which is member {holder.name}'s address; "
                f"remove {holder.name} first (members remove {holder.name}) or fix the hostfile"
            )


def check_addition(view: View, name: str, address: str) -> None:
    """Refuse to add a name or an address the configuration already has."""
    member = view.find(name)
    if member is not None:
        kind = "voter" if member.voter else "learner"
        raise InvalidRequest(f"{name} is already a member ({kind} at {member.address})")
    holder = next((m for m in view.members if m.address == address), None)
    if holder is not None:
        raise InvalidRequest(f"{address} is already the address of member {holder.name}")


def check_promotion(view: View, name: str) -> None:
    member = view.find(name)
    if member is None:
        raise InvalidRequest(f"no member named {name!r} (members: {view.describe()}); add it first")
    if member.voter:
        raise InvalidRequest(f"{name} is already a voter")


def remaining_voters(view: View, name: str) -> list[Member]:
    """The voters left after ``name`` is removed; ``InvalidRequest`` for an unknown name or the last voter."""
    member = view.find(name)
    if member is None:
        raise InvalidRequest(f"no member named {name!r} (members: {view.describe()})")
    left = [m for m in view.voters if m.name != name]
    if not left:
        raise InvalidRequest(f"{name} is the last voter; removing it would leave the cluster no voter")
    return left


def check_quorum_after_removal(name: str, left: Sequence[Member], answering: set[str]) -> None:
    """Refuse a removal after which the voters that answer now could not form a quorum."""
    up = [m.name for m in left if m.name in answering]
    needed = quorum(len(left))
    if len(up) < needed:
        down = [m.name for m in left if m.name not in answering]
        raise InvalidRequest(
            f"removing {name} would leave {len(left)} voters ({', '.join(m.name for m in left)}), "
            f"of which only {len(up)} answer{'s' if len(up) == 1 else ''} now"
            f"{' (' + ', '.join(up) + ')' if up else ''}; a quorum needs {needed}: "
            f"start {', '.join(down)} first"
        )
