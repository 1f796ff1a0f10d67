"""The long-run benchmark's verdicts on made-up rows, its victim rotation and plot ticks (no speed assertions).

A small real run end to end is tests/processes/test_longrun.py."""

from __future__ import annotations

from benchmarks.longrun import Restart, Row, ServerSample, next_victim, verdicts
from benchmarks.svgplot import nice_ticks


def _row(commands: int, rss: int, data: int, restart_seconds: float | None) -> Row:
    # The samples at the row are small: the verdicts go by the peaks between rows.
    samples = {name: ServerSample(1, 1, 1, 1, 1, rss, data) for name in ("node1", "node2", "node3")}
    return Row(commands, 1.0, 1.0, samples, "node1", Restart("node2", 0.5, restart_seconds, 1))


def test_the_verdicts_compare_the_end_with_the_baseline_row_and_bound_every_restart() -> None:
    steady = [_row(50, 10, 10, 1.0), _row(100, 40, 40, 1.0), _row(200, 70, 79, 4.9)]
    assert [v.passed for v in verdicts(steady, baseline_at=100)] == [True, True, True]
    grown = [_row(100, 40, 40, 1.0), _row(200, 81, 40, 1.0)]
    assert [v.passed for v in verdicts(grown, baseline_at=100)] == [False, True, True]
    # A shorter run than the baseline compares with its first row.
    bloated_disk = [_row(10, 40, 40, 1.0), _row(20, 40, 81, 1.0)]
    assert [v.passed for v in verdicts(bloated_disk, baseline_at=100)] == [True, False, True]
    slow = [_row(100, 40, 40, 5.0), _row(200, 40, 40, 1.0)]
    assert [v.passed for v in verdicts(slow, baseline_at=100)] == [True, True, False]
    never_caught_up = [_row(100, 40, 40, 1.0), _row(200, 40, 40, None)]
    assert verdicts(never_caught_up, baseline_at=100)[2].passed is False


def test_the_killed_follower_rotates_and_is_never_the_leader() -> None:
    names = ["node1", "node2", "node3", "node4", "node5"]
    victims = [next_victim(names, "node3", None)]
    for _ in range(4):
        victims.append(next_victim(names, "node3", victims[-1]))
    assert victims == ["node1", "node2", "node4", "node5", "node1"]
    # The leadership moved to the next in line: it is skipped, the rotation goes on.
    assert next_victim(names, "node2", "node1") == "node3"
    assert next_victim(names, "node1", "node5") == "node2"


def test_plot_ticks_cover_the_range_with_round_steps() -> None:
    assert nice_ticks(0, 1_000_000) == [0, 250_000, 500_000, 750_000, 1_000_000]
    ticks = nice_ticks(0.3, 4.7)
    assert ticks[0] <= 0.3 and ticks[-1] >= 4.7
