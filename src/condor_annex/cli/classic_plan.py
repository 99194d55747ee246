"""The classic invocation's plan: which mode it is (create, lease update, off, status,
setup, check-setup, help) and every value validated, before any cloud call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condor_annex import validate
from condor_annex.cli.classic_options import ClassicArgs
from condor_annex.cli.classic_overrides import aws_overrides, knob_overrides
from condor_annex.cli.classic_spec import create_spec
from condor_annex.cli.classic_values import hours
from condor_annex.errors import BadInputError
from condor_annex.model import AnnexSpec, SpotSpec, validate_annex_name


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
        status_args: for the word ``status``, the condor_status arguments after it (None for
            ``-status``).
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
    status_args: tuple[str, ...] | None = None
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
    common: dict[str, Any] = dict(region=region, aws_overrides=aws_overrides(args),
                                  knob_overrides=knob_overrides(args),
                                  given=frozenset(args.given))
    if mode == "create":
        spec, spot = create_spec(args)
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
        word_args = None if args.status else tuple(args.word_args)
        return Plan(mode=mode, annex_name=wanted, classads=args.classads,
                    status_args=word_args, **common)
    if mode == "setup":
        keys = _setup_key_files(args.setup or [])
        if keys is not None:
            common["aws_overrides"].update(access_key_file=keys[0], secret_key_file=keys[1])
        return Plan(mode=mode, setup_key_files=keys, **common)
    return Plan(mode=mode, **common)  # check-setup
