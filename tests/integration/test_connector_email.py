"""The email kind against the real SMTP sink (samples/smtp_sink, the department's inbox) and the bridge's real reply
endpoint and answer links (services/workorder_bridge/email_http.py served over HTTP), replies written and posted by
the sample reply command's functions (samples/smtp_sink/reply.py). What the recorder receives is what the bridge
would record (services/workorder_bridge/updates.py; its recording is tested with the status updates)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from civicflow.department_systems import ConnectorSpec
from civicflow.http_server import InProcessHttpServer
from civicflow.infra import free_ports, wait_for_port
from civicflow.settings import SAMPLE_CITY
from samples.smtp_sink.reply import compose_reply, find_work_order, post_reply_async
from samples.smtp_sink.sink import read_messages, start_sink
from services.workorder_bridge.connector import ConnectorContext, ExternalUpdate, Outcome
from services.workorder_bridge.email_http import EmailDepartments, email_routes
from services.workorder_bridge.kinds import BUILDERS
from services.workorder_bridge.kinds.email import EmailConnector
from services.workorder_bridge.mailer import MailDepartment, Mailer
from services.workorder_bridge.main import BridgeSettings
from tests.conftest import eventually
from tests.connector_contract import ConnectorContract, a_request

INBOX = "code@sample-city.example"


@dataclass
class Recorder:
    """The RecordUpdate the endpoint hands replies to: keeps them, and knows an update_id it was given once."""

    received: list[tuple[str, ExternalUpdate]] = field(default_factory=list)
    not_recorded_yet: bool = False  # the bridge has not recorded the work order: held, as the real recorder does

    async def __call__(self, department_id: str, update: ExternalUpdate) -> Outcome:
        if self.not_recorded_yet:
            return Outcome.HELD
        if update.update_id and any(u.update_id == update.update_id for _, u in self.received):
            return Outcome.DUPLICATE
        self.received.append((department_id, update))
        return Outcome.RECORDED


@dataclass
class EmailDepartment:
    connector: EmailConnector
    spec: ConnectorSpec
    folder: Path
    bridge_url: str
    secret: str
    recorder: Recorder
    sink: asyncio.Server
    client: httpx.AsyncClient
    can_cancel: bool = True
    sink_stopped: bool = False

    async def change_status(self, external_id: str, their_status: str, note: str | None = None) -> None:
        original = find_work_order(self.folder, external_id)
        reply = compose_reply(original, their_status + (f": {note}" if note else ""))
        posted = await post_reply_async(self.client, self.bridge_url, self.secret, reply)
        assert posted.status_code == 200, posted.answer

    async def updates(self) -> list[ExternalUpdate]:
        return [update for _, update in self.recorder.received]

    def cancellations(self, external_id: str) -> list[str]:
        return [
            m.message_id or ""
            for m in read_messages(self.folder)
            if (m.message_id or "").startswith(f"<{external_id}.cancel-")
        ]

    async def cancelled_there(self, external_id: str) -> bool:
        return len(self.cancellations(external_id)) == 1

    async def stop_system(self) -> None:
        self.sink.close()
        await self.sink.wait_closed()
        self.sink_stopped = True


@contextlib.asynccontextmanager
async def serving(app: Starlette, port: int) -> AsyncIterator[str]:
    stop = asyncio.Event()
    server = asyncio.create_task(InProcessHttpServer(app, "127.0.0.1", port, "email endpoint", "-")(stop))
    try:
        await asyncio.to_thread(wait_for_port, "127.0.0.1", port, 30)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        await server


@contextlib.asynccontextmanager
async def email_department(tmp_path: Path, now: datetime | None = None) -> AsyncIterator[EmailDepartment]:
    smtp_port, http_port = free_ports(2)
    folder = tmp_path / "mail"
    sink = await start_sink(folder, "127.0.0.1", smtp_port)
    settings = BridgeSettings(state_dir=tmp_path, bridge_smtp_port=smtp_port, city_file=SAMPLE_CITY)
    spec = ConnectorSpec(kind="email", inbox=INBOX)
    url = f"http://127.0.0.1:{http_port}"
    context = ConnectorContext("code", spec, settings, None, url + "/webhooks/work-orders", url)
    connector = BUILDERS["email"](context)
    assert isinstance(connector, EmailConnector)
    recorder = Recorder()
    secret = settings.signing_secret()
    departments = EmailDepartments.of({"code": spec}, secret, None)
    clock = (lambda: now) if now is not None else (lambda: datetime.now(UTC))
    app = Starlette(routes=email_routes(departments, recorder, secret, now=clock))
    async with serving(app, http_port) as bridge_url, httpx.AsyncClient(timeout=15) as client:
        department = EmailDepartment(connector, spec, folder, bridge_url, secret, recorder, sink, client)
        try:
            yield department
        finally:
            if not department.sink_stopped:
                await department.stop_system()


class TestEmailConnector(ConnectorContract):
    @pytest.fixture
    async def department(self, tmp_path: Path) -> AsyncIterator[EmailDepartment]:
        async with email_department(tmp_path) as department:
            yield department


LINK = re.compile(r"^  ([a-z ]+): (http://\S+)", re.MULTILINE)


async def test_the_work_order_email_says_what_to_do_and_names_no_resident(tmp_path: Path) -> None:
    async with email_department(tmp_path) as department:
        request = a_request("NOISE_COMPLAINT")
        opened = await department.connector.open_work_order(request, str(uuid.uuid4()))
        mail = find_work_order(department.folder, opened.external_id)
        assert re.fullmatch(r"EM-[A-Z2-7]{10}", opened.external_id)
        assert mail.message["To"] == INBOX
        assert f"[{opened.external_id}]" in mail.subject and request.tracking_number in mail.subject
        assert "2030-01-02 09:00 CST" in mail.text, "the due date in the city's zone"
        for word in (
            "done",
            "in progress",
            "scheduled",
            "not ours",
            "duplicate <tracking number>",
            "refer <department>",
        ):
            assert f"  {word}  - " in mail.text
        assert [w for w, _ in LINK.findall(mail.text)] == ["done", "in progress", "scheduled", "not ours"]
        # what the email may carry is the catalogue's: the request has no resident's words or contact to leak,
        # and the place and the service's answers (kept for kinds that map them) are not written in the email
        assert set(request.model_dump()) == {
            "case_id", "tracking_number", "service_code", "summary", "callback_url", "due_at", "attributes"
        }  # fmt: skip
        placed = request.model_copy(update={"address": "12 Elm Street", "attributes": {"depth": "deep"}})
        again = await department.connector.open_work_order(placed, str(uuid.uuid4()))
        text = find_work_order(department.folder, again.external_id).text
        assert "Elm" not in text and "deep" not in text


async def test_a_reply_done_arrives_with_its_note_and_message_id(tmp_path: Path) -> None:
    async with email_department(tmp_path) as department:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        original = find_work_order(department.folder, opened.external_id)
        reply = compose_reply(original, "Done: filled the pothole\nwith cold patch\n\nThanks, Sam")
        posted = await post_reply_async(department.client, department.bridge_url, department.secret, reply)
        assert posted.status_code == 200, posted.answer
        again = await post_reply_async(department.client, department.bridge_url, department.secret, reply)
        assert '"duplicate"' in again.answer, "the relay posting the same reply twice records it once"
        [(department_id, update)] = department.recorder.received
        assert department_id == "code"
        assert (update.external_id, update.status, update.note) == (
            opened.external_id,
            "Done",
            "filled the pothole with cold patch",
        )
        assert update.update_id == reply["Message-ID"]
        assert department.spec.ours(update.status) == "resolved"


async def test_a_reply_or_a_link_before_the_work_order_is_recorded_is_held_202_not_refused(tmp_path: Path) -> None:
    async with email_department(tmp_path) as department:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        department.recorder.not_recorded_yet = True
        original = find_work_order(department.folder, opened.external_id)
        reply = compose_reply(original, "done: painted over")
        posted = await post_reply_async(department.client, department.bridge_url, department.secret, reply)
        assert posted.status_code == 202 and '"held"' in posted.answer, posted.answer
        links = dict(LINK.findall(original.text))
        pressed = await department.client.post(links["in progress"])
        assert pressed.status_code == 202 and "Received" in pressed.text


async def test_duplicate_and_refer_carry_what_they_point_at(tmp_path: Path) -> None:
    async with email_department(tmp_path) as department:
        for text, status, refers_to, note in [
            ("duplicate CT-1234ABCD: same hole as last week", "duplicate", "CT-1234ABCD", "same hole as last week"),
            ("Refer to streets - it is in the road", "Refer", "streets", "it is in the road"),
            ("not ours", "not ours", None, None),
        ]:
            opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
            await department.change_status(opened.external_id, text)
            update = department.recorder.received[-1][1]
            assert (update.status, update.refers_to, update.note) == (status, refers_to, note)


async def test_a_link_shows_a_page_and_only_its_button_records(tmp_path: Path) -> None:
    async with email_department(tmp_path) as department:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        links = dict(LINK.findall(find_work_order(department.folder, opened.external_id).text))
        shown = await department.client.get(links["done"])
        assert shown.status_code == 200 and '<form method="post">' in shown.text
        assert department.recorder.received == [], "a mail scanner opening the link records nothing"
        pressed = await department.client.post(links["done"])
        assert pressed.status_code == 200 and "Recorded" in pressed.text
        pressed_again = await department.client.post(links["done"])
        assert "already recorded" in pressed_again.text
        [(_, update)] = department.recorder.received
        assert (update.external_id, update.status) == (opened.external_id, "done")
        tampered = links["done"][:-3] + ("AAA" if not links["done"].endswith("AAA") else "BBB")
        refused = await department.client.post(tampered)
        assert refused.status_code == 400 and "not one of ours" in refused.text
        cut_short = await department.client.get(links["done"].rsplit("/", 1)[0] + "/")
        assert cut_short.status_code == 404
        assert len(department.recorder.received) == 1


async def test_a_link_past_its_expiry_records_nothing(tmp_path: Path) -> None:
    later = datetime.now(UTC) + timedelta(days=31)  # links last 30 days by default
    async with email_department(tmp_path, now=later) as department:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        links = dict(LINK.findall(find_work_order(department.folder, opened.external_id).text))
        answer = await department.client.post(links["in progress"])
        assert answer.status_code == 410 and "expired" in answer.text
        assert department.recorder.received == []


async def test_a_reply_from_anyone_but_the_inbox_is_refused(tmp_path: Path) -> None:
    async with email_department(tmp_path) as department:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        reply = compose_reply(find_work_order(department.folder, opened.external_id), "done")
        del reply["From"]
        reply["From"] = "Someone <someone.else@example.org>"
        posted = await post_reply_async(department.client, department.bridge_url, department.secret, reply)
        assert posted.status_code == 403 and "someone.else" not in posted.answer
        same_but_shouting = compose_reply(find_work_order(department.folder, opened.external_id), "done")
        del same_but_shouting["From"]
        same_but_shouting["From"] = INBOX.upper()
        posted = await post_reply_async(department.client, department.bridge_url, department.secret, same_but_shouting)
        assert posted.status_code == 200, "addresses are compared without case"
        assert len(department.recorder.received) == 1


async def test_cancelling_mails_one_notice_per_cause(tmp_path: Path) -> None:
    async with email_department(tmp_path) as department:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        first, second = str(uuid.uuid4()), str(uuid.uuid4())
        for key in (first, first, second):
            await department.connector.cancel_work_order(opened.external_id, "the case went to streets", key)
        notices = department.cancellations(opened.external_id)
        assert len(notices) == 2, "the same cause is the same message; another cause is another"
        notice = next(m for m in read_messages(department.folder) if m.message_id == notices[0])
        assert notice.message["In-Reply-To"] == find_work_order(department.folder, opened.external_id).message_id
        assert "the case went to streets" in notice.text


async def test_telling_a_department_mails_its_city_file_address_once(tmp_path: Path) -> None:
    async with email_department(tmp_path) as department:
        port = department.sink.sockets[0].getsockname()[1]
        tell = MailDepartment(
            Mailer("127.0.0.1", port, 5, "311 <workorders@civicflow.local>"), {"water": "w@x.example"}
        )
        for _ in range(2):
            await tell("water", "Work order 77 cancelled", "The case went to streets.")
        told = [m for m in read_messages(department.folder) if m.subject == "Work order 77 cancelled"]
        assert len(told) == 1 and told[0].message["To"] == "w@x.example"


async def test_an_smtp_outage_is_unavailable(tmp_path: Path) -> None:
    from services.workorder_bridge.connector import DepartmentUnavailable

    async with email_department(tmp_path) as department:
        await department.stop_system()
        with pytest.raises(DepartmentUnavailable):
            await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        with pytest.raises(DepartmentUnavailable):
            await department.connector.cancel_work_order("EM-AAAAAAAAAA", "moved", str(uuid.uuid4()))


async def test_replies_reach_the_recorder_in_time(tmp_path: Path) -> None:
    async with email_department(tmp_path) as department:
        opened = await department.connector.open_work_order(a_request(), str(uuid.uuid4()))
        await department.change_status(opened.external_id, "scheduled", "Tuesday")

        async def arrived() -> list[ExternalUpdate]:
            return [u for u in await department.updates() if u.external_id == opened.external_id]

        [update] = await eventually(arrived, timeout=10, what="the reply")
        assert department.spec.ours(update.status) == "action_scheduled"
