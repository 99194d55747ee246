"""EventBridge's EC2 state-change events, which moto never emits.

When a local instance ends, the local cloud builds the "EC2 Instance State-change Notification"
(terminated) that EventBridge would deliver (:func:`state_change_event`; see the EventBridge
User Guide, "Amazon EC2 events") and hands it to the Lambda targets of the enabled rules whose
pattern matches it (:func:`state_change_targets`): setup's rule, whose target is the lease
function.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

#: moto's default account (the ``account`` of the events and of their resources' ARNs).
ACCOUNT_ID = "123456789012"


def state_change_event(instance_id: str, region: str, state: str = "terminated") -> dict:
    """The EventBridge event of ``instance_id`` entering ``state``, as AWS sends it."""
    return {
        "version": "0", "id": str(uuid.uuid4()),
        "detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2",
        "account": ACCOUNT_ID,
        "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [f"arn:aws:ec2:{region}:{ACCOUNT_ID}:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "state": state},
    }


def state_change_targets(events: Any) -> list[tuple[str, str]]:
    """``(rule name, Lambda ARN)`` of every enabled EventBridge rule whose pattern matches an
    EC2 "terminated" state-change event (ListRules, ListTargetsByRule).

    Args:
        events: a boto3 ``events`` client of the local cloud's endpoint.
    """
    out = []
    for page in events.get_paginator("list_rules").paginate():
        for rule in page.get("Rules", []):
            if rule.get("State") != "ENABLED" or not rule.get("EventPattern"):
                continue
            try:
                pattern = json.loads(rule["EventPattern"])
            except ValueError:
                continue
            states = (pattern.get("detail") or {}).get("state")
            if "aws.ec2" not in (pattern.get("source") or []) or \
                    "EC2 Instance State-change Notification" not in \
                    (pattern.get("detail-type") or []) or \
                    (states is not None and "terminated" not in states):
                continue
            for t in events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", []):
                if ":lambda:" in t.get("Arn", "") and ":function:" in t["Arn"]:
                    out.append((rule["Name"], t["Arn"]))
    return out
