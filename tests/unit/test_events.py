"""The event catalogue: old stored payloads still load, upcasters run in order, the wire round-trips."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest

from civicflow.events import (
    CATALOGUE,
    CaseEvent,
    CaseSubmitted,
    EventMetadata,
    RecordedEvent,
    UnknownEventType,
    decode_payload,
)
from civicflow.ids import uuid7
from civicflow.wire import from_message, header_map, to_message

FIXTURES = Path(__file__).parents[1] / "fixtures" / "events"


def test_every_stored_payload_fixture_still_loads() -> None:
    for path in sorted(FIXTURES.glob("*.json")):
        event_type, version = path.stem.split(".v")
        event = decode_payload(event_type, int(version), json.loads(path.read_text()))
        assert isinstance(event, CATALOGUE[event_type])


class _CrewAssigned(CaseEvent):
    """A test-only event at version 3: v1 had `crew` as a number, v2 renamed it to `crew_id`."""

    event_type: ClassVar[str] = "test.CrewAssigned"
    schema_version: ClassVar[int] = 3
    upcasters: ClassVar = {
        1: lambda d: {"crew_id": d["crew"]},
        2: lambda d: {"crew_id": f"crew-{d['crew_id']}"},
    }

    crew_id: str


@pytest.fixture
def crew_assigned(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test-only event, in the catalogue for this test alone (the AsyncAPI document reads the catalogue)."""
    monkeypatch.setitem(CATALOGUE, _CrewAssigned.event_type, _CrewAssigned)


@pytest.mark.usefixtures("crew_assigned")
def test_upcasters_bring_every_old_version_to_the_current_one() -> None:
    assert decode_payload("test.CrewAssigned", 1, {"crew": 4}) == _CrewAssigned(crew_id="crew-4")
    assert decode_payload("test.CrewAssigned", 2, {"crew_id": 4}) == _CrewAssigned(crew_id="crew-4")
    assert decode_payload("test.CrewAssigned", 3, {"crew_id": "crew-4"}) == _CrewAssigned(crew_id="crew-4")


@pytest.mark.usefixtures("crew_assigned")
def test_payloads_from_newer_code_or_unknown_types_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="newer than this code"):
        decode_payload("test.CrewAssigned", 4, {"crew_id": "x"})
    with pytest.raises(UnknownEventType):
        decode_payload("NoSuchEvent", 1, {})


def test_an_event_survives_the_trip_through_kafka_headers() -> None:
    data = json.loads((FIXTURES / "CaseSubmitted.v1.json").read_text())
    event = RecordedEvent(
        position=42,
        event_id=uuid7(),
        case_id=uuid7(),
        version=1,
        type="CaseSubmitted",
        schema_version=1,
        occurred_at=datetime(2026, 11, 23, 14, 5, tzinfo=UTC),
        recorded_at=datetime(2026, 11, 23, 14, 5, 1, tzinfo=UTC),
        metadata=EventMetadata(correlation_id=uuid7(), actor="intake", channel="phone"),
        data=CaseSubmitted.model_validate(data),
    )
    key, value, headers = to_message(event, b"a key for the test only")
    assert key == str(event.case_id).encode()
    names = dict(headers)
    for required in ("ce_id", "ce_type", "ce_source", "ce_subject", "ce_time", "ce_specversion"):
        assert required in names
    assert from_message(header_map(headers), value) == event


def test_uuid7_ids_sort_by_creation_time() -> None:
    ids = [uuid7() for _ in range(1000)]
    assert ids == sorted(ids)
    assert all(i.version == 7 for i in ids)


def test_a_cases_current_service_code_follows_its_latest_correction() -> None:
    from civicflow.events import CaseRecategorised, current_service_code

    submitted = CaseSubmitted.model_validate(json.loads((FIXTURES / "CaseSubmitted.v1.json").read_text()))
    assert current_service_code([]) is None
    assert current_service_code([submitted]) == "POTHOLE"
    corrections = [
        CaseRecategorised(service_code="SINKHOLE", previous_service_code="POTHOLE", reason="deeper than it looked"),
        CaseRecategorised(service_code="WATER_LEAK", previous_service_code="SINKHOLE", reason="a main under it"),
    ]
    assert current_service_code([submitted, *corrections]) == "WATER_LEAK"
