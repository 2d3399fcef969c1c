"""gRPC CaseQueryService: GetCase by tracking number, from the read model, as the public may see it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import grpc
from sqlalchemy.ext.asyncio import AsyncEngine

from civicflow import tracking
from civicflow.city import CityProfile, PublicLocation
from civicflow.grpc_errors import abort_with, invalid_argument
from civicflow.notes import resident_text
from civicflow.v1 import common_pb2, query_pb2, query_pb2_grpc
from services.query.projection import CaseRecord, TimelineEntry
from services.query.public import point_said, public_place
from services.query.readmodel import find_by_tracking_number


def _timestamp(target: object, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)  # type: ignore[attr-defined]


def case_view(record: CaseRecord, timeline: list[TimelineEntry], precision: PublicLocation) -> query_pb2.CaseView:
    """The public view of a case: its location only as precise as the city file allows for its service."""
    view = query_pb2.CaseView(
        tracking_number=record.tracking_number or "",
        service_code=record.service_code or "",
        status=record.status,
        department_id=record.department_id or "",
        department_name=record.department_name or "",
        priority=record.priority or "",
        rule_id=record.rule_id or "",
        work_order_id=record.work_order_id or "",
        resolution=resident_text(record.resolution),  # also for rows projected before the rule
        time_zone=record.time_zone or "",
        satisfaction=record.satisfaction or 0,
    )
    place = public_place(precision, record.lat, record.long, record.address)
    if place is not None:
        view.location.CopyFrom(common_pb2.Location(lat=place.lat, long=place.long, address=place.address))
        view.point_source, view.unplaced = point_said(record)
    _timestamp(view.submitted_at, record.submitted_at)
    _timestamp(view.due_at, record.due_at)
    for entry in timeline:
        line = view.timeline.add(stage=entry.stage, detail=entry.detail)
        line.at.FromDatetime(entry.at)
    return view


class CaseQueryServicer(query_pb2_grpc.CaseQueryServiceServicer):
    def __init__(self, engine: AsyncEngine, city: Callable[[], CityProfile]) -> None:
        self._engine = engine
        self._city = city  # the city file as it is now (cityfile.CityFile.current)

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
        record, timeline = found
        return case_view(record, timeline, self._city().public_location(record.service_code or ""))
