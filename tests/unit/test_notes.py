"""A department's note as a resident may see it: plain text, short, no links, whatever was sent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from civicflow.notes import LINK_REMOVED, MAX_NOTE_CHARACTERS, resident_text


def test_an_ordinary_note_is_kept_as_written() -> None:
    note = "Repaired by crew 4: 2 m² of asphalt, e.g. the whole lane. Inspected 3 p.m. (St. Louis Ave)."
    assert resident_text(note) == note


@pytest.mark.parametrize(
    "link",
    [
        "http://civicflow-confirm.example/login",
        "https://evil.example",
        "HTTPS://EVIL.EXAMPLE/x?y=1",
        "hxxp://evil.example",
        "www.evil.example",
        "evil.example/confirm",
        "evil.example.",
        "(evil.co)",
        "city-311.help",
        "пример.рф",
        "".join(chr(ord(c) + 0xFEE0) for c in "evil.example"),  # full-width, folded by NFKC
        "evil。example",  # ideographic full stop
        "mailto:someone@evil.example",
        "someone@evil.example",
        "javascript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD4=",
        "tel:+15550100",
        "http://192.168.0.1/",
        "10.0.0.1",
        "file:///etc/passwd",
    ],
)
def test_anything_that_reads_as_an_address_is_removed(link: str) -> None:
    cleaned = resident_text(f"Confirm your details at {link} today")
    assert cleaned == f"Confirm your details at {LINK_REMOVED} today"


def test_markup_is_removed_and_its_words_kept() -> None:
    note = '<p>Fixed <b>today</b></p><script>steal()</script><a href="http://evil.example">here</a>'
    assert resident_text(note) == "Fixed today steal() here"


def test_removing_a_tag_cannot_make_another() -> None:
    assert resident_text("<<b>script>alert()<</b>/script>") == "script alert() /script"


def test_an_unclosed_tag_does_not_smuggle_its_link() -> None:
    assert "evil" not in resident_text('Fixed <a href="https://evil.example/x" and more')


def test_control_and_invisible_characters_are_removed_and_lines_become_one_paragraph() -> None:
    note = "Fixed\x00 by\x1b[31m crew\r\n\r\nBcc: x\u202egnp.exe\u200b\ufeff done\u2028now"
    assert resident_text(note) == f"Fixed by[31m crew Bcc: {LINK_REMOVED} done now"  # x\u202egnp.exe: a name


def test_a_long_note_is_cut_at_a_word_and_marked() -> None:
    cleaned = resident_text("patched " * 200)
    assert len(cleaned) <= MAX_NOTE_CHARACTERS and cleaned.endswith("patched…")


def test_megabytes_of_note_cost_little_and_give_a_short_one() -> None:
    cleaned = resident_text("<b>" * 1_000_000 + "x" * 5_000_000)
    assert len(cleaned) <= MAX_NOTE_CHARACTERS


@pytest.mark.parametrize("note", [None, "", "   \n\t", "<br/><hr>", "\x00\x01\u200b"])
def test_nothing_readable_is_an_empty_note(note: str | None) -> None:
    assert resident_text(note) == ""


@given(st.text())
def test_whatever_is_sent_comes_out_short_plain_and_linkless(note: str) -> None:
    cleaned = resident_text(note)
    assert len(cleaned) <= MAX_NOTE_CHARACTERS
    assert "://" not in cleaned and "<" not in cleaned and ">" not in cleaned
    assert all(c == " " or not c.isspace() for c in cleaned)
    assert resident_text(cleaned) == cleaned, "cleaning twice changes nothing"
