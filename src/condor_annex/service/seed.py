"""``condor_annex seed create | status | off``: a whole pool grown from one seed instance.

HTCondor's "HTCondor in the Cloud" page grows a pool from one **seed**: an on-demand instance
that is the central manager and the submit node, from which annexes are made.  ``seed create``
launches it (EC2 RunInstances with setup's seed instance profile and security group; the user
data is :mod:`condor_annex.providers.aws.seed_bootstrap`'s cloud-init document with the
HTCondor configuration of :mod:`condor_annex.pool.seed_config`), after uploading the wheelhouse
it installs condor-annex from (:mod:`condor_annex.providers.aws.seed_wheels`), and waits until
its console says it is ready.  On the seed, its admin user runs ``condor_annex create`` with the
instance role's credentials, so every annex made there carries ``htcondor:AnnexOwner`` = the
seed role; ``seed off`` ends every annex of that owner (as ``off`` does, no graceful wait: the
pool they serve is going away), then terminates the seed.

Every check that can refuse runs before anything is created: the instance type and image name,
setup (and its seed role) in the region, no other seed alive there, the image resolving to an
AMI the type runs, the document within EC2's user data limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from condor_annex import __version__, config, validate
from condor_annex.errors import BadInputError, NotSetUpError, ProviderError, UnknownAnnexError
from condor_annex.model import SeedOutputs, SetupOutputs
from condor_annex.pool import seed_config as pool_seed
from condor_annex.service.context import Context
from condor_annex.service.launch_image import knobs_for_instances

if TYPE_CHECKING:   # the annotation only; the AWS side is imported when used
    from condor_annex.providers.aws.seed import SeedInstance

#: Default instance type of a seed (HTCondor's seed page: a central manager + submit node for
#: a few thousand slots wants 2 vCPUs and 8 GiB).
DEFAULT_SEED_TYPE = "m5.large"
#: Seconds ``seed create`` waits for the seed's console to say it is ready.
READY_TIMEOUT_S = 1200.0
#: Python of each distribution's stock image (the wheelhouse is built for it).
_PYTHON_OF = {"debian": "3.13", "ubuntu": "3.12", "": "3.13"}
_PLATFORM_OF = {"x86_64": "manylinux_2_28_x86_64", "arm64": "manylinux_2_28_aarch64"}


@dataclass(frozen=True)
class SeedSetup:
    """What ``setup`` made in one region that a seed uses.

    Attributes:
        outputs: setup's outputs (bucket, lease function...).
        seed: its seed pieces (instance profile, role, security groups).
    """

    outputs: SetupOutputs
    seed: SeedOutputs


@dataclass
class SeedReport:
    """One seed, for ``seed status`` / ``seed create`` (table and ``--json``).

    Attributes:
        instance: the seed as EC2 describes it.
        ready: its console says :data:`~condor_annex.providers.aws.seed_bootstrap.SEED_READY_LINE`.
        failed: its console says the seed's set-up failed (that line).
        annexes: names of the annexes it made that still have resources.
        ready_s: seconds from launch to ready (``seed create`` only), else None.
    """

    instance: SeedInstance
    ready: bool = False
    failed: str = ""
    annexes: list[str] = field(default_factory=list)
    ready_s: float | None = None

    def to_json(self) -> dict:
        """The ``--json`` form: ``instance_id``, ``state``, ``instance_type``, ``image_id``,
        ``private_ip``, ``public_ip``, ``ready``, ``failed``, ``annexes``, ``ready_s``."""
        i = self.instance
        return {"instance_id": i.instance_id, "state": i.state,
                "instance_type": i.instance_type, "image_id": i.image_id,
                "private_ip": i.private_ip, "public_ip": i.public_ip, "ready": self.ready,
                "failed": self.failed, "annexes": list(self.annexes), "ready_s": self.ready_s}


def seed_setup(ctx: Context) -> SeedSetup:
    """Setup's outputs and its seed knobs for ``ctx``'s region.

    Raises:
        NotSetUpError: setup has not run in the region, or ran before seeds existed (the fix:
            run ``condor_annex setup`` again).
    """
    region = ctx.aws.region
    try:
        outputs = ctx.setup_outputs()
    except NotSetUpError:
        raise NotSetUpError(f"seed: region {region} has no condor-annex setup; run "
                            "'condor_annex setup' there first (ANNEX_DEFAULT_AWS_REGION = "
                            f"{region})") from None
    return SeedSetup(outputs, config.seed_outputs(ctx.knobs, region))


def seed_knobs(ctx: Context, outputs: SetupOutputs) -> dict[str, str]:
    """The ``ANNEX_*`` knobs every user of the seed reads: setup's outputs (one region, so not
    region-prefixed) and the instances' AWS endpoint (also the seed's own).

    Raises:
        BadInputError: ``ANNEX_INSTANCE_AWS_ENDPOINT_URL`` is not a usable URL.
    """
    endpoint, _ = knobs_for_instances(ctx)
    knobs = {"ANNEX_DEFAULT_AWS_REGION": outputs.region}
    for name, value in config.setup_knobs(outputs).items():
        name = name.split(".", 1)[1] if "." in name else name
        if value and name not in config.SEED_KNOBS.values():   # a seed makes no seeds
            knobs[name] = value
    if endpoint:
        knobs["ANNEX_AWS_ENDPOINT_URL"] = endpoint
        knobs["ANNEX_INSTANCE_AWS_ENDPOINT_URL"] = endpoint
    return knobs


def _alive_seed(ctx: Context):
    from condor_annex.providers.aws.seed import find_seeds
    seeds = find_seeds(ctx.aws)
    return seeds[0] if seeds else None


def create_seed(ctx: Context, *, instance_type: str = DEFAULT_SEED_TYPE,
                instance_type_flag: str = "--instance-type", image: str = "",
                image_flag: str = "--image", wait: bool = True,
                progress: Callable[[str, float], None] | None = None,
                timeout_s: float = READY_TIMEOUT_S, poll_s: float = 5.0) -> SeedReport:
    """Launch the region's seed and (with ``wait``) wait until it is ready.

    Args:
        instance_type: the seed's instance type.
        image: a stock image name (``debian-13``) or "" for the default; an AMI id is not
            taken (the seed installs from the distribution's packages).
        wait: wait for the console's ready line.
        progress: called with a phase (``"wheelhouse"``, ``"launching"``, ``"booting"``)
            and the seconds elapsed.
        timeout_s: seconds to wait for ready.
        poll_s: seconds between console reads.

    Returns:
        the seed (``ready_s`` set when waited).

    Raises:
        BadInputError: a bad instance type or image (naming the flag), no setup or no seed role
            in the region, a seed already alive there (naming it), a document over EC2's
            limit.  Nothing is created.
        ProviderError: a cloud call failed, or the seed's set-up failed (its console line) or
            did not finish within ``timeout_s`` (the seed is left running for ``seed off`` and
            ``condor_annex logs``-style inspection).
    """
    from condor_annex.providers.aws import seed as ec2_seed
    from condor_annex.providers.aws.images import check_name, refuse_unsupported, resolve_image
    from condor_annex.providers.aws.seed_bootstrap import SEED_FAILED_LINE, SEED_READY_LINE, \
        fits, render_seed, user_data
    from condor_annex.providers.aws.seed_wheels import build_wheelhouse, upload_wheelhouse
    say = progress or (lambda phase, elapsed: None)
    started = time.monotonic()
    validate.instance_type(instance_type, instance_type_flag)
    if image:
        check_name(image, image_flag)
    setup = seed_setup(ctx)
    running = _alive_seed(ctx)
    if running is not None:
        raise BadInputError(f"seed create: region {ctx.aws.region} already has a seed "
                            f"({running.instance_id}, {running.state}); use it, or run "
                            "'condor_annex seed off' first")
    resolved = resolve_image(ctx.aws, instance_type=instance_type, name=image or "debian-13",
                             name_flag=image_flag)
    refuse_unsupported(resolved)
    knobs = seed_knobs(ctx, setup.outputs)
    endpoint = knobs.get("ANNEX_INSTANCE_AWS_ENDPOINT_URL", "")
    python = _PYTHON_OF.get(resolved.distribution, "3.13")
    platform = _PLATFORM_OF.get(resolved.architecture, _PLATFORM_OF["x86_64"])
    document = render_seed(
        version=__version__, region=ctx.aws.region, bucket=setup.outputs.bucket,
        wheel_prefix=f"seed/{__version__}/", endpoint_url=endpoint,
        admin_user=pool_seed.SEED_ADMIN_USER,
        admin_identity=f"{pool_seed.SEED_ADMIN_USER}@{pool_seed.SEED_TRUST_DOMAIN}",
        seed_file=pool_seed.SEED_FILE,
        seed_config=pool_seed.seed_config(knobs), address_file=pool_seed.ADDRESS_FILE,
        address_template=pool_seed.address_config("@PRIVATE@", "@ADVERTISED@"))
    data = user_data(document)
    if not fits(data):
        raise BadInputError("seed create: the seed's user data is over EC2's 16 KB; report "
                            "this as a bug (setup's names are unusually long?)")
    say("wheelhouse", time.monotonic() - started)
    # pip's lines go to the progress line, not the terminal: a user wants the phase, not pip.
    wheels = build_wheelhouse(python_version=python, platform=platform,
                              notify=lambda line: say(f"wheelhouse: {line.strip()[:60]}",
                                                      time.monotonic() - started))
    upload_wheelhouse(ctx.aws, setup.outputs.bucket, wheels)
    say("launching", time.monotonic() - started)
    instance_id = ec2_seed.launch_seed(
        ctx.aws, image_id=resolved.image_id, instance_type=instance_type,
        user_data=data, instance_profile_arn=setup.seed.instance_profile_arn,
        security_group_ids=list(setup.seed.security_group_ids), version=__version__,
        notify=ctx.notify)
    report = _report(ctx, instance_id, annexes=[])
    if not wait:
        return report
    while True:
        text = ec2_seed.console(ctx.aws, instance_id)
        failed = [line for line in text.splitlines() if SEED_FAILED_LINE in line
                  or "seed install FAILED" in line]
        if failed:
            raise ProviderError(f"seed {instance_id}: {failed[0].strip()}; see its console "
                                "(EC2 GetConsoleOutput), then 'condor_annex seed off'")
        if SEED_READY_LINE in text:
            break
        elapsed = time.monotonic() - started
        if elapsed > timeout_s:
            raise ProviderError(f"seed {instance_id} was not ready {timeout_s:g} s after its "
                                "launch; see its console, then 'condor_annex seed off'")
        say("booting", elapsed)
        time.sleep(poll_s)
    report = _report(ctx, instance_id, annexes=[])
    report.ready, report.ready_s = True, round(time.monotonic() - started, 1)
    return report


def _report(ctx: Context, instance_id: str, *, annexes: list[str]) -> SeedReport:
    from condor_annex.providers.aws import seed as ec2_seed
    s = ec2_seed.describe_seed(ctx.aws, instance_id)
    if s is None:   # EC2's listing lags its launches
        s = ec2_seed.SeedInstance(instance_id, "pending", "", "", "", "", None, __version__)
    return SeedReport(s, annexes=annexes)


def _same_role(owner: str, role_arn: str) -> bool:
    """Whether tag ``htcondor:AnnexOwner`` ``owner`` is the role ``role_arn`` (compared by
    role name: the owner is reduced from a session ARN, which carries no role path)."""
    return bool(owner) and ":role/" in owner and \
        owner.rsplit("/", 1)[-1] == role_arn.rsplit("/", 1)[-1]


def seed_annexes(ctx: Context, role_arn: str) -> list[str]:
    """Names of the annexes with any resource owned by the seed role, sorted."""
    provider = ctx.provider(ctx.setup_outputs())
    return sorted({r.annex for r in provider.annex_resources()
                   if _same_role(r.owner, role_arn) and r.annex
                   and (r.kind != "instance" or r.state not in ("terminated",))})


def seed_status(ctx: Context) -> list[SeedReport]:
    """The region's seeds that are alive (normally one), with readiness and their annexes.

    Raises:
        NotSetUpError: no setup (or no seed role) in the region.
        ProviderError: a cloud call failed.
    """
    from condor_annex.providers.aws import seed as ec2_seed
    from condor_annex.providers.aws.seed_bootstrap import SEED_FAILED_LINE, SEED_READY_LINE
    setup = seed_setup(ctx)
    reports = []
    annexes = seed_annexes(ctx, setup.seed.role_arn)
    for s in ec2_seed.find_seeds(ctx.aws):
        r = SeedReport(s, annexes=annexes)
        text = ec2_seed.console(ctx.aws, s.instance_id) if s.state == "running" else ""
        r.ready = SEED_READY_LINE in text
        r.failed = next((line.strip() for line in text.splitlines()
                         if SEED_FAILED_LINE in line or "seed install FAILED" in line), "")
        reports.append(r)
    return reports


@dataclass(frozen=True)
class SeedOffResult:
    """What ``seed off`` ended.

    Attributes:
        seed: the seed's instance id.
        annexes: the annexes it had made, each ended.
    """

    seed: str
    annexes: tuple[str, ...]


def seed_off(ctx: Context, *, progress: Callable[[str, float], None] | None = None
             ) -> SeedOffResult:
    """End every annex the seed made (``off``'s code, no graceful wait), then terminate it.

    Raises:
        BadInputError: the region has no seed alive (exit 2; nothing changed).
        AnnexError: an annex could not be ended (the seed is then left running, so that its
            pool keeps serving what is left; run ``seed off`` again).
    """
    from condor_annex.providers.aws import seed as ec2_seed
    from condor_annex.service.end import end_annex
    setup = seed_setup(ctx)
    seed = _alive_seed(ctx)
    if seed is None:
        raise BadInputError(f"seed off: region {ctx.aws.region} has no seed; "
                                "'condor_annex seed status' lists it")
    say = progress or (lambda phase, elapsed: None)
    started = time.monotonic()
    ended = []
    for name in seed_annexes(ctx, setup.seed.role_arn):
        say(f"ending annex {name}", time.monotonic() - started)
        try:
            end_annex(ctx, name, grace_s=0)
        except UnknownAnnexError:
            pass   # ended meanwhile (its lease, annexd on the seed)
        ended.append(name)
    ec2_seed.terminate_seed(ctx.aws, seed.instance_id,
                            progress=lambda state, _s: say(f"seed {state}",
                                                           time.monotonic() - started))
    return SeedOffResult(seed.instance_id, tuple(ended))

