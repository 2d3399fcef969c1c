"""Which work orders a case's move makes redundant and what the department is told; how each department's
connector is found from the city file; how health observations fold into a row. Pure: no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from civicflow.department_systems import ConnectorSpec
from civicflow.events import (
    CaseNeedsTriage,
    CaseRerouted,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    Location,
    WorkOrderCancelled,
)
from civicflow.ids import uuid7
from services.workorder_bridge.cancellation import (
    idempotency_key,
    message_to_department,
    reason_to_cancel,
    superseded,
)
from services.workorder_bridge.connector import ConnectorContext, DepartmentUnavailable
from services.workorder_bridge.connectors import (
    CityFileUnreadable,
    DepartmentSystems,
    MisconfiguredConnector,
    builder_from,
    read_connector_specs,
)
from services.workorder_bridge.domain import WorkOrderRequest
from services.workorder_bridge.health import HealthBook, Observation, _row
from tests.factories import recorded

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
ROUTING: dict[str, Any] = {
    "department_name": "Streets",
    "priority": "normal",
    "due_at": None,
    "rule_id": "potholes",
    "rule_set_version": "1",
}
SUBMITTED = CaseSubmitted(
    tracking_number="QGPE-J5T",
    service_code="POTHOLE",
    description="deep",
    location=Location(address="12 Elm Street"),
    submitted_at=NOW,
)


def test_what_makes_earlier_work_orders_redundant_and_the_reason_in_words() -> None:
    case_id = uuid7()
    rerouted = CaseRerouted(**{**ROUTING, "department_name": "Water"}, department_id="water", reason="not ours")
    triage = CaseNeedsTriage(queue="call-centre", reason="turned down twice", rule_set_version="1")
    resolved = CaseResolved(resolution="Filled", resolved_at=NOW)
    at = {"case_id": case_id, "version": 3, "at": NOW}
    assert reason_to_cancel(recorded(rerouted, **at)) == "the case was sent to Water: not ours"
    assert reason_to_cancel(recorded(triage, **at)) == "the case was sent to the call centre's triage queue: " + (
        "turned down twice"
    )
    assert reason_to_cancel(recorded(resolved, **at)) is None, "a plain resolution leaves work orders alone"
    assert reason_to_cancel(recorded(SUBMITTED, **at)) is None


class _ResolvedAsDuplicate(CaseResolved):
    """CaseResolved with the optional field helper "status" adds (read with getattr until it lands)."""

    duplicate_of: str | None = None


def test_a_case_closed_as_a_duplicate_makes_its_work_orders_redundant() -> None:
    duplicate = _ResolvedAsDuplicate(resolution="duplicate", resolved_at=NOW, duplicate_of="QGPE-AAA")
    event = recorded(duplicate, case_id=uuid7(), version=4, at=NOW)
    assert reason_to_cancel(event) == "the case was closed as a duplicate of QGPE-AAA"


def work_order(department_id: str, external_id: str, opened_by: Any) -> Any:
    return SimpleNamespace(department_id=department_id, external_id=external_id, opened_by_event=opened_by.event_id)


def test_only_work_orders_of_earlier_decisions_not_yet_cancelled_are_superseded() -> None:
    case_id = uuid7()
    stream = [recorded(SUBMITTED, case_id=case_id, version=1, at=NOW)]
    stream.append(recorded(CaseRouted(department_id="streets", **ROUTING), case_id=case_id, version=2, at=NOW))
    stream.append(
        recorded(CaseRerouted(department_id="water", reason="r", **ROUTING), case_id=case_id, version=3, at=NOW)
    )
    cancelled = WorkOrderCancelled(department_id="streets", external_id="S-0", reason="r", how="cancelled")
    stream.append(recorded(cancelled, case_id=case_id, version=4, at=NOW))
    triage = recorded(CaseNeedsTriage(queue="q", reason="r", rule_set_version="1"), case_id=case_id, version=5, at=NOW)
    streets, water = work_order("streets", "S-1", stream[1]), work_order("water", "W-1", stream[2])
    already = work_order("streets", "S-0", stream[1])

    assert superseded(stream, stream[2], [streets, water, already]) == [streets], "the reroute's own stands"
    assert superseded(stream, triage, [streets, water, already]) == [streets, water]
    unknown = SimpleNamespace(department_id="x", external_id="X-1", opened_by_event=uuid7())
    assert superseded(stream, triage, [unknown]) == [], "a work order of a decision not in the stream is left"


def test_a_duplicate_reported_by_the_department_keeps_its_own_work_order() -> None:
    case_id = uuid7()
    stream = [recorded(SUBMITTED, case_id=case_id, version=1, at=NOW)]
    stream.append(recorded(CaseRouted(department_id="streets", **ROUTING), case_id=case_id, version=2, at=NOW))
    by_streets = recorded(
        CaseResolved(resolution="duplicate", resolved_at=NOW),
        case_id=case_id,
        version=3,
        at=NOW,
        actor="department:streets",
    )
    by_a_call_taker = recorded(CaseResolved(resolution="dup", resolved_at=NOW), case_id=case_id, version=3, at=NOW)
    streets = work_order("streets", "S-1", stream[1])
    assert superseded(stream, by_streets, [streets]) == []
    assert superseded(stream, by_a_call_taker, [streets]) == [streets]


def test_the_department_told_hears_the_work_order_the_case_and_why_never_the_resident() -> None:
    case_id = uuid7()
    stream = [recorded(SUBMITTED, case_id=case_id, version=1, at=NOW)]
    key = idempotency_key(stream[0].event_id, "N-7")
    subject, body = message_to_department(stream, "N-7", "the case was sent to Water: not ours", key)
    assert subject == "Work order N-7 is no longer needed (311 case QGPE-J5T)"
    assert "the case was sent to Water: not ours" in body and f"Reference: {stream[0].event_id}:N-7" in body
    assert "12 Elm Street" not in subject + body and "deep" not in body


def test_each_department_gets_its_kind_s_connector_and_others_the_default() -> None:
    built: list[tuple[str, str]] = []

    def kind(name: str) -> Any:
        def build(context: ConnectorContext) -> Any:
            built.append((context.department_id, name))
            return SimpleNamespace(department_id=context.department_id, kind=name)

        return build

    specs = {
        "streets": ConnectorSpec(kind="open311", endpoint="http://o.test", poll_seconds=2),
        "water": ConnectorSpec(kind="rest_webhook"),
    }
    context = lambda d, s: ConnectorContext(d, s, None, None, "", "")  # noqa: E731
    systems = DepartmentSystems(
        builder_from({"open311": kind("open311"), "rest_webhook": kind("rest_webhook")}, context, None), specs
    )
    assert sorted(built) == [("streets", "open311"), ("water", "rest_webhook")], "built at start"
    assert systems.for_department("parks").kind == "rest_webhook"
    assert systems.for_department("parks") is systems.for_department("parks")
    assert [(c.department_id, every) for c, every in systems.polled()] == [("streets", 2)]


async def test_a_connector_that_cannot_be_built_says_why_on_every_call() -> None:
    def broken(context: ConnectorContext) -> Any:
        raise LookupError("the environment variable STREETS_KEY is not set or empty")

    context = lambda d, s: ConnectorContext(d, s, None, None, "", "")  # noqa: E731
    spec = ConnectorSpec(kind="open311", endpoint="http://o.test")
    connector = DepartmentSystems(builder_from({"open311": broken}, context, None), {"streets": spec}).for_department(
        "streets"
    )
    assert isinstance(connector, MisconfiguredConnector) and connector.kind == "open311"
    request = WorkOrderRequest(
        case_id="c", tracking_number="T", service_code="POTHOLE", summary="s", callback_url="http://b", due_at=None
    )
    with pytest.raises(DepartmentUnavailable, match="STREETS_KEY is not set"):
        await connector.open_work_order(request, "k")
    with pytest.raises(DepartmentUnavailable, match="misconfigured"):
        await connector.cancel_work_order("x", "r", "k")
    health = await connector.health()
    assert not health.up and "STREETS_KEY" in health.detail


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot be read"),
        ("- a list\n", "not a city file"),
        ("departments: {streets: {connector: {kind: open311}}}\n", "departments.streets.connector"),
        (
            "departments: {streets: {connector: {kind: email, inbox: x@y.example, credentials: 'hunter2'}}}\n",
            "by reference",
        ),
        ("departments: [unclosed\n", "cannot be read"),
    ],
)
def test_a_city_file_whose_connectors_cannot_be_read_is_refused_saying_where(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "city.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CityFileUnreadable, match=problem) as refused:
        read_connector_specs(path)
    assert "hunter2" not in str(refused.value), "never the secret written inline"


def test_a_department_s_observations_fold_into_one_row_the_latest_deciding_up() -> None:
    def seen(minutes: int, up: bool, error: str | None = None) -> Observation:
        return Observation("streets", "open311", up, NOW + timedelta(minutes=minutes), error)

    row = _row([seen(1, False, "DepartmentUnavailable: timed out"), seen(3, True), seen(2, False, "HTTP 503")])
    assert row == {
        "d": "streets",
        "k": "open311",
        "up": True,
        "ok_at": NOW + timedelta(minutes=3),
        "err_at": NOW + timedelta(minutes=2),
        "err": "HTTP 503",
        "at": NOW + timedelta(minutes=3),
    }


async def test_a_flush_with_nothing_noted_touches_no_database() -> None:
    nothing: Any = None
    assert await HealthBook().flush(nothing) == 0


async def test_what_waits_for_the_database_stays_small_however_long_it_is_away() -> None:
    class Away:
        def begin(self) -> Any:
            raise ConnectionError("the database is away")

    clock = iter(NOW + timedelta(seconds=n) for n in range(10_000))
    health = HealthBook(clock=lambda: next(clock))
    connector: Any = SimpleNamespace(department_id="streets", kind="open311")
    away: Any = Away()
    for n in range(1000):
        health.success(connector) if n % 2 else health.failure(connector, f"error {n}")
        if n % 100 == 0:
            with pytest.raises(ConnectionError):
                await health.flush(away)
    [(department, noted)] = health._pending.items()
    assert department == "streets" and [(o.up, o.error) for o in noted] == [(False, "error 998"), (True, None)]
