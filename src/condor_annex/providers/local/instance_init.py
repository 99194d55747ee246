"""The local cloud's stand-in init: PID 1 of every local instance (stdlib only).

Copied into the local cloud's stock image layer (``/usr/lib/condor-annex-local/init.py``) and
run by the instance's own python3 (the image's; 3.11+) as PID 1 of the instance's PID namespace,
with stdin/stdout/stderr on ``/dev/console`` (the instance's console, which the local cloud
keeps in its console file).  What systemd does at boot on EC2's Debian image, reduced to what a
cloud-init bootstrap needs (docs/local-cloud.md says why each piece stands in):

1. ``tmpfiles.d`` (tmpfiles.d(5)): the ``d``/``D`` (directory), ``L`` (symlink) and ``f``
   (empty file) lines of ``/usr/lib/tmpfiles.d`` and ``/etc/tmpfiles.d`` (same file name in /etc
   wins), e.g. HTCondor's ``/run/condor``; ``/run/lock`` (mode 1777) first, as Debian's boot makes
   it.
2. What cloud-init's local stage does at its start: the earlier boot's status is removed
   (:func:`reset_boot_status`) and a cached datasource from another instance (an image made of
   an instance carries it) dropped (:func:`drop_stale_datasource_cache`).
3. cloud-init's network, config and final stages, one after the other (``cloud-init init``,
   ``cloud-init modules --mode config``, ``cloud-init modules --mode final``; cloud-init's boot
   stages documentation).  The local stage (``init --local``) is never run: it would try DHCP on
   the NIC, which is already configured in the instance's network namespace.  Each stage's
   exit status and wall time are printed as ``local-init: ...`` lines.
4. Then it stays up, reaping orphans (every service the ``systemctl`` stand-in starts is
   re-parented here), until SIGTERM, SIGINT or SIGPWR: the ``shutdown``/``poweroff`` stand-ins
   send SIGTERM (the instance powering itself off), and so does the local cloud when EC2
   terminates or stops the instance (an ACPI shutdown).  It then sends SIGTERM to every process
   of the instance, waits up to :data:`STOP_GRACE_S` seconds for them to exit, SIGKILLs what is
   left and exits 0; the instance's PID namespace (and with it everything in it) ends with it.
"""

from __future__ import annotations

import glob
import grp
import json
import os
import pwd
import signal
import subprocess
import sys
import time

#: Seconds processes get between SIGTERM and SIGKILL at power-off (systemd's default stop
#: timeout is 90 s; a condor_master shuts down in about 3 s).
STOP_GRACE_S = 20.0
STAGES = (("init", ["cloud-init", "init"]),
          ("modules:config", ["cloud-init", "modules", "--mode", "config"]),
          ("modules:final", ["cloud-init", "modules", "--mode", "final"]))
#: The root tmpfiles.d paths are taken from and made under (tests use a scratch directory).
TMPFILES_ROOT = "/"
_WAKE = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGPWR}
_STOP = {signal.SIGTERM, signal.SIGINT, signal.SIGPWR}


def say(text: str) -> None:
    """One ``local-init:`` line on the console."""
    sys.stdout.write(f"local-init: {text}\n")
    sys.stdout.flush()


def _ids(user: str, group: str) -> tuple[int, int]:
    try:
        uid = pwd.getpwnam(user).pw_uid if user not in ("", "-") else 0
    except KeyError:
        uid = 0
    try:
        gid = grp.getgrnam(group).gr_gid if group not in ("", "-") else 0
    except KeyError:
        gid = 0
    return uid, gid


def tmpfiles_lines(root: str = "/") -> list[list[str]]:
    """The tmpfiles.d lines (split into fields) in the order systemd-tmpfiles applies files:
    by file name, /etc/tmpfiles.d overriding /usr/lib/tmpfiles.d."""
    files: dict[str, str] = {}
    for d in ("usr/lib/tmpfiles.d", "etc/tmpfiles.d"):
        for p in glob.glob(os.path.join(root, d, "*.conf")):
            files[os.path.basename(p)] = p
    out = []
    for name in sorted(files):
        with open(files[name]) as f:
            for line in f:
                fields = line.split()
                if fields and not fields[0].startswith("#"):
                    out.append(fields)
    return out


def apply_tmpfiles(root: str = "/") -> int:
    """Create what tmpfiles.d asks for (module docstring); returns how many entries made."""
    made = 0
    os.makedirs(os.path.join(root, "run/lock"), exist_ok=True)
    os.chmod(os.path.join(root, "run/lock"), 0o1777)
    for fields in tmpfiles_lines(root):
        kind, target = fields[0].rstrip("!-+="), fields[1] if len(fields) > 1 else ""
        mode = fields[2] if len(fields) > 2 else "-"
        user = fields[3] if len(fields) > 3 else "-"
        group = fields[4] if len(fields) > 4 else "-"
        arg = fields[6] if len(fields) > 6 else ""
        p = os.path.join(root, target.lstrip("/"))
        try:
            if kind in ("d", "D"):
                if not os.path.isdir(p):
                    os.makedirs(p, exist_ok=True)
                    made += 1
                if mode != "-":
                    os.chmod(p, int(mode.lstrip("~:"), 8))
                os.chown(p, *_ids(user, group))
            elif kind == "L" and not os.path.lexists(p):
                os.makedirs(os.path.dirname(p), exist_ok=True)
                os.symlink(arg, p)
                made += 1
            elif kind == "f" and not os.path.exists(p):
                with open(p, "w"):
                    pass
                if mode != "-":
                    os.chmod(p, int(mode.lstrip("~:"), 8))
                os.chown(p, *_ids(user, group))
                made += 1
        except (OSError, ValueError) as e:
            say(f"tmpfiles: {target}: {e}")
    return made


def reset_boot_status(root: str = "/") -> None:
    """Remove cloud-init's ``status.json`` / ``result.json`` of an earlier boot, as its local
    stage does when it starts (``cloud-init status`` and the final stage's exit status describe
    this boot only).  Without the local stage an image's boots inherited the image builder's
    errors: the final stage exited 1 although every module of this boot succeeded."""
    for name in ("status.json", "result.json"):
        try:
            os.unlink(os.path.join(root, "var/lib/cloud/data", name))
        except FileNotFoundError:
            pass


def drop_stale_datasource_cache(root: str = "/") -> str:
    """Do what cloud-init's local stage does with its cached datasource, since the local cloud
    never runs that stage: on EC2, ``cloud-init init --local`` restores
    ``/var/lib/cloud/instance/obj.pkl`` only after the datasource's ``check_instance_id``
    (``existing="check"``), which on EC2 never matches, so an instance booted from an image made
    of another instance fetches its own metadata; the network stage then *trusts* the cache.
    Without the local stage the network stage would trust the image builder's cache and skip
    every per-instance module (user data never run).

    This instance's id is the DMI baseboard asset tag (``/run/local-cloud/dmi.json``; EC2 Nitro
    instances report their id there).

    Returns:
        The previous instance's id when its cache was removed, else "".
    """
    try:
        with open(os.path.join(root, "run/local-cloud/dmi.json")) as f:
            me = json.load(f).get("baseboard-asset-tag", "")
        with open(os.path.join(root, "var/lib/cloud/data/instance-id")) as f:
            before = f.read().strip()
    except (OSError, ValueError):
        return ""
    if not me or not before or me == before:
        return ""
    try:
        os.unlink(os.path.join(root, "var/lib/cloud/instance/obj.pkl"))
    except FileNotFoundError:
        pass
    return before


def _unblock() -> None:
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


class Init:
    """PID 1: the boot sequence, then reaping until power-off."""

    def __init__(self) -> None:
        self.stopping = False

    def spawn(self, argv: list[str]) -> int:
        """Start ``argv`` with the console as its output and an empty signal mask."""
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, preexec_fn=_unblock,
                                env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                             "/usr/bin:/sbin:/bin",
                                     "LANG": "C.UTF-8", "HOME": "/root"}).pid

    def wait_for(self, pid: int | None) -> int | None:
        """Reap children until ``pid`` exits (its exit status) or a stop signal came (None).
        ``pid`` None: only until a stop signal."""
        while True:
            while True:   # reap whatever has exited
                try:
                    done, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    done = 0
                if done == 0:
                    break
                if done == pid:
                    return os.waitstatus_to_exitcode(status)
            info = signal.sigtimedwait(_WAKE, 1.0)
            if info is not None and info.si_signo in _STOP:
                self.stopping = True
                return None

    def boot(self) -> None:
        """tmpfiles.d, then cloud-init's three stages, each timed on the console."""
        made = apply_tmpfiles(TMPFILES_ROOT)
        say(f"tmpfiles.d: {made} entries created")
        reset_boot_status(TMPFILES_ROOT)
        dropped = drop_stale_datasource_cache(TMPFILES_ROOT)
        if dropped:
            say(f"cloud-init: cached datasource of {dropped} dropped (another instance's: "
                "this image was made from it)")
        for name, argv in STAGES:
            t0 = time.monotonic()
            try:
                pid = self.spawn(argv)
            except OSError as e:
                say(f"cloud-init {name}: cannot start: {e}")
                return
            code = self.wait_for(pid)
            if code is None:
                return
            say(f"cloud-init {name}: exit {code} in {time.monotonic() - t0:.2f} s")

    def power_off(self) -> int:
        """SIGTERM everything, wait up to STOP_GRACE_S, SIGKILL the rest; returns 0."""
        say("powering off: stopping every process")
        try:
            os.kill(-1, signal.SIGTERM)
        except ProcessLookupError:
            return 0
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break   # no process left
            if done == 0:
                signal.sigtimedwait({signal.SIGCHLD}, 0.2)
        else:
            say(f"processes left after {STOP_GRACE_S:.0f} s: SIGKILL")
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                pass
        say("power off")
        return 0

    def run(self) -> int:
        """The whole life of the instance; returns init's exit status."""
        for sig in _WAKE:
            signal.signal(sig, lambda *_: None)
        signal.pthread_sigmask(signal.SIG_BLOCK, _WAKE)
        say(f"booting {os.uname().nodename} (python {sys.version.split()[0]})")
        self.boot()
        if not self.stopping:
            say("boot finished; up until powered off")
            self.wait_for(None)
        return self.power_off()


if __name__ == "__main__":
    sys.exit(Init().run())
