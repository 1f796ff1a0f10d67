"""The first_unacked a write carries: never above a write still open, brought up in steps."""

from __future__ import annotations

import random

from client import aio
from client.aio import FIRST_UNACKED_STEP, AsyncKVClient
from paxos.common import limits
from paxos.common.hostfile import Member


def _client() -> AsyncKVClient:
    kv = AsyncKVClient([Member("node1", "127.0.0.1", 1)])
    kv._session = aio._Session(1)  # as if registered
    return kv


def _open_seq(kv: AsyncKVClient) -> tuple[aio._Session, int, int]:
    """As ``AsyncKVClient._write`` numbers a write: a new session (here without the cluster) when the window is full."""
    assert kv._session is not None
    if kv._window_full(kv._session):
        kv._session = aio._Session(kv._session.id + 1)
    return kv._open_seq(kv._session)


def test_one_write_at_a_time_reports_in_steps() -> None:
    kv = _client()
    reported = []
    for _ in range(3 * FIRST_UNACKED_STEP):
        session, seq, first = _open_seq(kv)
        assert first <= seq
        reported.append(first)
        session.open.discard(seq)
    # It rises once a step, to the write being sent, and never falls.
    assert reported == sorted(reported)
    assert len(set(reported)) == 3
    assert reported[-1] > 2 * FIRST_UNACKED_STEP - 1


def test_never_above_an_open_write_and_the_window_holds() -> None:
    kv = _client()
    rng = random.Random(7)
    open_writes: list[tuple[aio._Session, int]] = []
    sessions = set()
    for _ in range(20_000):
        if open_writes and (len(open_writes) > 200 or rng.random() < 0.5):
            session, seq = open_writes.pop(rng.randrange(len(open_writes)))
            session.open.discard(seq)
            continue
        session, seq, first = _open_seq(kv)
        sessions.add(session.id)
        assert first <= min(session.open)
        assert first <= seq < first + limits.SESSION_WINDOW  # inside the servers' window
        open_writes.append((session, seq))
