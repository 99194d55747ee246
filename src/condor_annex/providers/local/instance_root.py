"""Per-instance roots of the local cloud: an overlay over the image, private namespaces, a console.

Host side (:class:`InstanceRoot`): each instance gets ``<state dir>/instances/<instance id>/``
holding ``upper/`` and ``work/`` (the overlay's writable layer: everything the instance writes,
like an EBS root volume), ``merged/`` (the mount point) and ``console.log`` (its serial console,
served by GetConsoleOutput).  The overlay's lower layers are the AMI's image layers (top first:
layers made by CreateImage, then the stock image layer with the stand-ins) over the trixie
chroot.  ``upper/`` is kept while the instance is stopped (CreateImage copies it; a start boots
over it again) and removed when it is terminated; everything goes at local-cloud shutdown.

Instance side (``python -m condor_annex.providers.local.instance_root ...``, run by the local
cloud as ``ip netns exec <instance ns> <python> -m ...``, see :meth:`InstanceRoot.command`): the
launcher unshares a mount, PID and UTS namespace (unshare(2)) and forks the instance's PID 1,
which mounts, all inside that private mount namespace (so the host's ``findmnt`` never sees
them and they vanish with the instance's last process):

* the overlay on ``merged/`` (overlayfs: ``lowerdir=L1:L2:...,upperdir=,workdir=``);
* ``/proc`` (this PID namespace's), ``/sys`` (a sysfs mounted inside the instance's network
  namespace, so ``/sys/class/net/eth0/address`` is the instance's own NIC: cloud-init's EC2
  datasource matches it with IMDS ``mac``), read-only;
* a minimal ``/dev`` on tmpfs: null, zero, full, random, urandom, tty, a private devpts
  (``pts/``, ``ptmx``), ``shm/``, ``fd`` links, and ``console`` = a pseudo-terminal whose other
  end the launcher copies into ``console.log`` (never the host's console).  A pty rather than
  the file itself: programs open /dev/console with ``O_TRUNC`` (cloud-init's ``open(..., "w")``)
  which on a character device truncates nothing but would empty a plain file;
* ``/run`` on tmpfs, with ``/run/local-cloud/dmi.json`` (the EC2 identity the ``dmidecode``
  stand-in reports);

then sets the host name, chroots into ``merged/`` and executes the image's init
(:mod:`condor_annex.providers.local.instance_init`) as PID 1 with the console as its terminal.
The launcher (in the host's PID namespace) forwards SIGTERM/SIGINT to that PID 1, copies the
console, and exits with PID 1's status: its exit is the instance powering off.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import select
import termios
from pathlib import Path

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
#: Where the image layer puts the stand-in init (see :mod:`.images`).
INIT_PATH = "/usr/lib/condor-annex-local/init.py"
#: The console's size EC2 keeps for GetConsoleOutput (64 KiB); the file is cut back to
#: :data:`CONSOLE_KEEP_BYTES` when it passes :data:`CONSOLE_MAX_BYTES`.
CONSOLE_MAX_BYTES = 1024 * 1024
CONSOLE_KEEP_BYTES = 256 * 1024
_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8),
            ("urandom", 1, 9), ("tty", 5, 0))
_libc = ctypes.CDLL(None, use_errno=True)


def instances_dir(state_dir: Path) -> Path:
    """``<state dir>/instances``: one directory per instance."""
    return state_dir / "instances"


def console_path(state_dir: Path, instance_id: str) -> Path:
    """The console file of ``instance_id`` (may not exist)."""
    return instances_dir(state_dir) / instance_id / "console.log"


class InstanceRoot:
    """One instance's overlay root on the host (module docstring).

    Args:
        state_dir: the local cloud's state dir.
        instance_id: ``i-...``.
        layers: lower layers, top first, ending with the chroot.
    """

    def __init__(self, state_dir: Path, instance_id: str, layers: list[Path]) -> None:
        self.instance_id = instance_id
        self.base = instances_dir(state_dir) / instance_id
        self.upper, self.work = self.base / "upper", self.base / "work"
        self.merged, self.console = self.base / "merged", self.base / "console.log"
        self.layers = [Path(p) for p in layers]

    def prepare(self) -> None:
        """Create the directories (an existing ``upper/`` is kept: a started instance boots
        over what it wrote before it was stopped) and the console file."""
        for d in (self.upper, self.work, self.merged):
            d.mkdir(parents=True, exist_ok=True)
        self.console.touch()

    def command(self, netns_name: str, hostname: str, dmi: dict[str, str]) -> list[str]:
        """The argv that boots the instance in network namespace ``netns_name``."""
        return ["ip", "netns", "exec", netns_name, sys.executable, "-m",
                "condor_annex.providers.local.instance_root",
                "--lower", ":".join(str(p) for p in self.layers), "--upper", str(self.upper),
                "--work", str(self.work), "--merged", str(self.merged),
                "--console", str(self.console), "--hostname", hostname,
                "--dmi", json.dumps(dmi)]

    def upper_bytes(self) -> int:
        """Bytes the instance wrote (its overlay upper dir; ``du -sb``)."""
        p = subprocess.run(["du", "-sb", str(self.upper)], capture_output=True, text=True)
        return int(p.stdout.split()[0]) if p.returncode == 0 and p.stdout else 0

    def remove(self, keep_console: bool = True) -> None:
        """Delete the writable layer (terminated instance); the console file stays unless
        ``keep_console`` is False."""
        for d in (self.upper, self.work, self.merged):
            shutil.rmtree(d, ignore_errors=True)
        if not keep_console:
            shutil.rmtree(self.base, ignore_errors=True)


def user_data(ec2, instance_id: str) -> bytes | None:
    """The launch's user data, decoded (EC2 DescribeInstanceAttribute ``userData``), or None:
    what IMDS serves at ``user-data``."""
    attr = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    value = (attr.get("UserData") or {}).get("Value")
    return base64.b64decode(value) if value else None


def state(ec2, instance_id: str) -> str:
    """The instance's state name (DescribeInstances); ``terminated`` when it is gone."""
    try:
        return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
            "Instances"][0]["State"]["Name"]
    except Exception:  # noqa: BLE001 - not found (or moto reset): nothing to keep
        return "terminated"


#: The agent's unit and ExecStart (the bootstrap's, docs: the shared design contract).
AGENT_UNIT = "condor-annex-agent.service"
AGENT_EXEC = ("/usr/bin/python3 /usr/local/lib/condor-annex/condor-annex-agent.pyz "
              "$CONDOR_ANNEX_AGENT_ARGS")


def agent_dropin(upper: Path, lease_margin_s: float | None) -> None:
    """The local cloud's ``backstop-off`` injection: a unit drop-in (systemd.unit(5)
    "drop-in") in the instance's upper dir that re-declares the agent's ExecStart with
    ``--lease-margin-s``; ``lease_margin_s`` None removes it."""
    p = upper / "etc/systemd/system" / f"{AGENT_UNIT}.d" / "50-local-cloud.conf"
    if lease_margin_s is None:
        p.unlink(missing_ok=True)
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("# local cloud injection backstop-off\n[Service]\nExecStart=\n"
                 f"ExecStart={AGENT_EXEC} --lease-margin-s {lease_margin_s:g}\n")


def ec2_dmi(instance_id: str, instance_type: str) -> dict[str, str]:
    """The DMI strings an EC2 (Nitro) instance reports, for the ``dmidecode`` stand-in: a
    system UUID starting ``ec2`` (what cloud-init's AWS detection looks for), manufacturer
    "Amazon EC2", product name = the instance type."""
    h = hashlib.sha256(instance_id.encode()).hexdigest()
    uuid = f"ec2{h[:5]}-{h[5:9]}-{h[9:13]}-{h[13:17]}-{h[17:29]}"
    return {"system-uuid": uuid, "system-serial-number": uuid,
            "system-manufacturer": "Amazon EC2", "system-product-name": instance_type,
            "system-version": "Not Specified", "bios-vendor": "Amazon EC2",
            "bios-version": "1.0", "chassis-manufacturer": "Amazon EC2",
            "chassis-asset-tag": "Amazon EC2", "chassis-type": "Other",
            "baseboard-manufacturer": "Amazon EC2", "baseboard-asset-tag": instance_id}


# -- the launcher (runs inside the instance's network namespace) ------------------------------

def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, fstype: str | None, flags: int = 0,
           data: str | None = None) -> None:
    _check(_libc.mount(source.encode(), target.encode(),
                       fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {fstype or 'bind'} {target}")


def _make_dev(dev: str, console_slave: str) -> None:
    _mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k")
    for name, major, minor in _DEVICES:
        os.mknod(f"{dev}/{name}", 0o666 | 0o020000, os.makedev(major, minor))
        os.chmod(f"{dev}/{name}", 0o666)
    os.mkdir(f"{dev}/pts")
    _mount("devpts", f"{dev}/pts", "devpts", MS_NOSUID | MS_NOEXEC,
           "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", f"{dev}/ptmx")
    os.mkdir(f"{dev}/shm")
    _mount("tmpfs", f"{dev}/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    open(f"{dev}/console", "w").close()
    _mount(console_slave, f"{dev}/console", None, MS_BIND)


def _pid1(args: argparse.Namespace, console_slave: str) -> None:
    """The instance's PID 1 before it becomes the image's init (never returns)."""
    try:
        m = args.merged
        _mount("overlay", m, "overlay", 0,
               f"lowerdir={args.lower},upperdir={args.upper},workdir={args.work}")
        _mount("proc", f"{m}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        _mount("sysfs", f"{m}/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
        _make_dev(f"{m}/dev", console_slave)
        _mount("tmpfs", f"{m}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=262144k")
        os.makedirs(f"{m}/run/local-cloud")
        with open(f"{m}/run/local-cloud/dmi.json", "w") as f:
            json.dump(json.loads(args.dmi), f)
        os.sethostname(args.hostname) if hasattr(os, "sethostname") else \
            _check(_libc.sethostname(args.hostname.encode(), len(args.hostname)), "sethostname")
        os.chroot(m)
        os.chdir("/")
        os.setsid()
        fd = os.open("/dev/console", os.O_RDWR)   # becomes the controlling terminal
        for n in (0, 1, 2):
            os.dup2(fd, n)
        if fd > 2:
            os.close(fd)
        os.execve("/usr/bin/python3", ["python3", "-I", INIT_PATH],
                  {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "LANG": "C.UTF-8", "HOME": "/root", "TERM": "vt100"})
    except BaseException as e:  # noqa: BLE001 - the console is where the user looks
        with open(args.console, "a") as f:
            f.write(f"local cloud: the instance could not boot: {e}\n")
        os._exit(1)


class _ConsoleCopy:
    """Appends what the instance writes to its console (the pty's master side) to the console
    file, keeping it bounded.  Run from the launcher's main loop: after unshare(CLONE_NEWPID)
    the launcher cannot start threads (clone(2): CLONE_THREAD with a new PID namespace for
    children is EINVAL)."""

    def __init__(self, master: int, path: str) -> None:
        self.master = master
        self.out = open(path, "ab", buffering=0)

    def pump(self, timeout_s: float) -> bool:
        """Copy what is there within ``timeout_s``; False once the pty is closed (EIO)."""
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:
            return False
        if not data:
            return False
        self.out.write(data)
        if self.out.tell() > CONSOLE_MAX_BYTES:
            with open(self.out.name, "rb") as f:
                f.seek(-CONSOLE_KEEP_BYTES, os.SEEK_END)
                tail = f.read()
            self.out.truncate(0)
            self.out.seek(0)
            self.out.write(tail)
        return True


def launch(argv: list[str] | None = None) -> int:
    """Entry point inside the instance's network namespace (module docstring); returns PID
    1's exit status."""
    p = argparse.ArgumentParser(prog="instance_root")
    for opt in ("--lower", "--upper", "--work", "--merged", "--console", "--hostname", "--dmi"):
        p.add_argument(opt, required=True)
    args = p.parse_args(argv)
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWUTS), "unshare")
    _mount("none", "/", None, MS_REC | MS_PRIVATE)   # nothing we mount propagates out
    master, slave = os.openpty()
    attrs = termios.tcgetattr(slave)
    attrs[1] &= ~termios.OPOST            # no "\n" -> "\r\n": the file reads like a log
    attrs[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    slave_path = os.ttyname(slave)
    pid = os.fork()
    if pid == 0:
        os.close(master)
        _pid1(args, slave_path)
    copier = _ConsoleCopy(master, args.console)

    def forward(sig, _frame) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        copier.pump(0.2)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
    os.close(slave)          # what is left, then EIO
    while copier.pump(0.05):
        pass
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(launch())
