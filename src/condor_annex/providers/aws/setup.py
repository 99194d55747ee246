"""``setup``, ``check-setup`` and teardown: one CloudFormation stack kept in this package.

The template (``templates/setup.yaml``) holds the private config bucket, the lease function
(Lambda, its source :mod:`condor_annex.lease.handler` inlined at render time) with its failure
queue (on-failure destination after two retries), an alarm on that queue, the recurring lease
sweep schedule and the EC2 state-change rule, the role EventBridge Scheduler uses to invoke
it, the instance role and profile, the Spot Fleet role, the security group, and the seed
node's role, instance profile and security group (issue 13).  Each rendered
template carries its own hash as the stack output ``TemplateHash``: ``setup`` on a stack with
another hash updates it through a change set, and ``check_setup`` reports a stack deployed from
another version of the package.
The key pair is made outside the stack with EC2 CreateKeyPair (moto's CloudFormation has no
``AWS::EC2::KeyPair``; and CreateKeyPair hands us the private key directly), tagged so teardown
deletes only a key pair setup made.

Unlike the original (reference §2): one stack instead of four, templates never fetched from a
third-party bucket, a total deadline on the wait, a stack left in ``ROLLBACK_COMPLETE`` by a failed
attempt is deleted and re-created instead of failing forever, an existing stack is upgraded in
place (the original's users deleted and re-created theirs at each Lambda runtime deprecation),
and ``check_setup`` inspects every resource, each with a describe call of its own service,
instead of only the stack's existence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from condor_annex.config import AwsSettings, user_config_path
from condor_annex.errors import InvalidRequestError, NotFoundError, NotSetUpError, ProviderError
from condor_annex.model import TAG_CONFIG_BUCKET, SetupOutputs
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

#: CloudFormation's limit on inline Lambda source (``Code.ZipFile``), bytes.  It was 4096
#: characters until 2022, when CloudFormation raised it to Lambda's direct-upload limit (see
#: aws-cdk PR #20624, "inline function code can exceed 4096 bytes"); 4 MB today.
ZIPFILE_MAX_BYTES = 4 * 1024 * 1024
#: The template line replaced by the handler's source.
HANDLER_MARKER = "# @LEASE_HANDLER_SOURCE@"
#: The template text replaced by the rendered template's hash (output ``TemplateHash``).
HASH_MARKER = "@TEMPLATE_HASH@"
#: CloudFormation's limit on CreateStack / UpdateStack / CreateChangeSet ``TemplateBody``, bytes.
TEMPLATE_BODY_MAX_BYTES = 51_200
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
    "SpotFleetRoleArn": "spot_fleet_role_arn",
}
#: Outputs of the seed node's pieces (issue 13): read when present, not required of a stack.
_SEED_OUTPUT_FIELDS = {
    "SeedInstanceProfileArn": "seed_instance_profile_arn",
    "SeedRoleArn": "seed_role_arn",
    "SeedSecurityGroupId": "seed_security_group_id",
}
_DONE = {"CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"}
_CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"]
#: Change set states that are not final (DescribeChangeSet ``Status``).
_CHANGE_SET_BUSY = {"CREATE_PENDING", "CREATE_IN_PROGRESS"}


def resource_names(stack_name: str) -> dict[str, str]:
    """Names the template gives resources of stack ``stack_name`` (its ``Name``-like
    properties), by logical id: ``LeaseFunction``, ``LeaseFailureQueue``,
    ``LeaseFailureAlarm``, ``LeaseSweepSchedule``, ``InstanceEndedRule``."""
    return {"LeaseFunction": f"{stack_name}-lease",
            "LeaseFailureQueue": f"{stack_name}-lease-failures",
            "LeaseFailureAlarm": f"{stack_name}-lease-failures",
            "LeaseSweepSchedule": f"{stack_name}-lease-sweep",
            "InstanceEndedRule": f"{stack_name}-instance-ended"}


def handler_source() -> str:
    """The lease enforcer's source, as deployed (the text of ``condor_annex/lease/handler.py``)."""
    return resources.files("condor_annex.lease").joinpath("handler.py").read_text()


def template_source() -> str:
    """The setup template as shipped (``templates/setup.yaml``), before rendering."""
    return resources.files(__package__).joinpath("templates/setup.yaml").read_text()


def render_template() -> str:
    """Return the setup template with the lease enforcer's source inlined and its own hash
    (:func:`template_hash`) as the value of output ``TemplateHash``.

    Returns:
        CloudFormation YAML.

    Raises:
        ProviderError: (code ``HandlerTooLarge``) the handler exceeds CloudFormation's inline
            ``ZipFile`` limit (:data:`ZIPFILE_MAX_BYTES`), or (code ``TemplateTooLarge``) the
            template exceeds ``TemplateBody``'s (:data:`TEMPLATE_BODY_MAX_BYTES`); packaging
            defects, not user errors.
    """
    return _render()[0]


def template_hash() -> str:
    """The hash this package's template carries as output ``TemplateHash``: 16 hex digits of
    the SHA-256 of the rendered template before the hash is put in."""
    return _render()[1]


def _render() -> tuple[str, str]:
    source = handler_source()
    size = len(source.encode())
    if size > ZIPFILE_MAX_BYTES:
        raise ProviderError(
            f"setup: the lease handler is {size} bytes; CloudFormation inlines at most "
            f"{ZIPFILE_MAX_BYTES} (Code.ZipFile)", code="HandlerTooLarge")
    template = template_source()
    out: list[str] = []
    for line in template.splitlines():
        if line.strip() == HANDLER_MARKER:
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + s if s.strip() else "" for s in source.splitlines())
        else:
            out.append(line)
    text = "\n".join(out) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    text = text.replace(HASH_MARKER, digest)
    if len(text.encode()) > TEMPLATE_BODY_MAX_BYTES:
        raise ProviderError(
            f"setup: the template is {len(text.encode())} bytes; CloudFormation takes at most "
            f"{TEMPLATE_BODY_MAX_BYTES} as TemplateBody", code="TemplateTooLarge")
    return text, digest


def key_name_for(stack_name: str) -> str:
    """Name of the key pair setup makes for ``stack_name`` (``<stack>-key``)."""
    return f"{stack_name}-key"


def setup(settings: AwsSettings, *, stack_name: str = DEFAULT_STACK_NAME,
          progress: Callable[[str], None] | None = None, ssh_cidr: str | None = None,
          htcondor_cidr: str | None = None, key_dir: Path | None = None,
          poll_s: float = 1.0, deadline_s: float = 900.0) -> SetupOutputs:
    """Create, find or upgrade the setup stack and key pair; return the stack's outputs.

    Idempotent: a stack deployed from this package's template (output ``TemplateHash``) with
    the same explicit parameters is reused.  A stack deployed from another template is updated
    in place: CreateChangeSet (UPDATE), DescribeChangeSet until it is ready, ExecuteChangeSet,
    then DescribeStacks until the update ends; the change set's resource changes are returned
    in :attr:`SetupOutputs.changes`.  A stack left in ``ROLLBACK_COMPLETE`` by a failed attempt
    is deleted and created again.  Also EC2 CreateKeyPair and S3 PutPublicAccessBlock.

    Args:
        settings: how to reach AWS.
        stack_name: CloudFormation stack name.
        progress: called with the stack status (e.g. ``"CREATE_IN_PROGRESS"``) at each poll,
            and with ``"change set: N changes"`` before an update is applied.
        ssh_cidr: addresses allowed to ssh (tcp/22) to instances; "" closes ssh; None keeps
            what the stack has (closed for a new stack).
        htcondor_cidr: addresses allowed to reach HTCondor (tcp/9618) on instances; None keeps
            what the stack has (the template's default for a new stack).
        key_dir: where a new key pair's private key is saved as ``<key name>.pem`` (mode 600);
            default: the user config's directory (``~/.condor``).  The key is never printed.
        poll_s: seconds between polls.
        deadline_s: total seconds to wait for the stack, all waits included.

    Returns:
        The stack's outputs.

    Raises:
        ProviderError: the stack or its update failed (message: the failure reasons from its
            events, or the change set's status reason), or the deadline passed; or any AWS call
            failed (the usual subclasses).
    """
    deadline = time.monotonic() + deadline_s
    cfn = make_client(settings, "cloudformation")
    key_name = ensure_key_pair(settings, key_name_for(stack_name), stack_name, key_dir)
    given = {"KeyName": key_name, "SshCidr": ssh_cidr, "HTCondorCidr": htcondor_cidr}
    wanted = {k: v for k, v in given.items() if v is not None}
    while True:
        stack = _describe_stack(cfn, stack_name)
        status = stack["StackStatus"] if stack else "NONE"
        if status in _DONE:
            assert stack is not None   # any status but NONE came from a stack
            if _is_current(stack, wanted):
                return _private_bucket(settings, outputs_of(settings, stack))
            changes = _update(cfn, stack, wanted, progress, poll_s, deadline)
            stack = _describe_stack(cfn, stack["StackId"]) or {}
            outputs = _private_bucket(settings, outputs_of(settings, stack))
            return dataclasses.replace(outputs, changes=tuple(changes))
        if status == "REVIEW_IN_PROGRESS":
            # An empty stack waiting for a change set someone else made: not ours to change.
            raise ProviderError(f"setup: stack {stack_name} is REVIEW_IN_PROGRESS (a change set "
                                "awaits execution); execute or delete it, then run setup again",
                                code=status)
        if status.endswith("_IN_PROGRESS"):
            _wait(cfn, stack_name, progress, poll_s, deadline)
            continue
        if status == "ROLLBACK_COMPLETE":
            assert stack is not None   # any status but NONE came from a stack
            # Left from a failed create: it can only be deleted (the original failed forever).
            with aws_errors("cloudformation.DeleteStack"):
                cfn.delete_stack(StackName=stack["StackId"])
            _wait(cfn, stack["StackId"], progress, poll_s, deadline)
            continue
        if status in ("NONE", "DELETE_COMPLETE"):
            with aws_errors("cloudformation.CreateStack"):
                cfn.create_stack(
                    StackName=stack_name, TemplateBody=render_template(),
                    Parameters=[{"ParameterKey": k, "ParameterValue": v}
                                for k, v in wanted.items()],
                    Capabilities=_CAPABILITIES, OnFailure="ROLLBACK",
                    Tags=[{"Key": "htcondor:Setup", "Value": stack_name}])
            stack = _wait(cfn, stack_name, progress, poll_s, deadline)
            if stack and stack["StackStatus"] in _DONE:
                return _private_bucket(settings, outputs_of(settings, stack))
            raise _stack_failure(cfn, stack_name, stack["StackStatus"] if stack else "gone")
        raise _stack_failure(cfn, stack_name, status)


def deployed_hash(stack: dict[str, Any]) -> str | None:
    """The ``TemplateHash`` output of a DescribeStacks stack (None: deployed before hashes)."""
    return next((o["OutputValue"] for o in stack.get("Outputs", [])
                 if o["OutputKey"] == "TemplateHash"), None)


def _is_current(stack: dict[str, Any], wanted: dict[str, str]) -> bool:
    """The stack runs this package's template with the wanted parameter values."""
    have = {p["ParameterKey"]: p.get("ParameterValue") for p in stack.get("Parameters", [])}
    return (deployed_hash(stack) == template_hash()
            and all(have.get(k) == v for k, v in wanted.items()))


def _update(cfn: Any, stack: dict[str, Any], wanted: dict[str, str],
            progress: Callable[[str], None] | None, poll_s: float,
            deadline: float) -> list[str]:
    """Apply this package's template to ``stack`` through a change set; return its resource
    changes, one line each.  Parameters not in ``wanted`` keep their previous values (new ones
    take the template's default).

    Raises:
        ProviderError: the change set or the update failed, or the deadline passed.
    """
    old = {p["ParameterKey"] for p in stack.get("Parameters", [])}
    template = render_template()
    params: list[dict[str, Any]] = [{"ParameterKey": k, "ParameterValue": v}
                                    for k, v in wanted.items()]
    params += [{"ParameterKey": k, "UsePreviousValue": True}
               for k in sorted((old & _parameters(template)) - set(wanted))]
    name = f"condor-annex-{template_hash()}-{int(time.time())}"
    try:
        with aws_errors("cloudformation.CreateChangeSet"):
            made = cfn.create_change_set(
                StackName=stack["StackName"], ChangeSetName=name, ChangeSetType="UPDATE",
                TemplateBody=template, Parameters=params, Capabilities=_CAPABILITIES,
                Description=f"condor-annex setup: template {template_hash()}",
                Tags=[{"Key": "htcondor:Setup", "Value": stack["StackName"]}])
    except InvalidRequestError as e:
        if "No updates are to be performed" in str(e):
            return []
        raise
    while True:
        with aws_errors("cloudformation.DescribeChangeSet"):
            change_set = cfn.describe_change_set(ChangeSetName=made["Id"])
        if change_set["Status"] not in _CHANGE_SET_BUSY:
            break
        if time.monotonic() + poll_s > deadline:
            raise ProviderError(f"setup: change set {name} still {change_set['Status']} at the "
                                "deadline", code="Timeout", retryable=True)
        time.sleep(poll_s)
    if change_set["Status"] != "CREATE_COMPLETE":
        reason = change_set.get("StatusReason") or change_set["Status"]
        with aws_errors("cloudformation.DeleteChangeSet"):
            cfn.delete_change_set(ChangeSetName=made["Id"])
        if "didn't contain changes" in reason or "No updates" in reason:
            return []
        raise ProviderError(f"setup: cannot update stack {stack['StackName']}: {reason}",
                            code="ChangeSetFailed")
    changes = [_change_line(c["ResourceChange"]) for c in _all_changes(cfn, change_set)
               if c.get("Type", "Resource") == "Resource" and "ResourceChange" in c]
    if progress:
        progress(f"change set: {len(changes)} changes")
    mark = _newest_event(cfn, stack["StackId"])
    with aws_errors("cloudformation.ExecuteChangeSet"):
        cfn.execute_change_set(ChangeSetName=made["Id"])

    def started(current: dict[str, Any]) -> bool:
        return (current["StackStatus"] != stack["StackStatus"]
                or current.get("LastUpdatedTime") != stack.get("LastUpdatedTime")
                or _newest_event(cfn, stack["StackId"]) != mark)

    after = _wait(cfn, stack["StackId"], progress, poll_s, deadline, started=started)
    if not after or after["StackStatus"] != "UPDATE_COMPLETE":
        raise _stack_failure(cfn, stack["StackId"], after["StackStatus"] if after else "gone")
    return changes or ["outputs only"]


def _parameters(template: str) -> set[str]:
    """Names declared in the template's ``Parameters`` section."""
    names, inside = set(), False
    for line in template.splitlines():
        if line and not line[0].isspace():
            inside = line.rstrip() == "Parameters:"
        elif inside and line.startswith("  ") and not line[2].isspace() and line.endswith(":"):
            names.add(line.strip()[:-1])
    return names


def _all_changes(cfn: Any, change_set: dict[str, Any]) -> list[dict[str, Any]]:
    """Every change of a DescribeChangeSet answer, following NextToken."""
    changes = list(change_set.get("Changes", []))
    token = change_set.get("NextToken")
    while token:
        with aws_errors("cloudformation.DescribeChangeSet"):
            page = cfn.describe_change_set(ChangeSetName=change_set["ChangeSetId"],
                                           NextToken=token)
        changes += page.get("Changes", [])
        token = page.get("NextToken")
    return changes


def _change_line(change: dict[str, Any]) -> str:
    """``"Modify LeaseFunction (AWS::Lambda::Function)"``; ``", replaced"`` when CloudFormation
    replaces the resource."""
    line = f"{change['Action']} {change['LogicalResourceId']} ({change['ResourceType']})"
    return line + (", replaced" if change.get("Replacement") == "True" else "")


def _private_bucket(settings: AwsSettings, outputs: SetupOutputs) -> SetupOutputs:
    """Make sure the config bucket blocks all public access (S3 PutPublicAccessBlock), whatever
    the template's processing did: the bucket holds per-annex credentials.  Idempotent."""
    with aws_errors("s3.PutPublicAccessBlock"):
        make_client(settings, "s3").put_public_access_block(
            Bucket=outputs.bucket, PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True,
                "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    # The instances fetch the agent from here (bootstrap); only when missing or different.
    from condor_annex.providers.aws.agent_package import upload_agent
    upload_agent(settings, outputs.bucket)
    return outputs


def outputs_of(settings: AwsSettings, stack: dict[str, Any]) -> SetupOutputs:
    """Build :class:`SetupOutputs` from a DescribeStacks stack (the seed node's outputs are
    "" when the stack predates them).

    Raises:
        ProviderError: an expected output is missing (the stack is not ours, or is damaged).
    """
    outs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    missing = sorted(set(_OUTPUT_FIELDS) - set(outs))
    if missing:
        raise ProviderError(f"setup: stack {stack['StackName']} lacks outputs {missing}; "
                            "it was not made by this version of condor-annex", code="BadStack")
    return SetupOutputs(region=settings.region, stack_name=stack["StackName"],
                        **{f: outs[k] for k, f in _OUTPUT_FIELDS.items()},
                        **{f: outs.get(k, "") for k, f in _SEED_OUTPUT_FIELDS.items()})


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
    """Inspect, for real, each resource setup made, each by a describe call of its own service.

    CloudFormation DescribeStacks (status; ``TemplateHash`` against this package's), S3
    HeadBucket / GetPublicAccessBlock / HeadObject (the agent zipapp), Lambda GetFunction / GetFunctionEventInvokeConfig, IAM
    GetRole (lease function role, scheduler role, Spot Fleet role) / GetInstanceProfile /
    ListRoleTags, SQS GetQueueUrl / GetQueueAttributes, CloudWatch DescribeAlarms, EventBridge
    Scheduler GetSchedule, EventBridge DescribeRule, EC2 DescribeSecurityGroups /
    DescribeKeyPairs.  A failing check becomes a row, never an exception.

    Returns:
        (resource, ok, detail) rows, in a fixed order.

    Raises:
        NotSetUpError: the recorded stack no longer exists (one line naming
            ``condor_annex setup``), instead of a row of failures.
    """
    stack = _describe_stack(make_client(settings, "cloudformation"), outputs.stack_name)
    if stack is None:
        raise NotSetUpError(f"check-setup: the setup recorded for {outputs.region} (stack "
                            f"{outputs.stack_name}) no longer exists; run 'condor_annex setup'")
    names = resource_names(outputs.stack_name)
    rows: list[tuple[str, bool, str]] = []

    def row(resource: str, check: Callable[[], str]) -> None:
        try:
            rows.append((resource, True, check()))
        except (ProviderError, _CheckFailed) as e:
            rows.append((resource, False, str(e)))

    function: dict[str, Any] = {}
    row(f"stack {outputs.stack_name}", lambda: _check_stack(stack))
    row(f"bucket {outputs.bucket}", lambda: _check_bucket(settings, outputs))
    row("agent", lambda: _check_agent(settings, outputs))
    row("lease function", lambda: _check_function(settings, outputs, function))
    row("lease function role", lambda: _check_role(
        settings, function.get("Role") or "?", "lambda.amazonaws.com"))
    row(f"lease failure queue {names['LeaseFailureQueue']}",
        lambda: _check_queue(settings, names["LeaseFailureQueue"]))
    row("lease retries (event invoke config)", lambda: _check_invoke_config(
        settings, outputs, names["LeaseFailureQueue"]))
    row(f"lease failure alarm {names['LeaseFailureAlarm']}",
        lambda: _check_alarm(settings, names["LeaseFailureAlarm"]))
    row(f"lease sweep schedule {names['LeaseSweepSchedule']}",
        lambda: _check_sweep(settings, outputs, names["LeaseSweepSchedule"]))
    row(f"instance-ended rule {names['InstanceEndedRule']}",
        lambda: _check_rule(settings, names["InstanceEndedRule"]))
    row("scheduler role", lambda: _check_role(settings, outputs.scheduler_role_arn,
                                              "scheduler.amazonaws.com"))
    row("spot fleet role", lambda: _check_role(settings, outputs.spot_fleet_role_arn,
                                               "spotfleet.amazonaws.com"))
    row("instance profile", lambda: _check_profile(settings, outputs))
    row(f"security group {outputs.security_group_id}", lambda: _check_sg(settings, outputs))
    row(f"key pair {outputs.key_name}", lambda: _check_key(settings, outputs))
    return rows


def teardown(settings: AwsSettings, outputs: SetupOutputs, stack_name: str | None = None, *,
             force: bool = False, progress: Callable[[str], None] | None = None,
             poll_s: float = 1.0, deadline_s: float = 900.0) -> None:
    """Undo setup: empty the bucket, delete the stack, delete the key pair setup made.

    Refuses while leases exist (their enforcer would be deleted and their instances would run
    unbounded), unless ``force``.  Deletes the annexes' own roles of this stack (their
    permissions boundary is the stack's).  Calls S3 ListObjectsV2 / DeleteObjects, IAM ListRoles /
    ListRoleTags and the deletes of :func:`annex_role.delete_annex_role`, CloudFormation
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
    # IAM refuses to delete a managed policy still used as a permissions boundary: the stack's
    # deletion would fail on AnnexInstanceBoundary while annexes' own roles remain.
    from condor_annex.providers.aws.annex_role import delete_stack_annex_roles
    delete_stack_annex_roles(settings, outputs)
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
          deadline: float, started: Callable[[dict[str, Any]], bool] | None = None
          ) -> dict[str, Any] | None:
    """Poll until the stack is no longer ``*_IN_PROGRESS``; return it (None when gone).  With
    ``started``, also until ``started(stack)`` or an ``*_IN_PROGRESS`` status was seen (an
    ExecuteChangeSet's update may not show at once)."""
    seen = started is None
    while True:
        current = _describe_stack(cfn, stack)
        status = current["StackStatus"] if current else "DELETE_COMPLETE"
        if progress:
            progress(status)
        in_progress = status.endswith("_IN_PROGRESS")
        seen = seen or in_progress or not current or (started is not None and started(current))
        if seen and not in_progress:
            return current
        if time.monotonic() + poll_s > deadline:
            raise ProviderError(f"setup: stack {stack} still {status} at the deadline; "
                                "look at its events in the CloudFormation console",
                                code="Timeout", retryable=True)
        time.sleep(poll_s)


def _newest_event(cfn: Any, stack: str) -> str | None:
    """EventId of the stack's newest event (DescribeStackEvents lists newest first)."""
    with aws_errors("cloudformation.DescribeStackEvents"):
        events = cfn.describe_stack_events(StackName=stack).get("StackEvents", [])
    return events[0]["EventId"] if events else None


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


def _check_stack(stack: dict[str, Any]) -> str:
    if stack["StackStatus"] not in _DONE:
        raise _CheckFailed(stack["StackStatus"])
    deployed, ours = deployed_hash(stack), template_hash()
    if deployed != ours:
        raise _CheckFailed(f"{stack['StackStatus']}, deployed from another condor-annex "
                           f"(template {deployed or 'without a hash'}, this package's {ours}); "
                           "run 'condor_annex setup' to update it")
    return f"{stack['StackStatus']}, template {ours} (current)"


def _check_agent(settings: AwsSettings, outputs: SetupOutputs) -> str:
    from condor_annex.providers.aws.agent_package import agent_key, agent_status
    problem = agent_status(settings, outputs.bucket)
    if problem:
        raise _CheckFailed(f"{problem}; run 'condor_annex setup'")
    return agent_key()


def _check_bucket(settings: AwsSettings, outputs: SetupOutputs) -> str:
    s3 = make_client(settings, "s3")
    with aws_errors("s3.HeadBucket"):
        s3.head_bucket(Bucket=outputs.bucket)
    with aws_errors("s3.GetPublicAccessBlock"):
        block = s3.get_public_access_block(Bucket=outputs.bucket)
    if not all(block["PublicAccessBlockConfiguration"].values()):
        raise _CheckFailed("public access is not fully blocked")
    return "exists, public access blocked"


def _check_function(settings: AwsSettings, outputs: SetupOutputs,
                    found: dict[str, Any]) -> str:
    with aws_errors("lambda.GetFunction"):
        answer = make_client(settings, "lambda").get_function(
            FunctionName=outputs.lease_function_arn)
    fn = answer["Configuration"]
    found.update(fn)
    reserved = answer.get("Concurrency", {}).get("ReservedConcurrentExecutions")
    detail = (f"{fn['FunctionName']} ({fn.get('Runtime', '?')}, {fn.get('State', 'Active')}, "
              f"timeout {fn.get('Timeout')} s, reserved concurrency {reserved or 'none'})")
    if (fn.get("Timeout") or 0) < 300:
        # The enforcer may wait up to 70 s inside the minute its schedule fires in.
        raise _CheckFailed(detail + ": the timeout must be 300 s")
    return detail


def _check_role(settings: AwsSettings, arn: str, service: str) -> str:
    with aws_errors("iam.GetRole"):
        role = make_client(settings, "iam").get_role(RoleName=_arn_name(arn))["Role"]
    if service not in str(role.get("AssumeRolePolicyDocument", "")):
        raise _CheckFailed(f"{role['RoleName']} does not trust {service}")
    return role["RoleName"]


def _check_queue(settings: AwsSettings, name: str) -> str:
    sqs = make_client(settings, "sqs")
    with aws_errors("sqs.GetQueueUrl"):
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    with aws_errors("sqs.GetQueueAttributes"):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages"])["Attributes"]
    waiting = int(attrs.get("ApproximateNumberOfMessages", 0))
    if waiting:
        raise _CheckFailed(f"holds {waiting} failed lease invocation(s): an annex may have "
                           "outlived its lease; read them from the queue, then purge it")
    return "exists, empty"


def _check_invoke_config(settings: AwsSettings, outputs: SetupOutputs, queue: str) -> str:
    with aws_errors("lambda.GetFunctionEventInvokeConfig"):
        config = make_client(settings, "lambda").get_function_event_invoke_config(
            FunctionName=outputs.lease_function_arn)
    retries = config.get("MaximumRetryAttempts")
    target = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination", "")
    if retries != 2 or _arn_name(target.replace(":", "/")) != queue:
        raise _CheckFailed(f"{retries} retries, on failure to {target or 'nowhere'}; "
                           f"expected 2 retries, then queue {queue}")
    return f"2 retries, then queue {queue}"


def _check_alarm(settings: AwsSettings, name: str) -> str:
    with aws_errors("cloudwatch.DescribeAlarms"):
        alarms = make_client(settings, "cloudwatch").describe_alarms(
            AlarmNames=[name])["MetricAlarms"]
    if not alarms:
        raise _CheckFailed("does not exist")
    return f"{alarms[0]['MetricName']} >= {alarms[0]['Threshold']:g}, {alarms[0]['StateValue']}"


def _check_sweep(settings: AwsSettings, outputs: SetupOutputs, name: str) -> str:
    with aws_errors("scheduler.GetSchedule"):
        schedule = make_client(settings, "scheduler").get_schedule(Name=name)
    expression, state = schedule.get("ScheduleExpression"), schedule.get("State")
    if state != "ENABLED" or schedule["Target"]["Arn"] != outputs.lease_function_arn:
        raise _CheckFailed(f"{expression}, {state}, target {schedule['Target']['Arn']}")
    return f"{expression}, {state}"


def _check_rule(settings: AwsSettings, name: str) -> str:
    with aws_errors("events.DescribeRule"):
        rule = make_client(settings, "events").describe_rule(Name=name)
    if rule.get("State") != "ENABLED":
        raise _CheckFailed(str(rule.get("State")))
    return "ENABLED"


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
    # No inbound port is needed (nodes reach the pool through CCB); a rule open to the whole
    # internet on HTCondor's port is what the review flagged (aws-reality.md §15).
    world = sorted({p.get("FromPort") for p in group.get("IpPermissions", [])
                    for r in p.get("IpRanges", []) if r.get("CidrIp") == "0.0.0.0/0"}, key=str)
    if 9618 in world:
        raise _CheckFailed("tcp/9618 (HTCondor) is open to 0.0.0.0/0; nodes need no inbound "
                           "port (CCB): run 'condor_annex setup' to close it")
    ports = sorted({p.get("FromPort") for p in group.get("IpPermissions", [])}, key=str)
    return ("tcp/" + ", ".join(str(p) for p in ports) + " open") if ports else \
        "no inbound port open"


def _check_key(settings: AwsSettings, outputs: SetupOutputs) -> str:
    with aws_errors("ec2.DescribeKeyPairs"):
        make_client(settings, "ec2").describe_key_pairs(KeyNames=[outputs.key_name])
    return "exists"
