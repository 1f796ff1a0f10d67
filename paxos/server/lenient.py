"""Registering a generated gRPC servicer so that a request which does not parse is refused quietly.

gRPC logs a full traceback for every request its deserializer fails on;
here such a request is counted and logged once per sender and interval
(paxos/server/refusals.py) instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError as ProtobufDecodeError

from paxos.server.refusals import RefusalLog


@dataclass(frozen=True, slots=True)
class _Malformed:
    """A request whose bytes did not parse; it reaches no servicer method."""

    method: str
    detail: str


class LenientRegistrar:
    """Registers a generated servicer with request parsing that cannot raise.

    gRPC logs a full traceback for every request its deserializer fails on.
    Here a request that does not parse is counted and logged once per sender
    and interval instead: a unary call ends with INVALID_ARGUMENT, and a
    stream's message is dropped while the stream goes on.
    """

    def __init__(self, server: grpc.aio.Server, refusals: RefusalLog) -> None:
        self._server = server
        self._refusals = refusals
        self._registered = False

    def add(self, add_servicer: Callable[[Any, Any], None], servicer: object) -> None:
        add_servicer(servicer, self)
        if not self._registered:
            raise RuntimeError(f"{add_servicer.__name__} registered no method handlers; grpcio-tools changed")

    # The two calls generated code makes on a server.
    def add_generic_rpc_handlers(self, handlers: object) -> None:
        pass  # the same handlers arrive by name below, and are registered from there

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        wrapped = {name: self._wrap(f"{service}/{name}", h) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, wrapped),))
        self._server.add_registered_method_handlers(service, wrapped)
        self._registered = True

    def _wrap(self, method: str, handler: Any) -> Any:
        parse = handler.request_deserializer
        refusals = self._refusals

        def lenient(raw: bytes) -> object:
            try:
                return parse(raw)
            except ProtobufDecodeError as exc:
                return _Malformed(method, str(exc))

        async def parsed(requests: AsyncIterator[object], context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
            """A stream's messages, without those that did not parse (counted and logged)."""
            async for request in requests:
                if isinstance(request, _Malformed):
                    refusals.note(context.peer(), "malformed message", f"{request.method}: {request.detail}")
                    continue
                yield request

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: object, context: grpc.aio.ServicerContext) -> object:
                if isinstance(request, _Malformed):
                    refusals.note(context.peer(), "malformed request", f"{request.method}: {request.detail}")
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {request.method} request")
                return await inner(request, context)

            return handler._replace(request_deserializer=lenient, unary_unary=unary)
        if handler.stream_unary is not None:
            stream_inner = handler.stream_unary

            async def stream(requests: AsyncIterator[object], context: grpc.aio.ServicerContext) -> object:
                return await stream_inner(parsed(requests, context), context)

            return handler._replace(request_deserializer=lenient, stream_unary=stream)
        if handler.unary_stream is not None:
            unary_stream_inner = handler.unary_stream

            async def unary_stream(request: object, context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
                if isinstance(request, _Malformed):
                    refusals.note(context.peer(), "malformed request", f"{request.method}: {request.detail}")
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {request.method} request")
                async for reply in unary_stream_inner(request, context):
                    yield reply

            return handler._replace(request_deserializer=lenient, unary_stream=unary_stream)
        if handler.stream_stream is not None:
            both_inner = handler.stream_stream

            # An async generator function itself: gRPC asks which kind of handler it was given.
            async def both(requests: AsyncIterator[object], context: grpc.aio.ServicerContext) -> AsyncIterator[object]:
                async for reply in both_inner(parsed(requests, context), context):
                    yield reply

            return handler._replace(request_deserializer=lenient, stream_stream=both)
        raise TypeError(f"{method}: no lenient form for this kind of method")
