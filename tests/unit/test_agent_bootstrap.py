"""The bootstrap agent end to end: our IMDSv2 server on 127.0.0.1 + the moto server as AWS.

The instance's HTCondor is replaced by test doubles: a ``fake_condor_master`` script that records
how it was started (and what it found installed) and exits as an idle master would, and a
``fake_poweroff`` script that records that it ran. Both append to one events file, so the order
is visible.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest

from condor_annex.agent import bootstrap, firewall, watch
from condor_annex.providers.local.imds import ImdsServer, InstanceMetadata

ANNEX = "gpu-annex"
BUCKET = "annex-config-bucket"
ROLE = "annex-instance-role"
PROFILE = "annex-instance-profile"
ROLE_CREDS = ("ASIAROLEKEY000000001", "role-secret-never-logged", "role-session-never-logged")
TOKEN_SECRET = "eyJhbGciOiJIUzI1NiJ9.annex-idtoken-content.never-logged"
ANNEX_CONFIG = b'AnnexName = "gpu-annex"\nCOLLECTOR_HOST = 10.200.0.2\n'


def make_bundle(files: dict[str, bytes], *, extra=None) -> bytes:
    """A tar.gz like the pool module makes; ``extra(tar)`` may add hostile members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o777
            tar.addfile(info, io.BytesIO(data))
        if extra:
            extra(tar)
    return buf.getvalue()


GOOD_BUNDLE_FILES = {"config.d/50-annex.config": ANNEX_CONFIG,
                     "tokens.d/annex.token": TOKEN_SECRET.encode() + b"\n"}


@dataclass
class Cloud:
    """One EC2 instance in moto, its role/profile/bucket, and an IMDS serving it on 127.0.0.1."""

    endpoint: str
    instance_id: str
    imds: ImdsServer
    metadata: InstanceMetadata
    s3: object
    root: Path          # the instance's file system (test-local)
    config_dir: Path    # <root>/etc/condor
    events: Path        # what the test doubles did, in order

    def put_bundle(self, annex: str, data: bytes) -> None:
        self.s3.put_object(Bucket=BUCKET, Key=f"config-{annex}.tar.gz", Body=data)

    def argv(self, *extra: str, deadline_s: float = 20) -> list[str]:
        return ["--imds-url", self.imds.url, "--aws-endpoint-url", self.endpoint,
                "--condor-config-dir", str(self.config_dir),
                "--condor-master", str(self.root / "fake_condor_master"),
                "--poweroff-command", str(self.root / "fake_poweroff"),
                "--deadline-s", str(deadline_s), "--no-block-imds", *extra]

    def event_lines(self) -> list[str]:
        return self.events.read_text().splitlines() if self.events.exists() else []


def write_script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def _aws_client(service: str, endpoint: str):
    return boto3.client(service, region_name="us-east-1", endpoint_url=endpoint,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def cloud(aws, moto_endpoint, tmp_path, monkeypatch):
    """A launched instance as the agent would find it at boot (tags in metadata on)."""
    s3, iam, ec2 = (_aws_client(s, moto_endpoint) for s in ("s3", "iam", "ec2"))
    s3.create_bucket(Bucket=BUCKET)
    iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument="{}",
                    Tags=[{"Key": "htcondor:ConfigBucket", "Value": BUCKET}])
    profile = iam.create_instance_profile(InstanceProfileName=PROFILE)["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName=PROFILE, RoleName=ROLE)
    image_id = ec2.describe_images()["Images"][0]["ImageId"]
    # A client token from *another* naming scheme, full of '_': the original agent cut the annex
    # name out of it at the first '_'. The tag is what counts.
    instance = ec2.run_instances(
        ImageId=image_id, MinCount=1, MaxCount=1, InstanceType="m4.large",
        ClientToken="decoy_annex_0f3c", IamInstanceProfile={"Arn": profile["Arn"]},
        TagSpecifications=[{"ResourceType": "instance",
                            "Tags": [{"Key": "htcondor:AnnexName", "Value": ANNEX}]}],
    )["Instances"][0]

    metadata = InstanceMetadata(
        instance_id=instance["InstanceId"], region="us-east-1", availability_zone="us-east-1a",
        private_ip="127.0.0.1", public_ip="203.0.113.25",
        tags={"htcondor:AnnexName": ANNEX}, instance_profile_arn=profile["Arn"],
        role_name=ROLE, credentials=ROLE_CREDS)
    imds = ImdsServer(lambda ip: metadata if ip == "127.0.0.1" else None)
    imds.start()

    root = tmp_path / "instance"
    config_dir = root / "etc" / "condor"
    (config_dir / "config.d").mkdir(parents=True)
    (config_dir / "tokens.d").mkdir(mode=0o700)
    (config_dir / "condor_config").write_text("LOCAL_CONFIG_DIR = $(ETC)/config.d\n")
    events = root / "events"
    write_script(root / "fake_condor_master", f"""\
# Test double for condor_master: records how it was started and what it found, then exits
# as an idle master would.
cfgdir=$(dirname "$CONDOR_CONFIG")
{{
  echo "master args=$* CONDOR_CONFIG=$CONDOR_CONFIG"
  test -f "$cfgdir/config.d/49-instance.config" && echo "master saw 49-instance.config"
  test -f "$cfgdir/tokens.d/annex.token" && echo "master saw annex.token"
  env | grep -q '^AWS_EC2_METADATA_SERVICE_ENDPOINT=' && echo "master saw the agent's IMDS variables"
}} >> "{events}"
exit 0
""")
    write_script(root / "fake_poweroff", f'echo "poweroff $*" >> "{events}"\n')

    # On the instance only the role's credentials exist: drop the test's static keys.
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    yield Cloud(moto_endpoint, instance["InstanceId"], imds, metadata, s3, root, config_dir,
                events)
    imds.stop()


def tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_boot_installs_bundle_runs_master_then_powers_off(cloud, caplog):
    caplog.set_level(logging.DEBUG, logger="condor_annex")
    cloud.put_bundle(ANNEX, make_bundle(GOOD_BUNDLE_FILES))
    cloud.put_bundle("decoy", make_bundle({"config.d/50-annex.config": b"WRONG = 1\n"}))

    assert bootstrap.main(cloud.argv()) == 0

    cfg = cloud.config_dir
    assert (cfg / "config.d/50-annex.config").read_bytes() == ANNEX_CONFIG
    assert (cfg / "tokens.d/annex.token").read_text() == TOKEN_SECRET + "\n"
    assert mode(cfg / "config.d/50-annex.config") == 0o644
    assert mode(cfg / "tokens.d/annex.token") == 0o600
    assert mode(cfg / "tokens.d") == 0o700
    assert (cfg / "config.d/49-instance.config").read_text().splitlines()[1:] == [
        f'EC2InstanceID = "{cloud.instance_id}"',
        'EC2PublicIP = "203.0.113.25"',
        "TCP_FORWARDING_HOST = 203.0.113.25",
        "STARTD_ATTRS = $(STARTD_ATTRS) EC2InstanceID EC2PublicIP",
        "MASTER_ATTRS = $(MASTER_ATTRS) EC2InstanceID EC2PublicIP",
    ]
    assert mode(cfg / "config.d/49-instance.config") == 0o644
    assert not [p for p in tree(cfg) if ".annex-" in p]  # no temporary files left behind
    assert cloud.event_lines() == [
        f"master args=-f CONDOR_CONFIG={cfg}/condor_config",
        "master saw 49-instance.config",
        "master saw annex.token",
        "poweroff ",
    ]
    # Credentials came from the instance role, through our IMDS.
    assert cloud.imds.count("GET", f"/latest/meta-data/iam/security-credentials/{ROLE}", 200) >= 1
    assert cloud.imds.count("GET", "/latest/meta-data/tags/instance/htcondor:AnnexName", 200) == 1
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("condor_annex")]
    assert any("credentials iam-role" in m for m in messages)
    assert any(f"annex name '{ANNEX}' (from instance metadata)" in m for m in messages)
    for m in messages:
        assert TOKEN_SECRET not in m and ROLE_CREDS[1] not in m and ROLE_CREDS[2] not in m
    # The caller's environment is left as it was.
    assert os.environ["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "AWS_EC2_METADATA_SERVICE_ENDPOINT" not in os.environ


def test_annex_name_from_describe_tags_when_metadata_tags_are_off(cloud, caplog):
    caplog.set_level(logging.INFO)
    cloud.metadata.tags = {}
    cloud.put_bundle(ANNEX, make_bundle(GOOD_BUNDLE_FILES))
    cloud.put_bundle("decoy", make_bundle({"config.d/50-annex.config": b"WRONG = 1\n"}))

    assert bootstrap.main(cloud.argv()) == 0

    assert (cloud.config_dir / "config.d/50-annex.config").read_bytes() == ANNEX_CONFIG
    assert cloud.imds.count("GET", "/latest/meta-data/tags/instance/htcondor:AnnexName", 404) == 1
    assert any(f"annex name '{ANNEX}' (from EC2 DescribeTags)" in r.getMessage()
               for r in caplog.records)


def test_bucket_flag_skips_role_discovery(cloud):
    cloud.s3.create_bucket(Bucket="other-bucket")
    cloud.s3.put_object(Bucket="other-bucket", Key=f"config-{ANNEX}.tar.gz",
                        Body=make_bundle(GOOD_BUNDLE_FILES))

    assert bootstrap.main(cloud.argv("--bucket", "other-bucket")) == 0

    assert (cloud.config_dir / "tokens.d/annex.token").exists()
    assert cloud.imds.count(path="/latest/meta-data/iam/info") == 0


def test_bucket_from_the_instance_tag_needs_no_iam(cloud, caplog):
    # condor_annex tags each instance htcondor:ConfigBucket; the agent reads it from instance
    # metadata and never asks IAM (the role need not allow iam:GetInstanceProfile).
    cloud.s3.create_bucket(Bucket="tagged-bucket")
    cloud.s3.put_object(Bucket="tagged-bucket", Key=f"config-{ANNEX}.tar.gz",
                        Body=make_bundle(GOOD_BUNDLE_FILES))
    cloud.metadata.tags["htcondor:ConfigBucket"] = "tagged-bucket"

    assert bootstrap.main(cloud.argv()) == 0

    assert (cloud.config_dir / "tokens.d/annex.token").exists()
    assert any("config bucket 'tagged-bucket' (from instance metadata tag)" in r.getMessage()
               for r in caplog.records)
    assert cloud.imds.count(path="/latest/meta-data/iam/info") == 0


def _symlink_then_file(tar: tarfile.TarFile) -> None:
    link = tarfile.TarInfo("tokens.d")
    link.type, link.linkname = tarfile.SYMTYPE, "../../../outside"
    tar.addfile(link)
    data = b"planted\n"
    info = tarfile.TarInfo("tokens.d/annex.token")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _hardlink(tar: tarfile.TarInfo) -> None:
    link = tarfile.TarInfo("config.d/passwd")
    link.type, link.linkname = tarfile.LNKTYPE, "/etc/passwd"
    tar.addfile(link)


def _device(tar: tarfile.TarFile) -> None:
    dev = tarfile.TarInfo("config.d/null")
    dev.type = tarfile.CHRTYPE
    tar.addfile(dev)


@pytest.mark.parametrize("hostile", [
    pytest.param(lambda root: {"config.d/../../../outside/evil.config": b"x"}, id="dotdot"),
    pytest.param(lambda root: {f"{root}/outside/abs.config": b"x"}, id="absolute"),
    pytest.param(lambda root: _symlink_then_file, id="symlink"),
    pytest.param(lambda root: _hardlink, id="hardlink"),
    pytest.param(lambda root: _device, id="device"),
])
def test_hostile_bundle_is_refused_and_nothing_is_written(cloud, hostile, caplog):
    caplog.set_level(logging.INFO)
    outside = cloud.root / "outside"
    outside.mkdir()
    spec = hostile(cloud.root)
    files = dict(GOOD_BUNDLE_FILES)
    if isinstance(spec, dict):
        files.update(spec)
        bundle = make_bundle(files)
    else:
        bundle = make_bundle(files, extra=spec)
    cloud.put_bundle(ANNEX, bundle)
    before = tree(cloud.root)

    assert bootstrap.main(cloud.argv()) == 1

    assert tree(cloud.root) == before | {"events"}
    assert list(outside.iterdir()) == []
    assert cloud.event_lines() == ["poweroff "]  # powered off; the master never ran
    failures = [r.getMessage() for r in caplog.records if "bootstrap failed" in r.getMessage()]
    assert len(failures) == 1 and "bundle refused" in failures[0]


def test_missing_bundle_powers_off_after_the_deadline(cloud, caplog):
    caplog.set_level(logging.INFO)
    started = time.monotonic()

    assert bootstrap.main(cloud.argv(deadline_s=3)) == 1

    elapsed = time.monotonic() - started
    assert 3 <= elapsed < 8
    assert cloud.event_lines() == ["poweroff "]
    failure = [r.getMessage() for r in caplog.records if "bootstrap failed" in r.getMessage()]
    assert len(failure) == 1
    assert f"config-{ANNEX}.tar.gz" in failure[0] and "NoSuchKey" in failure[0]
    assert not (cloud.config_dir / "config.d/49-instance.config").exists()


def test_no_annex_tag_anywhere_powers_off(cloud, moto_endpoint, caplog):
    caplog.set_level(logging.INFO)
    cloud.metadata.tags = {}
    _aws_client("ec2", moto_endpoint).delete_tags(
        Resources=[cloud.instance_id], Tags=[{"Key": "htcondor:AnnexName"}])
    cloud.put_bundle(ANNEX, make_bundle(GOOD_BUNDLE_FILES))

    assert bootstrap.main(cloud.argv(deadline_s=2)) == 1

    assert cloud.event_lines() == ["poweroff "]
    assert any("bootstrap failed" in r.getMessage() and "has no tag htcondor:AnnexName"
               in r.getMessage() for r in caplog.records)


def test_empty_poweroff_command_exits_nonzero_on_failure(cloud):
    argv = cloud.argv(deadline_s=1)
    argv[argv.index("--poweroff-command") + 1] = ""
    assert bootstrap.main(argv) == 1
    assert cloud.event_lines() == []


class _Forbidden(BaseHTTPRequestHandler):
    """A metadata service that is switched off for this instance: 403 to everything."""

    def log_message(self, *args) -> None:
        pass

    def do_PUT(self) -> None:  # noqa: N802
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT  # noqa: N815


def test_imds_403_powers_off_at_once(cloud, caplog):
    caplog.set_level(logging.INFO)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Forbidden)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    try:
        argv = cloud.argv(deadline_s=60)
        argv[argv.index("--imds-url") + 1] = f"http://127.0.0.1:{httpd.server_address[1]}"
        started = time.monotonic()
        assert bootstrap.main(argv) == 1
        assert time.monotonic() - started < 5
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert cloud.event_lines() == ["poweroff "]
    assert any("bootstrap failed" in r.getMessage() and "403" in r.getMessage()
               for r in caplog.records)


def _master_until_sigterm(cloud) -> None:
    """A good bundle, and a condor_master double that runs until SIGTERM (a graceful stop)."""
    cloud.put_bundle(ANNEX, make_bundle(GOOD_BUNDLE_FILES))
    write_script(cloud.root / "fake_condor_master", f"""\
# Test double for condor_master: runs until SIGTERM (a graceful stop), then exits.
trap 'echo "master got TERM" >> "{cloud.events}"; exit 0' TERM
echo "master started" >> "{cloud.events}"
for i in $(seq 1 200); do sleep 0.1; done
echo "master timed out" >> "{cloud.events}"
""")


def test_sigterm_is_forwarded_to_the_master_then_power_off(cloud):
    _master_until_sigterm(cloud)

    def send_sigterm_once_master_runs() -> None:
        for _ in range(200):
            if "master started" in cloud.event_lines():
                os.kill(os.getpid(), signal.SIGTERM)  # as systemd would stop the agent
                return
            time.sleep(0.05)

    previous = signal.getsignal(signal.SIGTERM)
    killer = threading.Thread(target=send_sigterm_once_master_runs, daemon=True)
    killer.start()
    assert bootstrap.main(cloud.argv()) == 0
    killer.join(timeout=5)

    assert cloud.event_lines() == ["master started", "master got TERM", "poweroff "]
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored


def test_off_tag_shuts_the_master_down_gracefully_then_powers_off(cloud, caplog):
    # ``condor_annex off`` tags the instance htcondor:AnnexOff; the agent sees it through
    # instance metadata tags and stops the master as condor_off would (SIGTERM = graceful).
    from condor_annex.model import TAG_ANNEX_OFF
    assert watch.TAG_ANNEX_OFF == TAG_ANNEX_OFF
    _master_until_sigterm(cloud)

    def tag_once_master_runs() -> None:
        for _ in range(200):
            if "master started" in cloud.event_lines():
                time.sleep(0.5)     # a few polls without the tag first
                cloud.metadata.tags[TAG_ANNEX_OFF] = "2026-11-22T22:00:00+00:00"
                return
            time.sleep(0.05)

    tagger = threading.Thread(target=tag_once_master_runs, daemon=True)
    tagger.start()
    started = time.monotonic()
    assert bootstrap.main(cloud.argv("--off-poll-s", "0.2")) == 0
    tagger.join(timeout=5)

    assert cloud.event_lines() == ["master started", "master got TERM", "poweroff "]
    assert time.monotonic() - started < 10          # not the double's 20 s run
    assert any(TAG_ANNEX_OFF in r.getMessage() and "gracefully" in r.getMessage()
               for r in caplog.records)


def _fake_iptables(tmp_path) -> Path:
    """A test double for iptables on PATH: records its arguments; '-C' (check) finds the rule
    only once '-A' added it. Returns the file of recorded calls."""
    calls, added = tmp_path / "iptables.calls", tmp_path / "iptables.added"
    write_script(tmp_path / "iptables", f"""\
echo "$*" >> "{calls}"
case "$2" in
  -C) test -f "{added}"; exit $?;;
  -A) : > "{added}"; exit 0;;
esac
exit 2
""")
    return calls


def test_block_imds_adds_the_rule_once_with_the_exact_arguments(tmp_path, monkeypatch):
    calls = _fake_iptables(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))

    assert firewall.block_imds("http://10.200.0.1:8080") == "added"
    assert firewall.block_imds("http://10.200.0.1:8080") == "present"

    rule = "OUTPUT -d 10.200.0.1 -p tcp --dport 8080 -m owner ! --uid-owner 0 -j REJECT"
    assert calls.read_text().splitlines() == [f"-w -C {rule}", f"-w -A {rule}",
                                              f"-w -C {rule}", f"-w -C {rule}"]


def test_block_imds_without_iptables_is_an_error(tmp_path, monkeypatch):
    from condor_annex.agent.firewall import FirewallError

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FirewallError, match="^iptables not found$"):
        firewall.block_imds("http://169.254.169.254")


def test_runs_standalone_as_python_m_condor_annex_agent(cloud, tmp_path):
    """The module entry point as a separate process, with only ``condor_annex.agent`` on the path.

    The interpreter is ``$CONDOR_ANNEX_AGENT_PYTHON`` if set (e.g. Debian's python3 with
    python3-boto3, as on the image), else this one.
    """
    import condor_annex.agent

    isolated = tmp_path / "agent-only" / "condor_annex"
    isolated.mkdir(parents=True)
    (isolated / "__init__.py").write_text("")
    shutil.copytree(Path(condor_annex.agent.__file__).parent, isolated / "agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    python = os.environ.get("CONDOR_ANNEX_AGENT_PYTHON", sys.executable)
    env = dict(os.environ, PYTHONPATH=str(isolated.parent))
    cloud.put_bundle(ANNEX, make_bundle(GOOD_BUNDLE_FILES))

    done = subprocess.run([python, "-s", "-m", "condor_annex.agent", *cloud.argv()],
                          capture_output=True, text=True, timeout=60, env=env)

    assert done.returncode == 0, done.stderr
    assert "step 9/9 condor_master exited with status 0" in done.stderr
    assert TOKEN_SECRET not in done.stderr and ROLE_CREDS[1] not in done.stderr
    assert cloud.event_lines()[0].startswith("master args=-f")
    assert cloud.event_lines()[-1] == "poweroff "
    check = subprocess.run([python, "-s", "-c", "import condor_annex.agent.bootstrap, sys; "
                            "print(sorted(m for m in sys.modules if m.startswith('condor_annex')))"],
                           capture_output=True, text=True, timeout=60, env=env)
    assert check.stdout.strip() == str(["condor_annex", "condor_annex.agent"] + [
        f"condor_annex.agent.{m}" for m in (
            "arguments", "backstop", "bootstrap", "bundle", "clients", "collector_address",
            "collector_check", "condor_commands", "diagnosis", "discovery", "ec2_end", "errors",
            "files",
            "firewall", "idle_shutdown", "imds",
            "instance_config", "interruption_watch", "log_tail", "log_upload", "master",
            "node_drain", "notices", "poweroff", "retry",
            "watch")])


def test_slow_metadata_token_at_boot_is_retried_not_fatal(cloud, monkeypatch):
    """Seen with 20 nodes booting at once on the local cloud: botocore's role-credential fetch
    raised MetadataRetrievalError ("Unable to retrieve token for use in IMDSv2 call") and the
    agent powered the node off, so 19/20 joined.  Such errors are retried until the deadline."""
    import boto3.session
    from botocore.exceptions import MetadataRetrievalError

    real = boto3.session.Session.get_credentials
    failures = {"left": 2}

    def flaky(self):
        if failures["left"]:
            failures["left"] -= 1
            raise MetadataRetrievalError(error_msg="Unable to retrieve token for use in IMDSv2 "
                                                   "call and IMDSv1 has been disabled")
        return real(self)

    monkeypatch.setattr(boto3.session.Session, "get_credentials", flaky)
    cloud.put_bundle(ANNEX, make_bundle(GOOD_BUNDLE_FILES))

    assert bootstrap.main(cloud.argv()) == 0

    assert failures["left"] == 0
    assert (cloud.config_dir / "config.d/50-annex.config").read_bytes() == ANNEX_CONFIG
    assert "poweroff" in cloud.event_lines()[-1]
    assert any(line.startswith("master args=-f") for line in cloud.event_lines())
