"""``setup``, ``check-setup`` and teardown: one CloudFormation stack kept in this package.

The template (``templates/setup.yaml``) holds the private config bucket, the lease enforcer
(Lambda, its source :mod:`condor_annex.lease.handler` inlined at render time), the role
EventBridge Scheduler uses to invoke it, the instance role and profile, and the security group.
The key pair is made outside the stack with EC2 CreateKeyPair (moto's CloudFormation has no
``AWS::EC2::KeyPair``; and CreateKeyPair hands us the private key directly), tagged so teardown
deletes only a key pair setup made.

Unlike the original (reference §2): one stack instead of four, templates never fetched from a
third-party bucket, a total deadline on the wait, a stack left in ``ROLLBACK_COMPLETE`` by a failed
attempt is deleted and re-created instead of failing forever, and ``check_setup`` inspects every
resource instead of only the stack's existence.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from condor_annex.config import AwsSettings, user_config_path
from condor_annex.errors import InvalidRequestError, NotFoundError, ProviderError
from condor_annex.model import TAG_CONFIG_BUCKET, SetupOutputs
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

#: CloudFormation's limit on inline Lambda source (``Code.ZipFile``), bytes.  It was 4096
#: characters until 2022, when CloudFormation raised it to Lambda's direct-upload limit (see
#: aws-cdk PR #20624, "inline function code can exceed 4096 bytes"); 4 MB today.
ZIPFILE_MAX_BYTES = 4 * 1024 * 1024
#: The template line replaced by the handler's source.
HANDLER_MARKER = "# @LEASE_HANDLER_SOURCE@"
DEFAULT_STACK_NAME = "condor-annex"
#: Tag on the key pair that setup created (value: the stack name).
TAG_CREATED_BY = "condor-annex:CreatedByStack"
#: Prefix of lease schedule names (see :func:`condor_annex.model.lease_schedule_name`).
LEASE_PREFIX = "annex-lease-"

_OUTPUT_FIELDS = {
    "BucketName": "bucket",
    "LeaseFunctionArn": "lease_function_arn",
    "SchedulerRoleArn": "scheduler_role_arn",
    "InstanceProfileArn": "instance_profile_arn",
    "SecurityGroupId": "security_group_id",
    "KeyName": "key_name",
}
_DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"}


def handler_source() -> str:
    """The lease enforcer's source, as deployed (the text of ``condor_annex/lease/handler.py``)."""
    return resources.files("condor_annex.lease").joinpath("handler.py").read_text()


def render_template() -> str:
    """Return the setup template with the lease enforcer's source inlined.

    Returns:
        CloudFormation YAML.

    Raises:
        ProviderError: (code ``HandlerTooLarge``) the handler exceeds CloudFormation's inline
            ``ZipFile`` limit (:data:`ZIPFILE_MAX_BYTES`); a packaging defect, not a user error.
    """
    source = handler_source()
    size = len(source.encode())
    if size > ZIPFILE_MAX_BYTES:
        raise ProviderError(
            f"setup: the lease handler is {size} bytes; CloudFormation inlines at most "
            f"{ZIPFILE_MAX_BYTES} (Code.ZipFile)", code="HandlerTooLarge")
    template = resources.files(__package__).joinpath("templates/setup.yaml").read_text()
    out = []
    for line in template.splitlines():
        if line.strip() == HANDLER_MARKER:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + s if s.strip() else "" for s in source.splitlines())
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def key_name_for(stack_name: str) -> str:
    """Name of the key pair setup makes for ``stack_name`` (``<stack>-key``)."""
    return f"{stack_name}-key"


def setup(settings: AwsSettings, *, stack_name: str = DEFAULT_STACK_NAME,
          progress: Callable[[str], None] | None = None, ssh_cidr: str = "",
          htcondor_cidr: str = "0.0.0.0/0", key_dir: Path | None = None,
          poll_s: float = 1.0, deadline_s: float = 900.0) -> SetupOutputs:
    """Create (or find) the setup stack and key pair; return the stack's outputs.

    Idempotent: a complete stack is reused, so a second call returns the same outputs.  A stack
    left in ``ROLLBACK_COMPLETE`` by a failed attempt is deleted and created again.  Follows
    CloudFormation CreateStack / DescribeStacks / DescribeStackEvents and EC2 CreateKeyPair.

    Args:
        settings: how to reach AWS.
        stack_name: CloudFormation stack name.
        progress: called with the stack status (e.g. ``"CREATE_IN_PROGRESS"``) at each poll.
        ssh_cidr: addresses allowed to ssh (tcp/22) to instances; "" keeps ssh closed.
        htcondor_cidr: addresses allowed to reach HTCondor (tcp/9618) on instances.
        key_dir: where a new key pair's private key is saved as ``<key name>.pem`` (mode 600);
            default: the user config's directory (``~/.condor``).  The key is never printed.
        poll_s: seconds between DescribeStacks polls.
        deadline_s: total seconds to wait for the stack, all waits included.

    Returns:
        The stack's outputs.

    Raises:
        ProviderError: the stack failed (message: the failure reasons from its events), or the
            deadline passed; or any AWS call failed (the usual subclasses).
    """
    deadline = time.monotonic() + deadline_s
    cfn = make_client(settings, "cloudformation")
    key_name = ensure_key_pair(settings, key_name_for(stack_name), stack_name, key_dir)
    while True:
        stack = _describe_stack(cfn, stack_name)
        status = stack["StackStatus"] if stack else "NONE"
        if status in _DONE:
            return _private_bucket(settings, outputs_of(settings, stack))
        if status == "REVIEW_IN_PROGRESS":
            # An empty stack waiting for a change set someone else made: not ours to change.
            raise ProviderError(f"setup: stack {stack_name} is REVIEW_IN_PROGRESS (a change set "
                                "awaits execution); execute or delete it, then run setup again",
                                code=status)
        if status.endswith("_IN_PROGRESS"):
            _wait(cfn, stack_name, progress, poll_s, deadline)
            continue
        if status == "ROLLBACK_COMPLETE":
            # Left from a failed create: it can only be deleted (the original failed forever).
            with aws_errors("cloudformation.DeleteStack"):
                cfn.delete_stack(StackName=stack["StackId"])
            _wait(cfn, stack["StackId"], progress, poll_s, deadline)
            continue
        if status in ("NONE", "DELETE_COMPLETE"):
            with aws_errors("cloudformation.CreateStack"):
                cfn.create_stack(
                    StackName=stack_name, TemplateBody=render_template(),
                    Parameters=[
                        {"ParameterKey": "KeyName", "ParameterValue": key_name},
                        {"ParameterKey": "SshCidr", "ParameterValue": ssh_cidr},
                        {"ParameterKey": "HTCondorCidr", "ParameterValue": htcondor_cidr}],
                    Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
                    OnFailure="ROLLBACK",
                    Tags=[{"Key": "htcondor:Setup", "Value": stack_name}])
            stack = _wait(cfn, stack_name, progress, poll_s, deadline)
            if stack and stack["StackStatus"] in _DONE:
                return _private_bucket(settings, outputs_of(settings, stack))
            raise _stack_failure(cfn, stack_name, stack["StackStatus"] if stack else "gone")
        raise _stack_failure(cfn, stack_name, status)


def _private_bucket(settings: AwsSettings, outputs: SetupOutputs) -> SetupOutputs:
    """Make sure the config bucket blocks all public access (S3 PutPublicAccessBlock), whatever
    the template's processing did: the bucket holds per-annex credentials.  Idempotent."""
    with aws_errors("s3.PutPublicAccessBlock"):
        make_client(settings, "s3").put_public_access_block(
            Bucket=outputs.bucket, PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True,
                "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    return outputs


def outputs_of(settings: AwsSettings, stack: dict[str, Any]) -> SetupOutputs:
    """Build :class:`SetupOutputs` from a DescribeStacks stack.

    Raises:
        ProviderError: an expected output is missing (the stack is not ours, or is damaged).
    """
    outs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = sorted(set(_OUTPUT_FIELDS) - set(outs))
    if missing:
        raise ProviderError(f"setup: stack {stack['StackName']} lacks outputs {missing}; "
                            "it was not made by this version of condor-annex", code="BadStack")
    return SetupOutputs(region=settings.region, stack_name=stack["StackName"],
                        **{f: outs[k] for k, f in _OUTPUT_FIELDS.items()})


def ensure_key_pair(settings: AwsSettings, key_name: str, stack_name: str,
                    key_dir: Path | None = None) -> str:
    """Create key pair ``key_name`` unless it exists; save a new private key to
    ``<key_dir>/<key_name>.pem`` with mode 600 (EC2 DescribeKeyPairs / CreateKeyPair).

    Returns:
        ``key_name``.

    Raises:
        ProviderError: an AWS call failed.
    """
    ec2 = make_client(settings, "ec2")
    try:
        with aws_errors("ec2.DescribeKeyPairs"):
            ec2.describe_key_pairs(KeyNames=[key_name])
        return key_name
    except NotFoundError:
        pass
    with aws_errors("ec2.CreateKeyPair"):
        key = ec2.create_key_pair(KeyName=key_name, KeyType="ed25519", TagSpecifications=[
            {"ResourceType": "key-pair", "Tags": [{"Key": TAG_CREATED_BY, "Value": stack_name}]}])
    directory = key_dir or user_config_path().parent
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{key_name}.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(key["KeyMaterial"])
    return key_name


def check_setup(settings: AwsSettings, outputs: SetupOutputs) -> list[tuple[str, bool, str]]:
    """Inspect, for real, each resource setup made.

    Calls S3 HeadBucket / GetPublicAccessBlock, Lambda GetFunction, IAM GetInstanceProfile /
    ListRoleTags / GetRole, EC2 DescribeSecurityGroups / DescribeKeyPairs and CloudFormation
    DescribeStacks.  A failing check becomes a row, never an exception.

    Returns:
        (resource, ok, detail) rows, in a fixed order.
    """
    rows: list[tuple[str, bool, str]] = []

    def row(resource: str, check: Callable[[], str]) -> None:
        try:
            rows.append((resource, True, check()))
        except (ProviderError, _CheckFailed) as e:
            rows.append((resource, False, str(e)))

    row(f"stack {outputs.stack_name}", lambda: _check_stack(settings, outputs))
    row(f"bucket {outputs.bucket}", lambda: _check_bucket(settings, outputs))
    row("lease function", lambda: _check_function(settings, outputs))
    row("scheduler role", lambda: _check_scheduler_role(settings, outputs))
    row("instance profile", lambda: _check_profile(settings, outputs))
    row(f"security group {outputs.security_group_id}", lambda: _check_sg(settings, outputs))
    row(f"key pair {outputs.key_name}", lambda: _check_key(settings, outputs))
    return rows


def teardown(settings: AwsSettings, outputs: SetupOutputs, stack_name: str | None = None, *,
             force: bool = False, progress: Callable[[str], None] | None = None,
             poll_s: float = 1.0, deadline_s: float = 900.0) -> None:
    """Undo setup: empty the bucket, delete the stack, delete the key pair setup made.

    Refuses while leases exist (their enforcer would be deleted and their instances would run
    unbounded), unless ``force``.  Calls S3 ListObjectsV2 / DeleteObjects, CloudFormation
    DeleteStack / DescribeStacks, EC2 DescribeKeyPairs / DeleteKeyPair.  The local ``.pem`` file
    is left in place.

    Args:
        settings: how to reach AWS.
        outputs: what setup recorded.
        stack_name: the stack (default: ``outputs.stack_name``).
        force: delete even while annex leases exist.
        progress: called with the stack status at each poll.
        poll_s: seconds between polls.
        deadline_s: total seconds to wait for the deletion.

    Raises:
        InvalidRequestError: (code ``LeasesRemain``) leases exist and ``force`` is False.
        ProviderError: the deletion failed or timed out.
    """
    stack_name = stack_name or outputs.stack_name
    deadline = time.monotonic() + deadline_s
    if not force:
        names = _lease_names(settings)
        if names:
            raise InvalidRequestError(
                f"teardown: {len(names)} annex lease(s) remain ({', '.join(names[:5])}); end "
                "those annexes first (off NAME), or force the removal (setup --remove --force)",
                code="LeasesRemain")
    _empty_bucket(settings, outputs.bucket)
    cfn = make_client(settings, "cloudformation")
    stack = _describe_stack(cfn, stack_name)
    if stack and stack["StackStatus"] != "DELETE_COMPLETE":
        with aws_errors("cloudformation.DeleteStack"):
            cfn.delete_stack(StackName=stack["StackId"])
        stack = _wait(cfn, stack["StackId"], progress, poll_s, deadline)
        if stack and stack["StackStatus"] != "DELETE_COMPLETE":
            raise _stack_failure(cfn, stack["StackId"], stack["StackStatus"])
    ec2 = make_client(settings, "ec2")
    try:
        with aws_errors("ec2.DescribeKeyPairs"):
            pairs = ec2.describe_key_pairs(KeyNames=[outputs.key_name])["KeyPairs"]
    except NotFoundError:
        return
    for pair in pairs:
        if {"Key": TAG_CREATED_BY, "Value": stack_name} in pair.get("Tags", []):
            with aws_errors("ec2.DeleteKeyPair"):
                ec2.delete_key_pair(KeyName=pair["KeyName"])


# --- helpers -------------------------------------------------------------------------------

class _CheckFailed(Exception):
    """A check found the resource, but wrong."""


def _describe_stack(cfn: Any, stack: str) -> dict[str, Any] | None:
    try:
        with aws_errors("cloudformation.DescribeStacks"):
            return cfn.describe_stacks(StackName=stack)["Stacks"][0]
    except InvalidRequestError as e:
        # CloudFormation reports a missing stack as ValidationError "... does not exist".
        if "does not exist" in str(e):
            return None
        raise


def _wait(cfn: Any, stack: str, progress: Callable[[str], None] | None, poll_s: float,
          deadline: float) -> dict[str, Any] | None:
    """Poll until the stack is no longer ``*_IN_PROGRESS``; return it (None when gone)."""
    while True:
        current = _describe_stack(cfn, stack)
        status = current["StackStatus"] if current else "DELETE_COMPLETE"
        if progress:
            progress(status)
        if not status.endswith("_IN_PROGRESS"):
            return current
        if time.monotonic() + poll_s > deadline:
            raise ProviderError(f"setup: stack {stack} still {status} at the deadline; "
                                "look at its events in the CloudFormation console",
                                code="Timeout", retryable=True)
        time.sleep(poll_s)


def _stack_failure(cfn: Any, stack: str, status: str) -> ProviderError:
    reasons: list[str] = []
    try:
        with aws_errors("cloudformation.DescribeStackEvents"):
            events = cfn.describe_stack_events(StackName=stack)["StackEvents"]
        reasons = [f"{e['LogicalResourceId']}: {e['ResourceStatusReason']}" for e in events
                   if e.get("ResourceStatus", "").endswith("_FAILED")
                   and e.get("ResourceStatusReason")]
    except ProviderError:
        pass
    detail = "; ".join(reversed(reasons[:5])) or "no failure reason recorded"
    return ProviderError(f"setup: stack {stack} is {status}: {detail}", code=status)


def _lease_names(settings: AwsSettings) -> list[str]:
    """Names of the annexes that have a lease (one paginated ListSchedules)."""
    sch = make_client(settings, "scheduler")
    names = []
    with aws_errors("scheduler.ListSchedules"):
        for page in sch.get_paginator("list_schedules").paginate(NamePrefix=LEASE_PREFIX):
            names += [s["Name"][len(LEASE_PREFIX):] for s in page.get("Schedules", [])]
    return names


def _empty_bucket(settings: AwsSettings, bucket: str) -> None:
    s3 = make_client(settings, "s3")
    try:
        with aws_errors("s3.ListObjectsV2"):
            pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))
    except NotFoundError:
        return
    for page in pages:
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            with aws_errors("s3.DeleteObjects"):
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


def _arn_name(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _check_stack(settings: AwsSettings, outputs: SetupOutputs) -> str:
    stack = _describe_stack(make_client(settings, "cloudformation"), outputs.stack_name)
    if stack is None:
        raise _CheckFailed("stack does not exist; run setup")
    if stack["StackStatus"] not in _DONE:
        raise _CheckFailed(stack["StackStatus"])
    return stack["StackStatus"]


def _check_bucket(settings: AwsSettings, outputs: SetupOutputs) -> str:
    s3 = make_client(settings, "s3")
    with aws_errors("s3.HeadBucket"):
        s3.head_bucket(Bucket=outputs.bucket)
    with aws_errors("s3.GetPublicAccessBlock"):
        block = s3.get_public_access_block(Bucket=outputs.bucket)
    if not all(block["PublicAccessBlockConfiguration"].values()):
        raise _CheckFailed("public access is not fully blocked")
    return "exists, public access blocked"


def _check_function(settings: AwsSettings, outputs: SetupOutputs) -> str:
    with aws_errors("lambda.GetFunction"):
        fn = make_client(settings, "lambda").get_function(
            FunctionName=outputs.lease_function_arn)["Configuration"]
    return f"{fn['FunctionName']} ({fn.get('Runtime', '?')}, {fn.get('State', 'Active')})"


def _check_scheduler_role(settings: AwsSettings, outputs: SetupOutputs) -> str:
    with aws_errors("iam.GetRole"):
        role = make_client(settings, "iam").get_role(
            RoleName=_arn_name(outputs.scheduler_role_arn))["Role"]
    if "scheduler.amazonaws.com" not in str(role.get("AssumeRolePolicyDocument", "")):
        raise _CheckFailed(f"{role['RoleName']} does not trust scheduler.amazonaws.com")
    return role["RoleName"]


def _check_profile(settings: AwsSettings, outputs: SetupOutputs) -> str:
    iam = make_client(settings, "iam")
    with aws_errors("iam.GetInstanceProfile"):
        profile = iam.get_instance_profile(
            InstanceProfileName=_arn_name(outputs.instance_profile_arn))["InstanceProfile"]
    roles = profile.get("Roles", [])
    if len(roles) != 1:
        raise _CheckFailed(f"has {len(roles)} roles; expected 1")
    with aws_errors("iam.ListRoleTags"):
        tags = iam.list_role_tags(RoleName=roles[0]["RoleName"])["Tags"]
    value = next((t["Value"] for t in tags if t["Key"] == TAG_CONFIG_BUCKET), None)
    if value != outputs.bucket:
        raise _CheckFailed(f"role {roles[0]['RoleName']} tag {TAG_CONFIG_BUCKET} is {value!r}, "
                           f"not {outputs.bucket!r}")
    return f"{profile['InstanceProfileName']} (role {roles[0]['RoleName']})"


def _check_sg(settings: AwsSettings, outputs: SetupOutputs) -> str:
    with aws_errors("ec2.DescribeSecurityGroups"):
        group = make_client(settings, "ec2").describe_security_groups(
            GroupIds=[outputs.security_group_id])["SecurityGroups"][0]
    ports = {p.get("FromPort") for p in group.get("IpPermissions", [])}
    if 9618 not in ports:
        raise _CheckFailed("tcp/9618 (HTCondor) is not open")
    return "tcp/" + ", ".join(str(p) for p in sorted(ports, key=str)) + " open"


def _check_key(settings: AwsSettings, outputs: SetupOutputs) -> str:
    with aws_errors("ec2.DescribeKeyPairs"):
        make_client(settings, "ec2").describe_key_pairs(KeyNames=[outputs.key_name])
    return "exists"
