"""Who may call the client API: the rule a TLS server applies, without the cryptography package.

Under ``--client-auth cert`` only a certificate naming ``paxoskv://client``
may call the client API (paxos/tlsfiles.py says what certificates name).
Kept apart from paxos/tlsserver.py so that a plaintext server starts without
importing cryptography.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc

from paxos.tlsfiles import is_client

CLIENT_AUTH_CERT = "cert"
CLIENT_AUTH_NONE = "none"
CLIENT_AUTH_MODES = (CLIENT_AUTH_CERT, CLIENT_AUTH_NONE)


class ClientApiGuard(grpc.aio.ServerInterceptor):
    """Under ``--client-auth cert``, the client API answers only callers with a client certificate.

    A member's certificate is verified by TLS as well, but it grants the peer
    stream, not the client API.  Other services (health, reflection) only
    need a certificate from the CA.
    """

    def __init__(self, service: str, on_refused: Callable[[grpc.aio.ServicerContext], None]) -> None:
        self._prefix = f"/{service}/"
        self._on_refused = on_refused

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(self._prefix):  # type: ignore[attr-defined]
            return handler
        return _guarded(handler, self._on_refused)


_NOT_A_CLIENT = "this server's client API needs a client certificate (client.pem from python -m paxos.certs)"


def _guarded(handler: Any, on_refused: Callable[[grpc.aio.ServicerContext], None]) -> Any:
    """``handler`` with the client-certificate check before its body, whatever kind of method it is."""

    async def admit(context: grpc.aio.ServicerContext) -> None:
        if not is_client(context.auth_context()):
            on_refused(context)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, _NOT_A_CLIENT)

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
