"""The local cloud's network rules: what the network, outside every instance, drops.

On EC2 a security group or a network ACL decides, outside the instance, which of its packets go
anywhere; an instance cannot see or change it.  A collector whose security group does not admit
an annex's instances (or a subnet's network ACL that denies them the collector's port) is the
classic reason nodes boot, run HTCondor, and never join: their connections to the collector time
out, since security groups and network ACLs drop what they do not allow, without an answer
(Amazon VPC User Guide, "Control traffic to your AWS resources using security groups" and
"Control subnet traffic with network access control lists").

Here the network is the hub namespace's bridge (:mod:`.netns`), and the rule is an nftables
bridge-family rule on its FORWARD hook, written with the chroot's ``ebtables-nft`` run inside
the hub namespace: IPv4 from the instance's address to the collector (``CM_ADDR``) on the
collector's port (9618: with shared port, every daemon of the central manager), TCP and UDP,
dropped.  Everything else the instance reaches stays as it was: IMDS and the AWS endpoint are
the hub's own addresses (its INPUT path, which a bridge FORWARD rule never sees), so the agent
still gets its credentials, its bundle and can upload its log, and GetConsoleOutput still
shows its console.  The rules live in the hub namespace; ``local down`` (deleting the hub)
removes whatever is left.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from condor_annex.providers.local import netns
from condor_annex.providers.local.layout import COLLECTOR_PORT, ROOT

#: The chroot's nftables bridge tool (Debian's ``iptables`` package; the chroot has it).
EBTABLES = "ebtables-nft"
#: Seconds one ebtables command may take.
EBTABLES_TIMEOUT_S = 30
# nftables takes one ruleset change at a time; nodes boot in parallel threads.
_lock = threading.Lock()


def collector_rules(address: str, collector: str = netns.CM_ADDR,
                    port: int = COLLECTOR_PORT) -> list[list[str]]:
    """The ebtables rules (without the command and ``-A``/``-D``) that drop ``address``'s
    packets to ``collector:port``: one for TCP, one for UDP, on the bridge's FORWARD hook."""
    return [["FORWARD", "-p", "IPv4", "--ip-source", address, "--ip-destination", collector,
             "--ip-protocol", proto, "--ip-destination-port", str(port), "-j", "DROP"]
            for proto in ("tcp", "udp")]


def _ebtables(hub: str, root: Path, op: str, rule: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", hub, "chroot", str(root), EBTABLES, op, *rule],
                          capture_output=True, text=True, timeout=EBTABLES_TIMEOUT_S)


def deny_collector(address: str, *, hub: str | None = None, root: Path = ROOT,
                   collector: str = netns.CM_ADDR, port: int = COLLECTOR_PORT) -> None:
    """Make the network drop ``address``'s traffic to the collector (:func:`collector_rules`).

    Args:
        address: the instance's address, e.g. ``"10.200.1.1"``.
        hub: the hub namespace (default: ``<prefix>hub``).
        root: the chroot whose ``ebtables-nft`` is run.
        collector, port: the collector's address and port.

    Raises:
        RuntimeError: ebtables failed (its last line is in the message); the rules already
            added stay until :func:`allow_collector` or ``local down``.
    """
    hub = hub or netns.prefix() + "hub"
    with _lock:
        for rule in collector_rules(address, collector, port):
            p = _ebtables(hub, root, "-A", rule)
            if p.returncode:
                last = (p.stderr.strip().splitlines() or ["no message"])[-1]
                raise RuntimeError(f"{EBTABLES} -A {' '.join(rule)} in {hub}: {last}")


def allow_collector(address: str, *, hub: str | None = None, root: Path = ROOT,
                    collector: str = netns.CM_ADDR, port: int = COLLECTOR_PORT) -> None:
    """Remove what :func:`deny_collector` added for ``address`` (missing rules are fine)."""
    hub = hub or netns.prefix() + "hub"
    with _lock:
        for rule in collector_rules(address, collector, port):
            _ebtables(hub, root, "-D", rule)
