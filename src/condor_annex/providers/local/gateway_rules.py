"""The AWS gateway's fault rules: AWS's transient failures, played on request.

Each rule is scoped by an operation pattern (``"ec2.RunInstances"``, ``"ec2.*"``, ``"*"``; see
:func:`.gateway_call.identify` for the names), may fire with a probability drawn from the
gateway's seeded :class:`random.Random`, and may be limited to its first N firings.  The rules
follow AWS:

* **throttle** — AWS refuses a request over the account's API rate, in each protocol's own
  format: EC2 ``RequestLimitExceeded`` (HTTP 503), query protocols (IAM, STS, CloudFormation)
  ``Throttling`` (400), JSON protocols ``ThrottlingException`` (400), S3 ``SlowDown`` (503),
  REST-JSON (Scheduler) ``ThrottlingException`` and Lambda ``TooManyRequestsException`` (429).
  https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html,
  https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html,
  https://docs.aws.amazon.com/scheduler/latest/APIReference/CommonErrors.html
* **server_error** — a 503 ``ServiceUnavailable`` or 500 ``InternalError`` (``InternalFailure``
  for query/JSON services), which AWS documents as transient and SDKs retry.
  https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
* **fail** — a fixed AWS error (``InsufficientInstanceCapacity``, ``InvalidParameterValue``
  "Invalid IAM Instance Profile name", ...) for the next N matching requests.
* **drop_reply** — the request reaches moto (its effect happens) but the reply is lost: the
  connection closes without an answer, as with a network failure after EC2 accepted a launch.
  This is why EC2 launches take a client token.
  https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html
* **delay** / **hold** — a slow network or a request stalled between two steps of a client
  (:meth:`FaultRules.hold` blocks matching requests until the test releases them).
* **listing lag** — EC2's eventual consistency (:mod:`.gateway_listing_lag`).

:class:`FaultRules` is the part of :class:`.gateway.Gateway` that keeps them; tests call its
methods on the gateway (``gateway.throttle("ec2.*", p=0.3)``).  Stdlib only.
"""

from __future__ import annotations

import fnmatch
import itertools
import random
import threading
from dataclasses import dataclass, field
from typing import TypeVar

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import (Reply, error_reply, server_error,
                                                          throttle_error)

__all__ = ["ANSWERING", "FaultRules", "Hold", "Plan", "Rule"]

_ids = itertools.count(1)

#: Rule kinds that answer in moto's place (the first that fires wins).
ANSWERING = ("throttle", "server_error", "fail")


@dataclass(eq=False)
class Rule:
    """One fault rule (made by :class:`FaultRules` methods; :meth:`remove` takes it away).

    Attributes:
        kind: ``throttle``, ``server_error``, ``fail``, ``drop_reply``, ``delay`` or ``hold``.
        operation: the pattern it matches (``fnmatch``, case-sensitive, on ``service.Operation``).
        p: the probability that it fires on a matching request (0..1).
        times: fire at most this many times (None: no limit); the rule is removed when spent.
        status, code, message: the error it answers (``fail``, ``server_error``).
        seconds: the delay (``delay``) or the silence before closing (``drop_reply``), seconds.
        fired: how many times it fired so far.
        after: matching requests still to let through before it fires (holds).
    """

    kind: str
    operation: str
    p: float = 1.0
    times: int | None = None
    status: int | None = None
    code: str | None = None
    message: str | None = None
    seconds: float = 0.0
    fired: int = 0
    id: int = field(default_factory=lambda: next(_ids))
    after: int = 0
    _gateway: FaultRules | None = field(default=None, repr=False)

    def remove(self) -> None:
        """Take this rule out of its gateway (no effect if it is already gone)."""
        if self._gateway is not None:
            self._gateway.remove(self)

    def describe(self) -> dict:
        """The rule as a JSON-ready dict."""
        return {k: v for k, v in {
            "id": self.id, "rule": self.kind, "operation": self.operation, "p": self.p,
            "times": self.times, "status": self.status, "code": self.code,
            "message": self.message, "seconds": self.seconds or None, "fired": self.fired,
            "held": getattr(self, "held", None)}.items() if v is not None}


class Hold(Rule):
    """A rule that blocks matching requests (before they reach moto) until :meth:`release`.

    Usable as a context manager (released on exit).
    """

    def __init__(self, operation: str, *, times: int | None, max_s: float,
                 after: int = 0) -> None:
        super().__init__("hold", operation, times=times, seconds=max_s)
        #: Matching requests still to let through before holding (``Gateway.hold(after=)``).
        self.after = after
        self._cond = threading.Condition()
        self._released = threading.Event()
        #: Requests held so far (including those already let go).
        self.held = 0

    def wait_held(self, timeout: float = 10.0, count: int = 1) -> None:
        """Wait until ``count`` matching requests have been held.

        Args:
            timeout: seconds (real time) to wait at most.
            count: how many held requests to wait for.

        Raises:
            TimeoutError: fewer were held within ``timeout``.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self.held >= count, timeout):
                raise TimeoutError(f"{self.held} of {count} {self.operation} request(s) held "
                                   f"after {timeout} s")

    def release(self) -> None:
        """Let every held request go on to moto, and hold no more."""
        self._released.set()
        self.remove()

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called (or the gateway cleared or stopped)."""
        return self._released.is_set()

    def _block(self) -> None:
        with self._cond:
            self.held += 1
            self._cond.notify_all()
        self._released.wait(self.seconds)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

@dataclass
class Plan:
    """What the fault rules do to one request.

    Attributes:
        holds: the holds that block it first.
        delay_s: seconds (gateway clock) to wait before handling it.
        answer: the rule that answers it in moto's place (throttle, server_error, fail), or None.
        drop: the ``drop_reply`` rule whose reply is lost, or None.
    """

    holds: list[Hold]
    delay_s: float
    answer: Rule | None
    drop: Rule | None


RuleT = TypeVar("RuleT", bound=Rule)


class FaultRules:
    """The fault rules of a gateway, and the listing lag (see the module docstring).

    Args:
        seed: seed of the random draws of rules with ``p < 1`` (same seed, same requests in the
            same order: same outcomes).

    ``self._lock`` guards the rules and the lag; :class:`.gateway.Gateway` guards its own
    counters with it too.
    """

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._rules: list[Rule] = []
        self._lag_s = 0.0

    def throttle(self, operation: str = "*", p: float = 1.0, *,
                 times: int | None = None) -> Rule:
        """Answer matching requests as AWS does over its rate limit (see the module docstring).

        Args:
            operation: pattern of ``service.Operation`` names.
            p: probability per matching request.
            times: fire at most this many times (None: no limit).

        Returns:
            The :class:`Rule`.

        Raises:
            ValueError: a bad pattern or probability.
        """
        return self._add(Rule("throttle", operation, p, times))

    def server_error(self, operation: str = "*", p: float = 1.0, *, status: int = 503,
                     times: int | None = None) -> Rule:
        """Answer matching requests with a transient server error, without forwarding them.

        Args:
            operation: pattern of ``service.Operation`` names.
            p: probability per matching request.
            status: 503 (``ServiceUnavailable``) or 500 (``InternalError`` / ``InternalFailure``).
            times: fire at most this many times (None: no limit).

        Returns:
            The :class:`Rule`.

        Raises:
            ValueError: a bad pattern, probability or status.
        """
        if status not in (500, 503):
            raise ValueError(f"server_error status must be 500 or 503, not {status}")
        return self._add(Rule("server_error", operation, p, times, status=status))

    def fail(self, operation: str, code: str, message: str | None = None, *, status: int = 400,
             times: int | None = 1, p: float = 1.0) -> Rule:
        """Answer the next ``times`` matching requests with a fixed AWS error, not forwarding them.

        Args:
            operation: pattern of ``service.Operation`` names.
            code: the AWS error code (e.g. ``InsufficientInstanceCapacity``).
            message: the error message (default: the code).
            status: the HTTP status (400 for client errors; 500/503 for server errors).
            times: how many requests fail (None: all of them).
            p: probability per matching request.

        Returns:
            The :class:`Rule`.

        Raises:
            ValueError: a bad pattern or probability.
        """
        return self._add(Rule("fail", operation, p, times, status=status, code=code,
                              message=message if message is not None else code))

    def drop_reply(self, operation: str, p: float = 1.0, *, times: int | None = None,
                   hang_s: float = 0.0) -> Rule:
        """Forward matching requests to moto, then lose the reply: close the connection unanswered.

        Args:
            operation: pattern of ``service.Operation`` names.
            p: probability per matching request.
            times: fire at most this many times (None: no limit).
            hang_s: seconds (gateway clock) of silence before closing, so that a client whose
                read timeout is shorter sees a read timeout rather than a closed connection.

        Returns:
            The :class:`Rule`.

        Raises:
            ValueError: a bad pattern or probability.
        """
        return self._add(Rule("drop_reply", operation, p, times, seconds=hang_s))

    def delay(self, operation: str, seconds: float, *, p: float = 1.0,
              times: int | None = None) -> Rule:
        """Wait ``seconds`` (gateway clock) before handling matching requests.

        Args:
            operation: pattern of ``service.Operation`` names.
            seconds: the delay; several matching delay rules add up.
            p: probability per matching request.
            times: fire at most this many times (None: no limit).

        Returns:
            The :class:`Rule`.

        Raises:
            ValueError: a bad pattern or probability, or a negative delay.
        """
        if seconds < 0:
            raise ValueError(f"delay must be >= 0 s, not {seconds}")
        return self._add(Rule("delay", operation, p, times, seconds=seconds))

    def hold(self, operation: str, *, times: int | None = None, max_s: float = 300.0,
             after: int = 0) -> Hold:
        """Block matching requests before they reach moto, until the returned handle's
        :meth:`Hold.release` (or :meth:`clear`, :meth:`stop`).

        Args:
            operation: pattern of ``service.Operation`` names.
            times: hold only the first ``times`` matching requests (None: all until released).
            max_s: seconds (real time) after which a held request goes on by itself, so that a
                failing test cannot hang forever.
            after: let the first ``after`` matching requests through, then hold (e.g. to stop a
                command right after its k-th call).

        Returns:
            The :class:`Hold` handle (``wait_held(timeout)``, ``release()``, context manager).

        Raises:
            ValueError: a bad pattern.
        """
        if after < 0:
            raise ValueError(f"after must be >= 0, not {after}")
        return self._add(Hold(operation, times=times, max_s=max_s, after=after))

    def listing_lag(self, lag_s: float) -> None:
        """Leave instances younger than ``lag_s`` out of EC2's listings (EC2's eventual
        consistency; see the module docstring). 0 turns it off.

        Args:
            lag_s: seconds (gateway clock).

        Raises:
            ValueError: a negative lag.
        """
        if lag_s < 0:
            raise ValueError(f"listing lag must be >= 0 s, not {lag_s}")
        with self._lock:
            self._lag_s = float(lag_s)

    @property
    def lag_s(self) -> float:
        """The current listing lag, seconds."""
        return self._lag_s

    def rules(self) -> list[Rule]:
        """The rules in force, oldest first."""
        with self._lock:
            return list(self._rules)

    def remove(self, rule: Rule) -> None:
        """Take ``rule`` out (a :class:`Hold` is released). No effect if it is already gone."""
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)
        if isinstance(rule, Hold):
            rule._released.set()

    def clear(self) -> None:
        """Remove every rule (releasing held requests) and the listing lag."""
        with self._lock:
            rules, self._rules = self._rules, []
            self._lag_s = 0.0
        for rule in rules:
            if isinstance(rule, Hold):
                rule._released.set()

    def seed(self, seed: int) -> None:
        """Restart the random draws from ``seed``."""
        with self._lock:
            self._random.seed(seed)

    def _add(self, rule: RuleT) -> RuleT:
        if rule.operation != "*" and "." not in rule.operation:
            raise ValueError(f"operation pattern {rule.operation!r} must be 'service.Operation' "
                             "(e.g. 'ec2.RunInstances', 'ec2.*') or '*'")
        if not 0.0 <= rule.p <= 1.0:
            raise ValueError(f"probability must be within 0..1, not {rule.p}")
        if rule.times is not None and rule.times < 0:
            raise ValueError(f"times must be >= 0 or None, not {rule.times}")
        rule._gateway = self
        with self._lock:
            self._rules.append(rule)
        return rule

    def _fires(self, rule: Rule) -> bool:   # under self._lock
        if rule.times is not None and rule.fired >= rule.times:
            return False
        if rule.after > 0:
            rule.after -= 1
            return False
        if rule.p < 1.0 and self._random.random() >= rule.p:
            return False
        rule.fired += 1
        if rule.times is not None and rule.fired >= rule.times and rule.kind != "hold":
            self._rules.remove(rule)
        return True

    def plan(self, call: Call) -> Plan:
        """What the rules do to ``call`` (each rule that fires counts the firing)."""
        plan = Plan([], 0.0, None, None)
        with self._lock:
            for rule in list(self._rules):
                if not fnmatch.fnmatchcase(call.name, rule.operation):
                    continue
                if rule.kind == "hold":
                    if isinstance(rule, Hold) and not rule.released and self._fires(rule):
                        plan.holds.append(rule)
                elif rule.kind == "delay":
                    if self._fires(rule):
                        plan.delay_s += rule.seconds
                elif rule.kind in ANSWERING:
                    if plan.answer is None and self._fires(rule):
                        plan.answer = rule
                elif rule.kind == "drop_reply":
                    if plan.drop is None and self._fires(rule):
                        plan.drop = rule
        return plan

    def answer_for(self, rule: Rule, call: Call, head: bool) -> Reply:
        """The AWS error reply of an answering rule (throttle, server_error, fail) to ``call``."""
        if rule.kind == "throttle":
            status, code, message = throttle_error(call)
        elif rule.kind == "server_error":
            status, code, message = server_error(call, rule.status or 503)
        else:
            status, code, message = rule.status or 400, rule.code or "", rule.message or ""
        return error_reply(call, code, message, status, head=head)
