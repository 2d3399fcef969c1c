"""The sample telephony provider's TwiML reading and call playing (pure)."""

from __future__ import annotations

from collections import deque

import pytest

from samples.telephony.twiml import CallScript, Gather, Hangup, Message, Pause, Post, Say, TwimlError, read_twiml

CALL = (
    '<?xml version="1.0" encoding="UTF-8"?><Response>'
    '<Say language="es-US">Hola.</Say><Pause length="2"/>'
    '<Gather numDigits="1" action="https://city.example/telephony/digits"><Say>Press 1   to confirm.</Say></Gather>'
    "<Say>Goodbye.</Say><Hangup/></Response>"
)


def test_a_call_document_reads_as_its_verbs() -> None:
    verbs = read_twiml(CALL)
    assert verbs == [
        Say("Hola.", "es-US"),
        Pause(2),
        Gather((Say("Press 1 to confirm."),), 1, "https://city.example/telephony/digits"),
        Say("Goodbye."),
        Hangup(),
    ]


def test_a_press_goes_to_the_gathers_action_with_as_many_digits_as_it_takes() -> None:
    script = CallScript(deque(["12"]))
    assert script.play(read_twiml(CALL)) == Post("https://city.example/telephony/digits", "1")
    assert script.transcript == ["said (es-US): Hola.", "paused 2s", "said (en-US): Press 1 to confirm.", "pressed: 1"]
    assert script.speech() == "Hola. Press 1 to confirm."


def test_no_press_goes_on_past_the_gather_to_the_end_of_the_call() -> None:
    script = CallScript()
    assert script.play(read_twiml(CALL)) is None
    assert script.transcript[-3:] == ["(waited for digits; none pressed)", "said (en-US): Goodbye.", "hung up"]


def test_a_reply_to_a_text_reads_as_messages() -> None:
    assert read_twiml("<Response><Message>Thanks, noted.</Message></Response>") == [Message("Thanks, noted.")]
    assert read_twiml("<Response/>") == []


@pytest.mark.parametrize(
    ("document", "says"),
    [
        ("<Response><Say>unclosed</Response>", "not well-formed"),
        ("<Reply><Say>hi</Say></Reply>", "must be <Response>"),
        ("<Response><Dial>+15005550006</Dial></Response>", "<Dial> is not a verb"),
        ('<Response><Pause length="NaN"/></Response>', "whole number"),
        ('<Response><Gather numDigits="-1"/></Response>', "whole number"),
        ("<Response><Gather><Hangup/></Gather></Response>", "<Gather> may hold"),
        ('<!DOCTYPE r [<!ENTITY a "aaaa">]><Response><Say>&a;</Say></Response>', "DOCTYPE"),
        ("<Response>" + "<Say>a</Say>" * 20_000 + "</Response>", "at most"),
        (b"<Response><Say>\xff\xfe</Say></Response>", "not well-formed"),
    ],
)
def test_a_document_that_cannot_be_played_says_why(document: str | bytes, says: str) -> None:
    with pytest.raises(TwimlError, match=says):
        read_twiml(document)
