"""Simulated time, and the constants every part of the simulation shares.

Time is an integer number of microseconds since the run began; nothing in
the simulation reads a real clock.
"""

from __future__ import annotations

from paxos.common import limits

SECOND = 1_000_000
MS = 1_000
TICK_US = round(limits.TICK_SECONDS * SECOND)
# asyncio.sleep(TICK) wakes up to this late.
TICK_JITTER_US = TICK_US // 10
# The cluster id every simulated server is started with.
SIM_CLUSTER_ID = 0xC1A5_7E12


def fmt_time(us: int) -> str:
    return f"{us / SECOND:10.6f}s"


def sim_name(node: int) -> str:
    """A simulated server's name, as its hostfile line and its member certificate give it."""
    return f"n{node}"


def sim_address(node: int) -> str:
    """A simulated server's made-up peer address, as its hostfile line gives it (HOST:PORT)."""
    return f"10.0.{node // 250}.{node % 250 + 1}:7000"


def sim_origin(node: int) -> str:
    """Where a simulated server's peer streams come from, as the receiver names it (gRPC's peer, no port)."""
    return "ipv4:" + sim_address(node).rsplit(":", 1)[0]
