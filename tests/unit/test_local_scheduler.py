"""The local cloud's EventBridge Scheduler (providers/local/scheduler.py) against the moto server,
on a manual clock: when AWS fires one-time and recurring schedules, and what it leaves."""

from __future__ import annotations

import json
import random
from datetime import datetime, timezone

import pytest

from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.clock import ManualClock
from condor_annex.providers.local.inject import Injections
from condor_annex.providers.local.lambda_async import AsyncInvoker
from condor_annex.providers.local.scheduler import Scheduler


@pytest.fixture
def make(aws, function_arn, tmp_path):
    """``make(start, seed=0, scale=1)`` -> (scheduler, clock, injections) on the emulator."""
    injections = Injections(tmp_path / "inject.json")

    def build(start: float, seed: int = 0, scale: float = 1.0):
        clock = ManualClock(start, scale=scale)
        client = lambda service: make_client(aws, service)  # noqa: E731
        invoker = AsyncInvoker(client, lambda: {}, clock, injections)
        return Scheduler(client, invoker, clock, injections, rng=random.Random(seed)), clock
    return build, injections


def _schedule(aws, function_arn, name, expression, **extra):
    make_client(aws, "scheduler").create_schedule(
        Name=name, GroupName="default", ScheduleExpression=expression,
        FlexibleTimeWindow={"Mode": "OFF"},
        Target={"Arn": function_arn, "RoleArn": "arn:aws:iam::123456789012:role/sched",
                "Input": json.dumps({"AnnexName": name})}, **extra)


#: A lease end well in the future, 37 s into its minute.
MINUTE = (int(datetime.now(timezone.utc).timestamp()) // 60 + 60) * 60
LEASE_END = MINUTE + 37
AT = f"at({datetime.fromtimestamp(LEASE_END, timezone.utc):%Y-%m-%dT%H:%M:%S})"


def _run(scheduler, clock, until: float, extra=()) -> list:
    """Tick once a second until ``until``, then at each of ``extra``; every occurrence fired,
    with its tick's time."""
    fired = []
    while clock.time() <= until:
        fired += [(clock.time(), f) for f in scheduler.tick()]
        clock.advance(1)
    for t in extra:
        clock.advance(t - clock.time())
        fired += [(clock.time(), f) for f in scheduler.tick()]
    return fired


def test_a_one_time_schedule_fires_once_inside_its_minute_sometimes_before_its_second(
        aws, function_arn, make):
    build, _ = make
    names = [f"annex-lease-{i}" for i in range(10)]
    for name in names:
        _schedule(aws, function_arn, name, AT)
    scheduler, clock = build(MINUTE - 2, seed=1)
    fired = _run(scheduler, clock, MINUTE + 61, extra=(MINUTE + 600, MINUTE + 3600))
    assert sorted(f.name for _, f in fired) == sorted(names)     # each once, never again
    times = [t for t, _ in fired]
    assert all(MINUTE <= t < MINUTE + 60 for t in times), times   # inside its minute
    assert {f.name: f.invocation.event for _, f in fired} == {n: {"AnnexName": n} for n in names}
    # EventBridge Scheduler has one-minute precision: some come before the named second (the
    # old local cloud fired only at or after it), and the moment is drawn, not fixed.
    assert min(times) < LEASE_END
    assert len(set(times)) > 1


def test_schedule_early_fires_at_the_first_second_of_the_minute(aws, function_arn, make):
    build, injections = make
    _schedule(aws, function_arn, "annex-lease-a", AT)
    injections.apply("schedule-early")
    scheduler, clock = build(MINUTE - 3)
    fired = _run(scheduler, clock, MINUTE + 2, extra=(MINUTE + 120,))
    assert [t for t, _ in fired] == [MINUTE]


def test_a_fired_one_time_schedule_with_delete_after_completion_is_deleted(
        aws, function_arn, make):
    build, _ = make
    _schedule(aws, function_arn, "annex-lease-del", AT, ActionAfterCompletion="DELETE")
    _schedule(aws, function_arn, "annex-lease-keep", AT, ActionAfterCompletion="NONE")
    scheduler, clock = build(MINUTE + 60)   # both due
    assert {f.name for f in scheduler.tick()} == {"annex-lease-del", "annex-lease-keep"}
    names = {s["Name"] for s in make_client(aws, "scheduler").list_schedules()["Schedules"]}
    assert names == {"annex-lease-keep"}
    clock.advance(600)
    assert scheduler.tick() == []            # a kept one-time schedule never fires again


def test_rate_fires_every_period_of_the_clock_and_disabled_schedules_never(
        aws, function_arn, make):
    build, _ = make
    _schedule(aws, function_arn, "stack-lease-sweep", "rate(5 minutes)")
    _schedule(aws, function_arn, "stack-off", "rate(5 minutes)", State="DISABLED")
    _schedule(aws, function_arn, "annex-lease-off", AT, State="DISABLED")
    start = MINUTE - 1000
    scheduler, clock = build(start)
    fired = []
    while clock.time() <= start + 16 * 60:
        fired += [(clock.time() - start, f.name) for f in scheduler.tick()]
        clock.advance(10)
    assert fired == [(300, "stack-lease-sweep"), (600, "stack-lease-sweep"),
                     (900, "stack-lease-sweep")]


def test_rate_periods_shrink_with_the_time_scale(aws, function_arn, make):
    build, _ = make
    _schedule(aws, function_arn, "stack-lease-sweep", "rate(5 minutes)")
    scheduler, clock = build(MINUTE - 1000, scale=10)
    ticks = []
    for _ in range(100):    # 100 s of wall time: 5 min / 10 = every 30 s
        ticks += [clock.time() - (MINUTE - 1000) for _ in scheduler.tick()]
        clock.advance(1)
    assert ticks == [30, 60, 90]


def test_an_extended_lease_is_a_new_occurrence(aws, function_arn, make):
    build, _ = make
    _schedule(aws, function_arn, "annex-lease-a", AT)
    scheduler, clock = build(MINUTE + 60)
    assert len(scheduler.tick()) == 1
    later = f"at({datetime.fromtimestamp(LEASE_END + 3600, timezone.utc):%Y-%m-%dT%H:%M:%S})"
    sch = make_client(aws, "scheduler")
    full = sch.get_schedule(Name="annex-lease-a")
    sch.update_schedule(Name="annex-lease-a", ScheduleExpression=later,
                        FlexibleTimeWindow={"Mode": "OFF"}, Target=full["Target"])
    assert scheduler.tick() == []
    clock.advance(3600)
    assert [f.expression for f in scheduler.tick()] == [later]
