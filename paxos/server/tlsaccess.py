"""Who may call the client API: the rule a TLS server applies, without the cryptography package.

Three roles (paxos/common/tlsfiles.py says what their certificates name):

* the admin (``admin.pem``) may call everything in the client API;
* a client (``client.pem``) may call all of it but ``ChangeMembers`` and
  ``Backup``: keys, photos, sessions, the member list and the status;
* a member (``NAME.pem``) may open peer streams, not the client API.

Under ``--client-auth cert`` only the admin's or a client's certificate
opens the client API.  Under ``--client-auth none`` any TLS caller may use
the client's part, and the admin proves itself by a signature in the call's
metadata (paxos/server/tlsserver.py), since gRPC then asks for no certificate.
Kept apart from paxos/server/tlsserver.py so that a plaintext server starts without
importing cryptography.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc

from paxos.common.tlsfiles import is_client

CLIENT_AUTH_CERT = "cert"
CLIENT_AUTH_NONE = "none"
CLIENT_AUTH_MODES = (CLIENT_AUTH_CERT, CLIENT_AUTH_NONE)
# The client API's methods that only the admin may call: they change who
# holds the data, or carry all of it away.
ADMIN_METHODS = frozenset({"ChangeMembers", "Backup"})
NOT_A_CLIENT = "no client certificate"
NOT_AN_ADMIN = "no admin certificate"

_Check = Callable[[grpc.aio.ServicerContext], bool]
_OnRefused = Callable[[grpc.aio.ServicerContext, str], None]


class ClientApiGuard(grpc.aio.ServerInterceptor):
    """The client API answers each method only to the roles allowed to call it (see the module docstring).

    ``is_admin`` tells whether a call comes from the admin; ``on_refused``
    counts and logs a refusal, with its reason (``NOT_A_CLIENT`` or
    ``NOT_AN_ADMIN``).  Other services (health, reflection) only need TLS.
    """

    def __init__(self, service: str, client_auth: str, is_admin: _Check, on_refused: _OnRefused) -> None:
        self._prefix = f"/{service}/"
        self._clients_need_certificate = client_auth == CLIENT_AUTH_CERT
        self._is_admin = is_admin
        self._on_refused = on_refused

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        method: str = details.method  # type: ignore[attr-defined]
        if handler is None or not method.startswith(self._prefix):
            return handler
        if method[len(self._prefix) :] in ADMIN_METHODS:
            return _guarded(handler, self._is_admin, NOT_AN_ADMIN, _NOT_AN_ADMIN, self._on_refused)
        if self._clients_need_certificate:
            return _guarded(handler, _has_client_certificate, NOT_A_CLIENT, _NOT_A_CLIENT, self._on_refused)
        return handler


_NOT_A_CLIENT = "this server's client API needs a client certificate (client.pem from python -m paxos.certs)"
_NOT_AN_ADMIN = (
    "changing the members and taking a backup need the admin certificate "
    "(admin.pem from python -m paxos.certs, in the client's TLS directory)"
)


def _has_client_certificate(context: grpc.aio.ServicerContext) -> bool:
    return is_client(context.auth_context())


def _guarded(handler: Any, allowed: _Check, reason: str, message: str, on_refused: _OnRefused) -> Any:
    """``handler`` with the check ``allowed`` before its body, whatever kind of method it is."""

    async def admit(context: grpc.aio.ServicerContext) -> None:
        if not allowed(context):
            on_refused(context, reason)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, message)

    def wrap(method: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(method):

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await admit(context)
                async for reply in method(request, context):
                    yield reply

            return guarded_stream

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await admit(context)
            return await method(request, context)

        return guarded

    kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
    return handler._replace(**{k: wrap(getattr(handler, k)) for k in kinds if getattr(handler, k) is not None})
