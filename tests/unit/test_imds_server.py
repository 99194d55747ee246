"""The local cloud's IMDSv2 server, as an instance (and botocore) sees it over HTTP."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time

import pytest

from condor_annex.providers.local.imds import ImdsServer, InstanceMetadata

ROLE_KEY = ("ASIAROLEKEYEXAMPLE01", "role-secret-do-not-log", "role-session-token-do-not-log")


def _metadata(instance_id: str, ip: str, **kw) -> InstanceMetadata:
    defaults = dict(
        region="us-east-1", availability_zone="us-east-1a", private_ip=ip, public_ip="",
        tags={"htcondor:AnnexName": "my-annex", "Name": "node"},
        instance_profile_arn="arn:aws:iam::123456789012:instance-profile/annex-profile",
        role_name="annex-role", credentials=ROLE_KEY, user_data=None)
    defaults.update(kw)
    return InstanceMetadata(instance_id=instance_id, **defaults)


@pytest.fixture
def instances() -> dict[str, InstanceMetadata]:
    """Two instances on two loopback addresses (Linux routes all of 127/8 to lo)."""
    return {
        "127.0.0.1": _metadata("i-0000000000000000a", "127.0.0.1", public_ip="203.0.113.7",
                               user_data=b"#!/bin/sh\necho hi\n"),
        "127.0.0.2": _metadata("i-0000000000000000b", "127.0.0.2"),
    }


@pytest.fixture
def server(instances):
    srv = ImdsServer(instances.get)
    srv.start()
    yield srv
    srv.stop()


def request(server: ImdsServer, method: str, path: str, headers: dict | None = None, *,
            source: str = "127.0.0.1") -> tuple[int, bytes, http.client.HTTPMessage]:
    host, port = server.address
    conn = http.client.HTTPConnection(host, port, timeout=5, source_address=(source, 0))
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def token(server: ImdsServer, *, source: str = "127.0.0.1", ttl: str = "60") -> str:
    status, body, headers = request(server, "PUT", "/latest/api/token",
                                    {"X-aws-ec2-metadata-token-ttl-seconds": ttl}, source=source)
    assert status == 200
    assert headers["X-aws-ec2-metadata-token-ttl-seconds"] == ttl
    return body.decode()


def get(server: ImdsServer, path: str, tok: str, *, source: str = "127.0.0.1"):
    return request(server, "GET", path, {"X-aws-ec2-metadata-token": tok}, source=source)


def test_get_without_token_is_refused_401_imdsv1_not_served(server):
    status, body, _ = request(server, "GET", "/latest/meta-data/instance-id")
    assert status == 401
    assert b"i-0" not in body
    status, _, _ = get(server, "/latest/meta-data/instance-id", "not-a-token")
    assert status == 401


@pytest.mark.parametrize("ttl", [None, "", "0", "21601", "-5", "abc", "1.5"])
def test_token_ttl_outside_1_to_21600_is_400(server, ttl):
    headers = {} if ttl is None else {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
    status, body, _ = request(server, "PUT", "/latest/api/token", headers)
    assert status == 400
    assert body == b""


@pytest.mark.parametrize("ttl", ["1", "21600"])
def test_token_ttl_bounds_are_accepted(server, ttl):
    assert token(server, ttl=ttl)


def test_token_request_with_x_forwarded_for_is_403(server):
    status, body, _ = request(server, "PUT", "/latest/api/token", {
        "X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.0.0.9"})
    assert status == 403
    assert body == b""


def test_unknown_caller_gets_404(instances):
    with ImdsServer({"127.0.0.1": instances["127.0.0.1"]}.get) as srv:
        status, _, _ = request(srv, "PUT", "/latest/api/token",
                               {"X-aws-ec2-metadata-token-ttl-seconds": "60"}, source="127.0.0.3")
        assert status == 404
        good = token(srv)
        status, body, _ = get(srv, "/latest/meta-data/instance-id", good, source="127.0.0.3")
        assert status == 404
        assert b"i-0" not in body


def test_each_caller_sees_its_own_instance_and_tokens_are_bound_to_the_caller(server):
    tok_a, tok_b = token(server), token(server, source="127.0.0.2")
    assert get(server, "/latest/meta-data/instance-id", tok_a)[1] == b"i-0000000000000000a"
    assert get(server, "/latest/meta-data/instance-id", tok_b,
               source="127.0.0.2")[1] == b"i-0000000000000000b"
    # B cannot use A's token.
    assert get(server, "/latest/meta-data/instance-id", tok_a, source="127.0.0.2")[0] == 401


def test_token_expires_after_its_ttl(server):
    tok = token(server, ttl="1")
    assert get(server, "/latest/meta-data/instance-id", tok)[0] == 200
    time.sleep(1.2)
    assert get(server, "/latest/meta-data/instance-id", tok)[0] == 401


def test_revoked_tokens_get_401(server):
    tok = token(server)
    server.revoke_tokens()
    assert get(server, "/latest/meta-data/instance-id", tok)[0] == 401


def test_metadata_paths(server):
    tok = token(server)
    listing = get(server, "/latest/meta-data/", tok)[1].decode().splitlines()
    assert {"instance-id", "local-ipv4", "public-ipv4", "hostname", "placement/", "iam/",
            "tags/"} <= set(listing)
    assert get(server, "/latest/meta-data/local-ipv4", tok)[1] == b"127.0.0.1"
    assert get(server, "/latest/meta-data/public-ipv4", tok)[1] == b"203.0.113.7"
    assert get(server, "/latest/meta-data/hostname", tok)[1] == b"ip-127-0-0-1.ec2.internal"
    assert get(server, "/latest/meta-data/placement/region", tok)[1] == b"us-east-1"
    assert get(server, "/latest/meta-data/placement/availability-zone", tok)[1] == b"us-east-1a"
    assert get(server, "/latest/meta-data/tags/instance", tok)[1] == b"Name\nhtcondor:AnnexName"
    assert get(server, "/latest/meta-data/tags/instance/htcondor:AnnexName", tok)[1] == b"my-annex"
    assert get(server, "/latest/meta-data/tags/instance/htcondor%3AAnnexName", tok)[1] \
        == b"my-annex"
    assert get(server, "/latest/meta-data/tags/instance/missing", tok)[0] == 404
    assert get(server, "/latest/meta-data/no-such-key", tok)[0] == 404
    assert get(server, "/latest/user-data", tok)[1] == b"#!/bin/sh\necho hi\n"

    info = json.loads(get(server, "/latest/meta-data/iam/info", tok)[1])
    assert info["Code"] == "Success"
    assert info["InstanceProfileArn"] == \
        "arn:aws:iam::123456789012:instance-profile/annex-profile"
    assert info["InstanceProfileId"].startswith("AIPA")
    assert get(server, "/latest/meta-data/iam/security-credentials/", tok)[1] == b"annex-role"
    creds = json.loads(get(server, "/latest/meta-data/iam/security-credentials/annex-role",
                           tok)[1])
    assert (creds["Code"], creds["Type"]) == ("Success", "AWS-HMAC")
    assert (creds["AccessKeyId"], creds["SecretAccessKey"], creds["Token"]) == ROLE_KEY
    assert creds["Expiration"].endswith("Z") and creds["LastUpdated"].endswith("Z")

    doc = json.loads(get(server, "/latest/dynamic/instance-identity/document", tok)[1])
    assert doc["instanceId"] == "i-0000000000000000a"
    assert (doc["region"], doc["availabilityZone"], doc["privateIp"]) == \
        ("us-east-1", "us-east-1a", "127.0.0.1")
    assert doc["instanceType"]


def test_absent_public_ip_user_data_and_profile_are_404(instances):
    instances["127.0.0.1"] = _metadata("i-0c", "127.0.0.1", instance_profile_arn="",
                                       role_name="", credentials=None)
    with ImdsServer(instances.get) as srv:
        tok = token(srv)
        for path in ("/latest/meta-data/public-ipv4", "/latest/user-data",
                     "/latest/meta-data/iam/info",
                     "/latest/meta-data/iam/security-credentials/"):
            assert get(srv, path, tok)[0] == 404, path
        assert "public-ipv4" not in get(srv, "/latest/meta-data/", tok)[1].decode().split()


def test_other_methods_are_405(server):
    assert request(server, "POST", "/latest/api/token")[0] == 405
    assert request(server, "PUT", "/latest/meta-data/instance-id",
                   {"X-aws-ec2-metadata-token-ttl-seconds": "60"})[0] == 405


def test_serves_on_a_socket_it_is_given(instances):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    with ImdsServer(instances.get, sock=sock) as srv:
        assert srv.address == sock.getsockname()
        assert get(srv, "/latest/meta-data/instance-id", token(srv))[1] == b"i-0000000000000000a"
    assert sock.fileno() == -1  # closed by stop()


def test_request_counters(server):
    tok = token(server)
    get(server, "/latest/meta-data/instance-id", tok)
    get(server, "/latest/meta-data/instance-id", "bad")
    assert server.count("PUT", "/latest/api/token", 200) == 1
    assert server.count("GET", "/latest/meta-data/instance-id") == 2
    assert server.count(status=401) == 1


def test_botocore_takes_role_credentials_from_the_server(server, monkeypatch, caplog):
    """boto3's own credential chain accepts the credentials document we serve."""
    import boto3

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "false")  # conftest disables it globally
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", server.url)
    monkeypatch.setenv("AWS_EC2_METADATA_V1_DISABLED", "true")
    caplog.set_level(logging.DEBUG, logger="condor_annex.providers.local.imds")

    creds = boto3.session.Session(region_name="us-east-1").get_credentials()

    assert creds is not None
    assert creds.method == "iam-role"
    frozen = creds.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ROLE_KEY
    assert server.count("GET", "/latest/meta-data/iam/security-credentials/annex-role", 200) == 1
    assert server.count("PUT", "/latest/api/token", 200) >= 1
    server_lines = [r.getMessage() for r in caplog.records
                    if r.name.startswith("condor_annex.providers.local")]
    assert server_lines  # the server did log the requests...
    for line in server_lines:  # ...but never a secret
        assert ROLE_KEY[1] not in line and ROLE_KEY[2] not in line
