"""The AWS endpoint of the local cloud: a moto server on the host's loopback, and the account
the CLI uses in it.

The AWS gateway in front of moto (:mod:`~condor_annex.providers.local.gateway`) is started by the
daemon in its own process once moto answers (see :meth:`~condor_annex.providers.local.cloud.
LocalCloud.start`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from condor_annex.config import AwsSettings
from condor_annex.providers.local.layout import FAKE_KEY

#: Seconds moto may take to answer after it was started.
MOTO_START_S = 60


def start_moto(state_dir: Path) -> tuple[subprocess.Popen, int]:
    """Start ``python -m moto.server`` on a free loopback port (its output in
    ``state_dir/moto.log``) and wait until it answers.

    Returns:
        the server process (its own session) and its port.

    Raises:
        RuntimeError: it did not answer within :data:`MOTO_START_S` seconds, or exited.
    """
    port = free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    out = open(state_dir / "moto.log", "ab")
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                             "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + MOTO_START_S
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).read()
            return moto, port
        except OSError:
            if moto.poll() is not None:
                break
            time.sleep(0.2)
    raise RuntimeError("the AWS emulator (moto server) did not start; see "
                       f"{state_dir / 'moto.log'}")


def account_settings(state_dir: Path, endpoint_port: int) -> AwsSettings:
    """Prepare the account the CLI works in (docs/aws.md's IAM user, with its own key, in an
    account like AWS's: :func:`~condor_annex.providers.local.account.prepare_account`) and
    return the CLI's settings for the endpoint on ``endpoint_port`` (the gateway's).

    The user's key is written to ``state_dir/access_key`` and ``state_dir/secret_key`` (mode
    600; emulator credentials, not secrets of anyone's).
    """
    from condor_annex.providers.aws.session import make_client
    from condor_annex.providers.local.account import prepare_account
    access, secret = state_dir / "access_key", state_dir / "secret_key"
    for p in (access, secret):
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(FAKE_KEY + "\n")
    settings = AwsSettings(region="us-east-1", endpoint_url=f"http://127.0.0.1:{endpoint_port}",
                           access_key_file=str(access), secret_key_file=str(secret))
    keys = prepare_account(make_client(settings, "iam"), make_client(settings, "ec2"))
    for p, value in zip((access, secret), keys):
        with open(p, "w") as f:
            f.write(value + "\n")
    return settings


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    s = loopback_listener()
    port = s.getsockname()[1]
    s.close()
    return port


def loopback_listener() -> socket.socket:
    """A TCP socket listening on a free port of 127.0.0.1."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s
