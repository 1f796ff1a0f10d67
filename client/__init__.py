"""paxoskv client: ``from client import KVClient, AsyncKVClient, KVError, UnknownOutcome``.

``Member`` is one member of the cluster's configuration, as ``KVClient.members()`` reports it.
"""

from typing import TYPE_CHECKING

from client.aio import AsyncKVClient
from client.kv import ImageMatch, InvalidRequest, KVClient, KVError, SessionExpired, Unavailable, UnknownOutcome
from client.members import Member, SyncTimeout

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
