"""``check-setup [--preflight [--count N] [--instance-type T]] [--json]``."""

from __future__ import annotations

from condor_annex.cli import parse, render
from condor_annex.errors import BadInputError


def add_flags(p) -> None:
    """Add the preflight flags to the ``check-setup`` parser and make it run
    :func:`cmd_check_setup`."""
    p.add_argument("--preflight", action="store_true",
                   help="before a first annex: dry-run launch, vCPU quota, your permissions, "
                        "the collector probed from AWS, the subnet's route out")
    p.add_argument("--count", default=None,
                   help="with --preflight: instances the annex will have (default 1)")
    p.add_argument("--instance-type", default=None,
                   help="with --preflight: their instance type (default create's)")
    p.set_defaults(func=cmd_check_setup)


def cmd_check_setup(args) -> int:
    """Plain ``check-setup`` (:func:`condor_annex.cli.annex.cmd_check_setup`), or with
    ``--preflight`` the rows of :func:`condor_annex.service.preflight.preflight`; exit 1 when a
    row failed, 2 when the recorded setup is gone (one line naming ``condor_annex setup``)."""
    from condor_annex import validate
    from condor_annex.cli.annex import cmd_check_setup as plain
    if not args.preflight:
        for flag, value in (("--count", args.count), ("--instance-type", args.instance_type)):
            if value is not None:
                raise BadInputError(f"{flag}: only with --preflight, e.g. condor_annex "
                                    "check-setup --preflight --count 4")
        return plain(args)
    from condor_annex.service import preflight
    from condor_annex.service.context import Context
    count = parse.count(args.count, "--count") if args.count is not None else 1
    itype = validate.instance_type(args.instance_type, "--instance-type") \
        if args.instance_type is not None else ""
    ctx = Context.load()
    with render.err_console.status("check-setup --preflight: asking AWS"):
        rows = preflight.preflight(ctx, count=count, instance_type=itype)
    render.check_table(rows, args.json, title="Preflight check", first="check")
    return 0 if all(ok for _, ok, _ in rows) else 1
