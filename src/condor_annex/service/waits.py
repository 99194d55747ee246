"""Waits after a command: until an annex's instances have joined the pool (``--wait``,
:func:`wait_for_join`), or until none is alive any more (:func:`wait_for_end`).  Each polls the
collector and EC2 DescribeInstances; neither changes anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from condor_annex.errors import AnnexError, PoolError
from condor_annex.model import CloudInstance
from condor_annex.pool.collector import SlotAd, annex_slots
from condor_annex.reconciler.annex_status import join_status
from condor_annex.service.common import outputs_or_none
from condor_annex.service.context import Context

log = logging.getLogger(__name__)


def wait_for_join(ctx: Context, name: str, count: int, *, timeout_s: float,
                  progress: Callable[[int, int], None] | None = None,
                  poll_s: float | None = None, cloud_poll_s: float = 2.0) -> int:
    """Wait until ``count`` instances of the annex have slots in the collector.

    The collector (local, cheap) is asked every ``poll_s`` seconds; the cloud (one paginated
    DescribeInstances) every ``cloud_poll_s`` seconds, to ignore stale ads of ended instances
    and to notice when every instance ended before joining.

    Args:
        progress: called with (joined, count) after each poll.
        poll_s: seconds between collector queries; by default 0.1 s at first, growing by 0.01 s
            per second waited up to 1 s (a join is noticed within 0.1 s early on, and a long
            wait does not query the collector ten times a second).
        cloud_poll_s: seconds between DescribeInstances calls.

    Returns:
        instances joined (``count`` on success).

    Raises:
        AnnexError: the timeout passed first, or every instance ended before joining.
        ProviderError: DescribeInstances failed.
    """
    started = time.monotonic()
    provider = ctx.provider(outputs_or_none(ctx))
    instances: dict[str, CloudInstance] = {}
    next_cloud = started
    while True:
        now = time.monotonic()
        if now >= next_cloud:
            instances = provider.query_instances(name, include_terminated=True)
            next_cloud = now + cloud_poll_s
        slots: list[SlotAd] = []
        if ctx.collector:
            try:
                slots = annex_slots(ctx.collector, name)
            except PoolError as e:
                log.debug("annex %s: collector not answering yet: %s", name, e)
        st = join_status(instances, slots, name)
        if progress:
            progress(st.joined, count)
        if st.joined >= count:
            return st.joined
        if st.requested and not st.running:
            raise AnnexError(f"annex '{name}': every instance ended before joining "
                             f"({st.joined}/{count} joined)")
        waited = time.monotonic() - started
        if waited > timeout_s:
            raise AnnexError(f"annex '{name}': {st.joined}/{count} joined after "
                             f"{timeout_s:.0f} s")
        time.sleep(poll_s if poll_s is not None else min(1.0, 0.1 + waited / 100))


def wait_for_end(ctx: Context, name: str, *, timeout_s: float,
                 progress: Callable[[int], None] | None = None, poll_s: float = 2.0) -> None:
    """Wait until no instance of the annex is pending or running.

    Raises:
        AnnexError: the timeout passed first.
    """
    deadline = time.monotonic() + timeout_s
    provider = ctx.provider(outputs_or_none(ctx))
    while True:
        alive = [i for i in provider.query_instances(name).values()
                 if i.state in ("pending", "running", "shutting-down")]
        if progress:
            progress(len(alive))
        if not alive:
            return
        if time.monotonic() > deadline:
            raise AnnexError(f"annex '{name}': {len(alive)} instances still alive after "
                             f"{timeout_s:.0f} s")
        time.sleep(poll_s)
