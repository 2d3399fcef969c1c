"""The survey on the read model: the first score is kept and shown in the case view and by `civicflow track`,
with timeline lines that say nothing personal."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from civicflow.cli.calltaker import satisfaction_line
from civicflow.events import CaseResolved, CaseSubmitted, Location, SurveyAnswered, SurveySent
from services.query.grpc_api import case_view
from services.query.projection import CaseRecord, apply
from tests.factories import recorded

AT = datetime(2026, 11, 23, 16, 0, tzinfo=UTC)


def test_the_first_answer_is_the_cases_satisfaction_and_the_view_shows_it() -> None:
    case_id = uuid4()
    life = [
        CaseSubmitted(
            tracking_number="ABCD-EFG",
            service_code="POTHOLE",
            description="a fictional resident's words",
            location=Location(lat=41.9, long=-87.61, address="110 N Example Ave"),
            submitted_at=AT,
            sealed_contact="gAAAA-sealed",
        ),
        CaseResolved(resolution="Filled.", resolved_at=AT),
        SurveySent(channel="sms", message_id="SM0123"),
        SurveyAnswered(score=4, channel="sms"),
        SurveyAnswered(score=1, channel="email"),  # a later answer never moves the first
    ]
    record: CaseRecord | None = None
    lines = []
    for version, data in enumerate(life, start=1):
        record, line = apply(record, recorded(data, case_id=case_id, version=version, at=AT))
        lines.append(line)
    assert record is not None and record.satisfaction == 4
    assert [line.stage for line in lines[2:] if line] == ["survey_sent", "survey_answered", "survey_answered"]
    details = " ".join(line.detail for line in lines if line)
    assert "SM0123" not in details and "fictional resident" not in details
    view = case_view(record, [line for line in lines if line], "exact")
    assert view.satisfaction == 4
    assert satisfaction_line(view.satisfaction) == "satisfaction: 4 of 5 (the resident's survey answer)"


def test_a_case_without_an_answer_shows_none() -> None:
    submitted = CaseSubmitted(
        tracking_number="ABCD-EFG", service_code="POTHOLE", description="deep", location=None, submitted_at=AT
    )
    record, _ = apply(None, recorded(submitted, case_id=uuid4(), version=1, at=AT))
    assert record.satisfaction is None and case_view(record, [], "exact").satisfaction == 0
    assert satisfaction_line(0) == ""
