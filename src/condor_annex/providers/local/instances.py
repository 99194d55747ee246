"""The instance runner: every EC2 instance that is pending or running is a booted node.

One pass (:meth:`InstanceRunner.reconcile`) lists the instances (one paginated
DescribeInstances), boots a node for each new one (in parallel, :data:`BOOT_WORKERS` at a
time), keeps the running nodes' metadata in step with EC2, applies the shutdown behaviour of
each node that powered off by itself (``InstanceInitiatedShutdownBehavior``: terminate by
default, as on EC2), serves and carries out Spot interruptions (:mod:`.interruptions`), and
stops the nodes of instances that EC2 stopped or terminated.  A node
gone for good is forgotten: its namespace and (unless the instance is stopped) its root go, and
its end is reported (the daemon turns it into EventBridge's state-change event).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condor_annex.providers.local import instance_root as ir, netns
from condor_annex.providers.local.fleet_members import with_fleet_launch_settings
from condor_annex.providers.local.identities import InstanceIdentities
from condor_annex.providers.local.imds import InstanceMetadata
from condor_annex.providers.local.inject import BACKSTOP_OFF_MARGIN_S, Injections
from condor_annex.providers.local.interruptions import SpotInterruptions, with_notice
from condor_annex.providers.local.layout import COLLECTOR_PORT
from condor_annex.providers.local.node import Node

if TYPE_CHECKING:
    from condor_annex.providers.local.images import LocalImages

log = logging.getLogger("condor_annex.local")

#: Nodes booted at once (namespace, files, agent start are mostly subprocesses).
BOOT_WORKERS = 4
#: Seconds a new instance without an instance profile waits before it boots: moto attaches a
#: launch's profile after listing its instances (EC2 has it at launch), so a node booted at once
#: found no role credentials and its agent backed off for up to a minute.
PROFILE_WAIT_S = 3.0


def age_s(inst: dict) -> float:
    """Seconds since an instance's LaunchTime (DescribeInstances); infinite without one."""
    launched = inst.get("LaunchTime")
    if not isinstance(launched, datetime):
        return float("inf")
    return (datetime.now(timezone.utc) - launched).total_seconds()


def live_instances(ec2: Any) -> dict[str, dict]:
    """Instance id -> DescribeInstances instance, for every pending or running instance, each
    with its reservation's instance profile.

    moto attaches the instance profile to the first instance of a launch only (tests/aws
    document the gap); EC2 gives every instance of the request the profile, so the local cloud
    applies the reservation's profile to each.
    """
    live: dict[str, dict] = {}
    for page in ec2.get_paginator("describe_instances").paginate(Filters=[{
            "Name": "instance-state-name", "Values": ["pending", "running"]}]):
        for res in page["Reservations"]:
            profile = next((i["IamInstanceProfile"] for i in res["Instances"]
                            if i.get("IamInstanceProfile")), None)
            for inst in res["Instances"]:
                if profile and not inst.get("IamInstanceProfile"):
                    inst = {**inst, "IamInstanceProfile": profile}
                live[inst["InstanceId"]] = inst
    return live


class InstanceRunner:
    """The local cloud's nodes, one per pending or running instance.

    Args:
        client: ``client(service)`` -> a boto3 client of the local cloud's endpoint (not paced:
            these calls stand for AWS itself).
        images: the local AMIs (an instance's layers; which image each instance runs).
        identities: builds and refreshes each instance's metadata.
        injections: the fault injections in force (read at each boot).
        state_dir: the daemon's state dir (instance roots live under it).
        on_ended: called with the instance id once a node is forgotten.
    """

    def __init__(self, client: Callable[[str], Any], images: LocalImages,
                 identities: InstanceIdentities, injections: Injections, state_dir: Path,
                 on_ended: Callable[[str], None]) -> None:
        self._client = client
        self.images = images
        self.identities = identities
        self.injections = injections
        self.state_dir = state_dir
        self._on_ended = on_ended
        self.nodes: dict[str, Node] = {}
        self.by_address: dict[str, Node] = {}
        self.next_index = 0
        #: Shutdown behaviour of fleet members (moto does not know it): instance id -> value.
        self.shutdown_behaviour: dict[str, str] = {}
        #: Spot interruptions (``local inject interrupt``); the daemon gives it its clock.
        self.interruptions = SpotInterruptions(injections.take_interrupts)
        #: Instances whose OS powered them off, for their EC2 state reason
        #: (:mod:`.state_reasons`); read by the gateway's threads.
        self._os_shutdown: set[str] = set()
        self._os_shutdown_lock = threading.Lock()

    def metadata_for(self, address: str) -> InstanceMetadata | None:
        """What IMDS serves the caller at ``address`` (None: not an instance)."""
        node = self.by_address.get(address)
        return node.metadata if node else None

    def reconcile(self) -> float:
        """One pass: boot nodes for new instances (in parallel), stop nodes of ended ones, and
        apply the shutdown behaviour of instances whose node powered off.

        Returns:
            seconds spent listing the instances (DescribeInstances), for pacing.

        Raises:
            Exception: a boot failed (the daemon logs it; the next pass goes on).
        """
        started = time.monotonic()
        ec2 = self._client("ec2")
        live = live_instances(ec2)
        if any(i.get("InstanceLifecycle") == "spot" and not i.get("IamInstanceProfile")
               and iid not in self.nodes for iid, i in live.items()):
            live = with_fleet_launch_settings(ec2, live, self.shutdown_behaviour)
        listed_s = time.monotonic() - started
        for iid in self.interruptions.tick(ec2, set(live)):
            live.pop(iid)   # terminated by its interruption: its node stops below
        fresh: list[Node] = []
        for iid, inst in live.items():
            node = self.nodes.get(iid)
            if node is None:
                if not inst.get("IamInstanceProfile") and age_s(inst) < PROFILE_WAIT_S:
                    continue   # EC2 attaches the profile at launch; moto may not have yet
                fresh.append(self._register(ec2, inst))
                continue
            node.metadata = with_notice(self.identities.refreshed(node.metadata, inst),
                                        self.interruptions.notice(iid))
            if node.powered_off():
                log.info("%s powered off (agent exit %s)", iid,
                         node.proc.returncode if node.proc else None)
                self._power_off(ec2, iid)
        if fresh:
            self._boot(fresh)
        for iid, node in list(self.nodes.items()):
            if iid not in live:
                node.stop()
                if node.reap():
                    self._forget(node)
        return listed_s

    def _boot(self, fresh: list[Node]) -> None:
        """Boot ``fresh`` nodes, :data:`BOOT_WORKERS` at a time, with the injections in force:
        ``backstop-off`` for all, ``no-join`` for as many as are left, in launch order (each
        takes one before any boots, so "the next N instances" is exact).

        Raises:
            Exception: the first boot that failed (the others went on).
        """
        margin = BACKSTOP_OFF_MARGIN_S if self.injections.backstop_off() else None
        no_join = {n.instance_id for n in fresh if self.injections.take_no_join()}
        for node in fresh:
            if node.instance_id in no_join:
                log.info("%s: no-join (local inject): the network drops its traffic to the "
                         "collector %s:%d (TCP, UDP) from %s", node.instance_id, netns.CM_ADDR,
                         COLLECTOR_PORT, node.address)
        with concurrent.futures.ThreadPoolExecutor(BOOT_WORKERS) as pool:
            list(pool.map(lambda n: n.boot(self.images.layers_for(n.metadata.image_id),
                                           lease_margin_s=margin,
                                           no_join=n.instance_id in no_join), fresh))   # raises

    def _register(self, ec2: Any, inst: dict) -> Node:
        """A node for a new instance: its address, host name and metadata (booted by the
        caller)."""
        iid = inst["InstanceId"]
        with self._os_shutdown_lock:
            self._os_shutdown.discard(iid)   # started again: its next end has its own reason
        index = self.next_index
        self.next_index += 1
        self.images.launched(iid, inst.get("ImageId", ""))
        metadata = self.identities.metadata(inst, netns.instance_address(index),
                                            ir.user_data(ec2, iid))
        node = Node(iid, index, metadata, self.state_dir)
        self.nodes[iid] = node
        self.by_address[node.address] = node
        log.info("booting %s as %s (%s)", iid, node.hostname, node.address)
        return node

    def _power_off(self, ec2: Any, iid: str) -> None:
        """The node's OS halted: apply the instance's shutdown behaviour."""
        if iid in self.shutdown_behaviour:   # a fleet member (moto does not know it)
            behaviour = self.shutdown_behaviour[iid]
        else:
            try:
                attr = ec2.describe_instance_attribute(
                    InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior")
                behaviour = attr["InstanceInitiatedShutdownBehavior"]["Value"]
            except Exception:  # noqa: BLE001
                behaviour = "terminate"
        with self._os_shutdown_lock:
            self._os_shutdown.add(iid)
        if behaviour == "stop":
            ec2.stop_instances(InstanceIds=[iid])
        else:
            ec2.terminate_instances(InstanceIds=[iid])

    def os_shutdown(self) -> set[str]:
        """The instances whose OS powered them off (a copy; any thread)."""
        with self._os_shutdown_lock:
            return set(self._os_shutdown)

    def _forget(self, node: Node) -> None:
        node.release()
        if node.root and ir.state(self._client("ec2"), node.instance_id) not in ("stopping",
                                                                                  "stopped"):
            node.root.remove()   # a stopped instance keeps its root volume (CreateImage, start)
        self.nodes.pop(node.instance_id, None)
        self.by_address.pop(node.address, None)
        self.shutdown_behaviour.pop(node.instance_id, None)
        self._on_ended(node.instance_id)

    def stop_all(self, timeout_s: float = 25, grace_s: float = 15) -> None:
        """Stop every node (SIGTERM), wait up to ``timeout_s`` seconds for them to end (SIGKILL
        after ``grace_s``), and forget those that ended."""
        for node in self.nodes.values():
            node.stop()
        deadline = time.monotonic() + timeout_s
        while self.nodes and time.monotonic() < deadline:
            for node in list(self.nodes.values()):
                if node.reap(grace_s=grace_s):
                    self._forget(node)
            time.sleep(0.2)
