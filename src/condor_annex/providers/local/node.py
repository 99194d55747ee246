"""One local instance as a host: its network namespace, its root, its processes.

:meth:`Node.boot` is the instance powering on (cloud-init runs the launch's user data, see
:mod:`.instance_root` and :mod:`.instance_init`); :meth:`Node.stop` is EC2 stopping or
terminating it (SIGTERM, as an ACPI shutdown would); :meth:`Node.reap` tells when its processes
are gone.  The launcher process ending by itself is the instance powering off.
"""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import time
from pathlib import Path

from condor_annex.providers.local import instance_root as ir, netns, network_acl
from condor_annex.providers.local.imds import InstanceMetadata
from condor_annex.providers.local.layout import NODES_DIR
from condor_annex.providers.local.processes import signal_group


class Node:
    """One instance's execute node: namespace, process, metadata.

    Attributes:
        instance_id: e.g. ``"i-0abc..."``.
        index: its place in the local cloud (0, 1, ...): gives its address and namespace.
        address: its private (and public) address, e.g. ``"10.200.1.1"``.
        hostname: ``ip-10-200-1-1``, as EC2 names hosts.
        ns_name: its namespace's name without the prefix, e.g. ``"i0"``.
        metadata: what IMDS serves it (kept in step with EC2 by the instance runner).
        proc: the launcher (None until booted); its exit is the instance powering off.
        stop_sent_at: monotonic time of :meth:`stop`, or None.
        root: its overlay root (None until booted).
        no_join: the network drops its traffic to the collector (``local inject no-join``).
    """

    def __init__(self, instance_id: str, index: int, metadata: InstanceMetadata,
                 state_dir: Path) -> None:
        self.instance_id, self.index = instance_id, index
        self.address = netns.instance_address(index)
        self.hostname = "ip-" + self.address.replace(".", "-")
        self.ns_name = f"i{index}"
        self.dir = f"{NODES_DIR}/{instance_id}"
        self.metadata = metadata
        self.state_dir = state_dir
        self.proc: subprocess.Popen | None = None
        self.stop_sent_at: float | None = None
        self.root: ir.InstanceRoot | None = None
        self.no_join = False

    def boot(self, layers: list[Path], *, lease_margin_s: float | None = None,
             no_join: bool = False) -> None:
        """Boot the instance over image ``layers`` (:mod:`.instance_root`): cloud-init runs
        the launch's user data; the process ends when the instance powers off.

        Args:
            lease_margin_s: the agent's ``--lease-margin-s`` (None: its default); the
                ``backstop-off`` injection passes a day (a unit drop-in in the instance).
            no_join: before it powers on, the network starts dropping its traffic to the
                collector (:func:`.network_acl.deny_collector`; ``local inject no-join``).

        Raises:
            RuntimeError, OSError: the root, the namespace or the network rule could not be
                made (the instance does not power on)."""
        self.root = ir.InstanceRoot(self.state_dir, self.instance_id, layers)
        self.root.prepare()
        ir.agent_dropin(self.root.upper, lease_margin_s)
        if no_join:
            network_acl.deny_collector(self.address)
            self.no_join = True
        ns = netns.create_host(self.ns_name, self.address)
        self.metadata = dataclasses.replace(self.metadata, mac=netns.mac_address(ns))
        with open(self.root.base / "launcher.log", "ab") as logf:
            self.proc = subprocess.Popen(
                self.root.command(ns, self.hostname, ir.ec2_dmi(self.instance_id,
                                                                self.metadata.instance_type)),
                stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    def powered_off(self) -> bool:
        """True when the instance powered off by itself (its launcher exited, no stop sent)."""
        return self.proc is not None and self.proc.poll() is not None \
            and self.stop_sent_at is None

    def stop(self) -> None:
        """Graceful stop (SIGTERM to the agent, which forwards it to the master)."""
        if self.proc and self.proc.poll() is None and self.stop_sent_at is None:
            self.stop_sent_at = time.monotonic()
            signal_group(self.proc, signal.SIGTERM)

    def reap(self, grace_s: float = 20.0) -> bool:
        """True once the node's processes are gone (SIGKILL after ``grace_s``)."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc:
                signal_group(self.proc, signal.SIGKILL)   # stragglers of the group
            return True
        if self.stop_sent_at and time.monotonic() - self.stop_sent_at > grace_s:
            signal_group(self.proc, signal.SIGKILL)
        return False

    def release(self) -> None:
        """Remove what the network holds for this instance once it is gone (its namespace and
        the ``no-join`` rule)."""
        netns.delete_host(self.ns_name)
        if self.no_join:
            network_acl.allow_collector(self.address)
            self.no_join = False
