"""The classic command line's syntax: its options, its usage text, and the parser.

The original tool's ``annex_main`` (reference §1) matched options by unique prefix
(``-annex`` means ``-annex-name``); the bare words ``status`` and ``off`` end the options.
:func:`parse_args` turns argv into a :class:`ClassicArgs` of raw strings; checking the values
is :mod:`condor_annex.cli.classic_plan`'s work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from condor_annex.errors import BadInputError

USAGE = """\
Usage: condor_annex [options] [status|off]

To start a new annex or add instances to one:
    condor_annex -annex-name <name> -count <N> [options]
To update an annex's lease:
    condor_annex -annex-name <name> -duration <hours>
To see the status of your annexes:
    condor_annex -status [-annex-name <name>] [-classads]
    condor_annex [-annex-name <name>] status [condor_status options]
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
    -config-dir <dir>      HTCondor configuration files for the nodes, read after the
                           annex's own (regular files only, at most 1 MiB in all)
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
    """The parsed command line: raw strings, validated later by
    :func:`condor_annex.cli.classic_plan.make_plan`.

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
    word_args: list[str] = field(default_factory=list)
    given: set[str] = field(default_factory=set)


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
            if arg == "status":   # the rest is condor_status's (the original passed it on)
                args.word_args = rest
            elif rest:
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
