"""The bootstrap (cloud-init user data) every launch carries, and the user's own user data
combined with it, never lost (:mod:`condor_annex.providers.aws.bootstrap`)."""

from __future__ import annotations

import base64
import email

import pytest
import yaml

from condor_annex.model import AnnexSpec
from condor_annex.providers.aws.bootstrap import (USER_MERGE_TYPE, combine_user_data,
                                                  render_bootstrap)
from condor_annex.providers.aws.session import make_client

KW = dict(region="eu-west-1", bucket="condor-annex-configbucket-x",
          agent_key="agent/condor-annex-agent-0.1.0.pyz", version="0.1.0")


def test_rendered_document_is_cloud_config_with_the_contract_s_steps():
    text = render_bootstrap(**KW, endpoint_url="http://10.200.0.1:5000", htcondor_repo="24.x")
    assert text.startswith("#cloud-config\n")
    doc = yaml.safe_load(text)
    assert doc["bootcmd"][0] == ["systemctl", "mask", "condor.service"]
    files = {f["path"]: f["content"] for f in doc["write_files"]}
    assert files["/etc/default/condor-annex-agent"] == \
        "CONDOR_ANNEX_AGENT_ARGS=--aws-endpoint-url http://10.200.0.1:5000\n"
    unit = files["/etc/systemd/system/condor-annex-agent.service"]
    for line in ("Type=simple", "EnvironmentFile=-/etc/default/condor-annex-agent",
                 "ExecStart=/usr/bin/python3 /usr/local/lib/condor-annex/"
                 "condor-annex-agent.pyz $CONDOR_ANNEX_AGENT_ARGS",
                 "StandardOutput=journal+console", "After=network-online.target",
                 "WantedBy=multi-user.target"):
        assert line in unit.splitlines()
    fetch = files["/usr/local/lib/condor-annex/fetch-agent.py"]
    assert "'condor-annex-configbucket-x', 'agent/condor-annex-agent-0.1.0.pyz', " \
           "'eu-west-1', 'http://10.200.0.1:5000'" in fetch
    compile(fetch, "fetch-agent.py", "exec")           # the fetch script is valid Python
    assert 'REPO="24.x"' in files["/usr/local/lib/condor-annex/install.sh"]
    assert doc["runcmd"] == [["sh", "/usr/local/lib/condor-annex/install.sh"],
                             ["python3", "/usr/local/lib/condor-annex/fetch-agent.py"],
                             ["systemctl", "daemon-reload"],
                             ["systemctl", "enable", "--now", "condor-annex-agent.service"]]
    # Every line the scripts print starts with condor-annex:
    for script in (files["/usr/local/lib/condor-annex/install.sh"], fetch):
        for line in script.splitlines():
            if "echo " in line or "print(" in line or line.strip().startswith("say \""):
                assert "condor-annex:" in line or line.strip().startswith("say ") \
                    or "say()" in line, line


def test_prepared_image_skips_install_and_fetch():
    doc = yaml.safe_load(render_bootstrap(**KW, prepared=True, prepared_version="0.1.0"))
    assert doc["runcmd"][0] == ["echo", "condor-annex: prepared image "
                                "(htcondor:AnnexImage=0.1.0), skipping install"]
    assert ["sh", "/usr/local/lib/condor-annex/install.sh"] not in doc["runcmd"]
    assert doc["runcmd"][-1] == ["systemctl", "enable", "--now", "condor-annex-agent.service"]
    assert "CONDOR_ANNEX_AGENT_ARGS=\n" in [f["content"] for f in doc["write_files"]]


def test_users_data_becomes_a_second_mime_part_after_ours():
    ours = render_bootstrap(**KW)
    assert combine_user_data(ours, None) == ours.encode()
    for theirs, ctype in ((b"#!/bin/sh\necho mine\n", "text/x-shellscript"),
                          (b"#cloud-config\nruncmd: [[touch, /mine]]\n", "text/cloud-config")):
        msg = email.message_from_bytes(combine_user_data(ours, theirs))
        parts = [p for p in msg.walk() if not p.is_multipart()]
        assert [p.get_content_type() for p in parts] == ["text/cloud-config", ctype]
        assert parts[0].get_payload(decode=True).decode() == ours
        assert parts[1].get_payload(decode=True) == theirs
        if ctype == "text/cloud-config":   # appended to our runcmd, not replacing it
            assert parts[1]["Merge-Type"] == USER_MERGE_TYPE


@pytest.fixture
def ctx(account, outputs):
    from condor_annex import config
    from condor_annex.service.context import Context
    config.write_block("setup", config.setup_knobs(outputs))
    return Context.load()


def _user_data(ec2, instance_id: str) -> bytes:
    got = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(got["UserData"]["Value"])


def test_run_instances_carries_the_bootstrap_and_the_users_data(ctx, outputs):
    from condor_annex.service.create import create_annex
    res = create_annex(ctx, AnnexSpec(name="boot", count=1, user_data=b"#!/bin/sh\necho mine\n"))
    ec2 = make_client(ctx.aws, "ec2")
    msg = email.message_from_bytes(_user_data(ec2, res.instance_ids[0]))
    parts = [p.get_payload(decode=True).decode() for p in msg.walk() if not p.is_multipart()]
    assert parts[0].startswith("#cloud-config\n") and f"'{outputs.bucket}'" in parts[0]
    assert parts[1] == "#!/bin/sh\necho mine\n"


def test_modern_user_data_flag_reaches_the_instance_after_ours(ctx, outputs, tmp_path):
    from condor_annex.cli.main import main
    mine = tmp_path / "mine.yaml"
    mine.write_text("#cloud-config\nruncmd:\n  - [echo, mine]\n")
    assert main(["create", "ud", "--count", "1", "--user-data", str(mine), "--no-owner"]) == 0
    ec2 = make_client(ctx.aws, "ec2")
    (iid,) = [i["InstanceId"] for r in ec2.describe_instances(Filters=[
        {"Name": "tag:htcondor:AnnexName", "Values": ["ud"]}])["Reservations"]
        for i in r["Instances"]]
    msg = email.message_from_bytes(_user_data(ec2, iid))
    parts = [p for p in msg.walk() if not p.is_multipart()]
    assert parts[0].get_payload(decode=True).decode().startswith("#cloud-config\n# condor-annex")
    assert parts[1].get_payload(decode=True).decode() == mine.read_text()
    assert parts[1].get_content_type() == "text/cloud-config"


def test_ec2_fleet_launch_template_carries_the_bootstrap(ctx):
    from condor_annex.model import SpotSpec
    from condor_annex.service.create import create_spot_annex
    create_spot_annex(ctx, AnnexSpec(name="bootspot", count=1),
                      SpotSpec(instance_types=(("m4.large", 1.0),)))
    ec2 = make_client(ctx.aws, "ec2")
    [lt] = ec2.describe_launch_templates(LaunchTemplateNames=["annex-bootspot"])[
        "LaunchTemplates"]
    data = ec2.describe_launch_template_versions(LaunchTemplateId=lt["LaunchTemplateId"])[
        "LaunchTemplateVersions"][0]["LaunchTemplateData"]["UserData"]
    assert yaml.safe_load(base64.b64decode(data))["runcmd"][-1] == \
        ["systemctl", "enable", "--now", "condor-annex-agent.service"]


def test_spot_fleet_specs_keep_their_own_user_data(ctx):
    import json

    from condor_annex.model import SPOT_API_SPOT_FLEET, SpotSpec
    from condor_annex.service.launch_image import spot_fleet_with_bootstrap
    own = base64.b64encode(b"#!/bin/sh\necho spec-own\n").decode()
    spot = SpotSpec(api=SPOT_API_SPOT_FLEET, spot_fleet_config=json.dumps(
        {"LaunchSpecifications": [{"InstanceType": "m4.large", "UserData": own},
                                  {"InstanceType": "m5.large"}]}),
        default_user_data=b"#!/bin/sh\necho default\n")
    out = spot_fleet_with_bootstrap(spot, AnnexSpec(name="x", count=1), render_bootstrap(**KW))
    specs = json.loads(out.spot_fleet_config)["LaunchSpecifications"]
    texts = [base64.b64decode(s["UserData"]).decode() for s in specs]
    assert "echo spec-own" in texts[0] and "#cloud-config" in texts[0]
    assert "echo default" in texts[1] and "#cloud-config" in texts[1]
    assert out.default_user_data is None
