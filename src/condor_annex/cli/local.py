"""``condor_annex local up|down|status|submit``: the local cloud (needs root)."""

from __future__ import annotations

import os

from condor_annex.cli import render
# cmd_up and cmd_down are the verbs' handlers, and what tests/e2e and benchmarks call as local.*
from condor_annex.cli.local_lifecycle import cmd_down, cmd_up, require_root, running_state
from condor_annex.errors import BadInputError


def add_verbs(sub) -> None:
    """Register ``local`` and its verbs."""
    p = sub.add_parser("local", help="the local cloud: emulated AWS whose instances are real "
                                     "execute nodes of a real HTCondor pool")
    lsub = p.add_subparsers(dest="local_verb", metavar="VERB")
    up = lsub.add_parser("up", help="start the pool and the local cloud (builds the chroot once)")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=cmd_up)
    down = lsub.add_parser("down", help="stop everything the local cloud started")
    down.set_defaults(func=cmd_down)
    st = lsub.add_parser("status", help="is the local cloud up, and where")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
    inj = lsub.add_parser("inject", help="make the local cloud fail on purpose: lambda-error N "
                                         "(the next N lease-function invocations fail), "
                                         "schedule-early (one-time schedules fire at the first "
                                         "second of their minute), backstop-off (nodes booted "
                                         "from now on never end by their own backstop), "
                                         "no-join N (the next N instances booted never join: "
                                         "the network drops their traffic to the collector), "
                                         "interrupt INSTANCE_ID (EC2 interrupts that Spot "
                                         "Instance: its IMDS serves the notice, and it is "
                                         "terminated when the notice runs out), none (clear)")
    inj.add_argument("what", nargs="*", metavar="KIND [N | INSTANCE_ID]",
                     help="lambda-error N | schedule-early | backstop-off | no-join N | "
                          "interrupt INSTANCE_ID | none")
    inj.add_argument("--rebalance", action="store_true",
                     help="interrupt: a rebalance recommendation only "
                          "(events/recommendations/rebalance); nothing is terminated")
    inj.add_argument("--notice", metavar="DURATION",
                     help="interrupt: time from the notice to the termination (default 120s, "
                          "EC2's two minutes; 1s to 1h)")
    inj.set_defaults(func=cmd_inject)
    ad = lsub.add_parser("annexd", help="run condor_annexd under the pool's condor_master "
                                        "(DAEMON_LIST += ANNEXD; the master restarts it), or "
                                        "stop it")
    ad.add_argument("state", choices=("on", "off"))
    ad.set_defaults(func=cmd_annexd)
    sb = lsub.add_parser("submit", help="submit jobs that must run on an annex")
    sb.add_argument("name", help="annex name the jobs require")
    sb.add_argument("--count", default="1")
    sb.add_argument("--sleep", default="5s", help="how long each job runs")
    sb.set_defaults(func=cmd_submit)
    from condor_annex.cli import demo
    demo.add_verb(lsub)


def cmd_annexd(args) -> int:
    """``local annexd on|off``: condor_annexd under the local pool's master, with this
    user's config (:mod:`condor_annex.providers.local.annexd_master`)."""
    require_root()
    from condor_annex.cli.local_lifecycle import daemon_pid
    pid = daemon_pid()
    if running_state() is None or pid is None:
        raise BadInputError("local annexd: the local cloud is not running; run 'condor_annex "
                            "local up' first")
    from condor_annex.providers.local import annexd_master
    if args.state == "on":
        from condor_annex.providers.local import cloud
        annexd_master.enable(pid, token_dir=annexd_master.mint_token(cloud.STATE_DIR))
        render.console.print("condor_annexd added to the pool's DAEMON_LIST; see "
                             "'condor_annex daemon status'.")
    else:
        annexd_master.disable()
        render.console.print("condor_annexd removed from the pool's DAEMON_LIST.")
    return 0


def _injections():
    from condor_annex.providers.local import cloud
    from condor_annex.providers.local.inject import FILE_NAME, Injections
    return Injections(cloud.STATE_DIR / FILE_NAME)


def _local_ec2():
    """An EC2 client of the running local cloud, as its account's user (the key files the
    daemon wrote in its state dir).

    Raises:
        BadInputError: the key files cannot be read (not root).
    """
    from condor_annex.config import AwsSettings
    from condor_annex.providers.aws.session import make_client
    from condor_annex.providers.local import cloud
    st = running_state()
    keys = (cloud.STATE_DIR / "access_key", cloud.STATE_DIR / "secret_key")
    if not all(os.access(k, os.R_OK) for k in keys):
        raise BadInputError("local inject: cannot read the local cloud's keys; run it with sudo")
    settings = AwsSettings(region="us-east-1", endpoint_url=st.endpoint_url,
                           access_key_file=str(keys[0]), secret_key_file=str(keys[1]))
    return make_client(settings, "ec2", fast_fail=True, paced=False)


def cmd_status(args) -> int:
    """Print where the local cloud is and the faults injected, or say it is down (exit 1).

    ``--json``: ``{"up": true, "endpoint": URL, "collector": "HOST:PORT", "injected":
    ["lambda-error 2", "schedule-early", "no-join 1"], ...the state file's fields}``, or
    ``{"up": false}``.
    """
    st = running_state()
    if st is None:
        render.emit({"up": False}, args.json, "Local cloud is not running.")
        return 1
    injected = _injections().describe()
    render.emit({"up": True, "endpoint": st.endpoint_url, "collector": st.collector,
                 "injected": injected, **st.__dict__}, args.json,
                f"Local cloud up (pid {st.pid}): AWS endpoint {st.endpoint_url}, collector "
                f"{st.collector}." + (f" Injected faults: {', '.join(injected)}." if injected
                                      else ""))
    return 0


def cmd_inject(args) -> int:
    """``local inject lambda-error N | schedule-early | backstop-off | no-join N | interrupt
    INSTANCE_ID [--rebalance] [--notice 120s] | none``: write the fault injection for the
    running local cloud's daemon (it reads it every pass).

    Raises:
        BadInputError: unknown kind, N not a whole number from 1 to 10000, a bad interrupt
            (:func:`~condor_annex.providers.local.interruptions.parse_interrupt`), --rebalance
            or --notice without interrupt, no local cloud running, or the state dir not
            writable (one line, exit 2; nothing changed).
    """
    from condor_annex.providers.local import inject, interruptions
    words = list(args.what)
    request = None
    if words[:1] == ["interrupt"]:
        request = interruptions.parse_interrupt(words[1:], rebalance=args.rebalance,
                                                notice=args.notice)
    else:
        kind, count = inject.parse(words)
        if args.rebalance or args.notice is not None:
            flag = "--rebalance" if args.rebalance else "--notice"
            raise BadInputError(f"local inject {flag}: goes with interrupt only, e.g. local "
                                f"inject interrupt INSTANCE_ID {flag}"
                                + ("" if args.rebalance else " 120s"))
    if running_state() is None:
        raise BadInputError("local inject: the local cloud is not running; run "
                            "'condor_annex local up' first")
    if request is not None:
        interruptions.check_instance(_local_ec2(), request.instance_id)
    try:
        if request is not None:
            _injections().add_interrupt(request)
        else:
            _injections().apply(kind, count)
    except PermissionError:
        raise BadInputError("local inject: cannot write the local cloud's state dir; run it "
                            "with sudo") from None
    now = _injections().describe()
    render.console.print("Injected faults: " + (", ".join(now) if now else "none") + ".")
    return 0


def cmd_submit(args) -> int:
    """Submit jobs as the local pool's ordinary user."""
    require_root()
    from condor_annex.cli import parse
    from condor_annex.model import validate_annex_name
    from condor_annex.providers.local import jobs
    name = validate_annex_name(args.name, "NAME")
    if running_state() is None:
        raise BadInputError("local submit: the local cloud is not running; run "
                            "'condor_annex local up'")
    cluster = jobs.submit(name, parse.count(args.count, "--count"),
                          parse.duration(args.sleep, "--sleep"))
    render.console.print(f"Submitted {args.count} job(s) to cluster {cluster}.")
    return 0
