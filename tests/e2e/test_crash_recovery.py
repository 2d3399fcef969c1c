"""SIGKILL the router and the notifier while requests flow: no case is lost, no email is sent twice.
A department's system out of order: its work orders wait, nobody else's do, and each opens once."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest

from civicflow.infra import Infrastructure
from civicflow.launcher import SystemProcesses
from civicflow.v1 import intake_pb2
from samples.smtp_sink.sink import read_messages
from tests.conftest import eventually
from tests.e2e.conftest import Clients, running_system, stored_rows, view_reached
from tests.e2e.test_lifecycle import pothole

pytestmark = pytest.mark.e2e
REQUESTS = 40


@pytest.fixture(scope="module")
async def system(
    infrastructure: Infrastructure, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[SystemProcesses]:
    async with running_system(infrastructure, tmp_path_factory.mktemp("crash")) as running:
        yield running


async def test_killing_router_and_notifier_mid_flow_loses_nothing_and_repeats_no_email(system: SystemProcesses) -> None:
    clients = Clients(system)
    numbers: list[str] = []

    async def submit_steadily() -> None:
        for n in range(REQUESTS):
            reply = await clients.intake.SubmitRequest(pothole(email=f"resident{n}@example.org"))
            numbers.append(reply.tracking_number)
            await asyncio.sleep(0.05)

    async def all_resolved_and_notified() -> bool:
        for number in numbers:
            view = await view_reached(clients, number, "resolved")  # None, not NOT_FOUND, while the view lags
            if view is None:
                return False
            notified = sum(e.stage == "resident_notified" for e in view.timeline)
            if view.status != "resolved" or notified < 3:
                return False
        return True

    submitting = asyncio.create_task(submit_steadily())
    try:
        await eventually(lambda: _at_least(numbers, REQUESTS // 4), what="requests to start flowing")
        system.kill("router")
        await eventually(lambda: _at_least(numbers, REQUESTS // 2), what="more requests while the router is down")
        system.kill("notifier")
        system.start("router")
        await eventually(lambda: _at_least(numbers, 3 * REQUESTS // 4), what="more requests")
        system.start("notifier")
        await submitting
        await asyncio.to_thread(system.wait_ready, ("router", "notifier"))
        await eventually(all_resolved_and_notified, timeout=180, what="every case resolved and notified")
    finally:
        if not submitting.done():
            submitting.cancel()
        await asyncio.gather(submitting, return_exceptions=True)
        for name in ("router", "notifier"):  # whatever failed, the next test finds them running
            if name not in system.processes:
                system.start(name)
        await clients.close()

    # only this test's own cases: another test's cases may share the system
    rows = await stored_rows(
        system,
        "SELECT e.case_id, e.type, e.data->>'stage' AS stage FROM events.case_events e"
        " JOIN events.case_events s ON s.case_id = e.case_id AND s.type = 'CaseSubmitted'"
        " WHERE s.data->>'tracking_number' = ANY(:numbers)"
        " AND e.type IN ('CaseRouted', 'NotificationSent', 'WorkOrderOpened', 'CaseResolved')",
        numbers=numbers,
    )
    decided = Counter((r.case_id, r.type, r.stage) for r in rows)
    assert len({case for case, _, _ in decided}) == REQUESTS
    assert set(decided.values()) == {1}, "some decision or notification was recorded twice"

    ours = [m for m in read_messages(system.mail_dir) if any(number in m.subject for number in numbers)]
    mails = Counter(m.message_id for m in ours)
    assert len(mails) == 3 * REQUESTS and set(mails.values()) == {1}
    resends = (system.state_dir / "logs" / "smtp_sink.log").read_text().count("not stored again")
    print(f"emails resent after a crash and absorbed by Message-ID: {resends}")


def back_in_order(system: SystemProcesses) -> None:
    if system.extra_env.pop("CIVICFLOW_SAMPLE_DEPT_OUT_OF_ORDER", None) is not None:
        system.kill("sample_department")
        system.start("sample_department")


async def test_a_department_system_out_of_order_holds_up_nobody_else_and_catches_up(system: SystemProcesses) -> None:
    system.kill("sample_department")
    # the sample city's signals and parks departments work on the sample REST system (rest_webhook)
    system.extra_env["CIVICFLOW_SAMPLE_DEPT_OUT_OF_ORDER"] = "signals"
    system.start("sample_department")
    await asyncio.to_thread(system.wait_ready, ("sample_department",))
    clients = Clients(system)

    async def every_signal(stage: str) -> bool:
        return all([await view_reached(clients, number, stage) for number in signals])

    def a_request(service_code: str) -> intake_pb2.SubmitRequestRequest:
        request = pothole()
        request.service_code = service_code
        return request

    try:
        signals = [(await clients.intake.SubmitRequest(a_request("SIGNAL_OUT"))).tracking_number for _ in range(4)]
        park = (await clients.intake.SubmitRequest(a_request("PARK_MAINT"))).tracking_number
        await eventually(lambda: every_signal("work_order_waiting"), what="the dark signals to wait for signals")
        await eventually(lambda: view_reached(clients, park, "resolved"), what="the parks case, not held up")

        back_in_order(system)
        await eventually(lambda: every_signal("resolved"), timeout=60, what="the dark signals resolved")
    finally:
        await clients.close()
        back_in_order(system)  # whatever happened, the next test finds the department's system working

    rows = await stored_rows(
        system,
        "SELECT e.type, count(*) AS n FROM events.case_events e"
        " JOIN events.case_events s ON s.case_id = e.case_id AND s.type = 'CaseSubmitted'"
        " WHERE s.data->>'tracking_number' = ANY(:numbers) GROUP BY e.type",
        numbers=signals,
    )
    counted = {r.type: r.n for r in rows}
    assert counted["WorkOrderSyncFailed"] == counted["WorkOrderOpened"] == counted["CaseResolved"] == len(signals)


async def _at_least(items: list[str], n: int) -> bool:
    return len(items) >= n
