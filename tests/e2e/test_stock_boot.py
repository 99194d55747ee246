"""A stock image joins the pool through real cloud-init, on the local cloud, driven by the CLI.

``condor_annex setup``, then ``condor_annex create stock --count 2 --image debian-13 --wait``:
each instance boots the local cloud's debian-13 stock AMI (resolved through its public SSM
parameter) in its own overlay root, where the stand-in init runs cloud-init's stages on the
bootstrap the product rendered (install step a no-op, agent fetched from the setup bucket,
unit enabled through systemctl).  The test fails if a node does not join, if ``condor_status``
lacks its slot, if no job runs on each node, if the console (GetConsoleOutput, as
``condor_annex logs`` reads it) lacks cloud-init's own "finished" line or the agent's lines, or
if ``off`` leaves an instance, an overlay mount or a namespace behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local import jobs as local_jobs
from condor_annex.providers.local import netns
from condor_annex.providers.local.cloud import STATE_DIR

pytestmark = pytest.mark.e2e
CLI = str(Path(sys.executable).with_name("condor_annex"))


def cli(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    p = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout_s,
                       env=dict(os.environ))
    assert p.returncode == 0, f"condor_annex {' '.join(args)}: exit {p.returncode}\n" \
                              f"{p.stdout}\n{p.stderr}"
    return p


def _alive(ec2, name: str) -> list[str]:
    r = ec2.describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName", "Values": [name]},
                                        {"Name": "instance-state-name",
                                         "Values": ["pending", "running"]}])
    return [i["InstanceId"] for res in r["Reservations"] for i in res["Instances"]]


def _overlay_mounts() -> str:
    """Every overlay mount of the machine that belongs to a local instance, as findmnt sees
    them from the host (instances' mounts live in their own mount namespaces: none)."""
    p = subprocess.run(["findmnt", "-rn", "-t", "overlay", "-o", "TARGET"],
                       capture_output=True, text=True)
    return "\n".join(line for line in p.stdout.splitlines() if str(STATE_DIR) in line)


def _instance_namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.startswith(netns.prefix() + "i")]


def test_stock_debian_13_nodes_join_through_cloud_init_and_off_leaves_nothing(local_cloud):
    ctx = local_cloud
    ec2 = make_client(ctx.aws, "ec2")
    cli("setup")
    t0 = time.monotonic()
    cli("create", "stock", "--count", "2", "--image", "debian-13", "--duration", "20m",
        "--idle", "10m", "--no-owner", "--wait", "--wait-timeout", "4m")
    join_s = time.monotonic() - t0
    ids = _alive(ec2, "stock")
    assert len(ids) == 2

    # Both instances booted the local debian-13 stock AMI (the public parameter's value).
    ami = make_client(ctx.aws, "ssm").get_parameter(
        Name="/aws/service/debian/release/13/latest/amd64")["Parameter"]["Value"]
    images = {i["ImageId"] for res in ec2.describe_instances(InstanceIds=ids)["Reservations"]
              for i in res["Instances"]}
    assert images == {ami}

    # HTCondor's own view: each instance's startd has a slot in the pool.
    listed = local_jobs.condor_status_annex("stock")
    assert {iid for _, iid in listed} == set(ids), listed

    # A job runs on each node (the schedd records each job's machine: EC2InstanceID).
    cluster = local_jobs.submit("stock", 8, sleep_s=5)
    deadline = time.monotonic() + 180
    while len(done := [r for r in local_jobs.jobs(cluster) if r.status == 4]) < 8:
        assert time.monotonic() < deadline, local_jobs.jobs(cluster)
        time.sleep(1)
    assert {r.instance_id for r in done} == set(ids), done

    for iid in ids:
        console = ec2.get_console_output(InstanceId=iid)["Output"]   # boto3 decodes base64
        assert "Cloud-init v. " in console and " finished at " in console, console[-3000:]
        assert "Datasource DataSourceEc2" in console
        # The bootstrap's lines; the chroot has every package it installs (no mirror here).
        assert "condor-annex: install: htcondor, python3-boto3 and iptables are already " \
               "installed" in console, console[-3000:]
        assert "starting condor_master" in console or "condor_master" in console, \
            console[-3000:]                                          # the agent's lines
        assert "local-init: cloud-init modules:final: exit 0" in console, console[-3000:]
    # `condor_annex logs` shows the same console output.
    logs = cli("logs", "stock").stdout
    assert logs.count("Cloud-init v. ") >= 2 and ids[0] in logs and ids[1] in logs
    print(f"\n[stock boot] 2 nodes joined in {join_s:.1f} s (create --wait, CLI)")

    cli("off", "stock", "--wait")
    deadline = time.monotonic() + 60
    while (_alive(ec2, "stock") or _instance_namespaces()
           or any((STATE_DIR / "instances" / i / "upper").exists() for i in ids)) \
            and time.monotonic() < deadline:
        time.sleep(1)
    assert _alive(ec2, "stock") == []
    assert _instance_namespaces() == []
    assert not any((STATE_DIR / "instances" / i / "upper").exists() for i in ids)
    assert _overlay_mounts() == ""
    # No process of an instance is left on the machine (their init and everything under it).
    left = subprocess.run(["pgrep", "-f", "condor_annex.providers.local.instance_root"],
                          capture_output=True, text=True).stdout.split()
    assert left == []


def test_image_build_makes_a_prepared_image_whose_boots_skip_install(local_cloud):
    """``condor_annex image build`` on the local cloud: the builder boots debian-13 with the build
    bootstrap, powers off, CreateImage makes the prepared image (the builder's root as its layer),
    the builder is terminated, ANNEX_DEFAULT_ODI_IMAGE_ID records it; a create without --image
    boots it, its console says the install was skipped, and the node joins."""
    from condor_annex import config
    from condor_annex.model import TAG_ANNEX_IMAGE
    from condor_annex.providers.aws.image_builder import TAG_IMAGE_BUILDER

    ctx = local_cloud
    ec2 = make_client(ctx.aws, "ec2")
    cli("setup")
    try:
        out = cli("image", "build", "--json", timeout_s=600).stdout
        import json
        built = json.loads(out)
        image = ec2.describe_images(ImageIds=[built["image_id"]])["Images"][0]
        assert {t["Key"]: t["Value"] for t in image["Tags"]}[TAG_ANNEX_IMAGE]
        builders = [i for r in ec2.describe_instances(Filters=[
            {"Name": "tag-key", "Values": [TAG_IMAGE_BUILDER]}])["Reservations"]
            for i in r["Instances"]]
        assert [b["State"]["Name"] for b in builders] in (["terminated"], ["shutting-down"])
        assert config.read_knobs()["ANNEX_DEFAULT_ODI_IMAGE_ID"] == built["image_id"]

        cli("create", "prepared", "--count", "1", "--duration", "20m", "--idle", "10m",
            "--no-owner", "--wait", "--wait-timeout", "4m")
        (iid,) = _alive(ec2, "prepared")
        inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert inst["ImageId"] == built["image_id"]
        console = ec2.get_console_output(InstanceId=iid)["Output"]
        assert "condor-annex: prepared image (htcondor:AnnexImage=" in console, console[-3000:]
        assert "condor-annex: install:" not in console and "fetching" not in console
        # cloud-init judges this boot alone (not the builder's powered-off one).
        assert "local-init: cloud-init modules:final: exit 0" in console, console[-3000:]
        assert "starting condor_master" in console, console[-3000:]
        assert {i for _, i in local_jobs.condor_status_annex("prepared")} == {iid}
        cli("off", "prepared", "--wait")
    finally:
        config.remove_block("image")
