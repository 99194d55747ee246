"""The pool's central manager + submit node: collector, negotiator and schedd from Debian's
HTCondor packages in the chroot, in namespace ``<prefix>cm`` at :data:`netns.CM_ADDR`.

Its configuration comes from :func:`condor_annex.pool.configs.central_manager_config`; its
directories are ``CM_DIR`` inside the chroot; its log is ``<state dir>/central-manager.log``
(the master's own) and ``CM_DIR/log`` (the daemons').
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from condor_annex.pool import configs
from condor_annex.providers.local import netns
from condor_annex.providers.local.chroot import chroot_run
from condor_annex.providers.local.layout import CM_DIR, CM_HOSTNAME, ROOT, TRUST_DOMAIN

#: Seconds the collector may take to answer after the master started.
COLLECTOR_START_S = 60
#: The command that mints a pool token (``ANNEX_TOKEN_COMMAND``): the central manager's
#: ``condor_token_create``, run in the chroot with its configuration.
TOKEN_COMMAND = (f"chroot {ROOT} env CONDOR_CONFIG={CM_DIR}/etc/condor_config "
                 "condor_token_create")


def start(state_dir: Path) -> subprocess.Popen:
    """Write a fresh configuration and directories and start ``condor_master -f`` in the
    central manager's namespace, with its own UTS namespace (host name ``annex-cm``).

    Returns:
        the master (its own session; SIGTERM stops the pool).
    """
    host_dir = ROOT / CM_DIR.lstrip("/")
    shutil.rmtree(host_dir, ignore_errors=True)
    for sub in ("etc/config.d", "etc/tokens.d", "etc/passwords.d", "log", "spool",
                "execute", "run", "lock", "cred_dir"):
        (host_dir / sub).mkdir(parents=True)
    (host_dir / "etc/condor_config").write_text(configs.central_manager_config(
        local_dir=CM_DIR, etc_dir=f"{CM_DIR}/etc", host=netns.CM_ADDR,
        trust_domain=TRUST_DOMAIN))
    chroot_run("chown", "-R", "condor:condor", *(f"{CM_DIR}/{s}" for s in
               ("log", "spool", "execute", "run", "lock")))
    out = open(state_dir / "central-manager.log", "ab")
    return subprocess.Popen(
        ["ip", "netns", "exec", netns.prefix() + "cm", "unshare", "--uts", "--", "sh", "-c",
         'hostname "$0" && exec "$@"', CM_HOSTNAME, "chroot", str(ROOT), "env",
         f"CONDOR_CONFIG={CM_DIR}/etc/condor_config", "condor_master", "-f"],
        stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True)


def wait_for_collector(master: subprocess.Popen | None) -> None:
    """Wait until the collector answers and the pool password exists.

    Asked with the pool's own tool, in a child process: the htcondor bindings hold the GIL
    during a query, which would stall the daemon's relays (the query's own path).

    Raises:
        RuntimeError: not within :data:`COLLECTOR_START_S` seconds, or the master exited.
    """
    key = ROOT / CM_DIR.lstrip("/") / "etc/passwords.d/POOL"
    deadline = time.monotonic() + COLLECTOR_START_S
    while time.monotonic() < deadline:
        p = subprocess.run(
            ["ip", "netns", "exec", netns.prefix() + "cm", "chroot", str(ROOT), "env",
             f"CONDOR_CONFIG={CM_DIR}/etc/condor_config", "condor_status", "-collector",
             "-af", "Name"], capture_output=True, text=True)
        if key.exists() and p.returncode == 0 and p.stdout.strip():
            return
        if master is not None and master.poll() is not None:
            break
        time.sleep(0.3)
    raise RuntimeError("the central manager did not start; see "
                       f"{ROOT / CM_DIR.lstrip('/') / 'log'}")
