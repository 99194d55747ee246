"""What a create refuses before anything is made in the cloud, beyond the model's validation:
subnets that do not exist (:func:`check_subnets`, one DescribeSubnets call) and spot settings
that cannot launch (:func:`check_spot`, no cloud call; the classic command line asks it before
its prompt).
"""

from __future__ import annotations

from condor_annex.errors import BadInputError
from condor_annex.model import SPOT_API_SPOT_FLEET, AnnexSpec, SpotSpec, parse_subnet_ids
from condor_annex.service.common import outputs_or_none
from condor_annex.service.context import Context


def _default_image(ctx: Context, spec: AnnexSpec) -> str:
    """The AMI id given or configured, or "" (a name then resolves: ``--image``, else
    ``debian-13``; :mod:`condor_annex.service.launch_image`)."""
    return spec.image_id or ctx.image_id


#: Knob listing the subnets annexes launch into (comma-separated), for accounts without a
#: default VPC; ``--subnet-id`` replaces it.
SUBNET_KNOB = "ANNEX_DEFAULT_SUBNET_IDS"


def check_subnets(ctx: Context, spec: AnnexSpec) -> tuple[str, ...]:
    """The subnets of a create: ``spec.subnet_ids`` (``--subnet-id``), else the knob
    ``ANNEX_DEFAULT_SUBNET_IDS`` (region-prefixed form first), else () (the default VPC).
    Each must exist: one EC2 DescribeSubnets call, before anything is created.

    Raises:
        BadInputError: a knob value that is not a list of subnet ids, or a subnet that does not
            exist (naming ``--subnet-id`` or the knob); exit 2, nothing created.
        ProviderError: DescribeSubnets failed.
    """
    from condor_annex import config
    if spec.subnet_ids:
        flag, ids = "--subnet-id", spec.subnet_ids
    else:
        text = config.knob(ctx.knobs, SUBNET_KNOB, ctx.aws.region)
        if not text:
            return ()
        flag, ids = SUBNET_KNOB, parse_subnet_ids(text, SUBNET_KNOB)
    missing = ctx.provider(outputs_or_none(ctx)).missing_subnets(ids)
    if missing:
        fix = ("give a subnet of this region (see 'aws ec2 describe-subnets')"
               if flag == "--subnet-id" else f"fix {SUBNET_KNOB} in ~/.condor/user_config")
        raise BadInputError(f"{flag}: subnet {missing[0]} does not exist in region "
                            f"{ctx.aws.region}; {fix}")
    return ids


def check_spot(ctx: Context, spec: AnnexSpec, spot: SpotSpec) -> str:
    """What :func:`~condor_annex.service.create.create_spot_annex` refuses, checked without a cloud call (the classic
    command line asks before its prompt).  Returns the AMI for specifications naming none.

    Raises:
        BadInputError: a Spot Fleet config without IamFleetRole, a launch specification
            without ImageId when no AMI is configured, or an EC2 Fleet without instance types.
    """
    flag = "-aws-spot-fleet-config-file"
    if spot.api != SPOT_API_SPOT_FLEET:
        if not spot.instance_types:
            raise BadInputError("--instance-types: give at least one instance type")
        return _default_image(ctx, spec)
    if not spot.fleet_role_arn():
        raise BadInputError(f"{flag}: the config has no IamFleetRole; add one (e.g. "
                            '"IamFleetRole": "arn:aws:iam::ACCOUNT:role/'
                            'aws-ec2-spot-fleet-tagging-role") or set '
                            "ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE")
    # Specifications without ImageId take the resolved image (default debian-13).
    return spec.image_id or ctx.image_id
