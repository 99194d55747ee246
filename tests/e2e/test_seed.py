"""A whole pool from one seed (issue 13 item 2), as a user does it on the local cloud.

``condor_annex seed create`` launches the seed (an on-demand instance that boots through
cloud-init into central manager + submit node + condor_annexd); then, from a shell on the seed
as its admin user, ``condor_annex create`` grows the seed's own pool and a job submitted on the
seed runs on the annex's node; ``seed off`` ends the annex and the seed, leaving no instance.
Bad input (a second seed, a region without setup) is refused in one line, exit 2, nothing made.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.instance_shell import run_on

from tests.e2e.helpers import cli, wait

pytestmark = pytest.mark.e2e

ANNEX = "seeded"
JOB = """executable = /bin/sh
arguments = "-c 'hostname; sleep 2'"
output = job.$(Process).out
error = job.$(Process).err
log = job.log
requirements = (AnnexName =?= "seeded")
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
request_memory = 64
queue 1
"""


def _live(ec2) -> list[dict]:
    r = ec2.describe_instances(Filters=[{"Name": "instance-state-name",
                                         "Values": ["pending", "running", "stopping",
                                                    "stopped", "shutting-down"]}])
    return [i for res in r["Reservations"] for i in res["Instances"]]


def _on_seed(seed: str, command: str, timeout_s: float = 300):
    """Run ``command`` (sh) on the seed as its admin user, as a user logged in there would."""
    return run_on(seed, ["sh", "-c", command], user="admin", timeout_s=timeout_s)


def _ok(p, what: str) -> str:
    assert p.returncode == 0, f"{what} on the seed: exit {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_seed_grows_its_own_pool_and_seed_off_leaves_nothing(local_cloud):
    ctx = local_cloud
    ec2 = make_client(ctx.aws, "ec2")
    before = {i["InstanceId"] for i in _live(ec2)}

    t0 = time.monotonic()
    created = json.loads(cli("seed", "create", "--json", timeout_s=900).stdout)
    seed = created["instance_id"]
    print(f"\nseed {seed} ready {created['ready_s']} s after seed create began "
          f"(command {time.monotonic() - t0:.1f} s)")
    assert created["ready"] is True, created
    [described] = [i for i in _live(ec2) if i["InstanceId"] == seed]
    assert "InstanceLifecycle" not in described, "a seed must be on-demand, never spot"
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert "htcondor:Seed" in tags

    # A second seed, and a seed where setup never ran: one line each, exit 2, nothing made.
    second = cli("seed", "create", check=False, timeout_s=120)
    assert second.returncode == 2, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1 and seed in second.stderr
    elsewhere = cli("seed", "create", "--region", "us-west-2", check=False, timeout_s=120)
    assert elsewhere.returncode == 2, elsewhere.stderr
    assert "setup" in elsewhere.stderr and len(elsewhere.stderr.strip().splitlines()) == 1
    assert {i["InstanceId"] for i in _live(ec2)} == before | {seed}

    status = json.loads(cli("seed", "status", "--json").stdout)["seeds"]
    assert [s["instance_id"] for s in status] == [seed] and status[0]["ready"]

    # On the seed: its own pool answers, condor_annexd runs as the admin user.
    pool = _ok(_on_seed(seed, "condor_status -collector -af Name"), "condor_status")
    assert pool.strip()
    ps = _ok(run_on(seed, ["ps", "-o", "user=,args=", "-C", "condor_annexd", "-C", "python3"]),
             "ps")
    assert re.search(r"^admin\s+.*condor_annexd", ps, re.M), ps

    # The seed's admin grows the seed's own pool and runs a job on it.
    grown = _on_seed(seed, f"condor_annex create {ANNEX} --count 1 --duration 1h --idle 10m "
                           "--wait --json", timeout_s=600)
    joined = json.loads(_ok(grown, "condor_annex create"))
    print(f"annex {ANNEX} from the seed: {joined['joined']} joined in {joined['join_seconds']} s")
    submitted = _ok(_on_seed(seed, f"mkdir -p job && cd job && cat > job.sub <<'EOF'\n{JOB}EOF\n"
                                   "condor_submit job.sub"), "condor_submit")
    cluster = re.search(r"submitted to cluster (\d+)", submitted).group(1)

    def done():
        out = _on_seed(seed, f"condor_history {cluster} -af JobStatus "
                             "MachineAttrAnnexName0").stdout.split()
        return out if out[:1] == ["4"] else None
    t1 = time.monotonic()
    status_row = wait("the job to complete on the annex node", done, 300, step_s=3)
    print(f"job submitted on the seed completed on the annex {time.monotonic() - t1:.1f} s "
          "after condor_submit")
    assert status_row[1] == ANNEX, status_row
    annex_nodes = [i for i in _live(ec2)
                   if {"Key": "htcondor:AnnexName", "Value": ANNEX} in i.get("Tags", [])]
    assert annex_nodes, "the annex's node is gone before seed off"
    owner = {t["Key"]: t["Value"] for t in annex_nodes[0]["Tags"]}["htcondor:AnnexOwner"]
    assert ":role/" in owner, f"annexes made on the seed are owned by its role, not {owner}"

    t2 = time.monotonic()
    off = json.loads(cli("seed", "off", "--json", timeout_s=600).stdout)
    print(f"seed off: {time.monotonic() - t2:.1f} s")
    assert off["seed"] == seed and off["annexes_ended"] == [ANNEX]
    assert wait("no instance left", lambda: not ({i["InstanceId"] for i in _live(ec2)}
                                                   - before), 120)
    assert json.loads(cli("seed", "status", "--json").stdout)["seeds"] == []
