"""Who a gRPC call comes from: the member or the admin its certificate (or signed proof) names, and its host.

Under ``--client-auth cert`` TLS verified the caller's certificate, and the
auth context names it; otherwise the caller signed its opening in the
call's metadata (paxos/server/tlsserver.py checks the signature).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import grpc

from paxos.common.tlsfiles import TlsError, is_admin, member_named
from paxos.server.tlsaccess import CLIENT_AUTH_CERT

if TYPE_CHECKING:  # the cryptography package is loaded only by servers that run TLS
    from paxos.server.tlsserver import ServerTls


def certified_name(tls: ServerTls, context: grpc.aio.ServicerContext) -> tuple[str | None, str]:
    """The member name a call's certificate (or signed proof) carries, or None and why not."""
    name = member_named(context.auth_context())
    if name is None and tls.client_auth != CLIENT_AUTH_CERT:
        try:
            name = tls.member_from_proof(context.invocation_metadata(), time.time())
        except TlsError as exc:
            return None, str(exc)
    return (name, "") if name is not None else (None, "no member certificate")


def certified_admin(tls: ServerTls, context: grpc.aio.ServicerContext) -> bool:
    """True when a call comes from the holder of admin.pem: by its TLS certificate, else by its signature."""
    if is_admin(context.auth_context()):
        return True
    if tls.client_auth == CLIENT_AUTH_CERT:
        return False  # gRPC asked for the certificate: it is in the auth context or nowhere
    try:
        tls.admin_from_proof(context.invocation_metadata(), time.time())
    except TlsError:
        return False
    return True


def without_port(peer: str) -> str:
    """A gRPC peer address without its port ("ipv4:10.0.0.5"), so that each new connection
    from one host counts and logs under one name."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
