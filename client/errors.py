"""The errors the client raises: ``from client import KVError, UnknownOutcome, ...``.

One module of their own, imported by every other module of the client, so
that the policy (``client.retry``), the asyncio client and its blocking
facade raise the same classes without importing one another.
"""

from __future__ import annotations

__all__ = ["InvalidRequest", "KVError", "SessionExpired", "Unavailable", "UnknownOutcome"]


class KVError(Exception):
    """The operation failed and was not applied."""


class UnknownOutcome(KVError):
    """A write may or may not have been applied (the client lost track of it)."""


class SessionExpired(UnknownOutcome):
    """The write's session expired: it was not applied now, and may have been before; open a new session."""


class Unavailable(KVError):
    """No server could complete the operation within the timeout."""


class InvalidRequest(KVError):
    """The request was refused as malformed; nothing was applied."""
