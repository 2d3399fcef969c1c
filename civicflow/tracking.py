"""Tracking numbers a person can read over the phone, with a check symbol so a typo is caught, not looked up.

Seven symbols from Crockford's base-32 alphabet (no I, L, O or U), shown as ``XXXX-XXX``: six carry the
case's sequence number, scrambled so neighbouring cases do not get neighbouring numbers, and the last
is a Luhn mod-32 check symbol, which catches every single mistyped symbol and most swapped neighbours.
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BODY_LENGTH = 6
_SPACE = 32**BODY_LENGTH
_SCRAMBLE = 0x2F0B_3A45 | 1  # odd, so multiplication modulo 32**6 is a bijection
_READ_AS = {"O": "0", "I": "1", "L": "1"}


class InvalidTrackingNumber(ValueError):
    pass


def _luhn_sum(symbols: str, double_first: bool) -> int:
    total, double = 0, double_first
    for symbol in reversed(symbols):
        addend = ALPHABET.index(symbol) * (2 if double else 1)
        total += addend // 32 + addend % 32
        double = not double
    return total


def check_symbol(body: str) -> str:
    return ALPHABET[(32 - _luhn_sum(body, double_first=True) % 32) % 32]


def issue(sequence: int) -> str:
    """The tracking number for the n-th case (n from 1); distinct for every n below 32**6."""
    if not 0 < sequence < _SPACE:
        raise ValueError(f"sequence {sequence} is outside 1..{_SPACE - 1}")
    value = (sequence * _SCRAMBLE) % _SPACE
    body = ""
    for _ in range(BODY_LENGTH):
        value, digit = divmod(value, 32)
        body = ALPHABET[digit] + body
    symbols = body + check_symbol(body)
    return f"{symbols[:4]}-{symbols[4:]}"


def parse(text: str) -> str:
    """The canonical form of what a person typed or said, or InvalidTrackingNumber saying what is wrong."""
    symbols = "".join(text.split()).replace("-", "").upper()
    symbols = "".join(_READ_AS.get(s, s) for s in symbols)
    if not symbols:
        raise InvalidTrackingNumber("a tracking number is 7 letters and digits, like 4K7Q-M2D")
    bad = sorted({s for s in symbols if s not in ALPHABET})
    if bad:
        raise InvalidTrackingNumber(
            "a tracking number uses digits and the letters A-Z except I, L, O and U;"
            f" {''.join(bad)!r} is not one of them"
        )
    if len(symbols) != BODY_LENGTH + 1:
        raise InvalidTrackingNumber(f"a tracking number has 7 letters and digits; this has {len(symbols)}")
    if _luhn_sum(symbols, double_first=False) % 32 != 0:
        raise InvalidTrackingNumber("this tracking number has a typo: its check symbol does not match")
    return f"{symbols[:4]}-{symbols[4:]}"
