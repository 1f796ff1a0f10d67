"""How a gRPC result becomes a ``client.retry`` outcome: ``classify``.

The one place where replies and transport errors are judged, for the
library and the load generator alike.
"""

from __future__ import annotations

from typing import Protocol

import grpc

from client.retry import Outcome, outcome_of_status

__all__ = ["Reply", "classify", "describe", "surely_not_delivered"]


class Reply(Protocol):
    """The fields every reply to a client request has."""

    status: int
    leader_hint: str
    error: str


def classify(result: Reply | grpc.RpcError) -> tuple[Outcome, str, str]:
    """What a call came back with: its outcome, the leader it names ('' for none) and the error.

    Of the transport errors only a refused connection and a name that does
    not resolve surely never reached a server; after any other a write may
    have been applied.
    """
    if isinstance(result, grpc.RpcError):
        delivery = Outcome.NOT_DELIVERED if surely_not_delivered(result) else Outcome.MAYBE_DELIVERED
        return delivery, "", describe(result)
    return outcome_of_status(result.status), result.leader_hint, result.error


def describe(err: grpc.RpcError) -> str:
    """One line for a failed call, from the threaded or the asyncio gRPC API."""
    call = isinstance(err, grpc.Call | grpc.aio.AioRpcError)
    code = err.code() if call else None
    details = err.details() if call else str(err)
    name = code.name.lower() if code else "error"
    return f"{name} ({details})" if details else name


# gRPC's words (lower case) for an UNAVAILABLE call that never had a connection:
# one refused, or a name that did not resolve (a stopped Docker container's
# name, a typo in the hostfile), in the wordings of the gRPC versions we allow.
_NEVER_CONNECTED = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "errors resolving",
    "name resolution failed",
    "domain name not found",
)


def surely_not_delivered(err: grpc.RpcError) -> bool:
    """True when the request certainly never reached a server."""
    if not isinstance(err, grpc.Call | grpc.aio.AioRpcError) or err.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (err.details() or "").lower()
    return any(words in details for words in _NEVER_CONNECTED)
