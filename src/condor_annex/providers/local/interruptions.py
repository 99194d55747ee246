"""Spot interruptions in the local cloud: ``condor_annex local inject interrupt INSTANCE_ID
[--rebalance] [--notice 120s]``.

What EC2 does, and so what the local cloud does (EC2 User Guide, "Spot Instance interruption
notices" and "EC2 instance rebalance recommendations"):

* **An interruption notice**: two minutes before it interrupts a Spot Instance, EC2 serves in
  that instance's metadata ``spot/instance-action`` = ``{"action": "terminate", "time":
  "2017-09-18T08:22:00Z"}`` (the moment it will act, UTC, to the second); before a notice that
  path is 404.  When the time comes EC2 terminates the instance: it goes ``shutting-down``
  (its OS gets the shutdown) then ``terminated``, and DescribeInstances gives the StateReason
  ``Server.SpotInstanceTermination`` ("Spot instance termination").  The guide recommends
  polling every 5 seconds.
* **A rebalance recommendation** (``--rebalance``): EC2 serves
  ``events/recommendations/rebalance`` = ``{"noticeTime": "2020-10-27T08:22:00Z"}`` (when the
  recommendation was made); it is a signal that the instance is at elevated risk, not an
  interruption: nothing is terminated (an interruption notice may or may not follow; inject
  ``interrupt`` again without ``--rebalance`` for that).

The CLI writes a request to the injection file (:mod:`.inject`); the daemon's instance runner
takes it on its next pass (:meth:`SpotInterruptions.tick`), fixes the notice's times on the
local cloud's one clock (:mod:`.clock`) and puts the bodies in that instance's metadata
(:mod:`.imds`, IMDSv2 only as for every path).  The notice lasts ``--notice`` seconds of AWS
time (default 120), i.e. ``notice / CONDOR_ANNEX_TIME_SCALE`` wall seconds; the served
``time`` is the wall moment the local cloud will terminate the instance, so what the instance
reads is what happens.  When it runs out the runner calls TerminateInstances (the node gets
SIGTERM, as an ACPI shutdown) and :class:`.state_reasons.StateReasons` makes DescribeInstances say
why (moto records every termination as ``Client.UserInitiatedShutdown`` and skips
``shutting-down``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from condor_annex import validate
from condor_annex.errors import BadInputError
from condor_annex.providers.local.clock import Clock
from condor_annex.providers.local.imds import InstanceMetadata

log = logging.getLogger("condor_annex.local")

#: EC2's notice before it interrupts a Spot Instance, seconds.
DEFAULT_NOTICE_S = 120
#: The longest ``--notice`` taken, seconds (EC2's is two minutes; longer is for slow tests).
MAX_NOTICE_S = 3600
#: The shape of an EC2 instance id (``i-`` and 8 or 17 hex digits).
_INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_USAGE = "local inject interrupt INSTANCE_ID [--rebalance] [--notice 120s]"


@dataclass(frozen=True)
class InterruptRequest:
    """One ``local inject interrupt``, as the CLI writes it to the injection file.

    Attributes:
        instance_id: the instance, e.g. ``"i-0abc..."``.
        rebalance: a rebalance recommendation only (nothing is terminated).
        notice_s: seconds of AWS time from the notice to the termination (unused with
            ``rebalance``).
    """

    instance_id: str
    rebalance: bool = False
    notice_s: int = DEFAULT_NOTICE_S

    def as_json(self) -> dict:
        """The request as stored in ``inject.json``."""
        return {"instance_id": self.instance_id, "rebalance": self.rebalance,
                "notice_s": self.notice_s}

    @classmethod
    def from_json(cls, data: object) -> InterruptRequest | None:
        """A stored request, or None when it is not one (a hand-edited file)."""
        if not isinstance(data, dict):
            return None
        iid, notice = data.get("instance_id"), data.get("notice_s", DEFAULT_NOTICE_S)
        if not isinstance(iid, str) or not _INSTANCE_ID.fullmatch(iid) \
                or isinstance(notice, bool) or not isinstance(notice, int) \
                or not 1 <= notice <= MAX_NOTICE_S:
            return None
        return cls(iid, bool(data.get("rebalance")), notice)

    def describe(self) -> str:
        """As ``local inject`` spells it, e.g. ``"interrupt i-0abc --notice 120s"``."""
        return f"interrupt {self.instance_id} " + (
            "--rebalance" if self.rebalance else f"--notice {self.notice_s}s")


def parse_interrupt(words: list[str], *, rebalance: bool = False,
                    notice: str | None = None) -> InterruptRequest:
    """Check ``local inject interrupt`` arguments.

    Args:
        words: the words after ``interrupt``: exactly one instance id (``i-`` and 8 or 17
            lower-case hex digits).
        rebalance: ``--rebalance`` was given.
        notice: ``--notice`` as typed (``"120s"``, ``"2m"``; a bare number is seconds), or
            None for EC2's two minutes.

    Raises:
        BadInputError: no or several instance ids, one not shaped like an EC2 instance id, a
            notice not a duration from 1 s to 1 h, or ``--notice`` with ``--rebalance`` (one
            line naming the word and the fix).
    """
    if len(words) != 1:
        got = f" (got {validate.shown(' '.join(words))})" if words else ""
        raise BadInputError(f"local inject interrupt: give one instance id, e.g. {_USAGE}{got}")
    iid = words[0]
    if not _INSTANCE_ID.fullmatch(iid):
        raise BadInputError(f"local inject interrupt: {validate.shown(iid)} is not an instance "
                            "id; give one as 'condor_annex status' lists it, e.g. "
                            "i-0123456789abcdef0")
    if rebalance and notice is not None:
        raise BadInputError("local inject interrupt --notice: a --rebalance recommendation "
                            "terminates nothing; drop --notice (or --rebalance)")
    notice_s = DEFAULT_NOTICE_S if notice is None else validate.duration(
        notice, "local inject interrupt --notice", unit_required=False, maximum_s=MAX_NOTICE_S)
    return InterruptRequest(iid, rebalance, notice_s)


def iso_z(epoch_s: float) -> str:
    """``2017-09-18T08:22:00Z``: an epoch time as the instance metadata writes times (UTC, to
    the second)."""
    return datetime.fromtimestamp(epoch_s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Notice:
    """What EC2 has told one instance.

    Attributes:
        rebalance_at: when a rebalance recommendation was made (epoch seconds), or None.
        terminate_at: when the interruption notice says EC2 terminates it (epoch seconds,
            wall), or None for no interruption notice.
        terminated: the termination was carried out (TerminateInstances succeeded).
    """

    rebalance_at: float | None = None
    terminate_at: float | None = None
    terminated: bool = False

    def instance_action(self) -> str:
        """The body of ``spot/instance-action``, or "" (404) before an interruption notice."""
        if self.terminate_at is None:
            return ""
        return json.dumps({"action": "terminate", "time": iso_z(self.terminate_at)})

    def rebalance(self) -> str:
        """The body of ``events/recommendations/rebalance``, or "" (404) before a
        recommendation."""
        if self.rebalance_at is None:
            return ""
        return json.dumps({"noticeTime": iso_z(self.rebalance_at)})


def with_notice(md: InstanceMetadata, notice: Notice | None) -> InstanceMetadata:
    """``md`` serving what EC2 has told its instance (``md`` itself when nothing changed)."""
    action = notice.instance_action() if notice else ""
    rebalance = notice.rebalance() if notice else ""
    if (action, rebalance) == (md.spot_instance_action, md.rebalance_recommendation):
        return md
    return dataclasses.replace(md, spot_instance_action=action,
                               rebalance_recommendation=rebalance)


class SpotInterruptions:
    """The interruption notices of the local cloud's instances (see the module docstring).

    Args:
        take_requests: returns the requests written since the last call and forgets them
            (:meth:`.inject.Injections.take_interrupts`).
        clock: the local cloud's clock (:class:`.clock.Clock`; tests pass a
            :class:`.clock.ManualClock`); None: a clock on ``CONDOR_ANNEX_TIME_SCALE``.

    Thread-safety: :meth:`tick` runs in the daemon's loop; :meth:`notice` and
    :meth:`spot_terminated` are read from other threads (the gateway's request threads).
    """

    def __init__(self, take_requests: Callable[[], list[InterruptRequest]],
                 clock: Clock | None = None) -> None:
        self._take = take_requests
        self.clock = clock if clock is not None else Clock()
        self._lock = threading.Lock()
        self._notices: dict[str, Notice] = {}

    def notice(self, instance_id: str) -> Notice | None:
        """What EC2 has told ``instance_id`` (None: nothing)."""
        with self._lock:
            return self._notices.get(instance_id)

    def spot_terminated(self) -> set[str]:
        """The instances the local cloud terminated by an interruption."""
        with self._lock:
            return {iid for iid, n in self._notices.items() if n.terminated}

    def tick(self, ec2: Any, live: set[str]) -> list[str]:
        """Take new requests and carry out the interruptions whose notice ran out.

        A request for an instance that is not pending or running is dropped with a log line
        (EC2 interrupts only instances it runs).  A second interruption notice for the same
        instance keeps the first one's time (EC2 sends one notice).

        Args:
            ec2: a boto3 EC2 client of the local cloud (TerminateInstances).
            live: the ids of the pending and running instances (this pass's listing).

        Returns:
            the ids terminated on this pass.

        Raises:
            botocore.exceptions.ClientError: TerminateInstances failed (retried next pass).
        """
        now = self.clock.time()
        for req in self._take():
            if req.instance_id not in live:
                log.warning("%s: local inject interrupt dropped: no such pending or running "
                            "instance", req.instance_id)
                continue
            with self._lock:
                n = self._notices.setdefault(req.instance_id, Notice())
                if req.rebalance:
                    n.rebalance_at = n.rebalance_at or now
                    log.info("%s: rebalance recommendation (local inject) at %s",
                             req.instance_id, iso_z(now))
                elif n.terminate_at is None:
                    n.terminate_at = now + self.clock.scaled(req.notice_s)
                    log.info("%s: spot interruption notice (local inject): terminate at %s "
                             "(%d s of AWS time)", req.instance_id, iso_z(n.terminate_at),
                             req.notice_s)
        with self._lock:
            due = [iid for iid, n in self._notices.items() if not n.terminated
                   and n.terminate_at is not None and n.terminate_at <= now]
        done = []
        for iid in due:
            if iid not in live:   # ended otherwise during the notice: not by an interruption
                with self._lock:
                    self._notices.pop(iid, None)
                continue
            ec2.terminate_instances(InstanceIds=[iid])
            log.info("%s: terminated by its spot interruption", iid)
            done.append(iid)
            with self._lock:
                self._notices[iid].terminated = True
        return done


def check_instance(ec2: Any, instance_id: str) -> None:
    """Refuse an interruption EC2 could not make: EC2 interrupts only Spot Instances that are
    pending or running ("Spot Instance interruptions", EC2 User Guide).

    Args:
        ec2: a boto3 EC2 client of the local cloud.
        instance_id: the instance to interrupt.

    Raises:
        BadInputError: no such instance, one that is not pending or running, or an on-demand
            instance (one line naming the instance and the fix).
        botocore.exceptions.ClientError: any other EC2 error.
    """
    from botocore.exceptions import ClientError
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as e:
        if not e.response.get("Error", {}).get("Code", "").startswith("InvalidInstanceID"):
            raise
        reservations = []
    found = [i for r in reservations for i in r["Instances"]]
    if not found:
        raise BadInputError(f"local inject interrupt: no instance {instance_id} in the local "
                            "cloud; give one 'condor_annex status' lists")
    inst = found[0]
    state = inst.get("State", {}).get("Name", "")
    if state not in ("pending", "running"):
        raise BadInputError(f"local inject interrupt: {instance_id} is {state}; EC2 interrupts "
                            "only pending or running instances")
    if inst.get("InstanceLifecycle") != "spot":
        raise BadInputError(f"local inject interrupt: {instance_id} is an on-demand instance; "
                            "EC2 interrupts only Spot Instances: give one of a spot annex")
