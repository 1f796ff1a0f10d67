"""The fixed parts of a server's gRPC endpoint: channel and server options, the services it offers, its version.

Shared by the running server, its peer channels, and the founding check
(paxos/server/founding.py), which serves on the same port before the server does.
"""

from __future__ import annotations

import errno
import socket

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from paxos.common import limits
from paxos.common.versions import RELEASE
from protos import kv_pb2, peer_pb2

GRPC_OPTIONS = [
    ("grpc.max_send_message_length", limits.MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", limits.MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    # Accept the peers' keepalive pings on idle streams instead of answering
    # them with GOAWAY "too_many_pings": the server's ping policy must allow a
    # ping at least as often as keepalive_time_ms above.  The key is gRPC's
    # GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, whose string has
    # no "recv" in it; a misspelt key is silently ignored (default 5 minutes).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# gRPC binds listeners with SO_REUSEPORT by default, so a second server on the
# same port would start and share the traffic; binding exclusively makes it fail.
GRPC_SERVER_OPTIONS = [*GRPC_OPTIONS, ("grpc.so_reuseport", 0)]
# The services this server offers: health reports on each of them (and on
# "", the whole server), reflection lists them for grpcurl and grpcui.
KV_SERVICE = kv_pb2.DESCRIPTOR.services_by_name["KV"].full_name
PEER_SERVICE = peer_pb2.DESCRIPTOR.services_by_name["Peer"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# The release this code is, from the code itself rather than the installed
# package's metadata: a tree run through PYTHONPATH beside another install
# (an older release in an upgrade test) must say which it is.
VERSION = RELEASE


async def set_health(servicer: health_aio.HealthServicer, status: int) -> None:
    for service in ("", KV_SERVICE, PEER_SERVICE):
        await servicer.set(service, status)


def bind_failure(listen: str) -> str:
    """Why gRPC could not bind ``listen``, found by trying a plain socket the same way."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    try:
        addresses = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (ValueError, OSError) as exc:
        return f"not a usable HOST:PORT ({exc})"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return "address in use (is another server listening on that port?)"
                return exc.strerror or str(exc)
    return "gRPC refused it (GRPC_VERBOSITY=debug tells why)"
