"""condor_annexd under the local cloud's ``condor_master``, as the seed page on the annex daemon
says: ``DAEMON_LIST = $(DAEMON_LIST) ANNEXD`` and ``ANNEXD = <path>`` (not in
``DC_DAEMON_LIST``: it is not a DaemonCore daemon), so the master starts it, restarts it when it
dies (its usual backoff), and stops it with the pool.

Why this way (docs/local-cloud.md): the pool's master runs inside the trixie chroot (Python
3.13, Debian's packages) in the central manager's network namespace, while condor_annexd is this
checkout's venv on the host (Python 3.11 here) and talks to the local cloud's gateway on the
host's loopback.  Installing the package and its dependencies into a venv of the chroot's own
python3 would need PyPI at chroot build time and a second copy of everything to keep in step;
a second ``condor_master`` outside the chroot is not possible, since the host has no HTCondor
daemons (the PyPI bindings carry none).  So ``ANNEXD`` is a two-line launcher inside the chroot
that steps out of the chroot into the host's root and host name (``nsenter --target PID --mount
--uts --root``, util-linux, in the chroot, with the pid of the local cloud's own daemon, which runs on the host for as long
as the pool does; PID 1 may not be ours to enter in a container), staying on the submit host's
network like any daemon of its master: there it reaches the schedd (demand for autoscaled
annexes), and the AWS endpoint and collector at the same loopback addresses as on the host
(relays the local cloud keeps inside the CM namespace), and execs this checkout's
``condor_annexd`` with the user's config; the process the master watches is condor_annexd
itself (``exec``), so a SIGKILL reaches it and the master sees it die.

The daemon's collector ad (``UPDATE_AD_GENERIC``) needs DAEMON authorization at the collector:
enabling mints the daemon an IDTOKEN with the pool's ``condor_token_create`` (identity
``annexd@annex``, which the pool's collector admits as it admits annex nodes) into a
directory of the local cloud's state, handed to the daemon as ``_CONDOR_SEC_TOKEN_DIRECTORY``
(HTCondor reads ``_CONDOR_``-prefixed variables as configuration); a user's personal master
gives its daemons its own credentials instead.

Enabling writes ``<CM_DIR>/etc/config.d/90-annexd.config`` and the launcher, then runs
a reconfiguration (SIGHUP to the master; it starts daemons newly in ``DAEMON_LIST``);
disabling removes them and reconfigures (the master stops ANNEXD with SIGTERM).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from condor_annex.providers.local.layout import CM_DIR, ROOT

#: The config file and launcher, inside the chroot.
CONFIG = f"{CM_DIR}/etc/config.d/90-annexd.config"
LAUNCHER = f"{CM_DIR}/libexec/condor_annexd"
#: Set in the environment of every daemon the launcher starts: how :func:`daemons` finds them.
MARK = "CONDOR_ANNEX_LOCAL_ANNEXD=1"
#: Variables handed to the daemon when set here: where the user's config and cloud are.
PASSED = ("CONDOR_ANNEX_USER_CONFIG", "HOME", "PATH", "AWS_CONFIG_FILE",
          "AWS_SHARED_CREDENTIALS_FILE", "AWS_EC2_METADATA_DISABLED")


def _host(path: str) -> Path:
    return ROOT / path.lstrip("/")


def annexd_executable() -> str:
    """This installation's ``condor_annexd`` (beside the running python)."""
    beside = Path(sys.executable).parent / "condor_annexd"
    return str(beside) if beside.exists() else (shutil.which("condor_annexd") or str(beside))


def launcher_text(executable: str, environment: dict[str, str], host_pid: int) -> str:
    """The launcher: into ``host_pid``'s root (the host's files: this checkout's venv), staying
    on the submit host's network (the CM namespace, where it reaches the schedd), then exec
    condor_annexd with exactly ``environment`` (the master's CONDOR_CONFIG names the chroot's
    pool config, a path the host does not have: it is not passed)."""
    env = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(environment.items()))
    env = f"{MARK} {env}"
    return ("#!/bin/sh\n"
            "# condor_annexd under the pool's master (condor_annex local annexd on): the master\n"
            "# runs in the chroot and the CM namespace; the daemon runs in the host's root, on\n"
            "# the CM's network (see condor_annex/providers/local/annexd_master.py).\n"
            f"exec nsenter --target {host_pid:d} --mount --uts --root --wd=/ -- env -i {env} "
            f"{shlex.quote(executable)} \"$@\"\n")


def config_text() -> str:
    """The master's configuration for ANNEXD."""
    return ("# condor_annexd under the pool's master (condor_annex local annexd on)\n"
            "DAEMON_LIST = $(DAEMON_LIST) ANNEXD\n"
            f"ANNEXD = {LAUNCHER}\n"
            # Not a DaemonCore daemon.  With DC_DAEMON_LIST undefined this master takes every
            # daemon for one (it passed -f and made a shared-port socket for it, which it then
            # found taken when it restarted the daemon): list the pool's own daemons.
            "DC_DAEMON_LIST = MASTER COLLECTOR NEGOTIATOR SCHEDD SHARED_PORT\n")


def master_pid() -> int | None:
    """The pool master's pid: the ``condor_master`` whose environment names the central
    manager's configuration (read from /proc)."""
    want = f"CONDOR_CONFIG={CM_DIR}/etc/condor_config".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "condor_master":
                continue
            if want in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
        except OSError:
            continue   # gone meanwhile
    return None


def _reconfig() -> None:
    """SIGHUP to the pool's master: DaemonCore reconfigures on it, as on ``condor_reconfig``
    (which the pool's security would have us authenticate for: root is its owner here)."""
    pid = master_pid()
    if pid is None:
        raise RuntimeError("the local pool's condor_master is not running; run "
                           "'condor_annex local up'")
    os.kill(pid, signal.SIGHUP)


#: The daemon's identity in the pool (``*@annex`` may advertise to the collector).
IDENTITY = "annexd@annex"


def mint_token(state_dir: Path) -> Path:
    """Mint the daemon's IDTOKEN into ``state_dir/annexd/tokens.d`` (mode 600); returns the
    directory.

    Raises:
        subprocess.CalledProcessError: condor_token_create failed.
    """
    from condor_annex.providers.local.central_manager import TOKEN_COMMAND
    directory = state_dir / "annexd" / "tokens.d"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = subprocess.run([*shlex.split(TOKEN_COMMAND), "-identity", IDENTITY],
                           check=True, capture_output=True, text=True).stdout
    path = directory / "annexd"
    path.touch(mode=0o600)
    path.write_text(token)   # never printed nor logged
    return directory


def enable(host_pid: int, environment: dict[str, str] | None = None, *,
           token_dir: Path | None = None) -> None:
    """Add ANNEXD to the pool master's DAEMON_LIST and reconfigure it.

    Args:
        host_pid: a process of the host (root and network) alive while the pool is: the local
            cloud's daemon.
        environment: the daemon's environment; default :data:`PASSED` from this process.
        token_dir: a directory holding the daemon's IDTOKEN (:func:`mint_token`), or None.

    Raises:
        RuntimeError: the pool's master is not running.
    """
    if enabled():
        # A running daemon keeps the environment it started with: stop it first.
        disable()
        time.sleep(2)
    env = environment if environment is not None else \
        {k: os.environ[k] for k in PASSED if os.environ.get(k)}
    if token_dir is not None:
        env.update({"_CONDOR_SEC_TOKEN_DIRECTORY": str(token_dir),
                    "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
                    "_CONDOR_SEC_CLIENT_AUTHENTICATION": "REQUIRED"})
    launcher = _host(LAUNCHER)
    launcher.parent.mkdir(parents=True, exist_ok=True)
    launcher.write_text(launcher_text(annexd_executable(), env, host_pid))
    launcher.chmod(0o755)
    _host(CONFIG).write_text(config_text())
    _reconfig()


def disable(wait_s: float = 10.0) -> None:
    """Take ANNEXD out of DAEMON_LIST (the master stops it with SIGTERM), wait up to
    ``wait_s`` seconds for it to exit, and remove the launcher.  A daemon still running then
    (the master gone first: the daemon has a process group of its own, so it outlives the
    pool) is sent SIGTERM, then SIGKILL."""
    config = _host(CONFIG)
    if config.exists():
        config.unlink()
        if master_pid() is not None:
            _reconfig()
    _host(LAUNCHER).unlink(missing_ok=True)
    deadline = time.monotonic() + wait_s
    while daemons() and time.monotonic() < deadline:
        time.sleep(0.2)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in daemons():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1)


def daemons() -> list[int]:
    """Pids of condor_annexd processes this module's launcher started (their environment
    carries :data:`MARK`)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if MARK.encode() in (proc / "environ").read_bytes().split(b"\0") and \
                    b"condor_annexd" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def enabled() -> bool:
    """True when ANNEXD is in the pool master's configuration."""
    return _host(CONFIG).exists()
