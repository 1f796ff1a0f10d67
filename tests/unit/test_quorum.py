"""Quorum arithmetic (paxos/consensus/quorum.py): a quorum is a strict majority, odd or even."""

from __future__ import annotations

import pytest

from paxos.consensus.quorum import MajorityConfig


@pytest.mark.parametrize(("voters", "quorum"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4), (8, 5)])
def test_a_quorum_is_a_strict_majority_of_the_voters(voters: int, quorum: int) -> None:
    config = MajorityConfig(range(voters))
    assert config.quorum_size == quorum
    # Two quorums always share a voter: that is what the size is for.
    assert 2 * config.quorum_size > voters


@pytest.mark.parametrize("voters", [2, 4, 6, 8])
def test_half_of_an_even_number_of_voters_is_not_a_quorum(voters: int) -> None:
    config = MajorityConfig(range(voters))
    half = list(range(voters // 2))
    assert not config.is_quorum(half)
    assert config.is_quorum([*half, voters - 1])
    # Members that do not vote add nothing, however many.
    assert not config.is_quorum([*half, *range(100, 110)])


def test_the_quorum_value_is_the_highest_that_a_majority_reached() -> None:
    four = MajorityConfig([1, 2, 3, 4])
    assert four.quorum_value({1: 9, 2: 7, 3: 5, 4: 1}) == 5
    assert four.quorum_value({1: 9, 2: 7}) == 0  # the others count as 0: half is not enough
    six = MajorityConfig(range(6))
    assert six.quorum_value({0: 6, 1: 5, 2: 4, 3: 3, 4: 2, 5: 1}) == 3
    assert six.quorum_value({0: 6, 1: 5, 2: 4, 99: 100}) == 0
    three = MajorityConfig([1, 2, 3])
    assert three.quorum_value({1: 4, 2: 2, 3: 8}) == 4


def test_a_configuration_without_voters_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one voter"):
        MajorityConfig([])
