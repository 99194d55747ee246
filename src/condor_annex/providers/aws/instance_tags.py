"""Tags set on an annex's resources after their launch (the lease end after an ``extend``; the
budget and its spend, issue 12 item 5): EC2 CreateTags, which replaces a tag's value
(docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateTags.html), at most 1000 resource
ids per call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from condor_annex.errors import NotFoundError
from condor_annex.providers.aws.errors import aws_errors

#: Resource ids per CreateTags call.
BATCH = 1000


def tag_instances(ec2: Any, resource_ids: Sequence[str], tags: dict[str, str],
                  existing: Callable[[Any, list[str]], list[str]]) -> None:
    """Set ``tags`` (key -> value) on ``resource_ids`` (instances, and fleets or launch
    templates, which do not vanish while tagged).  An instance gone since the caller listed it
    fails the whole call on AWS (``InvalidInstanceID.NotFound``): the batch is sent again with
    its other resources and the instances ``existing(ec2, instance_ids)`` still finds.

    Raises:
        ProviderError: a call failed.
    """
    ids = list(dict.fromkeys(resource_ids))
    pairs = [{"Key": k, "Value": v} for k, v in tags.items()]
    for start in range(0, len(ids), BATCH):
        batch = ids[start:start + BATCH]
        try:
            with aws_errors("ec2.CreateTags"):
                ec2.create_tags(Resources=batch, Tags=pairs)
        except NotFoundError:
            known = set(existing(ec2, [i for i in batch if i.startswith("i-")]))
            rest = [i for i in batch if not i.startswith("i-") or i in known]
            if rest:
                with aws_errors("ec2.CreateTags"):
                    ec2.create_tags(Resources=rest, Tags=pairs)
