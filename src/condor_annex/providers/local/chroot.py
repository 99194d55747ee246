"""The trixie chroot every local host runs from: built or restored once, reset at each start.

:func:`ensure_root` runs ``build_chroot.sh`` (debootstrap + Debian's HTCondor, cached as a
tarball; see docs/local-cloud.md); :func:`reset_names` gives the chroot the host names the pool
uses, since the namespaces have no DNS.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from condor_annex.providers.local import netns
from condor_annex.providers.local.layout import BUILD_SCRIPT, CM_HOSTNAME, NODES_DIR, ROOT

#: Instance host names written into the chroot's hosts file (addresses of indexes 0..N-1).
HOSTS_IN_FILE = 2000


def chroot_run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a command inside the chroot (host namespace).

    Raises:
        subprocess.CalledProcessError: it failed and ``check``.
    """
    return subprocess.run(["chroot", str(ROOT), *args], check=check, **kw)


def ensure_root() -> Path:
    """Build or restore (cached) and mount the trixie chroot; returns its path.

    Raises:
        RuntimeError: the build script failed (its messages are on stdout/stderr).
    """
    env = dict(os.environ, CONDOR_ANNEX_ROOT=str(ROOT))
    p = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, stdout=subprocess.PIPE, text=True)
    if p.returncode:
        raise RuntimeError("building the HTCondor chroot failed (see messages above)")
    return ROOT


def reset_names() -> None:
    """Forget the previous run's nodes and write the chroot's resolv.conf and hosts file (nothing
    of the product is baked in: instances get the agent as on EC2, through their bootstrap)."""
    shutil.rmtree(ROOT / NODES_DIR.lstrip("/"), ignore_errors=True)
    # No DNS inside the namespaces: every name the pool uses is in the chroot's hosts file,
    # including this host's own name (tools run without their own UTS namespace use it).
    (ROOT / "etc/resolv.conf").write_text("# the local cloud has no DNS; see /etc/hosts\n")
    hosts = [f"127.0.0.1 localhost {socket.gethostname()}", f"{netns.CM_ADDR} {CM_HOSTNAME}"]
    hosts += [f"{netns.instance_address(i)} ip-{netns.instance_address(i).replace('.', '-')}"
              for i in range(HOSTS_IN_FILE)]
    (ROOT / "etc/hosts").write_text("\n".join(hosts) + "\n")
