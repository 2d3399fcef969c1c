"""notifier's process: tells residents about each stage of their case, exactly one email or text per stage
(texts: services/notifier/texting.py, the same steps with the provider asked about the crash window).

Delivery runs in three steps so a crash or a redelivery never sends a second email for a stage:

1. (the batch's unit of work) read the case as the batch leaves it, unseal the contact, decide; then,
   in a small transaction of its own committed before anyone is called, record the delivery as
   'sending' in notifier.deliveries, keyed by (case, stage) where the stage is named as told
   (``StageFacts.told_as``: 'resolved', then 'resolved.2' for a resolution after a dispute). A row already
   'sent' means another delivery of this stage finished: nothing is decided and the kernel only marks the inbox.
2. hand the email to SMTP, with the Message-ID ``<case_id.stage@civicflow.local>`` (``<case_id.resolved.2@…>``).
3. (the batch's unit of work) move the row to 'sent' and decide NotificationSent; the kernel appends
   it and marks the inbox when the batch commits.

An SMTP outage raises, so the consumer retries with back-off and dead-letters after its bounded
attempts; the row stays 'sending' and a replay resends. An address that cannot be delivered to is
recorded as NotificationFailed instead (row 'refused'), with the kind and SMTP code but never the
address, since retrying cannot help (mail.undeliverable): the server refusing the recipient, a
non-ASCII address on a server without SMTPUTF8, an address the mail client will not send to.

The window that remains: a crash after the SMTP server accepted the message and before step 3
commits. The event is then redelivered, finds the row still 'sending' and sends again, with the same
Message-ID. The SMTP sink files a Message-ID once, and mail clients thread or collapse messages with
one Message-ID as one message, so the resident sees it once. The same holds when two consumers race
on one event during a rebalance: both may send, only the one whose step 3 moves the row from
'sending' to 'sent' appends NotificationSent; and when a batch fails after some of its emails went out
(it is then handled one event at a time): their rows are still 'sending', and they go again with
their Message-IDs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
from pydantic import Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from civicflow.city import load_city
from civicflow.consumer import CaseEventConsumer, Reactions
from civicflow.db import make_engine
from civicflow.events import CaseEvent, CaseResolved, NotificationFailed, NotificationSent, RecordedEvent
from civicflow.eventstore import PostgresEventStore, StreamAppend
from civicflow.http_server import InProcessHttpServer
from civicflow.logging import configure_logging
from civicflow.pii import ContactVault, load_master_key
from civicflow.runtime import ServiceProcess, Task, periodically, serve
from civicflow.secrets import shared_secret
from civicflow.settings import KernelSettings
from civicflow.unit_of_work import Decision, Policy, Reads, UnitOfWork, in_order, together
from civicflow.v1 import notifier_pb2, notifier_pb2_grpc
from services.notifier.alerts import ALERTING_EVENTS, Acknowledgements, StaffAlerts
from services.notifier.call_outcomes import CallOutcomes
from services.notifier.calls import CallDelivery, CallMenu, MailFallback
from services.notifier.deferred_texts import DeferredTexts
from services.notifier.domain import (
    STAGE_OF_EVENT,
    CannotNotify,
    MessageTemplates,
    NothingToSend,
    PlaceCall,
    SendEmail,
    SendText,
    choose_delivery,
    compose_email,
    message_id_for,
    stage_facts,
    wanted,
)
from services.notifier.grpc_api import NotifierServicer
from services.notifier.inbound_texts import InboundTexts, StatusReports
from services.notifier.mail import MailSender, SmtpSender, undeliverable
from services.notifier.quiet_hours import QuietHours, parse_hours
from services.notifier.sms import TextTemplates
from services.notifier.status_checks import TextStatusChecks
from services.notifier.survey import SurveyTokens, survey_delays
from services.notifier.survey_delivery import SurveyLinks, SurveySchedule, SurveySender
from services.notifier.survey_http import survey_routes
from services.notifier.telephony import (
    AUTH_TOKEN_FILE,
    DEV_ACCOUNT_SID,
    DEV_CITY_NUMBER,
    DEV_PROVIDER_URL,
    Telephony,
)
from services.notifier.telephony_http import STATUS_PATH, create_telephony_app
from services.notifier.texting import NOTIFICATIONS, TextDelivery
from services.notifier.twilio_telephony import TwilioTelephony
from services.notifier.voice import CallScripts

log = structlog.get_logger(__name__)

ACTOR = "notifier"


class NotifierSettings(KernelSettings):
    notifier_grpc_port: int = 50055
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_timeout_seconds: float = 15.0
    mail_from: str = "311 <no-reply@civicflow.local>"
    public_tracking_url: str = Field(
        default="",
        description="Public page for a request, linked from every email; '{tracking_number}' in it is "
        "filled in, otherwise the number is appended as a path segment. Empty: no link.",
    )
    city_timezone: str = Field(
        default="",
        description="IANA time zone for dates in messages and texting hours; empty: the city file's `timezone`.",
    )
    # texts and calls: Twilio, or a provider speaking its API (README "Texts and calls"); in development the
    # sample provider, with the auth token kept in the state folder
    telephony_base_url: str = DEV_PROVIDER_URL
    telephony_account_sid: str = DEV_ACCOUNT_SID
    telephony_auth_token: str = ""
    telephony_from: str = Field(default=DEV_CITY_NUMBER, description="The city's number texts and calls come from.")
    notifier_http_port: int = Field(default=8082, description="Inbound texts and status callbacks from the provider.")
    notifier_http_host: str = "127.0.0.1"
    notifier_public_url: str = Field(
        default="",
        description="This endpoint's address as the telephony provider calls it (it signs that URL); empty:"
        " http://127.0.0.1:{notifier_http_port}.",
    )
    texting_hours: str = Field(
        default="08:00-21:00",
        description="When texts may go, in the city's zone; one due outside waits until they open. Empty: any time.",
    )
    deferred_text_scan_seconds: float = 60.0
    text_status_check_seconds: float = Field(
        default=120.0,
        gt=0,
        description="A text with no final delivery report this long after it went is looked up at the provider"
        " (its callback may have been lost), and no text is asked about more often; for a day after sending.",
    )
    survey_scan_seconds: float = Field(default=60.0, description="How often due satisfaction surveys are sent.")
    survey_after_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Every survey this many seconds after resolution instead of the city file's hours (services"
        " with `survey_after_hours: none` still get none); for demos and end-to-end tests. Unset: the city file.",
    )
    sms_number_key: str = Field(
        default="",
        description="Key of the digest residents' phone numbers are known by in the opt-out list; made once per"
        " state folder in development.",
    )

    def telephony_token(self) -> str:
        return shared_secret(self, self.telephony_auth_token, "CIVICFLOW_TELEPHONY_AUTH_TOKEN", AUTH_TOKEN_FILE)


class NotificationHandler:
    """The notifier's policy for CaseSubmitted, CaseRouted, CaseRerouted and CaseResolved: one email, or a
    recorded reason why not. It returns what to append; the kernel records it with the inbox mark."""

    def __init__(
        self,
        engine: AsyncEngine,
        vault: ContactVault,
        sender: MailSender,
        templates: MessageTemplates,
        mail_from: str,
        texts: TextDelivery | None = None,
        calls: CallDelivery | None = None,
    ) -> None:
        self._engine = engine
        self._vault = vault
        self._sender = sender
        self._templates = templates
        self._mail_from = mail_from
        self._texts = texts
        self._calls = calls

    async def __call__(self, event: RecordedEvent, reads: Reads) -> Decision:
        facts = stage_facts(event, await reads.stream(event.case_id))
        # the stage as its rows and events name it: a case resolved again after a dispute is 'resolved.2'
        stage = facts.told_as
        message_id = message_id_for(event.case_id, stage)
        if any(_tells(e.data, stage) for e in reads.pending(event.case_id)):
            log.info("stage already notified", stage=stage)  # by an earlier event of this batch
            return Decision()
        if facts.imported:
            return self._without_sending(event, stage, NothingToSend("imported from the city's old system"))
        if not wanted(facts.stage, facts.updates):
            return self._without_sending(event, stage, NothingToSend("the resident asked only for the outcome"))
        contact = None
        if facts.sealed_contact is not None:
            contact = await self._vault.unseal(reads.tx, event.case_id, facts.sealed_contact)
        call_back = self._calls is not None and self._calls.calls_back(facts)
        delivery = choose_delivery(facts.sealed_contact is not None, contact, facts.preferred_channel, call_back)
        if isinstance(delivery, PlaceCall):
            if self._calls is None:
                return self._without_sending(event, stage, CannotNotify("voice", "no telephony provider configured"))
            has_email = contact is not None and bool(contact.email)
            return await self._calls.deliver(event, facts, delivery.to, reads, has_email)
        if isinstance(delivery, SendText):
            if self._texts is None:
                return self._without_sending(event, stage, CannotNotify("sms", "no text message provider configured"))
            return await self._texts.deliver(event, facts, delivery.to, reads)
        if not isinstance(delivery, SendEmail):
            return self._without_sending(event, stage, delivery)
        rendered = self._templates.render(facts)
        try:
            message = compose_email(rendered, delivery.to, self._mail_from, message_id, datetime.now(UTC))
        except ValueError as exc:  # an address the email package will not put in a To header
            problem = f"mail client cannot write this address in a message ({type(exc).__name__})"
            return self._without_sending(event, stage, CannotNotify("email", problem))
        # Its own transaction, committed before the mail server is called: a crash after sending leaves
        # the row 'sending', and the redelivery sends the same Message-ID again rather than a new email.
        async with self._engine.begin() as tx:
            if not await self._start_delivery(tx, event, stage, message_id):
                log.info("stage already notified", stage=stage)
                return Decision()
        outcome: CaseEvent
        try:
            await self._sender.send(message)
            outcome, status = NotificationSent(stage=stage, channel="email", message_id=message_id), "sent"
        except Exception as exc:
            reason = undeliverable(exc)
            if reason is None:
                raise  # an outage: the consumer retries
            outcome, status = NotificationFailed(stage=stage, channel="email", reason=reason), "refused"
        # In the batch's transaction: of two consumers racing on one event (a rebalance), only the one
        # whose batch moves the row from 'sending' records the outcome; the other waits here for it.
        finished = await self._finish_delivery(reads.tx, event, stage, status)
        log.info(
            "notification delivered" if status == "sent" else "notification refused",
            stage=stage,
            channel="email",
            message_id=message_id,
            recorded=finished,
        )
        if not finished:
            return Decision()
        NOTIFICATIONS.labels("email", "sent" if status == "sent" else "failed").inc()
        return Decision(appends=[StreamAppend(event.case_id, None, [outcome], event.caused(ACTOR))])

    def _without_sending(self, event: RecordedEvent, stage: str, delivery: CannotNotify | NothingToSend) -> Decision:
        if isinstance(delivery, NothingToSend):
            log.info("nothing to send", stage=stage, reason=delivery.reason)
            return Decision()
        log.info("notification not possible", stage=stage, channel=delivery.channel, reason=delivery.reason)
        NOTIFICATIONS.labels(delivery.channel, "failed").inc()
        failed = NotificationFailed(stage=stage, channel=delivery.channel, reason=delivery.reason)
        return Decision(appends=[StreamAppend(event.case_id, None, [failed], event.caused(ACTOR))])

    async def _start_delivery(self, tx: AsyncConnection, event: RecordedEvent, stage: str, message_id: str) -> bool:
        """Record the delivery as 'sending'; False when this stage was already sent (or refused)."""
        await tx.execute(
            text(
                "INSERT INTO notifier.deliveries (case_id, stage, message_id, status, caused_by)"
                " VALUES (:c, :s, :m, 'sending', :e) ON CONFLICT (case_id, stage, channel, attempt) DO NOTHING"
            ),
            {"c": event.case_id, "s": stage, "m": message_id, "e": event.event_id},
        )
        status = (
            await tx.execute(
                text(
                    "SELECT status FROM notifier.deliveries"
                    " WHERE case_id = :c AND stage = :s AND channel = 'email' AND attempt = 1"
                ),
                {"c": event.case_id, "s": stage},
            )
        ).scalar_one()
        return bool(status == "sending")

    async def _finish_delivery(self, tx: AsyncConnection, event: RecordedEvent, stage: str, status: str) -> bool:
        """Move the row from 'sending' to status; False when a racing delivery already did."""
        finished = await tx.execute(
            text(
                "UPDATE notifier.deliveries SET status = :st, sent_at = now()"
                " WHERE case_id = :c AND stage = :s AND channel = 'email' AND attempt = 1 AND status = 'sending'"
                " RETURNING 1"
            ),
            {"st": status, "c": event.case_id, "s": stage},
        )
        return finished.first() is not None


def _tells(event: CaseEvent, stage: str) -> bool:
    return isinstance(event, NotificationSent | NotificationFailed) and event.stage == stage


def city_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"CIVICFLOW_CITY_TIMEZONE={name!r} is not a known time zone; use an IANA name such as 'America/Chicago'"
        ) from exc


def number_key(settings: NotifierSettings) -> bytes:
    return shared_secret(settings, settings.sms_number_key, "CIVICFLOW_SMS_NUMBER_KEY", "sms-number.key").encode()


def bootstrap(
    settings: NotifierSettings, sender: MailSender | None = None, telephony: Telephony | None = None
) -> ServiceProcess:
    """The notifier's process; without a telephony provider, texts are recorded as not possible."""
    engine = make_engine(settings.database_url)
    city = load_city(settings.city_file)
    zone = city_timezone(settings.city_timezone or city.timezone or "UTC")
    vault = ContactVault(load_master_key(settings.pii_master_key, settings.state_dir))
    sender = sender or SmtpSender(settings.smtp_host, settings.smtp_port, settings.smtp_timeout_seconds)
    templates = MessageTemplates(zone, settings.public_tracking_url)
    texts = calls = None
    alerts = None
    tasks: list[Task] = []
    policies: dict[str, Policy] = {}
    if telephony is not None:
        key = number_key(settings)
        public_url = settings.notifier_public_url or f"http://127.0.0.1:{settings.notifier_http_port}"
        quiet = QuietHours(zone, *parse_hours(settings.texting_hours)) if settings.texting_hours else None
        callback = public_url.rstrip("/") + STATUS_PATH
        texts = TextDelivery(engine, telephony, TextTemplates(zone), key, callback, quiet)
        deferred = DeferredTexts(engine, PostgresEventStore(), vault, texts)
        tasks.append(periodically(settings.deferred_text_scan_seconds, deferred.send_due, "sending deferred texts"))
        scripts = CallScripts(zone, public_url)
        call_backs = frozenset(code for code, spec in city.services.items() if spec.call_back_when_resolved)
        mail = MailFallback(sender, templates, settings.mail_from)
        calls = CallDelivery(engine, telephony, scripts, key, callback, quiet, call_backs, texts=texts, mail=mail)
        tasks.append(
            periodically(
                settings.deferred_text_scan_seconds,
                lambda: calls.send_due(PostgresEventStore(), vault),
                "placing deferred calls",
            )
        )
        alerts = StaffAlerts(engine, telephony, city, key, callback)
        acknowledgements = Acknowledgements(PostgresEventStore(), city, key)
        inbound = InboundTexts(engine, PostgresEventStore(), key, zone, acknowledgements)
        # the satisfaction survey: its links are served here, so it needs this endpoint (survey_delivery.py)
        tokens = SurveyTokens(key)
        policies[CaseResolved.event_type] = SurveySchedule(
            survey_delays(city.survey_delay, settings.survey_after_seconds), tokens
        )
        surveys = SurveySender(
            engine, PostgresEventStore(), vault, texts, sender, settings.mail_from, tokens, public_url
        )
        tasks.append(periodically(settings.survey_scan_seconds, surveys.send_due, "sending due surveys"))
        links = survey_routes(SurveyLinks(engine, PostgresEventStore(), tokens))
        menu = CallMenu(engine, PostgresEventStore(), vault, scripts)
        texts_reports = StatusReports(engine, PostgresEventStore(), vault)
        every = timedelta(seconds=settings.text_status_check_seconds)
        checks = TextStatusChecks(engine, telephony, texts_reports, every)
        tasks.append(
            periodically(every.total_seconds() / 2, checks.check_due, "asking the provider about texts' reports")
        )
        reports = CallOutcomes(engine, PostgresEventStore(), vault, key, quiet, texts_reports)
        app = create_telephony_app(telephony, public_url, inbound, reports, links, menu=menu)
        tasks.append(
            InProcessHttpServer(
                app,
                settings.notifier_http_host,
                settings.notifier_http_port,
                "telephony endpoint",
                "CIVICFLOW_NOTIFIER_HTTP_PORT",
            )
        )
    handler = NotificationHandler(
        engine,
        vault,
        sender,
        templates,
        settings.mail_from,
        texts,
        calls,
    )
    unit = UnitOfWork(engine, ACTOR, PostgresEventStore())
    stages: dict[str, Policy] = dict.fromkeys(STAGE_OF_EVENT, handler)
    if alerts is not None:  # urgent and hazard cases alert the department's on-call contacts first
        stages.update({kind: together(alerts, stages[kind]) for kind in ALERTING_EVENTS})
    for event_type, policy in policies.items():
        stages[event_type] = together(stages[event_type], policy)
    reactions = Reactions(frozenset(stages), in_order(stages), unit)
    consumer = CaseEventConsumer(ACTOR, settings, reactions)
    servicer = NotifierServicer(engine, PostgresEventStore(), vault)
    service_name = notifier_pb2.DESCRIPTOR.services_by_name["NotifierService"].full_name
    return ServiceProcess(
        ACTOR,
        settings,
        engine,
        settings.notifier_grpc_port,
        consumer=consumer,
        servicers=[
            (service_name, lambda server: notifier_pb2_grpc.add_NotifierServiceServicer_to_server(servicer, server))
        ],
        tasks=tasks,
    )


async def run() -> None:
    settings = NotifierSettings()
    configure_logging(ACTOR, settings.log_level)
    telephony = TwilioTelephony(
        settings.telephony_base_url, settings.telephony_account_sid, settings.telephony_token(), settings.telephony_from
    )
    try:
        await serve(bootstrap(settings, telephony=telephony))
    finally:
        await telephony.aclose()
