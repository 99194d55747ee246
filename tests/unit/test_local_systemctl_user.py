"""The local cloud's ``systemctl`` stand-in runs a service as its ``User=`` / ``Group=``
(systemd.exec(5)): the seed's ``condor-annexd.service`` has ``User=admin``.

Run as the instance runs it (``python3 systemctl ARGS``) against a scratch root
(``STANDIN_ROOT``) holding its own ``/etc/passwd`` and ``/etc/group``.  The scratch root is a
world-traversable directory under /tmp (pytest's tmp dirs are 0700: a dropped-privilege service
could not enter them).  The service prints what it is (uid, gids, cwd, environment) to its
journal file, which the stand-in opens as root before dropping privileges.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from condor_annex.providers.local import instance_root

SYSTEMCTL = Path(instance_root.__file__).with_name("standins") / "systemctl"
PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="changing uid needs root")

# What the service process is, as JSON on stdout (its journal file).
WHOAMI = ("import json, os; print(json.dumps({'uid': os.getuid(), 'euid': os.geteuid(), "
          "'gid': os.getgid(), 'groups': sorted(os.getgroups()), 'cwd': os.getcwd(), "
          "'env': dict(os.environ)}), flush=True)")

PASSWD = """root:x:0:0:root:/root:/bin/bash
admin:x:4321:4321:condor-annex seed admin:/home/admin:/bin/bash
"""
GROUP = """root:x:0:
admin:x:4321:
adm:x:4:admin
sudo:x:27:other,admin
annex:x:4500:
users:x:100:other
"""


@pytest.fixture
def root():
    d = Path(tempfile.mkdtemp(prefix="standin-user-"))
    d.chmod(0o755)
    try:
        (d / "etc/systemd/system").mkdir(parents=True)
        (d / "etc/passwd").write_text(PASSWD)
        (d / "etc/group").write_text(GROUP)
        (d / "dev").mkdir()
        (d / "home/admin/work").mkdir(parents=True)
        for p in (d / "home/admin", d / "home/admin/work"):
            os.chown(p, 4321, 4321)
        (d / "root").mkdir(mode=0o700)
        yield d
    finally:
        subprocess.run([PYTHON, str(SYSTEMCTL), "stop", "who"], env=_env(d), timeout=30,
                       capture_output=True)
        shutil.rmtree(d)


def _env(root: Path) -> dict:
    return {"PATH": os.environ["PATH"], "STANDIN_ROOT": str(root)}


def systemctl(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(SYSTEMCTL), *args], capture_output=True, text=True,
                          timeout=30, env=_env(root))


def write_unit(root: Path, service_lines: str) -> None:
    (root / "etc/systemd/system/who.service").write_text(
        f"[Service]\n{service_lines}\nExecStart={PYTHON} -c \"{WHOAMI}\"\n")


def who(root: Path, timeout_s: float = 10) -> dict:
    """What the started service printed about itself."""
    journal = root / "var/log/standin-journal/who.service.log"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if journal.exists() and journal.read_text().endswith("\n"):
            text = journal.read_text()
            try:
                return json.loads(text.splitlines()[-1])
            except ValueError:
                raise AssertionError(f"the service failed: {text}") from None
        time.sleep(0.05)
    raise AssertionError("the service never ran")


def test_user_runs_the_service_as_that_user_with_its_groups_and_environment(root):
    write_unit(root, "User=admin\nWorkingDirectory=~")
    p = systemctl(root, "start", "who")
    assert p.returncode == 0, p.stderr
    me = who(root)
    assert (me["uid"], me["euid"], me["gid"]) == (4321, 4321, 4321)
    assert me["groups"] == [4, 27, 4321]   # initgroups: adm, sudo, and its own; not users
    assert me["cwd"] == str(root / "home/admin")
    assert {k: me["env"].get(k) for k in ("HOME", "USER", "LOGNAME", "SHELL")} == {
        "HOME": "/home/admin", "USER": "admin", "LOGNAME": "admin", "SHELL": "/bin/bash"}


def test_without_user_the_service_runs_as_root_with_no_user_variables(root):
    write_unit(root, "")
    assert systemctl(root, "start", "who").returncode == 0
    me = who(root)
    assert (me["uid"], me["gid"]) == (0, 0)     # control for the test above
    assert me["cwd"] == str(root)
    assert "USER" not in me["env"] and "HOME" not in me["env"]


def test_group_overrides_the_primary_group_and_environment_overrides_home(root):
    write_unit(root, "User=4321\nGroup=annex\nEnvironment=HOME=/srv\n"
                     "WorkingDirectory=/home/admin/work")
    assert systemctl(root, "start", "who").returncode == 0
    me = who(root)
    assert (me["uid"], me["gid"]) == (4321, 4500)
    assert me["groups"] == [4, 27, 4500]        # initgroups(user, Group=)
    assert me["env"]["HOME"] == "/srv" and me["env"]["USER"] == "admin"
    assert me["cwd"] == str(root / "home/admin/work")


def test_optional_missing_working_directory_starts_in_root(root):
    write_unit(root, "User=admin\nWorkingDirectory=-/no/such/dir")
    assert systemctl(root, "start", "who").returncode == 0
    assert who(root)["cwd"] == str(root)


@pytest.mark.parametrize("setting, status", [("User=nobody-here", "217/USER"),
                                             ("User=admin\nGroup=nogroup", "216/GROUP")])
def test_an_unknown_user_or_group_fails_the_start_in_one_line(root, setting, status):
    write_unit(root, setting)
    p = systemctl(root, "start", "who")
    assert p.returncode == 1
    assert len(p.stderr.strip().splitlines()) == 1 and status in p.stderr
    assert systemctl(root, "is-active", "who").returncode == 3
    assert not (root / "var/log/standin-journal/who.service.log").exists()
