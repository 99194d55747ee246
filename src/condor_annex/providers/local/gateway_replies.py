"""What the AWS gateway answers: AWS error replies in each protocol, and EC2's XML replies read
and rewritten.

An error is written as botocore parses it for the request's protocol (EC2, query, REST-XML,
JSON, REST-JSON, RPC v2 CBOR): AWS's "Common errors" pages of each API reference, e.g.
https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html.
Stdlib only.
"""

from __future__ import annotations

import json
import uuid
import xml.etree.ElementTree as ET

from condor_annex.providers.local.gateway_call import Call

__all__ = ["Reply", "error_reply", "server_error", "throttle_error", "xml_bytes", "xml_ns",
           "xml_path"]

#: An HTTP reply: (status, headers, body).
Reply = tuple[int, list[tuple[str, str]], bytes]


def _esc(text: str) -> str:
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _cbor_text_map(items: dict[str, str]) -> bytes:
    """A CBOR map of text strings (enough for an RPC v2 CBOR error body)."""
    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        if n < 256:
            return bytes([major << 5 | 24, n])
        return bytes([major << 5 | 25]) + n.to_bytes(2, "big")
    out = head(5, len(items))
    for k, v in items.items():
        for s in (k, v):
            b = s.encode()
            out += head(3, len(b)) + b
    return out


def error_reply(call: Call, code: str, message: str, status: int, *,
                head: bool = False) -> Reply:
    """An AWS error reply in the protocol of ``call``, as botocore parses it.

    Args:
        call: the request being answered (its protocol picks the format).
        code: the AWS error code (``RequestLimitExceeded``, ``ThrottlingException``...).
        message: the error message.
        status: the HTTP status (400, 429, 500, 503...).
        head: the request was a HEAD (the reply has no body, as S3's).

    Returns:
        ``(status, headers, body)``.
    """
    rid = str(uuid.uuid4())
    p = call.protocol
    if p == "ec2":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>'
                f"{_esc(code)}</Code><Message>{_esc(message)}</Message></Error></Errors>"
                f"<RequestID>{rid}</RequestID></Response>").encode()
        headers = [("Content-Type", "text/xml;charset=UTF-8")]
    elif p == "query":
        kind = "Receiver" if status >= 500 else "Sender"
        body = (f"<ErrorResponse><Error><Type>{kind}</Type><Code>{_esc(code)}</Code><Message>"
                f"{_esc(message)}</Message></Error><RequestId>{rid}</RequestId>"
                "</ErrorResponse>").encode()
        headers = [("Content-Type", "text/xml"), ("x-amzn-RequestId", rid)]
    elif p == "rest-xml":
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{_esc(code)}</Code>'
                f"<Message>{_esc(message)}</Message><RequestId>{rid}</RequestId>"
                f"<HostId>{rid}</HostId></Error>").encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", rid)]
    elif p == "json":
        body = json.dumps({"__type": code, "message": message}).encode()
        headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", rid)]
    elif p == "rpc-v2-cbor":
        body = _cbor_text_map({"__type": code, "message": message})
        headers = [("Content-Type", "application/cbor"), ("Smithy-Protocol", "rpc-v2-cbor"),
                   ("x-amzn-RequestId", rid)]
    else:   # rest-json
        body = json.dumps({"message": message}).encode()
        headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code),
                   ("x-amzn-RequestId", rid)]
    if head:
        body = b""
    return status, headers, body


def throttle_error(call: Call) -> tuple[int, str, str]:
    """(status, code, message) of AWS's answer to a request over the rate limit."""
    return {
        "ec2": (503, "RequestLimitExceeded", "Request limit exceeded."),
        "query": (400, "Throttling", "Rate exceeded"),
        "rest-xml": (503, "SlowDown", "Please reduce your request rate."),
    }.get(call.protocol) or (
        (429, "TooManyRequestsException", "Rate exceeded") if call.service == "lambda" else
        (429, "ThrottlingException", "Rate exceeded") if call.protocol == "rest-json" else
        (400, "ThrottlingException", "Rate exceeded"))


def server_error(call: Call, status: int) -> tuple[int, str, str]:
    """(status, code, message) of a transient AWS server error (500 or 503)."""
    if status == 503:
        code = "ServiceUnavailableException" if call.protocol == "rest-json" else \
            "ServiceUnavailable"
        return 503, code, "The service is unavailable. Please try again shortly."
    code = {"ec2": "InternalError", "rest-xml": "InternalError",
            "rest-json": "InternalServerException"}.get(call.protocol, "InternalFailure")
    return status, code, "An internal error has occurred. Please try again."


def xml_ns(root: ET.Element) -> str:
    """The ``{namespace}`` prefix of an XML reply's root tag (EC2's replies have one), or ""."""
    return root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""


def xml_path(ns: str, path: str) -> str:
    """``"a/b"`` with every step in namespace ``ns`` (see :func:`xml_ns`), for ``iterfind``."""
    return "/".join(ns + p for p in path.split("/"))


def xml_bytes(root: ET.Element) -> bytes:
    """An edited XML reply as bytes, in its root's namespace without prefixes (as EC2 writes)."""
    ns = xml_ns(root)[1:-1]
    try:
        return ET.tostring(root, encoding="utf-8", xml_declaration=True,
                           default_namespace=ns or None)
    except ValueError:   # an element outside the namespace: prefixes are fine for botocore
        return ET.tostring(root, encoding="utf-8", xml_declaration=True)
