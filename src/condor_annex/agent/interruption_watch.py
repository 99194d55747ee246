"""Watching instance metadata for EC2's spot warnings while the master runs.

Every ``poll_s`` seconds (5 by default, as AWS recommends in "Spot Instance interruption
notices") the watch reads ``meta-data/spot/instance-action`` and, until an interruption is
known, ``meta-data/events/recommendations/rebalance`` (:mod:`condor_annex.agent.notices`; a 404
means nothing to say, as on every on-demand instance). The first rebalance recommendation makes
the node take no new claims, the first interruption notice drains it
(:class:`~condor_annex.agent.node_drain.NodeDrain`); the drain runs in the watch's own thread.
:meth:`InterruptionWatch.leave_reason` then tells the master's
:class:`~condor_annex.agent.watch.NodeWatch` to stop the master: once the drain is done, or at
the notice's ``leave_by`` whatever the drain's state.

A metadata service that does not answer is looked at again at the next poll. The watch runs in
a daemon thread: it never delays the master or the power-off.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from condor_annex.agent.condor_commands import subprocess_runner
from condor_annex.agent.imds import ImdsClient, ImdsError
from condor_annex.agent.node_drain import NodeDrain, leave_by
from condor_annex.agent.notices import (INSTANCE_ACTION_PATH, REBALANCE_PATH,
                                        InterruptionNotice, RebalanceNotice,
                                        parse_instance_action, parse_rebalance, utc)

log = logging.getLogger(__name__)

#: Seconds between two looks, as AWS recommends.
POLL_S = 5.0

#: Reads one metadata path (relative to ``/latest/``): its text, or None for a 404.
#: Raises ImdsError when the service does not answer.
ReadMetadata = Callable[[str], "str | None"]


class InterruptionWatch:
    """Polls for EC2's warnings and acts on them once each.

    Args:
        read: reads a metadata path (e.g. ``functools.partial(imds.get_text, optional=True)``).
        drain: what the node does (:class:`NodeDrain`).
        poll_s: seconds between looks (> 0).
        clock: wall clock, epoch seconds.
    """

    def __init__(self, read: ReadMetadata, drain: NodeDrain, *, poll_s: float = POLL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self._read = read
        self._drain = drain
        self._poll_s = poll_s
        self._clock = clock
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: The first rebalance recommendation seen, or None.
        self.rebalance: RebalanceNotice | None = None
        #: The interruption notice seen, or None.
        self.interruption: InterruptionNotice | None = None
        self._drained = False
        self._unreachable = False

    # -- the master's side ---------------------------------------------------------------------

    def leave_reason(self) -> str | None:
        """The reason to stop the master now (one line), or None: the drain is over, or the
        notice's ``leave_by`` has come."""
        with self._lock:
            notice, drained = self.interruption, self._drained
        if notice is None:
            return None
        if drained:
            return (f"spot interruption ({notice.action} at {utc(notice.at)}): drained; leaving "
                    "the pool: shutting condor_master down")
        if self._clock() >= leave_by(notice):
            return (f"spot interruption ({notice.action} at {utc(notice.at)}): leaving the "
                    "pool before EC2 acts (the drain is not over): shutting condor_master down")
        return None

    # -- the thread ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start polling in a daemon thread (the first look at once)."""
        self._thread = threading.Thread(target=self._loop, name="interruption-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop polling (a drain under way stops at its next wait); wait up to ``timeout_s``."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def wait(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True when stopped (a :class:`NodeDrain`'s
        ``wait``)."""
        return self._stopped.wait(seconds)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - a bug here must not end the watch silently
                log.exception("interruption watch: unexpected error; looking again in %gs",
                              self._poll_s)
            if self.interruption is not None or self._stopped.wait(self._poll_s):
                return

    def poll_once(self) -> None:
        """One look: act on a new interruption notice (drain, in this thread) or a new rebalance
        recommendation (no new claims)."""
        if self.interruption is not None:
            return
        try:
            action = self._read(INSTANCE_ACTION_PATH)
            rebalance = None if action is not None or self.rebalance is not None \
                else self._read(REBALANCE_PATH)
        except ImdsError as exc:
            if not self._unreachable:
                log.warning("interruption watch: instance metadata did not answer (%s); "
                            "looking again every %gs", exc, self._poll_s)
            self._unreachable = True
            return
        if self._unreachable:
            log.info("interruption watch: instance metadata answers again")
            self._unreachable = False
        if action is not None:
            notice = parse_instance_action(action, seen_at=self._clock())
            with self._lock:
                self.interruption = notice
            self._drain.drain(notice)
            with self._lock:
                self._drained = True
            return
        if rebalance is not None:
            self.rebalance = parse_rebalance(rebalance, seen_at=self._clock())
            self._drain.stop_new_claims(self.rebalance)


def interruption_watch(imds_url: str, config_dir: Path, env: dict[str, str], *,
                       poll_s: float = POLL_S,
                       master_pid: Callable[[], int | None]) -> InterruptionWatch | None:
    """The node's :class:`InterruptionWatch` (not started), or None when ``poll_s`` is 0.

    Args:
        imds_url: the metadata service.
        config_dir: HTCondor's config dir.
        env: the master's environment (with ``CONDOR_CONFIG``), for HTCondor's tools.
        poll_s: seconds between looks; 0 or less: no watch.
        master_pid: the running master's pid, or None (the reconfig fallback signals it).
    """
    if poll_s <= 0:
        return None
    # Its own client (the master's watch uses another from the main thread); a short budget
    # per look: a hung metadata service only delays the next look.
    imds = ImdsClient(imds_url, deadline_s=min(poll_s, 5.0), max_attempts=2)

    def signal_master(signum: int) -> bool:
        pid = master_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, signum)
        except OSError as exc:
            log.warning("cannot signal condor_master (pid %d): %s", pid, exc)
            return False
        return True

    holder: list[InterruptionWatch] = []
    drain = NodeDrain(config_dir, subprocess_runner(env), signal_master=signal_master,
                      wait=lambda seconds: holder[0].wait(seconds))
    watch = InterruptionWatch(functools.partial(imds.get_text, optional=True), drain,
                              poll_s=poll_s)
    holder.append(watch)
    return watch
