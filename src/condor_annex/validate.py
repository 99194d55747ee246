"""The rules every user value must pass, for both command lines (classic ``-flag`` and modern
``--flag``): each check takes the flag *as the user typed it* and raises
:class:`~condor_annex.errors.BadInputError` with one line naming that flag and the fix.

Model layer: imports only :mod:`condor_annex.errors` and the standard library.

Every pattern is matched against the whole string (``re.fullmatch`` with ASCII classes): ``^…$``
with ``re.match`` accepts a trailing newline, and ``\\d`` accepts any Unicode digit (``١٠``).
Values shown back in a message go through :func:`shown`, so a message stays on one line whatever
the user typed.
"""

from __future__ import annotations

import base64
import os
import re
import stat
import sys
from typing import Literal, overload

from condor_annex.errors import BadInputError

#: HTCondor's classic limit (AnnexID); also keeps rule and schedule names within AWS limits.
ANNEX_NAME_MAX = 27
MAX_COUNT = 10000
#: Longest lease or idle time accepted (seconds): 7 days.
MAX_DURATION_SECONDS = 7 * 86400
#: Tags of ours: users may not set any tag with this prefix (any case).
RESERVED_TAG_PREFIX = "htcondor:"
#: AWS allows 50 tags per resource.  We add up to 3 (htcondor:AnnexName, htcondor:LaunchToken,
#: htcondor:ConfigBucket) and keep room for 2 more of ours, so a user may give 45.
AWS_MAX_TAGS = 50
MAX_USER_TAGS = AWS_MAX_TAGS - 3 - 2
#: EC2's user-data limit, counted on the base64 text (RunInstances ``UserData``).
MAX_USER_DATA_BASE64 = 16384
#: Largest input file read (user data, Spot Fleet config, key files, the user config).
MAX_FILE_BYTES = 1 << 20

_ANNEX_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*", re.ASCII)
_INSTANCE_TYPE_RE = re.compile(r"[a-z][a-z0-9-]*\.[a-z0-9]+", re.ASCII)
_IMAGE_ID_RE = re.compile(r"ami-[0-9a-f]{8,17}", re.ASCII)
_REGION_RE = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]+", re.ASCII)
#: A user name as HTCondor's ``Owner`` holds it (POSIX portable user names, at most 32).
_OWNER_RE = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]{0,31}", re.ASCII)
#: Tag keys readable through instance metadata (the agent reads tags there; with metadata tags
#: enabled EC2 refuses other keys, after our lease would exist): letters, digits, + - = . , _ : @
_TAG_KEY_RE = re.compile(r"[A-Za-z0-9+\-=.,_:@]{1,128}", re.ASCII)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([smhd]?)", re.ASCII)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_URL_RE = re.compile(r"https?://[A-Za-z0-9.\-_\[\]:]+(/[!-~]*)?", re.ASCII)


def dollars(text: object, flag: str, pattern: re.Pattern[str], *, negative: str,
            not_amount: str) -> str:
    """Check that ``text`` is an amount of US dollars as ``pattern`` spells one (no sign,
    exponent, ``$`` or spaces); the range is the caller's.

    Returns:
        ``text``.

    Raises:
        BadInputError: ``"<flag>: <text> is negative; <negative>"`` for a minus sign before an
            amount, else ``"<flag>: <text> is not an amount of US dollars<not_amount>"``.
    """
    if isinstance(text, str) and text.startswith("-") and pattern.fullmatch(text[1:]):
        raise BadInputError(f"{flag}: {shown(text, 40)} is negative; {negative}")
    if not isinstance(text, str) or not pattern.fullmatch(text):
        raise BadInputError(f"{flag}: {shown(text, 40)} is not an amount of US dollars"
                            f"{not_amount}")
    return text


def shown(value: object, limit: int = 60) -> str:
    """``value`` quoted for a one-line message (``repr``: control characters escaped), cut
    after ``limit`` characters."""
    text = str(value)
    cut = len(text) > limit
    quoted = repr(text[:limit])
    return quoted + (f"... ({len(text)} characters)" if cut else "")


def has_control(text: str) -> bool:
    """True when ``text`` holds a control character (newline, NUL, DEL, C1, line separators)."""
    return bool(_CONTROL_RE.search(text))


def annex_name(name: str, flag: str = "--annex-name") -> str:
    """Return ``name`` if it is a valid annex name, else raise.

    Valid: 1-27 characters of ``[A-Za-z0-9-]``, starting with a letter or digit. ``_`` is refused
    because the client token ``<annex>_<uuid>`` is split at the last ``_``; the original split at
    the first one (reference §10).

    Raises:
        BadInputError: naming ``flag`` and the rule.
    """
    if not name:
        raise BadInputError(f"{flag}: an annex name is required, e.g. {flag} my-annex")
    if len(name) > ANNEX_NAME_MAX:
        raise BadInputError(
            f"{flag}: {shown(name)} has {len(name)} characters; use at most {ANNEX_NAME_MAX}")
    if not _ANNEX_NAME_RE.fullmatch(name):
        raise BadInputError(
            f"{flag}: {shown(name)} may use only letters, digits and '-' (no '_'), starting "
            "with a letter or digit")
    return name


def count(text: str, flag: str, maximum: int = MAX_COUNT) -> int:
    """Parse a whole number from 1 to ``maximum`` written in ASCII digits only.

    ``int()`` alone would accept ``1_0``, ``+5``, `` 5`` and ``١٠``; they are refused here.

    Raises:
        BadInputError: naming ``flag``.
    """
    text = text if isinstance(text, str) else ""
    if re.fullmatch(r"-?[0-9]{1,12}", text, re.ASCII):
        n = int(text)
        if 1 <= n <= maximum:
            return n
        raise BadInputError(f"{flag}: {n} is out of range; use 1 to {maximum}")
    if re.fullmatch(r"[0-9]+", text, re.ASCII):
        raise BadInputError(f"{flag}: {shown(text)} is out of range; use 1 to {maximum}")
    raise BadInputError(f"{flag}: {shown(text)} is not a whole number; use e.g. {flag} 10")


def duration(text: str, flag: str, *, unit_required: bool, default_unit: str = "s",
             maximum_s: int = MAX_DURATION_SECONDS, allow_zero: bool = False) -> int:
    """Parse ``"90s"``, ``"50m"``, ``"1.5h"``, ``"2d"`` to whole seconds (at least 1).

    Args:
        text: the value as typed (no spaces; ASCII digits).
        flag: the flag, for messages.
        unit_required: refuse a bare number (the modern ``--duration``, ``--idle`` and
            ``extend``: a bare ``2`` is hours in the classic syntax, so it would be ambiguous).
        default_unit: the unit of a bare number when one is allowed (``--grace``: seconds).
        maximum_s: the largest value, seconds.
        allow_zero: accept ``0`` (e.g. ``off --grace 0``: no waiting).

    Raises:
        BadInputError: naming ``flag`` and the accepted forms.
    """
    text = text if isinstance(text, str) else ""
    m = _DURATION_RE.fullmatch(text)
    if not m:
        raise BadInputError(f"{flag}: {shown(text)} is not a duration; use e.g. 90s, 50m or 2h")
    if unit_required and not m.group(2):
        raise BadInputError(f"{flag}: {shown(text)} has no unit; add a unit, e.g. {flag} "
                            f"{text}h (s, m, h or d)")
    seconds = float(m.group(1)) * _UNITS[m.group(2) or default_unit]
    if allow_zero and seconds == 0:
        return 0
    if not 0 < seconds <= maximum_s:
        raise BadInputError(f"{flag}: {shown(text)} must be more than 0 and at most "
                            f"{maximum_s // 3600} hours")
    return max(1, round(seconds))


def hours(text: str, flag: str, maximum_s: int = MAX_DURATION_SECONDS) -> int:
    """Parse decimal hours (classic ``-duration 1.5``, ``-idle 0.25``) into whole seconds
    (at least 1, at most ``maximum_s``).

    Raises:
        BadInputError: naming ``flag``.
    """
    text = text if isinstance(text, str) else ""
    if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", text, re.ASCII):
        raise BadInputError(f"{flag}: {shown(text)} is not a number of hours; use e.g. "
                            f"{flag} 1.5")
    seconds = round(float(text) * 3600)
    if not 1 <= seconds <= maximum_s:
        raise BadInputError(f"{flag}: {shown(text)} must be more than 0 and at most "
                            f"{maximum_s // 3600} hours")
    return seconds


def owner(name: str, flag: str) -> str:
    """Return ``name`` if it is an HTCondor user name (the job's ``Owner``), else raise.

    Valid: 1-32 characters of letters, digits, ``.``, ``_`` and ``-``, not starting with ``-``.
    Everything else (quotes, commas, spaces, newlines, ``$``, ``@``) is refused: owners are
    written into the node's START expression.

    Raises:
        BadInputError: naming ``flag``.
    """
    if not isinstance(name, str) or not _OWNER_RE.fullmatch(name):
        raise BadInputError(f"{flag}: {shown(name)} is not a user name; use 1-32 letters, "
                            "digits, '.', '_' or '-', e.g. alice")
    return name


def owners(names, flag: str) -> tuple[str, ...]:
    """Check each of ``names`` with :func:`owner`; refuse none and duplicates are dropped.

    Raises:
        BadInputError: naming ``flag``.
    """
    out: list[str] = []
    for n in names:
        if owner(n, flag) not in out:
            out.append(n)
    if not out:
        raise BadInputError(f"{flag}: give at least one user")
    return tuple(out)


def tag(key: str, value: str, flag: str) -> tuple[str, str]:
    """Check one tag against EC2's rules and ours.

    Key: 1-128 characters readable through instance metadata (letters, digits, ``+ - = . , _ :
    @``), not ``aws:…`` (AWS's) or ``htcondor:…`` (ours), in any case.  Value: at most 256
    characters, no control characters.

    Raises:
        BadInputError: naming ``flag``.
    """
    if not isinstance(key, str) or not isinstance(value, str):
        raise BadInputError(f"{flag}: a tag needs a name and a value")
    low = key.lower()
    if low.startswith("aws:"):
        raise BadInputError(f"{flag}: {shown(key)} is reserved by AWS (aws: prefix); choose "
                            "another tag name")
    if low.startswith(RESERVED_TAG_PREFIX):
        raise BadInputError(f"{flag}: {shown(key)} is reserved by condor_annex (htcondor: "
                            "prefix); choose another tag name")
    if not _TAG_KEY_RE.fullmatch(key) or key in (".", "..", "_index"):
        raise BadInputError(f"{flag}: tag name {shown(key)} must be 1-128 letters, digits or "
                            "+ - = . , _ : @ (EC2 instance-metadata tags), e.g. team")
    if len(value) > 256 or has_control(value):
        raise BadInputError(f"{flag}: the value of tag {shown(key)} must be at most 256 "
                            "characters, with no control characters")
    return key, value


def tags(pairs, flag: str) -> tuple[tuple[str, str], ...]:
    """Check ``(key, value)`` pairs with :func:`tag`; at most :data:`MAX_USER_TAGS`, each key
    once.

    Raises:
        BadInputError: naming ``flag``.
    """
    pairs = [tag(k, v, flag) for k, v in pairs]
    if len(pairs) > MAX_USER_TAGS:
        raise BadInputError(f"{flag}: {len(pairs)} tags given; AWS allows {AWS_MAX_TAGS} per "
                            f"instance and condor_annex needs some, so give at most "
                            f"{MAX_USER_TAGS}")
    seen: set[str] = set()
    for k, _ in pairs:
        if k in seen:
            raise BadInputError(f"{flag}: tag {shown(k)} is given twice; give it once")
        seen.add(k)
    return tuple(pairs)


def instance_type(text: str, flag: str) -> str:
    """Return ``text`` if it looks like an EC2 instance type (``m5.large``), else raise.

    Raises:
        BadInputError: naming ``flag``.
    """
    if not isinstance(text, str) or len(text) > 64 or not _INSTANCE_TYPE_RE.fullmatch(text):
        raise BadInputError(f"{flag}: {shown(text)} is not an instance type; use e.g. m5.large")
    return text


def image_id(text: str, flag: str) -> str:
    """Return ``text`` if it is an AMI id (``ami-`` and 8 or 17 hex digits), else raise.

    Raises:
        BadInputError: naming ``flag``.
    """
    if not isinstance(text, str) or not _IMAGE_ID_RE.fullmatch(text):
        raise BadInputError(f"{flag}: {shown(text)} is not an AMI id; use e.g. "
                            "ami-0123456789abcdef0")
    return text


def region(text: str, flag: str) -> str:
    """Return ``text`` if it looks like an AWS region (``us-east-1``), else raise.

    Raises:
        BadInputError: naming ``flag``.
    """
    if not isinstance(text, str) or not _REGION_RE.fullmatch(text):
        raise BadInputError(f"{flag}: {shown(text)} is not a region; use e.g. us-east-1")
    return text


def url(text: str, flag: str) -> str:
    """Return ``text`` if it is an http(s) URL with a host (an endpoint), else raise.

    Raises:
        BadInputError: naming ``flag``.
    """
    if not isinstance(text, str) or not _URL_RE.fullmatch(text):
        raise BadInputError(f"{flag}: {shown(text)} is not an http(s) URL; use e.g. "
                            "https://ec2.us-east-1.amazonaws.com")
    return text


_SERIES_RE = re.compile(r"[0-9]{2}\.x", re.ASCII)


def htcondor_series(text: str, flag: str) -> str:
    """Return ``text`` if it names an HTCondor release series of its apt repository
    (``23.x``, ``24.x``: two digits then ``.x``), else raise.

    Raises:
        BadInputError: naming ``flag``.
    """
    if not isinstance(text, str) or not _SERIES_RE.fullmatch(text):
        raise BadInputError(f"{flag}: {shown(text)} is not an HTCondor series; use e.g. 24.x "
                            "(or remove it for the distribution's HTCondor)")
    return text


def user_data(data: bytes, flag: str) -> bytes:
    """Return ``data`` if EC2 accepts it as user data: at most 16 KB once base64-encoded.

    Raises:
        BadInputError: naming ``flag``.
    """
    size = len(base64.b64encode(data))
    if size > MAX_USER_DATA_BASE64:
        raise BadInputError(f"{flag}: user data is {len(data)} bytes ({size} in base64); EC2 "
                            f"accepts at most {MAX_USER_DATA_BASE64} bytes in base64 "
                            "(about 12 KB raw); compress it or fetch the rest at boot")
    return data


# The overloads tell the type checker that ``text=True`` gives str and the default gives bytes.
@overload
def read_file(path: str, flag: str, *, limit: int = ..., text: Literal[False] = ...,
              stdin=None) -> bytes: ...


@overload
def read_file(path: str, flag: str, *, limit: int = ..., text: Literal[True],
              stdin=None) -> str: ...


def read_file(path: str, flag: str, *, limit: int = MAX_FILE_BYTES, text: bool = False,
              stdin=None) -> bytes | str:
    """Read a file the user named, safely: a regular file (or ``-`` for stdin) of at most
    ``limit`` bytes.

    FIFOs, devices and sockets are refused after a ``stat`` and before opening (reading them
    could hang or never end); the file is opened with ``O_NONBLOCK`` and checked again, in case
    it was swapped in between.

    Args:
        path: the path as given (``~`` expanded), or ``-`` for standard input.
        flag: the flag or knob that named it, for messages.
        limit: the largest size accepted, bytes.
        text: decode as UTF-8 (refusing what is not) and return ``str``.
        stdin: the stream ``-`` reads (default ``sys.stdin``).

    Returns:
        the content, bytes or (``text``) str.

    Raises:
        BadInputError: missing, unreadable, a directory, not a regular file, too big, or not
            UTF-8 when ``text``.
    """
    where = "standard input" if path == "-" else shown(path)
    if path == "-":
        stream = sys.stdin if stdin is None else stdin
        raw = getattr(stream, "buffer", None)
        try:
            data = raw.read(limit + 1) if raw is not None else stream.read(limit + 1)
        except (OSError, ValueError) as e:
            raise BadInputError(f"{flag}: cannot read standard input ({e})") from None
        if isinstance(data, str):
            try:
                data = data.encode("utf-8")
            except UnicodeEncodeError:
                raise BadInputError(f"{flag}: standard input is not UTF-8 text") from None
    else:
        full = os.path.expanduser(path)
        try:
            st = os.stat(full)
            if stat.S_ISDIR(st.st_mode):
                raise BadInputError(f"{flag}: {where} is a directory; give a file")
            if not stat.S_ISREG(st.st_mode):
                raise BadInputError(f"{flag}: {where} is not a regular file (a FIFO, device or "
                                    "socket); give a file")
            if st.st_size > limit:
                raise BadInputError(f"{flag}: {where} is {st.st_size} bytes; at most {limit} "
                                    "are accepted")
            fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise BadInputError(f"{flag}: {where} is not a regular file; give a file")
                chunks, size = [], 0
                while size <= limit:
                    chunk = os.read(fd, min(65536, limit + 1 - size))
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
                data = b"".join(chunks)
            finally:
                os.close(fd)
        except (OSError, ValueError) as e:
            reason = getattr(e, "strerror", None) or type(e).__name__
            raise BadInputError(f"{flag}: cannot read {where} ({reason}); give a readable "
                                "file") from None
    if len(data) > limit:
        raise BadInputError(f"{flag}: {where} is more than {limit} bytes; at most {limit} are "
                            "accepted")
    if not text:
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInputError(f"{flag}: {where} is not UTF-8 text; give a text file") from None
