"""paxos/common/limits.py refuses to load with limits that break a relation the code relies on."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from paxos.common import limits

SOURCE = Path(limits.__file__).read_text()


def _load(source: str) -> None:
    exec(compile(source, limits.__file__, "exec"), {"__name__": "paxos.common.limits_copy"})


def test_the_shipped_limits_keep_every_relation() -> None:
    _load(SOURCE)
    assert all(limits._RELATIONS.values())


@pytest.mark.parametrize(
    ("line", "changed", "relation"),
    [
        ("ELECTION_TICKS_MAX = 60", "ELECTION_TICKS_MAX = 30", "ELECTION_TICKS_MIN < ELECTION_TICKS_MAX"),
        ("LEASE_TICKS = 9", "LEASE_TICKS = 14", "LEASE_TICKS <= (ELECTION_TICKS_MIN // 2 - 2) * 0.9 / 1.1"),
        ("PROMOTION_LAG_SLOTS = 100", "PROMOTION_LAG_SLOTS = 5000", "PROMOTION_LAG_SLOTS <= SNAPSHOT_TAIL_SLOTS"),
        ("MAX_CATCHUP_TICKS = 1000", "MAX_CATCHUP_TICKS = 50", "LEADER_QUORUM_TIMEOUT_TICKS <= MAX_CATCHUP_TICKS"),
    ],
)
def test_a_limit_that_breaks_a_relation_stops_the_import(line: str, changed: str, relation: str) -> None:
    assert SOURCE.count(line) == 1, f"{line!r} is no longer in limits.py: update the test"
    with pytest.raises(AssertionError, match=re.escape(f"{relation} does not hold")):
        _load(SOURCE.replace(line, changed))
