"""What ends a running node: the ``htcondor:AnnexOff`` tag, the lease (the backstop), and a spot
interruption (:mod:`condor_annex.agent.interruption_watch`, once the node is drained).

While condor_master runs, the agent asks a :class:`NodeWatch` when to look next and whether to
stop. It looks at the instance tags every ``poll_s`` seconds (``htcondor:AnnexOff``, set by
``condor_annex off``, and ``htcondor:LeaseEnd``, rewritten by ``extend``), and wakes at the
backstop's due time too, so the lease end + margin is acted on within a second even when IMDS
never answers.

Standard library only (the agent runs on the instance's python3.9+).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

from condor_annex.agent.backstop import LeaseBackstop
from condor_annex.agent.imds import ImdsClient, ImdsError

log = logging.getLogger(__name__)

#: Same value as condor_annex.model.TAG_ANNEX_OFF (not imported: the agent stands alone).
TAG_ANNEX_OFF = "htcondor:AnnexOff"
#: Shortest wait between two checks, seconds (no busy loop around the due time).
MIN_WAIT_S = 0.05
#: Longest wait between two asks of ``leave_reason``, seconds (a drained node leaves at once).
LEAVE_TICK_S = 1.0


def off_requested(imds: ImdsClient) -> bool:
    """True once the instance carries the tag ``htcondor:AnnexOff`` (IMDS
    ``meta-data/tags/instance/htcondor:AnnexOff``); an unreachable IMDS counts as not yet."""
    try:
        return imds.tag(TAG_ANNEX_OFF) is not None
    except ImdsError as exc:
        log.debug("could not look for tag %s: %s", TAG_ANNEX_OFF, exc)
        return False


@dataclass(frozen=True)
class StopOrder:
    """Stop the master: ``reason`` is the one line logged; ``bounded`` means the master gets a
    bounded time to stop gracefully (the lease is over) instead of as long as it needs."""

    reason: str
    bounded: bool


class NodeWatch:
    """Decides when the master must stop.

    Args:
        off_requested: True once the instance carries ``htcondor:AnnexOff`` (None: not asked).
        backstop: the lease backstop (None: off).
        poll_s: seconds between looks at the instance tags; 0 never looks (the backstop then
            works from the bundle alone).
        monotonic: the clock of the poll schedule (seconds).
        refresh_bundle: fetches and installs the annex's bundle again; called when the tag
            ``htcondor:LeaseEnd`` moves past the installed bundle's lease end (``extend``
            uploaded a bundle whose token lives until the new end).  It may raise; it is then
            called again at the next poll.
        leave_reason: a spot interruption's order to leave, one line, or None (asked at least
            every :data:`LEAVE_TICK_S` seconds; None: not asked).
    """

    def __init__(self, *, off_requested: Optional[Callable[[], bool]],
                 backstop: Optional[LeaseBackstop], poll_s: float,
                 monotonic: Callable[[], float] = time.monotonic,
                 refresh_bundle: Optional[Callable[[], None]] = None,
                 leave_reason: Optional[Callable[[], Optional[str]]] = None) -> None:
        self._refresh_bundle = refresh_bundle
        self._leave_reason = leave_reason
        self._leave_ordered = False
        self._off_requested = off_requested if poll_s > 0 else None
        self._backstop = backstop
        self._poll_s = poll_s
        self._monotonic = monotonic
        self._next_poll = monotonic() + poll_s
        self._off_ordered = False
        self._lease_ordered = False
        #: The reason of the last order (for the power-off log line), or None.
        self.reason: Optional[str] = None

    def wait_s(self) -> Optional[float]:
        """Seconds until :meth:`check` should next be called; None: never (nothing to watch)."""
        waits = []
        if self._poll_s > 0 and not (self._off_ordered and self._lease_ordered):
            waits.append(self._next_poll - self._monotonic())
        if self._backstop is not None and not self._lease_ordered:
            left = self._backstop.seconds_until_due()
            if left is not None:
                waits.append(left)
        if self._leave_reason is not None and not self._leave_ordered:
            waits.append(LEAVE_TICK_S)
        return max(MIN_WAIT_S, min(waits)) if waits else None

    def check(self) -> Optional[StopOrder]:
        """A new stop order, or None. Each kind of order is given once.

        The backstop is judged first from what is already known (no IMDS call), then the tags
        are polled when their time has come.
        """
        order = self._lease_order() or self._leave_order()
        if order is not None:
            return order
        now = self._monotonic()
        if self._poll_s <= 0 or now < self._next_poll:
            if self._backstop is not None:
                self._backstop.poll(tag=False)
                return self._lease_order()
            return None
        self._next_poll = now + self._poll_s
        if self._off_requested is not None and not self._off_ordered and self._off_requested():
            self._off_ordered = True
            self.reason = f"instance tag {TAG_ANNEX_OFF} set (condor_annex off)"
            return StopOrder(f"{self.reason}: shutting condor_master down gracefully", False)
        if self._backstop is not None:
            self._backstop.poll(tag=True)
            self._maybe_refresh()
        return self._lease_order()

    def _maybe_refresh(self) -> None:
        """Install the extended bundle (its new token) once the tag says the lease moved."""
        b = self._backstop
        if self._refresh_bundle is None or b is None or b.tag_end is None \
                or (b.bundle_end is not None and b.tag_end <= b.bundle_end):
            return
        try:
            self._refresh_bundle()
        except Exception as exc:  # noqa: BLE001 - S3 or IMDS down: try again next poll
            log.warning("lease extended to %d but the bundle could not be fetched again "
                        "(%s); retrying", b.tag_end, exc)
            return
        b.poll(tag=False)
        log.info("lease extended to %d: installed the annex's bundle again (new token)",
                 b.tag_end)

    def _leave_order(self) -> Optional[StopOrder]:
        """A spot interruption's bounded stop order, once."""
        if self._leave_reason is None or self._leave_ordered:
            return None
        reason = self._leave_reason()
        if reason is None:
            return None
        self._leave_ordered = True
        self.reason = reason
        return StopOrder(reason, True)

    def _lease_order(self) -> Optional[StopOrder]:
        if self._backstop is None or self._lease_ordered:
            return None
        reason = self._backstop.due_reason()
        if reason is None:
            return None
        self._lease_ordered = True
        self.reason = reason
        return StopOrder(reason, True)
