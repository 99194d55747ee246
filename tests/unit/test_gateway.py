"""The AWS gateway in front of moto: forwarding, identification, and each fault rule, proved with
real boto3 clients pointed at the gateway (fake credentials from tests/conftest.py)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from condor_annex.providers.local.gateway import Gateway, control, identify

AMI = "ami-03cf127a"     # an image moto knows
ONE_TRY = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=10)


def client(service: str, url: str, config: Config = ONE_TRY):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", config=config)


def reset(url: str) -> None:
    """Forget everything in moto (through the gateway, which also forgets its EC2 memory)."""
    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST"),
                           timeout=10).read()


@pytest.fixture
def gw(gateway):
    """The gateway in front of a freshly reset moto."""
    reset(gateway.url)
    return gateway


class FakeClock:
    """A gateway clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def instance_ids(ec2) -> list[str]:
    return [i["InstanceId"] for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]]


# ---------------------------------------------------------------------------------------------
# Identification


@pytest.mark.parametrize("method,path,headers,body,name,protocol", [
    ("POST", "/", {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
     b"Action=RunInstances&Version=2016-11-15", "ec2.RunInstances", "ec2"),
    ("POST", "/", {"Content-Type": "application/x-www-form-urlencoded"},
     b"Action=GetRole&RoleName=x", "iam.GetRole", "query"),
    ("POST", "/", {"X-Amz-Target": "AWSEvents.PutRule"}, b"{}", "events.PutRule", "json"),
    ("PUT", "/annex-bucket/config-a.tar.gz", {}, b"x", "s3.PutObject", "rest-xml"),
    ("HEAD", "/annex-bucket/k", {}, b"", "s3.HeadObject", "rest-xml"),
    ("GET", "/annex-bucket?list-type=2&prefix=a", {}, b"", "s3.ListObjectsV2", "rest-xml"),
    ("PUT", "/annex-bucket?tagging", {}, b"", "s3.PutBucketTagging", "rest-xml"),
    ("POST", "/annex-bucket?delete", {}, b"", "s3.DeleteObjects", "rest-xml"),
    ("GET", "/", {}, b"", "s3.ListBuckets", "rest-xml"),
    ("POST", "/schedules/annex-x", {}, b"{}", "scheduler.CreateSchedule", "rest-json"),
    ("GET", "/schedules?NamePrefix=annex", {}, b"", "scheduler.ListSchedules", "rest-json"),
    ("POST", "/2015-03-31/functions/annex-lease/invocations", {}, b"{}", "lambda.Invoke",
     "rest-json"),
])
def test_identify(method, path, headers, body, name, protocol):
    service = name.split(".")[0]
    headers = dict(headers, Host="127.0.0.1:5000", Authorization=(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/"
        f"{service}/aws4_request, SignedHeaders=host, Signature=00"))
    call = identify(method, path, headers, body)
    assert (call.name, call.protocol) == (name, protocol)


def test_identify_s3_virtual_host_and_presigned_url():
    assert identify("GET", "/k/x", {"Host": "bkt.s3.amazonaws.com"}).name == "s3.GetObject"
    assert identify("GET", "/", {"Host": "bkt.s3.us-east-1.amazonaws.com"}).name == \
        "s3.ListObjects"
    presigned = ("/bkt/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="
                 "testing%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=00")
    assert identify("GET", presigned, {"Host": "127.0.0.1:1"}).name == "s3.GetObject"


# ---------------------------------------------------------------------------------------------
# Forwarding


def test_forwards_every_protocol_and_counts(gw):
    ec2, s3, iam = client("ec2", gw.url), client("s3", gw.url), client("iam", gw.url)
    sched = client("scheduler", gw.url)
    assert ec2.describe_regions()["Regions"]
    s3.create_bucket(Bucket="annex-bucket")
    payload = os.urandom(300_000)
    s3.put_object(Bucket="annex-bucket", Key="a/b.bin", Body=payload)
    assert s3.get_object(Bucket="annex-bucket", Key="a/b.bin")["Body"].read() == payload
    assert s3.head_object(Bucket="annex-bucket", Key="a/b.bin")["ContentLength"] == len(payload)
    with pytest.raises(ClientError) as e:
        s3.head_object(Bucket="annex-bucket", Key="missing")
    assert e.value.response["Error"]["Code"] == "404"
    iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}")
    sched.create_schedule(Name="s", ScheduleExpression="at(2030-01-01T00:00:00)",
                          FlexibleTimeWindow={"Mode": "OFF"},
                          Target={"Arn": "arn:aws:lambda:us-east-1:123456789012:function:f",
                                  "RoleArn": "arn:aws:iam::123456789012:role/r"})
    assert sched.get_schedule(Name="s")["Name"] == "s"
    assert gw.calls == Counter({
        "ec2.DescribeRegions": 1, "s3.CreateBucket": 1, "s3.PutObject": 1, "s3.GetObject": 1,
        "s3.HeadObject": 2, "iam.CreateRole": 1, "scheduler.CreateSchedule": 1,
        "scheduler.GetSchedule": 1})
    assert set(gw.outcomes()) == {"forwarded"}
    assert gw.count("s3.*") == 5


def test_keep_alive_and_chunked_request_body(gw):
    client("s3", gw.url).create_bucket(Bucket="chunky")
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    auth = ("AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=00")
    chunks = [b"hello ", b"chunked ", b"world"]
    conn.request("PUT", "/chunky/k", body=iter(chunks), encode_chunked=True,
                 headers={"Authorization": auth, "Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    sock = conn.sock
    conn.request("GET", "/chunky/k", headers={"Authorization": auth})
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"hello chunked world")
    assert conn.sock is sock     # the same connection: kept alive
    conn.close()
    assert gw.calls["s3.PutObject"] == gw.calls["s3.GetObject"] == 1


# ---------------------------------------------------------------------------------------------
# Throttling and server errors, as botocore parses them


@pytest.mark.parametrize("service,call,code,status", [
    ("ec2", lambda c: c.describe_instances(), "RequestLimitExceeded", 503),
    ("iam", lambda c: c.list_roles(), "Throttling", 400),
    ("events", lambda c: c.list_rules(), "ThrottlingException", 400),
    ("s3", lambda c: c.list_objects_v2(Bucket="b"), "SlowDown", 503),
    ("scheduler", lambda c: c.list_schedules(), "ThrottlingException", 429),
    ("lambda", lambda c: c.list_functions(), "TooManyRequestsException", 429),
    ("cloudwatch", lambda c: c.describe_alarms(), "ThrottlingException", 400),
])
def test_throttle_parses_as_the_services_throttling_error(gateway, service, call, code, status):
    gateway.throttle(f"{service}.*")
    with pytest.raises(ClientError) as e:
        call(client(service, gateway.url))
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert gateway.outcomes() == ["throttle"]


def test_ec2_throttle_message_and_retry_counting(gw):
    gw.throttle("ec2.DescribeRegions", times=2)
    with pytest.raises(ClientError) as e:
        client("ec2", gw.url).describe_regions()
    assert e.value.response["Error"]["Message"] == "Request limit exceeded."
    # Standard retries see throttling as retryable: one more throttled try, then success.
    retrying = client("ec2", gw.url, Config(retries={"mode": "standard", "max_attempts": 3}))
    assert retrying.describe_regions()["Regions"]
    assert gw.outcomes() == ["throttle", "throttle", "forwarded"]
    assert gw.count("ec2.DescribeRegions") == 3
    assert not gw.rules()     # spent


@pytest.mark.parametrize("status,code", [(503, "ServiceUnavailable"), (500, "InternalError")])
def test_server_error(gw, status, code):
    gw.server_error("ec2.DescribeRegions", status=status)
    with pytest.raises(ClientError) as e:
        client("ec2", gw.url).describe_regions()
    assert e.value.response["Error"]["Code"] == code
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == status


def test_probabilistic_rules_are_reproducible(moto_endpoint):
    def run(seed: int) -> list[str]:
        with Gateway(moto_endpoint, seed=seed) as g:
            g.throttle("sts.*", p=0.3)
            g.server_error("sts.*", p=0.05)
            g.fail("sts.*", "Unlucky", times=None)    # the rest: answered without moto
            sts = client("sts", g.url)
            for _ in range(60):
                with pytest.raises(ClientError):
                    sts.get_caller_identity()
            return g.outcomes()

    first = run(7)
    assert first == run(7)
    assert first != run(8)
    assert 8 <= first.count("throttle") <= 30     # about 30 % of 60
    assert first.count("fail") >= 25


def test_fail_answers_a_given_error_for_the_next_n_requests(gw):
    ec2 = client("ec2", gw.url)
    gw.fail("ec2.RunInstances", "InsufficientInstanceCapacity",
            "We currently do not have sufficient t3.micro capacity.", times=1)
    gw.fail("ec2.RunInstances", "InvalidParameterValue",
            "Value (annex-profile) for parameter iamInstanceProfile.name is invalid. "
            "Invalid IAM Instance Profile name", times=1)
    codes = []
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)
        codes.append((e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]))
    assert codes[0][0] == "InsufficientInstanceCapacity"
    assert codes[1] == ("InvalidParameterValue", "Value (annex-profile) for parameter "
                        "iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name")
    assert instance_ids(ec2) == []            # nothing reached moto
    ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)
    assert len(instance_ids(ec2)) == 1
    assert gw.outcomes("ec2.RunInstances") == ["fail", "fail", "forwarded"]


# ---------------------------------------------------------------------------------------------
# Lost replies, client tokens


def test_dropped_run_instances_reply(gw, moto_endpoint):
    gw.drop_reply("ec2.RunInstances", times=1)
    ec2 = client("ec2", gw.url)
    with pytest.raises(botocore.exceptions.ConnectionClosedError):
        ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, ClientToken="tok-1",
                          TagSpecifications=[{"ResourceType": "instance",
                                              "Tags": [{"Key": "k", "Value": "v"}]}])
    direct = client("ec2", moto_endpoint)
    [launched] = instance_ids(direct)         # the launch happened
    # A retry with the same client token returns the first launch, as on AWS (moto would
    # launch again); other parameters with that token are refused.
    again = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, ClientToken="tok-1",
                              TagSpecifications=[{"ResourceType": "instance",
                                                  "Tags": [{"Key": "k", "Value": "v"}]}])
    assert [i["InstanceId"] for i in again["Instances"]] == [launched]
    with pytest.raises(ClientError) as e:
        ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2, ClientToken="tok-1")
    assert e.value.response["Error"]["Code"] == "IdempotentParameterMismatch"
    assert instance_ids(direct) == [launched]
    assert gw.outcomes("ec2.RunInstances") == ["drop_reply", "replayed", "fail"]


def test_dropped_reply_with_hang_is_a_read_timeout(gw):
    gw.drop_reply("sts.GetCallerIdentity", hang_s=2.0)
    sts = client("sts", gw.url, Config(retries={"total_max_attempts": 1}, read_timeout=0.5))
    with pytest.raises(botocore.exceptions.ReadTimeoutError):
        sts.get_caller_identity()


# ---------------------------------------------------------------------------------------------
# EC2 listing lag


def test_listing_lag_hides_new_instances_until_lag_passes(moto_endpoint):
    clock = FakeClock()
    with Gateway(moto_endpoint, clock=clock) as g:
        reset(g.url)
        ec2 = client("ec2", g.url)
        old = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        clock.now += 60
        g.listing_lag(10.0)
        new = ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2)
        new_ids = sorted(i["InstanceId"] for i in new["Instances"])
        assert instance_ids(ec2) == [old]          # the new reservation is dropped whole
        with pytest.raises(ClientError) as e:
            ec2.describe_instances(InstanceIds=new_ids[:1])
        assert e.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
        statuses = ec2.describe_instance_status(IncludeAllInstances=True)["InstanceStatuses"]
        assert [s["InstanceId"] for s in statuses] == [old]
        clock.now += 9.9
        assert instance_ids(ec2) == [old]
        clock.now += 0.1
        assert sorted(instance_ids(ec2)) == sorted([old] + new_ids)
        assert g.outcomes("ec2.DescribeInstances") == ["lag", "lag", "lag", "forwarded"]


def test_listing_lag_after_a_dropped_reply_and_for_fleets(moto_endpoint):
    clock = FakeClock()
    with Gateway(moto_endpoint, clock=clock) as g:
        reset(g.url)
        g.listing_lag(5.0)
        ec2 = client("ec2", g.url)
        g.drop_reply("ec2.RunInstances", times=1)
        with pytest.raises(botocore.exceptions.ConnectionClosedError):
            ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)
        assert len(instance_ids(client("ec2", moto_endpoint))) == 1   # exists in moto
        assert instance_ids(ec2) == []                                  # but not listed yet
        ec2.create_launch_template(LaunchTemplateName="annex-f", LaunchTemplateData={
            "ImageId": AMI, "InstanceType": "t3.micro"})
        fleet = ec2.create_fleet(Type="instant", LaunchTemplateConfigs=[{
            "LaunchTemplateSpecification": {"LaunchTemplateName": "annex-f",
                                            "Version": "$Latest"}}],
            TargetCapacitySpecification={"TotalTargetCapacity": 2,
                                         "DefaultTargetCapacityType": "on-demand"})
        members = [i for x in fleet["Instances"] for i in x["InstanceIds"]]
        assert len(members) == 2
        assert instance_ids(ec2) == []
        described = ec2.describe_fleets(FleetIds=[fleet["FleetId"]])["Fleets"][0]
        assert described.get("Instances", []) == []
        assert ec2.describe_fleet_instances(FleetId=fleet["FleetId"])["ActiveInstances"] == []
        role = client("iam", g.url).create_role(   # AWS refuses a Spot Fleet role that is not
            RoleName="fleet", AssumeRolePolicyDocument="{}")["Role"]["Arn"]   # there
        spot = ec2.request_spot_fleet(SpotFleetRequestConfig={
            "IamFleetRole": role, "TargetCapacity": 1,
            "SpotPrice": "0.1", "AllocationStrategy": "lowestPrice",
            "LaunchSpecifications": [{"ImageId": AMI, "InstanceType": "t3.micro"}]})
        sfr = spot["SpotFleetRequestId"]
        assert ec2.describe_spot_fleet_instances(SpotFleetRequestId=sfr)["ActiveInstances"] == []
        assert instance_ids(ec2) == []
        clock.now += 5.0
        assert len(instance_ids(ec2)) == 4
        assert len(ec2.describe_fleet_instances(FleetId=fleet["FleetId"])["ActiveInstances"]) == 2
        assert len(ec2.describe_spot_fleet_instances(
            SpotFleetRequestId=sfr)["ActiveInstances"]) == 1


def test_listing_lag_in_real_time(gw):
    gw.listing_lag(0.5)
    ec2 = client("ec2", gw.url)
    t0 = time.monotonic()
    [iid] = [i["InstanceId"] for i in ec2.run_instances(ImageId=AMI, MinCount=1,
                                                         MaxCount=1)["Instances"]]
    assert instance_ids(ec2) == []
    while instance_ids(ec2) != [iid]:
        assert time.monotonic() - t0 < 5
        time.sleep(0.05)
    assert time.monotonic() - t0 >= 0.5


# ---------------------------------------------------------------------------------------------
# Hold and delay


def test_hold_blocks_a_launch_until_released(gw, moto_endpoint):
    held = gw.hold("ec2.RunInstances")
    result = {}
    worker = threading.Thread(target=lambda: result.update(client("ec2", gw.url).run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1)))
    worker.start()
    held.wait_held(timeout=5)
    # Meanwhile, other requests go through, and the launch has not reached moto.
    assert instance_ids(client("ec2", gw.url)) == []
    assert instance_ids(client("ec2", moto_endpoint)) == []
    assert worker.is_alive()
    held.release()
    worker.join(timeout=10)
    assert [i["InstanceId"] for i in result["Instances"]] == instance_ids(
        client("ec2", moto_endpoint))
    assert gw.calls["ec2.RunInstances"] == 1
    with pytest.raises(TimeoutError):
        gw.hold("ec2.TerminateInstances").wait_held(timeout=0.1)


def test_delay(gw):
    gw.delay("sts.GetCallerIdentity", 0.4)
    t0 = time.monotonic()
    client("sts", gw.url).get_caller_identity()
    assert time.monotonic() - t0 >= 0.4


# ---------------------------------------------------------------------------------------------
# The gateway in another process


def test_module_main_and_control_endpoint(moto_endpoint):
    upstream = moto_endpoint.split("://")[1]
    proc = subprocess.Popen([sys.executable, "-m", "condor_annex.providers.local.gateway",
                             "--upstream", upstream, "--port", "0", "--seed", "3"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("gateway http://127.0.0.1:"), line
        url = line.split()[1]
        ec2 = client("ec2", url)
        answer = control(url, "POST", "rules", [
            {"rule": "throttle", "operation": "ec2.DescribeRegions", "times": 1},
            {"rule": "listing_lag", "lag_s": 30}])
        assert len(answer["ids"]) == 2
        with pytest.raises(ClientError) as e:
            ec2.describe_regions()
        assert e.value.response["Error"]["Code"] == "RequestLimitExceeded"
        assert ec2.describe_regions()["Regions"]
        assert control(url, "GET", "rules")["listing_lag_s"] == 30
        calls = control(url, "GET", "calls")
        assert calls["calls"] == {"ec2.DescribeRegions": 2}
        assert calls["trace"] == [["ec2.DescribeRegions", "throttle"],
                                  ["ec2.DescribeRegions", "forwarded"]]
        control(url, "DELETE", "rules")
        assert control(url, "GET", "rules") == {"rules": [], "listing_lag_s": 0.0}
        with pytest.raises(urllib.error.HTTPError) as bad:
            control(url, "POST", "rules", {"rule": "nonsense"})
        assert json.loads(bad.value.read())["error"].startswith("ValueError")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0


def test_bad_rules_are_refused(gateway):
    with pytest.raises(ValueError):
        gateway.throttle("RunInstances")          # no service
    with pytest.raises(ValueError):
        gateway.throttle("ec2.*", p=1.5)
    with pytest.raises(ValueError):
        gateway.server_error("ec2.*", status=404)
