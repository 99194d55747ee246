"""Spot annexes through the command line (classic ``-slots``, modern ``create --spot``) against
the moto server: exit status, text, and what our code left in the endpoint (fleet, instances,
lease, bundle, launch template), read back with boto3; the RequestSpotFleet parameters as sent.
"""

from __future__ import annotations

import io
import json
import re

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.model import TAG_ANNEX_NAME, TAG_ANNEX_OWNER, TAG_LAUNCH_TOKEN, TAG_LEASE_END
from condor_annex.providers.aws import fleet
from condor_annex.providers.aws.identity import caller_owner
from condor_annex.providers.aws.session import _session, make_client

FLEET_ROLE = "arn:aws:iam::123456789012:role/aws-ec2-spot-fleet-tagging-role"
SFR = {"IamFleetRole": FLEET_ROLE,
       "LaunchSpecifications": [{"InstanceType": "m5.large", "WeightedCapacity": 2}]}


@pytest.fixture
def cloud(account, outputs, tmp_path, monkeypatch):
    """A set-up account on moto and a user config pointing at it (as test_classic_cloud)."""
    config.write_block("setup", config.setup_knobs(outputs))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return account


def _sfr_file(tmp_path, data=SFR):
    f = tmp_path / "sfr.json"
    f.write_text(json.dumps(data))
    return str(f)


def _live(aws, annex):
    ec2 = make_client(aws, "ec2")
    found = {}
    for r in ec2.describe_instances(Filters=[{"Name": f"tag:{TAG_ANNEX_NAME}",
                                              "Values": [annex]}])["Reservations"]:
        for i in r["Instances"]:
            if i["State"]["Name"] in ("pending", "running"):
                found[i["InstanceId"]] = i
    return found


def _lease_expiration(aws, annex):
    sch = make_client(aws, "scheduler")
    return json.loads(sch.get_schedule(Name=f"annex-lease-{annex}")["Target"]["Input"])[
        "LeaseExpiration"]


def _bundles(aws, outputs):
    s3 = make_client(aws, "s3")
    return [o["Key"] for o in s3.list_objects_v2(Bucket=outputs.bucket).get("Contents", [])
            if o["Key"].startswith("config-")]   # not setup's agent/


def _schedules(aws):
    return [s["Name"] for s in make_client(aws, "scheduler").list_schedules()["Schedules"]]


# --- classic -slots ----------------------------------------------------------------------------

def test_classic_slots_starts_a_spot_fleet_that_stops_at_the_lease_end(cloud, outputs, tmp_path,
                                                                        capsys, sent):
    code = main(["-annex-name", "sp1", "-slots", "4", "-aws-spot-fleet-config-file",
                 _sfr_file(tmp_path), "-duration", "0.5", "-yes", "-tag", "team", "hep"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert re.fullmatch(r"Starting annex\.\.\.\nAnnex started\. Its identity with the cloud "
                        r"provider is 'sfr-[0-9a-f-]+'\. It will take about three minutes for "
                        r"the new machines to join the pool\.\n", out), out
    [params] = sent["RequestSpotFleet"]
    cfg = params["SpotFleetRequestConfig"]
    expires = _lease_expiration(cloud, "sp1")
    assert cfg["ValidUntil"] == str(__import__("datetime").datetime.fromtimestamp(
        expires, __import__("datetime").timezone.utc))
    # ValidUntil cannot be moved: the instances end with the lease (which extend moves).
    assert (cfg["TargetCapacity"], cfg["TerminateInstancesWithExpiration"], cfg["Type"],
            cfg["AllocationStrategy"]) == (4, False, "request", "capacityOptimized")
    assert cfg["ClientToken"].startswith("sp1_") and "ValidFrom" not in cfg
    # Launch template configs, so the instances get IMDSv2 with hop limit 1 and tags.
    [ltc] = cfg["LaunchTemplateConfigs"]
    assert ltc["Overrides"] == [{"InstanceType": "m5.large", "WeightedCapacity": 2}]
    [lt] = sent["CreateLaunchTemplate"]
    assert lt["LaunchTemplateName"] == "annex-sp1"
    assert lt["LaunchTemplateData"]["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    live = _live(cloud, "sp1")
    assert len(live) == 2                         # weight 2: two instances, capacity 4
    assert all({t["Key"]: t["Value"] for t in i["Tags"]} == {
        TAG_ANNEX_NAME: "sp1", "team": "hep", "htcondor:ConfigBucket": outputs.bucket,
        TAG_LAUNCH_TOKEN: cfg["ClientToken"], TAG_LEASE_END: str(expires),
        TAG_ANNEX_OWNER: caller_owner(cloud)}
        for i in live.values())
    assert _bundles(cloud, outputs) == ["config-sp1.tar.gz"]


def test_classic_slots_config_from_stdin(cloud, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(SFR)))
    assert main(["-annex-name", "sp2", "-slots", "2", "-aws-spot-fleet-config-file", "-",
                 "-yes"]) == 0
    assert len(_live(cloud, "sp2")) == 1


def test_classic_slots_from_knobs_and_the_prompt(cloud, tmp_path, capsys, monkeypatch):
    config.write_block("spot", {
        "ANNEX_DEFAULT_SFR_CONFIG_FILE": _sfr_file(tmp_path, {"LaunchSpecifications": [
            {"InstanceType": "m5.large", "WeightedCapacity": 1}]}),
        "ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE": FLEET_ROLE})
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))

    assert main(["-annex-name", "sp3", "-slots", "3"]) == 0

    out = capsys.readouterr().out
    assert out.startswith("Will request 3 spot slots (Spot Fleet weighted capacity) for 0.83 "
                          "hours. Each instance will terminate after being idle for 0.25 "
                          "hours.\nEstimated cost for the whole lease: 3 x m5.large at "), out
    assert "\nIs that OK? (Type 'yes' or 'no'): Starting annex..." in out
    assert len(_live(cloud, "sp3")) == 3


def test_classic_declined_spot_prompt_names_the_spot_flags(cloud, tmp_path, capsys,
                                                           monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("no\n"))
    assert main(["-annex-name", "sp4", "-slots", "2", "-aws-spot-fleet-config-file",
                 _sfr_file(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "To change the spot fleet's size, use the -slots flag." in out
    assert _schedules(cloud) == [] and _live(cloud, "sp4") == {}


def test_classic_spot_without_a_fleet_role_uses_the_one_setup_made(cloud, outputs, tmp_path,
                                                                    capsys, sent):
    # setup creates the Spot Fleet role and records it (ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE), so
    # a file without IamFleetRole works on a fresh account (aws-reality.md §9).
    role = config.knob(config.read_knobs(), "ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE", "us-east-1")
    code = main(["-annex-name", "sp5", "-slots", "2", "-aws-spot-fleet-config-file",
                 _sfr_file(tmp_path, {"LaunchSpecifications": [{"InstanceType": "m5.large"}]}),
                 "-yes"])
    assert code == 0, capsys.readouterr().err
    [params] = sent["RequestSpotFleet"]
    assert role and params["SpotFleetRequestConfig"]["IamFleetRole"] == role


def test_classic_off_cancels_the_spot_fleet(cloud, outputs, tmp_path, capsys):
    assert main(["-annex-name", "sp6", "-slots", "4", "-aws-spot-fleet-config-file",
                 _sfr_file(tmp_path), "-yes"]) == 0
    assert main(["-annex-name", "sp6x", "-slots", "2", "-aws-spot-fleet-config-file",
                 _sfr_file(tmp_path), "-yes"]) == 0
    capsys.readouterr()

    assert main(["-annex-name", "sp6", "off"]) == 0

    out = capsys.readouterr().out
    assert re.fullmatch(r"Annex sp6: terminated 2 instance\(s\); lease deleted; bundle deleted; "
                        r"spot fleet\(s\) sfr-[0-9a-f-]+ cancelled\.\n", out), out
    ec2 = make_client(cloud, "ec2")
    assert _live(cloud, "sp6") == {} and fleet.annex_spot_fleet_requests(ec2, "sp6") == []
    assert len(_live(cloud, "sp6x")) == 1 and len(fleet.annex_spot_fleet_requests(ec2,
                                                                                  "sp6x")) == 1
    assert _schedules(cloud) == ["annex-lease-sp6x"]


# --- modern create --spot ----------------------------------------------------------------------

def test_modern_spot_create_and_off(cloud, outputs, capsys):
    code = main(["create", "fl1", "--spot", "--capacity", "4", "--instance-types",
                 "m5.large:2,c5.large:2", "--duration", "30m", "--json"])

    out, err = capsys.readouterr()
    assert code == 0, err
    data = json.loads(out)
    assert data["fleet_id"].startswith("fleet-") and data["capacity"] == 4
    assert len(data["instances"]) == 2 and set(data["instances"]) == set(_live(cloud, "fl1"))
    ec2 = make_client(cloud, "ec2")
    [template] = fleet._annex_templates(ec2, "fl1")

    assert main(["off", "fl1", "--json"]) == 0

    ended = json.loads(capsys.readouterr().out)
    assert ended["fleets_ended"] == [data["fleet_id"]]
    assert ended["launch_templates_deleted"] == [template]
    assert sorted(ended["terminated"]) == sorted(data["instances"])
    assert ended["lease_deleted"] and ended["bundle_deleted"]
    assert _live(cloud, "fl1") == {} and fleet._annex_templates(ec2, "fl1") == []
    assert _schedules(cloud) == [] and _bundles(cloud, outputs) == []


def test_modern_spot_failure_leaves_nothing(cloud, outputs, capsys, monkeypatch):
    real = fleet.create_fleet_params

    def broken(request, template_id, version):
        return real(request, "lt-0123456789abcdef0", version)   # no such template
    monkeypatch.setattr(fleet, "create_fleet_params", broken)

    code = main(["create", "fl2", "--spot", "--capacity", "2"])

    err = capsys.readouterr().err
    assert code == 1 and "CreateFleet" in err, err
    assert fleet._annex_templates(make_client(cloud, "ec2"), "fl2") == []
    assert _schedules(cloud) == [] and _bundles(cloud, outputs) == []


# --- rollback of a launch whose reply was lost (reference §5: the original sent the made-up
# verb "SpotTerminateInstances" to roll back a spot fleet, and left the tarball in S3) ----------

@pytest.fixture
def lose_reply():
    """``lose_reply("RequestSpotFleet")``: the call reaches the endpoint, then the client sees
    a read timeout, as when a reply is lost on the way back."""
    import botocore.exceptions
    registered = []

    def lose(operation: str) -> None:
        def after_call(**_):
            raise botocore.exceptions.ReadTimeoutError(endpoint_url=f"(lost {operation} reply)")
        event = f"after-call.ec2.{operation}"
        _session().events.register(event, after_call)
        registered.append((event, after_call))
    yield lose
    for event, handler in registered:
        _session().events.unregister(event, handler)


@pytest.fixture
def no_retries(monkeypatch):
    """Launches give up at their first failure and a rollback looks once (no listing lag to
    wait out on moto): what a create does when every retry of a lost reply was lost too."""
    monkeypatch.setattr("condor_annex.providers.aws.launch_retry.TOTAL_S", 0.0)
    config.write_block("lag", {"ANNEX_LISTING_LAG": "0"})


def test_regression_spot_fleet_rollback_cancels_the_fleet(cloud, outputs, tmp_path, capsys,
                                                         sent, lose_reply, no_retries):
    lose_reply("RequestSpotFleet")

    code = main(["-annex-name", "lost1", "-slots", "4", "-aws-spot-fleet-config-file",
                 _sfr_file(tmp_path), "-yes"])

    err = capsys.readouterr().err
    assert code == 1 and "RequestSpotFleet" in err, err
    ec2 = make_client(cloud, "ec2")
    # The request reached the endpoint; its id was found by the request's tag and cancelled
    # with the AWS verb (the original's GAHP sent "SpotTerminateInstances").
    [cancel] = sent["CancelSpotFleetRequests"]
    assert re.fullmatch(r"sfr-[0-9a-f-]+", cancel["SpotFleetRequestIds"][0]) and \
        cancel == {"SpotFleetRequestIds": cancel["SpotFleetRequestIds"][:1],
                   "TerminateInstances": True}
    assert "SpotTerminateInstances" not in sent
    assert fleet.annex_spot_fleet_requests(ec2, "lost1") == [] and _live(cloud, "lost1") == {}
    assert _schedules(cloud) == [] and _bundles(cloud, outputs) == []
    assert list(tmp_path.glob("*.tar*")) == []


def test_regression_on_demand_rollback_terminates_what_the_lost_reply_started(
        cloud, outputs, capsys, sent, lose_reply, no_retries):
    lose_reply("RunInstances")

    code = main(["-annex-name", "lost2", "-count", "3", "-yes"])

    assert code == 1 and "RunInstances" in capsys.readouterr().err
    [terminate] = sent["TerminateInstances"]
    assert len(terminate["InstanceIds"]) == 3
    assert _live(cloud, "lost2") == {}
    assert _schedules(cloud) == [] and _bundles(cloud, outputs) == []


@pytest.mark.parametrize("argv", [
    ("-annex-name", "lost4", "-count", "3", "-yes"),
    ("create", "lost4", "--count", "3"),
], ids=["classic", "modern"])
def test_a_lost_launch_reply_is_answered_by_the_request_tag_not_a_second_launch(
        cloud, outputs, capsys, sent, lose_reply, argv):
    # Every RunInstances reply is lost: the create looks for its request's tag before
    # resending, finds the 3 instances, and succeeds with exactly 3 (one RunInstances).
    lose_reply("RunInstances")

    assert main(list(argv)) == 0, capsys.readouterr().err
    assert len(sent["RunInstances"]) == 1
    assert len(_live(cloud, "lost4")) == 3
    assert _schedules(cloud) == ["annex-lease-lost4"]


def test_a_failed_rollback_keeps_the_lease(cloud, outputs, capsys, lose_reply, monkeypatch,
                                           no_retries):
    # When the launch's instances cannot be ended, the lease (and the bundle it removes) stays,
    # so the lease enforcer still ends the annex on time.
    from condor_annex.providers.aws.provider import AwsProvider
    from condor_annex.errors import ProviderError
    lose_reply("RunInstances")

    def refuse(self, ids):
        raise ProviderError("ec2.TerminateInstances: Unavailable: try later", retryable=True)
    monkeypatch.setattr(AwsProvider, "terminate", refuse)

    assert main(["-annex-name", "lost3", "-count", "1", "-yes"]) == 1
    assert "RunInstances" in capsys.readouterr().err
    assert len(_live(cloud, "lost3")) == 1
    assert _schedules(cloud) == ["annex-lease-lost3"]
    assert _bundles(cloud, outputs) == ["config-lost3.tar.gz"]


def test_classic_spot_addressing_type_is_bad_input_and_creates_nothing(cloud, outputs,
                                                                       tmp_path, capsys):
    # Launch specifications become a launch template (for IMDSv2), which has no such field.
    code = main(["-annex-name", "sp9", "-slots", "2", "-aws-spot-fleet-config-file",
                 _sfr_file(tmp_path, {"LaunchSpecifications": [
                     {"InstanceType": "m5.large", "AddressingType": "public"}]}), "-yes"])
    err = capsys.readouterr().err
    assert code == 2 and err == ("condor_annex: -aws-spot-fleet-config-file: "
                                 "LaunchSpecifications[0]: AddressingType is deprecated and "
                                 "not supported; leave it out\n"), err
    assert _schedules(cloud) == [] and _bundles(cloud, outputs) == []
