"""Tracking numbers: readable, unique, and a typo is caught rather than looked up."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from civicflow import tracking


def test_numbers_are_short_grouped_and_distinct_values_give_distinct_numbers() -> None:
    numbers = [tracking.number_for(n) for n in range(1, 20_001)]
    assert len(set(numbers)) == len(numbers)
    assert all(len(n) == 8 and n[4] == "-" for n in numbers)


def test_issued_numbers_are_drawn_from_the_whole_space_by_the_given_source() -> None:
    asked: list[int] = []

    def draw(n: int) -> int:
        asked.append(n)
        return n - 1

    assert tracking.issue(draw) == tracking.number_for(32**6 - 1)
    assert asked == [32**6 - 1]
    assert tracking.issue(lambda n: 0) == tracking.number_for(1)


def test_numbers_issued_one_after_another_are_unrelated() -> None:
    values = [int(tracking.issue().replace("-", "")[:6].translate(_DIGITS), 32) for _ in range(1000)]
    assert len(set(values)) >= 999  # a repeat in 1,000 draws from 1.07e9 has odds of about 1 in 2,000
    steps = {b - a for a, b in itertools.pairwise(values)}
    assert len(steps) >= 990, "no fixed stride from one number to the next"
    assert max(values) - min(values) > 32**6 // 2, "spread over the whole space, not a neighbourhood"


@pytest.mark.parametrize("number", ["QGPE-J5T", "F1CX-4AG", "A6ST-AXQ"])  # cases 1, 2 and 12345 before
def test_numbers_issued_by_the_old_scrambled_sequence_still_parse(number: str) -> None:
    assert tracking.parse(number.lower()) == number


_DIGITS = str.maketrans({symbol: "0123456789abcdefghijklmnopqrstuv"[i] for i, symbol in enumerate(tracking.ALPHABET)})


@given(st.integers(min_value=1, max_value=32**6 - 1))
def test_every_issued_number_parses_back_however_it_is_typed(sequence: int) -> None:
    number = tracking.number_for(sequence)
    assert tracking.parse(number) == number
    assert tracking.parse(number.lower().replace("-", " ")) == number


@given(st.integers(min_value=1, max_value=32**6 - 1), st.integers(0, 6), st.integers(1, 31))
def test_any_single_mistyped_symbol_is_rejected(sequence: int, index: int, shift: int) -> None:
    symbols = tracking.number_for(sequence).replace("-", "")
    wrong = tracking.ALPHABET[(tracking.ALPHABET.index(symbols[index]) + shift) % 32]
    with pytest.raises(tracking.InvalidTrackingNumber, match="typo"):
        tracking.parse(symbols[:index] + wrong + symbols[index + 1 :])


def test_most_swapped_neighbours_are_rejected() -> None:
    caught = swapped = 0
    for n in range(1, 3000):
        symbols = tracking.number_for(n).replace("-", "")
        for i in range(6):
            if symbols[i] != symbols[i + 1]:
                swapped += 1
                try:
                    tracking.parse(symbols[:i] + symbols[i + 1] + symbols[i] + symbols[i + 2 :])
                except tracking.InvalidTrackingNumber:
                    caught += 1
    assert caught / swapped > 0.9


def test_letters_people_confuse_are_read_as_digits() -> None:
    number = next(n for n in map(tracking.number_for, range(1, 1000)) if "0" in n[1:] or "1" in n[1:])
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
