"""AwsProvider launch / query / terminate against the moto server."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import pytest

from condor_annex.errors import InvalidRequestError
from condor_annex.model import TAG_ANNEX_NAME, TAG_ANNEX_OWNER, TAG_LAUNCH_TOKEN, TAG_LEASE_END


def _instance(ec2, instance_id):
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def test_launch_tags_profile_shutdown_and_imdsv2(provider, outputs, launch_request, ec2):
    req = launch_request("foo", count=3, tags=(("project", "physics"), ("owner", "alice")))

    result = provider.launch(req)

    assert result.client_token == req.client_token
    assert len(result.instance_ids) == 3
    for iid in result.instance_ids:
        inst = _instance(ec2, iid)
        tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
        assert tags == {TAG_ANNEX_NAME: "foo", TAG_LAUNCH_TOKEN: req.client_token,
                        TAG_ANNEX_OWNER: provider.owner(), "project": "physics",
                        "owner": "alice"}
        assert inst["KeyName"] == outputs.key_name
        assert [g["GroupId"] for g in inst["SecurityGroups"]] == [outputs.security_group_id]
        assert inst["ClientToken"] == req.client_token
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        assert inst["MetadataOptions"]["HttpEndpoint"] == "enabled"
        assert inst["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
        behaviour = ec2.describe_instance_attribute(
            InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
        assert behaviour["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"


def test_launch_tags_the_config_bucket_and_keeps_our_tags(provider, outputs, launch_request,
                                                          ec2):
    # The agent reads the bucket from its own tag in instance metadata (no IAM call); a user
    # tag may not replace the annex's or the bucket's.
    req = launch_request("cb", config_bucket=outputs.bucket,
                         tags=((TAG_ANNEX_NAME, "other"), ("htcondor:ConfigBucket", "evil")))
    [iid] = provider.launch(req).instance_ids
    tags = {t["Key"]: t["Value"] for t in _instance(ec2, iid)["Tags"]}
    assert tags == {TAG_ANNEX_NAME: "cb", TAG_LAUNCH_TOKEN: req.client_token,
                    TAG_ANNEX_OWNER: provider.owner(), "htcondor:ConfigBucket": outputs.bucket}


def test_launch_attaches_the_instance_profile(provider, outputs, launch_request, ec2):
    iid = provider.launch(launch_request("prof")).instance_ids[0]

    assert _instance(ec2, iid)["IamInstanceProfile"]["Arn"] == outputs.instance_profile_arn


@pytest.mark.xfail(strict=True, reason="moto gap: RunInstances associates IamInstanceProfile with "
                   "only the first instance of a multi-instance launch")
def test_launch_attaches_the_profile_to_every_instance(provider, outputs, launch_request, ec2):
    ids = provider.launch(launch_request("prof3", count=3)).instance_ids

    arns = [_instance(ec2, i).get("IamInstanceProfile", {}).get("Arn") for i in ids]
    assert arns == [outputs.instance_profile_arn] * 3


def test_launch_sends_on_demand_user_data(provider, launch_request, ec2):
    # The original always sent empty user data for on-demand instances (reference §10).
    result = provider.launch(launch_request("ud", user_data=b"#!/bin/sh\necho hi\n"))

    attr = ec2.describe_instance_attribute(InstanceId=result.instance_ids[0],
                                           Attribute="userData")
    assert base64.b64decode(attr["UserData"]["Value"]) == b"#!/bin/sh\necho hi\n"


def test_launch_counts_api_calls(provider, launch_request):
    from condor_annex.providers.aws.session import add_call_listener, remove_call_listener

    calls: list[str] = []
    add_call_listener(calls.append)
    try:
        provider.launch(launch_request("count", count=5))
    finally:
        remove_call_listener(calls.append)
    # One request for the whole annex (and the owner tag's identity, once per provider).
    assert calls == ["sts.GetCallerIdentity", "ec2.RunInstances"]


def test_query_matches_the_annex_name_exactly(provider, launch_request):
    foo = provider.launch(launch_request("foo", count=2))
    foobar = provider.launch(launch_request("foobar", count=3))

    got_foo = provider.query_instances("foo")
    got_all = provider.query_instances()

    assert set(got_foo) == set(foo.instance_ids)
    assert {i.annex_name for i in got_foo.values()} == {"foo"}
    assert set(got_all) == set(foo.instance_ids) | set(foobar.instance_ids)
    assert provider.query_instances("fo") == {}


def test_query_fills_cloud_instance(provider, launch_request):
    req = launch_request("fill")
    iid = provider.launch(req).instance_ids[0]

    inst = provider.query_instances("fill")[iid]

    assert inst.state in ("pending", "running")
    assert inst.alive
    assert inst.instance_type == "m4.large"
    assert inst.client_token == req.client_token
    assert isinstance(inst.launch_time, datetime) and inst.launch_time.utcoffset().total_seconds() == 0
    assert inst.private_ip


@pytest.mark.parametrize("page_size", [5, 1000])
def test_query_paginates(aws, outputs, launch_request, page_size):
    from condor_annex.providers.aws.provider import AwsProvider
    from condor_annex.providers.aws.session import add_call_listener, remove_call_listener

    provider = AwsProvider(aws, outputs, page_size=page_size)
    launched = set()
    for _ in range(7):  # 7 instances; EC2 pages hold at least 5 (moto counts reservations)
        launched |= set(provider.launch(launch_request("paged")).instance_ids)
    calls: list[str] = []
    add_call_listener(calls.append)
    try:
        found = provider.query_instances("paged")
    finally:
        remove_call_listener(calls.append)

    assert set(found) == launched
    pages = calls.count("ec2.DescribeInstances")
    assert pages >= 2 if page_size == 5 else pages == 1


def test_terminate_and_include_terminated(provider, launch_request):
    ids = provider.launch(launch_request("term", count=3)).instance_ids

    provider.terminate(ids[:2])

    assert set(provider.query_instances("term")) == {ids[2]}
    everything = provider.query_instances("term", include_terminated=True)
    assert {everything[i].state for i in ids[:2]} <= {"shutting-down", "terminated"}
    assert not any(everything[i].alive for i in ids[:2])


def test_terminate_skips_unknown_ids(provider, launch_request):
    ids = provider.launch(launch_request("gone", count=2)).instance_ids

    provider.terminate([ids[0], "i-0123456789abcdef0", ids[1]])

    assert provider.query_instances("gone") == {}


def test_terminate_batches_of_at_most_1000(provider, launch_request):
    from condor_annex.providers.aws.session import add_call_listener, remove_call_listener

    ids = list(provider.launch(launch_request("big", count=3)).instance_ids)
    calls: list[str] = []
    add_call_listener(calls.append)
    try:
        # 1,200 ids: the three real ones plus unknown ones, so two batches.
        fake = [f"i-{n:017x}" for n in range(1, 1198)]
        provider.terminate(ids + fake)
    finally:
        remove_call_listener(calls.append)
    assert provider.query_instances("big") == {}
    assert calls.count("ec2.TerminateInstances") >= 2


def test_launch_rejects_bad_parameters(provider, launch_request):
    with pytest.raises(InvalidRequestError) as err:
        provider.launch(launch_request("bad", count="two"))
    assert str(err.value).startswith("ec2.RunInstances: invalid parameters")
    assert err.value.code == "ParamValidation"
    assert provider.query_instances("bad") == {}


@pytest.mark.xfail(strict=True, reason="moto gap: RunInstances ignores ClientToken idempotency; "
                   "a repeated token launches new instances (AWS returns the first ones)")
def test_same_client_token_returns_same_instances(provider, launch_request):
    req = launch_request("idem", count=2)

    first = provider.launch(req)
    second = provider.launch(req)

    assert set(second.instance_ids) == set(first.instance_ids)
    assert len(provider.query_instances("idem")) == 2


# --- lease end tag, IMDS hop limit, subnets (issue 9) ------------------------------------------


LEASE_END = datetime(2030, 1, 2, 3, 4, 5, 300_000, tzinfo=timezone.utc)


def test_run_instances_shape_lease_tag_hop_limit_and_subnet(provider, outputs, launch_request,
                                                            ec2, sent):
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    req = launch_request("shape", count=2, lease_end=LEASE_END, config_bucket=outputs.bucket,
                         subnet_ids=(subnet, "subnet-0000000b"))

    ids = provider.launch(req).instance_ids

    [params] = sent["RunInstances"]
    lease = {"Key": TAG_LEASE_END, "Value": "1893553446"}   # whole seconds, rounded up
    ours = [{"Key": TAG_ANNEX_NAME, "Value": "shape"},
            {"Key": TAG_LAUNCH_TOKEN, "Value": req.client_token}, lease,
            {"Key": TAG_ANNEX_OWNER, "Value": provider.owner()}]
    assert params == {
        "MinCount": 2, "MaxCount": 2, "ClientToken": req.client_token,
        "InstanceType": "m4.large", "ImageId": req.image_id,
        "IamInstanceProfile": {"Arn": outputs.instance_profile_arn},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled",
                            "HttpPutResponseHopLimit": 1, "InstanceMetadataTags": "enabled"},
        "TagSpecifications": [
            {"ResourceType": "instance",
             "Tags": ours + [{"Key": "htcondor:ConfigBucket", "Value": outputs.bucket}]},
            {"ResourceType": "volume", "Tags": ours}],
        "SecurityGroupIds": [outputs.security_group_id], "KeyName": outputs.key_name,
        "SubnetId": subnet}                                     # the first subnet
    for iid in ids:
        inst = _instance(ec2, iid)
        assert {t["Key"]: t["Value"] for t in inst["Tags"]}[TAG_LEASE_END] == "1893553446"
        assert inst["SubnetId"] == subnet


def test_set_lease_end_tags_live_instances_of_this_annex_only(provider, launch_request, ec2):
    mine = provider.launch(launch_request("tagme", count=3, lease_end=LEASE_END)).instance_ids
    other = provider.launch(launch_request("tagmetoo", lease_end=LEASE_END)).instance_ids
    provider.terminate([mine[0]])
    later = datetime(2031, 1, 1, tzinfo=timezone.utc)

    tagged = provider.set_lease_end("tagme", later)
    again = provider.set_lease_end("tagme", later)          # idempotent

    assert set(tagged.instance_ids) == set(mine[1:]) == set(again.instance_ids)
    value = lambda iid: {t["Key"]: t["Value"] for t in _instance(ec2, iid)["Tags"]}[  # noqa: E731
        TAG_LEASE_END]
    assert [value(i) for i in mine[1:]] == [str(int(later.timestamp()))] * 2
    assert value(other[0]) == "1893553446"


def test_missing_subnets(provider, ec2):
    real = ec2.describe_subnets()["Subnets"][0]["SubnetId"]

    assert provider.missing_subnets([real, "subnet-0123456789abcdef0"]) == [
        "subnet-0123456789abcdef0"]
    assert provider.missing_subnets([real]) == []
