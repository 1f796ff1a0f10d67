"""paxoskv client: ``from client import KVClient, AsyncKVClient, KVError, UnknownOutcome``.

``Member`` is one member of the cluster's configuration, as ``KVClient.members()`` reports it.
"""

from typing import TYPE_CHECKING

from client.aio import AsyncKVClient
from client.errors import InvalidRequest, KVError, SessionExpired, Unavailable, UnknownOutcome
from client.kv import KVClient
from client.members import Member, SyncTimeout
from client.results import ImageMatch

if TYPE_CHECKING:
    from client.images import ImageError

__all__ = [
    "AsyncKVClient",
    "ImageError",
    "ImageMatch",
    "InvalidRequest",
    "KVClient",
    "KVError",
    "Member",
    "SessionExpired",
    "SyncTimeout",
    "Unavailable",
    "UnknownOutcome",
]


def __getattr__(name: str) -> object:
    # client.images imports numpy, scipy and imagehash; load them only when image code asks.
    if name == "ImageError":
        from client.images import ImageError

        return ImageError
    raise AttributeError(f"module 'client' has no attribute {name!r}")
