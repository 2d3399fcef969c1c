"""`civicflow import` into the running system, as a city moving over would: imported history is routed on its
original time and shows as the old system closed it, but opens no work order and tells no resident; and
`rules dry-run --since` picks cases by their original submitted time."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from civicflow.events import CaseRouted
from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.v1 import common_pb2, intake_pb2
from services.router.main import DEFAULT_CITY
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, stored_rows, view_reached

pytestmark = pytest.mark.e2e
CHICAGO = ZoneInfo("America/Chicago")
MAPPING = """
source: e2eold
timezone: America/Chicago
columns: {external_id: ID, service: Type, description: Text, lat: Lat, long: Lon, submitted_at: Opened,
          closed_at: Closed, status: Status, contact_email: Email}
services: {"Animal Bite": ANIMAL_BITE, "Pothole in Street": POTHOLE}
"""
ROWS = [
    ["ID", "Type", "Text", "Lat", "Lon", "Opened", "Closed", "Status", "Email"],
    # a Saturday night, still open in the old system, with a resident's (fictional) email
    [
        "SR-1",
        "Animal Bite",
        "bitten at the bus stop",
        "41.88",
        "-87.63",
        "2026-03-14 23:30:00",
        "",
        "Open",
        "resident1@example.org",
    ],
    [
        "SR-2",
        "Pothole in Street",
        "deep",
        "41.91",
        "-87.69",
        "2026-02-02 10:00:00",
        "2026-02-05 16:00:00",
        "Closed",
        "resident2@example.org",
    ],
    ["SR-3", "Pothole in Street", "bell\x07", "41.91", "-87.69", "2026-02-02 10:00:00", "", "", ""],
]


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("history")) as running:
        yield running


async def civicflow(system: SystemProcesses, *args: str) -> tuple[int, str]:
    """The command line as a user runs it against this system; (exit code, what it printed)."""
    env = {**system.environment(), **system.extra_env}
    command = Path(sys.executable).with_name("civicflow")
    process = await asyncio.create_subprocess_exec(
        str(command), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode or 0, output.decode()


async def test_imported_history_is_routed_on_its_time_but_acts_on_nothing(
    system: SystemProcesses, clients: Clients, tmp_path: Path
) -> None:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(ROWS)
    (tmp_path / "old.csv").write_text(buffer.getvalue())
    (tmp_path / "map.yaml").write_text(MAPPING)
    refused = tmp_path / "refused.csv"

    code, printed = await civicflow(
        system, "import", str(tmp_path / "old.csv"), "--mapping", str(tmp_path / "map.yaml"), "--refused", str(refused)
    )

    assert code == 0, printed
    assert "3 rows read: 2 imported (1 of them closed), 0 already imported before" in printed
    assert "1 refused" in printed
    assert "description" in refused.read_text() and "bell" not in refused.read_text()

    # a live request after the import: once it has its work order, the system is handling cases
    live = intake_pb2.SubmitRequestRequest(
        service_code="POTHOLE", description="live one", location=common_pb2.Location(lat=41.91, long=-87.69)
    )
    number = (await clients.intake.SubmitRequest(live)).tracking_number
    await eventually(lambda: view_reached(clients, number, "work_order_opened"), timeout=60, what="live work order")

    imported = {
        row.external_id: row
        for row in await stored_rows(
            system,
            "SELECT r.tracking_number, r.case_id, substring(r.idempotency_key from 'SR-[0-9]+') AS external_id"
            " FROM intake.requests r WHERE r.idempotency_key LIKE 'import:e2eold:%'",
        )
    }
    assert sorted(imported) == ["SR-1", "SR-2"]

    async def routed(external_id: str) -> list[object] | None:
        rows = await stored_rows(
            system,
            "SELECT event_id, data FROM events.case_events WHERE case_id = :c AND type = 'CaseRouted'",
            c=imported[external_id].case_id,
        )
        return list(rows) or None

    [bite] = await eventually(lambda: routed("SR-1"), timeout=60, what="SR-1 routed")
    decision = CaseRouted.model_validate(bite.data)  # type: ignore[attr-defined]
    saturday_night = datetime(2026, 3, 14, 23, 30, tzinfo=CHICAGO)
    assert decision.rule_id == "animal-bite-after-hours" and decision.due_at == saturday_night + timedelta(hours=2)

    closed = await eventually(
        lambda: view_reached(clients, imported["SR-2"].tracking_number, "routed"), timeout=60, what="SR-2 in view"
    )
    assert closed.status == "resolved" and "resolved" in [e.stage for e in closed.timeline]

    # the bridge and the notifier have handled both imported decisions (their inboxes say so) and did nothing
    [pothole] = await eventually(lambda: routed("SR-2"), timeout=60, what="SR-2 routed")
    decisions = [bite.event_id, pothole.event_id]  # type: ignore[attr-defined]
    for service in ("workorder_bridge", "notifier"):

        async def handled(service: str = service) -> bool | None:
            rows = await stored_rows(
                system, f"SELECT count(*) AS n FROM {service}.inbox WHERE event_id = ANY(:ids)", ids=decisions
            )
            return True if rows[0].n == len(decisions) else None

        await eventually(handled, timeout=60, what=f"{service} handled the imported decisions")
    acted = await stored_rows(
        system,
        "SELECT type FROM events.case_events WHERE case_id = ANY(:c)"
        " AND type IN ('WorkOrderOpened', 'WorkOrderSyncFailed', 'NotificationSent', 'NotificationFailed',"
        " 'CaseOverdue')",
        c=[row.case_id for row in imported.values()],
    )
    assert acted == []
    watched = await stored_rows(
        system,
        "SELECT case_id FROM router.open_cases WHERE case_id = ANY(:c)",
        c=[r.case_id for r in imported.values()],
    )
    assert watched == []
    assert not any(
        "resident1@" in path.read_text(errors="replace") or "resident2@" in path.read_text(errors="replace")
        for path in system.mail_dir.rglob("*")
        if path.is_file()
    )

    # the dry run over past cases picks them by their original submitted time: SR-1 (March), not SR-2
    # (February), and the live one when it was submitted after the date (its time is the clock's, so read back)
    [live_case] = await stored_rows(
        system, "SELECT submitted_at FROM intake.requests WHERE tracking_number = :t", t=number
    )
    since = datetime(2026, 3, 1, tzinfo=UTC)
    code, printed = await civicflow(
        system,
        "rules",
        "dry-run",
        str(DEFAULT_CITY),
        "--since",
        f"{since:%Y-%m-%d}",
        "--csv",
        str(tmp_path / "dry.csv"),
    )
    assert code == 0, printed
    expected = 1 + (live_case.submitted_at >= since)  # type: ignore[attr-defined]
    assert f"on {expected} cases submitted since 2026-03-01" in printed
