"""setup / check_setup / teardown and the CloudFormation template, against the moto server."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from condor_annex.errors import InvalidRequestError, NotSetUpError, ProviderError
from condor_annex.providers.aws import setup as aws_setup


def test_rendered_template_passes_cfn_lint(tmp_path):
    rendered = tmp_path / "setup.yaml"
    rendered.write_text(aws_setup.render_template())
    cfn_lint = Path(sys.executable).with_name("cfn-lint")

    run = subprocess.run([str(cfn_lint), str(rendered)], capture_output=True, text=True,
                         timeout=300)

    assert run.returncode == 0, run.stdout + run.stderr


def test_rendered_template_inlines_the_handler():
    text = aws_setup.render_template()

    assert aws_setup.HANDLER_MARKER not in text
    assert "def enforce(event, clients, now=None, sleep=time.sleep):" in text
    assert len(aws_setup.handler_source().encode()) <= aws_setup.ZIPFILE_MAX_BYTES
    assert len(text.encode()) <= 51_200          # CreateStack / CreateChangeSet TemplateBody


def test_render_refuses_a_handler_too_large(monkeypatch):
    monkeypatch.setattr(aws_setup, "handler_source",
                        lambda: "x = 1\n" * (aws_setup.ZIPFILE_MAX_BYTES // 6 + 1))

    with pytest.raises(ProviderError, match=str(aws_setup.ZIPFILE_MAX_BYTES)):
        aws_setup.render_template()


def test_setup_creates_the_stack_and_key(aws, tmp_path):
    statuses: list[str] = []

    out = aws_setup.setup(aws, progress=statuses.append, key_dir=tmp_path, poll_s=0.1,
                          deadline_s=60)

    assert out.region == "us-east-1" and out.stack_name == "condor-annex"
    assert out.key_name == "condor-annex-key"
    assert out.lease_function_arn.endswith(":function:condor-annex-lease")
    assert all([out.bucket, out.scheduler_role_arn, out.instance_profile_arn,
                out.security_group_id])
    assert statuses and statuses[-1] == "CREATE_COMPLETE"
    pem = tmp_path / "condor-annex-key.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in pem.read_text()


def test_setup_is_idempotent(aws, outputs, tmp_path):
    from condor_annex.providers.aws.session import add_call_listener, remove_call_listener

    calls: list[str] = []
    add_call_listener(calls.append)
    try:
        again = aws_setup.setup(aws, key_dir=tmp_path / "keys", poll_s=0.1, deadline_s=60)
    finally:
        remove_call_listener(calls.append)

    assert again == outputs
    assert "cloudformation.CreateStack" not in calls
    assert "cloudformation.CreateChangeSet" not in calls
    assert "ec2.CreateKeyPair" not in calls


def test_setup_with_ssh_opens_port_22(aws, tmp_path):
    from condor_annex.providers.aws.session import make_client

    out = aws_setup.setup(aws, ssh_cidr="192.0.2.0/24", key_dir=tmp_path, poll_s=0.1,
                          deadline_s=60)

    group = make_client(aws, "ec2").describe_security_groups(
        GroupIds=[out.security_group_id])["SecurityGroups"][0]
    ports = {(p["FromPort"], r["CidrIp"]) for p in group["IpPermissions"]
             for r in p["IpRanges"]}
    assert ports == {(22, "192.0.2.0/24")}   # no HTCondor port: nodes use CCB


def test_setup_without_ssh_opens_no_inbound_port(aws, outputs):
    # aws-reality.md §15: tcp/9618 was open to 0.0.0.0/0; nodes reach the pool through CCB.
    from condor_annex.providers.aws.session import make_client

    group = make_client(aws, "ec2").describe_security_groups(
        GroupIds=[outputs.security_group_id])["SecurityGroups"][0]
    assert group["IpPermissions"] == []


def test_instance_role_is_tagged_with_the_bucket(aws, outputs):
    from condor_annex.providers.aws.session import make_client

    iam = make_client(aws, "iam")
    name = outputs.instance_profile_arn.rsplit("/", 1)[-1]
    role = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"][0]
    tags = iam.list_role_tags(RoleName=role["RoleName"])["Tags"]
    assert {"Key": "htcondor:ConfigBucket", "Value": outputs.bucket} in tags


#: check-setup rows of the resources moto's CloudFormation skips (with only a warning).
MOTO_SKIPS = ("lease retries (event invoke config)",
              "lease failure alarm condor-annex-lease-failures",
              "lease sweep schedule condor-annex-lease-sweep")


def test_check_setup_inspects_each_resource(aws, outputs):
    rows = aws_setup.check_setup(aws, outputs)

    names = [r[0] for r in rows]
    assert names == [f"stack {outputs.stack_name}", f"bucket {outputs.bucket}", "agent",
                     "lease function", "lease function role",
                     "lease failure queue condor-annex-lease-failures", *MOTO_SKIPS,
                     "instance-ended rule condor-annex-instance-ended",
                     "scheduler role", "spot fleet role", "instance profile",
                     f"security group {outputs.security_group_id}",
                     f"key pair {outputs.key_name}"]
    assert all(ok for name, ok, _ in rows if name not in MOTO_SKIPS), rows
    detail = dict((name, detail) for name, _, detail in rows)
    assert detail["lease function"] == ("condor-annex-lease (python3.12, Active, timeout 300 s, "
                                        "reserved concurrency 10)")
    assert detail["agent"] == "agent/condor-annex-agent-0.1.0.pyz"
    assert detail[f"stack {outputs.stack_name}"] == (
        f"CREATE_COMPLETE, template {aws_setup.template_hash()} (current)")


@pytest.mark.xfail(strict=True, reason="moto gap: its CloudFormation skips AWS::Scheduler::"
                   "Schedule, AWS::CloudWatch::Alarm and AWS::Lambda::EventInvokeConfig with a "
                   "warning; the local cloud's gateway creates them")
def test_check_setup_finds_every_resource_on_plain_moto(aws, outputs):
    assert all(ok for _, ok, _ in aws_setup.check_setup(aws, outputs))


def test_check_setup_of_a_stack_deleted_behind_our_back_is_one_line(aws, outputs):
    from condor_annex.providers.aws.session import make_client

    make_client(aws, "cloudformation").delete_stack(StackName=outputs.stack_name)

    with pytest.raises(NotSetUpError) as err:
        aws_setup.check_setup(aws, outputs)
    assert str(err.value) == ("check-setup: the setup recorded for us-east-1 (stack "
                              "condor-annex) no longer exists; run 'condor_annex setup'")


def test_check_setup_reports_a_failed_lease_waiting_in_the_queue(aws, outputs):
    from condor_annex.providers.aws.session import make_client

    sqs = make_client(aws, "sqs")
    url = sqs.get_queue_url(QueueName="condor-annex-lease-failures")["QueueUrl"]
    sqs.send_message(QueueUrl=url,
                     MessageBody='{"requestContext": {"condition": "RetriesExhausted"}}')

    rows = {name: (ok, detail) for name, ok, detail in aws_setup.check_setup(aws, outputs)}

    assert rows["lease failure queue condor-annex-lease-failures"] == (
        False, "holds 1 failed lease invocation(s): an annex may have outlived its lease; "
               "read them from the queue, then purge it")


def test_check_setup_bucket_is_private(aws, outputs):
    """setup blocks public access itself (PutPublicAccessBlock), not only through the template."""
    rows = dict((name, (ok, detail)) for name, ok, detail in aws_setup.check_setup(aws, outputs))

    assert rows[f"bucket {outputs.bucket}"] == (True, "exists, public access blocked")


@pytest.mark.xfail(strict=True, reason="moto gap: CloudFormation AWS::S3::Bucket ignores "
                   "PublicAccessBlockConfiguration (setup applies it through the S3 API too)")
def test_template_alone_blocks_public_access(aws):
    from condor_annex.providers.aws.session import make_client
    cfn = make_client(aws, "cloudformation")
    cfn.create_stack(StackName="template-only", TemplateBody=aws_setup.render_template(),
                     Parameters=[{"ParameterKey": "KeyName", "ParameterValue": "k"}],
                     Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"])
    outs = cfn.describe_stacks(StackName="template-only")["Stacks"][0]["Outputs"]
    bucket = next(o["OutputValue"] for o in outs if o["OutputKey"] == "BucketName")

    block = make_client(aws, "s3").get_public_access_block(Bucket=bucket)
    assert all(block["PublicAccessBlockConfiguration"].values())


def test_check_setup_notices_a_deleted_resource(aws, outputs):
    from condor_annex.providers.aws.session import make_client

    make_client(aws, "ec2").delete_key_pair(KeyName=outputs.key_name)

    rows = {name: ok for name, ok, _ in aws_setup.check_setup(aws, outputs)}
    assert rows[f"key pair {outputs.key_name}"] is False
    assert rows["lease function"] is True


def test_teardown_removes_everything(aws, outputs, provider):
    provider.put_bundle("foo", b"x")

    aws_setup.teardown(aws, outputs, poll_s=0.1, deadline_s=60)

    with pytest.raises(NotSetUpError, match="no longer exists; run 'condor_annex setup'"):
        aws_setup.check_setup(aws, outputs)
    # A second setup starts from scratch and works.
    again = aws_setup.setup(aws, poll_s=0.1, deadline_s=60)
    assert again.bucket != outputs.bucket


def test_teardown_refuses_while_leases_remain(aws, outputs, provider):
    from datetime import datetime, timedelta, timezone

    provider.create_lease("foo", datetime.now(timezone.utc) + timedelta(minutes=5))

    with pytest.raises(InvalidRequestError, match=r"lease\(s\) remain \(foo\)") as err:
        aws_setup.teardown(aws, outputs)
    assert err.value.code == "LeasesRemain"
    assert all(ok for name, ok, _ in aws_setup.check_setup(aws, outputs)
               if name == "lease function")


def test_provider_setup_delegates(aws, tmp_path):
    from condor_annex.providers.aws.provider import AwsProvider

    provider = AwsProvider(aws)
    out = provider.setup()

    assert provider.outputs == out
    assert len(provider.check_setup(out)) == 15


def test_setup_refuses_a_stack_awaiting_review(aws):
    from condor_annex.providers.aws.session import make_client

    make_client(aws, "cloudformation").create_change_set(
        StackName="condor-annex", ChangeSetName="pending", ChangeSetType="CREATE",
        TemplateBody=aws_setup.render_template(),
        Parameters=[{"ParameterKey": "KeyName", "ParameterValue": "k"}],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"])

    with pytest.raises(ProviderError, match="REVIEW_IN_PROGRESS"):
        aws_setup.setup(aws, poll_s=0.1, deadline_s=10)


_FAILING_TEMPLATE = """
Resources:
  Group:
    Type: AWS::EC2::SecurityGroup
    Properties:
      GroupDescription: fails to create
      VpcId: vpc-00000000000000000
"""


@pytest.mark.xfail(strict=True, reason="moto gap: CloudFormation never ends a create in "
                   "ROLLBACK_COMPLETE (bad resources are made anyway, or the call fails with HTTP "
                   "500), so setup's delete-and-recreate path cannot be reached on moto")
def test_setup_recovers_from_rollback_complete(aws):
    from condor_annex.providers.aws.session import make_client

    cfn = make_client(aws, "cloudformation", fast_fail=True)
    try:
        cfn.create_stack(StackName="condor-annex", TemplateBody=_FAILING_TEMPLATE)
    except Exception:  # noqa: BLE001 - moto may answer the failing create with HTTP 500
        pass
    status = cfn.describe_stacks(StackName="condor-annex")["Stacks"][0]["StackStatus"]
    assert status == "ROLLBACK_COMPLETE"

    out = aws_setup.setup(aws, poll_s=0.1, deadline_s=10)
    assert out.stack_name == "condor-annex"


# --- the template's kill switches and least privilege ----------------------------------------

@pytest.fixture(scope="module")
def template():
    from cfnlint.decode import decode_str

    parsed, problems = decode_str(aws_setup.render_template())
    assert not problems
    return parsed


def _statements(role):
    return [st for policy in role["Properties"].get("Policies", [])
            for st in policy["PolicyDocument"]["Statement"]]


def _actions(statement):
    action = statement["Action"]
    return [action] if isinstance(action, str) else list(action)


def test_failed_lease_invocations_go_to_a_queue_with_an_alarm(template):
    res = template["Resources"]

    assert res["LeaseFailureQueue"]["Type"] == "AWS::SQS::Queue"
    config = res["LeaseInvokeConfig"]
    assert config["Type"] == "AWS::Lambda::EventInvokeConfig"
    assert config["Properties"]["FunctionName"] == {"Ref": "LeaseFunction"}
    assert config["Properties"]["MaximumRetryAttempts"] == 2
    assert config["Properties"]["DestinationConfig"] == {
        "OnFailure": {"Destination": {"Fn::GetAtt": ["LeaseFailureQueue", "Arn"]}}}
    alarm = res["LeaseFailureAlarm"]["Properties"]
    assert res["LeaseFailureAlarm"]["Type"] == "AWS::CloudWatch::Alarm"
    assert (alarm["Namespace"], alarm["MetricName"]) == ("AWS/SQS",
                                                         "ApproximateNumberOfMessagesVisible")
    assert alarm["Dimensions"] == [{"Name": "QueueName",
                                    "Value": {"Fn::GetAtt": ["LeaseFailureQueue", "QueueName"]}}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "GreaterThanOrEqualToThreshold", 1)
    # The function's role may send to the queue (the destination uses the execution role).
    sends = [st for st in _statements(res["LeaseFunctionRole"])
             if "sqs:SendMessage" in _actions(st)]
    assert [st["Resource"] for st in sends] == [{"Fn::GetAtt": ["LeaseFailureQueue", "Arn"]}]


def test_the_sweep_schedule_invokes_the_function_every_5_minutes(template):
    res = template["Resources"]
    sweep = res["LeaseSweepSchedule"]

    assert sweep["Type"] == "AWS::Scheduler::Schedule"
    props = sweep["Properties"]
    assert props["Name"] == {"Fn::Sub": "${AWS::StackName}-lease-sweep"}
    assert props["ScheduleExpression"] == "rate(5 minutes)" and props["State"] == "ENABLED"
    assert props["Target"]["Arn"] == {"Fn::GetAtt": ["LeaseFunction", "Arn"]}
    assert props["Target"]["RoleArn"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    assert props["Target"]["Input"] == {
        "Fn::Sub": '{"Sweep": true, "S3BucketName": "${ConfigBucket}"}'}
    invokes = [st for st in _statements(res["SchedulerRole"])
               if "lambda:InvokeFunction" in _actions(st)]
    assert [st["Resource"] for st in invokes] == [{"Fn::GetAtt": ["LeaseFunction", "Arn"]}]


def test_the_function_outlasts_the_in_minute_wait_and_has_reserved_concurrency(template):
    import condor_annex.lease.handler as lease_handler

    props = template["Resources"]["LeaseFunction"]["Properties"]

    assert props["Timeout"] == 300 and props["Timeout"] > lease_handler.MAX_WAIT_S + 60
    assert props["ReservedConcurrentExecutions"] == {
        "Fn::If": ["ReserveConcurrency", {"Ref": "LeaseConcurrency"}, {"Ref": "AWS::NoValue"}]}
    assert template["Parameters"]["LeaseConcurrency"]["Default"] == 10


def test_setup_creates_the_spot_fleet_role(aws, outputs, template):
    from condor_annex.providers.aws.session import make_client

    role = template["Resources"]["SpotFleetRole"]["Properties"]
    assert role["ManagedPolicyArns"] == [{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/"
                                                     "service-role/AmazonEC2SpotFleetTaggingRole"}]
    made = make_client(aws, "iam").get_role(RoleName=outputs.spot_fleet_role_arn.split("/")[-1])
    trust = made["Role"]["AssumeRolePolicyDocument"]["Statement"]
    assert [st["Principal"] for st in trust] == [{"Service": "spotfleet.amazonaws.com"}]


def test_the_enforcer_ends_only_what_carries_an_annex_tag(template):
    ending = {"ec2:TerminateInstances", "ec2:CancelSpotFleetRequests", "ec2:DeleteFleets",
              "ec2:DeleteLaunchTemplate"}
    statements = _statements(template["Resources"]["LeaseFunctionRole"])

    granting = [st for st in statements if ending & set(_actions(st))]
    assert set().union(*(set(_actions(st)) for st in granting)) >= ending
    for st in granting:
        assert st["Condition"] == {"Null": {"aws:ResourceTag/htcondor:AnnexName": "false"}}
        assert "*" not in st["Resource"]
    assert not [st for st in statements if any(a in ("ec2:*", "*") for a in _actions(st))]


def test_instance_role_introspects_only_itself(template):
    res = template["Resources"]
    iam_grants = [(a, st["Resource"]) for st in _statements(res["InstanceRole"])
                  for a in _actions(st) if a.startswith("iam:")]
    assert iam_grants == []
    policy = res["InstanceIntrospection"]["Properties"]
    assert policy["Roles"] == [{"Ref": "InstanceRole"}]
    assert {(st["Action"], str(st["Resource"])) for st in policy["PolicyDocument"]["Statement"]} \
        == {("iam:GetInstanceProfile", str({"Fn::GetAtt": ["InstanceProfile", "Arn"]})),
            ("iam:ListRoleTags", str({"Fn::GetAtt": ["InstanceRole", "Arn"]}))}


# --- upgrades ---------------------------------------------------------------------------------

def _setup_from_an_older_package(aws, tmp_path, monkeypatch):
    """Deploy what an older condor-annex deployed (the enforcer with a 60 s timeout); return
    its outputs and template hash."""
    shipped = aws_setup.template_source()
    assert "      Timeout: 300\n" in shipped
    with monkeypatch.context() as older:
        older.setattr(aws_setup, "template_source",
                      lambda: shipped.replace("      Timeout: 300\n", "      Timeout: 60\n"))
        return (aws_setup.setup(aws, key_dir=tmp_path, poll_s=0.1, deadline_s=60),
                aws_setup.template_hash())


def test_setup_upgrades_a_stack_from_an_older_package(aws, tmp_path, monkeypatch):
    from condor_annex.providers.aws.session import add_call_listener, remove_call_listener

    old, old_hash = _setup_from_an_older_package(aws, tmp_path, monkeypatch)
    rows = {name: (ok, detail) for name, ok, detail in aws_setup.check_setup(aws, old)}
    assert rows["stack condor-annex"] == (False, (
        f"CREATE_COMPLETE, deployed from another condor-annex (template {old_hash}, this "
        f"package's {aws_setup.template_hash()}); run 'condor_annex setup' to update it"))
    assert rows["lease function"][0] is False and "timeout 60 s" in rows["lease function"][1]
    calls: list[str] = []
    statuses: list[str] = []
    add_call_listener(calls.append)
    try:
        new = aws_setup.setup(aws, progress=statuses.append, key_dir=tmp_path, poll_s=0.1,
                              deadline_s=60)
    finally:
        remove_call_listener(calls.append)

    assert new == old
    assert new.changes == ("Modify LeaseFunction (AWS::Lambda::Function)",)
    assert "cloudformation.CreateStack" not in calls
    assert calls.count("cloudformation.CreateChangeSet") == 1
    assert calls.count("cloudformation.ExecuteChangeSet") == 1
    assert statuses[0] == "change set: 1 changes" and statuses[-1] == "UPDATE_COMPLETE"
    rows = {name: (ok, detail) for name, ok, detail in aws_setup.check_setup(aws, new)}
    assert rows["lease function"] == (True, "condor-annex-lease (python3.12, Active, timeout "
                                            "300 s, reserved concurrency 10)")
    # Once current, setup changes nothing.
    assert aws_setup.setup(aws, key_dir=tmp_path, poll_s=0.1, deadline_s=60).changes == ()


@pytest.mark.xfail(strict=True, reason="moto gap: ExecuteChangeSet does not re-evaluate the "
                   "stack's Outputs (moto's ChangeSet.apply updates the resources only; its "
                   "UpdateStack does both), so TemplateHash keeps the old value")
def test_after_an_upgrade_check_setup_finds_the_stack_current(aws, tmp_path, monkeypatch):
    _setup_from_an_older_package(aws, tmp_path, monkeypatch)

    new = aws_setup.setup(aws, key_dir=tmp_path, poll_s=0.1, deadline_s=60)

    rows = {name: (ok, detail) for name, ok, detail in aws_setup.check_setup(aws, new)}
    assert rows["stack condor-annex"] == (
        True, f"UPDATE_COMPLETE, template {aws_setup.template_hash()} (current)")


def test_setup_keeps_the_stack_parameters_it_is_not_given(aws, tmp_path):
    from condor_annex.providers.aws.session import make_client

    made = aws_setup.setup(aws, ssh_cidr="192.0.2.0/24", key_dir=tmp_path, poll_s=0.1,
                           deadline_s=60)
    again = aws_setup.setup(aws, key_dir=tmp_path, poll_s=0.1, deadline_s=60)

    assert again == made and again.changes == ()
    group = make_client(aws, "ec2").describe_security_groups(
        GroupIds=[again.security_group_id])["SecurityGroups"][0]
    assert 22 in {p["FromPort"] for p in group["IpPermissions"]}
