"""Tracking numbers a person can read over the phone, with a check symbol so a typo is caught, not looked up.

Seven symbols from Crockford's base-32 alphabet (no I, L, O or U), shown as ``XXXX-XXX``: six are drawn
at random from the operating system's CSPRNG, and the last is a Luhn mod-32 check symbol, which catches
every single mistyped symbol and most swapped neighbours.

Why random: the number is all a resident needs to look a case up, so knowing one must not lead to
others. (An earlier scrambled sequence let anyone who tried the numbers near a real one find most other
cases.) The space is 32**6 - 1, about 1.07e9 numbers; a guess hits one of N issued cases with chance
N / 1.07e9 and the check symbol turns away 31 of 32 typed-at-random numbers before any lookup.
Draws can collide, more often as cases pile up (about 1 in 1,000 draws once a million cases exist);
intake's unique index on the number catches that and it draws again (services/intake/handlers.py).
Numbers issued by the old scrambled sequence have the same shape and parse the same.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BODY_LENGTH = 6
SPACE = 32**BODY_LENGTH
# draw(n) gives a uniform integer in [0, n); tests pass their own to force collisions.
Draw = Callable[[int], int]
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


def issue(draw: Draw = secrets.randbelow) -> str:
    """A new random tracking number (never 0000-00x); the caller makes sure it is not taken yet."""
    return number_for(1 + draw(SPACE - 1))


def number_for(value: int) -> str:
    """The tracking number whose six symbols spell value in base 32 (value in 1..32**6 - 1)."""
    if not 0 < value < SPACE:
        raise ValueError(f"value {value} is outside 1..{SPACE - 1}")
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
