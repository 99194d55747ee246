"""``condor_annexd``: run the reconciler forever, for the user who owns the annexes.

A first pass at start, then one every ``ANNEXD_INTERVAL`` seconds (default 10, at most 15).
It uses the user's state file (``ANNEX_STATE_FILE``) and cloud credentials, exactly as the
``condor_annex`` commands do: the commands and the daemon meet in the state file, no other
channel.  One daemon per state file (:mod:`condor_annex.state.daemon_lock`; a second refuses
to start, exit 2).  Each pass it also looks for this user's orphans (``sweep`` in report mode)
and ends those seen in two consecutive passes, then advertises itself to the collector
(:mod:`condor_annex.daemon.advertise`) and records its report in the store (``condor_annex
daemon status``).

Ways to run it (docs/annexd.md):

* in the foreground: ``condor_annexd`` (Ctrl-C or SIGTERM stops it after the current pass);
* under a personal HTCondor's ``condor_master``, as the seed page on the annex daemon says:
  ``DAEMON_LIST = $(DAEMON_LIST) ANNEXD`` and ``ANNEXD = /path/to/condor_annexd`` (not in
  ``DC_DAEMON_LIST``: it is not a DaemonCore daemon); the master restarts it if it dies;
* under systemd: the user unit ``condor-annexd.service`` (``condor_annex daemon unit``).

A daemon serving many users of a shared pool is out of scope: each user runs their own.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import signal
import socket
import sys
import threading
from datetime import datetime
from typing import Any

from condor_annex import __version__
from condor_annex.errors import AnnexError, BadInputError, PoolError
from condor_annex.model import utcnow

log = logging.getLogger("condor_annexd")

#: Knob: seconds between passes (default 10, 1 to 15).
INTERVAL_KNOB = "ANNEXD_INTERVAL"
DEFAULT_INTERVAL_S = 10.0
MAX_INTERVAL_S = 15.0
#: Knob: the daemon's log file (default: standard error).
LOG_KNOB = "ANNEXD_LOG"


def interval_s(knobs: dict[str, str]) -> float:
    """``ANNEXD_INTERVAL`` in seconds.

    Raises:
        BadInputError: not a number from 1 to 15, naming the knob.
    """
    text = knobs.get(INTERVAL_KNOB, "").strip()
    if not text:
        return DEFAULT_INTERVAL_S
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 1 <= value <= MAX_INTERVAL_S:
        raise BadInputError(f"{INTERVAL_KNOB}: {text!r} is not a number of seconds from 1 to "
                            f"{MAX_INTERVAL_S:.0f}; fix it in ~/.condor/user_config")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="condor_annexd", description="The annex daemon: reconciles your annexes (cloud, "
        "pool, state file) every ANNEXD_INTERVAL seconds.")
    p.add_argument("--once", action="store_true", help="run one pass and exit")
    p.add_argument("--version", action="version", version=f"condor_annexd {__version__}")
    # condor_master starts its daemons with ``-f`` (foreground) and sometimes ``-p PORT``.
    p.add_argument("-f", dest="foreground", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-p", dest="port", help=argparse.SUPPRESS)
    return p


class Daemon:
    """The loop.  ``ctx`` is a :class:`condor_annex.service.context.Context`."""

    def __init__(self, ctx: Any, state_file: Any) -> None:
        # What a pass does is the daemon's log, not a terminal's stderr.
        ctx.notify = lambda line: log.info("%s", line)
        self.ctx = ctx
        self.state_file = state_file
        self.stop = threading.Event()
        self.name = f"annexd@{getpass.getuser()}@{socket.getfqdn()}"
        self.report: dict[str, Any] = {
            "pid": os.getpid(), "host": socket.getfqdn(), "user": getpass.getuser(),
            "version": __version__, "started_at": utcnow().isoformat(), "passes": 0,
            "errors": 0, "last_error": "", "throttled_calls": 0,
            "state_file": str(state_file), "orphans": [], "reaped": []}
        self._orphans_before: set[tuple[str, str, str]] = set()

    def run(self, once: bool = False) -> int:
        """Pass after pass until :attr:`stop` is set (SIGTERM, SIGINT) or after one with
        ``once``.  A failed pass is logged and counted; the next one tries again."""
        wait = interval_s(self.ctx.knobs)
        log.info("condor_annexd %s: serving %s every %.0f s (pid %d)", __version__,
                 self.state_file, wait, os.getpid())
        while True:
            self.one_pass()
            if once or self.stop.wait(wait):
                break
        if self.ctx.collector:
            from condor_annex.daemon.advertise import invalidate
            invalidate(self.ctx.collector, self.name)
        return 0

    def one_pass(self) -> None:
        """One reconciler pass, the orphan report (ending those seen twice), the report in
        the store, the ad in the collector."""
        from condor_annex.service.converge import reconcile_once
        started = utcnow()
        errors: list[str] = []
        try:
            report = reconcile_once(self.ctx)
            errors += report.errors
            self.report["last_pass"] = report.as_dict()
            from condor_annex.service.replace import replace_wanted
            replace_wanted(self.ctx)
            from condor_annex.service.autoscale_launch import launch_wanted
            launch_wanted(self.ctx, since=started)   # issue 13: demand-driven annexes grow
        except (AnnexError, OSError) as e:
            errors.append(f"pass failed: {e}")
        errors += self._sweep()
        self.report["passes"] += 1
        self.report["last_pass_unix"] = int(started.timestamp())
        self.report["throttled_calls"] = _throttled_calls()
        if errors:
            self.report["errors"] += len(errors)
            self.report["last_error"] = errors[-1]
            for line in errors:
                log.warning("%s", line)
        self._record(started)
        self._advertise()

    def _sweep(self) -> list[str]:
        """Orphans in report mode; an annex whose orphans were already orphans on the previous
        pass is ended (as ``sweep`` would).  Returns error lines."""
        from condor_annex.service.end import end_annex
        from condor_annex.service.sweep import sweep
        try:
            orphans = sweep(self.ctx, dry_run=True)
        except (AnnexError, OSError) as e:
            return [f"orphan report failed: {e}"]
        now = {(o.annex, o.kind, o.id) for o in orphans}
        twice = sorted({a for a, k, i in now & self._orphans_before})
        self._orphans_before = now
        self.report["orphans"] = [{"annex": o.annex, "kind": o.kind, "id": o.id,
                                   "reason": o.reason} for o in orphans]
        errors = []
        for annex in twice:
            try:
                end_annex(self.ctx, annex, grace_s=0)
                log.info("orphaned annex %s ended (an orphan on two passes)", annex)
                self.report["reaped"] = (self.report["reaped"] + [annex])[-20:]
            except AnnexError as e:
                errors.append(f"orphaned annex {annex} not ended: {e}")
        return errors

    def _record(self, at: datetime) -> None:
        from condor_annex.state.store import open_store
        try:
            with open_store(self.ctx.knobs) as store:
                store.put_daemon_report(self.report, at=at)
        except (AnnexError, OSError) as e:
            log.warning("could not record the daemon's report: %s", e)

    def _advertise(self) -> None:
        if not self.ctx.collector:
            return
        from condor_annex.daemon.advertise import advertise, daemon_ad
        try:
            advertise(self.ctx.collector, daemon_ad(self.name, self.report))
        except PoolError as e:
            log.info("%s", e)


def _throttled_calls() -> int:
    """Throttled AWS calls so far in this process (0 when the count is not kept)."""
    try:
        from condor_annex.providers.aws import throttle
    except ImportError:
        return 0
    counter = getattr(throttle, "throttled_calls", None)
    return int(counter()) if callable(counter) else 0


def _logging(knobs: dict[str, str]) -> logging.Handler:
    """The daemon's log (``ANNEXD_LOG``, else standard error) on the root logger; returns the
    handler, which :func:`main` removes when it returns (it is bound to this stream)."""
    path = knobs.get(LOG_KNOB, "").strip()
    handler: logging.Handler = (logging.FileHandler(os.path.expanduser(path)) if path
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``condor_annexd``.  Exit 0 after SIGTERM/SIGINT (or ``--once``), 2 on
    bad input (a bad knob, a state file served by another daemon, an unusable state file)."""
    args = _parser().parse_args(argv)
    from condor_annex.service.context import Context
    from condor_annex.service.converge import state_file
    from condor_annex.state import daemon_lock
    try:
        ctx = Context.load()
        interval_s(ctx.knobs)
        path = state_file(ctx)
        with daemon_lock.hold(path):
            handler = _logging(ctx.knobs)
            try:
                daemon = Daemon(ctx, path)
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: daemon.stop.set())
                return daemon.run(once=args.once)
            finally:
                logging.getLogger().removeHandler(handler)
                handler.close()
    except BadInputError as e:
        print(f"condor_annexd: {e}" if not str(e).startswith("condor_annexd") else str(e),
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
