"""gRPC errors people can act on: INVALID_ARGUMENT with google.rpc.BadRequest field violations."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


def invalid_argument(violations: Sequence[tuple[str, str]]) -> status_pb2.Status:
    """A status listing each (field, what is wrong); the message sums them up for plain clients."""
    bad_request = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    summary = "; ".join(f"{f}: {d}" for f, d in violations)
    return status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=summary, details=[detail])


async def abort_with(context: grpc.aio.ServicerContext, status: status_pb2.Status) -> None:
    await context.abort_with_status(rpc_status.to_status(status))


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """The field violations carried by an error, for clients and tests."""
    status = rpc_status.from_call(error)
    found: list[tuple[str, str]] = []
    for detail in status.details if status else []:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found += [(v.field, v.description) for v in bad_request.field_violations]
    return found
