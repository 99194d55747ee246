"""Parsing of command-line values into validated numbers (bad input -> BadInputError, exit 2)."""

from __future__ import annotations

import re

from condor_annex.errors import BadInputError
from condor_annex.model import MAX_COUNT

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str, flag: str, *, default_unit: str = "s", maximum_s: int = 7 * 86400,
             allow_zero: bool = False) -> int:
    """Parse ``"90s"``, ``"50m"``, ``"1.5h"`` (or a bare number in ``default_unit``) to seconds.

    ``allow_zero`` accepts ``0`` (e.g. ``off --grace 0``: no waiting).

    Raises:
        BadInputError: naming ``flag`` and the accepted forms.
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smhd]?)\s*", text or "")
    if not m:
        raise BadInputError(f"{flag}: '{text}' is not a duration; use e.g. 90s, 50m or 1.5h")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or default_unit]
    if allow_zero and seconds == 0:
        return 0
    if seconds <= 0 or seconds > maximum_s:
        raise BadInputError(f"{flag}: '{text}' must be more than 0 and at most "
                            f"{maximum_s // 3600} hours")
    return max(1, round(seconds))


def count(text: str, flag: str) -> int:
    """Parse an instance count (1..10000).

    Raises:
        BadInputError: naming ``flag``.
    """
    try:
        n = int(text)
    except (TypeError, ValueError):
        raise BadInputError(f"{flag}: '{text}' is not a whole number; use e.g. {flag} 10") \
            from None
    if not 1 <= n <= MAX_COUNT:
        raise BadInputError(f"{flag}: {n} is out of range; use 1 to {MAX_COUNT}")
    return n
