"""What the classic ``-status`` and ``status`` report, gathered as HTCondor's ``condor_annex``
23.9.6 gathered it (reference §6; ``GetInstances.cpp``, ``StatusReply.cpp``,
``CondorStatusReply.cpp``): every instance tagged ``htcondor:AnnexName`` (terminated ones
included) from one DescribeInstances pass, and the instance ids of the annex slots the collector
knows.

Kept from the original on purpose (scripts parse its output): the annex name matches the tag
without regard to case (its ``strcasecmp``; ``AnnexName == "N"`` in the collector query is
case-insensitive too), and an instance with a slot in the collector counts as ``in-pool``
whatever EC2 says of it.  Dropped: the name cut at the first ``_`` and the full name compared
with a 27-character tag (our names have neither), the missing pagination.
"""

from __future__ import annotations

from dataclasses import dataclass

from condor_annex.errors import PoolError
from condor_annex.model import TAG_ANNEX_NAME
from condor_annex.pool.collector import annex_slots
from condor_annex.service.common import outputs_or_none
from condor_annex.service.context import Context
from condor_annex.service.converge import converge, daemon_pid

#: The synthetic state of an instance with a slot in the collector (the original's word).
IN_POOL = "in-pool"


@dataclass(frozen=True)
class ClassicInstance:
    """One annex instance as the original's EC2 GAHP reported it (``EC2_VM_STATUS_ALL``).

    Attributes:
        instance_id: e.g. ``"i-0abc..."``.
        annex_name: tag ``htcondor:AnnexName``.
        state: EC2 state name (pending, running, shutting-down, terminated, stopping, stopped).
        client_token: the launch's client token, or "" (fleet members have none).
        key_name: the instance's key pair, or "".
        reason_code: ``StateReason.Code`` (e.g. ``Client.UserInitiatedShutdown``), or "".
        public_dns: ``PublicDnsName``, or "".
    """

    instance_id: str
    annex_name: str
    state: str
    client_token: str = ""
    key_name: str = ""
    reason_code: str = ""
    public_dns: str = ""


def same_annex(a: str, b: str) -> bool:
    """True when two annex names match as the original matched them (case-insensitively)."""
    return a.lower() == b.lower()


def classic_instances(ctx: Context, name: str | None = None) -> list[ClassicInstance]:
    """Every instance of annex ``name`` (any case), or of every annex, terminated ones included.

    Runs one reconciler pass first when no condor_annexd does (every command does), then one
    paginated EC2 DescribeInstances with ``Filter tag-key=htcondor:AnnexName``, as the
    original did (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html).

    Returns:
        the instances, sorted by instance id.

    Raises:
        ProviderError: DescribeInstances failed.
    """
    from condor_annex.providers.aws.errors import aws_errors
    from condor_annex.providers.aws.session import make_client

    if outputs_or_none(ctx) is not None and daemon_pid(ctx) is None:
        converge(ctx)
    found = []
    with aws_errors("ec2.DescribeInstances"):
        pages = make_client(ctx.aws, "ec2").get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag-key", "Values": [TAG_ANNEX_NAME]}])
        for page in pages:
            for reservation in page.get("Reservations", []):
                for inst in reservation.get("Instances", []):
                    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                    annex = tags.get(TAG_ANNEX_NAME, "")
                    if not annex or (name is not None and not same_annex(annex, name)):
                        continue
                    found.append(ClassicInstance(
                        instance_id=inst["InstanceId"], annex_name=annex,
                        state=inst.get("State", {}).get("Name", ""),
                        client_token=inst.get("ClientToken") or "",
                        key_name=inst.get("KeyName") or "",
                        reason_code=(inst.get("StateReason") or {}).get("Code") or "",
                        public_dns=inst.get("PublicDnsName") or ""))
    return sorted(found, key=lambda i: i.instance_id)


def slot_instance_ids(ctx: Context, name: str | None = None) -> set[str] | None:
    """``EC2InstanceID`` of every slot of annex ``name`` (any case), or of every annex
    (``IsAnnex``), in the collector ``COLLECTOR_HOST``; a slot without the attribute gives "".

    Returns:
        the ids, or None when the collector could not be asked (not configured, or no answer):
        the original then said so on stderr and went on as if no slot existed.
    """
    if not ctx.collector:
        return None
    try:
        slots = annex_slots(ctx.collector, None)
    except PoolError:
        return None
    return {s.instance_id for s in slots if name is None or same_annex(s.annex_name, name)}
