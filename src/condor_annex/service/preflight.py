"""``check-setup --preflight``: will a first annex launch and join?  One row per check.

The checks (each a row: OK, or FAILED with the fix in one line; never an exception):

1. **launch allowed**: EC2 RunInstances with ``DryRun=True`` of the image ``create`` would use
   and the instance type, with setup's security group and instance profile (so ``iam:PassRole``
   is exercised too).  EC2 answers ``DryRunOperation`` when the request would have succeeded
   and ``UnauthorizedOperation`` when it is not allowed
   (docs.aws.amazon.com/AWSEC2/latest/APIReference/CommonErrors.html; "DryRun",
   API_RunInstances.html).
2. **vCPU quota**: Service Quotas GetServiceQuota ``ec2`` / ``L-1216C47A`` ("Running On-Demand
   Standard (A, C, D, H, I, M, R, T, Z) instances", counted in vCPUs:
   docs.aws.amazon.com/ec2/latest/instancetypes/ec2-instance-quotas.html) against the vCPUs
   already running in those families plus ``count`` × the type's vCPUs (DescribeInstanceTypes
   ``VCpuInfo.DefaultVCpus``).  Other families have quotas of their own: not checked here.
3. **permissions**: IAM SimulatePrincipalPolicy of the caller (STS GetCallerIdentity; an
   assumed-role session is simulated as its role) for every action of the shipped policy
   (:mod:`condor_annex.providers.aws.policy`), each statement against a concrete ARN of its own
   resources (docs.aws.amazon.com/IAM/latest/APIReference/API_SimulatePrincipalPolicy.html).
4. **collector reachable from AWS**: the lease function is invoked (RequestResponse) with
   ``{"Probe": {"Host": h, "Port": p}}``; it opens a TCP connection to the address instances
   will report to (ANNEX_COLLECTOR, else COLLECTOR_HOST; HTCondor shared-port addresses such as
   ``host:9618?sock=collector`` are understood).
5. **subnet reaches packages and S3** (stock images install packages at boot and fetch the
   agent from S3): the route table of the subnet annexes launch into (the first of
   ANNEX_DEFAULT_SUBNET_IDS, else the default VPC's default subnet of the first zone) has
   ``0.0.0.0/0`` to an internet or NAT gateway, or an S3 gateway endpoint is routed / an S3
   interface endpoint exists in the VPC (DescribeRouteTables, DescribeVpcEndpoints).  Without
   an internet route a stock image cannot reach a package mirror: use a prepared image.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from condor_annex.errors import AnnexError, NotSetUpError, ProviderError
from condor_annex.model import SetupOutputs
# The identity rule lives with the owner tag; re-exported for callers of this module.
from condor_annex.providers.aws.identity import caller_principal  # noqa: F401
from condor_annex.service.context import Context

#: Service Quotas code of "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances".
STANDARD_QUOTA_CODE = "L-1216C47A"
#: First letters of the instance families that quota covers.
STANDARD_FAMILIES = frozenset("acdhimrtz")
#: The fix named when the user's own permissions fall short.
POLICY_FIX = ("attach the shipped policy (condor_annex/providers/aws/policy/"
              "condor-annex-user.json; docs/aws.md, step 1) to your IAM user or role")

Row = tuple[str, bool, str]


def stack_or_gone(ctx: Context) -> SetupOutputs:
    """Setup's recorded outputs, once CloudFormation DescribeStacks shows the stack exists.

    Raises:
        NotSetUpError: nothing recorded, or the recorded stack no longer exists (one line naming
            ``condor_annex setup``).
        ProviderError: DescribeStacks failed otherwise.
    """
    from condor_annex.errors import InvalidRequestError
    from condor_annex.providers.aws.errors import aws_errors
    from condor_annex.providers.aws.session import make_client
    outputs = ctx.setup_outputs()
    try:
        with aws_errors("cloudformation.DescribeStacks"):
            make_client(ctx.aws, "cloudformation").describe_stacks(
                StackName=outputs.stack_name)
    except InvalidRequestError as e:
        if "does not exist" not in str(e):
            raise
        raise NotSetUpError(f"check-setup: the setup recorded for {outputs.region} (stack "
                            f"{outputs.stack_name}) no longer exists; run 'condor_annex "
                            "setup'") from None
    return outputs


def default_image(ctx: Context, instance_type: str) -> tuple[str, str]:
    """(AMI id, how it was chosen) of a ``create`` with no ``--image-id``/``--image``: resolved
    as create resolves it (:func:`condor_annex.providers.aws.images.resolve_image`:
    ANNEX_DEFAULT_ODI_IMAGE_ID, else ``debian-13`` through its public SSM parameter).

    Raises:
        BadInputError: the default does not resolve (a one-line reason).
        ProviderError: a call failed.
    """
    try:
        from condor_annex.providers.aws.images import resolve_image
    except ImportError:   # a tree without image names yet: the configured AMI only
        return ctx.image_id, "ANNEX_DEFAULT_ODI_IMAGE_ID"
    image = resolve_image(ctx.aws, instance_type=instance_type, default_image_id=ctx.image_id)
    how = image.name or image.source
    return image.image_id, f"{how}{', prepared image' if image.prepared else ', stock image'}"


def preflight(ctx: Context, *, count: int = 1, instance_type: str = "",
              policy: dict | None = None) -> list[Row]:
    """Run the checks of the module docstring; one (check, ok, detail) row each, in order.

    Args:
        ctx: settings.
        count: instances the first annex will have (``--count``).
        instance_type: their type (default the create default).
        policy: the policy document whose actions to simulate (default the shipped one).

    Raises:
        NotSetUpError: setup missing or its stack gone (one line naming ``condor_annex setup``).
    """
    from condor_annex.model import DEFAULT_INSTANCE_TYPE
    from condor_annex.providers.aws import policy as shipped
    outputs = stack_or_gone(ctx)
    instance_type = instance_type or DEFAULT_INSTANCE_TYPE
    document = policy if policy is not None else shipped.load()
    rows: list[Row] = []

    def row(name: str, check: Callable[[], str]) -> None:
        try:
            rows.append((name, True, check()))
        except _Failed as e:
            rows.append((name, False, str(e)))
        except AnnexError as e:   # a refused call or bad setting: its one-line message
            rows.append((name, False, str(e)))

    image: dict[str, str] = {}
    row("default image", lambda: _image_row(ctx, instance_type, image))
    row(f"launch allowed (dry run, {instance_type})",
        lambda: _dry_run(ctx, outputs, image.get("id", ""), instance_type))
    row(f"vCPU quota for {count} x {instance_type}",
        lambda: _quota(ctx, count, instance_type))
    row("your permissions (IAM policy simulation)", lambda: _permissions(ctx, document))
    row(f"collector {ctx.annex_collector or '(none)'} reachable from AWS",
        lambda: _collector(ctx, outputs))
    row("annex subnet reaches package mirrors and S3", lambda: _subnet_route(ctx))
    return rows


class _Failed(Exception):
    """A check ran and found a problem; the message is the row's detail and fix."""


def _ec2(ctx: Context) -> Any:
    from condor_annex.providers.aws.session import make_client
    return make_client(ctx.aws, "ec2")


def _image_row(ctx: Context, instance_type: str, found: dict[str, str]) -> str:
    image_id, how = default_image(ctx, instance_type)
    found["id"] = image_id
    return f"{image_id} ({how})"


def _dry_run(ctx: Context, outputs: SetupOutputs, image_id: str, instance_type: str) -> str:
    from condor_annex.providers.aws.errors import aws_errors
    if not image_id:
        raise _Failed("skipped: no image to try (see the row above)")
    params: dict[str, Any] = dict(ImageId=image_id, InstanceType=instance_type, MinCount=1,
                                  MaxCount=1, DryRun=True,
                                  SecurityGroupIds=[outputs.security_group_id])
    if outputs.instance_profile_arn:
        params["IamInstanceProfile"] = {"Arn": outputs.instance_profile_arn}
    subnets = _subnets(ctx)
    if subnets:
        params["SubnetId"] = subnets[0]
    try:
        with aws_errors("ec2.RunInstances"):
            _ec2(ctx).run_instances(**params)
    except ProviderError as e:
        if e.code == "DryRunOperation":
            return f"{image_id} as {instance_type}: EC2 would launch it (DryRunOperation)"
        if e.code == "UnauthorizedOperation":
            raise _Failed(f"not allowed (UnauthorizedOperation): {POLICY_FIX}") from None
        raise _Failed(f"{e}; fix the image (ANNEX_DEFAULT_ODI_IMAGE_ID), the instance type "
                      "(--instance-type) or the subnet (ANNEX_DEFAULT_SUBNET_IDS)") from None
    raise _Failed("EC2 launched instead of answering the dry run; check the endpoint")


def _subnets(ctx: Context) -> tuple[str, ...]:
    from condor_annex.model import parse_subnet_ids
    text = ctx.knobs.get("ANNEX_DEFAULT_SUBNET_IDS", "").strip()
    return parse_subnet_ids(text, "ANNEX_DEFAULT_SUBNET_IDS") if text else ()


def _quota(ctx: Context, count: int, instance_type: str) -> str:
    from condor_annex.providers.aws.errors import aws_errors
    from condor_annex.providers.aws.session import make_client
    if instance_type[0] not in STANDARD_FAMILIES:
        return (f"{instance_type} is not a standard (A, C, D, H, I, M, R, T, Z) type: its "
                "family's own quota applies (not checked)")
    ec2 = _ec2(ctx)
    with aws_errors("ec2.DescribeInstanceTypes"):
        info = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    if not info:
        raise _Failed(f"unknown instance type {instance_type}; pass --instance-type")
    vcpus = int(info[0]["VCpuInfo"]["DefaultVCpus"])
    with aws_errors("service-quotas.GetServiceQuota"):
        quota = make_client(ctx.aws, "service-quotas").get_service_quota(
            ServiceCode="ec2", QuotaCode=STANDARD_QUOTA_CODE)["Quota"]
    limit = int(quota["Value"])
    in_use = _standard_vcpus_running(ec2)
    wanted = count * vcpus
    detail = (f"{wanted} vCPUs wanted ({count} x {vcpus}), {in_use} running, quota {limit} "
              f"({STANDARD_QUOTA_CODE})")
    if in_use + wanted > limit:
        raise _Failed(f"{detail}: ask for a higher quota (Service Quotas console, 'Running "
                      "On-Demand Standard ... instances') or use a smaller --count")
    return detail


def _standard_vcpus_running(ec2: Any) -> int:
    """vCPUs of pending and running On-Demand instances of the standard families (Spot
    instances count against another quota)."""
    from condor_annex.providers.aws.errors import aws_errors
    total = 0
    with aws_errors("ec2.DescribeInstances"):
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[
            {"Name": "instance-state-name", "Values": ["pending", "running"]}])
        for page in pages:
            for r in page["Reservations"]:
                for i in r["Instances"]:
                    if i.get("InstanceLifecycle") == "spot" or \
                            i.get("InstanceType", "?")[0] not in STANDARD_FAMILIES:
                        continue
                    cpu = i.get("CpuOptions") or {}
                    total += int(cpu.get("CoreCount", 1)) * int(cpu.get("ThreadsPerCore", 1))
    return total


def _permissions(ctx: Context, document: dict) -> str:
    from condor_annex.providers.aws import policy as shipped
    from condor_annex.providers.aws.errors import aws_errors
    from condor_annex.providers.aws.session import make_client
    with aws_errors("sts.GetCallerIdentity"):
        me = make_client(ctx.aws, "sts").get_caller_identity()
    arn, account = me["Arn"], me["Account"]
    if arn.endswith(":root"):
        return ("the account's root user may do everything; use an IAM user or role with the "
                "shipped policy instead")
    principal = caller_principal(arn)
    iam = make_client(ctx.aws, "iam")
    denied: list[str] = []
    checked = 0
    for actions, resources in shipped.simulation_batches(document, account, ctx.aws.region):
        with aws_errors("iam.SimulatePrincipalPolicy"):
            pages = iam.get_paginator("simulate_principal_policy").paginate(
                PolicySourceArn=principal, ActionNames=actions, ResourceArns=resources)
            for page in pages:
                for result in page["EvaluationResults"]:
                    checked += 1
                    if result["EvalDecision"] != "allowed":
                        denied.append(result["EvalActionName"])
    if denied:
        names = sorted(set(denied))
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        raise _Failed(f"{principal} may not {shown}: {POLICY_FIX}")
    return f"{principal}: all {len(shipped.actions(document))} actions of the policy allowed"


def collector_address(address: str) -> tuple[str, int]:
    """(host, port) of an HTCondor address: ``host``, ``host:port``, ``[v6]:port``, with or
    without a shared-port suffix (``?sock=collector``) or sinful brackets (``<...>``); the
    port defaults to 9618.

    Raises:
        ValueError: no host, or a port that is not a number from 1 to 65535.
    """
    text = address.strip().strip("<>").split("?", 1)[0]
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    port = int(port_text) if port_text else 9618
    if not host or not 0 < port < 65536:
        raise ValueError(f"not an HTCondor address: {address!r}")
    return host, port


def _collector(ctx: Context, outputs: SetupOutputs) -> str:
    from condor_annex.providers.aws.errors import aws_errors
    from condor_annex.providers.aws.session import make_client
    if not ctx.annex_collector:
        raise _Failed("no collector configured: set COLLECTOR_HOST (or ANNEX_COLLECTOR) in "
                      "~/.condor/user_config")
    try:
        host, port = collector_address(ctx.annex_collector)
    except ValueError as e:
        raise _Failed(f"{e}; fix ANNEX_COLLECTOR / COLLECTOR_HOST") from None
    with aws_errors("lambda.Invoke"):
        answer = make_client(ctx.aws, "lambda").invoke(
            FunctionName=outputs.lease_function_arn, InvocationType="RequestResponse",
            Payload=json.dumps({"Probe": {"Host": host, "Port": port}}).encode())
    raw = answer["Payload"].read()
    try:
        out = json.loads(raw or b"{}")
    except ValueError:
        out = {}
    if answer.get("FunctionError") or not isinstance(out, dict) or "Status" not in out:
        raise _Failed(f"the lease function could not probe ({raw[:200]!r}); run "
                      "'condor_annex setup' to update it")
    if out["Status"] != "OK":
        raise _Failed(f"{host}:{port} unreachable from AWS ({out.get('Error', '?')}): open "
                      f"tcp/{port} on the collector's host/firewall to the annex subnets, or "
                      "set ANNEX_COLLECTOR to an address reachable from AWS")
    return f"{host}:{port}: TCP connection opened from the lease function"


def _subnet_route(ctx: Context) -> str:
    from condor_annex.providers.aws.errors import aws_errors
    ec2 = _ec2(ctx)
    subnets = _subnets(ctx)
    with aws_errors("ec2.DescribeSubnets"):
        if subnets:
            found = ec2.describe_subnets(SubnetIds=[subnets[0]])["Subnets"]
        else:
            found = [s for s in ec2.describe_subnets(Filters=[
                {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]]
            found.sort(key=lambda s: s.get("AvailabilityZone", ""))
    if not found:
        raise _Failed("no subnet: the region has no default VPC; set ANNEX_DEFAULT_SUBNET_IDS "
                      "or pass --subnet-id to create")
    subnet, vpc = found[0]["SubnetId"], found[0]["VpcId"]
    with aws_errors("ec2.DescribeRouteTables"):
        tables = ec2.describe_route_tables(Filters=[
            {"Name": "association.subnet-id", "Values": [subnet]}])["RouteTables"] or \
            ec2.describe_route_tables(Filters=[
                {"Name": "vpc-id", "Values": [vpc]},
                {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    routes = [r for t in tables for r in t.get("Routes", [])
              if r.get("State", "active") == "active"]
    for r in routes:
        target = r.get("GatewayId", "") or r.get("NatGatewayId", "")
        if r.get("DestinationCidrBlock") == "0.0.0.0/0" and target.startswith(("igw-", "nat-")):
            return f"{subnet}: 0.0.0.0/0 via {target}"
    with aws_errors("ec2.DescribeVpcEndpoints"):
        endpoints = ec2.describe_vpc_endpoints(Filters=[
            {"Name": "vpc-id", "Values": [vpc]}])["VpcEndpoints"]
    s3 = [e["VpcEndpointId"] for e in endpoints if e.get("ServiceName", "").endswith(".s3")]
    if s3:
        return (f"{subnet}: no internet route, S3 endpoint {s3[0]}: the agent reaches S3, but "
                "a stock image cannot install packages; build a prepared image "
                "('condor_annex image build')")
    raise _Failed(f"{subnet} has no route to the internet (0.0.0.0/0 to an igw- or nat-) and "
                  f"VPC {vpc} no S3 endpoint: add a NAT gateway route, or pick a public subnet "
                  "with ANNEX_DEFAULT_SUBNET_IDS")
