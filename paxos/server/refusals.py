"""Refused peer messages and client requests: counted, and logged once per sender and reason per interval."""

from __future__ import annotations

import logging
from collections.abc import Callable

from paxos.common import limits

log = logging.getLogger("paxos.server")


class RefusalLog:
    """Counts refused messages; logs each sender's reason once per interval."""

    MAX_KEYS = 1024  # distinct (sender, reason) pairs remembered for the log

    def __init__(self, clock: Callable[[], float], what: str = "peer message") -> None:
        self._clock = clock
        self._what = what
        self.counts: dict[tuple[str, str], int] = {}
        self._logged: dict[tuple[str, str], tuple[float, int]] = {}

    def note(self, peer: str, reason: str, detail: str) -> None:
        key = (peer, reason)
        if key not in self.counts and len(self.counts) >= self.MAX_KEYS:
            key = ("(others)", reason)  # a flood of new names must not grow this without bound
        self.counts[key] = count = self.counts.get(key, 0) + 1
        now = self._clock()
        last = self._logged.get(key)
        if last is None or now - last[0] >= limits.REFUSAL_LOG_SECONDS:
            since = count - last[1] if last else count
            log.warning("refused %d %s(s) from %s since last report: %s (%s)", since, self._what, peer, reason, detail)
            self._logged[key] = (now, count)
