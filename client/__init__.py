"""paxoskv client: ``from client import KVClient, KVError, UnknownOutcome``."""

from client.images import ImageError
from client.kv import ImageMatch, InvalidRequest, KVClient, KVError, Unavailable, UnknownOutcome

__all__ = ["ImageError", "ImageMatch", "InvalidRequest", "KVClient", "KVError", "Unavailable", "UnknownOutcome"]
