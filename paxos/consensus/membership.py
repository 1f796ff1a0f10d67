"""The cluster's configuration: who is a member, and which members vote.

A configuration is replicated like any other command: the leader proposes
the whole new membership, alone in its slot, and every replica switches to
it when that slot is chosen, so that slot ``s`` is decided by the voters of
the configuration chosen below ``s``.  How a configuration is written in a
slot is the log's business, not the core's: the core is handed a
``ConfigurationFormat`` (``Config.configurations``; the log's is
paxos/kv/configuration.py), as etcd's raft is handed typed entries rather
than parsing its payloads.
The rules that keep this safe are in docs/membership.md; the core enforces
them (paxos/consensus/core.py), this module only describes configurations and says
which changes are single steps.

A learner is a member that receives the log (and accepts values, so that it
has them durably) but whose acknowledgements never count towards a quorum
and who never campaigns.  A server joins as a learner, catches up, and is
then promoted; each of these is one change.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from paxos.common import limits
from paxos.consensus.messages import NodeId, Value


@dataclass(frozen=True, slots=True, order=True)
class ConfigMember:
    id: NodeId
    name: str
    address: str
    voter: bool = True


@dataclass(frozen=True)
class Membership:
    """One configuration: its members in id order."""

    members: tuple[ConfigMember, ...]

    def __post_init__(self) -> None:
        ids = [m.id for m in self.members]
        if ids != sorted(set(ids)):
            raise ValueError("members must be listed once each, in id order")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise ValueError("two members share a name")

    @classmethod
    def of(cls, members: Iterable[ConfigMember]) -> Membership:
        return cls(tuple(sorted(members)))

    @classmethod
    def of_voters(cls, ids: Iterable[NodeId]) -> Membership:
        """Voters known only by id (tests, and cores that never see names)."""
        return cls.of(ConfigMember(i, f"{i:x}", "") for i in set(ids))

    @property
    def ids(self) -> frozenset[NodeId]:
        return frozenset(m.id for m in self.members)

    @property
    def voters(self) -> frozenset[NodeId]:
        return frozenset(m.id for m in self.members if m.voter)

    @property
    def learners(self) -> frozenset[NodeId]:
        return frozenset(m.id for m in self.members if not m.voter)

    def get(self, member_id: NodeId) -> ConfigMember | None:
        for m in self.members:
            if m.id == member_id:
                return m
        return None

    def named(self, name: str) -> ConfigMember | None:
        for m in self.members:
            if m.name == name:
                return m
        return None

    def describe(self) -> str:
        return ", ".join(f"{m.name}{'' if m.voter else ' (learner)'}" for m in self.members)

    # ------------------------------------------------------------ changes

    def adding_learner(self, member: ConfigMember) -> Membership:
        return Membership.of((*self.members, ConfigMember(member.id, member.name, member.address, voter=False)))

    def promoting(self, member_id: NodeId) -> Membership:
        return Membership.of(ConfigMember(m.id, m.name, m.address, m.voter or m.id == member_id) for m in self.members)

    def removing(self, member_id: NodeId) -> Membership:
        return Membership.of(m for m in self.members if m.id != member_id)

    def step_error(self, new: Membership) -> str | None:
        """Why ``new`` is not one step from this configuration, or None.

        One step is: add one learner, promote one learner to voter, or
        remove one member.  Every step changes the voters by at most one
        member, so a quorum of the old voters and one of the new always
        share a member.  At least one voter always remains.
        """
        error = new.shape_error()
        if error:
            return error
        old_ids, new_ids = self.ids, new.ids
        added, removed = new_ids - old_ids, old_ids - new_ids
        changed = [m for m in new.members if m.id in old_ids and m != self.get(m.id)]
        if len(added) + len(removed) + len(changed) != 1:
            return "a change adds, promotes or removes exactly one member"
        if added:
            (member,) = (new.get(i) for i in added)
            assert member is not None
            if member.voter:
                return f"{member.name} must join as a learner and be promoted once it has caught up"
            if self.named(member.name) is not None:
                return f"a member named {member.name} is already in the configuration"
            if member.address and any(m.address == member.address for m in self.members):
                return f"address {member.address} is already a member's"
        if changed:
            (member,) = changed
            old = self.get(member.id)
            assert old is not None
            if old.voter or not member.voter or (old.name, old.address) != (member.name, member.address):
                return "the only change to a member is promoting a learner to voter"
        return None

    def shape_error(self) -> str | None:
        """Why this configuration cannot be used at all, or None."""
        if not self.voters:
            return "a configuration needs at least one voter"
        if len(self.members) > limits.MAX_MEMBERS:
            return f"a configuration holds at most {limits.MAX_MEMBERS} members"
        for m in self.members:
            if not 0 <= m.id <= limits.MAX_MEMBER_ID:  # real ids are never 0; the simulator's start there
                return f"member id {m.id} is out of range"
            if not m.name or len(m.name.encode()) > limits.MAX_MEMBER_NAME_BYTES:
                return f"member names are 1 to {limits.MAX_MEMBER_NAME_BYTES} bytes"
            if len(m.address.encode()) > limits.MAX_MEMBER_ADDRESS_BYTES:
                return f"member addresses are at most {limits.MAX_MEMBER_ADDRESS_BYTES} bytes"
        return None


class ConfigurationFormat(Protocol):
    """How configurations are written in the log's slots."""

    def encode(self, membership: Membership) -> Value:
        """The slot value that holds ``membership``, alone."""
        ...

    def decode(self, value: Value) -> Membership | None:
        """The configuration a slot holds, or None for anything else (client writes, or one unusable)."""
        ...


class _NoConfigurations:
    """For cores that never change their configuration (unit tests of the core alone)."""

    def encode(self, membership: Membership) -> Value:
        raise TypeError("this core was given no ConfigurationFormat (Config.configurations), so it cannot propose one")

    def decode(self, value: Value) -> Membership | None:
        return None


NO_CONFIGURATIONS: ConfigurationFormat = _NoConfigurations()
