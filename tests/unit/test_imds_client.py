"""The agent's IMDSv2 client against a scripted metadata service over HTTP (counting requests)."""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from condor_annex.agent.imds import Action, ImdsClient, ImdsError, imds_retry_action
from condor_annex.providers.local.imds import ImdsServer, InstanceMetadata

TOKENS = ["tok-FIRST-0123456789abcdef", "tok-SECOND-0123456789abcdef"]


class ScriptedImds:
    """An HTTP server answering each method from a script of (status, body, headers).

    The last entry of a script repeats once the script is used up. Every request is recorded as
    (method, path, headers) for the test to count and inspect.
    """

    def __init__(self, put: list, get: list) -> None:
        self.scripts = {"PUT": list(put), "GET": list(get)}
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                if self.headers.get("Content-Length"):
                    self.rfile.read(int(self.headers["Content-Length"]))
                with outer._lock:
                    outer.calls.append((self.command, self.path,
                                        {k.lower(): v for k, v in self.headers.items()}))
                    script = outer.scripts[self.command]
                    status, body, headers = script.pop(0) if len(script) > 1 else script[0]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = _answer  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def count(self, method: str) -> int:
        return sum(1 for m, _, _ in self.calls if m == method)

    def __enter__(self) -> ScriptedImds:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def ok(body: bytes, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    return 200, body, headers


def status(code: int, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    return code, b"", {k.replace("_", "-"): v for k, v in headers.items()}


def client(url: str, **kw) -> ImdsClient:
    kw.setdefault("backoff_initial_s", 0.01)
    kw.setdefault("backoff_max_s", 0.05)
    kw.setdefault("deadline_s", 5.0)
    return ImdsClient(url, **kw)


@pytest.mark.parametrize("code,token_request,refreshed,expected", [
    (None, False, False, Action.RETRY),
    (200, True, False, Action.USE),
    (401, False, False, Action.REFRESH_TOKEN),
    (401, False, True, Action.FAIL),
    (401, True, False, Action.FAIL),
    (403, True, False, Action.FAIL),
    (403, False, False, Action.FAIL),
    (404, False, False, Action.MISSING),
    (404, True, False, Action.FAIL),
    (405, True, False, Action.FAIL),
    (400, True, False, Action.FAIL),
    (429, False, False, Action.RETRY),
    (500, False, False, Action.RETRY),
    (503, True, False, Action.RETRY),
    (301, False, False, Action.FAIL),
], ids=lambda v: str(v))
def test_retry_policy_table(code, token_request, refreshed, expected):
    assert imds_retry_action(code, token_request=token_request,
                             token_refreshed=refreshed) is expected


def test_token_put_then_get_with_token_and_ttl_header():
    with ScriptedImds(put=[ok(TOKENS[0].encode())], get=[ok(b"i-0abc")]) as imds:
        c = client(imds.url, token_ttl_s=300)
        assert c.instance_id() == "i-0abc"
        assert c.region() == "i-0abc"  # same scripted body; the point is the token is reused
    (m1, p1, h1), (m2, p2, h2), (m3, _, h3) = imds.calls
    assert (m1, p1) == ("PUT", "/latest/api/token")
    assert h1["x-aws-ec2-metadata-token-ttl-seconds"] == "300"
    assert (m2, p2) == ("GET", "/latest/meta-data/instance-id")
    assert h2["x-aws-ec2-metadata-token"] == TOKENS[0] == h3["x-aws-ec2-metadata-token"]
    assert imds.count("PUT") == 1


def test_401_refreshes_the_token_once_then_succeeds():
    with ScriptedImds(put=[ok(TOKENS[0].encode()), ok(TOKENS[1].encode())],
                      get=[status(401), ok(b"i-0abc")]) as imds:
        assert client(imds.url).instance_id() == "i-0abc"
    assert [m for m, _, _ in imds.calls] == ["PUT", "GET", "PUT", "GET"]
    assert imds.calls[3][2]["x-aws-ec2-metadata-token"] == TOKENS[1]


def test_second_401_after_a_refresh_fails():
    with ScriptedImds(put=[ok(TOKENS[0].encode()), ok(TOKENS[1].encode())],
                      get=[status(401)]) as imds:
        with pytest.raises(ImdsError) as err:
            client(imds.url).instance_id()
    assert err.value.status == 401
    assert [m for m, _, _ in imds.calls] == ["PUT", "GET", "PUT", "GET"]


def test_403_on_token_fails_fast_without_retries():
    with ScriptedImds(put=[status(403)], get=[ok(b"never")]) as imds:
        started = time.monotonic()
        with pytest.raises(ImdsError) as err:
            client(imds.url, deadline_s=30).instance_id()
        assert time.monotonic() - started < 2
    assert err.value.status == 403
    assert len(imds.calls) == 1


def test_403_on_get_fails_fast_without_retries():
    with ScriptedImds(put=[ok(TOKENS[0].encode())], get=[status(403)]) as imds:
        with pytest.raises(ImdsError):
            client(imds.url, deadline_s=30).instance_id()
    assert [m for m, _, _ in imds.calls] == ["PUT", "GET"]


def test_other_4xx_fails_fast():
    with ScriptedImds(put=[status(400)], get=[ok(b"never")]) as imds:
        with pytest.raises(ImdsError):
            client(imds.url).instance_id()
    assert len(imds.calls) == 1


def test_token_503_503_200_succeeds_after_retries():
    with ScriptedImds(put=[status(503), status(503), ok(TOKENS[0].encode())],
                      get=[ok(b"i-0abc")]) as imds:
        assert client(imds.url).instance_id() == "i-0abc"
    assert imds.count("PUT") == 3
    assert imds.count("GET") == 1


def test_get_500_then_200_succeeds_after_a_retry_with_the_same_token():
    with ScriptedImds(put=[ok(TOKENS[0].encode())], get=[status(500), ok(b"us-east-1")]) as imds:
        assert client(imds.url).region() == "us-east-1"
    assert [m for m, _, _ in imds.calls] == ["PUT", "GET", "GET"]


def test_retry_after_is_honoured():
    with ScriptedImds(put=[status(429, Retry_After="1"), ok(TOKENS[0].encode())],
                      get=[ok(b"i-0abc")]) as imds:
        started = time.monotonic()
        assert client(imds.url).instance_id() == "i-0abc"
        assert time.monotonic() - started >= 1.0


def test_persistent_503_gives_up_at_the_deadline():
    with ScriptedImds(put=[status(503)], get=[ok(b"never")]) as imds:
        started = time.monotonic()
        with pytest.raises(ImdsError, match="deadline") as err:
            client(imds.url, deadline_s=1.0).instance_id()
        elapsed = time.monotonic() - started
    assert err.value.status == 503
    assert 0.5 < elapsed < 2.0
    assert imds.count("PUT") > 3


def test_connection_refused_is_retried_until_the_deadline():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ImdsError) as err:
        client(f"http://127.0.0.1:{port}", deadline_s=0.8).instance_id()
    assert err.value.status is None
    assert 0.4 < time.monotonic() - started < 2.0


def test_404_is_none_for_optional_lookups_and_an_error_for_required_ones():
    with ScriptedImds(put=[ok(TOKENS[0].encode())], get=[status(404)]) as imds:
        c = client(imds.url)
        assert c.tag("htcondor:AnnexName") is None
        assert c.user_data() is None
        assert c.instance_profile_arn() is None
        with pytest.raises(ImdsError) as err:
            c.instance_id()
    assert err.value.status == 404
    assert imds.calls[1][1] == "/latest/meta-data/tags/instance/htcondor:AnnexName"
    assert imds.count("PUT") == 1  # 404s do not cost a new token


def test_token_never_in_logs_or_errors(caplog):
    caplog.set_level(logging.DEBUG)
    with ScriptedImds(put=[ok(TOKENS[0].encode()), ok(TOKENS[1].encode())],
                      get=[status(503), status(401), status(401)]) as imds:
        with pytest.raises(ImdsError) as err:
            client(imds.url).instance_id()
    assert imds.count("GET") == 3  # the script ran: 503 retried, 401 refreshed, 401 failed
    assert caplog.records
    for text in [r.getMessage() for r in caplog.records] + [str(err.value), repr(err.value)]:
        for tok in TOKENS:
            assert tok not in text


def test_http_proxy_settings_are_ignored(monkeypatch):
    """IMDS is link-local: a proxy would see the token, so none is ever used."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    with ScriptedImds(put=[ok(TOKENS[0].encode())], get=[ok(b"i-0abc")]) as imds:
        assert client(imds.url, deadline_s=2).instance_id() == "i-0abc"


def test_bad_ttl_is_refused_before_any_request():
    with pytest.raises(ValueError):
        ImdsClient("http://127.0.0.1:1", token_ttl_s=0)
    with pytest.raises(ValueError):
        ImdsClient("http://127.0.0.1:1", token_ttl_s=21601)


def test_convenience_lookups_against_the_local_imds_server():
    md = InstanceMetadata(
        instance_id="i-0123456789abcdef0", region="eu-west-1", availability_zone="eu-west-1b",
        private_ip="127.0.0.1", public_ip="", tags={"htcondor:AnnexName": "a-b"},
        instance_profile_arn="arn:aws:iam::123456789012:instance-profile/p", role_name="r",
        credentials=("AK", "SK", "ST"), user_data=b"\x00raw")
    with ImdsServer(lambda ip: md if ip == "127.0.0.1" else None) as srv:
        c = ImdsClient(srv.url)
        assert c.instance_id() == "i-0123456789abcdef0"
        assert c.region() == "eu-west-1"
        assert c.public_ipv4() == "127.0.0.1"  # no public address: falls back to local-ipv4
        assert c.tag("htcondor:AnnexName") == "a-b"
        assert c.tag("other") is None
        assert c.instance_profile_arn() == "arn:aws:iam::123456789012:instance-profile/p"
        assert c.user_data() == b"\x00raw"
        assert srv.count("PUT", "/latest/api/token") == 1
        assert srv.count(status=401) == 0
        md.public_ip = "198.51.100.4"
        assert c.public_ipv4() == "198.51.100.4"
        srv.revoke_tokens()  # as if IMDS restarted: the client refreshes on 401
        assert c.instance_id() == "i-0123456789abcdef0"
        assert srv.count(status=401) == 1
        assert srv.count("PUT", "/latest/api/token") == 2
