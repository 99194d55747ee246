"""Isolated environments for the benchmarks: a private user config, fake credentials, and a plain
moto server on loopback.

Nothing here touches the invoking user's ``~/.condor``: every benchmark runs with
``CONDOR_ANNEX_USER_CONFIG`` pointing into a temporary directory, and with botocore's credential
chain cut off from real AWS (fake keys, no metadata service, no shared config files).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

#: An AMI moto knows (one of its bundled Amazon images).
MOTO_AMI = "ami-03cf127a"
#: A fake IDTOKEN (a JWT's shape: it must start with "ey"); never accepted by any pool.
FAKE_JWT = "eyJhbGciOiJIUzI1NiIsImtpZCI6IlBPT0wifQ.eyJzdWIiOiJiZW5jaCJ9.ZmFrZQ"

#: Environment every benchmark (and every child it starts) runs with.
SAFE_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
}
_UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def isolated_home(prefix: str = "annex-bench-") -> Iterator[Path]:
    """A temporary directory holding ``user_config`` (and fake key files), set as
    ``CONDOR_ANNEX_USER_CONFIG`` (with :data:`SAFE_ENV`) for this process while the block runs.

    Yields:
        the directory.
    """
    saved = {k: os.environ.get(k) for k in (*SAFE_ENV, *_UNSET, "CONDOR_ANNEX_USER_CONFIG")}
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        home = Path(tmp)
        os.environ.update(SAFE_ENV)
        for k in _UNSET:
            os.environ.pop(k, None)
        os.environ["CONDOR_ANNEX_USER_CONFIG"] = str(home / "user_config")
        try:
            yield home
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def write_key_files(home: Path) -> tuple[Path, Path]:
    """Fake access and secret key files (mode 600, as the CLI requires)."""
    paths = home / "access_key", home / "secret_key"
    for p in paths:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("testing\n")
    return paths


def write_fake_token_command(home: Path) -> Path:
    """A script standing in for ``condor_token_create``: prints :data:`FAKE_JWT`."""
    path = home / "fake_token_create"
    path.write_text(f"#!/bin/sh\necho {FAKE_JWT}\n")
    path.chmod(0o755)
    return path


def child_env() -> dict[str, str]:
    """The environment for child processes (the current one, which :func:`isolated_home` set)."""
    env = dict(os.environ)
    env.update(SAFE_ENV)
    for k in _UNSET:
        env.pop(k, None)
    return env


@contextlib.contextmanager
def moto_server(log_dir: Path) -> Iterator[str]:
    """A plain ``moto.server`` on a free loopback port for the block; yields its URL.

    The server is stopped (SIGTERM, then SIGKILL) when the block ends, also on error.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_dir / "moto.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1",
                                 "-p", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=child_env())
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start: "
                                       + (log_dir / "moto.log").read_text()[-2000:]) from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def moto_post(url: str, path: str, body: bytes = b"") -> bytes:
    """POST to moto's own API (``/moto-api/...``)."""
    req = urllib.request.Request(url + path, data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.read()


def reset_moto(url: str) -> None:
    """Forget every resource in the moto server."""
    moto_post(url, "/moto-api/reset")


def write_moto_config(home: Path, endpoint: str, *, collector: str = "127.0.0.1:9618") -> None:
    """The user config for a plain-moto benchmark: endpoint, fake keys, a moto AMI, a fake
    token command, and ``ANNEX_COLLECTOR`` only (no ``COLLECTOR_HOST``: status skips the pool)."""
    from condor_annex import config

    access, secret = write_key_files(home)
    token = write_fake_token_command(home)
    config.write_block("bench", {
        "ANNEX_AWS_ENDPOINT_URL": endpoint,
        "ANNEX_DEFAULT_AWS_REGION": "us-east-1",
        "ANNEX_DEFAULT_ACCESS_KEY_FILE": str(access),
        "ANNEX_DEFAULT_SECRET_KEY_FILE": str(secret),
        "ANNEX_DEFAULT_ODI_IMAGE_ID": MOTO_AMI,
        "ANNEX_COLLECTOR": collector,
        "ANNEX_TRUST_DOMAIN": "bench.invalid",
        "ANNEX_TOKEN_COMMAND": str(token),
    })
