"""An instance of annex A cannot read annex B's bundle (issue 9, item 4), on the local cloud.

From inside A's instance (its network namespace, the node's chroot, the credentials its IMDS
hands it, as the agent gets them), S3 GetObject of A's own bundle succeeds (positive control)
and of B's answers AccessDenied, as AWS evaluates each annex's own role.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from condor_annex.model import AnnexSpec
from condor_annex.providers.local import cloud as local_cloud_mod
from condor_annex.providers.local import netns
from condor_annex.service import annex as svc

pytestmark = pytest.mark.e2e

#: Run inside a node: find its instance id through IMDSv2, then GetObject each key with the
#: instance role's credentials (boto3's own chain, pointed at the local IMDS).
_PROBE = r"""
import json, os, sys, urllib.request
imds, endpoint, bucket = sys.argv[1:4]
keys = sys.argv[4:]
req = urllib.request.Request(imds + "/latest/api/token", method="PUT",
                             headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
token = urllib.request.urlopen(req, timeout=5).read().decode()
iid = urllib.request.urlopen(urllib.request.Request(
    imds + "/latest/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": token}),
    timeout=5).read().decode()
if len(keys) == 0:
    print(json.dumps({"instance": iid})); sys.exit(0)
os.environ.update({"AWS_EC2_METADATA_SERVICE_ENDPOINT": imds,
                   "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv4",
                   "AWS_EC2_METADATA_V1_DISABLED": "true"})
import boto3
from botocore.exceptions import ClientError
s3 = boto3.session.Session(region_name="us-east-1").client("s3", endpoint_url=endpoint)
out = {}
for key in keys:
    try:
        out[key] = "read %d bytes" % len(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as e:
        out[key] = e.response["Error"]["Code"]
print(json.dumps({"instance": iid, "results": out}))
"""


def _in_node(ns: str, *args: str) -> dict:
    imds = f"http://{netns.HUB_ADDR}:{local_cloud_mod.IMDS_PORT}"
    aws = f"http://{netns.HUB_ADDR}:{local_cloud_mod.AWS_PORT}"
    p = subprocess.run(["ip", "netns", "exec", ns, "chroot", str(local_cloud_mod.ROOT), "env",
                        "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
                        "python3", "-c", _PROBE, imds, aws, *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _namespace_of(instance_id: str) -> str:
    errors = []
    for name in sorted(os.listdir("/run/netns")):
        if not name.startswith(netns.prefix() + "i"):
            continue
        try:
            if _in_node(name, "")["instance"] == instance_id:   # no bucket: the id only
                return name
        except (AssertionError, ValueError, subprocess.TimeoutExpired) as e:
            errors.append(f"{name}: {e}")
    pytest.fail(f"no namespace of instance {instance_id}: {errors}")


def test_an_instance_of_annex_a_reads_its_bundle_and_not_annex_b_s(local_cloud):
    ctx = local_cloud
    names = ("e2e-iso-a", "e2e-iso-b")
    for name in names:
        svc.create_annex(ctx, AnnexSpec(name=name, count=1, lease_seconds=900))
    try:
        for name in names:   # each node fetched its own bundle with its own role
            assert svc.wait_for_join(ctx, name, 1, timeout_s=120) == 1
        [a_instance] = [iid for iid, i in ctx.provider(ctx.setup_outputs()).query_instances(
            names[0]).items() if i.alive]
        ns = _namespace_of(a_instance)
        bucket = ctx.setup_outputs().bucket

        got = _in_node(ns, bucket, "config-e2e-iso-a.tar.gz", "config-e2e-iso-b.tar.gz")

        assert got["instance"] == a_instance
        assert got["results"]["config-e2e-iso-a.tar.gz"].startswith("read "), got
        assert got["results"]["config-e2e-iso-b.tar.gz"] == "AccessDenied", got
    finally:
        for name in names:
            svc.end_annex(ctx, name, grace_s=0)
