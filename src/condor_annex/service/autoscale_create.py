"""Use case ``create NAME --autoscale --max N [--min M]`` (issue 13): a demand-driven annex.

The annex is created like any on-demand annex, with ``--min`` instances (0 allowed: then only
its lease, bundle and role are made), and its bounds and slot template are recorded in the
state store before anything is made in the cloud (:meth:`~condor_annex.state.store.Store.
put_autoscale`), so condor_annexd grows it from its first pass
(:mod:`condor_annex.reconciler.autoscale`).

Checked before anything is made (one line naming the flag, exit 2): the bounds
(:func:`parse_bounds`), and the account's vCPU quota against ``--max`` instances of the type
(Service Quotas GetServiceQuota ``ec2``/``L-1216C47A``, "Running On-Demand Standard (A, C, D,
H, I, M, R, T, Z) instances", counted in vCPUs; DescribeInstanceTypes ``VCpuInfo``,
``MemoryInfo``, ``ProcessorInfo``: docs.aws.amazon.com/ec2/latest/instancetypes/
ec2-instance-quotas.html).  A quota that cannot be read (no permission) is not a refusal:
EC2 refuses the launch that goes beyond it, and status says so.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from condor_annex.errors import AnnexError, BadInputError, ProviderError
from condor_annex.model import MAX_COUNT, AnnexSpec
from condor_annex.pool.demand import slot_template
from condor_annex.service.context import Context

log = logging.getLogger(__name__)

#: Service Quotas code of "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances".
STANDARD_QUOTA_CODE = "L-1216C47A"
#: First letters of the instance families that quota covers.
STANDARD_FAMILIES = frozenset("acdhimrtz")


@dataclass(frozen=True)
class AutoscaleBounds:
    """An autoscaled annex's bounds, in instances.

    Attributes:
        min_count: instances it always has (``--min``; 0 allowed); they get no idle shutdown.
        max_count: instances it never exceeds (``--max``, >= 1 and >= min_count).
        max_flag: how ``--max`` was given (``--max``, or the knob ``ANNEX_AUTOSCALE_MAX``), for
            messages.
    """

    min_count: int
    max_count: int
    max_flag: str = "--max"


def parse_bound(text: str | None, flag: str, *, minimum: int) -> int:
    """A whole number from ``minimum`` to :data:`MAX_COUNT` in ASCII digits.

    Raises:
        BadInputError: naming ``flag`` (negative, not whole, out of range).
    """
    value = (text or "").strip() if isinstance(text, str) else ""
    if not re.fullmatch(r"[0-9]{1,12}", value, re.ASCII):
        raise BadInputError(f"{flag}: {value or '(empty)'!s:.40} is not a whole number of "
                            f"instances from {minimum} to {MAX_COUNT}; e.g. {flag} 4")
    n = int(value)
    if not minimum <= n <= MAX_COUNT:
        raise BadInputError(f"{flag}: {n} is out of range; use {minimum} to {MAX_COUNT}")
    return n


def parse_bounds(max_text: str | None, min_text: str | None, *, max_flag: str = "--max",
                 min_flag: str = "--min", autoscale_flag: str = "--autoscale"
                 ) -> AutoscaleBounds:
    """Check ``--max`` / ``--min`` as typed (the flag names are the syntax the user typed).

    Raises:
        BadInputError: no ``--max``, a value that is not a whole number in range, or
            ``--max`` below ``--min``; each naming the flag.
    """
    if max_text is None:
        raise BadInputError(f"{autoscale_flag}: give the most instances the annex may grow "
                            f"to, e.g. {max_flag} 4")
    top = parse_bound(max_text, max_flag, minimum=1)
    low = parse_bound(min_text, min_flag, minimum=0) if min_text is not None else 0
    if top < low:
        raise BadInputError(f"{max_flag}: {top} is below {min_flag} {low}; give {max_flag} "
                            f"{low} or more")
    return AutoscaleBounds(low, top, max_flag)


def instance_type_info(ctx: Context, instance_type: str) -> dict[str, Any]:
    """vCPUs, memory (MiB) and architecture of a type (EC2 DescribeInstanceTypes).

    Raises:
        BadInputError: EC2 does not know the type (naming ``--instance-type``).
        ProviderError: the call failed.
    """
    from condor_annex.providers.aws.errors import aws_errors
    from condor_annex.providers.aws.session import make_client
    try:
        with aws_errors("ec2.DescribeInstanceTypes"):
            found = make_client(ctx.aws, "ec2").describe_instance_types(
                InstanceTypes=[instance_type])["InstanceTypes"]
    except ProviderError as e:
        if "InvalidInstanceType" in (e.code or ""):
            found = []
        else:
            raise
    if not found:
        raise BadInputError(f"--instance-type: EC2 does not know {instance_type}; give a type "
                            "of the region, e.g. --instance-type m5.large")
    info = found[0]
    archs = info.get("ProcessorInfo", {}).get("SupportedArchitectures") or ["x86_64"]
    return {"cpus": int(info["VCpuInfo"]["DefaultVCpus"]),
            "memory_mib": int(info["MemoryInfo"]["SizeInMiB"]), "arch": str(archs[0])}


def check_quota(ctx: Context, bounds: AutoscaleBounds, instance_type: str, vcpus: int) -> None:
    """Refuse a ``--max`` whose instances alone need more vCPUs than the account's quota.

    Raises:
        BadInputError: naming ``bounds.max_flag``, the vCPUs and the quota.
    """
    if instance_type[:1] not in STANDARD_FAMILIES:
        return   # another family's quota applies; EC2 refuses a launch beyond it
    from condor_annex.providers.aws.errors import aws_errors
    from condor_annex.providers.aws.session import make_client
    try:
        with aws_errors("service-quotas.GetServiceQuota"):
            quota = make_client(ctx.aws, "service-quotas").get_service_quota(
                ServiceCode="ec2", QuotaCode=STANDARD_QUOTA_CODE)["Quota"]
        limit = int(float(quota["Value"]))
    except (ProviderError, KeyError, ValueError, TypeError) as e:
        log.info("vCPU quota not read (%s); --max not checked against it", e)
        return
    wanted = bounds.max_count * vcpus
    if wanted > limit:
        raise BadInputError(
            f"{bounds.max_flag}: {bounds.max_count} x {instance_type} need {wanted} vCPUs, "
            f"above your account's quota of {limit} ({STANDARD_QUOTA_CODE}); give at most "
            f"{limit // max(vcpus, 1)} or ask AWS for a higher quota")


def autoscale_record(ctx: Context, spec: AnnexSpec, bounds: AutoscaleBounds
                     ) -> dict[str, Any]:
    """Check the bounds against the account and build the slot template to record.

    Raises:
        BadInputError: an unknown instance type, or ``--max`` above the vCPU quota.
        ProviderError: a call failed (nothing made).
    """
    info = instance_type_info(ctx, spec.instance_type)
    check_quota(ctx, bounds, spec.instance_type, info["cpus"])
    return slot_template(spec.name, cpus=info["cpus"], memory_mib=info["memory_mib"],
                         arch=info["arch"], owners=spec.owners)


def create_autoscaled(ctx: Context, spec: AnnexSpec, bounds: AutoscaleBounds) -> Any:
    """Create an autoscaled annex with ``bounds.min_count`` instances (no idle shutdown on
    them); see the module docstring.

    Args:
        ctx: settings.
        spec: a validated on-demand request; its ``count`` is ``bounds.min_count``.
        bounds: the bounds.

    Returns:
        :class:`~condor_annex.service.create.CreateResult`.

    Raises:
        BadInputError: see :func:`autoscale_record` (nothing created).
        AnnexError: as :func:`condor_annex.service.create.create_annex`.
    """
    from condor_annex.service.create import create_annex
    if spec.count != bounds.min_count:
        raise AnnexError(f"annex {spec.name}: count {spec.count} is not --min "
                         f"{bounds.min_count}")   # a caller's bug
    template = autoscale_record(ctx, spec, bounds)
    return create_annex(ctx, spec, autoscale=(bounds.min_count, bounds.max_count, template),
                        keep_idle=True)
