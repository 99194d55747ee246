"""Bringing the local cloud up and down (``condor_annex local up|down``, and ``local demo``,
which wraps its run in them).

Lives apart from :mod:`condor_annex.cli.local` (which registers the ``local`` verbs, ``demo``
among them) so that :mod:`condor_annex.cli.demo` can use it without importing its own parent:
the house has no import circle (tests/unit/test_imports.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from condor_annex.cli import render
from condor_annex.errors import AnnexError, BadInputError


def require_root() -> None:
    """Refuse to go on unless we run as root.

    Raises:
        BadInputError: not root (the local cloud needs network namespaces and a chroot).
    """
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


def daemon_pid() -> int | None:
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
    require_root()
    st = running_state()
    if st is None:
        if daemon_pid() is not None:
            raise AnnexError("local up: a local cloud is still starting or stopping (pid "
                             f"{daemon_pid()}); wait, or run 'condor_annex local down'")
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
    require_root()
    pid = daemon_pid()
    if pid is None:
        render.console.print("Local cloud is not running.")
        from condor_annex.providers.local import netns
        netns.delete_all()
        return 0
    from condor_annex.providers.local import annexd_master
    if annexd_master.enabled() or annexd_master.daemons():
        annexd_master.disable()   # before the pool: the daemon outlives its master
    os.kill(pid, signal.SIGTERM)
    with render.err_console.status("local cloud: stopping nodes, pool and emulator"):
        deadline = time.monotonic() + 90
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    render.console.print("Local cloud stopped.")
    return 0
