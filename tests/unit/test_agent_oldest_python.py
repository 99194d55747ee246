"""The shipped agent zipapp on the oldest Python we support: Debian bookworm's own python3 (3.11)
with bookworm's python3-boto3, not this venv's interpreter or its pinned boto3.

Same set-up as test_agent_bootstrap.py (its ``cloud`` fixture: our IMDSv2 server on 127.0.0.1,
the moto server as AWS with the instance, role, profile and bucket, and a condor_master double
that records how it was started); the bundle is the real one ``condor_annex create`` uploads.
The zipapp is run exactly as the agent's systemd unit runs it: ``/usr/bin/python3 AGENT.pyz ARGS``.
"""

from __future__ import annotations

import ast
import io
import os
import re
import subprocess
import tarfile
import time
import zipfile

import pytest

from condor_annex.pool.configs import annex_bundle
from condor_annex.providers.aws.agent_package import build_agent_zipapp
import test_agent_bootstrap as boot
from test_agent_bootstrap import ANNEX, ROLE_CREDS, TOKEN_SECRET

#: The fixture of test_agent_bootstrap.py: a launched instance, its IMDS, bucket and doubles.
cloud = boot.cloud

#: The interpreter the agent's unit runs (``ExecStart=/usr/bin/python3 ...pyz``).
SYSTEM_PYTHON = "/usr/bin/python3"
#: The oldest Python we claim for the agent (bookworm's; trixie has 3.13, Ubuntu 24.04 3.12).
OLDEST = (3, 11)

_PROBE = ("import sys; print('%d.%d' % sys.version_info[:2]); print(sys.version.split()[0]); "
          "import boto3, botocore; print(boto3.__version__, botocore.__version__); "
          "print(boto3.__file__)")


def system_env() -> dict[str, str]:
    """This process's environment (the instance's AWS settings from the fixture) without the
    ``PYTHON*`` variables, so nothing of the venv leaks into the system interpreter."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def probe_system_python() -> list[str]:
    """``SYSTEM_PYTHON``'s major.minor, full version, boto3/botocore versions and boto3's file;
    skips the test when that interpreter or its boto3 is missing."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        pytest.skip(f"{SYSTEM_PYTHON} is missing: the agent's oldest-Python test needs the "
                    "distribution's python3 (Debian bookworm: 3.11)")
    done = subprocess.run([SYSTEM_PYTHON, "-c", _PROBE], capture_output=True, text=True,
                          timeout=60, env=system_env())
    if done.returncode != 0 and "No module named 'boto3'" in done.stderr:
        pytest.skip(f"{SYSTEM_PYTHON} has no boto3: apt-get install python3-boto3 "
                    "(`make install` does it)")
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_agent_sources_parse_as_python_3_11():
    """Every Python file in the zipapp that setup uploads parses with 3.11's grammar, so syntax
    newer than the oldest supported Python (e.g. 3.12's ``type`` statements or generic
    ``def f[T]``) fails here, fast, on any interpreter."""
    with zipfile.ZipFile(io.BytesIO(build_agent_zipapp())) as zf:
        sources = {name: zf.read(name) for name in zf.namelist() if name.endswith(".py")}

    assert {"__main__.py", "condor_annex/__init__.py", "condor_annex/agent/bootstrap.py",
            "condor_annex/agent/backstop.py", "condor_annex/agent/imds.py"} <= set(sources)
    for name, data in sorted(sources.items()):
        ast.parse(data, filename=name, feature_version=OLDEST)  # raises SyntaxError


def test_zipapp_boots_on_the_system_python_3_11_with_debian_boto3(cloud, tmp_path):
    """The built zipapp, run by ``/usr/bin/python3`` (3.11) with Debian's python3-boto3, does a
    whole boot against our IMDS and moto: every step 1/9..9/9 in its log, the bundle installed
    byte for byte, condor_master started with ``CONDOR_CONFIG`` set, exit status 0."""
    major_minor, full_version, boto_versions, boto3_file = probe_system_python()
    assert major_minor == "%d.%d" % OLDEST, (
        f"{SYSTEM_PYTHON} is Python {full_version}; this test is for the oldest supported "
        f"(Debian bookworm's {OLDEST[0]}.{OLDEST[1]})")
    assert boto3_file.startswith("/usr/lib/python3/dist-packages/"), (
        f"{SYSTEM_PYTHON} imports boto3 from {boto3_file}, not Debian's python3-boto3")
    print(f"{SYSTEM_PYTHON}: Python {full_version}, boto3/botocore {boto_versions}")

    pyz = tmp_path / "condor-annex-agent.pyz"
    pyz.write_bytes(build_agent_zipapp())
    bundle = annex_bundle(annex_name=ANNEX, collector="10.200.0.2:9618", trust_domain="pool.test",
                          idle_seconds=900, token=TOKEN_SECRET,
                          lease_end=int(time.time()) + 3600)
    cloud.put_bundle(ANNEX, bundle)
    argv = cloud.argv()
    argv[argv.index("--poweroff-command") + 1] = ""

    done = subprocess.run([SYSTEM_PYTHON, str(pyz), *argv], capture_output=True, text=True,
                          timeout=120, env=system_env())

    assert done.returncode == 0, done.stderr
    steps = [int(n) for n in re.findall(r" step ([0-9])/9 ", done.stderr)]
    assert sorted(set(steps)) == list(range(1, 10)) and steps == sorted(steps), done.stderr
    assert "step 9/9 condor_master exited with status 0" in done.stderr
    assert "instance-side backstop: lease end" in done.stderr   # the bundle's AnnexLeaseEnd
    assert "credentials iam-role" in done.stderr      # the role's, through our IMDS
    assert TOKEN_SECRET not in done.stderr and ROLE_CREDS[1] not in done.stderr
    cfg = cloud.config_dir
    with tarfile.open(fileobj=io.BytesIO(bundle)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert set(members) == {"config.d/50-annex.config", "tokens.d/annex.token"}
    for name, data in members.items():
        assert (cfg / name).read_bytes() == data, name
    assert f'EC2InstanceID = "{cloud.instance_id}"' in \
        (cfg / "config.d/49-instance.config").read_text().splitlines()
    # The master double ran with CONDOR_CONFIG set and saw the installed files; the empty
    # power-off command ran nothing.
    assert cloud.event_lines() == [
        f"master args=-f CONDOR_CONFIG={cfg}/condor_config",
        "master saw 49-instance.config",
        "master saw annex.token",
    ]


def test_zipapp_on_the_system_python_uploads_the_log_of_a_failed_boot(cloud, tmp_path):
    """A failed boot (no bundle by the deadline) under ``/usr/bin/python3`` and Debian's
    boto3 puts the agent's log at ``logs/<annex>/<instance-id>/agent.log`` (the S3 client's
    short timeouts and single attempt work with that botocore), then powers off."""
    probe_system_python()
    pyz = tmp_path / "condor-annex-agent.pyz"
    pyz.write_bytes(build_agent_zipapp())

    done = subprocess.run([SYSTEM_PYTHON, str(pyz), *cloud.argv(deadline_s=2)],
                          capture_output=True, text=True, timeout=120, env=system_env())

    assert done.returncode == 1, done.stderr
    key = f"logs/{ANNEX}/{cloud.instance_id}/agent.log"
    assert f"uploaded this log to s3://{boot.BUCKET}/{key}" in done.stderr
    text = cloud.s3.get_object(Bucket=boot.BUCKET, Key=key)["Body"].read().decode()
    assert "bootstrap failed" in text and "NoSuchKey" in text
    assert cloud.event_lines() == ["poweroff "]


def test_zipapp_on_the_system_python_says_when_the_collector_is_unreachable(cloud, tmp_path):
    """The collector check under ``/usr/bin/python3`` (3.11): a bundle whose collector refuses
    connections gets the one verdict line on stderr (the console) while the master runs, the
    agent's log uploaded, and the master left to run to its end."""
    from condor_annex.agent.diagnosis import COLLECTOR_UNREACHABLE, collector_unreachable
    from test_agent_collector_check import closed_port

    probe_system_python()
    pyz = tmp_path / "condor-annex-agent.pyz"
    pyz.write_bytes(build_agent_zipapp())
    port = closed_port()
    cloud.put_bundle(ANNEX, annex_bundle(
        annex_name=ANNEX, collector=f"127.0.0.1:{port}", trust_domain="pool.test",
        idle_seconds=900, token=TOKEN_SECRET, lease_end=int(time.time()) + 3600))
    boot.write_script(cloud.root / "fake_condor_master",
                      f'echo "master started" >> "{cloud.events}"\nsleep 2\n'
                      f'echo "master done" >> "{cloud.events}"\n')

    done = subprocess.run([SYSTEM_PYTHON, str(pyz), *cloud.argv("--collector-check-s", "0.3")],
                          capture_output=True, text=True, timeout=120, env=system_env())

    assert done.returncode == 0, done.stderr
    [verdict] = [ln for ln in done.stderr.splitlines() if COLLECTOR_UNREACHABLE in ln]
    assert f" ERROR collector 127.0.0.1:{port} unreachable from this instance for " in verdict
    assert "(refused)" in verdict
    assert cloud.event_lines() == ["master started", "master done", "poweroff "]
    key = f"logs/{ANNEX}/{cloud.instance_id}/agent.log"
    assert f"uploaded this log to s3://{boot.BUCKET}/{key}" in done.stderr
    text = cloud.s3.get_object(Bucket=boot.BUCKET, Key=key)["Body"].read().decode()
    assert collector_unreachable(text) is not None
