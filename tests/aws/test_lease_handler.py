"""The lease enforcer (lease/handler.py) run against the moto server, as the local cloud runs it."""

from __future__ import annotations

import ast
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import condor_annex.lease.handler as lease_handler
from condor_annex.model import TAG_ANNEX_NAME, TAG_LEASE_END

MOTO_AMI = "ami-03cf127a"


@pytest.fixture
def clients(aws):
    from condor_annex.providers.aws.session import make_client

    return {k: make_client(aws, k) for k in ("ec2", "s3", "scheduler", "iam")}


def _annex(provider, launch_request, name, count=2, lease_minutes=30):
    """Launch an annex: bundle, lease, instances (lease first, as create does)."""
    provider.put_bundle(name, b"bundle of " + name.encode())
    lease = provider.create_lease(name, datetime.now(timezone.utc) + timedelta(minutes=lease_minutes))
    ids = provider.launch(launch_request(name, count=count)).instance_ids
    return lease, ids


def _live(provider, name):
    return {i for i, inst in provider.query_instances(name).items() if inst.alive}


def test_due_ends_foo_but_not_foobar(provider, launch_request, clients):
    # The original matched client-token prefixes: annex "foo" expiring killed "foobar" (§4).
    lease, foo_ids = _annex(provider, launch_request, "foo", count=2)
    foobar_lease, foobar_ids = _annex(provider, launch_request, "foobar", count=3)
    event = provider.lease_event(lease)

    result = lease_handler.enforce(event, clients, now=event["LeaseExpiration"])

    assert result["Status"] == "ended"
    assert result["Terminated"] == 2
    assert _live(provider, "foo") == set()
    assert not provider.bundle_exists("foo")
    assert provider.get_lease("foo") is None
    assert _live(provider, "foobar") == set(foobar_ids)
    assert provider.bundle_exists("foobar")
    assert provider.get_lease("foobar") == foobar_lease


def test_due_twice_is_harmless(provider, launch_request, clients):
    lease, _ = _annex(provider, launch_request, "foo")
    event = provider.lease_event(lease)
    now = event["LeaseExpiration"] + 60

    lease_handler.enforce(event, clients, now=now)
    again = lease_handler.enforce(event, clients, now=now)

    assert again["Status"] == "ended"
    assert again["Terminated"] == 0


def _spot_fleet(ec2, annex, token):
    tags = [{"Key": TAG_ANNEX_NAME, "Value": annex}]
    return ec2.request_spot_fleet(SpotFleetRequestConfig={
        "ClientToken": token, "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
        "TargetCapacity": 1, "AllocationStrategy": "lowestPrice", "Type": "maintain",
        "TagSpecifications": [{"ResourceType": "spot-fleet-request", "Tags": tags}],
        "LaunchSpecifications": [{"ImageId": MOTO_AMI, "InstanceType": "m4.large"}],
    })["SpotFleetRequestId"]


def _fleet(ec2, annex):
    template = ec2.create_launch_template(
        LaunchTemplateName=f"lt-{annex}",
        LaunchTemplateData={"ImageId": MOTO_AMI, "InstanceType": "m4.large"})
    tags = [{"Key": TAG_ANNEX_NAME, "Value": annex}]
    return ec2.create_fleet(
        Type="maintain",
        TargetCapacitySpecification={"TotalTargetCapacity": 1,
                                     "DefaultTargetCapacityType": "on-demand"},
        LaunchTemplateConfigs=[{"LaunchTemplateSpecification": {
            "LaunchTemplateId": template["LaunchTemplate"]["LaunchTemplateId"],
            "Version": "1"}}],
        TagSpecifications=[{"ResourceType": "fleet", "Tags": tags}])["FleetId"]


def test_due_cancels_the_annex_fleets_only(provider, launch_request, clients):
    ec2 = clients["ec2"]
    lease, _ = _annex(provider, launch_request, "foo", count=1)
    foo_sfr, foobar_sfr = _spot_fleet(ec2, "foo", "foo_1"), _spot_fleet(ec2, "foobar", "foobar_1")
    foo_fleet, foobar_fleet = _fleet(ec2, "foo"), _fleet(ec2, "foobar")
    event = provider.lease_event(lease)

    result = lease_handler.enforce(event, clients, now=event["LeaseExpiration"])

    assert result["SpotFleetsCancelled"] == 1 and result["FleetsDeleted"] == 1
    sfrs = {f["SpotFleetRequestId"]: f["SpotFleetRequestState"]
            for f in ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]}
    assert sfrs.get(foo_sfr, "cancelled").startswith("cancelled")  # moto forgets it at once
    assert sfrs[foobar_sfr] == "active"
    fleets = {f["FleetId"]: f["FleetState"] for f in ec2.describe_fleets()["Fleets"]}
    assert fleets[foo_fleet].startswith("deleted")
    assert fleets[foobar_fleet] == "active"


@pytest.mark.xfail(strict=True, reason="moto gap: DescribeSpotFleetRequests does not return the "
                   "request's ClientToken, so untagged fleets (the original's) cannot be matched")
def test_due_cancels_untagged_spot_fleet_by_client_token(provider, clients):
    ec2 = clients["ec2"]
    sfr = ec2.request_spot_fleet(SpotFleetRequestConfig={
        "ClientToken": "foo_0123", "IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
        "TargetCapacity": 1, "AllocationStrategy": "lowestPrice",
        "LaunchSpecifications": [{"ImageId": MOTO_AMI, "InstanceType": "m4.large"}],
    })["SpotFleetRequestId"]
    lease = provider.create_lease("foo", datetime.now(timezone.utc) + timedelta(minutes=5))
    event = provider.lease_event(lease)

    lease_handler.enforce(event, clients, now=event["LeaseExpiration"])

    state = ec2.describe_spot_fleet_requests(SpotFleetRequestIds=[sfr])
    assert state["SpotFleetRequestConfigs"][0]["SpotFleetRequestState"].startswith("cancelled")


def test_failed_step_raises_after_the_others_and_keeps_the_schedule(provider, launch_request,
                                                                      clients):
    lease, _ = _annex(provider, launch_request, "foo")
    event = dict(provider.lease_event(lease), S3BucketName="no-such-bucket-anywhere")

    with pytest.raises(RuntimeError, match="BundleDeleted.*NoSuchBucket"):
        lease_handler.enforce(event, clients, now=event["LeaseExpiration"])

    assert _live(provider, "foo") == set()  # the other steps still ran
    assert provider.get_lease("foo") == lease  # kept, so Scheduler (or the local cloud) retries


def test_lambda_entry_point_uses_default_clients(provider, launch_request, aws, monkeypatch):
    lease, _ = _annex(provider, launch_request, "foo", lease_minutes=-1)
    monkeypatch.setenv("AWS_REGION", aws.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)  # boto3's standard override

    result = lease_handler.handler(provider.lease_event(lease), None)

    assert result["Status"] == "ended" and result["Terminated"] == 2
    assert _live(provider, "foo") == set()
    assert provider.get_lease("foo") is None


def test_handler_is_small_and_standalone():
    source = Path(lease_handler.__file__).read_bytes()

    # Inlined in the template (Code.ZipFile), whose body CloudFormation caps at 51,200 bytes:
    # the handler keeps to 14 KB (13 KB with the collector probe of check-setup --preflight).
    assert len(source) <= 14 * 1024
    imports = {line.split()[1].split(".")[0] for line in source.decode().splitlines()
               if line.lstrip().startswith(("import ", "from "))}
    assert imports <= {"json", "os", "socket", "time", "boto3"}
    # The Lambda runtime is python3.12, the local cloud runs it in-process: 3.9 syntax at most.
    ast.parse(source, feature_version=(3, 9))


def test_enforce_defaults_to_the_clock(provider, launch_request, clients):
    lease, ids = _annex(provider, launch_request, "foo", lease_minutes=10)
    event = provider.lease_event(lease)
    assert event["LeaseExpiration"] > time.time() + 500

    with pytest.raises(lease_handler.NotDue):
        lease_handler.enforce(event, clients)
    assert _live(provider, "foo") == set(ids)


def test_last_instance_ended_ends_the_annex_early(provider, launch_request, clients):
    """All of 'foo' idled out (terminated): the EC2 state-change path removes bundle and lease
    long before the lease's end; 'foobar' is untouched."""
    _annex(provider, launch_request, "foobar", count=1)
    lease, ids = _annex(provider, launch_request, "foo", count=2, lease_minutes=30)
    provider.terminate(ids[:1])
    # One member still alive: nothing ends.
    assert lease_handler.instance_ended(ids[0], clients)["Status"] == "annex-alive"
    assert provider.get_lease("foo") is not None and provider.bundle_exists("foo")

    provider.terminate(ids[1:])
    result = lease_handler.instance_ended(ids[1], clients)

    assert result["Status"] == "ended"
    assert provider.get_lease("foo") is None
    assert not provider.bundle_exists("foo")
    assert provider.get_lease("foobar") is not None and provider.bundle_exists("foobar")
    assert len(_live(provider, "foobar")) == 1


def test_state_change_of_an_instance_without_lease_changes_nothing(provider, launch_request,
                                                                    clients):
    ids = provider.launch(launch_request("nolease", count=1)).instance_ids
    provider.terminate(ids)

    assert lease_handler.instance_ended(ids[0], clients)["Status"] == "no-lease"


# --- the enforcer inside its minute (EventBridge Scheduler fires anywhere in the minute) ----

def test_called_59_s_early_the_enforcer_waits_and_ends_the_annex_at_the_end(
        provider, launch_request, clients):
    lease, ids = _annex(provider, launch_request, "foo", count=2)
    event = provider.lease_event(lease)
    waits = []

    def sleep(seconds):
        # Nothing may be ended while the enforcer waits for the lease end.
        assert _live(provider, "foo") == set(ids) and provider.bundle_exists("foo")
        waits.append(seconds)

    result = lease_handler.enforce(event, clients, now=event["LeaseExpiration"] - 59,
                                   sleep=sleep)

    assert waits == [59]
    assert result["Status"] == "ended" and result["Terminated"] == 2
    assert _live(provider, "foo") == set()
    assert not provider.bundle_exists("foo") and provider.get_lease("foo") is None


def test_an_extend_while_the_enforcer_waits_keeps_the_annex(provider, launch_request, clients):
    """Regression: Scheduler fired the old lease's schedule early, the enforcer slept until the
    old end, ``extend`` moved the lease meanwhile (printing "Lease updated"), and the enforcer
    still ended the annex at the old end (e2e test_extend_moves_the_lease... failed once)."""
    lease, ids = _annex(provider, launch_request, "foo", count=2)
    event = provider.lease_event(lease)

    def extend_while_waiting(seconds):
        provider.extend_lease(lease, lease.expires_at + timedelta(minutes=30))

    result = lease_handler.enforce(event, clients, now=event["LeaseExpiration"] - 30,
                                   sleep=extend_while_waiting)
    assert result["Status"] == "extended"
    assert _live(provider, "foo") == set(ids) and provider.bundle_exists("foo")
    # Once the new end is reached, its own schedule's event ends it.
    later = provider.lease_event(provider.get_lease("foo"))
    assert lease_handler.enforce(later, clients, now=later["LeaseExpiration"],
                                 sleep=lambda s: None)["Status"] == "ended"
    assert _live(provider, "foo") == set()


def test_called_2_min_early_the_enforcer_raises_and_ends_nothing(provider, launch_request,
                                                                   clients):
    lease, ids = _annex(provider, launch_request, "foo", count=2)
    event = provider.lease_event(lease)

    with pytest.raises(lease_handler.NotDue, match="foo ends in 120 s: not due"):
        lease_handler.enforce(event, clients, now=event["LeaseExpiration"] - 120,
                              sleep=lambda s: pytest.fail("slept %s s" % s))

    assert _live(provider, "foo") == set(ids)
    assert provider.bundle_exists("foo") and provider.get_lease("foo") == lease


def test_the_wait_is_bounded_at_70_s(provider, launch_request, clients):
    lease, ids = _annex(provider, launch_request, "foo", count=1)
    event = provider.lease_event(lease)
    waits = []

    with pytest.raises(lease_handler.NotDue):
        lease_handler.enforce(event, clients, now=event["LeaseExpiration"] - 71,
                              sleep=waits.append)
    assert waits == [] and _live(provider, "foo") == set(ids)

    lease_handler.enforce(event, clients, now=event["LeaseExpiration"] - 70, sleep=waits.append)
    assert waits == [70] and _live(provider, "foo") == set()


def test_on_the_real_clock_nothing_ends_before_the_lease_end(provider, launch_request, clients,
                                                              aws):
    """The wait re-reads the clock (time.sleep may return early): TerminateInstances and
    DeleteObject are sent at or after the lease end, never before."""
    _annex(provider, launch_request, "foo", count=1)
    lease_end = int(time.time()) + 2
    lease = provider.extend_lease(provider.get_lease("foo"),
                                  datetime.fromtimestamp(lease_end, timezone.utc))
    event = provider.lease_event(lease)
    sent = []
    for name in ("ec2", "s3"):
        clients[name].meta.events.register(
            "before-call.*.*", lambda model, **_: sent.append((model.name, time.time())))

    lease_handler.enforce(event, clients)

    ending = [t for op, t in sent if op in ("TerminateInstances", "DeleteObject")]
    assert len(ending) == 2 and min(ending) >= lease_end
    assert _live(provider, "foo") == set()


# --- the lease sweep (a rate(5 minutes) schedule of the stack) ------------------------------

def _tag_lease_end(ec2, resource_ids, lease_end):
    ec2.create_tags(Resources=list(resource_ids),
                    Tags=[{"Key": TAG_LEASE_END, "Value": str(int(lease_end))}])


def test_sweep_ends_an_annex_whose_lease_end_passed_even_without_its_schedule(
        provider, launch_request, clients, aws):
    ec2, now = clients["ec2"], int(time.time())
    _, gone = _annex(provider, launch_request, "gone", count=2)
    gone_sfr = _spot_fleet(ec2, "gone", "gone_1")
    _tag_lease_end(ec2, [*gone, gone_sfr], now - 30)
    clients["scheduler"].delete_schedule(Name="annex-lease-gone")          # deleted by hand
    future_lease, future = _annex(provider, launch_request, "future", count=1)
    future_fleet = _fleet(ec2, "future")
    _tag_lease_end(ec2, [*future, future_fleet], now + 600)
    # Not ours: no tags at all, and a lease-end tag without an annex name.
    stranger = ec2.run_instances(ImageId=MOTO_AMI, MinCount=2, MaxCount=2)["Instances"]
    _tag_lease_end(ec2, [stranger[1]["InstanceId"]], now - 30)

    result = lease_handler.sweep({"Sweep": True, "S3BucketName": provider.outputs.bucket},
                                 clients, now=now)

    assert result == {"Status": "swept", "Ended": ["gone"]}
    assert _live(provider, "gone") == set() and not provider.bundle_exists("gone")
    sfrs = {f["SpotFleetRequestId"]: f["SpotFleetRequestState"]
            for f in ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"]}
    assert sfrs.get(gone_sfr, "cancelled").startswith("cancelled")
    assert _live(provider, "future") == set(future)
    assert provider.bundle_exists("future") and provider.get_lease("future") == future_lease
    fleets = {f["FleetId"]: f["FleetState"] for f in ec2.describe_fleets()["Fleets"]}
    assert fleets[future_fleet] == "active"
    states = {i["InstanceId"]: i["State"]["Name"] for r in ec2.describe_instances(
        InstanceIds=[i["InstanceId"] for i in stranger])["Reservations"] for i in r["Instances"]}
    assert set(states.values()) == {"running"}


def test_sweep_ends_a_fleet_only_annex(provider, clients):
    """An EC2 Fleet whose instances carry no tags of ours: found by the fleet's own tags."""
    ec2, now = clients["ec2"], int(time.time())
    fleet = _fleet(ec2, "fleetonly")
    _tag_lease_end(ec2, [fleet], now - 1)

    result = lease_handler.sweep({"Sweep": True, "S3BucketName": provider.outputs.bucket},
                                 clients, now=now)

    assert result["Ended"] == ["fleetonly"]
    states = {f["FleetId"]: f["FleetState"] for f in ec2.describe_fleets()["Fleets"]}
    assert states[fleet].startswith("deleted")


def test_sweep_keeps_an_annex_whose_schedule_was_extended(provider, launch_request, clients):
    """The tags lag behind an extend that moved the schedule: the later end wins."""
    ec2, now = clients["ec2"], int(time.time())
    lease, ids = _annex(provider, launch_request, "longer", count=1, lease_minutes=30)
    _tag_lease_end(ec2, ids, now - 60)

    result = lease_handler.sweep({"Sweep": True, "S3BucketName": provider.outputs.bucket},
                                 clients, now=now)

    assert result["Ended"] == []
    assert _live(provider, "longer") == set(ids) and provider.get_lease("longer") == lease


def test_handler_dispatches_a_sweep_event(provider, launch_request, aws, monkeypatch):
    from condor_annex.providers.aws.session import make_client

    _, ids = _annex(provider, launch_request, "swept", count=1)
    _tag_lease_end(make_client(aws, "ec2"), ids, time.time() - 5)
    provider.delete_lease(provider.get_lease("swept"))
    monkeypatch.setenv("AWS_REGION", aws.region)
    monkeypatch.setenv("AWS_ENDPOINT_URL", aws.endpoint_url)

    result = lease_handler.handler({"Sweep": True, "S3BucketName": provider.outputs.bucket},
                                   None)

    assert result["Ended"] == ["swept"] and _live(provider, "swept") == set()


# --- the EC2 state-change rule: every termination in the region -----------------------------

def _count_calls(clients):
    calls = []
    for c in clients.values():
        c.meta.events.register("before-call.*.*",
                               lambda model, **_: calls.append(model.name))
    return calls


def test_state_change_of_a_non_annex_instance_costs_one_describe(provider, launch_request,
                                                                  clients):
    _annex(provider, launch_request, "foo", count=1)
    _spot_fleet(clients["ec2"], "foo", "foo_1")
    other = clients["ec2"].run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1)
    iid = other["Instances"][0]["InstanceId"]
    clients["ec2"].terminate_instances(InstanceIds=[iid])
    calls = _count_calls(clients)

    result = lease_handler.instance_ended(iid, clients)

    assert result["Status"] == "not-annex"
    assert calls == ["DescribeInstances"]


def test_state_change_while_the_annex_lives_scans_nothing_else(provider, launch_request,
                                                                clients):
    _, ids = _annex(provider, launch_request, "foo", count=2)
    provider.terminate(ids[:1])
    calls = _count_calls(clients)

    assert lease_handler.instance_ended(ids[0], clients)["Status"] == "annex-alive"
    # The instance itself, then the annex's live members; no fleet listing, no schedule.
    assert calls == ["DescribeInstances", "DescribeInstances"]
