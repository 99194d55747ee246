"""setup / check_setup / teardown and the CloudFormation template, against the moto server."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from condor_annex.errors import InvalidRequestError, ProviderError
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
    assert "def enforce(event, clients, now=None):" in text
    assert len(aws_setup.handler_source().encode()) <= aws_setup.ZIPFILE_MAX_BYTES


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
    assert "ec2.CreateKeyPair" not in calls


def test_setup_with_ssh_opens_port_22(aws, tmp_path):
    from condor_annex.providers.aws.session import make_client

    out = aws_setup.setup(aws, ssh_cidr="192.0.2.0/24", key_dir=tmp_path, poll_s=0.1,
                          deadline_s=60)

    group = make_client(aws, "ec2").describe_security_groups(
        GroupIds=[out.security_group_id])["SecurityGroups"][0]
    ports = {(p["FromPort"], r["CidrIp"]) for p in group["IpPermissions"]
             for r in p["IpRanges"]}
    assert ports == {(9618, "0.0.0.0/0"), (22, "192.0.2.0/24")}


def test_setup_without_ssh_keeps_port_22_closed(aws, outputs):
    from condor_annex.providers.aws.session import make_client

    group = make_client(aws, "ec2").describe_security_groups(
        GroupIds=[outputs.security_group_id])["SecurityGroups"][0]
    assert {p["FromPort"] for p in group["IpPermissions"]} == {9618}


def test_instance_role_is_tagged_with_the_bucket(aws, outputs):
    from condor_annex.providers.aws.session import make_client

    iam = make_client(aws, "iam")
    name = outputs.instance_profile_arn.rsplit("/", 1)[-1]
    role = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"][0]
    tags = iam.list_role_tags(RoleName=role["RoleName"])["Tags"]
    assert {"Key": "htcondor:ConfigBucket", "Value": outputs.bucket} in tags


def test_check_setup_inspects_each_resource(aws, outputs):
    rows = aws_setup.check_setup(aws, outputs)

    names = [r[0] for r in rows]
    assert names == [f"stack {outputs.stack_name}", f"bucket {outputs.bucket}",
                     "lease function", "scheduler role", "instance profile",
                     f"security group {outputs.security_group_id}",
                     f"key pair {outputs.key_name}"]
    assert all(ok for name, ok, _ in rows), rows


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

    rows = aws_setup.check_setup(aws, outputs)
    assert [ok for _, ok, _ in rows] == [False] * len(rows), rows
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
    assert len(provider.check_setup(out)) == 7


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
