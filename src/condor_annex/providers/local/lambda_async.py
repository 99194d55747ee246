"""Lambda asynchronous invocation, as AWS does it, for the lease function run in-process.

moto cannot run a function (Invoke needs Docker), so the local cloud runs the lease function's
code (:mod:`condor_annex.lease.handler`) in this process against the emulator. EventBridge
Scheduler and EventBridge rules invoke Lambda **asynchronously**; this module keeps AWS's rules
for that (docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html and
docs.aws.amazon.com/lambda/latest/dg/invocation-async-retain-records.html):

* an invocation that raises is retried twice more: one minute after the first attempt failed,
  then two minutes after the second (the delays go through the local cloud's clock, so
  ``CONDOR_ANNEX_TIME_SCALE`` shortens them);
* the function's event invoke config (GetFunctionEventInvokeConfig) may lower the retries
  (``MaximumRetryAttempts``, 0-2; default 2) and the time an event is kept
  (``MaximumEventAgeInSeconds``; default 6 hours);
* when the retries are used up (or the event is too old), the invocation record goes to the
  config's ``DestinationConfig.OnFailure`` destination (SQS here) and the bare event to the
  function's dead-letter queue (``DeadLetterConfig``), if either is configured; otherwise the
  event is **dropped** (a log line says so) — no later attempt ever comes;
* a "success" is any return: a function that returns "not due" is never called again.

Invocations run in worker threads (a lease enforcer that sleeps out the rest of its minute
does not stall the daemon's reconcile loop, nor another annex's invocation); tests call
:meth:`AsyncInvoker.run_due` with a manual clock instead.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import inspect
import itertools
import json
import logging
import threading
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

log = logging.getLogger("condor_annex.local.lambda")

#: AWS: "Lambda retries the function twice more, with a one-minute wait between the first two
#: attempts, and two minutes between the second and third attempts" (seconds, unscaled).
RETRY_DELAYS_S = (60.0, 120.0)
#: Defaults of an event invoke config (PutFunctionEventInvokeConfig).
DEFAULT_MAX_RETRY_ATTEMPTS = 2
DEFAULT_MAX_EVENT_AGE_S = 6 * 3600
#: Invocations of the function that may run at once (worker threads).
WORKERS = 8


class InjectedLambdaError(RuntimeError):
    """The ``lambda-error`` fault injection failed this attempt before the code ran."""


@dataclass
class Invocation:
    """One asynchronous invocation (one event) and what became of it.

    Attributes:
        request_id: the invocation's request id (a UUID, as Lambda gives).
        function_arn: the function invoked.
        event: the payload (a dict for JSON events).
        source: who invoked it, for the log (e.g. ``"schedule default/annex-lease-a"``).
        received_at: clock time (epoch s) the event was queued.
        due_at: clock time of the next attempt.
        attempts: clock time each attempt started, in order.
        errors: each failed attempt's error payload (``errorMessage``, ``errorType``, ...).
        outcome: ``None`` while queued or running, then ``"succeeded"``,
            ``"sent-to-destination"`` (on-failure destination or dead-letter queue) or
            ``"dropped"``.
        result: what the code returned, when it succeeded.
    """

    request_id: str
    function_arn: str
    event: Any
    source: str
    received_at: float
    due_at: float
    attempts: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    outcome: str | None = None
    result: Any = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)


def _call(fn: Callable, *args: Any, clock: Any) -> Any:
    """Call a handler function, giving it the clock where it takes one: ``now`` (epoch s, or
    the clock's ``time`` when the parameter defaults to a callable) and ``sleep`` (wall
    seconds, unscaled: see :meth:`Clock.sleep_until_wall`)."""
    params = inspect.signature(fn).parameters
    kw: dict[str, Any] = {}
    if "now" in params:
        default = params["now"].default
        kw["now"] = clock.time if callable(default) else clock.time()
    if "sleep" in params:
        # The enforcer's wait ends at the lease end, an absolute moment: never scaled.
        kw["sleep"] = clock.sleep_until_wall
    return fn(*args, **kw)


def run_lease_function(event: Any, clients: dict, clock: Any) -> Any:
    """The lease function's code, dispatched on the event's shape as its Lambda entry point
    does: an EventBridge EC2 state-change event (has ``detail``) goes to
    ``handler.instance_ended``, ``{"Sweep": true, ...}`` to ``handler.sweep``, anything else is
    a lease event for ``handler.enforce``.

    Raises:
        whatever the handler raises (an error: Lambda retries it); RuntimeError for a sweep
        event when the handler has no ``sweep``.
    """
    from condor_annex.lease import handler
    if isinstance(event, dict) and "detail" in event:
        return _call(handler.instance_ended, event["detail"]["instance-id"], clients, clock=clock)
    if isinstance(event, dict) and event.get("Sweep"):
        sweep = getattr(handler, "sweep", None)
        if sweep is None:
            raise RuntimeError("the lease function cannot sweep (no handler.sweep)")
        return _call(sweep, event, clients, clock=clock)
    return _call(handler.enforce, event, clients, clock=clock)


def _error_code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class AsyncInvoker:
    """Lambda's asynchronous event queue for the functions the local cloud runs in-process.

    Args:
        client: ``client(service) -> boto3 client`` against the emulator (``lambda`` for the
            function and its event invoke config, ``sqs`` for destinations).
        handler_clients: ``() -> dict`` of the clients the function's code gets
            (``ec2``, ``s3``, ``scheduler``).
        clock: the local cloud's clock (:class:`~condor_annex.providers.local.clock.Clock`).
        injections: the fault injections (:class:`~condor_annex.providers.local.inject.
            Injections`), or None.
        code: ``code(event, clients, clock) -> result``: the function's code;
            default :func:`run_lease_function`.
        workers: invocations that may run at once (threads, once :meth:`start` ran).
    """

    def __init__(self, client: Callable[[str], Any], handler_clients: Callable[[], dict],
                 clock: Any, injections: Any = None, code: Callable | None = None,
                 workers: int = WORKERS) -> None:
        self._client = client
        self._handler_clients = handler_clients
        self.clock = clock
        self.injections = injections
        self._code = code or run_lease_function
        self._workers = workers
        self._queue: list[tuple[float, int, Invocation]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._running = 0
        self.history: list[Invocation] = []   # every invocation, in order (tests, the log)

    # ---- queueing -------------------------------------------------------------------------
    def invoke(self, function_arn: str, event: Any, source: str = "") -> Invocation:
        """Queue an asynchronous invocation (``InvocationType=Event``); returns at once.

        The first attempt is due now; :meth:`run_due` (or the worker thread) runs it."""
        now = self.clock.time()
        inv = Invocation(request_id=str(uuid.uuid4()), function_arn=function_arn, event=event,
                         source=source, received_at=now, due_at=now)
        with self._cond:
            self.history.append(inv)
            heapq.heappush(self._queue, (inv.due_at, next(self._seq), inv))
            self._cond.notify_all()
        return inv

    def _take_due(self) -> list[Invocation]:
        now = self.clock.time()
        due = []
        with self._cond:
            while self._queue and self._queue[0][0] <= now:
                due.append(heapq.heappop(self._queue)[2])
        return due

    def pending(self) -> int:
        """Invocations queued or running."""
        with self._cond:
            return len(self._queue) + self._running

    def next_due(self) -> float | None:
        """Clock time of the next queued attempt, or None."""
        with self._cond:
            return self._queue[0][0] if self._queue else None

    def run_due(self) -> list[Invocation]:
        """Run every attempt that is due now, in this thread (tests; a manual clock).

        Returns:
            the invocations that had an attempt run.
        """
        due = self._take_due()
        for inv in due:
            self._attempt(inv)
        return due

    # ---- the worker thread ----------------------------------------------------------------
    def start(self) -> "AsyncInvoker":
        """Run due attempts in worker threads from now on (the daemon)."""
        self._pool = concurrent.futures.ThreadPoolExecutor(self._workers,
                                                           thread_name_prefix="lambda")
        self._thread = threading.Thread(target=self._dispatch, name="lambda-queue", daemon=True)
        self._thread.start()
        return self

    def stop(self, wait_s: float = 5.0) -> None:
        """Stop dispatching; queued attempts are forgotten (the local cloud is going away).
        Running ones are not interrupted (a sleeping enforcer sleeps on the clock, whose stop
        event the daemon sets)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread:
            self._thread.join(wait_s)
        if self._pool:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            for inv in self._take_due():
                with self._cond:
                    self._running += 1
                self._pool.submit(self._attempt_counted, inv)
            with self._cond:
                nxt = self._queue[0][0] if self._queue else None
                wait = 1.0 if nxt is None else min(1.0, max(0.0, nxt - self.clock.time()))
                if not self._stop.is_set():
                    self._cond.wait(wait)

    def _attempt_counted(self, inv: Invocation) -> None:
        try:
            self._attempt(inv)
        except Exception:  # noqa: BLE001 - a worker never dies of one invocation
            log.exception("invocation %s failed in the local cloud itself", inv.request_id)
        finally:
            with self._cond:
                self._running -= 1

    # ---- one attempt ----------------------------------------------------------------------
    def _function_settings(self, function_arn: str) -> dict | None:
        """The function's async settings, or None when the function does not exist.

        Returns: ``{"max_retries": int, "max_age_s": int, "on_failure": arn|None,
        "dead_letter": arn|None}``.
        """
        lam = self._client("lambda")
        try:
            conf = lam.get_function_configuration(FunctionName=function_arn)
        except Exception as e:  # noqa: BLE001 - botocore's ClientError, matched by code
            if _error_code(e) == "ResourceNotFoundException":
                return None
            raise
        out = {"max_retries": DEFAULT_MAX_RETRY_ATTEMPTS, "max_age_s": DEFAULT_MAX_EVENT_AGE_S,
               "on_failure": None,
               "dead_letter": (conf.get("DeadLetterConfig") or {}).get("TargetArn")}
        try:
            cfg = lam.get_function_event_invoke_config(FunctionName=function_arn)
        except Exception as e:  # noqa: BLE001
            if _error_code(e) != "ResourceNotFoundException":
                raise
            return out   # no config: AWS's defaults
        if cfg.get("MaximumRetryAttempts") is not None:
            out["max_retries"] = int(cfg["MaximumRetryAttempts"])
        if cfg.get("MaximumEventAgeInSeconds") is not None:
            out["max_age_s"] = int(cfg["MaximumEventAgeInSeconds"])
        out["on_failure"] = (cfg.get("DestinationConfig", {}).get("OnFailure") or {}).get(
            "Destination")
        return out

    def _attempt(self, inv: Invocation) -> None:
        now = self.clock.time()
        settings = self._function_settings(inv.function_arn)
        if settings is None:
            log.warning("%s: function %s does not exist; event dropped", inv.source or "invoke",
                        inv.function_arn)
            self._finish(inv, "dropped")
            return
        if inv.attempts and (now - inv.received_at) * self.clock.scale > settings["max_age_s"]:
            self._failed(inv, settings, "EventAgeExceeded")
            return
        inv.attempts.append(now)
        n = len(inv.attempts)
        try:
            if self.injections is not None and self.injections.take_lambda_error():
                raise InjectedLambdaError("injected fault (condor_annex local inject "
                                          "lambda-error): the function failed before its code "
                                          "ran")
            result = self._code(inv.event, self._handler_clients(), self.clock)
        except Exception as e:  # noqa: BLE001 - a function error: Lambda's retry rules follow
            inv.errors.append({"errorMessage": str(e), "errorType": type(e).__name__,
                               "requestId": inv.request_id,
                               "stackTrace": traceback.format_tb(e.__traceback__)[-5:]})
            if n - 1 < min(settings["max_retries"], len(RETRY_DELAYS_S)):
                delay = RETRY_DELAYS_S[n - 1]
                inv.due_at = self.clock.time() + self.clock.scaled(delay)
                log.warning("%s: attempt %d of %s failed (%s: %s); retry in %.0f s (%.1f s "
                            "here)", inv.source or "invoke", n, inv.function_arn,
                            type(e).__name__, e, delay, self.clock.scaled(delay))
                with self._cond:
                    heapq.heappush(self._queue, (inv.due_at, next(self._seq), inv))
                    self._cond.notify_all()
                return
            log.warning("%s: attempt %d of %s failed (%s: %s); no retry left",
                        inv.source or "invoke", n, inv.function_arn, type(e).__name__, e)
            self._failed(inv, settings, "RetriesExhausted")
            return
        inv.result = result
        log.info("%s: %s returned %s (attempt %d)", inv.source or "invoke", inv.function_arn,
                 result, n)
        self._finish(inv, "succeeded")

    def _finish(self, inv: Invocation, outcome: str) -> None:
        inv.outcome = outcome
        inv.done.set()

    # ---- after the last attempt -----------------------------------------------------------
    def _failed(self, inv: Invocation, settings: dict, condition: str) -> None:
        """Send the failed event where the function says (on-failure destination, dead-letter
        queue), or drop it."""
        sent = False
        if settings["on_failure"]:
            sent |= self._send(settings["on_failure"], json.dumps(self._record(inv, condition)),
                               inv, "on-failure destination")
        if settings["dead_letter"]:
            last = inv.errors[-1] if inv.errors else {}
            sent |= self._send(settings["dead_letter"], json.dumps(inv.event), inv,
                               "dead-letter queue", attributes={
                                   "RequestID": inv.request_id, "ErrorCode": "200",
                                   "ErrorMessage": str(last.get("errorMessage", condition))})
        if sent:
            self._finish(inv, "sent-to-destination")
            return
        log.error("%s: %s failed %d time(s) (%s) and has no on-failure destination or "
                  "dead-letter queue: event dropped: %s", inv.source or "invoke",
                  inv.function_arn, len(inv.attempts), condition, json.dumps(inv.event))
        self._finish(inv, "dropped")

    def _record(self, inv: Invocation, condition: str) -> dict:
        """The invocation record AWS sends to an on-failure destination."""
        arn = inv.function_arn
        qualified = arn if arn.count(":") >= 7 else arn + ":$LATEST"
        last = inv.errors[-1] if inv.errors else {}
        return {
            "version": "1.0",
            "timestamp": datetime.fromtimestamp(self.clock.time(), timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "requestContext": {"requestId": inv.request_id, "functionArn": qualified,
                               "condition": condition,
                               "approximateInvokeCount": len(inv.attempts)},
            "requestPayload": inv.event,
            "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
                                "functionError": "Unhandled"},
            "responsePayload": last,
        }

    def _send(self, arn: str, body: str, inv: Invocation, what: str,
              attributes: dict | None = None) -> bool:
        """SendMessage to the SQS queue ``arn``; False (with a log line) for other kinds of
        destination or when the queue is gone."""
        parts = arn.split(":")
        if len(parts) < 6 or parts[2] != "sqs":
            log.error("%s: %s %s is not an SQS queue; the local cloud delivers only to SQS",
                      inv.source or "invoke", what, arn)
            return False
        try:
            sqs = self._client("sqs")
            url = sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])[
                "QueueUrl"]
            params: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
            if attributes:
                params["MessageAttributes"] = {k: {"DataType": "String", "StringValue": v}
                                               for k, v in attributes.items()}
            sqs.send_message(**params)
        except Exception:  # noqa: BLE001 - the event is lost, as on AWS; the log says so
            log.exception("%s: could not send the failed event to the %s %s",
                          inv.source or "invoke", what, arn)
            return False
        log.warning("%s: %s failed %d time(s); event sent to its %s %s", inv.source or "invoke",
                    inv.function_arn, len(inv.attempts), what, arn)
        return True
