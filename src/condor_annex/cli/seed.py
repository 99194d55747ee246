"""``seed create | status | off``: a pool grown from one seed instance (docs/seed.md)."""

from __future__ import annotations

from condor_annex.cli import render


def add_verb(sub) -> None:
    """Register ``seed`` and its actions on an argparse sub-parser set."""
    p = sub.add_parser("seed", help="a whole pool from one instance: central manager + "
                                    "submit node + condor_annexd")
    actions = p.add_subparsers(dest="seed_action", metavar="ACTION", required=True)
    c = actions.add_parser("create", help="launch the region's seed (on-demand) and wait "
                                          "until it is ready")
    c.add_argument("--instance-type", default=None, metavar="TYPE",
                   help="the seed's instance type (default m5.large)")
    c.add_argument("--image", default="", metavar="NAME",
                   help="stock image by name: debian-13 (default), ubuntu-24.04")
    c.add_argument("--no-wait", action="store_true",
                   help="return once EC2 has launched it")
    c.add_argument("--timeout", default="20m", metavar="DURATION",
                   help="how long to wait for ready (default %(default)s)")
    c.set_defaults(func=cmd_seed_create)
    s = actions.add_parser("status", help="the region's seed: state, address, readiness, "
                                          "its annexes")
    s.set_defaults(func=cmd_seed_status)
    o = actions.add_parser("off", help="end every annex the seed made, then terminate it")
    o.set_defaults(func=cmd_seed_off)
    for a in (c, s, o):
        a.add_argument("--region", default="", help="AWS region (default "
                                                    "ANNEX_DEFAULT_AWS_REGION)")
        a.add_argument("--json", action="store_true", help="machine-readable output")


def _context(args):
    from condor_annex import validate
    from condor_annex.service.context import Context
    region = validate.region(args.region, "--region") if args.region else None
    return Context.load(region=region)


def _spinner(what: str):
    from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn
    bar = Progress(SpinnerColumn(), "[progress.description]{task.description}",
                   TimeElapsedColumn(), console=render.err_console, transient=True)
    task = bar.add_task(what, total=None)
    return bar, (lambda phase, _elapsed: bar.update(task, description=f"{what}: {phase}"))


def cmd_seed_create(args) -> int:
    """Launch the seed with a progress line on stderr; print where it is (``--json``)."""
    from condor_annex import validate
    from condor_annex.service.seed import DEFAULT_SEED_TYPE, create_seed
    # An explicit empty --instance-type is bad input, not the default.
    instance_type = validate.instance_type(
        DEFAULT_SEED_TYPE if args.instance_type is None else args.instance_type,
        "--instance-type")
    timeout_s = validate.duration(args.timeout, "--timeout", unit_required=True)
    ctx = _context(args)
    bar, show = _spinner("seed create")
    with bar:
        seed = create_seed(ctx, instance_type=instance_type, image=args.image,
                           wait=not args.no_wait, timeout_s=timeout_s, progress=show)
    i = seed.instance
    text = (f"Seed {i.instance_id} ({i.instance_type}) is "
            + (f"ready after {seed.ready_s:.0f} s" if seed.ready else i.state)
            + f" at {i.public_ip or i.private_ip or '(no address yet)'}: central "
            "manager, submit node and condor_annexd.\nOn it, user 'admin' runs "
            "'condor_annex create NAME --count N' to grow its pool; 'condor_annex seed off' "
            "ends it all.")
    render.emit(seed.to_json(), args.json, text)
    return 0


def cmd_seed_status(args) -> int:
    """A table of the region's seed (``--json``: a list)."""
    from rich.table import Table

    from condor_annex.service.seed import seed_status
    seeds = seed_status(_context(args))
    if args.json:
        render.emit({"seeds": [s.to_json() for s in seeds]}, True, "")
        return 0
    if not seeds:
        render.console.print("No seed in this region; 'condor_annex seed create' makes one.")
        return 0
    table = Table(title="Seed")
    for col in ("instance", "state", "type", "address", "ready", "annexes"):
        table.add_column(col, no_wrap=col in ("instance", "address"))   # ids are copied
    for s in seeds:
        ready = "[green]yes[/]" if s.ready else (f"[red]{s.failed}[/]" if s.failed else "not yet")
        i = s.instance
        table.add_row(i.instance_id, i.state, i.instance_type, i.public_ip or i.private_ip,
                      ready, ", ".join(s.annexes) or "-")
    render.console.print(table)
    return 0


def cmd_seed_off(args) -> int:
    """End the seed's annexes and the seed, with progress; say what ended."""
    from condor_annex.service.seed import seed_off
    ctx = _context(args)
    bar, show = _spinner("seed off")
    with bar:
        done = seed_off(ctx, progress=show)
    annexes = ", ".join(done.annexes) or "none"
    render.emit({"seed": done.seed, "annexes_ended": list(done.annexes)}, args.json,
                f"Seed {done.seed} terminated; annexes it had made, ended: {annexes}.")
    return 0
