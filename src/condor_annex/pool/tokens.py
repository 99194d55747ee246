"""Per-annex IDTOKENs, minted with HTCondor's own ``condor_token_create``.

Each annex gets its own identity ``annex-<name>@annex`` with only the authorizations an execute
node needs (READ, ADVERTISE_STARTD, ADVERTISE_MASTER), so one annex's credential cannot
impersonate the pool's daemons, and tokens are revocable per annex.  The pool must allow that
identity, e.g. ``ALLOW_ADVERTISE_STARTD = $(ALLOW_ADVERTISE_STARTD) *@annex/*``.
See the HTCondor manual, *Token Authentication* and ``condor_token_create``.
"""

from __future__ import annotations

import errno
import re
import shlex
import subprocess

from condor_annex.errors import BadInputError, PoolError
from condor_annex.validate import shown

TOKEN_AUTHZ = ("READ", "ADVERTISE_STARTD", "ADVERTISE_MASTER")


def annex_identity(annex_name: str) -> str:
    """The token identity of an annex's nodes: ``annex-<name>@annex``."""
    return f"annex-{annex_name}@annex"


def mint_annex_token(annex_name: str, lifetime_seconds: int, *,
                     command: str = "condor_token_create", key_name: str = "POOL",
                     timeout_s: float = 60) -> str:
    """Mint an IDTOKEN for one annex.

    Args:
        annex_name: validated annex name.
        lifetime_seconds: token lifetime; use the lease length plus a margin.
        command: how to run ``condor_token_create`` (knob ``ANNEX_TOKEN_COMMAND``; the local
            cloud runs it inside its chroot with the central manager's config).
        key_name: the signing key (``ANNEX_TOKEN_KEY_NAME``, default POOL).
        timeout_s: how long the tool may take, seconds.

    Returns:
        the token (a JWT string).  It is read from the tool's stdout, never put in argv or logs.

    Raises:
        BadInputError: the command does not parse, is missing or is not executable (a setting
            to fix; nothing was created).
        PoolError: the tool timed out or failed (its last stderr line, which holds no secret,
            is quoted).
    """
    try:
        words = shlex.split(command)
    except ValueError as e:   # unbalanced quotes
        raise BadInputError(f"ANNEX_TOKEN_COMMAND: {shown(command)} does not parse ({e}); "
                            "give a command line, e.g. condor_token_create") from None
    if not words:
        raise BadInputError("ANNEX_TOKEN_COMMAND: empty; give a command line, e.g. "
                            "condor_token_create")
    argv = words + [
        "-identity", annex_identity(annex_name), "-key", key_name,
        "-lifetime", str(int(lifetime_seconds))]
    for authz in TOKEN_AUTHZ:
        argv += ["-authz", authz]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                           stdin=subprocess.DEVNULL, timeout=timeout_s)
    except FileNotFoundError:
        raise BadInputError(f"ANNEX_TOKEN_COMMAND: cannot find {shown(argv[0])} to mint the "
                            "annex token; install HTCondor's tools or set "
                            "ANNEX_TOKEN_COMMAND") from None
    except (PermissionError, IsADirectoryError):
        raise BadInputError(f"ANNEX_TOKEN_COMMAND: {shown(argv[0])} is not executable; fix "
                            "its mode or set ANNEX_TOKEN_COMMAND") from None
    except subprocess.TimeoutExpired:
        raise PoolError(f"{shown(argv[0])} did not mint the annex token within {timeout_s:g} "
                        "s; check that the pool's signing key is readable, or set "
                        "ANNEX_TOKEN_COMMAND") from None
    except OSError as e:
        if e.errno == errno.ENOEXEC:   # not a program nor a script with a #! line
            raise BadInputError(f"ANNEX_TOKEN_COMMAND: {shown(argv[0])} is not a program; "
                                "set ANNEX_TOKEN_COMMAND to condor_token_create") from None
        raise PoolError(f"cannot run {shown(argv[0])} to mint the annex token "
                        f"({e.strerror or e})") from None
    token = p.stdout.strip()
    if p.returncode or not re.fullmatch(r"ey[A-Za-z0-9_\-.=]+", token, re.ASCII):
        # The tool's last stderr line (it holds no secret), on one line.
        last = (p.stderr.strip().splitlines() or [""])[-1][-300:]
        raise PoolError(f"condor_token_create failed (exit {p.returncode}): {shown(last, 300)}")
    return token
