"""Why an instance ended, as EC2 says it: the ``StateReason`` moto leaves out.

EC2 ("StateReason", Amazon EC2 API Reference) gives every stopped or terminated instance the
reason of its last state change; moto gives every termination ``Client.UserInitiatedShutdown``
("shut down using the Amazon EC2 API"), whoever ended it.  Two of the local cloud's own endings
are not API calls and EC2 names them otherwise:

* a Spot Instance the local cloud interrupted (:mod:`.interruptions`):
  ``Server.SpotInstanceTermination``, and ``shutting-down`` while its OS shuts down ("Spot
  Instance interruptions", "Instance lifecycle"; moto skips ``shutting-down``);
* an instance whose OS powered itself off (the agent's power-off, applied with the instance's
  ``InstanceInitiatedShutdownBehavior`` by :mod:`.instances`): ``Client.InstanceInitiatedShutdown``
  ("shut down from the operating system of the instance").

The product reads the first to count interruptions; code that took a node's own power-off for
an interruption (or the reverse) would pass on moto's single reason and fail on EC2.
"""

from __future__ import annotations

from collections.abc import Callable
from xml.etree import ElementTree

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply
from condor_annex.providers.local.gateway_strict import StrictRule

#: EC2's StateReason of a Spot Instance it interrupted.
SPOT_REASON = ("Server.SpotInstanceTermination",
               "Server.SpotInstanceTermination: Spot instance termination")
#: EC2's StateReason of an instance whose operating system shut it down.
OS_SHUTDOWN_REASON = ("Client.InstanceInitiatedShutdown",
                      "Client.InstanceInitiatedShutdown: Instance initiated shutdown")


class StateReasons(StrictRule):
    """Amends moto's DescribeInstances reply with the state reason EC2 would give.

    Args:
        gateway: the local cloud's gateway.
        interrupted: the ids of the instances the local cloud terminated by a Spot
            interruption (:meth:`.interruptions.SpotInterruptions.spot_terminated`).
        shutting_down: instance id -> whether its node is still running its shutdown (an
            interrupted instance is then listed ``shutting-down``, code 32).
        os_shutdown: the ids of the instances whose OS powered them off (default: none).
    """

    def __init__(self, gateway, interrupted: Callable[[], set[str]],
                 shutting_down: Callable[[str], bool],
                 os_shutdown: Callable[[], set[str]] = set) -> None:
        super().__init__(gateway)
        self.interrupted, self.shutting_down = interrupted, shutting_down
        self.os_shutdown = os_shutdown

    def after(self, call: Call, reply: Reply) -> Reply:
        """moto's DescribeInstances reply with those instances' state and reason."""
        if call.service != "ec2" or call.operation != "DescribeInstances" or reply[0] != 200:
            return reply
        status, headers, body = reply
        interrupted = self.interrupted()
        reasons = {iid: OS_SHUTDOWN_REASON for iid in self.os_shutdown()}
        reasons.update({iid: SPOT_REASON for iid in interrupted})
        if not any(iid.encode() in body for iid in reasons):
            return reply   # the common case: no XML parsed
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            return reply
        ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        changed = False
        for instances in root.iter(ns + "instancesSet"):
            for item in instances.findall(ns + "item"):
                iid = item.findtext(ns + "instanceId") or ""
                if iid not in reasons:
                    continue
                state = item.find(ns + "instanceState")
                state_name = state.findtext(ns + "name") if state is not None else None
                if reasons[iid] is OS_SHUTDOWN_REASON and state_name not in ("shutting-down",
                                                                            "terminated",
                                                                            "stopping",
                                                                            "stopped"):
                    continue   # started again since (StartInstances): no reason to give
                reason = item.find(ns + "stateReason")
                if reason is None:
                    reason = ElementTree.SubElement(item, ns + "stateReason")
                for tag, text in zip(("code", "message"), reasons[iid]):
                    child = reason.find(ns + tag)
                    if child is None:
                        child = ElementTree.SubElement(reason, ns + tag)
                    child.text = text
                if iid in interrupted and state is not None and state_name == "terminated" \
                        and self.shutting_down(iid):
                    for tag, text in (("code", "32"), ("name", "shutting-down")):
                        child = state.find(ns + tag)
                        if child is not None:
                            child.text = text
                changed = True
        if not changed:
            return reply
        if ns:   # keep moto's default namespace rather than a made-up prefix
            ElementTree.register_namespace("", ns[1:-1])
        data = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
        headers = [(k, str(len(data)) if k.lower() == "content-length" else v)
                   for k, v in headers]
        return status, headers, data
