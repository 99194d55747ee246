"""The classic ``condor_annex`` command line (``-annex-name N -count K``, ``-status``, ``off``).

Recognised when the first argument is a single-dash option (see :func:`is_classic`); translated
to the same service calls as the modern verbs (:mod:`condor_annex.service.annex`).  Follows the
original tool's ``annex_main`` (reference §1): options are matched by unique prefix (``-annex``
means ``-annex-name``), ``-duration`` and ``-idle`` are decimal hours, a create asks for
confirmation unless ``-yes``, and the bare words ``status`` and ``off`` end the options.

Differences from the original, all deliberate (reference §10):

* every input is validated before any cloud call; bad input is one line naming the flag and the
  fix, exit status 2 (:class:`~condor_annex.errors.BadInputError`), and nothing is created;
* an ambiguous prefix is an error instead of "first option listed wins";
* annex names are checked (at most 27 characters of ``[A-Za-z0-9-]``, so no ``_``);
* ``-no-owner`` takes no argument (the original skipped the next one);
* ``-annex-name N -duration H`` refuses an unknown annex and never changes the annex's type;
* ``off`` ends one annex completely (instances, fleets, lease and bundle), matched by exact
  name, and requires ``-annex-name``; nodes in the pool first get 30 s to leave it gracefully
  (as ``condor_off -annex`` would do), the rest are terminated;
* on-demand user data is sent; ``-config-dir`` is refused for now;
* a spot fleet (``-slots W``) stops placing instances at its lease end (``ValidUntil``)
  instead of five minutes after the request, its instances end with the lease (which
  ``-annex-name N -duration H`` moves, as ``extend`` does), it is tagged with the annex, its
  instances are launched from the launch template ``annex-<name>`` (IMDSv2, hop limit 1), and
  its config file is checked before any cloud call (see
  :mod:`condor_annex.providers.aws.fleet` for how the file and the command line combine);
* the knob ``ANNEX_DEFAULT_SUBNET_IDS`` places instances in subnets (the original had no
  subnet option; the modern ``create`` also takes ``--subnet-id``).
"""

from __future__ import annotations

import getpass
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condor_annex import validate
from condor_annex.errors import BadInputError, LeaseWouldShortenError, UnknownAnnexError
from condor_annex.model import (DEFAULT_IDLE_SECONDS, DEFAULT_INSTANCE_TYPE,
                                DEFAULT_LEASE_SECONDS, MAX_SPOT_FLEET_CONFIG_BYTES,
                                SPOT_API_SPOT_FLEET, AnnexSpec, SpotSpec,
                                parse_spot_fleet_config, validate_annex_name)

#: Longest lease or idle time accepted, hours (the modern CLI's limit: 7 days).
MAX_HOURS = 7 * 24

USAGE = """\
Usage: condor_annex [options] [status|off]

To start a new annex or add instances to one:
    condor_annex -annex-name <name> -count <N> [options]
To update an annex's lease:
    condor_annex -annex-name <name> -duration <hours>
To see the status of your annexes:
    condor_annex -status [-annex-name <name>] [-classads]
    condor_annex [-annex-name <name>] status
To end an annex (its instances, lease and configuration bundle):
    condor_annex -annex-name <name> off
To prepare your cloud account (once per region) or check that preparation:
    condor_annex -setup [<access key file> <secret key file> | FROM INSTANCE]
    condor_annex -check-setup

Options (any unique prefix will do, e.g. -annex for -annex-name):
    -annex-name <name>     1-27 characters of A-Z a-z 0-9 and '-'
    -count <N>             on-demand instances to start
    -slots <N>             start a spot fleet of this weighted capacity
    -aws-on-demand         start on-demand instances (the default)
    -aws-spot-fleet        start a spot fleet (its size is -slots)
    -duration <hours>      lease: the annex ends after this long (default 0.83)
    -idle <hours>          an unclaimed instance ends after this long (default 0.25)
    -yes                   do not ask for confirmation
    -tag <name> <value>    tag the instances (repeatable)
    -owner <"u1, u2">      users whose jobs may run on the annex (default: you)
    -no-owner              let any user's jobs run on the annex
    -aws-region <region>   default ANNEX_DEFAULT_AWS_REGION, else us-east-1
    -aws-user-data <data>, -aws-user-data-file <file>
    -aws-default-user-data <data>, -aws-default-user-data-file <file>
                           user data for the instances (the -default forms apply only when
                           no other user data is given)
    -aws-on-demand-instance-type <type>   default m4.large
    -aws-on-demand-ami-id <ami>           default ANNEX_DEFAULT_ODI_IMAGE_ID
    -aws-spot-fleet-config-file <file|->  the Spot Fleet request config (JSON; - reads
                           stdin and needs -yes); default ANNEX_DEFAULT_SFR_CONFIG_FILE.
                           Its IamFleetRole defaults to ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE;
                           -slots, -duration, -tag and user data override the file
    -aws-on-demand-security-group-ids <sg>, -aws-on-demand-key-name <key>,
    -aws-on-demand-instance-profile-arn <arn>, -aws-on-demand-lease-function-arn <arn>
                           override what -setup made
    -aws-access-key-file <file>, -aws-secret-key-file <file>
                           (also -aws-public-key-file, -aws-private-key-file)
    -aws-ec2-url <url>, -aws-events-url, -aws-lambda-url, -aws-s3-url
                           one endpoint for every service (an emulator)
    -classads              with -status: print ClassAds for condor_advertise
    -help                  print this message
"""


@dataclass(frozen=True)
class _Option:
    """One classic option: its name (without the dash), how many values it takes, and the
    attribute of :class:`ClassicArgs` it sets."""

    name: str
    nargs: int
    dest: str


_OPTIONS = tuple(_Option(*o) for o in (
    ("annex-name", 1, "annex_name"),
    ("count", 1, "count"),
    ("slots", 1, "slots"),
    ("aws-on-demand", 0, "on_demand"),
    ("aws-spot-fleet", 0, "spot_fleet"),
    ("duration", 1, "duration"),
    ("idle", 1, "idle"),
    ("yes", 0, "yes"),
    ("config-dir", 1, "config_dir"),
    ("tag", 2, "tags"),
    ("owner", 1, "owner"),
    ("no-owner", 0, "no_owner"),
    ("aws-region", 1, "region"),
    ("aws-user-data", 1, "user_data"),
    ("aws-user-data-file", 1, "user_data_file"),
    ("aws-default-user-data", 1, "default_user_data"),
    ("aws-default-user-data-file", 1, "default_user_data_file"),
    ("aws-on-demand-instance-type", 1, "instance_type"),
    ("aws-on-demand-ami-id", 1, "image_id"),
    ("aws-on-demand-security-group-ids", 1, "security_group_ids"),
    ("aws-on-demand-key-name", 1, "key_name"),
    ("aws-on-demand-instance-profile-arn", 1, "instance_profile_arn"),
    ("aws-on-demand-lease-function-arn", 1, "odi_lease_function_arn"),
    ("aws-spot-fleet-lease-function-arn", 1, "sfr_lease_function_arn"),
    ("aws-spot-fleet-config-file", 1, "sfr_config_file"),
    ("aws-access-key-file", 1, "access_key_file"),
    ("aws-public-key-file", 1, "access_key_file"),
    ("aws-secret-key-file", 1, "secret_key_file"),
    ("aws-private-key-file", 1, "secret_key_file"),
    ("aws-ec2-url", 1, "urls"),
    ("aws-events-url", 1, "urls"),
    ("aws-lambda-url", 1, "urls"),
    ("aws-s3-url", 1, "urls"),
    ("setup", -1, "setup"),
    ("check-setup", 0, "check_setup"),
    ("status", 0, "status"),
    ("classads", 0, "classads"),
    ("help", 0, "help"),
))
_BY_NAME = {o.name: o for o in _OPTIONS}
#: Options that may be given several times (their values accumulate).
_REPEATABLE = {"tags", "urls"}
#: Bare words that end the options, as in the original.
_WORDS = ("status", "off")


@dataclass
class ClassicArgs:
    """The parsed command line: raw strings, validated later by :func:`_plan`.

    ``given`` holds the canonical option names seen (e.g. ``{"annex-name", "count"}``) so errors
    and the confirmation prompt can name the flag the user typed.
    """

    annex_name: str | None = None
    count: str | None = None
    slots: str | None = None
    on_demand: bool = False
    spot_fleet: bool = False
    duration: str | None = None
    idle: str | None = None
    yes: bool = False
    config_dir: str | None = None
    tags: list[tuple[str, str]] = field(default_factory=list)
    owner: str | None = None
    no_owner: bool = False
    region: str | None = None
    user_data: str | None = None
    user_data_file: str | None = None
    default_user_data: str | None = None
    default_user_data_file: str | None = None
    instance_type: str | None = None
    image_id: str | None = None
    security_group_ids: str | None = None
    key_name: str | None = None
    instance_profile_arn: str | None = None
    odi_lease_function_arn: str | None = None
    sfr_lease_function_arn: str | None = None
    sfr_config_file: str | None = None
    access_key_file: str | None = None
    secret_key_file: str | None = None
    urls: list[tuple[str, str]] = field(default_factory=list)
    setup: list[str] | None = None
    check_setup: bool = False
    status: bool = False
    classads: bool = False
    help: bool = False
    word: str | None = None
    given: set[str] = field(default_factory=set)


def is_classic(argv: list[str]) -> bool:
    """True when ``argv`` uses the classic single-dash syntax (e.g. ``-count 3``)."""
    return bool(argv) and argv[0].startswith("-") and not argv[0].startswith("--") \
        and argv[0] not in ("-h", "-v")


def match_option(arg: str) -> _Option:
    """The option ``arg`` names: an exact name, else the only option it is a prefix of.

    Args:
        arg: e.g. ``"-annex"`` (one or two leading dashes).

    Raises:
        BadInputError: no option, or several, start with ``arg``.
    """
    word = arg.lstrip("-")
    if not word or len(arg) - len(word) > 2:
        raise BadInputError(f"{arg}: not an option; see 'condor_annex -help'")
    if word in _BY_NAME:
        return _BY_NAME[word]
    matches = [o for o in _OPTIONS if o.name.startswith(word)]
    if not matches:
        raise BadInputError(f"{arg}: unknown option; see 'condor_annex -help'")
    if len(matches) > 1:
        names = ", ".join("-" + o.name for o in matches[:4])
        more = ", ..." if len(matches) > 4 else ""
        raise BadInputError(f"{arg}: ambiguous; it could be {names}{more}; type more of it")
    return matches[0]


def _looks_like_option(text: str) -> bool:
    """True for ``-word`` (an option), False for a value such as ``-1`` or ``-``."""
    return len(text) > 1 and text[0] == "-" and not re.fullmatch(r"-[\d.]+", text)


def parse_args(argv: Sequence[str]) -> ClassicArgs:
    """Parse a classic command line (no validation of values beyond their presence).

    Raises:
        BadInputError: an unknown or ambiguous option, a missing value, an unexpected word.
    """
    args = ClassicArgs()
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in _WORDS:
            args.word = arg
            rest = list(argv[i + 1:])
            if rest:
                raise BadInputError(
                    f"{arg}: unexpected arguments after '{arg}': {' '.join(rest)}; put options "
                    f"before '{arg}', e.g. condor_annex -annex-name NAME {arg}")
            break
        if not arg.startswith("-") or arg == "-":
            raise BadInputError(f"'{arg}': unexpected argument; options start with '-' "
                                "(see 'condor_annex -help')")
        opt = match_option(arg)
        flag = "-" + opt.name
        if opt.name in args.given and opt.dest not in _REPEATABLE:
            raise BadInputError(f"{flag}: given more than once; give it once")
        args.given.add(opt.name)
        i += 1
        if opt.nargs == 0:
            setattr(args, opt.dest, True)
        elif opt.nargs == -1:  # -setup [ACCESS SECRET]: optional words up to the next option
            values = []
            while i < len(argv) and not argv[i].startswith("-") and argv[i] not in _WORDS:
                values.append(argv[i])
                i += 1
            args.setup = values
        else:
            values = list(argv[i:i + opt.nargs])
            if len(values) < opt.nargs or any(_looks_like_option(v) for v in values):
                example = {"tags": " NAME VALUE"}.get(opt.dest, " VALUE")
                raise BadInputError(f"{flag}: needs {opt.nargs} value(s); e.g. {flag}{example}")
            i += opt.nargs
            if opt.dest == "tags":
                args.tags.append((values[0], values[1]))
            elif opt.dest == "urls":
                args.urls.append((flag, values[0]))
            else:
                setattr(args, opt.dest, values[0])
    return args


# --- values ---------------------------------------------------------------------------------

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


def _data_flag(args: ClassicArgs) -> str:
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



# --- plan: validate everything before any cloud call -----------------------------------------

@dataclass(frozen=True)
class Plan:
    """What a classic invocation will do, fully validated.

    Attributes:
        mode: ``help``, ``setup``, ``check-setup``, ``status``, ``off``, ``create`` or
            ``update``.
        annex_name: the annex (create, update, off; optional for status).
        spec: the create request (for a spot fleet, ``spec.count`` is the capacity).
        spot: the spot fleet's settings, or None for on-demand instances; its config is ""
            when it comes from the ``ANNEX_DEFAULT_SFR_CONFIG_FILE`` knob (read at run time).
        lease_seconds: the new lease length (update).
        region: ``-aws-region`` or None.
        knob_overrides: knobs replacing the user's (``-aws-on-demand-*`` overrides of setup).
        aws_overrides: AwsSettings fields (endpoint, key files).
        setup_key_files: (access, secret) key files to record after ``-setup``, or None.
        classads: print ClassAds instead of a table (status).
        yes: skip the confirmation prompt (create).
        given: the options the user gave (canonical names).
    """

    mode: str
    annex_name: str | None = None
    spec: AnnexSpec | None = None
    spot: SpotSpec | None = None
    lease_seconds: int = 0
    region: str | None = None
    knob_overrides: dict[str, str] = field(default_factory=dict)
    aws_overrides: dict[str, str] = field(default_factory=dict)
    setup_key_files: tuple[str, str] | None = None
    classads: bool = False
    yes: bool = False
    given: frozenset[str] = frozenset()


def _mode(args: ClassicArgs) -> str:
    modes = []
    if args.setup is not None:
        modes.append("-setup")
    if args.check_setup:
        modes.append("-check-setup")
    if args.status or args.word == "status":
        modes.append("-status" if args.status else "status")
    if args.word == "off":
        modes.append("off")
    if args.count is not None or args.slots is not None:
        modes.append("-count" if args.count is not None else "-slots")
    if len(modes) > 1:
        raise BadInputError(f"{modes[0]} and {modes[1]} cannot be combined; run them as "
                            "separate commands")
    if modes:
        return {"-setup": "setup", "-check-setup": "check-setup", "-status": "status",
                "status": "status", "off": "off", "-count": "create",
                "-slots": "create"}[modes[0]]
    if args.duration is not None and args.annex_name is not None:
        return "update"
    if args.duration is not None:
        raise BadInputError("-duration: to update a lease also give -annex-name NAME; to start "
                            "an annex also give -count N")
    raise BadInputError("nothing to do: give -annex-name NAME -count N to start an annex, "
                        "-status to see annexes, or -help")


def _aws_overrides(args: ClassicArgs) -> dict[str, str]:
    overrides: dict[str, str] = {}
    urls = {url for _, url in args.urls}
    if len(urls) > 1:
        flags = " and ".join(f for f, _ in args.urls)
        raise BadInputError(f"{flags}: give the same URL (one endpoint serves every service)")
    for flag, url in args.urls:
        overrides["endpoint_url"] = validate.url(url, flag)
    if args.access_key_file is not None:
        overrides["access_key_file"] = str(Path(args.access_key_file).expanduser())
    if args.secret_key_file is not None:
        overrides["secret_key_file"] = str(Path(args.secret_key_file).expanduser())
    return overrides


def _knob_overrides(args: ClassicArgs) -> dict[str, str]:
    """``-aws-on-demand-*`` overrides as the knobs ``setup`` wrote (unprefixed names; they are
    region-prefixed when applied)."""
    out: dict[str, str] = {}
    if args.security_group_ids is not None:
        groups = [g for g in re.split(r"[,\s]+", args.security_group_ids) if g]
        if len(groups) != 1 or not re.fullmatch(r"sg-[0-9a-f]{1,17}", groups[0], re.ASCII):
            raise BadInputError("-aws-on-demand-security-group-ids: give one security group "
                                "id, e.g. sg-0123456789abcdef0 (several are not supported yet)")
        out["ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS"] = groups[0]
    if args.key_name is not None:
        # EC2 key pair names: up to 255 printable ASCII characters.
        if not re.fullmatch(r"[ -~]{1,255}", args.key_name, re.ASCII) \
                or args.key_name != args.key_name.strip():
            raise BadInputError(f"-aws-on-demand-key-name: {validate.shown(args.key_name)} is "
                                "not a key pair name; give e.g. -aws-on-demand-key-name my-key")
        out["ANNEX_DEFAULT_ODI_KEY_NAME"] = args.key_name
    for value, flag, knob_name, service in (
            (args.instance_profile_arn, "-aws-on-demand-instance-profile-arn",
             "ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN", "iam"),
            (args.odi_lease_function_arn, "-aws-on-demand-lease-function-arn",
             "ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN", "lambda"),
            (args.sfr_lease_function_arn, "-aws-spot-fleet-lease-function-arn",
             "ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN", "lambda")):
        if value is None:
            continue
        if not re.fullmatch(rf"arn:aws[a-z-]*:{service}:[!-~]{{1,2000}}", value, re.ASCII):
            raise BadInputError(f"{flag}: {validate.shown(value)} is not an {service} ARN; use "
                                f"arn:aws:{service}:...")
        out[knob_name] = value
    return out


def _is_spot(args: ClassicArgs) -> bool:
    """True for a spot fleet (``-slots`` or ``-aws-spot-fleet``); refuses contradictions."""
    spot = args.slots is not None or args.spot_fleet
    if args.count is not None and args.slots is not None:
        raise BadInputError("-slots: give -count N (on-demand instances) or -slots W (a spot "
                            "fleet), not both")
    if spot and args.on_demand:
        flag = "-slots" if args.slots is not None else "-aws-spot-fleet"
        raise BadInputError(f"{flag}: cannot be combined with -aws-on-demand; give one of them")
    if spot and args.count is not None:
        raise BadInputError("-count: a spot fleet's size is its weighted capacity; give -slots "
                            "W instead of -count")
    if not spot and args.sfr_config_file is not None:
        raise BadInputError("-aws-spot-fleet-config-file: only for a spot fleet; add -slots W")
    if spot:
        for value, flag in ((args.instance_type, "-aws-on-demand-instance-type"),
                            (args.image_id, "-aws-on-demand-ami-id")):
            if value is not None:
                raise BadInputError(f"{flag}: only for on-demand instances; a spot fleet's "
                                    "instance types and AMIs are in -aws-spot-fleet-config-file")
    return spot


def read_spot_fleet_config(path: str, flag: str = "-aws-spot-fleet-config-file") -> str:
    """Read and validate a Spot Fleet request config from ``path`` (``-`` for stdin).

    Returns:
        the validated JSON text (see :func:`condor_annex.model.parse_spot_fleet_config`).

    Raises:
        BadInputError: unreadable, not JSON, or not a valid Spot Fleet request config.
    """
    text = validate.read_file(path, flag, text=True, limit=MAX_SPOT_FLEET_CONFIG_BYTES)
    return parse_spot_fleet_config(text, flag)


def _spot_spec(args: ClassicArgs) -> SpotSpec:
    config = ""
    if args.sfr_config_file is not None:
        if args.sfr_config_file == "-" and not args.yes:
            raise BadInputError("-aws-spot-fleet-config-file: reading the config from stdin "
                                "leaves no answer for the confirmation; add -yes")
        config = read_spot_fleet_config(args.sfr_config_file)
    default_user_data = None
    if args.user_data is not None or args.user_data_file is not None:
        user_data(args)   # the same checks as on-demand
    elif args.default_user_data is not None or args.default_user_data_file is not None:
        default_user_data = user_data(args)
    return SpotSpec(api=SPOT_API_SPOT_FLEET, fleet_type="request", spot_fleet_config=config,
                    default_user_data=default_user_data)


def _create_spec(args: ClassicArgs) -> tuple[AnnexSpec, SpotSpec | None]:
    if args.config_dir is not None:
        raise BadInputError("-config-dir: extra configuration files are not supported yet; "
                            "leave out -config-dir")
    from condor_annex.cli import parse
    if args.annex_name is None:
        flag, size = ("-slots", "4") if args.slots is not None else ("-count", "2")
        raise BadInputError(f"-annex-name: starting an annex needs a name, e.g. -annex-name "
                            f"my-annex {flag} {size}")
    name = validate_annex_name(args.annex_name, "-annex-name")
    spot = _is_spot(args)
    if spot and args.slots is None:
        raise BadInputError("-aws-spot-fleet: give the fleet's weighted capacity, e.g. -slots 4")
    count = parse.count(args.slots or "", "-slots") if spot else \
        parse.count(args.count or "", "-count")
    lease = hours(args.duration, "-duration") if args.duration is not None \
        else DEFAULT_LEASE_SECONDS
    idle = hours(args.idle, "-idle") if args.idle is not None else DEFAULT_IDLE_SECONDS
    if args.owner is not None and args.no_owner:
        raise BadInputError("-no-owner: cannot be combined with -owner; give one of them")
    who: tuple[str, ...] = ()
    if not args.no_owner:
        who = owners(args.owner) if args.owner is not None else (getpass.getuser(),)
    instance_type = validate.instance_type(
        DEFAULT_INSTANCE_TYPE if args.instance_type is None else args.instance_type,
        "-aws-on-demand-instance-type")
    image_id = validate.image_id(args.image_id, "-aws-on-demand-ami-id") \
        if args.image_id is not None else ""
    spot_spec = _spot_spec(args) if spot else None
    # For a spot fleet, only -aws-user-data[-file] replaces every launch specification's user
    # data; the -default forms fill the specifications without any (SpotSpec.default_user_data).
    data = user_data(args) if spot_spec is None or spot_spec.default_user_data is None else None
    spec = AnnexSpec(name=name, count=count, lease_seconds=lease, idle_seconds=idle,
                     instance_type=instance_type, image_id=image_id, owners=who,
                     tags=tags(args.tags), user_data=data,
                     lease_explicit=args.duration is not None,
                     image_id_flag="-aws-on-demand-ami-id", user_data_flag=_data_flag(args))
    return spec, spot_spec


def _setup_key_files(words: list[str]) -> tuple[str, str] | None:
    if not words or words == ["FROM", "INSTANCE"]:
        return None
    if len(words) != 2:
        raise BadInputError("-setup: give both key files (-setup ACCESS_KEY_FILE "
                            "SECRET_KEY_FILE), or none, or FROM INSTANCE")
    return str(Path(words[0]).expanduser().absolute()), \
        str(Path(words[1]).expanduser().absolute())


def make_plan(args: ClassicArgs) -> Plan:
    """Validate a parsed command line into a :class:`Plan` (no I/O beyond reading user-data
    files).

    Raises:
        BadInputError: one line naming the flag and the fix.
    """
    if args.help:
        return Plan(mode="help")
    mode = _mode(args)
    region = args.region
    if region is not None:
        validate.region(region, "-aws-region")
    if args.classads and mode != "status":
        raise BadInputError("-classads: only with -status")
    common: dict[str, Any] = dict(region=region, aws_overrides=_aws_overrides(args),
                                  knob_overrides=_knob_overrides(args),
                                  given=frozenset(args.given))
    if mode == "create":
        spec, spot = _create_spec(args)
        return Plan(mode=mode, annex_name=spec.name, spec=spec, spot=spot, yes=args.yes,
                    **common)
    if mode == "update":
        if args.idle is not None:
            raise BadInputError("-idle: cannot be changed for a running annex; to update the "
                                "lease give only -annex-name NAME -duration HOURS")
        if args.slots is not None or args.config_dir is not None:
            raise BadInputError("-duration: to update a lease give only -annex-name NAME "
                                "-duration HOURS")
        name = validate_annex_name(args.annex_name or "", "-annex-name")
        assert args.duration is not None   # _mode says "update" only when -duration is given
        return Plan(mode=mode, annex_name=name, lease_seconds=hours(args.duration, "-duration"),
                    **common)
    if mode == "off":
        if args.annex_name is None:
            raise BadInputError("off: give the annex to end, e.g. condor_annex -annex-name "
                                "NAME off (ending every annex at once is not supported)")
        return Plan(mode=mode, annex_name=validate_annex_name(args.annex_name, "-annex-name"),
                    **common)
    if mode == "status":
        wanted = validate_annex_name(args.annex_name, "-annex-name") \
            if args.annex_name is not None else None
        return Plan(mode=mode, annex_name=wanted, classads=args.classads, **common)
    if mode == "setup":
        keys = _setup_key_files(args.setup or [])
        if keys is not None:
            common["aws_overrides"].update(access_key_file=keys[0], secret_key_file=keys[1])
        return Plan(mode=mode, setup_key_files=keys, **common)
    return Plan(mode=mode, **common)  # check-setup


# --- running ---------------------------------------------------------------------------------

def _context(plan: Plan):
    """Build the service context with the plan's overrides and check the key files now, so a
    bad key file is bad input (exit 2) and not a failure half-way."""
    from condor_annex import config
    from condor_annex.service.context import Context

    knobs = config.read_knobs()
    region = plan.region or knobs.get("ANNEX_DEFAULT_AWS_REGION") or "us-east-1"
    prefix = re.sub(r"[^A-Za-z0-9_./]", "_", region) + "."
    for name, value in plan.knob_overrides.items():
        knobs[prefix + name] = value
    ctx = Context.load(region=plan.region, knobs=knobs, **plan.aws_overrides)
    ctx.aws.credentials()
    return ctx


def _say(text: str = "", end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def confirm(spec: AnnexSpec, read: Callable[[], str] | None = None, *,
            spot: bool = False) -> bool:
    """Ask as the original did; True only for "yes" (any case).  EOF counts as no.

    Args:
        spec: the request being confirmed.
        read: returns one line of the answer (default: a line from stdin).
        spot: the request is a spot fleet (``spec.count`` is its weighted capacity).
    """
    plural = "" if spec.count == 1 else "s"
    what = (f"{spec.count} spot slot{plural} (Spot Fleet weighted capacity)" if spot else
            f"{spec.count} {spec.instance_type} on-demand instance{plural}")
    _say(f"Will request {what} for {spec.lease_seconds / 3600:.2f} hours. Each instance will "
         f"terminate after being idle for {spec.idle_seconds / 3600:.2f} hours.")
    _say("Is that OK? (Type 'yes' or 'no'): ", end="")
    try:
        answer = (read or sys.stdin.readline)()
    except (EOFError, OSError):
        answer = ""
    return answer.strip().lower() == "yes"


def _spot_with_knobs(ctx, spec: AnnexSpec, spot: SpotSpec) -> SpotSpec:
    """Fill a spot fleet's config from ``ANNEX_DEFAULT_SFR_CONFIG_FILE`` when no
    ``-aws-spot-fleet-config-file`` was given, and its role from
    ``ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE``; check what the service would refuse
    (:func:`service.annex.check_spot`).

    Raises:
        BadInputError: no config, a bad one, no fleet role, or no AMI for a specification.
    """
    import dataclasses

    from condor_annex import config
    from condor_annex.service import annex as svc
    flag = "-aws-spot-fleet-config-file"
    text = spot.spot_fleet_config
    if not text:
        path = config.knob(ctx.knobs, "ANNEX_DEFAULT_SFR_CONFIG_FILE", ctx.aws.region)
        if not path:
            raise BadInputError(f"{flag}: a spot fleet needs its Spot Fleet request config; "
                                f"give {flag} FILE (or - for stdin), or set "
                                "ANNEX_DEFAULT_SFR_CONFIG_FILE")
        text = read_spot_fleet_config(str(Path(path).expanduser()),
                                      "ANNEX_DEFAULT_SFR_CONFIG_FILE")
    role = config.knob(ctx.knobs, "ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE", ctx.aws.region)
    spot = dataclasses.replace(spot, spot_fleet_config=text, iam_fleet_role=role)
    svc.check_spot(ctx, spec, spot)
    return spot


def _run_create(plan: Plan) -> int:
    from condor_annex.service import annex as svc
    spec = plan.spec
    assert spec is not None
    ctx = _context(plan)
    # What create_annex would refuse, refused before the prompt (and with classic flag names).
    ctx.setup_outputs()
    ctx.require_collector()
    spot = _spot_with_knobs(ctx, spec, plan.spot) if plan.spot is not None else None
    if spot is None and not (spec.image_id or ctx.image_id):
        raise BadInputError("-aws-on-demand-ami-id: no AMI is configured; give "
                            "-aws-on-demand-ami-id ami-... or set ANNEX_DEFAULT_ODI_IMAGE_ID")
    if not plan.yes and not confirm(spec, spot=spot is not None):
        _say("Not starting an annex; user did not confirm.")
        _say()
        if spot is None:
            _say("To change the instance type, use the -aws-on-demand-instance-type flag.")
        else:
            _say("To change the spot fleet's size, use the -slots flag.")
            _say("To change its instance types, edit the -aws-spot-fleet-config-file file.")
        _say("To change the lease duration, use the -duration flag.")
        _say("To change how long an idle instance will wait before terminating itself, use "
             "the -idle flag.")
        return 1
    _say("Starting annex...")
    try:
        if spot is None:
            result = svc.create_annex(ctx, spec)
            identity = result.client_token
        else:
            result = svc.create_spot_annex(ctx, spec, spot)
            identity = result.fleet_id   # the original named the spot fleet request id
    except LeaseWouldShortenError as e:
        raise BadInputError(
            f"-duration: annex '{e.annex_name}' ends {e.current_end:%Y-%m-%d %H:%M:%S} UTC; "
            "adding instances never ends it earlier (to set its lease on its own: "
            f"condor_annex -annex-name {e.annex_name} -duration HOURS)") from None
    _say(f"Annex started. Its identity with the cloud provider is '{identity}'. "
         "It will take about three minutes for the new machines to join the pool.")
    return 0


def _run_update(plan: Plan) -> int:
    from condor_annex.service import annex as svc
    ctx = _context(plan)
    ctx.setup_outputs()
    from condor_annex.cli.annex import fleets_stopping_text
    res = svc.extend_annex(ctx, plan.annex_name or "", plan.lease_seconds)
    _say("Lease updated." + fleets_stopping_text(res))
    return 0


def _run_off(plan: Plan) -> int:
    from condor_annex.cli.annex import end_annex_with_progress
    from condor_annex.model import DEFAULT_OFF_GRACE_SECONDS
    ctx = _context(plan)
    ctx.setup_outputs()
    res = end_annex_with_progress(ctx, plan.annex_name or "", DEFAULT_OFF_GRACE_SECONDS)
    fleets = res.spot_fleet_requests + res.fleets
    graceful = f" ({len(res.left_pool)} left the pool gracefully)" if res.left_pool else ""
    _say(f"Annex {res.annex_name}: terminated {len(res.terminated)} instance(s){graceful}; lease "
         f"{'deleted' if res.lease_deleted else 'absent'}; bundle "
         f"{'deleted' if res.bundle_deleted else 'absent'}"
         + (f"; spot fleet(s) {', '.join(fleets)} cancelled" if fleets else "") + ".")
    return 0


def _attr_state(state: str) -> str:
    """``"shutting-down"`` -> ``"ShuttingDown"`` (for ``NumInstances<State>``)."""
    return "".join(p.capitalize() for p in re.split(r"[-_\s]+", state) if p)


def _classad_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def classads_text(annexes: dict[str, dict[str, str]]) -> str:
    """Per-annex ``Annex`` ClassAds in the text form ``condor_advertise`` reads.

    Args:
        annexes: annex name -> {instance id: state}, where the state is the EC2 state name or
            ``"in-pool"`` for a running instance with a slot in the collector.

    Returns:
        ``Name = value`` lines, one ad per annex, ads separated by a blank line.
    """
    ads = []
    for name in sorted(annexes):
        by_state: dict[str, list[str]] = {}
        for iid, state in sorted(annexes[name].items()):
            by_state.setdefault(state, []).append(iid)
        lines = ['MyType = "Annex"', f"Name = {_classad_string(name)}",
                 f"TotalInstances = {len(annexes[name])}"]
        for state in sorted(by_state):
            attr = _attr_state(state)
            lines.append(f"NumInstances{attr} = {len(by_state[state])}")
            lines.append(f"{attr}InstancesList = {_classad_string(','.join(by_state[state]))}")
        ads.append("\n".join(lines) + "\n")
    return "\n".join(ads)


def _run_status(plan: Plan) -> int:
    from condor_annex.cli import render
    from condor_annex.service import annex as svc
    ctx = _context(plan)
    rows = svc.annex_status(ctx, plan.annex_name)
    if not plan.classads:
        render.status_table(rows)
        return 0
    instances = svc.annex_instances(ctx, plan.annex_name)
    annexes: dict[str, dict[str, str]] = {}
    for row in rows:
        found = instances.get(row.name, {})
        if not found:
            continue
        not_joined = set(row.not_joined)
        annexes[row.name] = {
            iid: ("in-pool" if inst.state in ("pending", "running") and iid not in not_joined
                  else inst.state)
            for iid, inst in found.items()}
    if not annexes:
        _say("Found no instances in any annex.")
        return 0
    _say(classads_text(annexes), end="")
    return 0


def _run_setup(plan: Plan) -> int:
    from condor_annex import config
    from condor_annex.service import annex as svc
    ctx = _context(plan)
    _say("Setting up condor_annex...", end="")
    outputs = svc.setup_cloud(ctx, progress=lambda _status: _say(".", end=""))
    _say(" complete.")
    if plan.setup_key_files is not None:
        prefix = re.sub(r"[^A-Za-z0-9_./]", "_", outputs.region) + "."
        config.write_block("keys", {
            prefix + "ANNEX_DEFAULT_ACCESS_KEY_FILE": plan.setup_key_files[0],
            prefix + "ANNEX_DEFAULT_SECRET_KEY_FILE": plan.setup_key_files[1]})
    _say(f"Setup successful in {outputs.region}: bucket {outputs.bucket}, stack "
         f"{outputs.stack_name}; its settings are in {config.user_config_path()}.")
    if outputs.changes:
        _say(f"Updated stack {outputs.stack_name}: " + "; ".join(outputs.changes) + ".")
    return 0


def _run_check_setup(plan: Plan) -> int:
    from condor_annex.service import annex as svc
    rows = svc.check_setup(_context(plan))
    _say("Checking condor_annex...")
    for resource, ok, detail in rows:
        _say(f"Checking for {resource}... {'OK' if ok else 'FAILED'}"
             + ("" if ok or not detail else f" ({detail})"))
    if all(ok for _, ok, _ in rows):
        _say("Your setup looks OK.")
        return 0
    _say("Your setup is incomplete; run 'condor_annex -setup' again.")
    return 1


_RUNNERS: dict[str, Callable[[Plan], int]] = {
    "create": _run_create, "update": _run_update, "off": _run_off, "status": _run_status,
    "setup": _run_setup, "check-setup": _run_check_setup,
}


def run(argv: list[str]) -> int:
    """Run a classic invocation; returns the exit status (raises AnnexError, which
    :func:`condor_annex.cli.main.main` turns into one line and an exit status).

    ``-help`` prints the usage and returns 1, as the original did.
    """
    plan = make_plan(parse_args(argv))
    if plan.mode == "help":
        _say(USAGE, end="")
        return 1
    try:
        return _RUNNERS[plan.mode](plan)
    except UnknownAnnexError as e:
        raise UnknownAnnexError(f"-annex-name: {e}") from None
