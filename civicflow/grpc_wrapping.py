"""How our server interceptors wrap a unary method: the same method, answered through another function."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import grpc

UnaryAnswer = Callable[[Any, grpc.aio.ServicerContext], Any]


async def answer_of(answer: UnaryAnswer, request: Any, context: grpc.aio.ServicerContext) -> Any:
    """What the wrapped method answers; grpc.aio takes plain functions as handlers as well as coroutines."""
    response = answer(request, context)
    if inspect.isawaitable(response):
        response = await response
    return response


def answered_by(
    handler: grpc.RpcMethodHandler,
    answer: UnaryAnswer,
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler:
    """A unary handler like `handler` (its serializers; its deserializer unless another is given) whose
    calls `answer` takes."""
    return grpc.unary_unary_rpc_method_handler(
        answer,
        request_deserializer=request_deserializer or handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
