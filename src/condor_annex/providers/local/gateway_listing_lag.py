"""EC2's listing lag, as the AWS gateway plays it: launches it saw, and listings without the
instances too young to be listed yet.

EC2 is eventually consistent ("Eventual consistency in the Amazon EC2 API",
https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html): right after
RunInstances, DescribeInstances may not list the new instances yet, and a describe by id
answers ``InvalidInstanceID.NotFound``.  With a lag of ``lag_s`` seconds (gateway clock),
instances younger than that — counted from the moment the gateway read their ids in a
RunInstances / CreateFleet reply (even one it then dropped) or, for Spot Fleet members and
instances it never saw launched, from their ``launchTime`` — are left out of DescribeInstances,
DescribeInstanceStatus, DescribeFleets, DescribeFleetInstances and DescribeSpotFleetInstances
replies.  Stdlib only.
"""

from __future__ import annotations

import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import datetime

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import (Reply, error_reply, xml_bytes, xml_ns,
                                                          xml_path)

__all__ = ["LAUNCHES", "LISTED", "LaunchMemory"]

#: Launch calls: their replies name the instances (or the Spot Fleet) they made.
LAUNCHES = ("RunInstances", "CreateFleet", "RequestSpotFleet")
#: Listing operations the lag applies to: path to the items (each with an ``instanceId``).
LISTED = {"DescribeInstances": "reservationSet/item/instancesSet",
          "DescribeInstanceStatus": "instanceStatusSet",
          "DescribeFleetInstances": "activeInstanceSet",
          "DescribeSpotFleetInstances": "activeInstanceSet"}
_INSTANCE_ID_PARAM = re.compile(r"InstanceId\.\d+")


class LaunchMemory:
    """When the gateway first saw each instance launched (gateway clock), and the listing lag
    applied to EC2 replies.  Thread-safe.

    Args:
        clock: the gateway's clock, seconds.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lock = threading.Lock()
        self.launched: dict[str, float] = {}
        self.fleets: dict[str, float] = {}

    def forget(self) -> None:
        """Forget every launch (moto was reset)."""
        with self.lock:
            self.launched.clear()
            self.fleets.clear()

    def launched_at(self, instance_id: str) -> float | None:
        """When (gateway clock) ``instance_id`` was first seen launched, or None."""
        with self.lock:
            return self.launched.get(instance_id)

    def observe(self, call: Call, status: int, body: bytes, lag_s: float) -> None:
        """Record the launches a successful EC2 reply reveals."""
        op = call.operation
        if status != 200 or not (op in LAUNCHES or (lag_s > 0 and op in LISTED)):
            return
        try:
            root = ET.fromstring(body)
        except ET.ParseError:
            return
        ns, now = xml_ns(root), self.clock()
        with self.lock:
            if op == "RunInstances":
                for e in root.iterfind(xml_path(ns, "instancesSet/item/instanceId")):
                    self.launched.setdefault((e.text or "").strip(), now)
            elif op == "CreateFleet":
                for e in root.iterfind(xml_path(ns, "fleetInstanceSet/item/instanceIds/item")):
                    self.launched.setdefault((e.text or "").strip(), now)
            elif op == "RequestSpotFleet":
                fid = root.findtext(ns + "spotFleetRequestId")
                if fid:
                    self.fleets.setdefault(fid.strip(), now)
            elif op == "DescribeSpotFleetInstances":
                t = self.fleets.get((root.findtext(ns + "spotFleetRequestId") or "").strip())
                if t is not None:
                    for e in root.iterfind(xml_path(ns, "activeInstanceSet/item/instanceId")):
                        self.launched.setdefault((e.text or "").strip(), t)
            elif op == "DescribeInstances":
                items = xml_path(ns, "reservationSet/item/instancesSet/item")
                for item in root.iterfind(items):
                    iid = (item.findtext(ns + "instanceId") or "").strip()
                    if iid and iid not in self.launched:
                        self.launched[iid] = now - _age_s(item.findtext(ns + "launchTime"))

    def young(self, iid: str, lag_s: float) -> bool:
        """Whether ``iid`` was launched less than ``lag_s`` seconds ago (gateway clock)."""
        t = self.launched.get(iid)
        return t is not None and self.clock() - t < lag_s

    def apply(self, call: Call, reply: Reply, lag_s: float) -> tuple[Reply, bool]:
        """Learn from moto's reply to an EC2 request, and hide what is too young to be listed.

        Args:
            call: the EC2 request (forwarded to moto).
            reply: moto's reply.
            lag_s: the listing lag, seconds (0: none).

        Returns:
            ``(reply, hid)``: the reply to send, and whether instances were left out of it (or
            a describe by id refused with ``InvalidInstanceID.NotFound``).
        """
        self.observe(call, reply[0], reply[2], lag_s)
        if lag_s <= 0 or reply[0] != 200 or not (call.operation in LISTED
                                                 or call.operation == "DescribeFleets"):
            return reply, False
        young = lambda iid: self.young(iid, lag_s)   # noqa: E731
        asked = [v for k, v in call.params if _INSTANCE_ID_PARAM.fullmatch(k)]
        missing = [i for i in asked if young(i)]
        if missing and call.operation in ("DescribeInstances", "DescribeInstanceStatus"):
            ids = ", ".join(missing)
            msg = (f"The instance ID '{ids}' does not exist" if len(missing) == 1 else
                   f"The instance IDs '{ids}' do not exist")
            return error_reply(call, "InvalidInstanceID.NotFound", msg, 400), True
        body = _hide_young(call, reply[2], young)
        if body is None:
            return reply, False
        return (reply[0], reply[1], body), True


def _age_s(launch_time: str | None) -> float:
    """Seconds (wall clock) since an EC2 ``launchTime``, counted from the end of its second
    (EC2 gives whole seconds), 0 if unknown or in the future."""
    if not launch_time:
        return 0.0
    try:
        t = datetime.fromisoformat(launch_time.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0
    return max(0.0, time.time() - (t + 1.0))


def _hide_young(call: Call, body: bytes, young: Callable[[str], bool]) -> bytes | None:
    """``body`` without the instances ``young`` says to hide, or None when nothing changes."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    ns, changed = xml_ns(root), False
    if call.operation == "DescribeFleets":
        for fleet in root.iterfind(xml_path(ns, "fleetSet/item")):
            fis = fleet.find(ns + "fleetInstanceSet")
            if fis is None:
                continue
            for entry in list(fis):
                ids = entry.find(ns + "instanceIds")
                if ids is None:
                    continue
                for e in list(ids):
                    if young((e.text or "").strip()):
                        ids.remove(e)
                        changed = True
                if len(ids) == 0:
                    fis.remove(entry)
        return xml_bytes(root) if changed else None
    parent_path = LISTED[call.operation]
    for sets in root.iterfind(xml_path(ns, parent_path)):
        for item in list(sets):
            if young((item.findtext(ns + "instanceId") or "").strip()):
                sets.remove(item)
                changed = True
    if call.operation == "DescribeInstances":
        reservations = root.find(ns + "reservationSet")
        for res in list(reservations if reservations is not None else []):
            iset = res.find(ns + "instancesSet")
            if iset is not None and len(iset) == 0 and reservations is not None:
                reservations.remove(res)
    return xml_bytes(root) if changed else None
