"""Every unary gRPC call ends in a status a client can act on, never UNKNOWN, a stack trace or SQL."""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from uuid import uuid4

import grpc
import structlog
from sqlalchemy.exc import DBAPIError

from civicflow.grpc_errors import abort_with, invalid_argument
from civicflow.grpc_wrapping import answer_of, answered_by

log = structlog.get_logger(__name__)

# No request of ours comes near 1 MiB (intake refuses more than 64 KiB itself, with field violations);
# grpc-core answers a larger one with RESOURCE_EXHAUSTED before any servicer reads it.
MAX_RECEIVE_MESSAGE_BYTES = 1024 * 1024
# An API key and a deadline are a few hundred bytes; refuse a client that sends kilobytes of headers.
MAX_METADATA_BYTES = 16 * 1024
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_RECEIVE_MESSAGE_BYTES),
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    # grpc-core turns SO_REUSEPORT on by default: a second server on a taken port would then start and
    # quietly take half of the first one's calls (answering UNIMPLEMENTED). A taken port must fail.
    ("grpc.so_reuseport", 0),
]


def _kind(exc: BaseException) -> str:
    """What failed, for the log: the exception's kind (and the driver's, for a database error), never its
    message, which can hold what the resident sent (an address, an email) or the SQL with its values."""
    if isinstance(exc, DBAPIError):
        return f"{type(exc).__name__} ({type(exc.orig).__name__})"
    return type(exc).__name__


class Undecodable:
    """Stands in for a request whose bytes did not parse, so the call can be answered INVALID_ARGUMENT:
    grpcio answers a deserializer that raises with a bare UNKNOWN."""

    __slots__ = ("message_name",)

    def __init__(self, message_name: str) -> None:
        self.message_name = message_name


def _message_name(deserializer: Callable[[bytes], Any] | None) -> str:
    owner = getattr(deserializer, "__self__", None)  # the generated stubs pass Message.FromString
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return str(getattr(descriptor, "name", "message"))


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    name = _message_name(deserializer)

    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw)
        except Exception:  # DecodeError for corrupt bytes or invalid UTF-8; whatever it is, the bytes are bad
            return Undecodable(name)

    return deserialize


class RequestGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc.aio has no type hints
    """Answers undecodable requests with INVALID_ARGUMENT, and an exception a servicer did not turn into
    a status with INTERNAL and an error id, logged with the error's kind and where it was raised.
    Server-streaming methods of ours (WorkOrderSync.WorkOrders, async generators) are guarded the same way;
    other streaming methods (health Watch, reflection) pass through."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is not None and handler.unary_stream is not None and method.startswith("/civicflow."):
            return _guarded_stream(handler, method)
        if handler is None or handler.unary_unary is None:
            return handler
        answer = handler.unary_unary

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await _refuse_undecodable(request, context)
            try:
                return await answer_of(answer, request, context)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:
                await _internal(exc, method, context)

        return answered_by(handler, guarded, _tolerant(handler.request_deserializer))


async def _refuse_undecodable(request: Any, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, Undecodable):
        await abort_with(
            context,
            invalid_argument([("request", f"is not a valid {request.message_name} (corrupt bytes or invalid UTF-8)")]),
        )


async def _internal(exc: Exception, method: str, context: grpc.aio.ServicerContext) -> None:
    error_id = uuid4().hex[:12]
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
    log.error("gRPC call failed", method=method, error_id=error_id, error=_kind(exc), where=where)
    await context.abort(
        grpc.StatusCode.INTERNAL,
        f"the server could not answer this request; quote error id {error_id} when you report it",
    )


def _guarded_stream(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    stream: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Any]] = handler.unary_stream

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await _refuse_undecodable(request, context)
        try:
            async for message in stream(request, context):
                yield message
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:
            await _internal(exc, method, context)

    return grpc.unary_stream_rpc_method_handler(
        guarded,
        request_deserializer=_tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )
