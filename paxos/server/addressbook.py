"""Who is who: each member's name, id and address, following the configuration.

The data dir says who this server is; the configuration (in the log and
snapshots) who the members are; the hostfile where the servers it lists are
(it wins over the configuration's address, so a server may move), and the
configuration where the others are.  Pure: no gRPC, no asyncio.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from paxos.common.hostfile import HostfileError, Member, parse_address
from paxos.common.identity import format_id
from paxos.consensus.membership import Membership
from paxos.consensus.messages import NodeId
from paxos.storage.snapshot import SnapshotMember

log = logging.getLogger("paxos.server")


class AddressBook:
    """The names and addresses of everyone known, removed members included (for names)."""

    def __init__(self, hostfile: Mapping[str, Member]) -> None:
        self.hostfile = dict(hostfile)
        self.members: dict[NodeId, Member] = {}
        self.ids_by_name: dict[str, NodeId] = {}

    def follow(self, membership: Membership) -> None:
        """Know the names and addresses of ``membership``'s members.

        A name re-added after its removal is a new member with a new id: the
        old id is forgotten, so the name (and its certificate) means the new.
        """
        current = {cm.name: cm.id for cm in membership.members}
        for stale in [i for i, m in self.members.items() if current.get(m.name, i) != i]:
            del self.members[stale]
        for cm in membership.members:
            listed = self.hostfile.get(cm.name)
            if listed is not None:
                self.members[cm.id] = listed
            elif cm.address:
                try:
                    self.members[cm.id] = parse_address(cm.name, cm.address)
                except HostfileError as exc:
                    log.error("member %s has an address that cannot be used: %s", cm.name, exc)
        self.ids_by_name = {m.name: i for i, m in self.members.items()}

    def name_of(self, member_id: NodeId) -> str:
        member = self.members.get(member_id)
        return member.name if member is not None else format_id(member_id)

    def hint(self, member_id: NodeId | None) -> str:
        """The name to hand a client for a member (the leader) it should ask; "" when none is known."""
        return self.name_of(member_id) if member_id is not None else ""

    def ids_named(self, names: Iterable[str]) -> set[NodeId]:
        """The ids of the known members of these names; names of nobody known are left out."""
        index = {m.name: i for i, m in self.members.items()}
        return {index[n] for n in names if n in index}

    def snapshot_members(self) -> list[SnapshotMember]:
        """Everyone known, as a snapshot's header lists them."""
        return [SnapshotMember(i, m.name, m.address) for i, m in sorted(self.members.items())]
