"""Permanent identities: the cluster id and each member's id.

Both are 64-bit numbers fixed when a cluster is created and stored in every
member's data directory from then on.  At creation every server computes
them alone, from the same hostfile, and gets the same answer:

* the cluster id is a hash of the sorted ``(name, address)`` pairs, so two
  clusters that reuse server names on other addresses never take each
  other's messages;
* a member's id is a hash of the cluster id and its name.

Neither depends on the order of the hostfile's lines, and once stored they
no longer depend on the hostfile at all: addresses may change, lines may be
reordered.  Ids are never 0, which marks "none" on the wire.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from paxos.common.hostfile import Member
from paxos.common.limits import MAX_MEMBER_ID


def _hash64(*parts: str) -> int:
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).digest()
    # Keep ids within MAX_MEMBER_ID (the codec's bound) and never 0.
    return int.from_bytes(digest[:8], "big") % MAX_MEMBER_ID + 1


def cluster_id_for(members: Iterable[Member]) -> int:
    pairs = sorted(f"{m.name}={m.address}" for m in members)
    return _hash64("paxoskv-cluster", *pairs)


def member_id_for(cluster_id: int, name: str) -> int:
    return _hash64("paxoskv-member", format_id(cluster_id), name)


def bootstrap_ids(members: Iterable[Member]) -> tuple[int, dict[str, int]]:
    """The cluster id and every member's id for a new cluster."""
    members = list(members)
    cluster_id = cluster_id_for(members)
    ids = {m.name: member_id_for(cluster_id, m.name) for m in members}
    if len(set(ids.values())) != len(ids):  # 1 in 2^60 for five servers
        raise ValueError("two server names hash to the same member id; rename one of them")
    return cluster_id, ids


def format_id(value: int) -> str:
    """The form ids take in logs, the data dir and status: 16 hex digits."""
    return f"{value:016x}"


def parse_id(text: str) -> int:
    value = int(text, 16)
    if not 0 < value <= MAX_MEMBER_ID:
        raise ValueError(f"id {text!r} is out of range")
    return value
