"""Network namespaces as the local cloud's hosts (iproute2; needs root, CAP_SYS_ADMIN).

Topology (addresses in a private range owned by the project; nothing is added to the host's own
namespace)::

    <prefix>hub   bridge <prefix>br, 10.200.0.1/16  (AWS endpoint relay, IMDS)
                  and 169.254.169.254/32         (IMDS at EC2's address)
    <prefix>cm    eth0 10.200.0.2/16                (central manager + submit node)
    <prefix>iN    eth0 10.200.X.Y/16                (one per instance)

Each instance namespace routes 169.254.169.254 over its eth0 to the hub (the hub answers ARP for
it), so inside instances the metadata service has EC2's address; the host never routes there.

Processes in the host namespace reach sockets in these namespaces only through sockets created
*inside* them (:func:`socket_in_netns`), which is how the relays and the IMDS server listen.
"""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
SUBNET_PREFIX = 16
HUB_ADDR = "10.200.0.1"
CM_ADDR = "10.200.0.2"
#: EC2's instance metadata address, held by the hub inside our namespaces only.
IMDS_ADDR = "169.254.169.254"
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


def prefix() -> str:
    """Name prefix of every namespace and link we make (``$CONDOR_ANNEX_NETNS_PREFIX``, ``ca-``)."""
    return os.environ.get("CONDOR_ANNEX_NETNS_PREFIX", "ca-")


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``ip ARGS``; raise ``RuntimeError`` with its stderr when ``check`` and it fails."""
    p = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and p.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


def exists(ns: str) -> bool:
    """True if the named namespace exists."""
    return os.path.exists(f"/run/netns/{ns}")


def instance_address(index: int) -> str:
    """Address of the ``index``-th instance (0-based): 10.200.1.1, 10.200.1.2, ... (250 a /24)."""
    return f"10.200.{1 + index // 250}.{1 + index % 250}"


def create_hub() -> None:
    """Create the hub namespace and its bridge (idempotent)."""
    hub, br = prefix() + "hub", prefix() + "br"
    if exists(hub):
        return
    ip("netns", "add", hub)
    ip("-n", hub, "link", "set", "lo", "up")
    ip("-n", hub, "link", "add", br, "type", "bridge")
    ip("-n", hub, "addr", "add", f"{HUB_ADDR}/{SUBNET_PREFIX}", "dev", br)
    ip("-n", hub, "addr", "add", f"{IMDS_ADDR}/32", "dev", br)
    ip("-n", hub, "link", "set", br, "up")


def create_host(name: str, address: str) -> str:
    """Create namespace ``<prefix><name>`` joined to the hub bridge with ``address``.

    Returns:
        the namespace's name.
    """
    ns, hub, br = prefix() + name, prefix() + "hub", prefix() + "br"
    if exists(ns):
        delete_host(name)
    peer = "v" + name[-12:]
    ip("netns", "add", ns)
    ip("-n", hub, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns)
    ip("-n", hub, "link", "set", peer, "master", br, "up")
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "addr", "add", f"{address}/{SUBNET_PREFIX}", "dev", "eth0")
    ip("-n", ns, "link", "set", "eth0", "up")
    ip("-n", ns, "route", "add", f"{IMDS_ADDR}/32", "dev", "eth0", "src", address)
    return ns


def mac_address(ns: str, dev: str = "eth0") -> str:
    """The MAC address of ``dev`` in namespace ``ns`` (``aa:bb:...``, lower case)."""
    return ip("-n", ns, "-o", "link", "show", dev).stdout.split("link/ether", 1)[1].split()[0]


def delete_host(name: str) -> None:
    """Delete namespace ``<prefix><name>`` (its veth goes with it); missing is fine."""
    ns = prefix() + name
    if exists(ns):
        ip("netns", "del", ns, check=False)


def delete_all() -> None:
    """Delete every namespace with our prefix (instances, central manager, hub)."""
    p = ip("netns", "list", check=False)
    for line in p.stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        if ns.startswith(prefix()):
            ip("netns", "del", ns, check=False)


def run_in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Call ``fn`` on a fresh thread that has joined namespace ``ns`` (setns(2)); return its value.

    Sockets created by ``fn`` stay in ``ns`` for their whole life, whatever thread uses them.
    """
    result: dict[str, object] = {}

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}): {os.strerror(err)}")
            finally:
                os.close(fd)
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    t = threading.Thread(target=body, name=f"setns-{ns}")
    t.start()
    t.join()
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["value"]  # type: ignore[return-value]


def socket_in_netns(ns: str, host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` inside namespace ``ns``."""
    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(512)
        return s
    return run_in_netns(ns, make)


def connect_in_netns(ns: str | None, host: str, port: int, timeout: float = 10) -> socket.socket:
    """A TCP connection to ``host:port`` made from inside ``ns`` (or the caller's namespace)."""
    if ns is None:
        return socket.create_connection((host, port), timeout=timeout)
    return run_in_netns(ns, lambda: socket.create_connection((host, port), timeout=timeout))
