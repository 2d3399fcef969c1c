"""gRPC CaseQueryService: GetCase by tracking number, from the read model."""

from __future__ import annotations

from datetime import datetime

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.grpc_errors import abort_with, invalid_argument
from civicflow.v1 import common_pb2, query_pb2, query_pb2_grpc
from services.query.projection import CaseRecord, TimelineEntry
from services.query.readmodel import find_by_tracking_number


def _timestamp(target: object, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)  # type: ignore[attr-defined]


def case_view(record: CaseRecord, timeline: list[TimelineEntry]) -> query_pb2.CaseView:
    view = query_pb2.CaseView(
        tracking_number=record.tracking_number or "",
        service_code=record.service_code or "",
        status=record.status,
        department_id=record.department_id or "",
        department_name=record.department_name or "",
        priority=record.priority or "",
        rule_id=record.rule_id or "",
        work_order_id=record.work_order_id or "",
        resolution=record.resolution or "",
        time_zone=record.time_zone or "",
        location=common_pb2.Location(lat=record.lat, long=record.long, address=record.address or ""),
    )
    _timestamp(view.submitted_at, record.submitted_at)
    _timestamp(view.due_at, record.due_at)
    for entry in timeline:
        line = view.timeline.add(stage=entry.stage, detail=entry.detail)
        line.at.FromDatetime(entry.at)
    return view


class CaseQueryServicer(query_pb2_grpc.CaseQueryServiceServicer):
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def GetCase(self, request: query_pb2.GetCaseRequest, context: grpc.aio.ServicerContext) -> query_pb2.CaseView:
        try:
            if len(request.tracking_number) > 32:  # parse would list every odd character it holds in the reply
                raise tracking.InvalidTrackingNumber("a tracking number is 7 letters and digits, like 4K7Q-M2D")
            number = tracking.parse(request.tracking_number)
        except tracking.InvalidTrackingNumber as exc:
            await abort_with(context, invalid_argument([("tracking_number", str(exc))]))
            raise
        async with self._engine.connect() as conn:
            found = await find_by_tracking_number(conn, number)
        if found is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no request with tracking number {number}; a new request can take a few seconds to appear",
            )
        assert found is not None
        return case_view(*found)
