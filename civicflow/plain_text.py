"""What text and numbers from outside may hold before anything stores, matches or mails them. Pure."""

from __future__ import annotations

import math
import re

# C0 and C1 controls and the Unicode line/paragraph separators. PostgreSQL refuses NUL in text and JSON
# outright; the others garble logs, email headers and CSV exports, or hide text from the person reading.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def control_character_problem(text: str, allowed: str = "") -> str | None:
    """What is wrong with text holding a control character other than those allowed, or None."""
    for found in _CONTROL.finditer(text):
        if found.group() not in allowed:
            kinds = " (line breaks and tabs are fine)" if allowed else ""
            return f"contains the control character U+{ord(found.group()):04X}; write plain text{kinds}"
    return None


def coordinate_problem(value: float, limit: float) -> str | None:
    """What is wrong with a latitude (limit 90) or longitude (limit 180) in degrees, or None."""
    if not math.isfinite(value):
        return "must be a number of degrees, not NaN or infinity"
    if not -limit <= value <= limit:
        return f"must be between -{limit:g} and {limit:g} degrees"
    return None
