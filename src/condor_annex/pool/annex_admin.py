"""The annex's administrator credential: HTCondor's own admin tools on the annex's nodes.

A node trusts only what it can check: with no signing key, no incoming token authenticates, so
``condor_off -annex NAME`` from the submit host failed with "AUTHENTICATE:1003".  Each annex
therefore gets, at create:

* a **signing key of its own** (:func:`new_signing_key`: 48 random bytes, URL-safe base64),
  carried only in the annex's bundle as ``passwords.d/annex-<name>`` (the key's id is the
  file's name: HTCondor manual, *Token Authentication*, ``SEC_PASSWORD_DIRECTORY``).  The
  pool's own signing key never goes to a cloud node;
* an **administrator IDTOKEN** signed by that key, for identity ``<owner>@annex-<name>``
  (:func:`admin_identity`), written into the owner's token directory (:func:`token_directory`,
  mode 600) and removed when the annex ends
  (:func:`condor_annex.reconciler.ending.end_annex_resources`).  The node's configuration
  (:func:`condor_annex.pool.configs.annex_config`) grants that identity ADMINISTRATOR and
  CONFIG.

Which token a tool sends: HTCondor's client reads every token of its token directory and uses
the first whose key id the server advertises (``IssuerKeys``) and whose issuer is the server's
TRUST_DOMAIN; others are skipped ("Ignoring token as it was signed with key ... not known to
the server", ``condor_auth_passwd.cpp`` ``checkToken``).  The pool's daemons do not know an
annex key, so the owner's other tools keep using their own tokens; an annex's nodes know only
their annex's key, so only that annex's token is sent to them.

The token is minted here rather than by ``condor_token_create -key``: that tool reads the key
from ``SEC_PASSWORD_DIRECTORY``, a path that a wrapped ``ANNEX_TOKEN_COMMAND`` (the local
cloud's runs in its chroot) would resolve in another root.  :func:`mint_admin_token` computes
exactly what ``condor_token_create`` writes (HS256 over a key derived with HKDF-SHA256, salt
``htcondor``, info ``master jwt``, from the key file's bytes after HTCondor's
``simple_scramble``); tests/unit/test_annex_admin.py checks the signature against the tool.
The key never reaches argv, a log line, user data or the current directory.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import time
from pathlib import Path

from condor_annex import validate
from condor_annex.errors import BadInputError

log = logging.getLogger(__name__)

#: Authorization levels the administrator token carries: ADMINISTRATOR for condor_off
#: (DAEMONS_OFF, DAEMONS_OFF_PEACEFUL), condor_drain (DRAIN_JOBS) and condor_reconfig;
#: CONFIG for condor_config_val -rset (DC_CONFIG_RUNTIME); READ and WRITE, which they imply,
#: listed too since a token's scope bounds what it is granted.
TOKEN_AUTHZ = ("READ", "WRITE", "ADMINISTRATOR", "CONFIG")
#: Random bytes of a signing key (as URL-safe base64 text, 64 characters).
KEY_BYTES = 48
#: The key's path inside the bundle, relative to HTCondor's config dir.
KEY_DIR = "passwords.d"
#: Name of the token file in the owner's token directory (HTCondor reads every file there
#: whose name LOCAL_CONFIG_DIR_EXCLUDE_REGEXP does not exclude).
TOKEN_FILE = "condor-annex-{annex}"
#: HTCondor's trivial scramble of key files (``simple_scramble``: XOR with 0xDEADBEEF).
_SCRAMBLE = bytes((0xDE, 0xAD, 0xBE, 0xEF))
_KEY_RE = re.compile(r"[A-Za-z0-9_\-]{43,256}", re.ASCII)


def key_name(annex: str) -> str:
    """The annex key's id (the ``kid`` of its tokens and the key file's name):
    ``annex-<name>``."""
    return f"annex-{annex}"


def key_member(annex: str) -> str:
    """Where the key is in the bundle: ``passwords.d/annex-<name>``."""
    return f"{KEY_DIR}/{key_name(annex)}"


def new_signing_key() -> str:
    """A new random signing key (:data:`KEY_BYTES` bytes from :mod:`secrets`, as URL-safe
    base64 text: printable, so HTCondor never truncates it at a NUL)."""
    return secrets.token_urlsafe(KEY_BYTES)


def checked_key(key: str) -> str:
    """``key`` if it looks like one :func:`new_signing_key` made (never echoed in errors).

    Raises:
        BadInputError: anything else (e.g. a stored bundle that was tampered with).
    """
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
        raise BadInputError("the annex's signing key in its bundle is malformed; end the annex "
                            "(condor_annex off NAME) and create it again")
    return key


def local_owner() -> str:
    """The invoking user's name as HTCondor writes identities (``getpass.getuser``), or
    ``owner`` when it is not a valid user name."""
    try:
        return validate.owner(getpass.getuser(), "owner")
    except (BadInputError, OSError, KeyError):
        return "owner"


def admin_identity(owner: str, annex: str) -> str:
    """The administrator token's identity: ``<owner>@annex-<name>`` (a domain no pool rule
    such as ``*@annex/*`` matches)."""
    return f"{validate.owner(owner, 'owner')}@annex-{validate.annex_name(annex, 'annex name')}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwt_key(key: str) -> bytes:
    """The HMAC key HTCondor signs and checks tokens with, from the key file's text.

    HTCondor reads the file, undoes ``simple_scramble`` (XOR 0xDEADBEEF) and derives the JWT
    key with HKDF-SHA256 (salt ``htcondor``, info ``master jwt``, 32 bytes):
    ``Condor_Auth_Passwd::setup_shared_keys`` and ``generate_token``.
    """
    raw = key.encode()
    unscrambled = bytes(b ^ _SCRAMBLE[i % 4] for i, b in enumerate(raw))
    prk = hmac.new(b"htcondor", unscrambled, hashlib.sha256).digest()   # HKDF extract
    return hmac.new(prk, b"master jwt\x01", hashlib.sha256).digest()    # HKDF expand, 1 block


def sign(key: str, header_payload: str) -> str:
    """The token signature (base64url, no padding) of ``<header>.<payload>`` under ``key``."""
    return _b64(hmac.new(_jwt_key(key), header_payload.encode(), hashlib.sha256).digest())


def mint_admin_token(key: str, annex: str, identity: str, trust_domain: str, *,
                     now: float | None = None) -> str:
    """An IDTOKEN as ``condor_token_create -key annex-<name> -identity IDENTITY -authz ...``
    makes it: header ``{"alg":"HS256","kid":"annex-<name>"}``; claims ``iat``, ``iss`` (the
    pool's TRUST_DOMAIN, which the node checks), ``jti``, ``scope`` (:data:`TOKEN_AUTHZ`)
    and ``sub``.  No expiry: it works only where the annex's key is, and that key ends with the
    annex (a new annex of the same name gets a new key).

    Args:
        key: the annex's signing key (:func:`new_signing_key`).
        annex: the annex name.
        identity: :func:`admin_identity`.
        trust_domain: the pool's TRUST_DOMAIN (the annex nodes' own).
        now: issue time, epoch seconds (default: now).

    Returns:
        the token (``header.payload.signature``).
    """
    header = {"alg": "HS256", "kid": key_name(annex)}
    claims = {"iat": int(time.time() if now is None else now), "iss": trust_domain,
              "jti": secrets.token_hex(16),
              "scope": " ".join(f"condor:/{a}" for a in TOKEN_AUTHZ), "sub": identity}
    head = _b64(json.dumps(header, separators=(",", ":")).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{head}.{body}.{sign(checked_key(key), f'{head}.{body}')}"


def token_directory(knobs: dict[str, str]) -> Path:
    """The directory HTCondor's tools read the owner's tokens from, as HTCondor chooses it:
    ``ANNEX_TOKEN_DIRECTORY`` (ours: e.g. the local cloud's submit host seen from outside its
    chroot), else ``SEC_TOKEN_DIRECTORY``, else ``~/.condor/tokens.d``, or for root
    ``SEC_TOKEN_SYSTEM_DIRECTORY`` (default ``/etc/condor/tokens.d``): the order of
    ``findTokens`` in HTCondor's ``condor_auth_passwd.cpp``.

    Raises:
        BadInputError: the knob's value is not an absolute path (or holds a macro), naming it.
    """
    names = ["ANNEX_TOKEN_DIRECTORY", "SEC_TOKEN_DIRECTORY"]
    if os.geteuid() == 0:
        names.append("SEC_TOKEN_SYSTEM_DIRECTORY")
    for name in names:
        value = (knobs.get(name) or "").strip()
        if value:
            path = os.path.expanduser(value)
            if "$(" in path or validate.has_control(path) or not os.path.isabs(path):
                raise BadInputError(f"{name}: {validate.shown(value)} is not an absolute "
                                    "directory; give one, e.g. ~/.condor/tokens.d")
            return Path(path)
    if os.geteuid() == 0:
        return Path("/etc/condor/tokens.d")
    return Path("~/.condor/tokens.d").expanduser()


def token_path(annex: str, knobs: dict[str, str]) -> Path:
    """The annex's administrator token file in :func:`token_directory`."""
    return token_directory(knobs) / TOKEN_FILE.format(annex=annex)


def write_admin_token(annex: str, token: str, knobs: dict[str, str]) -> Path:
    """Write the administrator token, mode 600 (the directory made 700 when missing), through
    a temporary file and a rename; an older token of the same annex is replaced.

    Returns:
        the token file's path.

    Raises:
        BadInputError: see :func:`token_directory`.
        OSError: the directory or file could not be written.
    """
    path = token_path(annex, knobs)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".condor-annex-", dir=path.parent)   # mode 600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def remove_admin_token(annex: str, knobs: dict[str, str] | None = None) -> bool:
    """Remove the annex's administrator token from the owner's token directory, if there.
    Never raises: an ending must not stop on a local file (a failure is logged, without the
    token).

    Args:
        knobs: the user's knobs; None reads them (``condor_annex.config.read_knobs``).

    Returns:
        True when a token file was removed.
    """
    try:
        if knobs is None:
            from condor_annex import config
            knobs = config.read_knobs()
        token_path(annex, knobs).unlink()
        return True
    except FileNotFoundError:
        return False
    except Exception as e:   # noqa: BLE001 - best effort; the token is useless once the annex ends
        log.warning("annex %s: could not remove its administrator token: %s", annex, e)
        return False
