"""The AWS gateway's HTTP proxy core: the threaded server's request handler, and forwarding
to moto.

The handler reads a request (keep-alive, chunked bodies, HEAD, absolute-form targets), hands
the gateway's own control requests (:data:`CONTROL_PREFIX`) to the gateway's control endpoint
and every AWS request to the gateway's ``handle``, and writes the reply — or closes the
connection unanswered when a ``drop_reply`` rule fired.  :func:`forward` sends a request to moto
unchanged but for the hop-by-hop headers (:data:`HOP`).  Stdlib only.
"""

from __future__ import annotations

import http.client
import json
import socket
from http.server import BaseHTTPRequestHandler
from typing import Protocol

from condor_annex.providers.local.gateway_replies import Reply

__all__ = ["CONTROL_PREFIX", "HOP", "Served", "forward", "handler_class"]

#: Headers that belong to one hop and are never forwarded as they are.
HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
                 "trailer", "upgrade", "content-length", "expect"})
#: Path prefix of the gateway's own control endpoint (never a valid S3 bucket name).
CONTROL_PREFIX = "/_gateway/"


class Served(Protocol):
    """What the handler needs of the gateway it serves (:class:`.gateway.Gateway`)."""

    def handle(self, method: str, path: str, headers,
               body: bytes) -> tuple[Reply | None, object | None]:
        """Answer one AWS request: ``(reply, drop)``, drop not None when the reply is lost."""

    def control_request(self, method: str, path: str, body: bytes) -> tuple[int, object]:
        """Answer one control request: ``(HTTP status, JSON-ready payload)``."""

    def connection_opened(self, sock: socket.socket) -> None:
        """A client connection opened (the gateway closes those left when it stops)."""

    def connection_closed(self, sock: socket.socket) -> None:
        """A client connection closed."""


def forward(upstream: str, timeout_s: float, method: str, path: str,
            headers: list[tuple[str, str]], body: bytes | None) -> Reply:
    """Send one request to moto and read its whole reply.

    Args:
        upstream: moto's ``host:port``.
        timeout_s: seconds to wait for moto.
        method, path: the request line.
        headers: the headers to send (hop-by-hop ones already left out).
        body: the body, or None.

    Returns:
        moto's reply; a 502 (``text/plain``) when moto could not be reached or broke the
        connection.
    """
    try:
        conn = http.client.HTTPConnection(upstream, timeout=timeout_s)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.getheaders(), data
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as e:
        msg = f"gateway: upstream {upstream} failed: {e}".encode()
        return 502, [("Content-Type", "text/plain")], msg


def handler_class(gateway: Served) -> type[BaseHTTPRequestHandler]:
    """The request handler class of a :class:`http.server.ThreadingHTTPServer` serving
    ``gateway``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:   # quiet
            pass

        def setup(self) -> None:
            super().setup()
            gateway.connection_opened(self.connection)

        def finish(self) -> None:
            gateway.connection_closed(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def _read_body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass   # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(65537)
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, reply: Reply) -> None:
            status, headers, data = reply
            self.send_response_only(status)
            for k, v in headers:
                if k.lower() not in HOP or (k.lower() == "content-length"
                                             and self.command == "HEAD"):
                    self.send_header(k, v)
            if self.command != "HEAD" and status not in (204, 304):
                self.send_header("Content-Length", str(len(data)))
            elif self.command == "HEAD" and not any(k.lower() == "content-length"
                                                    for k, _ in headers):
                self.send_header("Content-Length", "0")
            if self.close_connection:
                self.send_header("Connection", "close")
            # end_headers(), with the body: one write (BaseHTTPRequestHandler's buffer of the
            # header lines; private, so not in typeshed)
            buffer = self._headers_buffer   # type: ignore[attr-defined]
            buffer.append(b"\r\n")
            if self.command != "HEAD" and data:
                buffer.append(data)
            self.flush_headers()

        def _handle(self) -> None:
            body = self._read_body()
            path = self.path
            if path.startswith(("http://", "https://")):   # absolute form
                path = "/" + path.split("://", 1)[1].partition("/")[2]
            if path.startswith(CONTROL_PREFIX):
                try:
                    status, payload = gateway.control_request(self.command, path, body)
                except (ValueError, TypeError, KeyError) as e:
                    status, payload = 400, {"error": f"{type(e).__name__}: {e}"}
                data = json.dumps(payload).encode()
                self._send((status, [("Content-Type", "application/json")], data))
                return
            reply, drop = gateway.handle(self.command, path, self.headers, body)
            if drop is not None or reply is None:
                self.close_connection = True
                return
            self._send(reply)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle

    return Handler
