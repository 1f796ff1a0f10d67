"""What the client's calls return, beyond plain values."""

from __future__ import annotations

from dataclasses import dataclass

from paxos.common.hostfile import Member

__all__ = ["ImageMatch", "unreachable_status"]


@dataclass(frozen=True)
class ImageMatch:
    hash: str  # the stored photo's hash, hex
    distance: int  # bits
    metadata: str


def unreachable_status(member: Member) -> dict[str, object]:
    """A server's entry in ``status()`` until it answers."""
    return {
        "name": member.name,
        "address": member.address,
        "reachable": False,
        "role": "down",
        "leader": "",
        "ballot": "",
        "commit_index": 0,
        "applied_index": 0,
    }
