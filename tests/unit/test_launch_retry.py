"""The launch retry policy: what is retried, what is looked up before a resend, and the bounds.

Pure tests of :func:`launch_with_retries` with counted fake calls and a fake clock; the same
policy is exercised against the moto server through the gateway in tests/aws/test_create_safety.py.
"""

from __future__ import annotations

import random

import pytest

from condor_annex.errors import (CapacityError, InvalidRequestError, ProviderError,
                                 ThrottledError)
from condor_annex.providers.aws.launch_retry import launch_with_retries


class Clock:
    """A fake monotonic clock that :meth:`sleep` moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def _run(outcomes, found=None, total_s=120.0):
    """Run launch_with_retries over ``outcomes`` (exceptions to raise, else the value)."""
    clock = Clock()
    sent, looked = [], []

    def send():
        sent.append(1)
        o = outcomes[len(sent) - 1]
        if isinstance(o, BaseException):
            raise o
        return o

    def find():
        looked.append(1)
        return found(len(looked)) if found else None

    result = launch_with_retries(send, find, what="ec2.RunInstances", total_s=total_s,
                                 sleep=clock.sleep, clock=clock, rng=random.Random(7))
    return result, len(sent), len(looked), clock


def _throttled():
    return ThrottledError("ec2.RunInstances: RequestLimitExceeded: slow down",
                          code="RequestLimitExceeded", retryable=True)


def _lost():
    return ProviderError("ec2.RunInstances: cannot reach the endpoint",
                         code="ConnectionClosedError", retryable=True)


def test_throttling_is_retried_with_growing_jittered_delays_and_no_lookup():
    result, sent, looked, clock = _run([_throttled()] * 4 + ["ok"])
    assert result == "ok" and sent == 5
    # A throttled call did not run: nothing to look for.
    assert looked == 0
    assert all(0 <= d <= 0.5 * 2 ** n for n, d in enumerate(clock.sleeps))
    assert len(set(clock.sleeps)) == 4


def test_a_lost_reply_is_looked_up_before_the_resend_and_found_launch_is_the_answer():
    result, sent, looked, _ = _run([_lost(), "resent"], found=lambda n: "found-by-tag")
    assert result == "found-by-tag"
    assert sent == 1 and looked == 1


def test_a_lost_reply_with_nothing_found_resends_once():
    result, sent, looked, _ = _run([_lost(), "resent"])
    assert result == "resent" and sent == 2 and looked == 1


def test_the_instance_profile_race_after_setup_is_retried():
    race = InvalidRequestError("ec2.RunInstances: InvalidParameterValue: Value (annex-profile) "
                               "for parameter iamInstanceProfile.name is invalid. Invalid IAM "
                               "Instance Profile name", code="InvalidParameterValue")
    result, sent, _, _ = _run([race, race, "ok"])
    assert result == "ok" and sent == 3


@pytest.mark.parametrize("error", [
    CapacityError("ec2.RunInstances: InsufficientInstanceCapacity: none",
                  code="InsufficientInstanceCapacity"),
    InvalidRequestError("ec2.RunInstances: InvalidGroup.NotFound: sg-1",
                        code="InvalidGroup.NotFound"),
], ids=["capacity", "bad-parameter"])
def test_capacity_and_parameter_errors_fail_at_once_and_are_not_ambiguous(error):
    with pytest.raises(ProviderError) as info:
        _run([error])
    assert info.value is error and not info.value.ambiguous


def test_time_runs_out_with_the_last_error_marked_ambiguous_after_a_lost_reply():
    with pytest.raises(ProviderError) as info:
        _run([_lost()] + [_throttled()] * 100, total_s=20)
    assert info.value.ambiguous
    assert info.value.code == "RequestLimitExceeded"


def test_only_throttling_is_not_ambiguous_when_time_runs_out():
    with pytest.raises(ThrottledError) as info:
        _run([_throttled()] * 100, total_s=20)
    assert not info.value.ambiguous


def test_total_time_is_bounded_and_each_delay_capped():
    clock = Clock()

    def send():
        raise _throttled()

    with pytest.raises(ThrottledError):
        launch_with_retries(send, lambda: None, what="ec2.RunInstances", total_s=30,
                            sleep=clock.sleep, clock=clock, rng=random.Random(3))
    assert clock.now <= 30
    assert max(clock.sleeps) <= 8.0
    assert len(clock.sleeps) >= 5
