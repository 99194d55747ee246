"""Images by name: the distributions' public SSM parameters, and which AMI a create launches.

Names (:data:`IMAGES`) map to the public SSM parameters their publishers keep pointing at the
region's current AMI ("Public parameters": docs.aws.amazon.com/systems-manager/latest/userguide/
parameter-store-public-parameters.html; "Reference AMIs using Systems Manager parameters":
docs.aws.amazon.com/AWSEC2/latest/UserGuide/using-systems-manager-parameter-to-find-AMI.html):

- ``debian-13``: ``/aws/service/debian/release/13/latest/{amd64|arm64}`` (Debian's cloud team,
  wiki.debian.org/Cloud/AmazonEC2Image).
- ``ubuntu-24.04``: ``/aws/service/canonical/ubuntu/server/24.04/stable/current/
  {amd64|arm64}/hvm/ebs-gp3/ami-id`` (Canonical's scheme ``.../ubuntu/PRODUCT/RELEASE/stable/
  current/ARCH/VIRT_TYPE/VOL_TYPE/ami-id``, discourse.ubuntu.com/t/finding-ubuntu-images-with-
  the-aws-ssm-parameter-store/15507).
- ``al2023``: ``/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{x86_64|arm64}``
  (AWS, docs.aws.amazon.com/linux/al2023/ug/ec2.html; the same names ship in moto's snapshot of
  AWS's parameters).

The architecture comes from the instance type (EC2 DescribeInstanceTypes
``ProcessorInfo.SupportedArchitectures``); an image's own from DescribeImages ``Architecture``.
"""

from __future__ import annotations

from dataclasses import dataclass

from condor_annex import validate
from condor_annex.config import AwsSettings
from condor_annex.errors import BadInputError, ProviderError
from condor_annex.model import TAG_ANNEX_IMAGE
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

#: The default image name (when neither an AMI id, a name nor ANNEX_DEFAULT_ODI_IMAGE_ID is set).
DEFAULT_IMAGE = "debian-13"

#: Image name -> (distribution, EC2 architecture -> public SSM parameter name).
IMAGES: dict[str, tuple[str, dict[str, str]]] = {
    "debian-13": ("debian", {
        "x86_64": "/aws/service/debian/release/13/latest/amd64",
        "arm64": "/aws/service/debian/release/13/latest/arm64"}),
    "ubuntu-24.04": ("ubuntu", {
        "x86_64": "/aws/service/canonical/ubuntu/server/24.04/stable/current/amd64/hvm/"
                  "ebs-gp3/ami-id",
        "arm64": "/aws/service/canonical/ubuntu/server/24.04/stable/current/arm64/hvm/"
                 "ebs-gp3/ami-id"}),
    "al2023": ("amazon", {
        "x86_64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
        "arm64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"}),
}

#: Names ``create`` refuses although they resolve, with the reason (one line).
REFUSED = {"al2023": "its python3 is 3.9 and no HTCondor package is tested there; "
                     "use --image debian-13"}


@dataclass(frozen=True)
class ResolvedImage:
    """The AMI a launch uses.

    Attributes:
        image_id: ``ami-...``.
        architecture: ``x86_64`` or ``arm64`` (DescribeImages ``Architecture``).
        prepared: the image carries tag ``htcondor:AnnexImage`` (the bootstrap skips install).
        prepared_version: that tag's value (the package version baked in), or "".
        distribution: ``debian``, ``ubuntu``, ``amazon`` for a name; for an AMI id, guessed
            from its name/description ("" when unknown: the install step then treats it as
            Debian-like).
        name: the image name resolved (``debian-13``), or "" for an AMI id.
        source: how it was chosen, in the syntax typed (``--image``, ``--image-id``,
            ``-aws-on-demand-ami-id``, ``ANNEX_DEFAULT_ODI_IMAGE_ID``, ``default``).
    """

    image_id: str
    architecture: str
    prepared: bool
    prepared_version: str
    distribution: str
    name: str
    source: str


def instance_architectures(settings: AwsSettings, instance_type: str) -> tuple[str, ...]:
    """The architectures ``instance_type`` runs (DescribeInstanceTypes
    ``ProcessorInfo.SupportedArchitectures``, e.g. ``("x86_64",)``).

    Raises:
        BadInputError: EC2 does not know the type (``InvalidInstanceType``).
        ProviderError: the call failed otherwise.
    """
    ec2 = make_client(settings, "ec2")
    try:
        with aws_errors("ec2.DescribeInstanceTypes"):
            types = ec2.describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    except ProviderError as e:
        if "InvalidInstanceType" in (e.code or ""):
            raise BadInputError(f"--instance-type: EC2 has no instance type {instance_type!r} "
                                f"in region {settings.region}") from e
        raise
    if not types:
        return ()
    return tuple(types[0].get("ProcessorInfo", {}).get("SupportedArchitectures", []))


def _arch_of(archs: tuple[str, ...]) -> str:
    """The image architecture to resolve a name for: x86_64 first, arm64, else the first."""
    for a in ("x86_64", "arm64"):
        if a in archs:
            return a
    return archs[0] if archs else "x86_64"


def check_name(name: str, flag: str = "--image") -> str:
    """``name`` when it is one of :data:`IMAGES` (no cloud call).

    Raises:
        BadInputError: naming ``flag`` and the names that exist.
    """
    if name not in IMAGES:
        raise BadInputError(f"{flag}: no image named {validate.shown(name)}; the names are "
                            f"{', '.join(IMAGES)} (or give an AMI with --image-id ami-...)")
    return name


def parameter_for(name: str, architecture: str, flag: str = "--image") -> str:
    """The public SSM parameter of image ``name`` for ``architecture``.

    Raises:
        BadInputError: an unknown name (naming ``flag`` and the names that exist).
    """
    check_name(name, flag)
    params = IMAGES[name][1]
    if architecture not in params:
        raise BadInputError(f"{flag}: image {name} has no {architecture} build; use an "
                            "instance type of another architecture")
    return params[architecture]


def _describe_image(settings: AwsSettings, image_id: str, flag: str) -> dict:
    ec2 = make_client(settings, "ec2")
    try:
        with aws_errors("ec2.DescribeImages"):
            images = ec2.describe_images(ImageIds=[image_id])["Images"]
    except ProviderError as e:
        if "InvalidAMIID" in (e.code or ""):
            images = []
        else:
            raise
    if not images:
        raise BadInputError(f"{flag}: AMI {image_id} does not exist in region "
                            f"{settings.region} (or is not shared with this account)")
    return images[0]


def _guess_distribution(image: dict) -> str:
    text = f"{image.get('Name', '')} {image.get('Description', '')}".lower()
    for word, dist in (("debian", "debian"), ("ubuntu", "ubuntu"), ("al2023", "amazon"),
                       ("amazon linux", "amazon")):
        if word in text:
            return dist
    return ""


def resolve_image(settings: AwsSettings, *, instance_type: str, image_id: str = "",
                  image_id_flag: str = "--image-id", name: str = "", name_flag: str = "--image",
                  default_image_id: str = "",
                  default_flag: str = "ANNEX_DEFAULT_ODI_IMAGE_ID") -> ResolvedImage:
    """The AMI a create launches, by precedence: ``image_id`` (``--image-id`` / classic
    ``-aws-on-demand-ami-id``), then ``name`` (``--image``), then ``default_image_id``
    (``ANNEX_DEFAULT_ODI_IMAGE_ID``), then :data:`DEFAULT_IMAGE`.

    Calls: DescribeInstanceTypes (the type's architectures), SSM GetParameter (a name's AMI),
    DescribeImages (architecture, tags, name).  Nothing is created.

    Args:
        settings: region, endpoint and keys.
        instance_type: the instance type the AMI must run on.
        image_id / name / default_image_id: the user's choices (empty = not given).
        image_id_flag / name_flag / default_flag: how each was typed, for messages.

    Returns:
        :class:`ResolvedImage`.

    Raises:
        BadInputError: an unknown name, a name without a parameter in this region, an AMI that
            does not exist, or an AMI whose architecture the instance type does not run (one
            line naming the flag as typed).
        ProviderError: a cloud call failed.
    """
    archs = instance_architectures(settings, instance_type)
    if image_id:
        chosen, flag, source = image_id, image_id_flag, image_id_flag
    elif name:
        chosen, flag, source = "", name_flag, name_flag
    elif default_image_id:
        chosen, flag, source = default_image_id, default_flag, default_flag
    else:
        name, chosen, flag, source = DEFAULT_IMAGE, "", name_flag, "default"
    distribution = ""
    if not chosen:
        parameter = parameter_for(name, _arch_of(archs), flag)
        distribution = IMAGES[name][0]
        ssm = make_client(settings, "ssm")
        try:
            with aws_errors("ssm.GetParameter"):
                chosen = ssm.get_parameter(Name=parameter)["Parameter"]["Value"]
        except ProviderError as e:
            if "ParameterNotFound" not in (e.code or ""):
                raise
            raise BadInputError(f"{flag}: image {name} has no public parameter {parameter} in "
                                f"region {settings.region}; use --image-id ami-...") from e
    else:
        name = ""
    image = _describe_image(settings, chosen, flag)
    arch = image.get("Architecture", "x86_64")
    if archs and arch not in archs:
        raise BadInputError(f"{flag}: AMI {chosen} is {arch} but instance type "
                            f"{instance_type} runs {'/'.join(archs)}; choose an AMI or "
                            "instance type of the same architecture")
    tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
    version = tags.get(TAG_ANNEX_IMAGE, "")
    return ResolvedImage(image_id=chosen, architecture=arch, prepared=TAG_ANNEX_IMAGE in tags,
                         prepared_version=version,
                         distribution=distribution or _guess_distribution(image), name=name,
                         source=source)


def refuse_unsupported(image: ResolvedImage) -> None:
    """Refuse, for ``create``, a name that resolves but is not supported (:data:`REFUSED`).

    Raises:
        BadInputError: naming the flag as typed.
    """
    if image.name in REFUSED:
        flag = image.source if image.source != "default" else "--image"
        raise BadInputError(f"{flag}: {image.name} is not supported: {REFUSED[image.name]}")
