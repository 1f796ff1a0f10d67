"""paxoskv client: ``from client import KVClient, AsyncKVClient, KVError, UnknownOutcome``."""

from typing import TYPE_CHECKING

from client.aio import AsyncKVClient
from client.kv import ImageMatch, InvalidRequest, KVClient, KVError, Unavailable, UnknownOutcome

if TYPE_CHECKING:
    from client.images import ImageError

__all__ = [
    "AsyncKVClient",
    "ImageError",
    "ImageMatch",
    "InvalidRequest",
    "KVClient",
    "KVError",
    "Unavailable",
    "UnknownOutcome",
]


def __getattr__(name: str) -> object:
    # client.images imports numpy, scipy and imagehash; load them only when image code asks.
    if name == "ImageError":
        from client.images import ImageError

        return ImageError
    raise AttributeError(f"module 'client' has no attribute {name!r}")
