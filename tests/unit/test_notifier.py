"""notifier: which channel, which facts, what the message says and leaves out, which failures are final."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4
from zoneinfo import ZoneInfo

import pytest
from aiosmtplib import (
    SMTPConnectError,
    SMTPNotSupported,
    SMTPReadTimeoutError,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPServerDisconnected,
)

from civicflow.events import (
    CaseEvent,
    CaseResolved,
    CaseRouted,
    CaseSubmitted,
    Location,
    RecordedEvent,
    ResolutionDisputed,
)
from civicflow.pii import ResidentContact
from samples.smtp_sink.sink import read_messages, start_sink
from services.notifier.domain import (
    CannotNotify,
    MessageTemplates,
    MissingSubmission,
    NothingToSend,
    PlaceCall,
    RenderedMessage,
    SendEmail,
    SendText,
    StageFacts,
    choose_delivery,
    compose_email,
    message_id_for,
    stage_facts,
    tracking_link,
    wanted,
)
from services.notifier.mail import SmtpSender, undeliverable
from tests.factories import recorded

RESIDENT = ResidentContact(name="Dolores Abernathy", email="dolores@example.org", phone="+1 555 0100")
SUBMITTED_AT = datetime(2026, 3, 13, 15, 0, tzinfo=UTC)  # a Friday


def _recorded(case_id: UUID, version: int, data: CaseEvent) -> RecordedEvent:
    return recorded(data, case_id=case_id, version=version, at=SUBMITTED_AT)


def _submitted(preferred_channel: str | None = "email") -> CaseSubmitted:
    return CaseSubmitted(
        tracking_number="7KQ2-M9X",
        service_code="MISSED_PICKUP",
        description="Bins on Elm Street were not collected",
        location=Location(address="12 Elm Street"),
        submitted_at=SUBMITTED_AT,
        sealed_contact="gAAAA-sealed",
        preferred_channel=preferred_channel,
        has_email=True,
    )


def _routed(department: str, due_at: datetime) -> CaseRouted:
    return CaseRouted(
        department_id=department.lower(),
        department_name=department,
        priority="normal",
        due_at=due_at,
        rule_id="service:MISSED_PICKUP",
        rule_set_version="test",
    )


def _resolved() -> CaseResolved:
    return CaseResolved(resolution="Crew collected the bins.", resolved_at=datetime(2026, 3, 14, 9, 30, tzinfo=UTC))


def _story() -> list[RecordedEvent]:
    case_id = uuid4()
    return [
        _recorded(case_id, 1, _submitted()),
        _recorded(case_id, 2, _routed("Sanitation", datetime(2026, 3, 15, 15, 0, tzinfo=UTC))),
        _recorded(case_id, 3, _routed("Sanitation - Bulk", datetime(2026, 3, 16, 15, 0, tzinfo=UTC))),
        _recorded(case_id, 4, _resolved()),
    ]


# --- channel choice -----------------------------------------------------------------------------


@pytest.mark.parametrize("preferred", ["email", None, "", " EMAIL "])
def test_email_is_sent_when_there_is_an_address_and_email_is_preferred_or_unset(
    preferred: str | None,
) -> None:
    assert choose_delivery(True, RESIDENT, preferred) == SendEmail(to="dolores@example.org")


@pytest.mark.parametrize("preferred", ["fax", "PIGEON"])
def test_other_channels_are_recorded_as_not_yet_supported(preferred: str) -> None:
    assert choose_delivery(True, RESIDENT, preferred) == CannotNotify(preferred.lower(), "channel not yet supported")


def test_a_call_goes_to_who_chose_voice_or_to_any_phone_when_the_city_calls_back() -> None:
    both = ResidentContact(email="resident@example.org", phone="+13125550100")
    assert choose_delivery(True, both, "VOICE") == PlaceCall(to="+13125550100")
    assert choose_delivery(True, both, "email", call_back=True) == PlaceCall(to="+13125550100")
    assert choose_delivery(True, both, "sms", call_back=True) == PlaceCall(to="+13125550100")
    assert isinstance(choose_delivery(True, both, "none", call_back=True), NothingToSend)
    email_only = ResidentContact(email="resident@example.org")
    assert choose_delivery(True, email_only, "voice") == CannotNotify("voice", "no phone number given")
    assert choose_delivery(True, email_only, None, call_back=True) == SendEmail(to="resident@example.org")


def test_a_forgotten_contact_is_recorded_not_sent() -> None:
    assert choose_delivery(True, None, "email") == CannotNotify("email", "contact forgotten")
    assert choose_delivery(True, None, "sms") == CannotNotify("sms", "contact forgotten")


def test_no_contact_given_means_nothing_to_send() -> None:
    assert isinstance(choose_delivery(False, None, None), NothingToSend)


def test_without_an_email_address() -> None:
    phone_only = ResidentContact(phone="+13125550100")
    assert choose_delivery(True, phone_only, "email") == CannotNotify("email", "no email address given")
    assert choose_delivery(True, phone_only, None) == SendText(to="+13125550100")
    assert isinstance(choose_delivery(True, ResidentContact(name="Anon"), None), NothingToSend)


def test_a_resident_who_chose_texts_is_texted_and_one_who_chose_nothing_is_not_told() -> None:
    both = ResidentContact(email="resident@example.org", phone="+13125550100")
    assert choose_delivery(True, both, "sms") == SendText(to="+13125550100")
    assert choose_delivery(True, both, None) == SendEmail(to="resident@example.org")
    assert choose_delivery(True, ResidentContact(email="r@example.org"), "sms") == CannotNotify(
        "sms", "no phone number given"
    )
    assert choose_delivery(True, both, "voice") == PlaceCall(to="+13125550100")
    assert isinstance(choose_delivery(True, both, "none"), NothingToSend)


def test_a_resident_who_wants_only_the_outcome_hears_only_of_the_resolution() -> None:
    assert [s for s in ("submitted", "routed", "rerouted", "resolved") if wanted(s, "outcome")] == ["resolved"]
    assert all(wanted(s, "all") for s in ("submitted", "routed", "rerouted", "resolved"))


# --- stage facts --------------------------------------------------------------------------------


def test_routed_stage_takes_its_own_routing_not_a_later_one() -> None:
    story = _story()
    facts = stage_facts(story[1], story)
    assert (facts.stage, facts.tracking_number, facts.department) == ("routed", "7KQ2-M9X", "Sanitation")
    assert facts.sealed_contact == "gAAAA-sealed" and facts.preferred_channel == "email"


def test_resolved_stage_names_the_latest_department() -> None:
    story = _story()
    facts = stage_facts(story[3], story)
    assert facts.stage == "resolved"
    assert facts.department == "Sanitation - Bulk"
    assert facts.resolution == "Crew collected the bins."


def test_submitted_stage_needs_only_its_event() -> None:
    story = _story()
    facts = stage_facts(story[0], [])
    assert (facts.stage, facts.tracking_number, facts.department) == ("submitted", "7KQ2-M9X", None)


def test_a_stream_without_submission_is_an_error() -> None:
    story = _story()
    with pytest.raises(MissingSubmission):
        stage_facts(story[3], story[1:])


# --- the message --------------------------------------------------------------------------------


@pytest.fixture
def templates() -> MessageTemplates:
    return MessageTemplates(ZoneInfo("America/Chicago"))


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_each_stage_names_the_tracking_number_in_subject_and_body(templates: MessageTemplates) -> None:
    story = _story()
    for trigger in (story[0], story[1], story[3]):
        rendered = templates.render(stage_facts(trigger, story))
        assert "7KQ2-M9X" in rendered.subject
        assert "7KQ2-M9X" in _flat(rendered.body)
        assert "Missed pickup" in _flat(rendered.body)
        assert max(len(line) for line in rendered.body.splitlines()) <= 76


def test_submitted_message(templates: MessageTemplates) -> None:
    story = _story()
    rendered = templates.render(stage_facts(story[0], story))
    assert rendered.subject == "We received your 311 request 7KQ2-M9X"
    assert "We received your request 7KQ2-M9X" in _flat(rendered.body)
    assert "Friday 13 March 2026" in _flat(rendered.body)  # 15:00 UTC is still Friday in Chicago


def test_routed_message_names_department_and_due_date_in_city_time(templates: MessageTemplates) -> None:
    story = _story()
    rendered = templates.render(stage_facts(story[1], story))
    assert "Sanitation" in rendered.subject
    assert "has gone to Sanitation, expected by Sunday 15 March 2026, 10:00" in _flat(rendered.body)  # CDT


def test_a_resident_who_chose_spanish_gets_spanish_email_with_spanish_dates(templates: MessageTemplates) -> None:
    story = _story()
    spanish = story[0].data.model_copy(update={"language": "es"})
    story[0] = story[0].model_copy(update={"data": spanish})
    submitted = templates.render(stage_facts(story[0], story))
    assert submitted.subject == "Recibimos su solicitud 311 7KQ2-M9X"
    assert "el viernes 13 de marzo de 2026" in _flat(submitted.body)
    routed = templates.render(stage_facts(story[1], story))
    assert "pasó a Sanitation, con fecha prevista el domingo 15 de marzo de 2026, 10:00" in _flat(routed.body)
    resolved = templates.render(stage_facts(story[3], story))
    assert resolved.subject == "Su solicitud 311 7KQ2-M9X está resuelta"
    message = compose_email(
        resolved, "dolores@example.org", "311 <a@b>", "<m@civicflow.local>", datetime(2026, 3, 14, tzinfo=UTC)
    )
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == resolved.subject  # non-ASCII subject and body survive the wire
    assert "Crew collected the bins." in parsed.get_body().get_content()  # type: ignore[union-attr]


def test_the_due_date_is_read_in_the_routing_departments_zone_over_the_configured_one() -> None:
    story = _story()
    in_zone = story[1].data.model_copy(update={"time_zone": "America/Los_Angeles"})
    story[1] = story[1].model_copy(update={"data": in_zone})
    rendered = MessageTemplates(ZoneInfo("UTC")).render(stage_facts(story[1], story))
    assert "expected by Sunday 15 March 2026, 08:00" in _flat(rendered.body)  # PDT, not 15:00 UTC


def test_resolved_message_says_what_was_done(templates: MessageTemplates) -> None:
    story = _story()
    rendered = templates.render(stage_facts(story[3], story))
    assert rendered.subject == "Your 311 request 7KQ2-M9X was resolved"
    assert "Sanitation - Bulk" in _flat(rendered.body)
    assert "was resolved by Sanitation - Bulk on Saturday 14 March 2026: Crew collected the bins." in _flat(
        rendered.body
    )


def test_a_hostile_resolution_reaches_the_resident_as_short_plain_text_without_links(
    templates: MessageTemplates,
) -> None:
    story = _story()
    hostile = (
        "Done.\r\nBcc: everyone\x00 <a href='http://evil.example'>Confirm your details</a> at"
        " https://civicflow-confirm.example/login \u202e" + "padding " * 100_000
    )
    resolved = story[3].data.model_copy(update={"resolution": hostile})
    story[3] = story[3].model_copy(update={"data": resolved})

    body = templates.render(stage_facts(story[3], story)).body

    assert "Confirm your details at [link removed]" in _flat(body)
    for bad in ("http", "evil", "<a", "\x00", "\u202e", "\r", "Bcc: everyone\n"):
        assert bad not in body
    assert len(body) < 2000, "the note is cut to 500 characters"


def test_resolved_without_routing_still_renders(templates: MessageTemplates) -> None:
    case_id = uuid4()
    story = [_recorded(case_id, 1, _submitted()), _recorded(case_id, 2, _resolved())]
    rendered = templates.render(stage_facts(story[1], story))
    assert "was resolved on Saturday 14 March 2026: Crew collected the bins." in _flat(rendered.body)


def test_tracking_link_only_when_configured() -> None:
    facts = stage_facts(_story()[0], [])
    plain = MessageTemplates(ZoneInfo("UTC")).render(facts)
    linked = MessageTemplates(ZoneInfo("UTC"), "https://311.example.gov/track/").render(facts)
    assert "http" not in plain.body
    assert "https://311.example.gov/track/7KQ2-M9X" in linked.body
    assert tracking_link("https://x.gov/?n={tracking_number}", "7KQ2-M9X") == "https://x.gov/?n=7KQ2-M9X"


def test_the_email_carries_contact_data_only_in_the_to_header(templates: MessageTemplates) -> None:
    story = _story()
    for trigger in (story[0], story[1], story[3]):
        facts: StageFacts = stage_facts(trigger, story)
        message_id = message_id_for(facts.case_id, facts.stage)
        sent = compose_email(
            templates.render(facts),
            str(RESIDENT.email),
            "311 <no-reply@civicflow.local>",
            message_id,
            SUBMITTED_AT,
        )
        raw = sent.as_bytes()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert parsed["To"] == "dolores@example.org"
        assert parsed["Content-Transfer-Encoding"] == "7bit"  # readable as stored, so the search below is fair
        assert parsed["Message-ID"] == f"<{facts.case_id}.{facts.stage}@civicflow.local>"
        assert raw.count(b"dolores@example.org") == 1
        # The phone number whole and without spaces; not a bare "555", which a random case id can contain.
        for personal in (b"Dolores", b"Abernathy", b"555 0100", b"5550100", b"Elm Street", b"Bins on"):
            assert personal not in raw


def test_message_id_is_the_same_for_every_attempt_at_a_stage() -> None:
    case_id = uuid4()
    assert message_id_for(case_id, "routed") == message_id_for(case_id, "routed")
    assert message_id_for(case_id, "routed") != message_id_for(case_id, "resolved")


def test_a_resolution_after_a_dispute_is_told_as_a_stage_of_its_own() -> None:
    story = _story()
    case_id = story[0].case_id
    disputed = _recorded(case_id, 5, ResolutionDisputed(call_sid="CA1"))
    again = _recorded(case_id, 6, _resolved())
    stream = [*story, disputed, again]
    first, second = stage_facts(story[3], stream), stage_facts(again, stream)
    assert (first.stage, first.told_as) == ("resolved", "resolved")
    assert (second.stage, second.told_as) == ("resolved", "resolved.2")  # the templates stay the resolution's
    assert message_id_for(case_id, second.told_as) == f"<{case_id}.resolved.2@civicflow.local>"
    assert message_id_for(case_id, second.told_as) != message_id_for(case_id, first.told_as)


def _refused(*codes: int) -> SMTPRecipientsRefused:
    return SMTPRecipientsRefused([SMTPRecipientRefused(code, "refused", "r@example.org") for code in codes])


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (_refused(550), "mail server refused the address (SMTP 550)"),
        (_refused(553, 550), "mail server refused the address (SMTP 553)"),
        (_refused(450), "mail server refused the address for now (SMTP 450); not retried"),
        (SMTPRecipientRefused(551, "no", "r@example.org"), "mail server refused the address (SMTP 551)"),
        (
            SMTPNotSupported("An address containing non-ASCII characters was provided, but SMTPUTF8 is not supported"),
            "mail server cannot take a non-ASCII address (no SMTPUTF8)",
        ),
        (
            ValueError("Address '<>' contains characters not permitted in an SMTP mailbox"),
            "mail client cannot send to this address (ValueError)",
        ),
    ],
)
def test_an_address_that_cannot_be_delivered_to_is_a_failure_named_by_kind(failure: Exception, reason: str) -> None:
    assert undeliverable(failure) == reason
    assert "r@example.org" not in reason


@pytest.mark.parametrize(
    "outage",
    [
        _refused(421),  # the server is closing: not about the address
        SMTPConnectError("connection refused"),
        SMTPServerDisconnected("gone"),
        SMTPReadTimeoutError("slow"),
        SMTPResponseException(451, "local error in processing"),
        SMTPNotSupported("STARTTLS extension not supported by server"),
        OSError("network unreachable"),
    ],
)
def test_an_outage_is_retried_not_recorded_as_failed(outage: Exception) -> None:
    assert undeliverable(outage) is None


async def test_a_non_ascii_address_against_the_real_sink_fails_for_good_and_an_outage_does_not(
    tmp_path: Path,
) -> None:
    sink = await start_sink(tmp_path / "mail", port=0)
    port = sink.sockets[0].getsockname()[1]
    message = compose_email(
        RenderedMessage("s", "b\n"), "jöe@example.org", "311 <no-reply@civicflow.local>", "<m@x>", SUBMITTED_AT
    )
    try:
        with pytest.raises(SMTPNotSupported) as refused:
            await SmtpSender("127.0.0.1", port, 5).send(message)
    finally:
        sink.close()
        await sink.wait_closed()
    reason = undeliverable(refused.value)
    assert reason == "mail server cannot take a non-ASCII address (no SMTPUTF8)" and "jöe" not in reason
    assert read_messages(tmp_path / "mail") == []

    with pytest.raises(SMTPConnectError) as down:  # the same server, gone
        await SmtpSender("127.0.0.1", port, 5).send(message)
    assert undeliverable(down.value) is None


def test_a_rerouted_case_tells_the_resident_who_has_it_now(templates: MessageTemplates) -> None:
    from civicflow.events import CaseRerouted

    story = _story()
    first = story[1].data
    assert isinstance(first, CaseRouted)
    rerouted = CaseRerouted(
        **{**first.model_dump(), "department_id": "code", "department_name": "Code Enforcement"},
        reason="sanitation turned it down: not ours",
        previous_department_id="sanitation",
    )
    trigger = _recorded(story[0].case_id, 3, rerouted)
    facts = stage_facts(trigger, [*story[:2], trigger])
    assert facts.stage == "rerouted" and facts.department == "Code Enforcement"
    rendered = templates.render(facts)
    assert rendered.subject == "Your 311 request 7KQ2-M9X has been passed to Code Enforcement"
    assert "not ours" not in rendered.body, "a department's internal reason is not the resident's business"
