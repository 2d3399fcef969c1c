"""The gRPC guard on every server: undecodable requests and a servicer's surprises get statuses, not UNKNOWN."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from structlog.testing import capture_logs

from civicflow.grpc_errors import field_violations
from civicflow.runtime import build_grpc_server
from civicflow.settings import KernelSettings
from civicflow.v1 import query_pb2, query_pb2_grpc
from tests.grpc_metadata import access_for_tests, call_metadata

GET_CASE = "/civicflow.v1.CaseQueryService/GetCase"


class Failing(query_pb2_grpc.CaseQueryServiceServicer):
    async def GetCase(self, request: query_pb2.GetCaseRequest, context: grpc.aio.ServicerContext) -> query_pb2.CaseView:
        if request.tracking_number == "fail":
            raise RuntimeError('SELECT secret FROM intake.requests -- File "/work/x.py"')
        return query_pb2.CaseView(tracking_number=request.tracking_number)


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    servicer = Failing()
    server = await build_grpc_server(
        0,
        [
            (
                "civicflow.v1.CaseQueryService",
                lambda s: query_pb2_grpc.add_CaseQueryServiceServicer_to_server(servicer, s),
            )
        ],
        "guard-test",
        KernelSettings(),
        access_for_tests(),
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(grace=None)


@pytest.mark.parametrize("payload", [b"\x0a\x02\xff\xfe", b"\xff\xff\xff\xff", b"\x0a\x05ab"])
async def test_corrupt_bytes_or_invalid_utf8_are_an_invalid_argument_naming_the_message(
    channel: grpc.aio.Channel, payload: bytes
) -> None:
    send = channel.unary_unary(GET_CASE, request_serializer=None, response_deserializer=None)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await send(payload, metadata=call_metadata())
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(refused.value) == [
        ("request", "is not a valid GetCaseRequest (corrupt bytes or invalid UTF-8)")
    ]


async def test_an_exception_a_servicer_let_escape_is_internal_with_an_error_id_and_nothing_else(
    channel: grpc.aio.Channel,
) -> None:
    stub = query_pb2_grpc.CaseQueryServiceStub(channel)
    assert (
        await stub.GetCase(query_pb2.GetCaseRequest(tracking_number="ok"), metadata=call_metadata())
    ).tracking_number == "ok"
    with capture_logs() as logs, pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.GetCase(query_pb2.GetCaseRequest(tracking_number="fail"), metadata=call_metadata())
    assert failed.value.code() == grpc.StatusCode.INTERNAL
    details = failed.value.details() or ""
    assert "error id" in details
    assert not any(leak in details for leak in ("SELECT", "RuntimeError", "/work", "File"))
    [logged] = [entry for entry in logs if entry["event"] == "gRPC call failed"]
    assert logged["error_id"] in details and logged["error"] == "RuntimeError"
    assert "SELECT" not in str(logged), "the log carried the exception's message, which can hold personal data"


async def test_a_request_over_the_servers_limit_is_refused_by_grpc_itself(channel: grpc.aio.Channel) -> None:
    stub = query_pb2_grpc.CaseQueryServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetCase(query_pb2.GetCaseRequest(tracking_number="x" * (2 * 1024 * 1024)), metadata=call_metadata())
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
