"""Tags set on an annex's instances after their launch (the budget and its spend, issue 12
item 5): EC2 CreateTags, which replaces a tag's value
(docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateTags.html), at most 1000 resource
ids per call."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from condor_annex.errors import NotFoundError
from condor_annex.providers.aws.errors import aws_errors

#: Resource ids per CreateTags call.
BATCH = 1000


def tag_instances(ec2: Any, instance_ids: Sequence[str], tags: dict[str, str],
                  existing: Callable[[Any, list[str]], list[str]]) -> None:
    """Set ``tags`` (key -> value) on ``instance_ids``.  An instance gone since the caller
    listed it fails the whole call on AWS (``InvalidInstanceID.NotFound``): the batch is sent
    again with the ids ``existing(ec2, batch)`` still finds.

    Raises:
        ProviderError: a call failed.
    """
    ids = list(dict.fromkeys(instance_ids))
    pairs = [{"Key": k, "Value": v} for k, v in tags.items()]
    for start in range(0, len(ids), BATCH):
        batch = ids[start:start + BATCH]
        try:
            with aws_errors("ec2.CreateTags"):
                ec2.create_tags(Resources=batch, Tags=pairs)
        except NotFoundError:
            known = existing(ec2, batch)
            if known:
                with aws_errors("ec2.CreateTags"):
                    ec2.create_tags(Resources=known, Tags=pairs)
