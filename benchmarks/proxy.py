"""A small counting HTTP proxy in front of moto, on loopback.

HTCondor's original ``condor_annex`` needs it (local-cloud.md, fact 3): moto answers 404 to a
Lambda Invoke sent with ``Content-Type: application/x-amz-json-1.1``, so the proxy rewrites that
header to ``application/json`` on Lambda's REST paths (``/2015-03-31/functions/...``): Invoke, and
GetFunction, which moto 404s the same way.  It also counts every request by service and operation,
which is how the original tool's API calls are counted (it has no call hook); our tool goes
through the same proxy when the two are compared, so both pay the same hop.
"""

from __future__ import annotations

import http.client
import re
import threading
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer",
        "upgrade", "content-length"}
_SCOPE_RE = re.compile(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request")


class CountingProxy:
    """Forward ``127.0.0.1:<port>`` to ``upstream`` (``host:port``), counting requests.

    Args:
        upstream: moto's ``host:port``.
        launch_max_count: rewrite RunInstances' ``MinCount`` to its ``MaxCount``: moto launches
            MinCount instances where EC2 launches MaxCount when it has the capacity (the
            original asks for 1..N; ours for N..N, so this changes nothing for ours).

    Attributes:
        port: the proxy's port.
        calls: Counter of ``"<service>.<operation>"``.
        invocations: bodies of Lambda Invoke requests, in order.
    """

    def __init__(self, upstream: str, *, launch_max_count: bool = True) -> None:
        self.upstream = upstream
        self.launch_max_count = launch_max_count
        self.calls: Counter = Counter()
        self.invocations: list[bytes] = []
        #: (method, host, path, status) of the last requests (for error reports).
        self.trace: list[tuple[str, str, str, int]] = []
        #: (method, path, forwarded headers, reply body) of the last failed requests.
        self.errors: list[tuple[str, str, dict, bytes]] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:   # quiet
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if self.path.startswith("/2015-03-31/functions/"):   # Lambda's REST API
                    if self.path.split("?")[0].endswith("/invocations"):
                        proxy.invocations.append(body)
                    headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
                    headers["Content-Type"] = "application/json"
                if proxy.launch_max_count:
                    body = _min_count_is_max_count(body, self.headers)
                proxy._count(self.command, self.path, self.headers, body)
                conn = http.client.HTTPConnection(proxy.upstream, timeout=600)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    proxy.trace = proxy.trace[-49:] + [
                        (self.command, self.headers.get("Host", ""), self.path, resp.status)]
                    if resp.status >= 400:
                        proxy.errors = proxy.errors[-9:] + [
                            (self.command, self.path, dict(headers), data[:300])]
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP:
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="proxy",
                                        daemon=True)

    def start(self) -> "CountingProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> Counter:
        """Return the counts so far and start again from zero."""
        with self._lock:
            calls, self.calls = self.calls, Counter()
        return calls

    def _count(self, method: str, path: str, headers, body: bytes) -> None:
        if path.startswith("/moto-api"):
            return
        m = _SCOPE_RE.search(headers.get("Authorization") or "")
        host = (headers.get("Host") or "").split(":")[0]
        service = m.group(1) if m else host.split(".")[0]
        if ".s3." in host or host.startswith("s3."):
            service = "s3"
        op = ""
        target = headers.get("X-Amz-Target")
        if target:
            op = target.rsplit(".", 1)[-1]
        else:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
            form = {}
            if body and "x-www-form-urlencoded" in (headers.get("Content-Type") or ""):
                form = urllib.parse.parse_qs(body.decode(errors="replace"))
            action = (form.get("Action") or query.get("Action") or [""])[0]
            op = action or f"{method} {_rest_op(path)}"
        with self._lock:
            self.calls[f"{service}.{op}"] += 1


def _rest_op(path: str) -> str:
    """A short name for a REST call: the last non-id path word (``invocations``, ``functions``)."""
    parts = [p for p in urllib.parse.urlsplit(path).path.split("/") if p]
    if not parts:
        return "/"
    if "invocations" in parts:
        return "invocations"
    if "functions" in parts:
        return "function"
    return "object" if len(parts) >= 1 else "/"


def _min_count_is_max_count(body: bytes, headers) -> bytes:
    """RunInstances form body with ``MinCount`` set to ``MaxCount`` (other bodies unchanged).

    The body is re-encoded, so it no longer matches its SigV4 signature; moto does not check
    signatures.
    """
    if b"Action=RunInstances" not in body or \
            "x-www-form-urlencoded" not in (headers.get("Content-Type") or ""):
        return body
    pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
    values = dict(pairs)
    if "MaxCount" not in values:
        return body
    pairs = [(k, values["MaxCount"] if k == "MinCount" else v) for k, v in pairs]
    return urllib.parse.urlencode(pairs).encode()
