"""What the node does when EC2 warns it: take no new claims; drain and leave within the notice.

On a *rebalance recommendation* (:class:`~condor_annex.agent.notices.RebalanceNotice`) the
startd stops taking new claims and running jobs keep running: the agent writes
``config.d/90-annex-interruption.config`` with ``START = False`` and reconfigures the startd.

On an *interruption notice* (:class:`~condor_annex.agent.notices.InterruptionNotice`) the node
drains within the notice, in this order (HTCondor Administrator's Manual: "Configuration
Macros", condor_startd section; the condor_vacate and condor_off manual pages):

1. the same file, now also with ``MAXJOBRETIREMENTTIME = 0`` (no retirement: there is no time
   for it), ``MachineMaxVacateTime`` = the vacate window (a job gets that long after its
   soft-kill signal to write its checkpoint and exit, then it is hard-killed),
   ``WANT_SUSPEND = False``, ``WANT_VACATE = True``, ``PREEMPT = True`` (the startd itself
   vacates every job at its next evaluation even if a command below is refused), and
   ``AnnexInterruption = True``, ``AnnexInterruptionTime = <EC2's time, epoch seconds>`` added
   to ``STARTD_ATTRS``, so the collector's slot ads say why the slots are going;
2. ``condor_reconfig -daemon startd`` (when the tool fails, e.g. the annex's token is not an
   administrator of the node, SIGHUP to the master, which DaemonCore takes as a reconfig and
   passes on to the startd);
3. ``condor_vacate -graceful``: every job gets its soft-kill signal now and goes back to the
   queue, idle, once it exits (a job that checkpoints on that signal, or whose output is
   transferred on eviction, keeps its checkpoint); the vacate window is
   ``min(VACATE_S, time until leave_by - 5 s)``;
4. after the vacate window, ``condor_off -fast -daemon startd``: whatever is left is
   hard-killed, and the startd withdraws its ads: the slots leave the collector;
5. then the master is ordered to stop (:class:`~condor_annex.agent.watch.NodeWatch`, bounded,
   SIGTERM then SIGQUIT) no later than :data:`LEAVE_BEFORE_S` seconds before EC2's time, and
   the power-off follows.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path

from condor_annex.agent.condor_commands import Runner
from condor_annex.agent.files import write_config
from condor_annex.agent.notices import InterruptionNotice, RebalanceNotice, utc

log = logging.getLogger(__name__)

#: The file, relative to the config dir (90: read after the bundle's 50-annex.config, so its
#: START wins).
INTERRUPTION_CONFIG = "config.d/90-annex-interruption.config"
#: The master is told to stop no later than this many seconds before EC2 acts: the bounded stop
#: (15 s graceful, 10 s fast) then ends before EC2 does, with room to spare.
LEAVE_BEFORE_S = 45.0
#: Longest vacate window, seconds: what a job gets to checkpoint and exit.
VACATE_S = 30.0
#: Seconds kept between the end of the vacate window and ``leave_by``.
VACATE_MARGIN_S = 5.0

#: Sends a signal to condor_master; False when there is no master to signal.
SignalMaster = Callable[[int], bool]


def leave_by(notice: InterruptionNotice) -> float:
    """When the master must be told to stop at the latest, epoch seconds: EC2's time minus
    :data:`LEAVE_BEFORE_S`."""
    return notice.at - LEAVE_BEFORE_S


def vacate_window_s(notice: InterruptionNotice, now: float) -> float:
    """Seconds jobs get to vacate: :data:`VACATE_S`, less when the notice leaves less time
    (``leave_by - VACATE_MARGIN_S - now``), never negative."""
    return max(0.0, min(VACATE_S, leave_by(notice) - VACATE_MARGIN_S - now))


def interruption_config(notice: InterruptionNotice, vacate_s: float) -> str:
    """The text of :data:`INTERRUPTION_CONFIG` during a drain (see the module's step 1)."""
    return (
        f"# Written by condor_annex.agent: EC2 will {notice.action} this spot instance at "
        f"{utc(notice.at)}; draining.\n"
        "START = False\n"
        "MAXJOBRETIREMENTTIME = 0\n"
        f"MachineMaxVacateTime = {int(vacate_s)}\n"
        "WANT_SUSPEND = False\n"
        "WANT_VACATE = True\n"
        "PREEMPT = True\n"
        "AnnexInterruption = True\n"
        f"AnnexInterruptionTime = {int(notice.at)}\n"
        "STARTD_ATTRS = $(STARTD_ATTRS) AnnexInterruption AnnexInterruptionTime\n"
    )


def rebalance_config(notice: RebalanceNotice) -> str:
    """The text of :data:`INTERRUPTION_CONFIG` after a rebalance recommendation."""
    return (f"# Written by condor_annex.agent: EC2 recommended a rebalance at {utc(notice.at)} "
            "(elevated risk of interruption); no new claims.\n"
            "START = False\n")


class NodeDrain:
    """Carries out the sequences of the module's docstring.

    Args:
        config_dir: HTCondor's config dir (``config.d/`` inside it exists).
        runner: runs one HTCondor command (the test seam).
        signal_master: signals condor_master (the reconfig fallback); None: no fallback.
        clock: wall clock, epoch seconds.
        wait: waits that many seconds; True when the wait was cut short because the node is
            ending anyway (the drain then stops where it is).
    """

    def __init__(self, config_dir: Path, runner: Runner, *,
                 signal_master: SignalMaster | None = None,
                 clock: Callable[[], float] = time.time,
                 wait: Callable[[float], bool] | None = None) -> None:
        self._config_dir = config_dir
        self._run = runner
        self._signal_master = signal_master
        self._clock = clock
        self._wait = wait if wait is not None else _sleep

    def stop_new_claims(self, notice: RebalanceNotice) -> None:
        """``START = False`` and a reconfig: the startd takes no new claims, jobs run on."""
        self._write(rebalance_config(notice))
        how = self._reconfig()
        log.warning("EC2 rebalance recommendation (notice time %s): this node takes no new "
                    "jobs (START = False, %s); running jobs keep running", utc(notice.at), how)

    def drain(self, notice: InterruptionNotice) -> None:
        """Steps 1-4 of the module's docstring; returns once the startd was told to shut down
        (or at once when :meth:`wait` is cut short). Never raises for a failed command."""
        now = self._clock()
        vacate_s = vacate_window_s(notice, now)
        log.warning("EC2 spot interruption notice: %s at %s (in %.0f s)%s; draining: vacating "
                    "jobs back to the queue within %.0f s, advertising AnnexInterruption, "
                    "leaving the pool by %s", notice.action, utc(notice.at), notice.at - now,
                    "" if notice.exact else " (time unreadable: two minutes from now assumed)",
                    vacate_s, utc(leave_by(notice)))
        self._write(interruption_config(notice, vacate_s))
        how = self._reconfig()
        log.info("interruption: startd reconfigured (%s): no new claims, "
                 "AnnexInterruption = True, AnnexInterruptionTime = %d", how, int(notice.at))
        status = self._run(["condor_vacate", "-graceful"])
        log.info("interruption: %s; jobs have %.0f s to checkpoint and exit",
                 "condor_vacate -graceful sent" if status == 0
                 else "condor_vacate failed, the startd's PREEMPT vacates the jobs", vacate_s)
        if self._wait(vacate_s):
            return
        status = self._run(["condor_off", "-fast", "-daemon", "startd"])
        log.info("interruption: vacate window over; %s", "startd shut down fast (its slots "
                 "leave the collector)" if status == 0 else
                 "condor_off failed; the master's shutdown ends the startd")

    def _write(self, text: str) -> None:
        try:
            write_config(self._config_dir, INTERRUPTION_CONFIG, text)
        except Exception as exc:  # noqa: BLE001 - the drain goes on: vacate and leave anyway
            log.error("cannot write %s: %s", INTERRUPTION_CONFIG, exc)

    def _reconfig(self) -> str:
        """``condor_reconfig -daemon startd``, else SIGHUP to the master; says which worked."""
        if self._run(["condor_reconfig", "-daemon", "startd"]) == 0:
            return "condor_reconfig"
        if self._signal_master is not None and self._signal_master(signal.SIGHUP):
            return "condor_reconfig failed; SIGHUP sent to condor_master instead"
        return "condor_reconfig failed and no master to signal"


def _sleep(seconds: float) -> bool:
    time.sleep(seconds)
    return False
