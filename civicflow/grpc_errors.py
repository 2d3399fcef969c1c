"""gRPC errors people can act on: INVALID_ARGUMENT with google.rpc.BadRequest field violations."""

from __future__ import annotations

from collections.abc import Sequence

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# The status travels in the reply's trailers, which clients cap at 8 KiB by default: a request with a
# hundred problems gets the first few, each shortened, rather than a reply the client cannot read.
MAX_VIOLATIONS, MAX_FIELD_CHARS, MAX_DESCRIPTION_CHARS, MAX_SUMMARISED = 12, 80, 240, 3


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def invalid_argument(violations: Sequence[tuple[str, str]]) -> status_pb2.Status:
    """A status listing each (field, what is wrong); the message sums them up for plain clients."""
    listed = [(_shortened(f, MAX_FIELD_CHARS), _shortened(d, MAX_DESCRIPTION_CHARS)) for f, d in violations]
    if len(listed) > MAX_VIOLATIONS:
        listed = [*listed[: MAX_VIOLATIONS - 1], ("request", f"{len(violations) - MAX_VIOLATIONS + 1} more problems")]
    bad_request = error_details_pb2.BadRequest(
        field_violations=[error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in listed]
    )
    detail = any_pb2.Any()
    detail.Pack(bad_request)
    summary = "; ".join(f"{f}: {d}" for f, d in listed[:MAX_SUMMARISED])
    if len(listed) > MAX_SUMMARISED:
        summary += f"; and {len(listed) - MAX_SUMMARISED} more (see the field violations)"
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
