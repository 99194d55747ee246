"""Shared fixtures: a real moto **server** (HTTP endpoint on loopback) and an isolated user config.

Safety: every test runs with fake credentials and ``AWS_EC2_METADATA_DISABLED=true``, so boto3's
credential chain never reaches a real metadata service or real AWS.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# Set before any test imports boto3: no real credentials, no real IMDS, ever.
os.environ.update({
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
})
for _v in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_v, None)
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
os.environ["AWS_CONFIG_FILE"] = os.devnull


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """Start ``moto.server`` on loopback for the whole session; yield its URL."""
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto server did not start: " + log.read_text()[-2000:])
            time.sleep(0.1)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:   # busy with a last request: nothing left to keep
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def fresh_request_buckets():
    """Each test starts with full EC2 request buckets (providers/aws/throttle.py keeps them per
    process): a user's commands are processes of their own, a test's are not."""
    from condor_annex.providers.aws import throttle
    throttle.forget()
    yield


def reset_moto(url: str) -> None:
    """Forget every resource in the moto server (``POST /moto-api/reset``)."""
    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST"),
                           timeout=10).read()


@pytest.fixture
def user_config(tmp_path, monkeypatch) -> Path:
    """An empty, private user config file for this test (``CONDOR_ANNEX_USER_CONFIG``)."""
    path = tmp_path / "condor" / "user_config"
    monkeypatch.setenv("CONDOR_ANNEX_USER_CONFIG", str(path))
    return path


@pytest.fixture
def aws(moto_endpoint, tmp_path, user_config):
    """:class:`AwsSettings` for a freshly reset moto server, with fake key files (mode 600)."""
    from condor_annex.config import AwsSettings

    reset_moto(moto_endpoint)
    access, secret = tmp_path / "access", tmp_path / "secret"
    access.write_text("testing\n")
    secret.write_text("testing\n")
    access.chmod(0o600)
    secret.chmod(0o600)
    return AwsSettings(region="us-east-1", endpoint_url=moto_endpoint,
                       access_key_file=str(access), secret_key_file=str(secret))


#: An AMI moto knows (its bundled Amazon images); real AWS would need a current one.
MOTO_AMI = "ami-03cf127a"


@pytest.fixture
def outputs(aws, tmp_path):
    """Run setup (the CloudFormation stack and key pair) on a fresh moto server."""
    from condor_annex.providers.aws.setup import setup

    return setup(aws, key_dir=tmp_path / "keys", poll_s=0.1, deadline_s=60)


@pytest.fixture
def account(aws, user_config, tmp_path):
    """The user config pointing at the fresh moto server (endpoint, key files, collector, an
    AMI moto knows, a stand-in for ``condor_token_create``), before setup."""
    from condor_annex import config

    token_tool = tmp_path / "fake_condor_token_create"
    token_tool.write_text("#!/bin/sh\necho eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln\n")
    token_tool.chmod(0o755)
    config.write_block("test", {
        "ANNEX_AWS_ENDPOINT_URL": aws.endpoint_url,
        "ANNEX_DEFAULT_ACCESS_KEY_FILE": aws.access_key_file,
        "ANNEX_DEFAULT_SECRET_KEY_FILE": aws.secret_key_file,
        "ANNEX_COLLECTOR": "127.0.0.1:9618",
        "ANNEX_TRUST_DOMAIN": "pool.test",
        "ANNEX_DEFAULT_ODI_IMAGE_ID": MOTO_AMI,
        "ANNEX_TOKEN_COMMAND": str(token_tool),
        # the owner's token directory, where create writes an annex's administrator token
        "ANNEX_TOKEN_DIRECTORY": str(tmp_path / "tokens.d"),
    })
    return aws


@pytest.fixture
def gateway(moto_endpoint):
    """The AWS gateway (:mod:`condor_annex.providers.local.gateway`) in front of the session's
    moto server, started for this test (its URL is ``gateway.url``); its rules are cleared and it
    is stopped afterwards. It does not reset moto."""
    from condor_annex.providers.local.gateway import Gateway

    gw = Gateway(moto_endpoint).start()
    try:
        yield gw
    finally:
        gw.clear()
        gw.stop()


@pytest.fixture
def sent():
    """EC2 parameters as our code sends them (not moto's echo): operation -> [params], captured
    with botocore's ``provide-client-params`` event on this thread's session."""
    import json

    from condor_annex.providers.aws.session import _session
    calls: dict[str, list[dict]] = {}

    def capture(params, model, **_):
        calls.setdefault(model.name, []).append(json.loads(json.dumps(params, default=str)))

    _session().events.register("provide-client-params.ec2.*", capture)
    yield calls
    _session().events.unregister("provide-client-params.ec2.*", capture)


@pytest.fixture
def function_arn(aws):
    """A Lambda function in the emulator standing for the lease function (moto stores it; the
    local cloud runs the lease handler's own code in its place)."""
    import io
    import json
    import zipfile

    from condor_annex.providers.aws.session import make_client
    iam, lam = make_client(aws, "iam"), make_client(aws, "lambda")
    role = iam.create_role(RoleName="lease-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "lambda.amazonaws.com"}}]
    }))["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("index.py", "def handler(event, context):\n    return event\n")
    return lam.create_function(FunctionName="stack-lease", Runtime="python3.12", Role=role,
                               Handler="index.handler", Code={"ZipFile": buf.getvalue()},
                               Timeout=300)["FunctionArn"]
