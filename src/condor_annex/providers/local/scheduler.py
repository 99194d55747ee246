"""EventBridge Scheduler for the local cloud: schedules fire when AWS would fire them.

moto stores schedules (CreateSchedule, UpdateSchedule, ...) but never fires one. The local
cloud reads them back through the Scheduler API (ListSchedules, GetSchedule against the
emulator) and fires them with AWS's timing rules
(docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html):

* a one-time ``at(yyyy-mm-ddThh:mm:ss)`` schedule fires **once, at some moment inside the
  minute of its time** — uniformly in [minute start, minute start + 60 s), so possibly *before*
  the second it names ("one-minute precision"); with the ``schedule-early`` fault injection at
  the first second of that minute, the earliest moment AWS may choose. A flexible time window
  (``FlexibleTimeWindow.Mode FLEXIBLE``) adds a random delay of up to its
  ``MaximumWindowInMinutes``. After it fired, a schedule whose ``ActionAfterCompletion`` is
  ``DELETE`` is deleted; otherwise it stays, and never fires again;
* a recurring ``rate(N minutes|hours|days)`` schedule fires every period (divided by the
  clock's time scale), the first time one period after the local cloud first saw it, never
  before its ``StartDate`` nor after its ``EndDate``; missed periods are not made up;
* ``cron(...)`` is not supported by the local cloud: one log line per schedule, no firing;
* a ``DISABLED`` schedule does not fire.

Each occurrence fires once (the state is kept per schedule, its creation date and its
expression, so an ``extend`` that moves an ``at()`` is a new occurrence). A Lambda target is
invoked asynchronously, with the schedule's ``Input`` as the event
(:class:`~condor_annex.providers.local.lambda_async.AsyncInvoker`); other targets are logged
and skipped.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from typing import Any, Callable

log = logging.getLogger("condor_annex.local.scheduler")

_AT = re.compile(r"at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)")
_RATE = re.compile(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)")
_UNIT_S = {"minute": 60, "hour": 3600, "day": 86400}


@dataclass
class Fired:
    """One schedule occurrence that fired.

    Attributes:
        group, name: the schedule.
        expression: its ScheduleExpression.
        planned_at: clock time (epoch s) the occurrence was due.
        fired_at: clock time of the tick that fired it.
        invocation: the queued Lambda invocation, or None (target not a Lambda function).
    """

    group: str
    name: str
    expression: str
    planned_at: float
    fired_at: float
    invocation: Any = None


def parse_at(expression: str, tz: str | None = "UTC") -> float | None:
    """Epoch seconds named by ``at(yyyy-mm-ddThh:mm:ss)`` in time zone ``tz``; None for any
    other expression."""
    m = _AT.fullmatch(expression.strip())
    if not m:
        return None
    zone: tzinfo
    if not tz or tz == "UTC":
        zone = timezone.utc
    else:
        from zoneinfo import ZoneInfo
        zone = ZoneInfo(tz)
    return datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=zone).timestamp()


def parse_rate(expression: str) -> float | None:
    """The period in seconds of ``rate(N minutes|hours|days)`` (N >= 1); None for any other
    expression."""
    m = _RATE.fullmatch(expression.strip())
    if not m or int(m.group(1)) < 1:
        return None
    return int(m.group(1)) * _UNIT_S[m.group(2).rstrip("s")]


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class Scheduler:
    """Fires the emulator's schedules (see the module docstring); call :meth:`tick` often
    (every second in the daemon; tests call it with a manual clock).

    Args:
        client: ``client("scheduler") -> boto3 client`` against the emulator.
        invoker: where Lambda targets go (:class:`~condor_annex.providers.local.lambda_async.
            AsyncInvoker`, or anything with ``invoke(function_arn, event, source)``).
        clock: the local cloud's clock.
        injections: the fault injections (``schedule_early()``), or None.
        rng: the random draw of each one-time schedule's moment (a seeded
            ``random.Random`` in tests).
    """

    def __init__(self, client: Callable[[str], Any], invoker: Any, clock: Any,
                 injections: Any = None, rng: random.Random | None = None) -> None:
        self._client = client
        self.invoker = invoker
        self.clock = clock
        self.injections = injections
        self.rng = rng or random.Random()
        self._full: dict[tuple[str, str], tuple[Any, dict]] = {}   # (group, name) -> schedule
        self._state: dict[tuple, dict] = {}      # per occurrence key: offset / next / fired
        self._told: set[tuple] = set()           # "not supported" said once per occurrence
        self.fired: list[Fired] = []             # every occurrence fired (tests, the log)

    def _list(self, sch) -> list[dict]:
        """Every schedule, full (GetSchedule only for new or changed ones)."""
        out, seen = [], set()
        for page in sch.get_paginator("list_schedules").paginate():
            for item in page.get("Schedules", []):
                key = (item.get("GroupName") or "default", item["Name"])
                seen.add(key)
                stamp = item.get("LastModificationDate")
                cached = self._full.get(key)
                if cached is None or cached[0] != stamp or stamp is None:
                    try:
                        full = sch.get_schedule(Name=key[1], GroupName=key[0])
                    except Exception as e:  # noqa: BLE001 - deleted between the two calls
                        if getattr(e, "response", {}).get("Error", {}).get("Code") \
                                == "ResourceNotFoundException":
                            continue
                        raise
                    cached = self._full[key] = (stamp, full)
                out.append(cached[1])
        for key in set(self._full) - seen:
            del self._full[key]
        return out

    def tick(self) -> list[Fired]:
        """Fire every schedule occurrence due now; returns what fired."""
        sch = self._client("scheduler")
        now = self.clock.time()
        early = bool(self.injections is not None and self.injections.schedule_early())
        fired: list[Fired] = []
        live_keys = set()
        for s in self._list(sch):
            group, name = s.get("GroupName") or "default", s["Name"]
            expr = (s.get("ScheduleExpression") or "").strip()
            key = (group, name, str(s.get("CreationDate")), expr)
            live_keys.add(key)
            if s.get("State", "ENABLED") != "ENABLED":
                continue
            planned = self._due(key, s, expr, now, early)
            if planned is None:
                continue
            f = Fired(group, name, expr, planned, now, self._fire(s))
            fired.append(f)
            log.info("schedule %s/%s (%s) fired at %s (planned %s)", group, name, expr,
                     _iso(now), _iso(planned))
            if expr.startswith("at(") and s.get("ActionAfterCompletion") == "DELETE":
                try:
                    sch.delete_schedule(Name=name, GroupName=group)
                except Exception:  # noqa: BLE001 - already gone
                    log.info("schedule %s/%s: already deleted", group, name)
        for key in set(self._state) - live_keys:
            del self._state[key]
        self.fired.extend(fired)
        return fired

    def _due(self, key: tuple, s: dict, expr: str, now: float, early: bool) -> float | None:
        """The planned time of the occurrence due now (and mark it fired), or None."""
        state = self._state.setdefault(key, {})
        window = s.get("FlexibleTimeWindow") or {}
        flex_s = (60.0 * float(window.get("MaximumWindowInMinutes") or 0)
                  if window.get("Mode") == "FLEXIBLE" else 0.0)
        at = parse_at(expr, s.get("ScheduleExpressionTimezone") or "UTC") \
            if expr.startswith("at(") else None
        if at is not None:
            if state.get("fired"):
                return None
            if "offset" not in state:   # drawn once per occurrence
                state["offset"] = self.rng.uniform(0.0, 60.0)
                state["flex"] = self.rng.uniform(0.0, flex_s) if flex_s else 0.0
            minute = at - (at % 60)
            planned = minute + (0.0 if early else state["offset"]) + state["flex"]
            if now < planned:
                return None
            state["fired"] = True
            return planned
        period = parse_rate(expr)
        if period is not None:
            step = self.clock.scaled(period)
            if "next" not in state:
                start = _epoch(s.get("StartDate"))
                state["next"] = max(now + step, start or 0.0)
                return None
            end = _epoch(s.get("EndDate"))
            if now < state["next"] or (end is not None and now > end):
                return None
            planned = state["next"]
            while state["next"] <= now:   # missed periods are not made up
                state["next"] += step
            return planned
        if key not in self._told:
            self._told.add(key)
            log.warning("schedule %s/%s: %r is not supported by the local cloud (at() and "
                        "rate() are); it never fires here", key[0], key[1], expr)
        return None

    def _fire(self, s: dict) -> Any:
        target = s.get("Target") or {}
        arn = target.get("Arn", "")
        source = f"schedule {s.get('GroupName') or 'default'}/{s['Name']}"
        if ":lambda:" not in arn or ":function:" not in arn:
            log.warning("%s: target %s is not a Lambda function; the local cloud skips it",
                        source, arn)
            return None
        text = target.get("Input")
        if text is None:
            event: Any = {}
        else:
            try:
                event = json.loads(text)
            except ValueError:
                event = text
        return self.invoker.invoke(arn, event, source=source)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S.%f")[:-4]
