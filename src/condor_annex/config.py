"""The user's configuration: HTCondor-style ``KEY = VALUE`` knobs in ``~/.condor/user_config``.

``setup`` and ``local up`` write their knobs as *managed blocks*::

    # BEGIN condor-annex setup
    ANNEX_DEFAULT_S3_BUCKET = ...
    # END condor-annex setup

Re-writing a block replaces it in place, so re-running ``setup`` never duplicates it (the
original appended a new block each time; reference §2).  The file's path can be moved with the
environment variable ``CONDOR_ANNEX_USER_CONFIG`` (tests do).  Knobs may be region-prefixed as
in HTCondor (``us_east_1.ANNEX_DEFAULT_S3_BUCKET``); :func:`knob` prefers the prefixed form.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condor_annex import validate
from condor_annex.errors import BadInputError, NotSetUpError
from condor_annex.model import SeedOutputs, SetupOutputs

#: ``NAME = value`` (spaces optional), HTCondor's macro definition; names may carry a local-name
#: or subsystem prefix (``us_east_1.ANNEX_DEFAULT_S3_BUCKET``).
_LINE_RE = re.compile(r"[ \t]*([A-Za-z0-9_.]+)[ \t]*=[ \t]*(.*?)[ \t]*", re.ASCII)
#: HTCondor directives this tool does not evaluate: refused rather than silently misread (a
#: prefix match on purpose: it spots the directive's first word; lines are checked in full by
#: _LINE_RE.fullmatch).
_DIRECTIVE_RE = re.compile(r"[ \t]*(if|elif|else|endif|include|use|error|warning)\b|"
                           r"[ \t]*[A-Za-z0-9_.]+[ \t]*@=", re.ASCII | re.IGNORECASE)


def user_config_path() -> Path:
    """Path of the user's config file (``$CONDOR_ANNEX_USER_CONFIG`` or ``~/.condor/user_config``)."""
    return Path(os.environ.get("CONDOR_ANNEX_USER_CONFIG", "~/.condor/user_config")).expanduser()


#: Knobs taken from HTCondor's own configuration besides ``ANNEX_*`` ones.
_CONDOR_KNOBS = ("COLLECTOR_HOST", "TRUST_DOMAIN", "UID_DOMAIN",
                 # where HTCondor's tools read the user's tokens (pool/annex_admin.py)
                 "SEC_TOKEN_DIRECTORY", "SEC_TOKEN_SYSTEM_DIRECTORY")


def condor_knobs() -> dict[str, str]:
    """``ANNEX_*`` knobs (also region-prefixed ones) and the pool's addresses from HTCondor's
    configuration system (the ``htcondor`` bindings' ``param``), when this host has an HTCondor
    configuration (``$CONDOR_CONFIG`` or ``/etc/condor/condor_config``); else ``{}``.

    This is how an admin sets site-wide defaults (e.g. ``ANNEX_DEFAULT_AWS_REGION`` in
    ``/etc/condor/config.d``) for every user.  The bindings are imported only then.
    """
    cfg = os.environ.get("CONDOR_CONFIG") or "/etc/condor/condor_config"
    if cfg in ("ONLY_ENV", "/dev/null") or not os.path.isfile(cfg):
        return {}
    try:
        import htcondor2
        htcondor2.reload_config()
        return {k: str(v) for k, v in htcondor2.param.items()
                if k.upper().startswith("ANNEX_") or ".ANNEX_" in k.upper()
                or k.upper() in _CONDOR_KNOBS}
    except Exception:  # noqa: BLE001 - a broken site config must not stop the CLI
        return {}


def read_knobs(path: Path | None = None) -> dict[str, str]:
    """The user's knobs: HTCondor's configuration (:func:`condor_knobs`, site defaults), then
    ``KEY = VALUE`` lines of the user config file (later lines win; see :func:`parse_knobs`).

    Args:
        path: read only this file (no HTCondor configuration).

    Returns:
        knob name -> value; empty when nothing is configured.

    Raises:
        BadInputError: the file is unreadable, not a regular file, too big, not UTF-8, or has a
            line that does not parse (naming the file and line).
    """
    knobs: dict[str, str] = condor_knobs() if path is None else {}
    path = path or user_config_path()
    if not path.exists():
        return knobs
    text = validate.read_file(str(path), str(path), text=True)
    knobs.update(parse_knobs(text, str(path)))
    return knobs


def _canonical(name: str) -> str:
    """HTCondor knob names are case-insensitive: ``PREFIX.NAME`` as ``prefix.NAME`` (regions
    are lower case where :func:`knob` builds the prefix; knobs are read upper case)."""
    prefix, dot, base = name.rpartition(".")
    return prefix.lower() + dot + base.upper()


def parse_knobs(text: str, where: str) -> dict[str, str]:
    """Parse HTCondor configuration text strictly: every line is a blank, a ``#`` comment or
    ``NAME = value`` (also ``NAME=value``; a trailing ``\\`` continues the value on the next
    line, where comment lines are skipped, as HTCondor does).

    Args:
        text: the file's content.
        where: the file's name, for messages.

    Returns:
        knob name (see :func:`_canonical`) -> value, later lines winning.

    Raises:
        BadInputError: ``where:LINE: ...`` for a line that is none of those (e.g.
            ``KEY: value``), a control character, or an HTCondor directive (``if``,
            ``include``, ``use``, ``@=``) that this tool does not evaluate.
    """
    knobs: dict[str, str] = {}
    lines = text.split("\n")   # not splitlines(): HTCondor ends lines at \n only
    i = 0
    while i < len(lines):
        number, line = i + 1, lines[i].removesuffix("\r")
        i += 1
        while line.endswith("\\") and i < len(lines):
            nxt = lines[i].removesuffix("\r")
            i += 1
            if nxt.lstrip().startswith("#"):
                continue   # a comment inside a continued value is skipped; it goes on
            line = line[:-1] + nxt.lstrip()
        if line.endswith("\\"):
            line = line[:-1]
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        if validate.has_control(line.replace("\t", " ")):
            raise BadInputError(f"{where}:{number}: the line holds a control character; "
                                "write NAME = value")
        if _DIRECTIVE_RE.match(line):
            raise BadInputError(f"{where}:{number}: {validate.shown(stripped, 80)} is an "
                                "HTCondor directive condor_annex does not evaluate; write "
                                "NAME = value")
        m = _LINE_RE.fullmatch(line)
        if not m:
            raise BadInputError(f"{where}:{number}: {validate.shown(stripped, 80)} is not "
                                "NAME = value (HTCondor's configuration syntax); e.g. "
                                "ANNEX_AWS_ENDPOINT_URL = https://...")
        knobs[_canonical(m.group(1))] = m.group(2)
    return knobs


def knob(knobs: dict[str, str], name: str, region: str | None = None, default: str = "") -> str:
    """Look up ``name``, preferring ``<region with _>.name`` (HTCondor's local-name prefix)."""
    if region:
        prefixed = re.sub(r"[^A-Za-z0-9_./]", "_", region) + "." + name
        if knobs.get(prefixed):
            return knobs[prefixed]
    return knobs.get(name) or default


def write_block(block: str, knobs: dict[str, str], path: Path | None = None) -> Path:
    """Replace (or append) the managed block ``block`` with ``knobs``; the file stays mode 600.

    Returns:
        the file's path.
    """
    path = path or user_config_path()
    for k, v in knobs.items():
        # A newline in a value would write a line of its own into the user's configuration.
        if not re.fullmatch(r"[A-Za-z0-9_.]+", k, re.ASCII) or validate.has_control(v) \
                or v.endswith("\\"):
            raise BadInputError(f"{k}: {validate.shown(v)} cannot be written into "
                                f"{path}; give a value without control characters")
    path.parent.mkdir(parents=True, exist_ok=True)
    begin, end = f"# BEGIN condor-annex {block}", f"# END condor-annex {block}"
    body = [begin, *(f"{k} = {v}" for k, v in knobs.items()), end]
    lines = _without_block(path, block)
    while lines and not lines[-1].strip():
        lines.pop()
    if lines:
        lines.append("")
    text = "\n".join(lines + body) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)   # also when the file existed with a wider mode
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def remove_block(block: str, path: Path | None = None) -> None:
    """Delete the managed block ``block`` if present (``setup --remove``, ``local down``)."""
    path = path or user_config_path()
    if path.exists():
        lines = _without_block(path, block)
        path.write_text("\n".join(lines) + ("\n" if lines else ""))


def _without_block(path: Path, block: str) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    out, skipping = [], False
    for line in lines:
        if line.strip() == f"# BEGIN condor-annex {block}":
            skipping = True
        elif skipping and line.strip() == f"# END condor-annex {block}":
            skipping = False
        elif not skipping:
            out.append(line)
    return out


#: Largest key file read, bytes (a key is a few dozen characters).
_MAX_KEY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True)
class AwsSettings:
    """How to reach AWS (or an emulator of it).

    Attributes:
        region: region name, e.g. ``"us-east-1"``.
        endpoint_url: one endpoint for every service (the local cloud's emulator), or ``None``
            for real AWS.
        access_key_file: file holding the access key id, or "" to use boto3's credential chain.
        secret_key_file: file holding the secret key (must be mode 600 and owned by the user).
        ec2_describe_bucket, ec2_mutate_bucket: knobs ``ANNEX_EC2_DESCRIBE_BUCKET`` and
            ``ANNEX_EC2_MUTATE_BUCKET``, ``CAPACITY REFILL`` of the client-side EC2 request
            buckets ("" = the defaults; parsed by ``providers/aws/throttle.py``).
    """

    region: str = "us-east-1"
    endpoint_url: str | None = None
    access_key_file: str = ""
    secret_key_file: str = ""
    ec2_describe_bucket: str = ""
    ec2_mutate_bucket: str = ""

    def credentials(self) -> tuple[str, str] | None:
        """Read the key files, checking the secret file as the original did (reference §2).

        Returns:
            (access key id, secret key), or ``None`` when no key files are configured.

        Raises:
            BadInputError: a file is unreadable, or the secret file is not mode 600 and ours.
        """
        if not (self.access_key_file or self.secret_key_file):
            return None
        keys = []
        for flag, p in (("-aws-access-key-file", self.access_key_file),
                        ("-aws-secret-key-file", self.secret_key_file)):
            if not p:
                raise BadInputError(f"{flag}: no file given; give a readable key file")
            text = validate.read_file(p, flag, text=True, limit=_MAX_KEY_FILE_BYTES)
            if flag == "-aws-secret-key-file":
                st = os.stat(p)
                if stat.S_IMODE(st.st_mode) & 0o077 or st.st_uid != os.geteuid():
                    raise BadInputError(
                        f"-aws-secret-key-file: {validate.shown(p)} must be owned by you and "
                        f"mode 600; run: chmod 600 {p}")
            key = text.strip()
            # One key of printable ASCII: it goes into request signatures and headers.
            if not re.fullmatch(r"[!-~]{1,1024}", key, re.ASCII):
                raise BadInputError(f"{flag}: {validate.shown(p)} must hold one key on one "
                                    "line")
            keys.append(key)
        return keys[0], keys[1]


def aws_settings(knobs: dict[str, str] | None = None, region: str | None = None) -> AwsSettings:
    """Build :class:`AwsSettings` from the user's knobs (``ANNEX_DEFAULT_AWS_REGION``,
    ``ANNEX_AWS_ENDPOINT_URL``, ``ANNEX_DEFAULT_{ACCESS,SECRET}_KEY_FILE``).

    Raises:
        BadInputError: the region knob is not a region, or the endpoint not an http(s) URL
            (else a typo would silently send every call to real AWS).
    """
    knobs = read_knobs() if knobs is None else knobs
    region = region or validate.region(knobs.get("ANNEX_DEFAULT_AWS_REGION") or "us-east-1",
                                       "ANNEX_DEFAULT_AWS_REGION")
    endpoint = knob(knobs, "ANNEX_AWS_ENDPOINT_URL", region)
    if endpoint:
        validate.url(endpoint, "ANNEX_AWS_ENDPOINT_URL")
    return AwsSettings(
        region=region,
        endpoint_url=endpoint or None,
        access_key_file=knob(knobs, "ANNEX_DEFAULT_ACCESS_KEY_FILE", region),
        secret_key_file=knob(knobs, "ANNEX_DEFAULT_SECRET_KEY_FILE", region),
        ec2_describe_bucket=knob(knobs, "ANNEX_EC2_DESCRIBE_BUCKET", region),
        ec2_mutate_bucket=knob(knobs, "ANNEX_EC2_MUTATE_BUCKET", region),
    )


#: SetupOutputs field -> knob written by ``setup`` (classic names where the original had one).
SETUP_KNOBS = {
    "stack_name": "ANNEX_SETUP_STACK_NAME",
    "bucket": "ANNEX_DEFAULT_S3_BUCKET",
    "lease_function_arn": "ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN",
    "scheduler_role_arn": "ANNEX_LEASE_SCHEDULER_ROLE_ARN",
    "instance_profile_arn": "ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN",
    "security_group_id": "ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS",
    "key_name": "ANNEX_DEFAULT_ODI_KEY_NAME",
    "spot_fleet_role_arn": "ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE",
}
#: SetupOutputs field -> knob of the seed node's pieces (issue 13): recorded when the stack has
#: them, never required by :func:`setup_outputs` (a setup made before them keeps working).
SEED_KNOBS = {
    "seed_instance_profile_arn": "ANNEX_SEED_INSTANCE_PROFILE_ARN",
    "seed_role_arn": "ANNEX_SEED_ROLE_ARN",
    "seed_security_group_id": "ANNEX_SEED_SECURITY_GROUP_IDS",
}


def setup_knobs(outputs: SetupOutputs) -> dict[str, str]:
    """The knobs ``setup`` records, region-prefixed as the original wrote them."""
    prefix = re.sub(r"[^A-Za-z0-9_./]", "_", outputs.region) + "."
    knobs = {"ANNEX_DEFAULT_AWS_REGION": outputs.region}
    knobs.update({prefix + k: getattr(outputs, f) for f, k in SETUP_KNOBS.items()})
    knobs.update({prefix + k: getattr(outputs, f) for f, k in SEED_KNOBS.items()
                  if getattr(outputs, f)})
    # The classic spot-fleet lease knob points at the same enforcer: one handler for both.
    knobs[prefix + "ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN"] = outputs.lease_function_arn
    return knobs


def setup_outputs(knobs: dict[str, str] | None = None, region: str | None = None) -> SetupOutputs:
    """Read what ``setup`` recorded.

    Raises:
        NotSetUpError: when a knob is missing (the fix: run ``condor_annex setup``).
    """
    knobs = read_knobs() if knobs is None else knobs
    region = region or knobs.get("ANNEX_DEFAULT_AWS_REGION") or "us-east-1"
    values: dict[str, Any] = {}
    for field_name, name in SETUP_KNOBS.items():
        values[field_name] = knob(knobs, name, region)
        if not values[field_name]:
            raise NotSetUpError(
                f"setup: {name} is not set for region {region}; run 'condor_annex setup' first")
    values.update({f: knob(knobs, name, region) for f, name in SEED_KNOBS.items()})
    return SetupOutputs(region=region, **values)


def seed_outputs(knobs: dict[str, str] | None = None, region: str | None = None) -> SeedOutputs:
    """Read what ``setup`` recorded for the seed node (:data:`SEED_KNOBS`, region-prefixed);
    ``ANNEX_SEED_SECURITY_GROUP_IDS`` may list several groups (commas or spaces).

    Raises:
        NotSetUpError: a knob is missing, e.g. setup ran before it made the seed's pieces (the
            fix: run 'condor_annex setup' again to add the seed role).
    """
    knobs = read_knobs() if knobs is None else knobs
    region = region or knobs.get("ANNEX_DEFAULT_AWS_REGION") or "us-east-1"
    values = {f: knob(knobs, name, region) for f, name in SEED_KNOBS.items()}
    groups = tuple(g for g in re.split(r"[,\s]+", values["seed_security_group_id"]) if g)
    missing = [name for f, name in SEED_KNOBS.items() if not values[f]] or \
        ([] if groups else [SEED_KNOBS["seed_security_group_id"]])
    if missing:
        raise NotSetUpError(f"seed: {missing[0]} is not set for region {region}; run "
                            "'condor_annex setup' again to add the seed role")
    return SeedOutputs(region=region, instance_profile_arn=values["seed_instance_profile_arn"],
                       role_arn=values["seed_role_arn"], security_group_ids=groups)


# --- demand-driven annexes (issue 13) ----------------------------------------------------------

#: Knob: seconds (or a duration such as ``1m``) demand must stay above an autoscaled annex's
#: idle-or-booting capacity before condor_annexd grows it; default 30 s.
AUTOSCALE_SETTLE_KNOB = "ANNEX_AUTOSCALE_SETTLE"
#: Default of :data:`AUTOSCALE_SETTLE_KNOB`, seconds.
AUTOSCALE_SETTLE_DEFAULT_S = 30.0
#: Knobs of the classic command line's autoscaled annexes (its options are the original's):
#: with ``ANNEX_AUTOSCALE_MAX`` set, a classic on-demand create is autoscaled, starting with
#: ``ANNEX_AUTOSCALE_MIN`` instances (default 0) instead of ``-count``.
AUTOSCALE_MAX_KNOB = "ANNEX_AUTOSCALE_MAX"
AUTOSCALE_MIN_KNOB = "ANNEX_AUTOSCALE_MIN"


def autoscale_settle_s(knobs: dict[str, str]) -> float:
    """``ANNEX_AUTOSCALE_SETTLE`` in seconds (a bare number is seconds; 0 allowed: grow at
    the first pass that sees demand above capacity), default 30.

    Raises:
        BadInputError: not a duration of at most a day, naming the knob (exit 2).
    """
    text = knobs.get(AUTOSCALE_SETTLE_KNOB, "").strip()
    if not text:
        return AUTOSCALE_SETTLE_DEFAULT_S
    return float(validate.duration(text, AUTOSCALE_SETTLE_KNOB, unit_required=False,
                                   maximum_s=86400, allow_zero=True))


def autoscale_knobs(knobs: dict[str, str], region: str | None = None
                    ) -> tuple[str | None, str | None]:
    """The classic syntax's (``ANNEX_AUTOSCALE_MAX``, ``ANNEX_AUTOSCALE_MIN``) as typed, each
    None when unset (checked by :func:`condor_annex.service.autoscale_create.parse_bounds`)."""
    top = knob(knobs, AUTOSCALE_MAX_KNOB, region).strip()
    low = knob(knobs, AUTOSCALE_MIN_KNOB, region).strip()
    return (top or None, low or None)
