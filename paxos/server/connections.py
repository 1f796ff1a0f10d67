"""How many connections a server takes, and what it does when clients cannot get in.

Every accepted connection costs a file descriptor.  At start the server
raises its soft open-file limit to the hard limit, and tells gRPC to accept
at most that many less ``limits.FD_HEADROOM`` connections (the headroom is
for its own streams to peers, the data dir and the metrics HTTP server), to
close a connection that has not finished its handshake within
``limits.HANDSHAKE_SECONDS`` and one with no call open for
``limits.CONNECTION_IDLE_SECONDS``.

Someone who holds every connection gRPC allows still keeps clients out of
this server, while its open streams to its peers keep it leader.
``ClientStarvation`` notices that case and only that case: this server
leads, its descriptors are at the connection cap (counted above those it
held before serving), and it has served no client request for
``limits.CLIENT_STARVED_SECONDS``.  The server then
hands leadership over (``Node.step_down``), so that clients find another
leader.  A healthy cluster never meets all three at once, and a server that
stepped down stays out of elections for a while, so this cannot flap.
"""

from __future__ import annotations

import logging
import os
import resource

from paxos.common import limits

log = logging.getLogger("paxos.server")


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one; the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    if soft == resource.RLIM_INFINITY:
        return limits.MAX_INCOMING_CONNECTIONS + limits.FD_HEADROOM
    return soft


def connection_cap(open_file_limit: int) -> int:
    """The most connections gRPC accepts at once, under ``open_file_limit`` descriptors."""
    return max(min(open_file_limit - limits.FD_HEADROOM, limits.MAX_INCOMING_CONNECTIONS), limits.MIN_CONNECTION_CAP)


def server_options(cap: int) -> list[tuple[str, int]]:
    """The gRPC server options that bound its connections."""
    return [
        ("grpc.max_allowed_incoming_connections", cap),
        ("grpc.server_handshake_timeout_ms", int(limits.HANDSHAKE_SECONDS * 1000)),
        ("grpc.max_connection_idle_ms", int(limits.CONNECTION_IDLE_SECONDS * 1000)),
    ]


def open_descriptors() -> int | None:
    """How many file descriptors this process has open, or None where that cannot be read."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class ClientStarvation:
    """Decides, from plain observations once a second or so, when a leader should hand over."""

    def __init__(self, cap: int, baseline: int | None) -> None:
        """``baseline``: the descriptors the server holds before any connection (its files, its listener)."""
        self.cap = cap
        self._full_at = cap + (baseline or 0)
        self._served = -1
        self._since: float | None = None  # when it was first seen full and serving nobody

    def observe(self, now: float, leading: bool, descriptors: int | None, served: int) -> bool:
        """True when this leader has been full and has served no client for long enough; then it starts over."""
        full = leading and descriptors is not None and descriptors >= self._full_at
        if not full or served != self._served:
            self._served = served
            self._since = now if full else None
            return False
        if self._since is None:
            self._since = now
        if now - self._since < limits.CLIENT_STARVED_SECONDS:
            return False
        self._since = None
        return True
