"""The AWS gateway: one HTTP layer in front of moto that adds the AWS behaviour moto lacks.

Every AWS request of a test (and of the local cloud) goes through this threaded proxy on
``127.0.0.1``, which forwards it to the moto server unchanged (keep-alive, chunked bodies, HEAD,
S3 path- and virtual-host-style requests) and answers with moto's reply — unless a *rule* says
otherwise.  Rules are set at run time, through the Python API of :class:`Gateway` or, for a
gateway in another process, as JSON on ``POST /_gateway/rules`` (see :func:`control`).

One concept per module:

* :mod:`.gateway_call` — which service and operation a request is (:func:`identify`), the names
  rules match (``"ec2.RunInstances"``, ``"ec2.*"``, ``"*"``);
* :mod:`.gateway_rules` — the **fault rules** (throttle, server_error, fail, drop_reply, delay,
  hold, listing lag), each following AWS's documented behaviour (:class:`FaultRules`, which
  :class:`Gateway` is);
* :mod:`.gateway_listing_lag` — EC2's eventual consistency: instances too young to be listed;
* :mod:`.gateway_client_tokens` — **client-token idempotency** of EC2 launches (on by default,
  ``idempotency=False`` to turn off; moto ignores client tokens);
* :mod:`.gateway_replies` — AWS error replies in each protocol, and EC2's XML replies;
* :mod:`.gateway_http` — the HTTP proxy core (request handler, forwarding to moto);
* :mod:`.gateway_strict` — the base of the **strict rules** (on by default, ``strict=False`` to
  turn off): the AWS rules moto forgives, one module each, each citing the AWS page it follows —
  :mod:`.strict_fleets` (fleets reach their ``ValidUntil``, which cannot be modified; a Spot
  Fleet role must exist; ``ExcessCapacityTerminationPolicy`` only on ``maintain`` fleets),
  :mod:`.strict_profiles` (a new instance profile is refused by launches for
  ``profile_age_s``), :mod:`.strict_cfn` (stack resources moto skips are made by the gateway, or
  the stack fails naming them), :mod:`.strict_iam` (S3 requests signed with an instance role's
  key are allowed only by that role's policies), :mod:`.strict_ssm`, :mod:`.strict_quotas`,
  :mod:`.strict_simulate`, :mod:`.strict_invoke`, :mod:`.strict_pricing` (what moto lacks),
  :mod:`.strict_sts` (an instance role's caller identity).
  A strict rule answers a request in moto's place, refuses it before moto sees it (outcome
  ``refused``), learns from or amends moto's replies, and acts as time passes in
  :meth:`Gateway.tick` (the local cloud calls it from its run loop).

This module holds the :class:`Gateway` itself (life cycle, the order in which a request meets
the rules, counts and trace, the control endpoint), :func:`control` for users in another
process, and ``main``.  Every request is counted by operation (:attr:`Gateway.calls`) and traced
as ``(operation, outcome)`` (:attr:`Gateway.trace`), so tests can count attempts.  The gateway has
one clock (``time.monotonic`` unless given another), used for delays and the listing lag, so that
later work can run it faster than real time.

Run alone: ``python -m condor_annex.providers.local.gateway --upstream HOST:PORT --port P``.
Stdlib only.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import signal
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter, deque
from collections.abc import Callable, Iterable
from http.server import ThreadingHTTPServer
from typing import Any, TypeVar

from condor_annex.providers.local.gateway_call import Call, identify
from condor_annex.providers.local.gateway_client_tokens import ClientTokens
from condor_annex.providers.local.gateway_http import CONTROL_PREFIX, HOP, forward, handler_class
from condor_annex.providers.local.gateway_listing_lag import LaunchMemory
from condor_annex.providers.local.gateway_replies import Reply, error_reply
from condor_annex.providers.local.gateway_rules import FaultRules, Hold, Rule
from condor_annex.providers.local.gateway_strict import StrictRule

# Names of the gateway's parts, importable from here as before the split.
__all__ = ["CONTROL_PREFIX", "Call", "Gateway", "Hold", "Reply", "Rule", "StrictRule",
           "control", "error_reply", "identify"]

R = TypeVar("R", bound=StrictRule)


class Gateway(FaultRules):
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
            (client token), ``refused`` (a strict rule), ``answered`` (a strict rule answered
            in moto's place), ``throttle``, ``server_error``, ``fail``, ``drop_reply`` or
            ``upstream_error``.
    """

    def __init__(self, upstream: str, *, host: str = "127.0.0.1", port: int = 0, seed: int = 0,
                 clock: Callable[[], float] = time.monotonic, idempotency: bool = True,
                 upstream_timeout_s: float = 600.0, strict: bool = True,
                 profile_age_s: float = 5.0, wall: Callable[[], float] = time.time) -> None:
        super().__init__(seed)
        self.upstream = upstream.split("://", 1)[-1].rstrip("/")
        self.clock = clock
        self.idempotency = idempotency
        self.upstream_timeout_s = upstream_timeout_s
        self.calls: Counter = Counter()
        self.trace: deque[tuple[str, str]] = deque(maxlen=100_000)
        self._launches = LaunchMemory(clock)
        self._tokens = ClientTokens()
        self.wall = wall
        self.profile_age_s = profile_age_s
        self._clients: dict[tuple[str, str], Any] = {}
        self._tick_lock = threading.Lock()
        #: (:meth:`register_role_key`); requests they sign are subject to :mod:`.strict_iam`.
        self.role_keys: dict[str, str] = {}
        #: The AWS rules in force (empty when ``strict`` is False).
        self.strict_rules: list[StrictRule] = []
        if strict:
            from condor_annex.providers.local.strict_cfn import StackResources
            from condor_annex.providers.local.strict_fleets import FleetRules
            from condor_annex.providers.local.strict_iam import RoleBundleAccess
            from condor_annex.providers.local.strict_invoke import CollectorProbe
            from condor_annex.providers.local.strict_pricing import Prices
            from condor_annex.providers.local.strict_profiles import ProfilePropagation
            from condor_annex.providers.local.strict_quotas import ServiceQuotas
            from condor_annex.providers.local.strict_simulate import PolicySimulation
            from condor_annex.providers.local.strict_ssm import PublicParameters
            from condor_annex.providers.local.strict_sts import RoleSessionIdentity
            self.strict_rules = [FleetRules(self), ProfilePropagation(self), StackResources(self),
                                 RoleBundleAccess(self), PublicParameters(self),
                                 ServiceQuotas(self), PolicySimulation(self), CollectorProbe(self),
                                 Prices(self), RoleSessionIdentity(self)]
        self._conns: set[socket.socket] = set()
        self._server = ThreadingHTTPServer((host, port), handler_class(self))
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

    def rule(self, kind: type[R]) -> R | None:
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

    def upstream_client(self, service: str, region: str = "") -> Any:
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
        return self._launches.launched_at(instance_id)

    def connection_opened(self, sock: socket.socket) -> None:
        """A client connection opened (:meth:`stop` closes those still open)."""
        with self._lock:
            self._conns.add(sock)

    def connection_closed(self, sock: socket.socket) -> None:
        """A client connection closed."""
        with self._lock:
            self._conns.discard(sock)

    # internals --------------------------------------------------------------------------------

    def _record(self, call: Call, outcome: str) -> None:
        with self._lock:
            self.trace.append((call.name, outcome))

    def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` by the gateway's clock."""
        deadline = self.clock() + seconds
        while (left := deadline - self.clock()) > 0:
            time.sleep(min(left, 0.05))

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
        fwd_headers = [(k, v) for k, v in headers.items() if k.lower() not in HOP]
        if body or "Content-Length" in headers or "Transfer-Encoding" in headers:
            fwd_headers.append(("Content-Length", str(len(body))))
        if path.startswith("/moto-api"):
            if path.startswith("/moto-api/reset"):
                self._launches.forget()
                self._tokens.forget()
                for rule in self.strict_rules:
                    rule.forget()
            return self._forward_or_502(method, path, fwd_headers, body), None
        call = identify(method, path, headers, body)
        with self._lock:
            self.calls[call.name] += 1
        # 1. The fault rules: holds, delays, and an answer in moto's place (AWS's own trouble).
        plan = self.plan(call)
        for hold in plan.holds:
            hold._block()
        if plan.delay_s:
            self._sleep(plan.delay_s)
        if plan.answer is not None:
            self._record(call, plan.answer.kind)
            return self.answer_for(plan.answer, call, head), None
        # 2. A launch's client token; 3. the strict rules and moto.
        def send() -> tuple[Reply, str]:
            return self._strict_forward(call, method, path, fwd_headers, body, head)
        token = self._tokens.token_of(call) if self.idempotency else None
        reply, outcome = self._tokens.send(call, token, send) if token else send()
        # 4. What EC2's listings show of what moto answered (the listing lag).
        if reply[0] == 502 and outcome == "forwarded":
            outcome = "upstream_error"
        elif call.service == "ec2" and outcome == "forwarded":
            reply, hid = self._launches.apply(call, reply, self._lag_s)
            outcome = "lag" if hid else outcome
        # 5. A reply lost on its way back.
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
            ``(reply, outcome)``: outcome ``answered`` (a rule answered in moto's place),
            ``refused`` (a rule refused it) or ``forwarded``.
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

    def _forward_or_502(self, method: str, path: str, headers: list[tuple[str, str]],
                        body: bytes) -> Reply:
        return forward(self.upstream, self.upstream_timeout_s, method, path, headers,
                       body or None)

    def control_request(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        """Answer a request to the JSON control endpoint (see :func:`control`).

        Returns:
            ``(HTTP status, JSON-ready payload)``.

        Raises:
            ValueError, TypeError, KeyError: a malformed request (the handler answers 400).
        """
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
            ids: list[int | None] = []
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
