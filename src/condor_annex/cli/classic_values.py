"""The classic command line's values: decimal hours, owners, tags, user data, and the Spot
Fleet request config, each checked with the flag named as typed.

Raises :class:`~condor_annex.errors.BadInputError` (one line naming the flag and the fix).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from condor_annex import validate
from condor_annex.cli.classic_options import ClassicArgs
from condor_annex.errors import BadInputError
from condor_annex.model import MAX_SPOT_FLEET_CONFIG_BYTES, parse_spot_fleet_config

#: Longest lease or idle time accepted, hours (the modern CLI's limit: 7 days).
MAX_HOURS = 7 * 24


def hours(text: str, flag: str) -> int:
    """Parse decimal hours (``"1.5"``) into whole seconds (at least 1, at most 7 days).

    Raises:
        BadInputError: naming ``flag``.
    """
    return validate.hours(text, flag, MAX_HOURS * 3600)


def owners(text: str) -> tuple[str, ...]:
    """Parse ``-owner "u1, u2"`` into user names (split at commas and white space, as the
    original did; each must be a user name, see :func:`condor_annex.validate.owner`).

    Raises:
        BadInputError: empty, or a name with characters a user name cannot have.
    """
    names = tuple(n for n in re.split(r"[,\s]+", text.strip()) if n)
    if not names:
        raise BadInputError('-owner: give at least one user, e.g. -owner "alice, bob" (or '
                            "-no-owner to let anyone's jobs run)")
    return validate.owners(names, "-owner")


def tags(pairs: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Check ``-tag NAME VALUE`` pairs (see :func:`condor_annex.validate.tags`).

    Raises:
        BadInputError: reserved (``aws:``, ``htcondor:``), malformed, too long, too many.
    """
    return validate.tags(pairs, "-tag")


def _read_file(path: str, flag: str) -> bytes:
    """A user-named file, read with :func:`condor_annex.validate.read_file` (size cap, no FIFOs
    or devices)."""
    return validate.read_file(path, flag)


def data_flag(args: ClassicArgs) -> str:
    """The user-data flag as typed (for the combined 16 KB check's message)."""
    for value, flag in ((args.user_data_file, "-aws-user-data-file"),
                        (args.user_data, "-aws-user-data"),
                        (args.default_user_data_file, "-aws-default-user-data-file")):
        if value is not None:
            return flag
    return "-aws-default-user-data" if args.default_user_data is not None else "-aws-user-data"


def user_data(args: ClassicArgs) -> bytes | None:
    """The instances' user data: ``-aws-user-data[-file]``, else the ``-default`` forms.

    Raises:
        BadInputError: both a value and a file of the same kind, or an unreadable file.
    """
    for value, path, flag in ((args.user_data, args.user_data_file, "-aws-user-data"),
                              (args.default_user_data, args.default_user_data_file,
                               "-aws-default-user-data")):
        if value is not None and path is not None:
            raise BadInputError(f"{flag}: give {flag} or {flag}-file, not both")
        if path is not None:
            return validate.user_data(_read_file(path, flag + "-file"), flag + "-file")
        if value is not None:
            try:
                data = value.encode()
            except UnicodeEncodeError:   # a lone surrogate from undecodable argv bytes
                raise BadInputError(f"{flag}: the value is not UTF-8 text") from None
            return validate.user_data(data, flag)
    return None


def read_spot_fleet_config(path: str, flag: str = "-aws-spot-fleet-config-file") -> str:
    """Read and validate a Spot Fleet request config from ``path`` (``-`` for stdin).

    Returns:
        the validated JSON text (see :func:`condor_annex.model.parse_spot_fleet_config`).

    Raises:
        BadInputError: unreadable, not JSON, or not a valid Spot Fleet request config.
    """
    text = validate.read_file(path, flag, text=True, limit=MAX_SPOT_FLEET_CONFIG_BYTES)
    return parse_spot_fleet_config(text, flag)
