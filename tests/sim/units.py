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
