"""The seed's cloud-init document and HTCondor configuration (issue 13 item 2)."""

from __future__ import annotations

import base64
import gzip
import subprocess

import pytest
import yaml

from condor_annex.errors import BadInputError
from condor_annex.pool import seed_config as sc
from condor_annex.providers.aws.seed_bootstrap import SEED_FAILED_LINE, SEED_READY_LINE, \
    fits, render_seed, user_data
from condor_annex.validate import MAX_USER_DATA_BASE64

SETUP_KNOBS = {
    "ANNEX_DEFAULT_AWS_REGION": "us-east-1",
    "ANNEX_SETUP_STACK_NAME": "condor-annex",
    "ANNEX_DEFAULT_S3_BUCKET": "condor-annex-configbucket-l4ainm7fjh69",
    "ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN":
        "arn:aws:lambda:us-east-1:123456789012:function:condor-annex-lease",
    "ANNEX_LEASE_SCHEDULER_ROLE_ARN":
        "arn:aws:iam::123456789012:role/condor-annex-SchedulerRole-WB4EZ1CG8GC6",
    "ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN": "arn:aws:iam::123456789012:instance-profile/"
        "condor-annex/condor-annex-InstanceProfile-4K7YG01VFFWD",
    "ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS": "sg-4bfa1c07a10774755",
    "ANNEX_DEFAULT_ODI_KEY_NAME": "condor-annex-key",
    "ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE":
        "arn:aws:iam::123456789012:role/condor-annex-SpotFleetRole-54TNWIHKIIPG",
    "ANNEX_DEFAULT_SFR_LEASE_FUNCTION_ARN":
        "arn:aws:lambda:us-east-1:123456789012:function:condor-annex-lease",
    "ANNEX_AWS_ENDPOINT_URL": "http://10.200.0.1:4566",
    "ANNEX_INSTANCE_AWS_ENDPOINT_URL": "http://10.200.0.1:4566",
}


def _render(**over) -> str:
    kw = dict(version="0.1.0", region="us-east-1", bucket="condor-annex-configbucket-x",
              wheel_prefix="seed/0.1.0/", endpoint_url="http://10.200.0.1:4566",
              admin_user=sc.SEED_ADMIN_USER, admin_identity="admin@condor-annex-seed",
              seed_file=sc.SEED_FILE,
              seed_config=sc.seed_config(SETUP_KNOBS), address_file=sc.ADDRESS_FILE,
              address_template=sc.address_config("@PRIVATE@", "@ADVERTISED@"))
    kw.update(over)
    return render_seed(**kw)


def _file(doc: dict, path: str) -> str:
    return next(f["content"] for f in doc["write_files"] if f["path"] == path)


def test_the_document_is_cloud_config_within_ec2s_user_data_limit():
    text = _render()
    assert text.startswith("#cloud-config\n")
    data = user_data(text)
    assert fits(data) and gzip.decompress(data).decode() == text
    assert len(base64.b64encode(data)) <= MAX_USER_DATA_BASE64 // 2   # room to grow
    assert not fits(b"x" * (MAX_USER_DATA_BASE64 // 4 * 3 + 1))
    doc = yaml.safe_load(text)
    assert set(doc) == {"users", "bootcmd", "write_files", "runcmd"}
    # The ready line is printed only after every step succeeded, the failure line otherwise.
    [step] = doc["runcmd"]
    line = step[2]
    assert line.index("fetch-seed.py") < line.index("condor.service") \
        < line.index("condor-annexd.service") < line.index(SEED_READY_LINE) \
        < line.index(SEED_FAILED_LINE)


def test_the_admin_user_may_run_only_condor_token_create_as_root():
    doc = yaml.safe_load(_render())
    [user] = doc["users"]
    assert user["name"] == "admin"
    assert user["sudo"] == "ALL=(root) NOPASSWD: /usr/bin/condor_token_create"
    unit = _file(doc, "/etc/systemd/system/condor-annexd.service")
    assert "\nUser=admin\n" in unit and "ExecStart=/opt/condor-annex/bin/condor_annexd" in unit


def test_the_seed_config_holds_setups_knobs_and_the_token_command():
    doc = yaml.safe_load(_render())
    conf = _file(doc, sc.SEED_FILE)
    assert "use ROLE: CentralManager" in conf and "use ROLE: Submit" in conf
    assert "ANNEX_DEFAULT_S3_BUCKET = condor-annex-configbucket-l4ainm7fjh69" in conf
    assert f"ANNEX_TOKEN_COMMAND = {sc.SEED_TOKEN_COMMAND}" in conf
    # The admin user administers the pool and may advertise condor_annexd's ad.
    assert "ALLOW_ADMINISTRATOR = condor@*/*, root@*/*, admin@*/*" in conf
    assert "COLLECTOR.ALLOW_DAEMON = $(ALLOW_DAEMON), *@annex/*, admin@*/*" in conf


def test_the_address_script_writes_tcp_forwarding_host_from_imds():
    doc = yaml.safe_load(_render())
    script = _file(doc, "/usr/local/lib/condor-annex/seed-address.py")
    # Run the script's own template substitution on two addresses, as it does at boot.
    ns: dict = {}
    head = script.split("\ndef get(")[0]
    exec(compile(head, "seed-address.py", "exec"), ns)   # constants only: no IMDS call
    text = ns["TEMPLATE"].replace("@PRIVATE@", "10.0.1.5").replace("@ADVERTISED@", "3.4.5.6")
    assert text == sc.address_config("10.0.1.5", "3.4.5.6")
    assert "TCP_FORWARDING_HOST = 3.4.5.6\n" in text and "CONDOR_HOST = 10.0.1.5\n" in text
    assert "ANNEX_COLLECTOR = 3.4.5.6:9618\n" in text
    assert ns["DEST"] == sc.ADDRESS_FILE
    # No public address: the private one is advertised.
    assert "TCP_FORWARDING_HOST = 10.0.1.5\n" in sc.address_config("10.0.1.5", "")


def test_the_scripts_compile_on_the_instances_python():
    doc = yaml.safe_load(_render())
    for path in ("/usr/local/lib/condor-annex/seed-address.py",
                 "/usr/local/lib/condor-annex/fetch-seed.py"):
        compile(_file(doc, path), path, "exec")
    for path in ("/usr/local/lib/condor-annex/seed-install.sh",
                 "/usr/local/lib/condor-annex/seed-wait.sh",
                 "/usr/local/lib/condor-annex/seed-admin-token.sh"):
        p = subprocess.run(["sh", "-n"], input=_file(doc, path), text=True,
                           capture_output=True)
        assert p.returncode == 0, p.stderr


def test_values_the_document_cannot_hold_are_refused():
    with pytest.raises(ValueError, match="bucket"):
        _render(bucket="b'; rm -rf /")
    with pytest.raises(ValueError, match="user name"):
        _render(admin_user="Root Admin")
    with pytest.raises(BadInputError, match="ANNEX_X"):
        sc.seed_config({"ANNEX_X": "a\nDAEMON_LIST = MASTER STARTD"})
    with pytest.raises(BadInputError, match="ANNEX_Y"):
        sc.seed_config({"ANNEX_Y": "$(ROGUE)"})


def test_no_secret_goes_into_the_document():
    text = _render()
    for word in ("SECRET", "aws_secret_access_key", "BEGIN PRIVATE", "eyJ"):
        assert word not in text
