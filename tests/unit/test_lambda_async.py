"""The local cloud's Lambda asynchronous invocation (providers/local/lambda_async.py): the real
lease function's code run in-process against the moto server, on a manual clock, with AWS's
retries (+60 s, +120 s), event invoke config and on-failure destination."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from condor_annex.model import TAG_ANNEX_NAME
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.clock import Clock, ManualClock
from condor_annex.providers.local import cloud
from condor_annex.providers.local.cloud import MotoFleetEc2
from condor_annex.providers.local.inject import Injections
from condor_annex.providers.local.lambda_async import AsyncInvoker

MOTO_AMI = "ami-03cf127a"
START = 1_900_000_000.0


@pytest.fixture
def queue(aws):
    """An SQS queue: ``(url, arn)``."""
    sqs = make_client(aws, "sqs")
    url = sqs.create_queue(QueueName="lease-failures")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"]
    return url, arn


@pytest.fixture
def injections(tmp_path):
    return Injections(tmp_path / "inject.json")


def _invoker(aws, clock, injections, **kw):
    def handler_clients():
        clients = {s: make_client(aws, s) for s in ("ec2", "s3", "scheduler", "iam")}
        clients["ec2"] = MotoFleetEc2(clients["ec2"])
        return clients
    return AsyncInvoker(lambda s: make_client(aws, s), handler_clients, clock, injections, **kw)


def _on_failure(aws, function_arn, queue_arn, retries=2):
    make_client(aws, "lambda").put_function_event_invoke_config(
        FunctionName=function_arn, MaximumRetryAttempts=retries,
        DestinationConfig={"OnFailure": {"Destination": queue_arn}})


def _messages(aws, url) -> list[dict]:
    got = make_client(aws, "sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                  WaitTimeSeconds=0).get("Messages", [])
    return [json.loads(m["Body"]) for m in got]


def _drive(invoker, clock, seconds, step=1.0):
    """Run the queue on the manual clock for ``seconds`` (wall) in ``step`` s ticks."""
    end = clock.time() + seconds
    while clock.time() <= end:
        invoker.run_due()
        clock.advance(step)


def _early_lease_event(name="early"):
    """A lease event 10 minutes before its end: the enforcer says "not due" (an error)."""
    return {"AnnexName": name, "S3BucketName": "no-bucket", "BundleKey": f"config-{name}.tar.gz",
            "LeaseExpiration": int(START) + 600, "ScheduleName": f"annex-lease-{name}",
            "ScheduleGroup": "default"}


@pytest.mark.parametrize("scale", [1, 10])
def test_a_failing_invocation_is_retried_twice_then_sent_to_the_on_failure_queue(
        aws, function_arn, queue, injections, scale):
    url, arn = queue
    _on_failure(aws, function_arn, arn)
    clock = ManualClock(START, scale=scale)
    invoker = _invoker(aws, clock, injections)
    event = _early_lease_event()

    inv = invoker.invoke(function_arn, event)
    _drive(invoker, clock, 400 / scale)

    # The first attempt, then one minute and two more minutes later (scaled), and no more.
    assert [t - START for t in inv.attempts] == [0, 60 / scale, 180 / scale]
    assert inv.outcome == "sent-to-destination"
    [record] = _messages(aws, url)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].startswith(function_arn)
    assert record["requestPayload"] == event
    assert record["responsePayload"]["errorType"] == "NotDue"
    assert "not due" in record["responsePayload"]["errorMessage"]


def test_without_a_destination_the_failed_event_is_dropped(aws, function_arn, queue,
                                                           injections, caplog):
    url, _ = queue     # exists, but is nobody's destination
    clock = ManualClock(START)
    invoker = _invoker(aws, clock, injections)
    caplog.set_level(logging.INFO, logger="condor_annex.local.lambda")

    inv = invoker.invoke(function_arn, _early_lease_event("dropped"))
    _drive(invoker, clock, 400, step=5)

    assert len(inv.attempts) == 3 and inv.outcome == "dropped"
    assert invoker.pending() == 0
    assert _messages(aws, url) == []
    assert any("no on-failure destination" in r.getMessage() and "event dropped" in
               r.getMessage() for r in caplog.records)


def test_maximum_retry_attempts_0_sends_the_first_failure_at_once(aws, function_arn, queue,
                                                                  injections):
    url, arn = queue
    _on_failure(aws, function_arn, arn, retries=0)
    clock = ManualClock(START)
    invoker = _invoker(aws, clock, injections)
    inv = invoker.invoke(function_arn, _early_lease_event())
    _drive(invoker, clock, 300, step=10)
    assert len(inv.attempts) == 1
    assert [m["requestContext"]["approximateInvokeCount"] for m in _messages(aws, url)] == [1]


def _untagged_instance_ended(aws) -> dict:
    """EventBridge's state-change event for an instance of no annex: the function succeeds."""
    ec2 = make_client(aws, "ec2")
    iid = ec2.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"]
    ec2.terminate_instances(InstanceIds=[iid])
    return {"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
            "detail": {"instance-id": iid, "state": "terminated"}}


def test_lambda_error_3_fails_three_invocations_then_the_function_runs_again(
        aws, function_arn, queue, injections):
    url, arn = queue
    _on_failure(aws, function_arn, arn)
    clock = ManualClock(START)
    invoker = _invoker(aws, clock, injections)
    event = _untagged_instance_ended(aws)
    injections.apply("lambda-error", 3)

    first = invoker.invoke(function_arn, event)
    _drive(invoker, clock, 400, step=5)
    assert len(first.attempts) == 3 and first.outcome == "sent-to-destination"
    [record] = _messages(aws, url)
    assert record["responsePayload"]["errorType"] == "InjectedLambdaError"
    assert injections.describe() == []              # all three used

    second = invoker.invoke(function_arn, event)    # the fourth invocation runs the code
    invoker.run_due()
    assert second.outcome == "succeeded" and len(second.attempts) == 1
    assert second.result["Status"] == "not-annex"


def test_one_injected_error_is_retried_after_a_minute_and_succeeds(aws, function_arn, queue,
                                                                   injections):
    url, arn = queue
    _on_failure(aws, function_arn, arn)
    clock = ManualClock(START)
    invoker = _invoker(aws, clock, injections)
    injections.apply("lambda-error", 1)
    inv = invoker.invoke(function_arn, _untagged_instance_ended(aws))
    _drive(invoker, clock, 200, step=5)
    assert [t - START for t in inv.attempts] == [0, 60] and inv.outcome == "succeeded"
    assert _messages(aws, url) == []


@pytest.mark.parametrize("scale", [1, 10])
def test_an_enforcer_invoked_early_in_its_minute_ends_the_annex_at_the_lease_end(
        aws, function_arn, injections, scale):
    # Also with a time scale: the wait ends at an absolute moment, so it is never shortened
    # (a scaled wait ended annexes 36 s before their lease end at scale 10).
    ec2, s3 = make_client(aws, "ec2"), make_client(aws, "s3")
    s3.create_bucket(Bucket="annex-bucket")
    s3.put_object(Bucket="annex-bucket", Key="config-a.tar.gz", Body=b"bundle")
    iid = ec2.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1, TagSpecifications=[{
        "ResourceType": "instance", "Tags": [{"Key": TAG_ANNEX_NAME, "Value": "a"}]}])[
        "Instances"][0]["InstanceId"]
    clock = ManualClock(START, scale=scale)
    invoker = _invoker(aws, clock, injections)
    event = {"AnnexName": "a", "S3BucketName": "annex-bucket", "BundleKey": "config-a.tar.gz",
             "LeaseExpiration": int(START) + 40, "ScheduleName": "annex-lease-a",
             "ScheduleGroup": "default"}

    inv = invoker.invoke(function_arn, event)    # 40 s early: the enforcer waits it out
    invoker.run_due()

    assert inv.outcome == "succeeded" and inv.result["Status"] == "ended"
    assert clock.time() >= START + 40                      # never before the lease end
    state = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert state["State"]["Name"] in ("shutting-down", "terminated")


def test_a_sleeping_invocation_does_not_hold_up_the_others(aws, function_arn, injections):
    release = threading.Event()

    def code(event, clients, clock):   # the function's code: one call blocks, one returns
        if event.get("block"):
            release.wait(10)
        return {"ok": True}
    invoker = _invoker(aws, Clock(scale=1), injections, code=code).start()
    try:
        blocked = invoker.invoke(function_arn, {"block": True})
        quick = invoker.invoke(function_arn, {"block": False})
        assert quick.done.wait(5) and quick.outcome == "succeeded"
        assert not blocked.done.is_set()
    finally:
        release.set()
        assert blocked.done.wait(5)
        invoker.stop()


def test_the_local_cloud_invokes_setups_function_for_its_rule_and_a_lease_schedule(
        aws, outputs, injections):
    import random
    from datetime import datetime, timedelta, timezone

    from condor_annex.providers.aws.provider import AwsProvider
    from condor_annex.providers.local.scheduler import Scheduler

    local = cloud.LocalCloud()
    local.settings = aws
    clock = ManualClock(datetime.now(timezone.utc).timestamp())
    local.lambda_queue = AsyncInvoker(local._client, local._handler_clients, clock, injections)
    local.scheduler = Scheduler(local._client, local.lambda_queue, clock, injections,
                                rng=random.Random(0))

    # An instance ends: EventBridge's state-change event goes to setup's rule's target.
    event = _untagged_instance_ended(aws)
    local._instance_ended(event["detail"]["instance-id"])
    [ended] = local.lambda_queue.history
    assert ended.function_arn == outputs.lease_function_arn
    assert ended.event["detail"] == event["detail"]
    assert ended.event["detail-type"] == "EC2 Instance State-change Notification"
    local.lambda_queue.run_due()
    assert ended.outcome == "succeeded" and ended.result["Status"] == "not-annex"

    # A lease made by create fires into the same function, with its lease event.
    provider = AwsProvider(aws, outputs)
    lease = provider.create_lease("a", datetime.now(timezone.utc) + timedelta(minutes=2))
    assert local.fire_due_leases() == []
    clock.advance(240)
    [fired] = local.fire_due_leases()
    assert fired.invocation.function_arn == outputs.lease_function_arn
    assert fired.invocation.event == provider.lease_event(lease)
