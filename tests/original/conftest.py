"""Side by side with HTCondor's own ``condor_annex`` 23.9.6 (``/usr/bin/condor_annex`` in the
trixie chroot ``make test`` installs), against one moto endpoint: the machinery of
:mod:`benchmarks.original` (moto + a counting proxy, AWS host names mapped to loopback in the
chroot's ``/etc/hosts`` and restored afterwards, a bare collector in the chroot, the original
run as the chroot's ``annexuser``).  No local cloud, no network namespace.

Needs root (``chroot``); the chroot is built once and cached (about 50 s cold).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class SideBySide:
    """The original's environment and ours, on one endpoint and one collector.

    Attributes:
        orig: :class:`benchmarks.original.Original` (the chroot, its collector, its config).
        tools: a directory holding ``condor_status``, which runs the chroot's as the original
            runs it (put first on our ``PATH``).
        ids: annex -> its instance ids, sorted.
        empty: what each tool printed for ``-status`` before any annex existed:
            {"original"|"ours": (stdout, stderr, exit status)}.
    """

    orig: object
    tools: Path
    ids: dict[str, list[str]] = field(default_factory=dict)
    empty: dict[str, tuple[str, str, int]] = field(default_factory=dict)


def _slot(iid: str, annex: str, slot: int, *, claimed: bool = False) -> str:
    """A startd ad as an annex node's slot advertises it (the attributes condor_status's
    default table and ``-annex`` read)."""
    now = int(time.time())
    host = f"ip-10-0-{int(iid[-4:], 16) % 250}-{slot}.ec2.internal"
    state, activity = ("Claimed", "Busy") if claimed else ("Unclaimed", "Idle")
    return f'''MyType = "Machine"
TargetType = "Job"
Name = "slot{slot}@{host}"
Machine = "{host}"
MyAddress = "<127.0.0.1:9618?noUDP>"
StartdIpAddr = "<127.0.0.1:9618?noUDP>"
OpSys = "LINUX"
Arch = "X86_64"
State = "{state}"
Activity = "{activity}"
CondorLoadAvg = {1.0 if claimed else 0.0}
LoadAvg = {1.0 if claimed else 0.0}
Memory = 3840
Cpus = 1
SlotType = "Static"
EnteredCurrentActivity = {now - 125}
EnteredCurrentState = {now - 125}
MyCurrentTime = {now}
LastHeardFrom = {now}
AnnexName = "{annex}"
IsAnnex = true
EC2InstanceID = "{iid}"
'''


@pytest.fixture
def slot_ad():
    """The startd ad maker the fixture advertises with: ``slot_ad(instance_id, annex, n)``."""
    return _slot


@pytest.fixture(scope="module")
def side_by_side():
    """moto + proxy, our setup, the original's config, then annexes made by our own create:

    * alpha: 6 instances: 1 terminated, 1 in the pool (2 slots, one claimed), 4 running;
    * beta: 2 instances: 1 stopped, 1 in the pool;
    * gamma: 1 instance, terminated.
    """
    if os.geteuid() != 0:
        pytest.skip("the original runs in the chroot (needs root)")
    from benchmarks import original
    from condor_annex.providers.aws.session import make_client
    from condor_annex.service.context import Context

    with original.side_by_side(lambda _msg: None) as (orig, _proxy, proxy_url):
        home = Path(os.environ["CONDOR_ANNEX_USER_CONFIG"]).parent
        original.fresh_account(orig, proxy_url, home)
        tools = home / "htcondor-tools"
        tools.mkdir()
        orig.tool_wrapper("condor_status", tools)
        side = SideBySide(orig=orig, tools=tools)
        for who, p in (("original", orig.completed("-status")),
                       ("ours", original.ours_completed("-status"))):
            side.empty[who] = (p.stdout, p.stderr, p.returncode)
        for annex, count in (("alpha", 6), ("beta", 2), ("gamma", 1)):
            p = original.ours_completed("-annex-name", annex, "-count", str(count), "-yes")
            assert p.returncode == 0, p.stdout + p.stderr
        ec2 = make_client(Context.load().aws, "ec2")
        for r in ec2.describe_instances()["Reservations"]:
            for i in r["Instances"]:
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                side.ids.setdefault(tags["htcondor:AnnexName"], []).append(i["InstanceId"])
        for ids in side.ids.values():
            ids.sort()
        alpha, beta = side.ids["alpha"], side.ids["beta"]
        ec2.terminate_instances(InstanceIds=[alpha[0], side.ids["gamma"][0]])
        ec2.stop_instances(InstanceIds=[beta[0]])
        orig.advertise("UPDATE_STARTD_AD", "\n".join([
            _slot(alpha[1], "alpha", 1, claimed=True), _slot(alpha[1], "alpha", 2),
            _slot(beta[1], "beta", 1)]))
        yield side
