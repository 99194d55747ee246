"""The client-side token bucket and its knobs (providers/aws/throttle.py), on a fake clock.

The buckets follow EC2's "Request throttling for the Amazon EC2 API" page
(docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html); what a user sees of them on
the moto server (waits, counts, sharing between clients) is in tests/aws/test_throttle.py.
"""

from __future__ import annotations

import threading

import pytest

from condor_annex.errors import BadInputError
from condor_annex.providers.aws import throttle
from condor_annex.providers.aws.throttle import TokenBucket, bucket_name, parse_bucket


class FakeTime:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_lets_its_capacity_through_then_paces_at_the_refill_rate():
    t = FakeTime()
    b = TokenBucket(3, 2.0, clock=t)
    assert [b.take() for _ in range(3)] == [0, 0, 0]
    # Each further caller waits for its own token: 1/2 s, then 1 s, then 1.5 s (a queue).
    assert [b.take() for _ in range(3)] == [0.5, 1.0, 1.5]
    t.now += 1.5   # three tokens refilled: the debt is paid, none to spare
    assert b.take() == 0.5
    assert b.taken == 7


def test_refill_stops_at_capacity():
    t = FakeTime()
    b = TokenBucket(2, 10.0, clock=t)
    b.take()
    t.now += 3600   # an hour idle
    assert b.tokens == 2 and b.full()
    assert [b.take(), b.take(), b.take()] == [0, 0, 0.1]


def test_drain_empties_the_bucket_but_keeps_waiting_callers_in_line():
    t = FakeTime()
    b = TokenBucket(50, 5.0, clock=t)
    b.drain()
    assert b.take() == pytest.approx(0.2)   # the next token, one refill away
    b.drain()   # already in debt: the queue is kept, not forgiven
    assert b.take() == pytest.approx(0.4)


def test_resize_keeps_the_tokens_and_caps_them_at_the_new_capacity():
    t = FakeTime()
    b = TokenBucket(50, 10.0, clock=t)
    b.resize(5, 1.0)
    assert b.tokens == 5
    assert [b.take() for _ in range(6)][-1] == pytest.approx(1.0)


def test_concurrent_callers_each_take_one_token():
    t = FakeTime()
    b = TokenBucket(1, 1.0, clock=t)
    waits: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        w = b.take()
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(waits) == [float(i) for i in range(20)]   # no two callers share a token


@pytest.mark.parametrize("operation,name", [
    ("DescribeInstances", "describe"), ("DescribeFleets", "describe"),
    ("GetConsoleOutput", "describe"), ("DescribeLaunchTemplateVersions", "describe"),
    ("RunInstances", "mutate"), ("TerminateInstances", "mutate"), ("CreateFleet", "mutate"),
    ("CreateTags", "mutate"), ("CreateKeyPair", "mutate"),
    ("DescribeSpotFleetRequests", "DescribeSpotFleetRequests"),   # 50 / 3 of its own
    ("CopyImage", "CopyImage"),
])
def test_each_ec2_action_draws_on_the_bucket_of_its_category(operation, name):
    assert bucket_name(operation) == name


def test_the_defaults_are_the_smallest_documented_buckets():
    # Page's table: unfiltered non-mutating 50/10 is the smaller describe bucket; mutating 50/5.
    assert throttle.DESCRIBE_BUCKET == (50, 10) and throttle.MUTATE_BUCKET == (50, 5)
    assert throttle.OWN_BUCKETS["DescribeSpotFleetRequests"] == (50, 3)


@pytest.mark.parametrize("text,want", [
    ("", (50, 10)), ("  ", (50, 10)), ("100 20", (100, 20)), ("100, 20", (100, 20)),
    ("1 0.5", (1, 0.5)),
])
def test_bucket_knob_parses(text, want):
    assert parse_bucket(text, "ANNEX_EC2_DESCRIBE_BUCKET", (50, 10)) == want


@pytest.mark.parametrize("text", ["fast", "100", "100 20 3", "0 10", "50 0", "50 -1",
                                  "nan 10", "inf 5", "50 x"])
def test_a_bad_bucket_knob_is_one_line_naming_the_knob(text):
    with pytest.raises(BadInputError) as e:
        parse_bucket(text, "ANNEX_EC2_MUTATE_BUCKET", (50, 5))
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("ANNEX_EC2_MUTATE_BUCKET: ")
    assert "ANNEX_EC2_MUTATE_BUCKET = 50 5" in message   # the fix, in the syntax typed


def test_buckets_are_shared_by_key_and_separate_across_accounts_and_regions():
    throttle.forget()
    try:
        a = throttle.bucket("", "AKIA1", "us-east-1", "describe")
        assert throttle.bucket("", "AKIA1", "us-east-1", "describe") is a
        assert throttle.bucket("", "AKIA1", "us-west-2", "describe") is not a
        assert throttle.bucket("", "AKIA2", "us-east-1", "describe") is not a
        assert throttle.bucket("", "AKIA1", "us-east-1", "mutate") is not a
        assert throttle.bucket("http://127.0.0.1:1", "AKIA1", "us-east-1", "describe") is not a
    finally:
        throttle.forget()


def test_idle_full_buckets_are_dropped_when_many_accumulate():
    # A daemon whose role credentials rotate gets a new key each hour: old buckets must go.
    t = FakeTime()
    throttle.use_clock(t, lambda s: None)
    try:
        busy = throttle.bucket("", "ASIA-busy", "us-east-1", "mutate")
        for _ in range(60):
            busy.take()
        for i in range(throttle._MAX_IDLE_BUCKETS + 10):
            throttle.bucket("", f"ASIA{i}", "us-east-1", "describe")
        assert len(throttle._buckets) <= throttle._MAX_IDLE_BUCKETS
        assert throttle.bucket("", "ASIA-busy", "us-east-1", "mutate") is busy   # in debt: kept
    finally:
        throttle.forget()
