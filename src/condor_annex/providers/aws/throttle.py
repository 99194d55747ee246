"""Throttle discipline: one client-side token bucket per account and region, shared by every
EC2 client this process makes, and a process-wide count of throttled calls.

What AWS does (Amazon EC2 developer guide, "Request throttling for the Amazon EC2 API",
docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html): EC2 throttles each account per
region with token buckets.  A request takes one token; a bucket refills at a fixed rate up to its
maximum capacity; a request finding its bucket empty is refused with ``RequestLimitExceeded``.
The page's table ("Request token bucket sizes and refill rates"), capacity / refill per second:

* non-mutating actions (``Describe*``, ``List*``, ``Search*``, ``Get*``): 100 / 20;
* unfiltered and unpaginated non-mutating actions (``DescribeInstances``, ``DescribeVolumes``,
  ... called without a filter or pagination): 50 / 10;
* mutating actions (everything else): 50 / 5;
* resource-intensive actions (``CreateKeyPair``, ``AuthorizeSecurityGroupIngress``...): 50 / 5;

and some actions have their own bucket ("uncategorized actions"), among those we call
``DescribeSpotFleetRequests`` 50 / 3, ``DescribeSpotFleetInstances`` 100 / 5, ``CopyImage``
100 / 1.  (``RunInstances`` and ``TerminateInstances`` also draw on *resource* buckets, per
instance: 1000 / 2 and 1000 / 20; not modelled here: an annex launches far fewer, and a refused
launch is retried by :mod:`.launch_retry`.)

What this module does:

* **Pacing** (before each EC2 request is sent, retries included): the request takes a token from
  its bucket — ``describe`` for ``Describe*``/``List*``/``Search*``/``Get*``, ``mutate`` for the
  rest, or the action's own bucket for the uncategorized actions above — and waits when the
  bucket is empty.  Defaults are conservative: the *smallest* bucket of each category
  (describe 50 / 10, mutate 50 / 5), and ours is shared by every action of a category where AWS
  gives each action its own, so we never send faster than any one of AWS's buckets allows.  The
  knobs ``ANNEX_EC2_DESCRIBE_BUCKET`` and ``ANNEX_EC2_MUTATE_BUCKET`` (``CAPACITY REFILL``, e.g.
  ``100 20``; an account whose limits AWS raised) change the two category buckets.
* **Sharing**: buckets are keyed by (endpoint, account, region) and live in this module, so
  every client — every annex, every reconciler pass of the daemon, every thread — draws on the
  same ones.  The account is known by the access key id that signs the requests (a key belongs
  to one account; this costs no STS call).
* **Backoff**: left to botocore's ``standard`` retry mode (session.py): a throttled attempt is
  retried after ``rand(0, 1) * min(2 ** attempt, 20)`` seconds (truncated exponential backoff
  with full jitter, the AWS SDKs' common retry behaviour).  A well-kept library beats our own.
  On a throttling answer the bucket is also emptied, so the *other* clients of that account and
  region pause for a refill too instead of spending the retry budget of their own calls.
* **Counting**: every attempt AWS refused for throttling (any service; botocore's own
  ``ThrottlingErrorDetector`` decides, so the count agrees with what botocore backs off) adds
  one to :func:`throttled_calls`, which the daemon puts in its collector ad.

Why not botocore's ``adaptive`` retry mode: it adds a client-side rate limiter, but
``botocore.retries.adaptive.register_retry_handler`` builds a new one (a new TokenBucket) inside
each client, with no public way to share it: sharing would mean unregistering botocore's handlers
and registering one limiter's methods on every client, i.e. depending on botocore internals.
Its limiter is also off until a first throttling answer and then *learns* a rate (CUBIC), while
clients here live for one use (session.py): each new client would rediscover the limit by being
refused (measured earlier: about 1 s more per throttled call).  A proactive bucket at the
documented rate, shared by all clients, avoids the refusals in the first place.

Other services (S3, IAM, STS, CloudFormation, Scheduler, Lambda) have no bucket here: their
limits are not documented as token buckets like EC2's, and the product's load on them is small;
their throttling answers are backed off by botocore and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from condor_annex.errors import BadInputError

log = logging.getLogger(__name__)

#: (capacity in tokens, refill in tokens per second) of the category buckets, by default.
DESCRIBE_BUCKET = (50.0, 10.0)
MUTATE_BUCKET = (50.0, 5.0)
#: EC2 actions we call that have a bucket of their own ("uncategorized actions" on the page).
OWN_BUCKETS: dict[str, tuple[float, float]] = {
    "DescribeSpotFleetRequests": (50.0, 3.0),
    "DescribeSpotFleetInstances": (100.0, 5.0),
    "CopyImage": (100.0, 1.0),
}
#: Prefixes of EC2's non-mutating actions (the page's "non-mutating actions").
_NON_MUTATING = ("Describe", "List", "Search", "Get")
#: Keep at most this many buckets before dropping full ones (a full bucket is a new bucket).
_MAX_IDLE_BUCKETS = 64


def bucket_name(operation: str) -> str:
    """The bucket an EC2 action draws on: the action's own name for :data:`OWN_BUCKETS`,
    ``"describe"`` for ``Describe*``/``List*``/``Search*``/``Get*``, else ``"mutate"``."""
    if operation in OWN_BUCKETS:
        return operation
    return "describe" if operation.startswith(_NON_MUTATING) else "mutate"


def parse_bucket(text: str, knob: str, default: tuple[float, float]) -> tuple[float, float]:
    """Parse a bucket knob, ``CAPACITY REFILL`` (tokens, tokens per second), e.g. ``"50 10"``.

    Args:
        text: the knob's value; empty means ``default``.
        knob: the knob's name, for the message.
        default: (capacity, refill per second) when ``text`` is empty.

    Returns:
        (capacity, refill per second).

    Raises:
        BadInputError: not two numbers, capacity below 1 or refill not above 0.
    """
    if not text.strip():
        return default
    parts = text.replace(",", " ").split()
    try:
        capacity, refill = (float(p) for p in parts) if len(parts) == 2 else (0.0, 0.0)
    except ValueError:
        capacity, refill = 0.0, 0.0
    if not (1 <= capacity < 1e9 and 0 < refill < 1e9):
        raise BadInputError(
            f"{knob}: {text.strip()!r} must be CAPACITY REFILL (tokens, tokens per second; "
            f"capacity >= 1, refill > 0), e.g. {knob} = {default[0]:g} {default[1]:g}")
    return capacity, refill


class TokenBucket:
    """A token bucket that lends: a caller takes a token at once and is told how long to wait.

    Tokens may go negative (callers queue up, each waiting for its own token to refill), so
    callers of one bucket are served in the order they asked, whatever thread they run in.

    Args:
        capacity: maximum tokens (the burst), >= 1.
        refill_per_s: tokens added per second, > 0.
        clock: monotonic seconds.
    """

    def __init__(self, capacity: float, refill_per_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.capacity = capacity
        self.refill_per_s = refill_per_s
        self._tokens = capacity
        self._at = clock()
        #: Tokens taken so far (one per request sent).
        self.taken = 0

    def _refill(self) -> None:   # under self._lock
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.refill_per_s)
        self._at = now

    def take(self) -> float:
        """Take one token.

        Returns:
            Seconds to wait before sending (0 when a token was there).
        """
        with self._lock:
            self._refill()
            self._tokens -= 1
            self.taken += 1
            return max(0.0, -self._tokens / self.refill_per_s)

    def drain(self) -> None:
        """Empty the bucket (AWS refused a request: the account's own bucket is empty)."""
        with self._lock:
            self._refill()
            self._tokens = min(self._tokens, 0.0)

    def resize(self, capacity: float, refill_per_s: float) -> None:
        """Change capacity and refill rate (what the knobs say now), keeping the tokens."""
        with self._lock:
            if (capacity, refill_per_s) != (self.capacity, self.refill_per_s):
                self._refill()
                self.capacity, self.refill_per_s = capacity, refill_per_s
                self._tokens = min(self._tokens, capacity)

    def full(self) -> bool:
        """Whether the bucket holds its capacity (as good as a new bucket)."""
        with self._lock:
            self._refill()
            return self._tokens >= self.capacity

    @property
    def tokens(self) -> float:
        """Tokens now (negative: that many callers are waiting)."""
        with self._lock:
            self._refill()
            return self._tokens


_lock = threading.Lock()
_buckets: dict[tuple[str, str, str, str], TokenBucket] = {}
_throttled = 0
_clock: Callable[[], float] = time.monotonic
_sleep: Callable[[float], None] = time.sleep


def throttled_calls() -> int:
    """How many AWS requests of this process were refused for throttling so far (every
    attempt counted, whatever the service: ``RequestLimitExceeded``, ``Throttling``,
    ``ThrottlingException``, ``SlowDown``...).  Thread-safe; never decreases."""
    with _lock:
        return _throttled


def bucket(endpoint: str, account: str, region: str, name: str,
           size: tuple[float, float] | None = None) -> TokenBucket:
    """The shared bucket ``name`` (see :func:`bucket_name`) of one account and region, made on
    first use.

    Args:
        endpoint: the endpoint URL, ``""`` for AWS itself.
        account: the access key id that signs the requests (``""``: unknown).
        region: e.g. ``"us-east-1"``.
        name: ``"describe"``, ``"mutate"`` or an action of :data:`OWN_BUCKETS`.
        size: (capacity, refill per second) it must have now; None: keep it (or the default).
    """
    key = (endpoint, account, region, name)
    with _lock:
        found = _buckets.get(key)
        if found is None:
            if len(_buckets) >= _MAX_IDLE_BUCKETS:   # e.g. rotated role credentials
                for k in [k for k, b in _buckets.items() if b.full()]:
                    del _buckets[k]
            first = size or OWN_BUCKETS.get(name) or (DESCRIBE_BUCKET if name == "describe"
                                                      else MUTATE_BUCKET)
            found = _buckets[key] = TokenBucket(*first, clock=_clock)
            return found
    if size is not None:
        found.resize(*size)
    return found


def pace(client: Any, *, endpoint: str, account: str, region: str,
         describe: tuple[float, float] = DESCRIBE_BUCKET,
         mutate: tuple[float, float] = MUTATE_BUCKET) -> None:
    """Make ``client`` (any boto3 client) count its throttled attempts and, for EC2, take a
    token of the shared bucket before each attempt (waiting when it is empty) and empty the
    bucket when AWS answers that it is throttling.

    Args:
        client: a botocore client.
        endpoint: the endpoint URL, ``""`` for AWS.
        account: the access key id signing its requests (``""`` when unknown).
        region: its region.
        describe: (capacity, refill per second) of the ``describe`` bucket.
        mutate: (capacity, refill per second) of the ``mutate`` bucket.
    """
    from botocore.retries.standard import RetryEventAdapter, ThrottlingErrorDetector

    is_ec2 = client.meta.service_model.service_name == "ec2"
    detector = ThrottlingErrorDetector(RetryEventAdapter())
    sizes = {"describe": describe, "mutate": mutate}

    def bucket_of(operation: str) -> TokenBucket:
        name = bucket_name(operation)
        return bucket(endpoint, account, region, name, sizes.get(name))

    def before_send(event_name: str = "", **_: Any) -> None:
        wait = bucket_of(event_name.rsplit(".", 1)[-1]).take()
        if wait > 0:
            log.debug("paced %s: %.2f s", event_name, wait)
            _sleep(wait)
        # None: botocore sends the request (a value here would stand for the reply).

    def needs_retry(event_name: str = "", **kwargs: Any) -> None:
        global _throttled
        if kwargs.get("response") is None or not detector.is_throttling_error(**kwargs):
            return
        with _lock:
            _throttled += 1
        log.debug("throttled: %s", event_name)
        if is_ec2:
            bucket_of(event_name.rsplit(".", 1)[-1]).drain()
        # None: botocore's own retry handler decides whether and when to retry.

    if is_ec2:
        client.meta.events.register("before-send.ec2", before_send)
    client.meta.events.register("needs-retry", needs_retry)


def use_clock(clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
    """Make new buckets follow ``clock`` and waits go through ``sleep`` (tests: a fake clock
    that advances when ``sleep`` is called makes pacing deterministic).  Forgets the buckets."""
    global _clock, _sleep
    with _lock:
        _clock, _sleep = clock, sleep
        _buckets.clear()


def forget() -> None:
    """Forget every bucket and go back to the real clock (tests, between cases); the count of
    throttled calls is kept (it never decreases)."""
    use_clock(time.monotonic, time.sleep)
