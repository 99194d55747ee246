"""``condor_annex local up|down|status|submit``: the local cloud (needs root)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from condor_annex.cli import render
from condor_annex.errors import AnnexError, BadInputError


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
                                         "from now on never end by their own backstop), none "
                                         "(clear)")
    inj.add_argument("what", nargs="*", metavar="KIND [N]",
                     help="lambda-error N | schedule-early | backstop-off | none")
    inj.set_defaults(func=cmd_inject)
    sb = lsub.add_parser("submit", help="submit jobs that must run on an annex")
    sb.add_argument("name", help="annex name the jobs require")
    sb.add_argument("--count", default="1")
    sb.add_argument("--sleep", default="5s", help="how long each job runs")
    sb.set_defaults(func=cmd_submit)
    from condor_annex.cli import demo
    demo.add_verb(lsub)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise BadInputError("local: the local cloud needs root (network namespaces, chroot); "
                            "run it with sudo")


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def running_state():
    """The state of a running local cloud, or None."""
    from condor_annex.providers.local.cloud import LocalCloudState
    st = LocalCloudState.load()
    return st if st and _alive(st.pid) else None


def _daemon_pid() -> int | None:
    """Pid of a local-cloud daemon that is alive (ready or still starting), or None."""
    from condor_annex.providers.local import cloud
    try:
        pid = int((cloud.STATE_DIR / "daemon.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def cmd_up(args) -> int:
    """Start the local cloud daemon in the background and wait until it is ready."""
    from condor_annex.providers.local import cloud
    from condor_annex.providers.local.clock import time_scale_from_env
    try:
        time_scale_from_env()   # the daemon's clock reads it; refuse it here, before starting
    except ValueError as e:
        raise BadInputError(str(e)) from None
    _require_root()
    st = running_state()
    if st is None:
        if _daemon_pid() is not None:
            raise AnnexError("local up: a local cloud is still starting or stopping (pid "
                             f"{_daemon_pid()}); wait, or run 'condor_annex local down'")
        cloud.STATE_DIR.mkdir(parents=True, exist_ok=True)
        for f in ("ready", "failed", "state.json", "inject.json"):   # a new cloud: no faults
            (cloud.STATE_DIR / f).unlink(missing_ok=True)
        log = open(cloud.STATE_DIR / "cloud.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "condor_annex.providers.local.cloud"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        (cloud.STATE_DIR / "daemon.pid").write_text(f"{proc.pid}\n")
        started = time.monotonic()
        with render.err_console.status("local cloud: building/restoring the HTCondor chroot, "
                                       "starting the pool and the AWS emulator"):
            while not (cloud.STATE_DIR / "ready").exists():
                if proc.poll() is not None or (cloud.STATE_DIR / "failed").exists():
                    tail = (cloud.STATE_DIR / "cloud.log").read_text()[-1500:]
                    raise AnnexError(f"local cloud failed to start:\n{tail}")
                if time.monotonic() - started > 900:
                    raise AnnexError("local cloud: not ready after 900 s; see "
                                     f"{cloud.STATE_DIR / 'cloud.log'}")
                time.sleep(0.2)
        st = running_state()
        msg = f"Local cloud up in {time.monotonic() - started:.1f} s"
    else:
        msg = "Local cloud already up"
    render.emit(st.__dict__, getattr(args, "json", False),
                f"{msg}: AWS endpoint {st.endpoint_url}, collector {st.collector} "
                f"(instances report to {st.annex_collector}).")
    return 0


def cmd_down(args) -> int:
    """Stop the daemon; it terminates every node and removes what it created."""
    _require_root()
    pid = _daemon_pid()
    if pid is None:
        render.console.print("Local cloud is not running.")
        from condor_annex.providers.local import netns
        netns.delete_all()
        return 0
    os.kill(pid, signal.SIGTERM)
    with render.err_console.status("local cloud: stopping nodes, pool and emulator"):
        deadline = time.monotonic() + 90
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    render.console.print("Local cloud stopped.")
    return 0


def _injections():
    from condor_annex.providers.local import cloud
    from condor_annex.providers.local.inject import FILE_NAME, Injections
    return Injections(cloud.STATE_DIR / FILE_NAME)


def cmd_status(args) -> int:
    """Print where the local cloud is and the faults injected, or say it is down (exit 1).

    ``--json``: ``{"up": true, "endpoint": URL, "collector": "HOST:PORT", "injected":
    ["lambda-error 2", "schedule-early"], ...the state file's fields}``, or ``{"up": false}``.
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
    """``local inject lambda-error N | schedule-early | backstop-off | none``: write the fault
    injection for the running local cloud's daemon (it reads it every pass).

    Raises:
        BadInputError: unknown kind, N not a whole number from 1 to 10000, no local cloud
            running, or the state dir not writable (one line, exit 2; nothing changed).
    """
    from condor_annex.providers.local import inject
    kind, count = inject.parse(list(args.what))
    if running_state() is None:
        raise BadInputError("local inject: the local cloud is not running; run "
                            "'condor_annex local up' first")
    try:
        _injections().apply(kind, count)
    except PermissionError:
        raise BadInputError("local inject: cannot write the local cloud's state dir; run it "
                            "with sudo") from None
    now = _injections().describe()
    render.console.print("Injected faults: " + (", ".join(now) if now else "none") + ".")
    return 0


def cmd_submit(args) -> int:
    """Submit jobs as the local pool's ordinary user."""
    _require_root()
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
