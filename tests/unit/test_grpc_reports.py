"""What a department's ReportStatus means before anything is recorded (services/workorder_bridge/grpc_api.py).
Pure: no server, no database."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from civicflow.department_systems import OUR_STATUSES
from civicflow.v1 import work_orders_pb2
from services.workorder_bridge.connector import ExternalUpdate
from services.workorder_bridge.grpc_api import OUR_STATUS_OF, report_violations, update_of

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)


def at(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def test_every_status_of_ours_has_its_enum_value() -> None:
    assert sorted(OUR_STATUS_OF.values()) == sorted(OUR_STATUSES)
    assert len(OUR_STATUS_OF) == len(work_orders_pb2.WorkOrderStatus.values()) - 1  # all but UNSPECIFIED


def test_a_report_in_our_words_or_theirs_becomes_one_update() -> None:
    ours = work_orders_pb2.ReportStatusRequest(
        department_id="water",
        external_id="WO-1",
        our_status=work_orders_pb2.WORK_ORDER_STATUS_DUPLICATE,
        changed_at=at(NOW),
        refers_to="CT-7",
        note="  same leak as CT-7 ",
    )
    assert report_violations(ours, NOW) == []
    assert update_of(ours) == ExternalUpdate("WO-1", "duplicate", NOW, "same leak as CT-7", None, "CT-7")
    theirs = work_orders_pb2.ReportStatusRequest(
        department_id="water", external_id="WO-1", their_status=" Crew Dispatched ", changed_at=at(NOW)
    )
    assert update_of(theirs).status == "Crew Dispatched" and update_of(theirs).note is None


def test_every_problem_of_a_report_is_named_at_once() -> None:
    bad = work_orders_pb2.ReportStatusRequest(department_id="water", note="\x00" * 3)
    assert [f for f, _ in report_violations(bad, NOW)] == ["external_id", "status", "changed_at", "note"]
