"""One operation run under the retry policy: ``with_retry``.

``client.retry.Retry`` decides where each attempt goes, how long it may take
and how long to pause after it; ``with_retry`` is the loop that asks it,
makes the attempt, tells it what came back and pauses, until the operation
succeeds or the policy gives up.  Every retried call of the library and of
the load generator runs in it; what differs between them (the call made,
how a reply is judged, what a leader hint names) comes in as functions.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from client.errors import InvalidRequest
from client.retry import Attempt, Outcome, Retry

__all__ = ["Attempted", "with_retry"]

S = TypeVar("S", bound=Hashable)  # how the caller names a server
R = TypeVar("R")  # what the operation returns


@dataclass(frozen=True)
class Attempted(Generic[R]):
    """What one attempt came back with."""

    outcome: Outcome
    hint: str = ""  # the leader the answer names, '' for none
    error: str = ""
    result: R | None = None  # what the operation returns, when this attempt ends it
    # End the operation with ``result`` once this attempt is recorded, whatever
    # its outcome (a read that settles for a follower's answer).
    final: bool = False


async def with_retry(
    retry: Retry[S, float],
    attempt: Callable[[Attempt[S, float]], Awaitable[Attempted[R]]],
    *,
    leader_named: Callable[[str], S | None],
    clock: Callable[[], float],
    pause: Callable[[float], Awaitable[object]] = asyncio.sleep,
    follow_hint: Callable[[str, S, Retry[S, float]], Awaitable[None]] | None = None,
    refused: Callable[[InvalidRequest], Awaitable[R | None]] | None = None,
    give_up: Callable[[], R] | None = None,
) -> R:
    """Make attempts as ``retry`` decides until one succeeds; the result of the one that ends the operation.

    ``attempt`` makes one attempt at a server.  ``leader_named`` turns the
    hint an answer carries into the server it names, if the caller knows
    one.  ``follow_hint(hint, server, retry)`` runs after each attempt,
    before its outcome is recorded (to learn of a leader the caller does
    not know).  A refusal as invalid raises ``InvalidRequest`` unless
    ``refused`` takes it: ``refused`` returns the operation's result, or
    None to try again after the policy's no-leader pause, or raises.  When
    time is up, ``give_up()`` is returned, else the policy's error raised.
    """
    while (next_attempt := retry.next_attempt(clock())) is not None:
        tried = await attempt(next_attempt)
        if follow_hint is not None:
            await follow_hint(tried.hint, next_attempt.server, retry)
        try:
            wait = retry.record(tried.outcome, clock(), leader_named(tried.hint), tried.error)
        except InvalidRequest as exc:
            if refused is None:
                raise
            settled = await refused(exc)
            if settled is not None:
                return settled
            wait = retry.timing.no_leader_backoff
        else:
            if tried.outcome is Outcome.OK or tried.final:
                assert tried.result is not None, "an attempt that ends the operation carries its result"
                return tried.result
        await pause(wait)
    if give_up is not None:
        return give_up()
    raise retry.give_up()
