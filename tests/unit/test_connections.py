"""When a leader hands over because clients cannot get in, and the connection bounds (plain calls)."""

from __future__ import annotations

from paxos.common import limits
from paxos.server.connections import ClientStarvation, connection_cap, server_options

STARVED = limits.CLIENT_STARVED_SECONDS


def test_a_full_leader_serving_nobody_hands_over_after_the_interval_and_starts_over() -> None:
    watch = ClientStarvation(cap=1000, baseline=0)
    assert not watch.observe(0.0, leading=True, descriptors=1000, served=7)
    assert not watch.observe(STARVED - 0.5, leading=True, descriptors=1100, served=7)
    assert watch.observe(STARVED + 0.1, leading=True, descriptors=1100, served=7)
    # Then a whole interval again before the next hand-over.
    assert not watch.observe(STARVED + 1.0, leading=True, descriptors=1100, served=7)
    assert watch.observe(2 * STARVED + 1.5, leading=True, descriptors=1100, served=7)


def test_no_hand_over_while_anything_is_served_below_the_cap_or_as_a_follower() -> None:
    watch = ClientStarvation(cap=1000, baseline=0)
    for second in range(int(4 * STARVED)):
        # Full, but a client request got through every second: clients are served.
        assert not watch.observe(float(second), leading=True, descriptors=1200, served=second)
    watch = ClientStarvation(cap=1000, baseline=0)
    for second in range(int(4 * STARVED)):
        # Nothing served (a quiet cluster), but connections are not at the cap.
        assert not watch.observe(float(second), leading=True, descriptors=999, served=0)
    watch = ClientStarvation(cap=1000, baseline=0)
    for second in range(int(4 * STARVED)):
        assert not watch.observe(float(second), leading=False, descriptors=1200, served=0)
        assert not watch.observe(float(second) + 0.5, leading=True, descriptors=None, served=0)


def test_the_cap_counts_above_the_descriptors_held_before_serving() -> None:
    watch = ClientStarvation(cap=1000, baseline=30)
    assert not watch.observe(0.0, leading=True, descriptors=1029, served=0)
    assert not watch.observe(2 * STARVED, leading=True, descriptors=1029, served=0)
    assert not watch.observe(2 * STARVED + 1, leading=True, descriptors=1030, served=0)
    assert watch.observe(3 * STARVED + 2, leading=True, descriptors=1030, served=0)


def test_connections_are_capped_below_the_open_file_limit() -> None:
    assert connection_cap(20_000) == 20_000 - limits.FD_HEADROOM
    assert connection_cap(100) == limits.MIN_CONNECTION_CAP
    options = dict(server_options(connection_cap(20_000)))
    assert options["grpc.max_allowed_incoming_connections"] == 20_000 - limits.FD_HEADROOM
    assert options["grpc.server_handshake_timeout_ms"] > 0 and options["grpc.max_connection_idle_ms"] > 0
