"""Parsing of command-line values into validated numbers (bad input -> BadInputError, exit 2).

The rules are :mod:`condor_annex.validate` (shared by both command lines); these wrappers keep
the modern syntax's choices in one place: lease and idle times need a unit, other times
(``--grace``, ``--wait-timeout``, ``local submit --sleep``) may be bare seconds.
"""

from __future__ import annotations

from condor_annex import validate


def duration(text: str, flag: str, *, default_unit: str = "s", maximum_s: int = 7 * 86400,
             allow_zero: bool = False, unit_required: bool = False) -> int:
    """Parse ``"90s"``, ``"50m"``, ``"1.5h"`` (or, unless ``unit_required``, a bare number in
    ``default_unit``) to whole seconds.

    ``allow_zero`` accepts ``0`` (e.g. ``off --grace 0``: no waiting).

    Raises:
        BadInputError: naming ``flag`` and the accepted forms.
    """
    return validate.duration(text, flag, unit_required=unit_required, default_unit=default_unit,
                             maximum_s=maximum_s, allow_zero=allow_zero)


def lease_duration(text: str, flag: str) -> int:
    """A lease or idle time in the modern syntax (``--duration``, ``--idle``, ``extend``): a
    number **with** a unit (``50m``, ``2h``, ``90s``), more than 0, at most 7 days; seconds.

    A bare number is refused: it means hours in the classic syntax (``-duration 2``), so
    ``--duration 2`` would silently be a 2-second lease.

    Raises:
        BadInputError: naming ``flag``, with the fix ("add a unit, e.g. 2h").
    """
    return validate.duration(text, flag, unit_required=True)


def count(text: str, flag: str) -> int:
    """Parse an instance count or capacity (1..10000, ASCII digits only: ``1_0``, ``+5``,
    ``١٠`` are refused).

    Raises:
        BadInputError: naming ``flag``.
    """
    return validate.count(text, flag)
