"""Throttle discipline on the moto server, through the AWS gateway (issue 11 item 8).

The gateway answers as AWS does over the account's API rate (EC2 ``RequestLimitExceeded``,
HTTP 503; STS ``Throttling``); providers/aws/throttle.py paces EC2 requests with one token bucket
per account and region shared by every client of the process, and counts throttled attempts
(``throttle.throttled_calls()``, what the daemon advertises).

Pacing is asserted on a fake clock (it moves only when the bucket makes a caller wait, so the
waits are exact and ordered), and once on the real clock as a lower bound only.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest

from condor_annex import config
from condor_annex.errors import BadInputError
from condor_annex.providers.aws import throttle
from condor_annex.providers.aws.session import make_client


class FakeTime:
    """The buckets' clock: it advances only by the waits the buckets ask for."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


@pytest.fixture
def via_gateway(aws, gateway):
    """The test account's settings with the gateway as endpoint; fresh buckets before and
    after (buckets are process-wide)."""
    throttle.forget()
    yield dataclasses.replace(aws, endpoint_url=gateway.url)
    throttle.forget()


@pytest.fixture
def fake_time(via_gateway):
    t = FakeTime()
    throttle.use_clock(t.clock, t.sleep)
    return t


def _other_account(aws, tmp_path, key: str):
    """The same settings signed with another access key (another account's, to the buckets)."""
    access, secret = tmp_path / f"access-{key}", tmp_path / f"secret-{key}"
    access.write_text(key + "\n")
    secret.write_text("testing\n")
    access.chmod(0o600)
    secret.chmod(0o600)
    return dataclasses.replace(aws, access_key_file=str(access), secret_key_file=str(secret))


def test_a_throttled_describe_is_counted_and_succeeds_after_backoff(via_gateway, gateway):
    gateway.throttle("ec2.DescribeInstances", times=2)
    before = throttle.throttled_calls()

    reply = make_client(via_gateway, "ec2").describe_instances()

    assert reply["Reservations"] == []
    assert reply["ResponseMetadata"]["RetryAttempts"] == 2   # botocore's backoff retried
    assert gateway.outcomes("ec2.DescribeInstances") == ["throttle", "throttle", "forwarded"]
    assert throttle.throttled_calls() - before == 2


def test_throttling_of_other_services_is_counted_too(via_gateway, gateway):
    gateway.throttle("sts.GetCallerIdentity", times=1)   # query protocol: "Throttling", 400
    before = throttle.throttled_calls()

    assert make_client(via_gateway, "sts").get_caller_identity()["Account"]

    assert gateway.outcomes("sts.GetCallerIdentity") == ["throttle", "forwarded"]
    assert throttle.throttled_calls() - before == 1


def test_a_call_throttled_out_is_counted_per_attempt(via_gateway, gateway):
    from botocore.exceptions import ClientError
    gateway.throttle("ec2.DescribeKeyPairs")
    before = throttle.throttled_calls()

    with pytest.raises(ClientError) as e:
        make_client(via_gateway, "ec2", fast_fail=True).describe_key_pairs()

    assert e.value.response["Error"]["Code"] == "RequestLimitExceeded"
    assert throttle.throttled_calls() - before == 1 == gateway.count("ec2.DescribeKeyPairs")


def test_two_clients_of_one_account_and_region_share_one_bucket(aws, via_gateway, fake_time,
                                                                 gateway, tmp_path):
    # A bucket of 1 token refilled at 2 per second: every call after the first waits 1/2 s,
    # whichever client (or thread) makes it.  Two buckets would let each client's first call
    # through at once.
    settings = dataclasses.replace(via_gateway, ec2_describe_bucket="1 2")
    a, b = make_client(settings, "ec2"), make_client(settings, "ec2")
    for client in (a, b, a, b):
        client.describe_instances()
    other_thread = threading.Thread(target=lambda: make_client(settings, "ec2")
                                    .describe_instances())
    other_thread.start()
    other_thread.join()
    assert fake_time.slept == [0.5, 0.5, 0.5, 0.5]
    shared = throttle.bucket(settings.endpoint_url or "", "testing", "us-east-1", "describe")
    assert shared.taken == 5 == gateway.count("ec2.DescribeInstances")

    # Another region, another account, and the mutating bucket are not that bucket.
    fake_time.slept.clear()
    make_client(dataclasses.replace(settings, region="us-west-2"), "ec2").describe_instances()
    make_client(_other_account(settings, tmp_path, "AKIAOTHER"), "ec2").describe_instances()
    a.create_key_pair(KeyName="throttle-test")
    a.delete_key_pair(KeyName="throttle-test")
    assert fake_time.slept == []
    # The same account and region again: still in line behind the five.
    b.describe_instances()
    assert fake_time.slept == [0.5]


def test_a_throttling_answer_makes_every_client_of_the_account_wait(via_gateway, fake_time,
                                                                     gateway):
    # Plenty of tokens (5), slow refill (1/s): only a throttling answer makes anyone wait.
    settings = dataclasses.replace(via_gateway, ec2_describe_bucket="5 1")
    a, b = make_client(settings, "ec2"), make_client(settings, "ec2")
    a.describe_instances()
    assert fake_time.slept == []
    gateway.throttle("ec2.DescribeInstances", times=1)

    b.describe_instances()   # refused once: the bucket is emptied, b's retry waits a refill
    a.describe_instances()   # and so does the other client's next call

    assert fake_time.slept == [1.0, 1.0]
    assert gateway.outcomes("ec2.DescribeInstances") == \
        ["forwarded", "throttle", "forwarded", "forwarded"]


def test_pacing_really_waits(via_gateway):
    # Real clock, lower bound only: 6 calls through a 1-token bucket refilled 20 times a second
    # cannot take less than 5/20 s, however fast the machine.
    settings = dataclasses.replace(via_gateway, ec2_describe_bucket="1 20")
    a, b = make_client(settings, "ec2"), make_client(settings, "ec2")
    started = time.monotonic()
    for client in (a, b, a, b, a, b):
        client.describe_instances()
    assert time.monotonic() - started >= 5 / 20 - 0.005


def test_the_local_clouds_own_clients_are_not_paced(via_gateway, fake_time):
    settings = dataclasses.replace(via_gateway, ec2_describe_bucket="1 1")
    for _ in range(3):
        make_client(settings, "ec2", paced=False).describe_instances()
    assert fake_time.slept == []


def test_the_bucket_knobs_come_from_the_user_config(via_gateway, user_config, fake_time):
    config.write_block("test", {"ANNEX_AWS_ENDPOINT_URL": via_gateway.endpoint_url or "",
                                "ANNEX_DEFAULT_ACCESS_KEY_FILE": via_gateway.access_key_file,
                                "ANNEX_DEFAULT_SECRET_KEY_FILE": via_gateway.secret_key_file,
                                "ANNEX_EC2_DESCRIBE_BUCKET": "100 20",
                                "us_west_2.ANNEX_EC2_MUTATE_BUCKET": "10 1"})
    east = config.aws_settings(config.read_knobs(user_config))
    west = config.aws_settings(config.read_knobs(user_config), region="us-west-2")
    make_client(east, "ec2").describe_instances()
    make_client(west, "ec2").describe_instances()
    endpoint = via_gateway.endpoint_url or ""
    described = throttle.bucket(endpoint, "testing", "us-east-1", "describe", None)
    assert (described.capacity, described.refill_per_s) == (100, 20)
    assert west.ec2_mutate_bucket == "10 1" and east.ec2_mutate_bucket == ""


def test_a_bad_bucket_knob_refuses_before_any_call(via_gateway, gateway):
    settings = dataclasses.replace(via_gateway, ec2_mutate_bucket="lots")
    with pytest.raises(BadInputError, match=r"^ANNEX_EC2_MUTATE_BUCKET: 'lots' must be"):
        make_client(settings, "s3")
    assert gateway.count() == 0


def test_create_with_a_bad_bucket_knob_exits_2_and_creates_nothing(account, outputs, capsys):
    from condor_annex.cli.main import main
    config.write_block("setup", config.setup_knobs(outputs))
    config.write_block("knob", {"ANNEX_EC2_DESCRIBE_BUCKET": "50"})
    capsys.readouterr()

    code = main(["create", "knobbed", "--count", "1"])

    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and "ANNEX_EC2_DESCRIBE_BUCKET" in err, err
    assert "Traceback" not in out + err
    config.remove_block("knob")
    ec2 = make_client(config.aws_settings(), "ec2")
    assert ec2.describe_instances()["Reservations"] == []
