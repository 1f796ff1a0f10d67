"""This server's standing: who it is (its data dir's identity) and its place in the configuration.

A server started with ``--join`` is "joining" until a configuration holds
it, then a learner or a voter; one the configuration no longer holds is
"removed" and takes no further part.  Pure: no gRPC, no asyncio.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from paxos.common.hostfile import Member
from paxos.consensus.membership import Membership
from paxos.consensus.messages import NodeId, Slot
from paxos.storage.meta import Identity, mark_joined

log = logging.getLogger("paxos.server")


class Standing:
    """This server's identity, which changes once (when a joining server is added), and its membership state."""

    def __init__(self, identity: Identity, me: Member, data_dir: Path) -> None:
        self.identity = identity
        self.me = me
        self.data_dir = data_dir
        self._removed_logged = False

    @property
    def node_id(self) -> NodeId:
        return self.identity.member_id

    @property
    def cluster_id(self) -> int:
        return self.identity.cluster_id

    def state(self, membership: Membership) -> str:
        """This server's place in ``membership``: "member", "learner", "joining" or "removed"."""
        member = membership.get(self.node_id)
        if member is None:
            return "joining" if self.identity.joining else "removed"
        return "member" if member.voter else "learner"

    def follow(self, slot: Slot, in_configuration: bool) -> None:
        """A configuration was applied at ``slot``; ``in_configuration``: the newest chosen holds this server."""
        if in_configuration and self.identity.joining:
            self.joined()
        elif not in_configuration and not self.identity.joining and not self._removed_logged:
            self._removed_logged = True
            log.warning(
                "removed from the cluster at slot %d: this server takes no further part (its status says "
                "'removed'); stop it, and to bring it back give it a fresh --data-dir and --join",
                slot,
            )

    def joined(self) -> None:
        """The configuration holds this joining server now: it is a member from here on."""
        mark_joined(self.data_dir)
        self.identity = dataclasses.replace(self.identity, joining=False)
        log.info("added to the cluster: copying the log as a learner until promoted to voter")
