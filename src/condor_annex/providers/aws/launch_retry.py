"""Safe retries of a launch request (RunInstances, CreateFleet, RequestSpotFleet).

A launch carries a client token, so AWS treats a resend with the same token as the same request
("Ensuring idempotency in Amazon EC2 API requests",
docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html).  Still, before every resend
we look for what the earlier attempts may have made, by the request's own tag
``htcondor:LaunchToken`` (one call; it also holds where a token would not, e.g. after the token's
memory expired), and resend only when that finds nothing.

What is retried (SkyPilot's split: capacity fails over at once, the server's own trouble is
waited out):

* throttling (``RequestLimitExceeded``, ...) and 5xx answers, and a lost reply (connection
  closed, read timeout): the request may or may not have run;
* the IAM instance-profile propagation error that follows ``setup`` ("Invalid IAM Instance
  Profile", IAM's eventual consistency: docs.aws.amazon.com/IAM/latest/UserGuide/
  troubleshoot_general.html#troubleshoot_general_eventual-consistency).

Delays are exponential with full jitter (AWS Architecture Blog, "Exponential Backoff And
Jitter"), bounded per attempt and in total (monotonic clock).  Every failure that might have
launched something marks the final error ``ambiguous``, so a rollback knows to look again.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from condor_annex.errors import InvalidRequestError, ProviderError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: First delay (seconds) and the cap of any one delay.
BASE_DELAY_S = 0.5
MAX_DELAY_S = 8.0
#: Total time (seconds) a launch keeps retrying before it gives up.
TOTAL_S = 120.0


def is_profile_propagation(error: ProviderError) -> bool:
    """True for EC2's answer to an instance profile IAM has not propagated yet
    (``InvalidParameterValue``: "Invalid IAM Instance Profile ...")."""
    return isinstance(error, InvalidRequestError) and \
        "iam instance profile" in str(error).lower()


def is_retryable(error: ProviderError) -> bool:
    """The retry predicate: throttling, 5xx and lost replies (``error.retryable``), and the
    instance-profile propagation race.  Capacity, quota, auth and parameter errors are not
    retried: they do not heal by waiting."""
    return error.retryable or is_profile_propagation(error)


def may_have_run(error: ProviderError) -> bool:
    """True when the failed call may still have run on the server: a 5xx or a lost reply.
    A throttled call, and any 4xx answer, did not run."""
    from condor_annex.errors import ThrottledError
    return error.retryable and not isinstance(error, ThrottledError)


def launch_with_retries(send: Callable[[], T], find: Callable[[], T | None], *, what: str,
                        total_s: float | None = None,
                        notify: Callable[[str], None] | None = None,
                        sleep: Callable[[float], None] = time.sleep,
                        clock: Callable[[], float] = time.monotonic,
                        rng: random.Random | None = None) -> T:
    """Send a launch until it succeeds, looking for its result by tag before each resend.

    Args:
        send: makes the launch call once (same client token every time); returns its result.
        find: looks up what the request made, by its ``htcondor:LaunchToken`` tag; returns a
            result when something exists, else None.  Its own errors are treated as "nothing
            found" for this round (a lookup is retried with the next attempt).
        what: names the call in messages, e.g. ``"ec2.RunInstances"``.
        total_s: give up after this many seconds (monotonic); default :data:`TOTAL_S`.
        notify: called with one line per retry, e.g. for a progress line.
        sleep, clock, rng: injectable for tests.

    Returns:
        What ``send`` (or, after a lost reply, ``find``) returned.

    Raises:
        ProviderError: the last error, when it is not retryable or time ran out; its
            ``ambiguous`` attribute is True when any attempt may have launched something.
    """
    rng = rng or random.Random()
    deadline = clock() + (TOTAL_S if total_s is None else total_s)
    attempt = 0
    ambiguous = False
    while True:
        attempt += 1
        try:
            return send()
        except ProviderError as e:
            ambiguous = ambiguous or may_have_run(e)
            if not is_retryable(e):
                e.ambiguous = ambiguous
                raise
            delay = rng.uniform(0, min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (attempt - 1)))
            if clock() + delay > deadline:
                e.ambiguous = ambiguous
                raise
            if ambiguous:
                try:
                    found = find()
                except ProviderError as lookup:
                    log.info("%s: lookup before resend failed: %s", what, lookup)
                    found = None
                if found is not None:
                    log.info("%s: attempt %d lost its reply, but its launch is there", what,
                             attempt)
                    return found
            why = " (the new instance profile is not visible to EC2 yet)" \
                if is_profile_propagation(e) else ""
            message = (f"{what}: {e.code or 'error'}{why}; retrying in {delay:.1f} s "
                       f"(attempt {attempt + 1}, same client token)")
            log.info("%s", message)
            if notify:
                notify(message)
            sleep(delay)
