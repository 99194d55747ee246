"""Leaving the end of an interrupted spot instance to EC2.

After a spot interruption notice the node drains and its master exits before EC2's time
(:data:`condor_annex.agent.node_drain.LEAVE_BEFORE_S`).  The agent then does not power the
instance off at once: EC2 ends it at the notice's time, and DescribeInstances then gives it the
``StateReason`` ``Server.SpotInstanceTermination`` ("StateReason", Amazon EC2 API Reference).
That reason is the durable record annexd reads to count the interruption and replace the
capacity; an instance that powered itself off would say ``Client.InstanceInitiatedShutdown``,
and the interruption would be known only from the node's last startd ad, which lives seconds.

The wait is bounded: at the notice's time + :data:`ACT_GRACE_S` the agent powers off by itself,
so a notice EC2 does not act on never leaves a node running.  HTCondor is gone by then: the
instance does no work and takes no job while it waits (at most the notice's two minutes).

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from condor_annex.agent.notices import InterruptionNotice, utc

log = logging.getLogger(__name__)

#: Seconds after the notice's time before the agent powers off by itself.
ACT_GRACE_S = 60.0


def wait_for_ec2(notice: InterruptionNotice, *, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 grace_s: float | None = None) -> float:
    """Wait for EC2 to end the instance: until ``notice.at + grace_s`` (epoch seconds).

    Args:
        notice: the interruption notice the node drained for.
        clock: wall clock, epoch seconds.
        sleep: sleeps that many seconds (EC2 ending the instance ends the process during it).
        grace_s: seconds past the notice's time to wait, >= 0 (default :data:`ACT_GRACE_S`).

    Returns:
        The seconds waited (0 when the time is already past).
    """
    until = notice.at + (ACT_GRACE_S if grace_s is None else grace_s)
    wait_s = max(0.0, until - clock())
    if wait_s <= 0:
        return 0.0
    log.info("spot interruption: leaving the instance's end to EC2 (%s at %s), so its state "
             "reason records the interruption; powering off by itself at %s if EC2 has not "
             "acted (in %.0fs)", notice.action, utc(notice.at), utc(until), wait_s)
    sleep(wait_s)
    return wait_s
