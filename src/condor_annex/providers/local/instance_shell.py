"""A shell on a local instance: what SSH (or SSM Session Manager) is to an EC2 instance.

A local instance is a set of namespaces (network, mount, PID, UTS, IPC) whose PID 1 is the
stand-in init (:mod:`.instance_init`); the host sees that init as an ordinary process.  A
command "on the instance" runs in all of its namespaces (``nsenter --target PID --all``), as
the instance's user, with a login's environment (HOME, USER, LOGNAME, SHELL, a PATH with
``/usr/local/bin``), so it sees exactly what a user logged in there would: the instance's root,
host name, addresses, IMDS and processes.

The init is found by its EC2 identity: every boot writes ``/run/local-cloud/dmi.json`` (the DMI
tables the ``dmidecode`` stand-in answers), whose ``baseboard-asset-tag`` is the instance id,
as on EC2 Nitro instances; the init is the process whose innermost PID is 1 and whose root
holds that file.  Emulator-side only: the product never uses this.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

#: The login PATH of an instance user (Debian's /etc/login.defs ENV_PATH plus /usr/local/bin).
LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


def init_pid(instance_id: str, proc: Path = Path("/proc")) -> int | None:
    """The host PID of ``instance_id``'s init, or None when it is not running (not booted,
    powered off)."""
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            nspid = next((line.split()[1:] for line in status.splitlines()
                          if line.startswith("NSpid:")), [])
            if len(nspid) < 2 or nspid[-1] != "1":
                continue
            dmi = json.loads((entry / "root/run/local-cloud/dmi.json").read_text())
        except (OSError, ValueError, StopIteration):
            continue
        if dmi.get("baseboard-asset-tag") == instance_id:
            return int(entry.name)
    return None


def _passwd_entry(pid: int, user: str) -> tuple[str, str]:
    """(home, shell) of ``user`` in the instance's own /etc/passwd."""
    with open(f"/proc/{pid}/root/etc/passwd") as f:
        for line in f:
            fields = line.rstrip("\n").split(":")
            if len(fields) >= 7 and fields[0] == user:
                return fields[5], fields[6] or "/bin/sh"
    raise KeyError(user)


def shell_argv(instance_id: str, argv: list[str], *, user: str = "root") -> list[str]:
    """The host command line that runs ``argv`` on the instance as ``user``.

    Raises:
        LookupError: the instance is not running, or has no such user (one line).
    """
    pid = init_pid(instance_id)
    if pid is None:
        raise LookupError(f"{instance_id} is not running on the local cloud")
    try:
        home, shell = _passwd_entry(pid, user)
    except (KeyError, OSError):
        raise LookupError(f"{instance_id} has no user {user!r}") from None
    env = [f"HOME={home}", f"USER={user}", f"LOGNAME={user}", f"SHELL={shell}",
           f"PATH={LOGIN_PATH}", "LANG=C.UTF-8"]
    # runuser (util-linux) drops to the user without PAM's session stack; env -i gives the
    # login's environment, not the caller's (no host variables leak onto the instance).
    # The home is entered inside the instance's mount namespace (nsenter's --wd opens its
    # directory on the host's side).
    inner = ["env", "-i", *env, "sh", "-c", 'cd "$HOME" 2>/dev/null; exec "$@"', "sh", *argv]
    if user != "root":
        inner = ["runuser", "-u", user, "--", *inner]
    return ["nsenter", f"--target={pid}", "--mount", "--root", "--wd", "--uts", "--ipc", "--net", "--pid",
            "--", *inner]


def run_on(instance_id: str, argv: list[str], *, user: str = "root", timeout_s: float = 300,
           input_text: str | None = None) -> subprocess.CompletedProcess:
    """Run ``argv`` on the instance as ``user``; its output captured (text).

    Raises:
        LookupError: see :func:`shell_argv`.
        subprocess.TimeoutExpired: it ran longer than ``timeout_s`` seconds.
    """
    if os.geteuid() != 0:
        raise LookupError("entering an instance's namespaces needs root")
    # cwd "/": a directory that exists on the instance too (nsenter keeps the cwd path).
    return subprocess.run(shell_argv(instance_id, argv, user=user), capture_output=True, cwd="/",
                          text=True, timeout=timeout_s, input=input_text,
                          stdin=None if input_text is not None else subprocess.DEVNULL)
