"""The AWS gateway: one HTTP layer in front of moto that adds the AWS behaviour moto lacks.

Every AWS request of a test (and, later, of the local cloud) goes through this threaded proxy on
``127.0.0.1``, which forwards it to the moto server unchanged (keep-alive, chunked bodies, HEAD,
S3 path- and virtual-host-style requests) and answers with moto's reply — unless a *rule* says
otherwise.  Rules are set at run time, through the Python API of :class:`Gateway` or, for a
gateway in another process, as JSON on ``POST /_gateway/rules`` (see :func:`control`).  Each rule
is scoped by an operation pattern (``"ec2.RunInstances"``, ``"ec2.*"``, ``"*"``; see
:func:`identify` for the names), may fire with a probability drawn from the gateway's seeded
:class:`random.Random`, and may be limited to its first N firings.  The rules follow AWS:

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
  (:meth:`Gateway.hold` blocks matching requests until the test releases them).
* **listing lag** — EC2's eventual consistency: right after RunInstances, DescribeInstances may
  not list the new instances yet, and a describe by id answers ``InvalidInstanceID.NotFound``.
  https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
  Instances younger than ``lag_s`` (by the gateway's clock, from the moment the gateway read
  their ids in a RunInstances / CreateFleet reply — even one it then dropped — or, for Spot
  Fleet members and instances it never saw launched, from their ``launchTime``) are left out of
  DescribeInstances, DescribeInstanceStatus, DescribeFleets, DescribeFleetInstances and
  DescribeSpotFleetInstances replies.
* **client-token idempotency** (on by default, ``idempotency=False`` to turn off) — a repeated
  RunInstances / CreateFleet / RequestSpotFleet with the same client token returns the first
  reply instead of launching again, and the same token with other parameters is refused with
  ``IdempotentParameterMismatch`` (moto ignores client tokens).
  https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html

**Strict rules** (on by default, ``strict=False`` to turn off): the AWS rules moto forgives, one
module each, each citing the AWS page it follows — :mod:`.strict_fleets` (fleets reach their
``ValidUntil``, which cannot be modified; a Spot Fleet role must exist;
``ExcessCapacityTerminationPolicy`` only on ``maintain`` fleets), :mod:`.strict_profiles` (a new
instance profile is refused by launches for ``profile_age_s``), :mod:`.strict_cfn` (stack
resources moto skips are made by the gateway, or the stack fails naming them),
:mod:`.strict_iam` (S3 reads signed with an instance role's key are allowed only by that role's
policies, Resource and Condition included).  A rule refuses a
request before moto sees it (outcome ``refused``), learns from or amends moto's replies, and acts
as time passes in :meth:`Gateway.tick` (the local cloud calls it from its run loop).

Every request is counted by operation (:attr:`Gateway.calls`) and traced as
``(operation, outcome)`` (:attr:`Gateway.trace`), so tests can count attempts.  The gateway has
one clock (``time.monotonic`` unless given another), used for delays and the listing lag, so that
later work can run it faster than real time.

Run alone: ``python -m condor_annex.providers.local.gateway --upstream HOST:PORT --port P``.
Stdlib only.
"""

from __future__ import annotations

import argparse
import fnmatch
import http.client
import itertools
import json
import random
import re
import signal
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from condor_annex.providers.local.gateway_call import Call, identify
from condor_annex.providers.local.gateway_replies import Reply, error_reply, server_error
from condor_annex.providers.local.gateway_replies import throttle_error as _throttle_error
from condor_annex.providers.local.gateway_replies import xml_bytes as _xml_bytes
from condor_annex.providers.local.gateway_replies import xml_ns as _ns
from condor_annex.providers.local.gateway_replies import xml_path as _path
from condor_annex.providers.local.gateway_strict import StrictRule

__all__ = ["Call", "Gateway", "Hold", "Reply", "Rule", "StrictRule", "control", "error_reply",
           "identify"]

#: Headers that belong to one hop and are never forwarded as they are.
_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                  "trailer", "upgrade", "content-length", "expect"})
#: Path prefix of the gateway's own control endpoint (never a valid S3 bucket name).
CONTROL_PREFIX = "/_gateway/"



# --------------------------------------------------------------------------------------------
# Rules


_ids = itertools.count(1)

#: Rule kinds that answer in moto's place (the first that fires wins).
_ANSWERING = ("throttle", "server_error", "fail")


@dataclass(eq=False)
class Rule:
    """One fault rule (made by :class:`Gateway` methods; :meth:`remove` takes it away).

    Attributes:
        kind: ``throttle``, ``server_error``, ``fail``, ``drop_reply``, ``delay`` or ``hold``.
        operation: the pattern it matches (``fnmatch``, case-sensitive, on ``service.Operation``).
        p: the probability that it fires on a matching request (0..1).
        times: fire at most this many times (None: no limit); the rule is removed when spent.
        status, code, message: the error it answers (``fail``, ``server_error``).
        seconds: the delay (``delay``) or the silence before closing (``drop_reply``), seconds.
        fired: how many times it fired so far.
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
    _gateway: Gateway | None = field(default=None, repr=False)

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
class _Plan:
    holds: list[Hold]
    delay_s: float
    answer: Rule | None
    drop: Rule | None


# --------------------------------------------------------------------------------------------
# EC2: launches seen, listing lag, client tokens

#: Query parameter holding each launch call's client token.
_TOKEN_PARAM = {"RunInstances": "ClientToken", "CreateFleet": "ClientToken",
                "RequestSpotFleet": "SpotFleetRequestConfig.ClientToken"}
#: Listing operations the lag applies to: path to the items (each with an ``instanceId``).
_LISTED = {"DescribeInstances": "reservationSet/item/instancesSet",
           "DescribeInstanceStatus": "instanceStatusSet",
           "DescribeFleetInstances": "activeInstanceSet",
           "DescribeSpotFleetInstances": "activeInstanceSet"}
_INSTANCE_ID_PARAM = re.compile(r"InstanceId\.\d+")


class _Ec2Memory:
    """What the gateway has seen of EC2: launch times (gateway clock) and client-token replies."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.launched: dict[str, float] = {}
        self.fleets: dict[str, float] = {}
        self.replies: dict[tuple[str, str], tuple[tuple, Reply]] = {}
        self.token_locks: dict[tuple[str, str], threading.Lock] = {}

    def forget(self) -> None:
        with self.lock:
            self.launched.clear()
            self.fleets.clear()
            self.replies.clear()

    def token_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self.lock:
            return self.token_locks.setdefault(key, threading.Lock())

    def observe(self, call: Call, status: int, body: bytes, lag_s: float) -> None:
        """Record the launches a successful EC2 reply reveals."""
        op = call.operation
        if status != 200 or not (op in _TOKEN_PARAM or (lag_s > 0 and op in _LISTED)):
            return
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return
        ns, now = _ns(root), self.clock()
        with self.lock:
            if op == "RunInstances":
                for e in root.iterfind(_path(ns, "instancesSet/item/instanceId")):
                    self.launched.setdefault((e.text or "").strip(), now)
            elif op == "CreateFleet":
                for e in root.iterfind(_path(ns, "fleetInstanceSet/item/instanceIds/item")):
                    self.launched.setdefault((e.text or "").strip(), now)
            elif op == "RequestSpotFleet":
                fid = root.findtext(ns + "spotFleetRequestId")
                if fid:
                    self.fleets.setdefault(fid.strip(), now)
            elif op == "DescribeSpotFleetInstances":
                t = self.fleets.get((root.findtext(ns + "spotFleetRequestId") or "").strip())
                if t is not None:
                    for e in root.iterfind(_path(ns, "activeInstanceSet/item/instanceId")):
                        self.launched.setdefault((e.text or "").strip(), t)
            elif op == "DescribeInstances":
                items = _path(ns, "reservationSet/item/instancesSet/item")
                for item in root.iterfind(items):
                    iid = (item.findtext(ns + "instanceId") or "").strip()
                    if iid and iid not in self.launched:
                        self.launched[iid] = now - _age_s(item.findtext(ns + "launchTime"))

    def young(self, iid: str, lag_s: float) -> bool:
        t = self.launched.get(iid)
        return t is not None and self.clock() - t < lag_s


def _age_s(launch_time: str | None) -> float:
    """Seconds (wall clock) since an EC2 ``launchTime``, counted from the end of its second
    (EC2 gives whole seconds), 0 if unknown or in the future."""
    if not launch_time:
        return 0.0
    try:
        t = datetime.fromisoformat(launch_time.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, time.time() - (t + 1.0))


def _hide_young(call: Call, body: bytes, young: Callable[[str], bool]) -> bytes | None:
    """``body`` without the instances ``young`` says to hide, or None when nothing changes."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    ns, changed = _ns(root), False
    if call.operation == "DescribeFleets":
        for fleet in root.iterfind(_path(ns, "fleetSet/item")):
            fis = fleet.find(ns + "fleetInstanceSet")
            for entry in list(fis if fis is not None else []):
                ids = entry.find(ns + "instanceIds")
                for e in list(ids if ids is not None else []):
                    if young((e.text or "").strip()):
                        ids.remove(e)
                        changed = True
                if ids is not None and len(ids) == 0:
                    fis.remove(entry)
        return _xml_bytes(root) if changed else None
    parent_path = _LISTED[call.operation]
    for sets in root.iterfind(_path(ns, parent_path)):
        for item in list(sets):
            if young((item.findtext(ns + "instanceId") or "").strip()):
                sets.remove(item)
                changed = True
    if call.operation == "DescribeInstances":
        reservations = root.find(ns + "reservationSet")
        for res in list(reservations if reservations is not None else []):
            iset = res.find(ns + "instancesSet")
            if iset is not None and len(iset) == 0:
                reservations.remove(res)
    return _xml_bytes(root) if changed else None


# --------------------------------------------------------------------------------------------
# The gateway


class Gateway:
    """The HTTP gateway in front of moto (see the module docstring).

    Args:
        upstream: moto's ``host:port`` (or ``http://host:port``).
        host: the address to listen on.
        port: the port to listen on (0: a free one).
        seed: seed of the random draws of rules with ``p < 1`` (same seed, same requests in the
            same order: same outcomes).
        clock: the gateway's clock, in seconds (delays and the listing lag follow it).
        idempotency: answer a repeated EC2 launch with the same client token as AWS does.
        upstream_timeout_s: seconds to wait for moto's reply.
        strict: keep the AWS rules moto forgives (:mod:`.strict_fleets`,
            :mod:`.strict_profiles`, :mod:`.strict_cfn`); False: moto's behaviour.
        profile_age_s: seconds (gateway clock) during which a new instance profile is refused
            by launches (IAM's eventual consistency; :mod:`.strict_profiles`).
        wall: the wall clock, epoch seconds (fleets' ``ValidUntil`` is a date).

    Attributes:
        url: ``http://host:port`` of the gateway (set once constructed).
        port: its port.
        calls: :class:`collections.Counter` of ``"service.Operation"``, every request.
        trace: ``(operation, outcome)`` of every request, oldest first (at most 100,000);
            outcome is ``forwarded``, ``lag`` (forwarded, instances hidden), ``replayed``
            (client token), ``refused`` (a strict rule), ``throttle``, ``server_error``, ``fail``, ``drop_reply`` or
            ``upstream_error``.
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                 clock: Callable[[], float] = time.monotonic, idempotency: bool = True,
                 upstream_timeout_s: float = 600.0, strict: bool = True,
                 profile_age_s: float = 5.0, wall: Callable[[], float] = time.time) -> None:
        self.upstream = upstream.split("://", 1)[-1].rstrip("/")
        self.clock = clock
        self.idempotency = idempotency
        self.upstream_timeout_s = upstream_timeout_s
        self.calls: Counter = Counter()
        self.trace: deque[tuple[str, str]] = deque(maxlen=100_000)
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self._lag_s = 0.0
        self._ec2 = _Ec2Memory(clock)
        self.wall = wall
        self.profile_age_s = profile_age_s
        self._clients: dict[tuple[str, str], object] = {}
        self._tick_lock = threading.Lock()
        #: Access key id -> IAM role name, of the credentials the local IMDS hands instances
        #: (:meth:`register_role_key`); requests they sign are subject to :mod:`.strict_iam`.
        self.role_keys: dict[str, str] = {}
        #: The AWS rules in force (empty when ``strict`` is False).
        self.strict_rules: list[StrictRule] = []
        if strict:
            from condor_annex.providers.local.strict_cfn import StackResources
            from condor_annex.providers.local.strict_fleets import FleetRules
            from condor_annex.providers.local.strict_iam import RoleBundleAccess
            from condor_annex.providers.local.strict_invoke import CollectorProbe
            from condor_annex.providers.local.strict_profiles import ProfilePropagation
            from condor_annex.providers.local.strict_quotas import ServiceQuotas
            from condor_annex.providers.local.strict_simulate import PolicySimulation
            from condor_annex.providers.local.strict_ssm import PublicParameters
            self.strict_rules = [FleetRules(self), ProfilePropagation(self), StackResources(self),
                                 RoleBundleAccess(self), PublicParameters(self),
                                 ServiceQuotas(self), PolicySimulation(self), CollectorProbe(self)]
        self._conns: set[socket.socket] = set()
        self._server = ThreadingHTTPServer((host, port), _handler_class(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        name=f"gateway-{self.port}", daemon=True)

    # life cycle ---------------------------------------------------------------------------

    def start(self) -> Gateway:
        """Start serving in a daemon thread.

        Returns:
            self.
        """
        self._thread.start()
        return self

    def stop(self) -> None:
        """Release held requests, stop serving and close every client connection."""
        self.clear()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # rules ------------------------------------------------------------------------------------

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

    # counts -----------------------------------------------------------------------------------

    def count(self, operation: str = "*") -> int:
        """How many requests matched ``operation`` so far.

        Args:
            operation: pattern of ``service.Operation`` names.

        Returns:
            The number of requests (every outcome, control and ``/moto-api`` requests aside).
        """
        with self._lock:
            return sum(n for name, n in self.calls.items()
                       if fnmatch.fnmatchcase(name, operation))

    def outcomes(self, operation: str = "*") -> list[str]:
        """The outcomes of the requests matching ``operation``, oldest first.

        Args:
            operation: pattern of ``service.Operation`` names.

        Returns:
            Outcomes as in :attr:`trace` (``forwarded``, ``throttle``, ``drop_reply``...).
        """
        with self._lock:
            return [o for name, o in self.trace if fnmatch.fnmatchcase(name, operation)]

    def reset_counts(self) -> Counter:
        """Start counting (and tracing) again from zero.

        Returns:
            The counts so far.
        """
        with self._lock:
            calls, self.calls = self.calls, Counter()
            self.trace.clear()
        return calls

    def register_role_key(self, access_key: str, role_name: str) -> None:
        """Say that ``access_key`` is a credential of IAM role ``role_name`` (what STS's
        AssumeRole would know): S3 reads it signs are evaluated against that role's policies
        (:mod:`.strict_iam`).  Thread-safe."""
        with self._lock:
            self.role_keys[access_key] = role_name

    def role_of_key(self, access_key: str) -> str | None:
        """The role registered for ``access_key``, or None."""
        with self._lock:
            return self.role_keys.get(access_key)

    def rule(self, kind: type) -> StrictRule | None:
        """The strict rule of class ``kind`` in force, or None."""
        return next((r for r in self.strict_rules if isinstance(r, kind)), None)

    def tick(self, now: float | None = None) -> dict:
        """Do what AWS does by itself as time passes (fleets reaching ``ValidUntil``...): every
        strict rule's periodic part.  The local cloud calls this from its run loop; a gateway
        run alone (``python -m``) every second; tests when they want it.

        Args:
            now: the wall-clock time (epoch seconds) to act at; default: :attr:`wall`.

        Returns:
            ``{rule class name: what it did}`` for the rules that did something.
        """
        now = self.wall() if now is None else now
        done = {}
        with self._tick_lock:   # one pass at a time: the run loop and a test may overlap
            for rule in self.strict_rules:
                result = rule.tick(now)
                if result:
                    done[type(rule).__name__] = result
        return done

    def upstream_client(self, service: str, region: str = ""):
        """A boto3 client talking to moto directly (not through the gateway), with the fake
        credentials moto accepts; cached per (service, region).

        Args:
            service: the boto3 client name.
            region: the region (``""``: ``us-east-1``).
        """
        key = (service, region or "us-east-1")
        with self._lock:
            client = self._clients.get(key)
        if client is None:
            import boto3
            from botocore.config import Config
            client = boto3.session.Session().client(
                service, endpoint_url=f"http://{self.upstream}", region_name=key[1],
                aws_access_key_id="testing", aws_secret_access_key="testing",
                config=Config(retries={"mode": "standard", "max_attempts": 3},
                              connect_timeout=10, read_timeout=120))
            with self._lock:
                client = self._clients.setdefault(key, client)
        return client

    def launched_at(self, instance_id: str) -> float | None:
        """When (gateway clock, seconds) the gateway first saw ``instance_id`` launched, or None."""
        with self._ec2.lock:
            return self._ec2.launched.get(instance_id)

    # internals --------------------------------------------------------------------------------

    def _add(self, rule: Rule) -> Rule:
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
        if getattr(rule, "after", 0) > 0:
            rule.after -= 1   # type: ignore[attr-defined]
            return False
        if rule.p < 1.0 and self._random.random() >= rule.p:
            return False
        rule.fired += 1
        if rule.times is not None and rule.fired >= rule.times and rule.kind != "hold":
            self._rules.remove(rule)
        return True

    def _plan(self, call: Call) -> _Plan:
        plan = _Plan([], 0.0, None, None)
        with self._lock:
            self.calls[call.name] += 1
            for rule in list(self._rules):
                if not fnmatch.fnmatchcase(call.name, rule.operation):
                    continue
                if rule.kind == "hold":
                    if not rule.released and self._fires(rule):
                        plan.holds.append(rule)
                elif rule.kind == "delay":
                    if self._fires(rule):
                        plan.delay_s += rule.seconds
                elif rule.kind in _ANSWERING:
                    if plan.answer is None and self._fires(rule):
                        plan.answer = rule
                elif rule.kind == "drop_reply":
                    if plan.drop is None and self._fires(rule):
                        plan.drop = rule
        return plan

    def _record(self, call: Call, outcome: str) -> None:
        with self._lock:
            self.trace.append((call.name, outcome))

    def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` by the gateway's clock."""
        deadline = self.clock() + seconds
        while (left := deadline - self.clock()) > 0:
            time.sleep(min(left, 0.05))

    def _answer_for(self, rule: Rule, call: Call, head: bool) -> Reply:
        if rule.kind == "throttle":
            status, code, message = _throttle_error(call)
        elif rule.kind == "server_error":
            status, code, message = server_error(call, rule.status or 503)
        else:
            status, code, message = rule.status or 400, rule.code or "", rule.message or ""
        return error_reply(call, code, message, status, head=head)

    def _forward(self, method: str, path: str, headers: list[tuple[str, str]],
                 body: bytes | None) -> Reply:
        conn = http.client.HTTPConnection(self.upstream, timeout=self.upstream_timeout_s)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()

    def handle(self, method: str, path: str, headers,
               body: bytes) -> tuple[Reply | None, Rule | None]:
        """Handle one AWS request as the gateway does (the HTTP handler calls this).

        Args:
            method: the HTTP method.
            path: the request target.
            headers: the request headers (:class:`http.client.HTTPMessage`).
            body: the request body, de-chunked.

        Returns:
            ``(reply, drop)``: the reply to send, and the ``drop_reply`` rule that fired (the
            reply is then not to be sent) or None.
        """
        head = method == "HEAD"
        fwd_headers = [(k, v) for k, v in headers.items() if k.lower() not in _HOP]
        if body or "Content-Length" in headers or "Transfer-Encoding" in headers:
            fwd_headers.append(("Content-Length", str(len(body))))
        if path.startswith("/moto-api"):
            if path.startswith("/moto-api/reset"):
                self._ec2.forget()
                for rule in self.strict_rules:
                    rule.forget()
            return self._forward_or_502(method, path, fwd_headers, body), None
        call = identify(method, path, headers, body)
        plan = self._plan(call)
        for hold in plan.holds:
            hold._block()
        if plan.delay_s:
            self._sleep(plan.delay_s)
        if plan.answer is not None:
            self._record(call, plan.answer.kind)
            return self._answer_for(plan.answer, call, head), None
        outcome = "forwarded"
        token = call.param(_TOKEN_PARAM.get(call.operation, "")) \
            if call.service == "ec2" and self.idempotency else None
        if token:
            key = (call.operation, token)
            signature = tuple(sorted(call.params))
            with self._ec2.token_lock(key):
                seen = self._ec2.replies.get(key)
                if seen is not None:
                    if seen[0] == signature:
                        reply, outcome = seen[1], "replayed"
                    else:
                        reply, outcome = error_reply(
                            call, "IdempotentParameterMismatch",
                            "Arguments on this idempotent request are inconsistent with "
                            "arguments used in previous request(s).", 400), "fail"
                else:
                    reply, outcome = self._strict_forward(call, method, path, fwd_headers,
                                                          body, head)
                    if reply[0] == 200:
                        self._ec2.replies[key] = (signature, reply)
        else:
            reply, outcome = self._strict_forward(call, method, path, fwd_headers, body, head)
        if reply[0] == 502 and outcome == "forwarded":
            outcome = "upstream_error"
        elif call.service == "ec2" and outcome == "forwarded":
            lag = self._lag_s
            self._ec2.observe(call, reply[0], reply[2], lag)
            if lag > 0 and reply[0] == 200 and (call.operation in _LISTED
                                                 or call.operation == "DescribeFleets"):
                reply, hid = self._lagged(call, reply, lag)
                outcome = "lag" if hid else outcome
        if plan.drop is not None:
            if plan.drop.seconds:
                self._sleep(plan.drop.seconds)
            self._record(call, "drop_reply")
            return None, plan.drop
        self._record(call, outcome)
        return reply, None

    def _strict_forward(self, call: Call, method: str, path: str, headers, body: bytes,
                        head: bool) -> tuple[Reply, str]:
        """Forward a request unless a strict rule refuses it; let the rules see the reply.

        Returns:
            ``(reply, outcome)``: outcome ``refused`` (a rule answered) or ``forwarded``.
        """
        for rule in self.strict_rules:
            own = rule.answer(call, body)
            if own is not None:
                return own, "answered"
            refusal = rule.before(call)
            if refusal is not None:
                code, message, status = refusal
                return error_reply(call, code, message, status, head=head), "refused"
        reply = self._forward_or_502(method, path, headers, body)
        if reply[0] != 502:
            for rule in self.strict_rules:
                reply = rule.after(call, reply)
        return reply, "forwarded"

    def _forward_or_502(self, method, path, headers, body) -> Reply:
        try:
            return self._forward(method, path, headers, body or None)
        except (OSError, http.client.HTTPException) as e:
            msg = f"gateway: upstream {self.upstream} failed: {e}".encode()
            return 502, [("Content-Type", "text/plain")], msg

    def _lagged(self, call: Call, reply: Reply, lag_s: float) -> tuple[Reply, bool]:
        young = lambda iid: self._ec2.young(iid, lag_s)   # noqa: E731
        asked = [v for k, v in call.params if _INSTANCE_ID_PARAM.fullmatch(k)]
        missing = [i for i in asked if young(i)]
        if missing and call.operation in ("DescribeInstances", "DescribeInstanceStatus"):
            ids = ", ".join(missing)
            msg = (f"The instance ID '{ids}' does not exist" if len(missing) == 1 else
                   f"The instance IDs '{ids}' do not exist")
            return error_reply(call, "InvalidInstanceID.NotFound", msg, 400), True
        body = _hide_young(call, reply[2], young)
        if body is None:
            return reply, False
        return (reply[0], reply[1], body), True

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        """The JSON control endpoint (see :func:`control`)."""
        what = urllib.parse.urlsplit(path).path[len(CONTROL_PREFIX):].strip("/")
        payload = json.loads(body or b"null")
        if what == "rules" and method == "GET":
            return 200, {"rules": [r.describe() for r in self.rules()], "listing_lag_s":
                         self._lag_s}
        if what == "rules" and method == "DELETE":
            self.clear()
            return 200, {"cleared": True}
        if what == "rules" and method == "POST":
            specs = payload if isinstance(payload, list) else [payload]
            ids = []
            for spec in specs:
                spec = dict(spec)
                kind = spec.pop("rule")
                if kind == "listing_lag":
                    self.listing_lag(float(spec["lag_s"]))
                    ids.append(None)
                elif kind == "clear":
                    self.clear()
                    ids.append(None)
                elif kind in ("throttle", "server_error", "fail", "drop_reply", "delay", "hold"):
                    ids.append(getattr(self, kind)(**spec).id)
                else:
                    raise ValueError(f"unknown rule {kind!r}")
            return 200, {"ids": ids}
        if what == "release" and method == "POST":
            wanted = (payload or {}).get("id")
            for rule in self.rules():
                if isinstance(rule, Hold) and wanted in (None, rule.id):
                    rule.release()
            return 200, {"released": True}
        if what == "calls" and method == "GET":
            with self._lock:
                return 200, {"calls": dict(self.calls), "trace": [list(t) for t in self.trace]}
        if what == "calls" and method == "DELETE":
            return 200, {"calls": dict(self.reset_counts())}
        if what == "tick" and method == "POST":
            return 200, {"done": self.tick((payload or {}).get("now"))}
        return 404, {"error": f"no such control: {method} {path}"}


def _handler_class(gateway: Gateway) -> type[BaseHTTPRequestHandler]:

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:   # quiet
            pass

        def setup(self) -> None:
            super().setup()
            with gateway._lock:
                gateway._conns.add(self.connection)

        def finish(self) -> None:
            with gateway._lock:
                gateway._conns.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass   # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(65537)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, reply: Reply) -> None:
            status, headers, data = reply
            self.send_response_only(status)
            for k, v in headers:
                if k.lower() not in _HOP or (k.lower() == "content-length"
                                             and self.command == "HEAD"):
                    self.send_header(k, v)
            if self.command != "HEAD" and status not in (204, 304):
                self.send_header("Content-Length", str(len(data)))
            elif self.command == "HEAD" and not any(k.lower() == "content-length"
                                                    for k, _ in headers):
                self.send_header("Content-Length", "0")
            if self.close_connection:
                self.send_header("Connection", "close")
            self._headers_buffer.append(b"\r\n")   # end_headers(), with the body: one write
            if self.command != "HEAD" and data:
                self._headers_buffer.append(data)
            self.flush_headers()

        def _handle(self) -> None:
            body = self._read_body()
            path = self.path
            if path.startswith(("http://", "https://")):   # absolute form
                path = "/" + path.split("://", 1)[1].partition("/")[2]
            if path.startswith(CONTROL_PREFIX):
                try:
                    status, payload = gateway._control(self.command, path, body)
                except (ValueError, TypeError, KeyError) as e:
                    status, payload = 400, {"error": f"{type(e).__name__}: {e}"}
                data = json.dumps(payload).encode()
                self._send((status, [("Content-Type", "application/json")], data))
                return
            reply, drop = gateway.handle(self.command, path, self.headers, body)
            if drop is not None or reply is None:
                self.close_connection = True
                return
            self._send(reply)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

    return Handler


# --------------------------------------------------------------------------------------------
# For users in another process


def control(url: str, method: str, what: str, payload: object = None,
            timeout_s: float = 10.0) -> dict:
    """Call the control endpoint of a gateway (e.g. one started with ``python -m``).

    ``POST rules`` takes one rule or a list: ``{"rule": "throttle", "operation": "ec2.*",
    "p": 0.3}``, ``{"rule": "fail", "operation": "ec2.RunInstances", "code":
    "InsufficientInstanceCapacity", "times": 2}``, ``{"rule": "listing_lag", "lag_s": 10}``,
    ``{"rule": "hold", "operation": "ec2.RunInstances"}`` (the keys are the Python methods'
    arguments); ``GET rules`` lists them (a hold shows ``held``); ``DELETE rules`` clears;
    ``POST release`` with ``{"id": N}`` (or nothing: every hold) releases holds; ``GET calls``
    returns counts and trace; ``DELETE calls`` resets them; ``POST tick`` (optionally
    ``{"now": epoch seconds}``) runs :meth:`Gateway.tick`.

    Args:
        url: the gateway's URL.
        method: ``GET``, ``POST`` or ``DELETE``.
        what: ``rules``, ``release``, ``calls`` or ``tick``.
        payload: the JSON body, if any.
        timeout_s: seconds to wait for the answer.

    Returns:
        The decoded JSON answer.

    Raises:
        urllib.error.HTTPError: the gateway refused the request (its JSON ``error`` says why).
    """
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url.rstrip("/") + CONTROL_PREFIX + what, data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m condor_annex.providers.local.gateway --upstream HOST:PORT [--port P]``.

    Prints ``gateway http://HOST:PORT -> UPSTREAM`` once listening, runs :meth:`Gateway.tick`
    every second, and serves until SIGTERM or SIGINT.
    """
    parser = argparse.ArgumentParser(prog="python -m condor_annex.providers.local.gateway",
                                     description="The AWS gateway in front of moto.")
    parser.add_argument("--upstream", required=True, help="moto's HOST:PORT")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: free)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    parser.add_argument("--listing-lag", type=float, default=0.0, metavar="SECONDS",
                        help="EC2 listing lag after a launch")
    parser.add_argument("--no-strict", action="store_true",
                        help="forward as moto does, without the AWS rules moto forgives")
    parser.add_argument("--profile-age", type=float, default=5.0, metavar="SECONDS",
                        help="how long launches refuse a new instance profile")
    args = parser.parse_args(list(argv) if argv is not None else None)
    gateway = Gateway(args.upstream, host=args.host, port=args.port, seed=args.seed,
                      strict=not args.no_strict, profile_age_s=args.profile_age)
    gateway.listing_lag(args.listing_lag)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    gateway.start()
    print(f"gateway {gateway.url} -> {gateway.upstream}", flush=True)
    while not stop.wait(1.0):   # what AWS does by itself as time passes
        try:
            gateway.tick()
        except Exception as e:  # noqa: BLE001 - the next second tries again
            print(f"gateway: tick failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    gateway.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
