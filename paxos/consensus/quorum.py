"""Who votes, and when enough of them agree.

The core never counts votes inline: it asks a ``MajorityConfig``.  Members
are opaque ids (see ``paxos.common.identity``), never positions in a file, so a
configuration is a set; changing the members later means handing the core a
new configuration, not renumbering anyone.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from paxos.consensus.messages import NodeId


class MajorityConfig:
    """A set of voting members; a quorum is any strict majority of them."""

    __slots__ = ("quorum_size", "voters")

    def __init__(self, voters: Iterable[NodeId]) -> None:
        self.voters: frozenset[NodeId] = frozenset(voters)
        if not self.voters:
            raise ValueError("a configuration needs at least one voter")
        self.quorum_size = len(self.voters) // 2 + 1

    def __contains__(self, member: object) -> bool:
        return member in self.voters

    def __len__(self) -> int:
        return len(self.voters)

    def __repr__(self) -> str:
        return f"MajorityConfig({sorted(self.voters)})"

    def is_quorum(self, members: Collection[NodeId]) -> bool:
        """Whether ``members`` include a majority of the voters (others are ignored)."""
        return sum(1 for m in members if m in self.voters) >= self.quorum_size

    def quorum_value(self, acked: Mapping[NodeId, int]) -> int:
        """The largest value that a quorum of voters has each reached, 0 if none.

        ``acked`` maps voters to a value that only grows (a sequence number,
        an index); voters missing from it count as 0.
        """
        values = sorted((acked.get(v, 0) for v in self.voters), reverse=True)
        return values[self.quorum_size - 1]
