"""Verbs on annexes: create, status, off, extend, setup, check-setup."""

from __future__ import annotations

import getpass
import time
from typing import Any

from condor_annex import validate
from condor_annex.cli import parse, render
from condor_annex.errors import BadInputError
from condor_annex.model import (DEFAULT_IDLE_SECONDS, DEFAULT_INSTANCE_TYPE,
                                DEFAULT_LEASE_SECONDS, DEFAULT_OFF_GRACE_SECONDS, EC2_FLEET_TYPES,
                                SPOT_API_EC2_FLEET, AnnexSpec, SpotSpec, parse_budget,
                                parse_instance_types,
                                parse_subnet_ids, validate_annex_name)


def add_verbs(sub) -> None:
    """Register the annex verbs on an argparse sub-parser set."""
    p = sub.add_parser("create", help="start an annex (on-demand, or Spot with --spot)")
    p.add_argument("name", help="annex name (1-27 characters of A-Z a-z 0-9 -)")
    p.add_argument("--count", help="on-demand instances to launch")
    p.add_argument("--spot", action="store_true",
                   help="launch Spot capacity with an EC2 Fleet (needs --capacity)")
    p.add_argument("--capacity", help="with --spot: weighted capacity to launch, e.g. 4")
    p.add_argument("--instance-types", metavar="TYPE[:WEIGHT],...",
                   help="with --spot: instance types and their weights (default 1), e.g. "
                        "m5.large,m5.xlarge:2; default: --instance-type")
    p.add_argument("--max-price", default=None, metavar="USD",
                   help="with --spot: the most to pay per hour for one unit of capacity (an "
                        "instance of weight 1), e.g. 0.05; default: the On-Demand price")
    p.add_argument("--fleet-type", choices=EC2_FLEET_TYPES, default="instant",
                   help="with --spot: instant (one synchronous request, the default), request "
                        "(asynchronous, one time) or maintain (replaces interrupted instances)")
    # No default value: None tells that the user gave no --duration (AnnexSpec.lease_explicit).
    p.add_argument("--duration", default=None,
                   help="lease: the annex ends after this long, with a unit (e.g. 50m, 2h); "
                        f"default {DEFAULT_LEASE_SECONDS // 60}m")
    p.add_argument("--idle", default=None,
                   help="an unclaimed node shuts down after this long, with a unit (e.g. 15m); "
                        f"default {DEFAULT_IDLE_SECONDS // 60}m")
    p.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    p.add_argument("--image-id", default="",
                   help="AMI (wins over --image; default ANNEX_DEFAULT_ODI_IMAGE_ID, else "
                        "--image)")
    p.add_argument("--image", default="", metavar="NAME",
                   help="stock image by name: debian-13 (default), ubuntu-24.04")
    p.add_argument("--user-data", default=None, metavar="FILE",
                   help="your own user data (a #cloud-config, a script, or MIME; '-' reads "
                        "stdin), sent as a second part after the bootstrap")
    p.add_argument("--config-dir", default=None, metavar="DIR",
                   help="HTCondor configuration files for the nodes, read after the annex's "
                        "own (regular files only, at most 1 MiB in all)")
    p.add_argument("--subnet-id", default=None, metavar="SUBNET[,SUBNET...]",
                   help="launch into this subnet (fleets spread over several); default "
                        "ANNEX_DEFAULT_SUBNET_IDS, else the default VPC")
    p.add_argument("--join-deadline", default=None, metavar="D",
                   help="end a node that has not joined the pool this long after its launch, "
                        "its console saved (e.g. 15m); default ANNEX_JOIN_DEADLINE, else 10m")
    p.add_argument("--job-deadline", default=None, metavar="D",
                   help="end a node on which no job started this long after it joined the "
                        "pool (e.g. 30m); default: never")
    p.add_argument("--budget", default=None, metavar="USD",
                   help="dollar limit of the annex: growth stops when the lease would cost "
                        "more, the annex ends when it is spent; default ANNEX_DEFAULT_BUDGET, "
                        "else none")
    p.add_argument("--owner", action="append", default=None,
                   help="user whose jobs may run (repeatable, one user each; default: you)")
    p.add_argument("--no-owner", action="store_true", help="let any user's jobs run")
    p.add_argument("--tag", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help=f"tag the instances (repeatable, at most {validate.MAX_USER_TAGS}; "
                        "names starting with aws: or htcondor: are reserved)")
    p.add_argument("--wait", action="store_true", help="wait until every node joined the pool")
    p.add_argument("--wait-timeout", default="15m", help="how long --wait waits (default 15m)")
    from condor_annex.cli import autoscale
    autoscale.add_flags(p)   # --autoscale --max N [--min M] (issue 13)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("-yes", "--yes", action="store_true", dest="yes",
                   help="start without asking (asked only when stdin is a terminal)")
    p.set_defaults(func=cmd_create)

    p = sub.add_parser("status", help="annexes, joining cloud state and the pool's ads")
    p.add_argument("name", nargs="?", help="one annex (default: all)")
    p.add_argument("--refresh", action="store_true",
                   help="when condor_annexd runs: run a reconciler pass now instead of showing "
                        "its last one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("off", help="end an annex: nodes leave the pool gracefully, then "
                                   "instances, fleets, lease and bundle go")
    p.add_argument("name")
    p.add_argument("--grace", default=f"{DEFAULT_OFF_GRACE_SECONDS}s",
                   help="how long nodes in the pool get to leave it gracefully (jobs vacated "
                        "back to the queue) before they are terminated; 0 terminates at once "
                        f"(default {DEFAULT_OFF_GRACE_SECONDS}s)")
    p.add_argument("--wait", action="store_true", help="wait until every instance ended")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_off)

    p = sub.add_parser("extend", help="move an annex's lease, or change its budget")
    p.add_argument("name")
    p.add_argument("duration", nargs="?", default=None,
                   help="new lease length from now, with a unit, e.g. 2h or 90m")
    p.add_argument("--budget", default=None, metavar="USD",
                   help="the annex's new dollar limit (at least what it spent plus one minute)")
    p.add_argument("--force-lease", action="store_true",
                   help="also when the new end is earlier than the current one")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("setup", help="create the cloud-side pieces (once per region); "
                                     "--remove deletes them")
    p.add_argument("--remove", action="store_true",
                   help="delete what setup made (bucket, stack, key pair) and its config block; "
                        "refused while any annex has a lease")
    p.add_argument("--force", action="store_true",
                   help="with --remove: remove even while annex leases remain")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_setup)

    p = sub.add_parser("check-setup", help="verify the cloud-side pieces")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check_setup)
    from condor_annex.cli import image, logs, preflight
    from condor_annex.cli import list as list_verb
    list_verb.add_verb(sub)
    preflight.add_flags(p)   # --preflight [--count N] [--instance-type T]
    logs.add_verb(sub)
    image.add_verb(sub)
    from condor_annex.cli import sweep
    sweep.add_verb(sub)
    from condor_annex.cli import daemon
    daemon.add_verb(sub)
    from condor_annex.cli import seed
    seed.add_verb(sub)


def spot_from_args(args) -> SpotSpec | None:
    """The EC2 Fleet settings of ``create --spot`` (None without ``--spot``).

    Raises:
        BadInputError: a Spot flag without ``--spot``, or bad instance types.
    """
    if not args.spot:
        for flag, value in (("--capacity", args.capacity),
                            ("--instance-types", args.instance_types),
                            ("--max-price", getattr(args, "max_price", None)),
                            ("--fleet-type", None if args.fleet_type == "instant" else 1)):
            if value is not None:
                raise BadInputError(f"{flag}: only with --spot, e.g. create NAME --spot "
                                    "--capacity 4 --instance-types m5.large,m5.xlarge:2")
        return None
    types = parse_instance_types(args.instance_types or args.instance_type, "--instance-types")
    from condor_annex.max_price import parse_max_price
    text = getattr(args, "max_price", None)
    return SpotSpec(api=SPOT_API_EC2_FLEET, fleet_type=args.fleet_type, instance_types=types,
                    max_price="" if text is None else parse_max_price(text, "--max-price"))


def _size(args) -> int:
    from condor_annex.cli.autoscale import bounds_from_args
    bounds = bounds_from_args(args)
    if bounds is not None:
        return bounds.min_count   # an autoscaled annex starts with --min (issue 13)
    if args.spot:
        if args.count is not None:
            raise BadInputError("--count: a Spot annex's size is its weighted capacity; use "
                                "--capacity W instead of --count")
        if args.capacity is None:
            raise BadInputError("--capacity: --spot needs the weighted capacity, e.g. "
                                "--capacity 4")
        return parse.count(args.capacity, "--capacity")
    if args.count is None:
        raise BadInputError("--count: give the number of instances, e.g. --count 2 (or --spot "
                            "--capacity W for Spot capacity)")
    return parse.count(args.count, "--count")


def _owners(args) -> tuple[str, ...]:
    """``--owner`` users (one name each), none with ``--no-owner``, else the invoking user."""
    if args.no_owner:
        if args.owner:
            raise BadInputError("--no-owner: cannot be combined with --owner; give one of them")
        return ()
    if args.owner:
        return validate.owners(args.owner, "--owner")
    me = getpass.getuser()
    try:
        return (validate.owner(me, "--owner"),)
    except BadInputError:
        raise BadInputError(f"--owner: your user name {validate.shown(me)} cannot be written "
                            "into the node's START policy; give --owner NAME or --no-owner") \
            from None


def spec_from_args(args) -> AnnexSpec:
    """Validate the create flags into an AnnexSpec (BadInputError before any cloud call).

    With ``--spot`` the spec's ``count`` is the weighted capacity (``--capacity``).  The lease
    is ``--duration`` (a unit is required), else the default; ``lease_explicit`` tells which."""
    name = validate_annex_name(args.name, "NAME")
    size = _size(args)
    explicit = args.duration is not None
    lease = parse.lease_duration(args.duration, "--duration") if explicit \
        else DEFAULT_LEASE_SECONDS
    idle = parse.lease_duration(args.idle, "--idle") if args.idle is not None \
        else DEFAULT_IDLE_SECONDS
    instance_type = validate.instance_type(args.instance_type, "--instance-type")
    image_id = validate.image_id(args.image_id, "--image-id") if args.image_id else ""
    subnets = parse_subnet_ids(args.subnet_id, "--subnet-id") \
        if args.subnet_id is not None else ()
    return AnnexSpec(name=name, count=size, lease_seconds=lease, idle_seconds=idle,
                     instance_type=instance_type, image_id=image_id, owners=_owners(args),
                     tags=validate.tags(args.tag, "--tag"), lease_explicit=explicit,
                     subnet_ids=subnets, image_name=_image_name(args),
                     user_data=_user_data(args), user_data_flag="--user-data",
                     join_deadline_s=_join_deadline(args),
                     job_deadline_s=_job_deadline(args),
                     budget_usd=_budget(args), config_files=_config_files(args))


def _config_files(args) -> tuple[tuple[str, bytes], ...]:
    """``--config-dir DIR``'s files, checked before any cloud call."""
    from condor_annex.service.config_dir import read_config_dir
    path = getattr(args, "config_dir", None)
    return () if path is None else read_config_dir(path, "--config-dir")


def _budget(args) -> float:
    """``--budget USD``, or 0.0 for the knob ``ANNEX_DEFAULT_BUDGET`` (read by the service),
    else none."""
    text = getattr(args, "budget", None)
    return 0.0 if text is None else parse_budget(text, "--budget")


def _job_deadline(args) -> int:
    """``--job-deadline D`` (a unit required), or 0: no first-job deadline."""
    text = getattr(args, "job_deadline", None)
    return 0 if text is None else parse.lease_duration(text, "--job-deadline")


def _join_deadline(args) -> int:
    """``--join-deadline D`` (a unit required; at least 1 min, since a node needs that long to
    boot), or 0 for the knob's value."""
    text = getattr(args, "join_deadline", None)
    if text is None:
        return 0
    seconds = parse.lease_duration(text, "--join-deadline")
    if seconds < 60:
        raise BadInputError(f"--join-deadline: {validate.shown(text)} is shorter than a node "
                            "needs to boot; give at least 1m (e.g. --join-deadline 10m)")
    return seconds


def _user_data(args) -> bytes | None:
    """``--user-data FILE`` read safely (a regular file or ``-``, at most 1 MiB; the 16 KB
    limit is checked after combining with the bootstrap)."""
    path = getattr(args, "user_data", None)
    if path is None:
        return None
    data = validate.read_file(path, "--user-data")
    return data.encode() if isinstance(data, str) else data


def _image_name(args) -> str:
    """``--image NAME`` checked against the known names (before any cloud call)."""
    from condor_annex.providers.aws.images import check_name
    name = getattr(args, "image", "") or ""
    return check_name(name, "--image") if name else ""


def cmd_create(args) -> int:
    """``create NAME --count N [--duration D] [--idle D] [--wait]``, or
    ``create NAME --spot --capacity W [--instance-types T[:W],...] [--fleet-type F]``."""
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context
    spot = spot_from_args(args)
    spec = spec_from_args(args)
    wait_s = parse.duration(args.wait_timeout, "--wait-timeout") if args.wait else 0
    ctx = Context.load()
    from condor_annex.cli.create_prompt import confirm_create, should_ask
    if should_ask(args) and not confirm_create(ctx, spec, spot):
        render.console.print(f"Not starting annex {spec.name}.")
        return 1
    started = time.monotonic()
    from condor_annex.cli.autoscale import bounds_from_args
    bounds = bounds_from_args(args)
    if bounds is not None:
        from condor_annex.service.autoscale_create import create_autoscaled
        result = create_autoscaled(ctx, spec, bounds)
    else:
        result = svc.create_annex(ctx, spec) if spot is None else \
            svc.create_spot_annex(ctx, spec, spot)
    data: dict[str, Any] = {"annex": result.annex_name, "client_token": result.client_token,
            "instances": list(result.instance_ids),
            "lease_expires_at": result.lease_expires_at.isoformat()}
    if spot is not None:
        data.update(fleet_id=result.fleet_id, capacity=spec.count)
    if not args.json:
        what = (f"{len(result.instance_ids)} instance(s)" if spot is None else
                f"Spot fleet {result.fleet_id} of capacity {spec.count} with "
                f"{len(result.instance_ids)} instance(s) so far")
        render.console.print(
            f"Annex [bold]{spec.name}[/] started: {what}, "
            f"client token {result.client_token}; lease ends "
            f"{result.lease_expires_at:%H:%M:%S} UTC.")
    if args.wait:
        # A fleet's instance count is known once it launched them (instant fleets at once).
        count = spec.count if spot is None else max(1, len(result.instance_ids))
        data["joined"] = wait_join_with_progress(ctx, spec.name, count, wait_s,
                                                 quiet=args.json)
        data["join_seconds"] = round(time.monotonic() - started, 1)
    if args.json:
        render.emit(data, True, "")
    return 0


def wait_join_with_progress(ctx, name: str, count: int, timeout_s: float,
                            quiet: bool = False) -> int:
    """Wait for ``count`` nodes to join, with a rich progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from condor_annex.service import annex as svc
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=render.err_console,
                  disable=quiet) as bar:
        task = bar.add_task(f"{name}: nodes joined", total=count)
        return svc.wait_for_join(ctx, name, count, timeout_s=timeout_s,
                                 progress=lambda j, n: bar.update(task, completed=j))


def end_annex_with_progress(ctx, name: str, grace_s: float, quiet: bool = False):
    """End an annex (:func:`service.annex.end_annex`), showing on stderr a rich progress bar
    while in-pool nodes leave gracefully (none when no node is asked to).  Returns the
    :class:`EndResult`."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from condor_annex.service import annex as svc
    with contextlib.ExitStack() as stack:
        bar = task = None

        def show(gone: int, asked: int) -> None:
            nonlocal bar, task
            if bar is None:
                bar = stack.enter_context(Progress(
                    "[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=render.err_console,
                    disable=quiet, transient=True))
                task = bar.add_task(f"{name}: nodes leaving the pool", total=asked)
            bar.update(task, completed=gone)
        return svc.end_annex(ctx, name, grace_s=grace_s, progress=show)


def cmd_status(args) -> int:
    """``status [NAME] [--json]``."""
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context
    name = validate_annex_name(args.name, "NAME") if args.name else None
    rows = svc.annex_status(Context.load(), name, must_exist=True,
                            refresh=getattr(args, "refresh", False))
    render.status_table(rows, args.json)
    return 0


def cmd_off(args) -> int:
    """``off NAME [--grace D] [--wait]``: graceful leave, then instances, fleets, lease and
    bundle."""
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context
    name = validate_annex_name(args.name, "NAME")
    grace_s = parse.duration(args.grace, "--grace", allow_zero=True)
    ctx = Context.load()
    res = end_annex_with_progress(ctx, name, grace_s, quiet=args.json)
    if args.wait:
        svc.wait_for_end(ctx, name, timeout_s=600)
    fleets = list(res.spot_fleet_requests + res.fleets)
    render.emit({"annex": name, "terminated": list(res.terminated),
                 "lease_deleted": res.lease_deleted, "bundle_deleted": res.bundle_deleted,
                 "fleets_ended": fleets, "launch_templates_deleted": list(res.launch_templates),
                 "left_pool": list(res.left_pool)},
                args.json,
                f"Annex {name}: ended {len(res.terminated)} instance(s)"
                + (f" ({len(res.left_pool)} left the pool gracefully)" if res.left_pool else "")
                + "; lease "
                f"{'deleted' if res.lease_deleted else 'absent'}; bundle "
                f"{'deleted' if res.bundle_deleted else 'absent'}"
                + (f"; fleet(s) {', '.join(fleets)} ended" if fleets else "") + ".")
    return 0


def fleets_stopping_text(res) -> str:
    """What ``extend`` says of fleets whose unchangeable ValidUntil passes before the new end
    ("" when none)."""
    return "".join(f" The fleet {fid} stops replacing instances at {until:%Y-%m-%d %H:%M:%S} "
                   "UTC (its ValidUntil cannot be moved); its instances run until the lease "
                   "ends." for fid, until in res.fleets_stopping)


def cmd_extend(args) -> int:
    """``extend NAME DURATION``: moves the lease, the lease tags, the bundle and its token."""
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context
    from condor_annex.cli.budget_text import extend_budget_json, extend_budget_text
    name = validate_annex_name(args.name, "NAME")
    if args.duration is None and args.budget is None:
        raise BadInputError(f"extend: give a DURATION or --budget USD, e.g. condor_annex "
                            f"extend {name} 2h, or condor_annex extend {name} --budget 5")
    seconds = None if args.duration is None else parse.lease_duration(args.duration,
                                                                       "DURATION")
    budget = 0.0 if args.budget is None else parse_budget(args.budget, "--budget")
    res = svc.extend_annex(Context.load(), name, seconds, allow_shorten=args.force_lease,
                           budget_usd=budget)
    expires = res.lease_expires_at
    render.emit({"annex": name, "lease_expires_at": expires.isoformat(),
                 "instances": list(res.instance_ids), "fleets": list(res.fleets),
                 "fleets_stop_replacing": {fid: until.isoformat()
                                           for fid, until in res.fleets_stopping},
                 **extend_budget_json(res.budget)},
                args.json,
                (f"Lease updated: annex {name} now ends {expires:%Y-%m-%d %H:%M:%S} UTC."
                 if seconds is not None else f"Annex {name}:")
                + fleets_stopping_text(res) + extend_budget_text(res.budget))
    return 0


def cmd_setup(args) -> int:
    """``setup``: deploy the CloudFormation stack and record its outputs; ``setup --remove
    [--force]`` deletes them again."""
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context
    if args.force and not args.remove:
        raise BadInputError("--force: only with --remove, e.g. condor_annex setup --remove "
                            "--force")
    if args.remove:
        with render.err_console.status("setup --remove: deleting the CloudFormation stack"):
            outputs = svc.teardown_cloud(Context.load(), force=args.force)
        render.emit({"removed": True, **outputs.__dict__}, args.json,
                    f"Removed setup in {outputs.region}: stack {outputs.stack_name}, bucket "
                    f"{outputs.bucket}, key pair {outputs.key_name}.")
        return 0
    with render.err_console.status("setup: creating or updating the CloudFormation stack") \
            as status:
        outputs = svc.setup_cloud(Context.load(),
                                  progress=lambda s: status.update(f"setup: stack {s}"))
    changed = (f"\nUpdated stack {outputs.stack_name} to this version's template: "
               + "; ".join(outputs.changes) + ".") if outputs.changes else ""
    render.emit(outputs.__dict__, args.json,
                f"Setup complete in {outputs.region}: bucket {outputs.bucket}, "
                f"stack {outputs.stack_name}.{changed}")
    return 0


def cmd_check_setup(args) -> int:
    """``check-setup``: exit 1 when any resource is missing."""
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context
    rows = svc.check_setup(Context.load())
    render.check_table(rows, args.json)
    return 0 if all(ok for _, ok, _ in rows) else 1


