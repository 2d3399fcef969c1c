"""Tracking numbers: readable, unique, and a typo is caught rather than looked up."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from civicflow import tracking


def test_numbers_are_short_grouped_and_unique() -> None:
    numbers = [tracking.issue(n) for n in range(1, 20_001)]
    assert len(set(numbers)) == len(numbers)
    assert all(len(n) == 8 and n[4] == "-" for n in numbers)
    assert numbers[0][:3] != numbers[1][:3]  # neighbours do not look alike


@given(st.integers(min_value=1, max_value=32**6 - 1))
def test_every_issued_number_parses_back_however_it_is_typed(sequence: int) -> None:
    number = tracking.issue(sequence)
    assert tracking.parse(number) == number
    assert tracking.parse(number.lower().replace("-", " ")) == number


@given(st.integers(min_value=1, max_value=32**6 - 1), st.integers(0, 6), st.integers(1, 31))
def test_any_single_mistyped_symbol_is_rejected(sequence: int, index: int, shift: int) -> None:
    symbols = tracking.issue(sequence).replace("-", "")
    wrong = tracking.ALPHABET[(tracking.ALPHABET.index(symbols[index]) + shift) % 32]
    with pytest.raises(tracking.InvalidTrackingNumber, match="typo"):
        tracking.parse(symbols[:index] + wrong + symbols[index + 1 :])


def test_most_swapped_neighbours_are_rejected() -> None:
    caught = swapped = 0
    for n in range(1, 3000):
        symbols = tracking.issue(n).replace("-", "")
        for i in range(6):
            if symbols[i] != symbols[i + 1]:
                swapped += 1
                try:
                    tracking.parse(symbols[:i] + symbols[i + 1] + symbols[i] + symbols[i + 2 :])
                except tracking.InvalidTrackingNumber:
                    caught += 1
    assert caught / swapped > 0.9


def test_letters_people_confuse_are_read_as_digits() -> None:
    number = next(tracking.issue(n) for n in range(1, 1000) if "0" in tracking.issue(n) or "1" in tracking.issue(n))
    spoken = number.replace("0", "o").replace("1", "l")
    assert tracking.parse(spoken) == number


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "7 letters and digits"),
        ("QGPE-J5", "this has 6"),
        ("QGPE-J5T-X", "this has 8"),
        ("QGPE-J5#", "'#' is not one of them"),
        ("QGPU-J5T", "except I, L, O and U; 'U' is not one of them"),
    ],
)
def test_malformed_numbers_say_what_is_wrong(typed: str, message: str) -> None:
    with pytest.raises(tracking.InvalidTrackingNumber, match=message):
        tracking.parse(typed)
