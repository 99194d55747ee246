"""Per-annex IDTOKENs, minted with HTCondor's own ``condor_token_create``.

Each annex gets its own identity ``annex-<name>@annex`` with only the authorizations an execute
node needs (READ, ADVERTISE_STARTD, ADVERTISE_MASTER), so one annex's credential cannot
impersonate the pool's daemons, and tokens are revocable per annex.  The pool must allow that
identity, e.g. ``ALLOW_ADVERTISE_STARTD = $(ALLOW_ADVERTISE_STARTD) *@annex/*``.
See the HTCondor manual, *Token Authentication* and ``condor_token_create``.
"""

from __future__ import annotations

import shlex
import subprocess

from condor_annex.errors import PoolError

TOKEN_AUTHZ = ("READ", "ADVERTISE_STARTD", "ADVERTISE_MASTER")


def annex_identity(annex_name: str) -> str:
    """The token identity of an annex's nodes: ``annex-<name>@annex``."""
    return f"annex-{annex_name}@annex"


def mint_annex_token(annex_name: str, lifetime_seconds: int, *,
                     command: str = "condor_token_create", key_name: str = "POOL") -> str:
    """Mint an IDTOKEN for one annex.

    Args:
        annex_name: validated annex name.
        lifetime_seconds: token lifetime; use the lease length plus a margin.
        command: how to run ``condor_token_create`` (knob ``ANNEX_TOKEN_COMMAND``; the local
            cloud runs it inside its chroot with the central manager's config).
        key_name: the signing key (``ANNEX_TOKEN_KEY_NAME``, default POOL).

    Returns:
        the token (a JWT string).  It is read from the tool's stdout, never put in argv or logs.

    Raises:
        PoolError: the tool is missing or failed (its stderr, which holds no secret, is quoted).
    """
    argv = shlex.split(command) + [
        "-identity", annex_identity(annex_name), "-key", key_name,
        "-lifetime", str(int(lifetime_seconds))]
    for authz in TOKEN_AUTHZ:
        argv += ["-authz", authz]
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise PoolError(f"cannot run '{argv[0]}' to mint the annex token; install HTCondor's "
                        "tools or set ANNEX_TOKEN_COMMAND") from None
    token = p.stdout.strip()
    if p.returncode or not token.startswith("ey"):
        raise PoolError(f"condor_token_create failed (exit {p.returncode}): "
                        f"{p.stderr.strip()[-300:]}")
    return token
