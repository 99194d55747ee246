"""Which AMI a create launches and the user data it sends: the image precedence, the agent in
the bucket, the bootstrap rendered for that AMI and combined with the user's own user data.

Everything here is checked before anything is created in the cloud (read-only calls:
DescribeInstanceTypes, SSM GetParameter, DescribeImages, S3 HeadObject).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import TYPE_CHECKING

from condor_annex import __version__, config, validate
from condor_annex.errors import BadInputError, NotFoundError
from condor_annex.model import AnnexSpec, SetupOutputs, SpotSpec

if TYPE_CHECKING:   # for the annotation only; resolving images imports the AWS SDK
    from condor_annex.providers.aws.images import ResolvedImage

#: Knob: the AWS endpoint the *instances* use (default: AWS's own endpoints).
INSTANCE_ENDPOINT_KNOB = "ANNEX_INSTANCE_AWS_ENDPOINT_URL"
#: Knob: HTCondor release series from HTCondor's own apt repository (``24.x``).
HTCONDOR_REPO_KNOB = "ANNEX_HTCONDOR_REPO"


@dataclasses.dataclass(frozen=True)
class LaunchImage:
    """The AMI and user data of one create.

    Attributes:
        image: the resolved image (:class:`~condor_annex.providers.aws.images.ResolvedImage`).
        user_data: the raw user data to send (bootstrap, or MIME with the user's), bytes.
        bootstrap: our rendered ``#cloud-config`` alone (for Spot Fleet specs of their own).
    """

    image: ResolvedImage
    user_data: bytes
    bootstrap: str


def knobs_for_instances(ctx) -> tuple[str, str]:
    """``(endpoint_url, htcondor_repo)`` from the knobs, validated.

    Raises:
        BadInputError: ``ANNEX_INSTANCE_AWS_ENDPOINT_URL`` not an http(s) URL the bootstrap can
            hold, or ``ANNEX_HTCONDOR_REPO`` not a series like ``24.x`` (naming the knob).
    """
    endpoint = config.knob(ctx.knobs, INSTANCE_ENDPOINT_KNOB, ctx.aws.region).strip()
    if endpoint:
        validate.url(endpoint, INSTANCE_ENDPOINT_KNOB)
        if any(c in endpoint for c in "'\"\\$`%"):
            raise BadInputError(f"{INSTANCE_ENDPOINT_KNOB}: {validate.shown(endpoint)} has "
                                "quotes, $, % or backslashes; use a plain URL")
    repo = config.knob(ctx.knobs, HTCONDOR_REPO_KNOB, ctx.aws.region).strip()
    if repo:
        validate.htcondor_series(repo, HTCONDOR_REPO_KNOB)
    return endpoint, repo


def require_agent(ctx, outputs: SetupOutputs) -> str:
    """The agent's key, after checking the bucket holds it (S3 HeadObject).

    Raises:
        BadInputError: the bucket has no agent of this version (one line naming
            ``condor_annex setup``).
    """
    from condor_annex.providers.aws.agent_package import agent_key
    from condor_annex.providers.aws.errors import aws_errors
    from condor_annex.providers.aws.session import make_client
    key = agent_key(__version__)
    try:
        with aws_errors("s3.HeadObject"):
            make_client(ctx.aws, "s3").head_object(Bucket=outputs.bucket, Key=key)
    except NotFoundError:
        raise BadInputError(f"setup: bucket {outputs.bucket} has no agent {key} (a setup from "
                            "another version); run 'condor_annex setup'") from None
    return key


def launch_image(ctx, spec: AnnexSpec, outputs: SetupOutputs, *, instance_type: str,
                 user_data: bytes | None = None) -> LaunchImage:
    """Resolve the AMI (precedence: ``--image-id``, ``--image``, ``ANNEX_DEFAULT_ODI_IMAGE_ID``,
    ``debian-13``), refuse names create does not support, check the agent is in the bucket,
    render the bootstrap and combine it with ``user_data`` (default ``spec.user_data``).

    Raises:
        BadInputError: unknown name, architecture mismatch, unsupported image, no agent, bad
            knob, or user data over 16 KB after combining (one line naming the flag).
        ProviderError: a read-only cloud call failed.
    """
    from condor_annex.providers.aws.bootstrap import check_size, combine_user_data, \
        render_bootstrap
    from condor_annex.providers.aws.images import refuse_unsupported, resolve_image
    from condor_annex.providers.aws.images import REFUSED
    endpoint, repo = knobs_for_instances(ctx)
    if not spec.image_id and spec.image_name in REFUSED:   # before any cloud call
        raise BadInputError(f"--image: {spec.image_name} is not supported: "
                            f"{REFUSED[spec.image_name]}")
    image = resolve_image(ctx.aws, instance_type=instance_type, image_id=spec.image_id,
                          image_id_flag=spec.image_id_flag, name=spec.image_name,
                          default_image_id=ctx.image_id)
    refuse_unsupported(image)
    key = require_agent(ctx, outputs)
    ours = render_bootstrap(region=ctx.aws.region, bucket=outputs.bucket, agent_key=key,
                            version=__version__, endpoint_url=endpoint,
                            prepared=image.prepared, prepared_version=image.prepared_version,
                            htcondor_repo=repo, distribution=image.distribution or "debian")
    theirs = spec.user_data if user_data is None else user_data
    data = check_size(combine_user_data(ours, theirs), spec.user_data_flag, ours=len(ours))
    return LaunchImage(image=image, user_data=data, bootstrap=ours)


def spot_fleet_with_bootstrap(spot: SpotSpec, spec: AnnexSpec, bootstrap: str) -> SpotSpec:
    """A Spot Fleet config whose every launch specification's ``UserData`` is our bootstrap
    combined with the user's (``-aws-user-data`` for all, else the specification's own, else
    ``-aws-default-user-data``): nothing the user gave is lost.

    Raises:
        BadInputError: a specification's combined user data over 16 KB (naming the flag).
    """
    from condor_annex.providers.aws.bootstrap import check_size, combine_user_data
    cfg = json.loads(spot.spot_fleet_config or "{}")
    for i, ls in enumerate(cfg.get("LaunchSpecifications") or []):
        theirs: bytes | None
        if spec.user_data is not None:
            theirs, flag = spec.user_data, spec.user_data_flag
        elif ls.get("UserData"):
            theirs = base64.b64decode(ls["UserData"])
            flag = f"-aws-spot-fleet-config-file: LaunchSpecifications[{i}].UserData"
        else:
            theirs, flag = spot.default_user_data, "-aws-default-user-data"
        data = check_size(combine_user_data(bootstrap, theirs), flag, ours=len(bootstrap))
        ls["UserData"] = base64.b64encode(data).decode()
    return dataclasses.replace(spot, spot_fleet_config=json.dumps(cfg), default_user_data=None)


def check_architectures(ctx, image, instance_types: list[str]) -> None:
    """Every EC2 Fleet instance type runs the image's architecture (DescribeInstanceTypes).

    Raises:
        BadInputError: naming ``--instance-types`` and the type that does not.
    """
    from condor_annex.providers.aws.images import instance_architectures
    for itype in instance_types[1:]:
        archs = instance_architectures(ctx.aws, itype)
        if archs and image.architecture not in archs:
            raise BadInputError(f"--instance-types: {itype} runs {'/'.join(archs)} but AMI "
                                f"{image.image_id} is {image.architecture}; give types of one "
                                "architecture")
