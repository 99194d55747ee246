"""What EC2 says through instance metadata before it takes a spot instance back.

Two items, both absent (HTTP 404) until EC2 has something to say, per AWS's EC2 User Guide:

* ``meta-data/spot/instance-action`` ("Spot Instance interruption notices", section "Instance
  metadata"): ``{"action": "terminate"|"stop"|"hibernate", "time": "2026-01-02T03:04:05Z"}``,
  the action EC2 will take and when (UTC). It appears about two minutes before a stop or
  terminate; a hibernation begins at once. AWS recommends checking every 5 seconds.
* ``meta-data/events/recommendations/rebalance`` ("EC2 instance rebalance recommendations",
  section "Monitor rebalance recommendation signals"): ``{"noticeTime": "2026-01-02T03:04:05Z"}``,
  the time the instance was found at elevated risk of interruption; it may come before the
  interruption notice, or with it.

amazon-ec2-metadata-mock serves the same shapes. A notice that does not parse is never ignored:
an interruption notice with an unreadable time counts as the two minutes AWS promises from when
it was seen (the node drains all the same); a rebalance recommendation with an unreadable time
counts as made when seen.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

#: Metadata paths, relative to ``/latest/``.
INSTANCE_ACTION_PATH = "meta-data/spot/instance-action"
REBALANCE_PATH = "meta-data/events/recommendations/rebalance"
#: The notice EC2 gives before a spot stop or terminate, seconds.
NOTICE_S = 120.0
#: The actions AWS documents for ``instance-action``.
ACTIONS = ("terminate", "stop", "hibernate")


@dataclass(frozen=True)
class InterruptionNotice:
    """An interruption notice.

    Attributes:
        action: ``"terminate"``, ``"stop"`` or ``"hibernate"`` (``"unknown"`` for anything else).
        at: when EC2 acts, epoch seconds.
        exact: False when the notice's time could not be read and ``at`` is the two minutes
            from when it was seen.
    """

    action: str
    at: float
    exact: bool = True


@dataclass(frozen=True)
class RebalanceNotice:
    """A rebalance recommendation: ``at`` is its ``noticeTime``, epoch seconds (``exact``:
    False when it could not be read and ``at`` is when it was seen)."""

    at: float
    exact: bool = True


def parse_time(text: object) -> float | None:
    """Epoch seconds of an ISO 8601 UTC time like ``"2026-01-02T03:04:05Z"`` (fractions and
    offsets accepted), or None when ``text`` is not such a time."""
    if not isinstance(text, str) or not text.strip():
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:   # AWS writes UTC; a time without a zone is taken as UTC
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


def _json_object(body: str) -> dict:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def parse_instance_action(body: str, *, seen_at: float) -> InterruptionNotice:
    """The notice in an ``instance-action`` answer.

    Args:
        body: the answer's text.
        seen_at: when it was read, epoch seconds (the fallback time is ``seen_at`` +
            :data:`NOTICE_S`).

    Returns:
        the notice; never raises (an unreadable notice still means the instance is going).
    """
    data = _json_object(body)
    action = data.get("action")
    action = action if isinstance(action, str) and action in ACTIONS else "unknown"
    at = parse_time(data.get("time"))
    if at is None:
        return InterruptionNotice(action, seen_at + NOTICE_S, exact=False)
    return InterruptionNotice(action, at)


def parse_rebalance(body: str, *, seen_at: float) -> RebalanceNotice:
    """The recommendation in a ``rebalance`` answer (``seen_at``: when it was read, epoch
    seconds, used when its ``noticeTime`` cannot be read); never raises."""
    at = parse_time(_json_object(body).get("noticeTime"))
    return RebalanceNotice(seen_at, exact=False) if at is None else RebalanceNotice(at)


def utc(epoch: float) -> str:
    """``epoch`` as ``2026-01-02T03:04:05Z``."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
