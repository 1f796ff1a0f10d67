"""paxoskv client: ``from client import KVClient, KVError, UnknownOutcome``."""

from client.kv import InvalidRequest, KVClient, KVError, Unavailable, UnknownOutcome

__all__ = ["InvalidRequest", "KVClient", "KVError", "Unavailable", "UnknownOutcome"]
