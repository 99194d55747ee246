"""Run condor_master in the foreground until it exits, stopping it when the node must end.

Signals: SIGTERM and SIGINT sent to the agent are forwarded to the master (systemd or the local
cloud stopping the node). A stop order from the :class:`~condor_annex.agent.watch.NodeWatch`
sends SIGTERM (HTCondor's graceful shutdown: the startd vacates its jobs and withdraws its ads,
as ``condor_off`` would). A *bounded* order (the lease is over) escalates when the master is
still running after ``grace_s`` seconds: SIGQUIT (HTCondor's fast shutdown), then SIGKILL after
``fast_s`` more; the power-off that follows ends whatever is left.

Standard library only (the agent runs on the instance's python3.9+).
"""

from __future__ import annotations

import logging
import shlex
import signal
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional

from condor_annex.agent.watch import NodeWatch

log = logging.getLogger(__name__)

#: Seconds a master ordered to stop at the lease end gets for its graceful shutdown.
LEASE_STOP_GRACE_S = 15.0
#: Seconds after SIGQUIT (fast shutdown) before SIGKILL.
LEASE_STOP_FAST_S = 10.0


def run_master(command: List[str], env: Dict[str, str], *, watch: Optional[NodeWatch] = None,
               grace_s: Optional[float] = None, fast_s: Optional[float] = None,
               on_started: Optional[Callable[[], object]] = None,
               on_pid: Optional[Callable[[int], object]] = None) -> int:
    """Run ``<command> -f`` in the foreground; forward SIGTERM and SIGINT to it; obey ``watch``.

    Args:
        command: the condor_master command line (without ``-f``).
        env: its environment (with ``CONDOR_CONFIG``).
        watch: asked when to check and whether to stop (None: run until the master exits).
        grace_s: seconds after SIGTERM of a bounded stop order before SIGQUIT (default
            :data:`LEASE_STOP_GRACE_S`).
        fast_s: seconds after SIGQUIT before SIGKILL (default :data:`LEASE_STOP_FAST_S`).
        on_started: called once the master's process exists (the collector check starts
            then); it must return at once.
        on_pid: called with the master's pid once it exists, before ``on_started`` (the
            interruption drain signals the master with it); it must return at once.

    Returns:
        The master's exit status (negative: killed by that signal).

    Raises:
        OSError: the master could not be started.
    """
    proc: Optional[subprocess.Popen] = None
    pending: List[int] = []

    def forward(signum: int, _frame) -> None:
        name = signal.Signals(signum).name
        if proc is None:
            pending.append(signum)
            return
        log.info("got %s; forwarding it to condor_master (pid %d)", name, proc.pid)
        proc.send_signal(signum)

    previous: Dict[int, Any] = {}   # what signal.signal returned: a handler, SIG_DFL, ...
    try:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, forward)
    except ValueError:  # not the main thread (an in-process caller): no forwarding
        log.debug("not in the main thread; signals are not forwarded to condor_master")
    try:
        log.info("step 9/9 starting %s -f (CONDOR_CONFIG=%s)", shlex.join(command),
                 env.get("CONDOR_CONFIG"))
        proc = subprocess.Popen([*command, "-f"], env=env, stdin=subprocess.DEVNULL)
        for queued in pending:
            proc.send_signal(queued)
        if on_pid is not None:
            on_pid(proc.pid)
        if on_started is not None:
            on_started()
        return _supervise(proc, watch,
                          LEASE_STOP_GRACE_S if grace_s is None else grace_s,
                          LEASE_STOP_FAST_S if fast_s is None else fast_s)
    finally:
        for restored, handler in previous.items():
            signal.signal(restored, handler)


def _supervise(proc: subprocess.Popen, watch: Optional[NodeWatch], grace_s: float,
               fast_s: float) -> int:
    """Wait for the master, checking ``watch`` when it asks; stop and escalate as ordered."""
    termed = False
    quit_at: Optional[float] = None   # monotonic time of SIGQUIT (bounded stop only)
    kill_at: Optional[float] = None   # monotonic time of SIGKILL
    killed = False
    while True:
        timeouts = []
        if watch is not None:
            w = watch.wait_s()
            if w is not None:
                timeouts.append(w)
        now = time.monotonic()
        # Only the next escalation step bounds the wait (a past step would spin).
        step = quit_at if kill_at is None else (None if killed else kill_at)
        if step is not None:
            timeouts.append(max(0.0, step - now))
        try:
            return proc.wait(timeout=min(timeouts) if timeouts else None)
        except subprocess.TimeoutExpired:
            pass
        order = watch.check() if watch is not None else None
        if order is not None:
            log.info("%s", order.reason)
            if not termed:
                proc.send_signal(signal.SIGTERM)
                termed = True
            if order.bounded and quit_at is None:
                quit_at = time.monotonic() + grace_s
        now = time.monotonic()
        if quit_at is not None and kill_at is None and now >= quit_at:
            log.warning("condor_master still running %gs after SIGTERM; fast shutdown (SIGQUIT)",
                        grace_s)
            proc.send_signal(signal.SIGQUIT)
            kill_at = now + fast_s
        if kill_at is not None and not killed and now >= kill_at:
            log.warning("condor_master still running %gs after SIGQUIT; killing it", fast_s)
            proc.kill()
            killed = True
