"""The local cloud's instance metadata service: IMDSv2 for many instances, one HTTP server.

Each local instance has its own IPv4 address, so the caller is identified **by source address**,
as EC2's hypervisor does by network interface. The server follows the IMDSv2 behaviour described
in AWS's "Use the Instance Metadata Service to access instance metadata" guide:

* ``PUT /latest/api/token`` needs ``X-aws-ec2-metadata-token-ttl-seconds`` (1-21600, else 400);
  the token is bound to the caller's address and expires after the TTL. A request carrying
  ``X-Forwarded-For`` is refused (403), so a proxy on the instance cannot get a token.
* Every GET needs a valid token in ``X-aws-ec2-metadata-token`` (401 otherwise): IMDSv1 is refused.
* A caller whose address belongs to no instance gets 404.

Served paths (under ``/latest/``): ``meta-data/`` listings; ``instance-id``, ``local-ipv4``,
``public-ipv4``, ``hostname``, ``local-hostname``, ``placement/region``,
``placement/availability-zone``, ``iam/info``, ``iam/security-credentials/[<role>]``,
``tags/instance[/<key>]``; ``user-data``; ``dynamic/instance-identity/document``; for
cloud-init's EC2 datasource also ``mac``, ``network/interfaces/macs/<mac>/...`` (the instance's
own eth0 MAC: cloud-init matches it with the NIC it sees in sysfs), ``ami-id``,
``ami-launch-index``, ``reservation-id``, ``security-groups``, ``services/domain``; once EC2
has told the instance, ``spot/instance-action`` and ``spot/termination-time`` (an interruption
notice) and ``events/recommendations/rebalance`` (a rebalance recommendation), 404 before
(:mod:`.interruptions`; EC2 User Guide, "Spot Instance interruption notices", "EC2 instance
rebalance recommendations").  The same
tree is served under the dated versions cloud-init asks for first (``/2021-03-23/``,
``/2018-09-24/``, ...; "Get the available versions of the instance metadata", EC2 User Guide).

Credentials and tokens are never logged. Thread-safety: ``lookup`` is called from the server's
request threads and must be thread-safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TOKEN_TTL_MAX_S = 21600
#: A dated metadata version (``/2021-03-23/...``), served like ``/latest/``.
_VERSION = re.compile(r"(19|20)[0-9]{2}-[0-9]{2}-[0-9]{2}")
#: Role credentials are served as valid for this long (EC2 rotates them about every 6 hours).
CREDENTIALS_LIFETIME = timedelta(hours=6)


@dataclass
class InstanceMetadata:
    """What the metadata service knows about one instance.

    Attributes:
        instance_id: e.g. ``"i-0abc..."``.
        region: e.g. ``"us-east-1"``.
        availability_zone: e.g. ``"us-east-1a"``.
        private_ip: the instance's own address (also the address it calls from).
        public_ip: public IPv4 address, or "" for none (``public-ipv4`` is then 404).
        tags: instance tags served under ``meta-data/tags/instance``.
        instance_profile_arn: IAM instance profile ARN, or "" for none (``iam/`` is then 404).
        role_name: the profile's role, served under ``iam/security-credentials/``.
        credentials: the role's (access_key_id, secret_access_key, session_token).
        user_data: raw user data, or None (``user-data`` is then 404).
        instance_type: e.g. ``"m4.large"`` (identity document).
        image_id: AMI id (identity document).
        account_id: AWS account id (identity document, instance profile id).
        mac: the instance's eth0 MAC address (``mac`` and ``network/interfaces/macs/``), or ""
            for none (those paths are then 404).
        vpc_cidr: the CIDR of the instance's subnet and VPC (network interface entries).
        spot_instance_action: the body of ``spot/instance-action``, e.g. ``{"action":
            "terminate", "time": "2017-09-18T08:22:00Z"}``, or "" before an interruption
            notice (404; ``spot/termination-time`` then serves the same time).
        rebalance_recommendation: the body of ``events/recommendations/rebalance``, e.g.
            ``{"noticeTime": "2020-10-27T08:22:00Z"}``, or "" before one (404).
    """

    instance_id: str
    region: str
    availability_zone: str
    private_ip: str
    public_ip: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    instance_profile_arn: str = ""
    role_name: str = ""
    credentials: tuple[str, str, str] | None = None
    user_data: bytes | None = None
    instance_type: str = "m4.large"
    image_id: str = ""
    account_id: str = "123456789012"
    mac: str = ""
    vpc_cidr: str = "10.200.0.0/16"
    spot_instance_action: str = ""
    rebalance_recommendation: str = ""

    def __repr__(self) -> str:  # keep credentials out of any accidental log line
        return (f"InstanceMetadata(instance_id={self.instance_id!r}, "
                f"private_ip={self.private_ip!r}, role_name={self.role_name!r})")


_Leaf = str | bytes | Callable[[], str]
_Tree = dict[str, "_Leaf | _Tree"]


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _hostname(md: InstanceMetadata) -> str:
    domain = "ec2.internal" if md.region == "us-east-1" else f"{md.region}.compute.internal"
    return f"ip-{md.private_ip.replace('.', '-')}.{domain}"


def _credentials_json(md: InstanceMetadata) -> str:
    """The body EC2 serves at ``iam/security-credentials/<role>`` (read by botocore)."""
    now = datetime.now(timezone.utc)
    access_key, secret_key, session_token = md.credentials or ("", "", "")
    return json.dumps({
        "Code": "Success",
        "LastUpdated": _iso(now),
        "Type": "AWS-HMAC",
        "AccessKeyId": access_key,
        "SecretAccessKey": secret_key,
        "Token": session_token,
        "Expiration": _iso(now + CREDENTIALS_LIFETIME),
    }, indent=2)


def _identity_document(md: InstanceMetadata) -> str:
    return json.dumps({
        "accountId": md.account_id,
        "architecture": "x86_64",
        "availabilityZone": md.availability_zone,
        "imageId": md.image_id,
        "instanceId": md.instance_id,
        "instanceType": md.instance_type,
        "pendingTime": _iso(datetime.now(timezone.utc)),
        "privateIp": md.private_ip,
        "region": md.region,
        "version": "2017-09-30",
    }, indent=2)


def _tree(md: InstanceMetadata) -> _Tree:
    """The ``/latest/`` tree of one instance: dicts are listings, leaves are bodies."""
    meta: _Tree = {
        "hostname": _hostname(md),
        "instance-id": md.instance_id,
        "instance-type": md.instance_type,
        "local-hostname": _hostname(md),
        "local-ipv4": md.private_ip,
        "placement": {"availability-zone": md.availability_zone, "region": md.region},
        "tags": {"instance": dict(md.tags)},
    }
    if md.image_id:
        meta["ami-id"] = md.image_id
    meta["ami-launch-index"] = "0"
    meta["reservation-id"] = "r-" + hashlib.sha256(md.instance_id.encode()).hexdigest()[:17]
    meta["security-groups"] = "default"
    meta["services"] = {"domain": "amazonaws.com", "partition": "aws"}
    if md.mac:
        meta["mac"] = md.mac
        eni = hashlib.sha256(md.mac.encode()).hexdigest()[:17]
        meta["network"] = {"interfaces": {"macs": {md.mac: {
            "device-number": "0", "interface-id": f"eni-{eni}",
            "local-hostname": _hostname(md), "local-ipv4s": md.private_ip, "mac": md.mac,
            "owner-id": md.account_id, "security-group-ids": "sg-local", "security-groups":
            "default", "subnet-id": "subnet-local", "subnet-ipv4-cidr-block": md.vpc_cidr,
            "vpc-id": "vpc-local", "vpc-ipv4-cidr-block": md.vpc_cidr,
            "vpc-ipv4-cidr-blocks": md.vpc_cidr}}}}
    if md.public_ip:
        meta["public-ipv4"] = md.public_ip
    if md.spot_instance_action:
        when = json.loads(md.spot_instance_action).get("time", "")
        meta["spot"] = {"instance-action": md.spot_instance_action, "termination-time": when}
    if md.rebalance_recommendation:
        meta["events"] = {"recommendations": {"rebalance": md.rebalance_recommendation}}
    if md.instance_profile_arn:
        profile_name = md.instance_profile_arn.rsplit("/", 1)[-1]
        info = json.dumps({
            "Code": "Success",
            "LastUpdated": _iso(datetime.now(timezone.utc)),
            "InstanceProfileArn": md.instance_profile_arn,
            "InstanceProfileId": "AIPA" + hashlib.sha256(profile_name.encode()).hexdigest()[:17]
            .upper(),
        }, indent=2)
        creds: _Tree = {md.role_name: lambda: _credentials_json(md)} if md.role_name else {}
        meta["iam"] = {"info": info, "security-credentials": creds}
    latest: _Tree = {
        "meta-data": meta,
        "dynamic": {"instance-identity": {"document": lambda: _identity_document(md)}},
    }
    if md.user_data is not None:
        latest["user-data"] = md.user_data
    return latest


def _listing(node: _Tree) -> str:
    """A directory listing as IMDS writes it: one name a line, sub-directories with '/'.

    ``tags/instance`` is the exception: its entries are leaves (tag keys).
    """
    return "\n".join(k + "/" if isinstance(v, dict) else k for k, v in sorted(node.items()))


def _resolve(tree: _Tree, path: str) -> bytes | None:
    """The body at ``path`` (relative to ``/latest/``), or None when there is none."""
    node: _Leaf | _Tree = tree
    parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    if isinstance(node, dict):
        return _listing(node).encode()
    if callable(node):
        node = node()
    return node if isinstance(node, bytes) else node.encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Every instance of a bulk launch asks for a token at once at boot: a backlog of 5 (the
    # socketserver default) drops SYNs under load, and botocore then times out (seen with 20).
    request_queue_size = 1024
    imds: ImdsServer

    def handle_error(self, request, client_address) -> None:
        """A caller that went away mid-answer (a node being stopped) is not an error worth a
        traceback in the cloud's log; anything else is logged as before."""
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            log.debug("IMDS caller %s went away", client_address[0])
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "EC2ws"
    sys_version = ""

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - stdlib signature
        # The request line names paths only (never tokens or credentials); keep it at DEBUG.
        log.debug("IMDS %s " + format, self.client_address[0], *args)

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
               ) -> None:
        path = urllib.parse.urlsplit(self.path).path
        self.server.imds._count(self.command, path, status)
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drain(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit():
            self.rfile.read(min(int(length), 65536))

    def do_PUT(self) -> None:  # noqa: N802 - stdlib name
        self._drain()
        imds = self.server.imds
        if urllib.parse.urlsplit(self.path).path != TOKEN_PATH:
            self._reply(405)
            return
        if self.headers.get("X-Forwarded-For") is not None:
            self._reply(403)
            return
        caller = self.client_address[0]
        if imds._lookup(caller) is None:
            self._reply(404)
            return
        ttl = self.headers.get(TTL_HEADER, "").strip()
        if not ttl.isdigit() or not 1 <= int(ttl) <= TOKEN_TTL_MAX_S:
            self._reply(400)
            return
        token = imds._issue_token(caller, int(ttl))
        self._reply(200, token.encode(), {TTL_HEADER: ttl})

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        imds = self.server.imds
        caller = self.client_address[0]
        md = imds._lookup(caller)
        if md is None:
            self._reply(404)
            return
        if not imds._token_valid(self.headers.get(TOKEN_HEADER), caller):
            self._reply(401)
            return
        path = urllib.parse.urlsplit(self.path).path
        version, _, rest = path.lstrip("/").partition("/")
        if version != "latest" and not _VERSION.fullmatch(version):
            self._reply(404)
            return
        body = _resolve(_tree(md), rest)
        if body is None:
            self._reply(404)
        else:
            self._reply(200, body)

    def _refuse(self) -> None:
        self._drain()
        self._reply(405)

    do_POST = do_DELETE = do_PATCH = _refuse  # noqa: N815


class ImdsServer:
    """A threaded IMDSv2 server for many instances, telling them apart by source address.

    Args:
        lookup: maps a caller's IPv4 address to its :class:`InstanceMetadata`, or None for an
            unknown caller (answered 404). Called from request threads; must be thread-safe.
        sock: a bound (optionally listening) TCP socket to serve on, e.g. one the local cloud
            created inside a network namespace; the server takes ownership and closes it on
            :meth:`stop`. When None, the server binds ``host``:``port``.
        host: address to bind when ``sock`` is None.
        port: port to bind when ``sock`` is None (0 = any free port).
        extra_socks: more bound sockets served the same way, with the same tokens (the local
            cloud's second listener on 169.254.169.254:80, the address EC2's IMDS has).
    """

    def __init__(self, lookup: Callable[[str], InstanceMetadata | None], *,
                 sock: socket.socket | None = None, host: str = "127.0.0.1",
                 port: int = 0, extra_socks: tuple[socket.socket, ...] = ()) -> None:
        self._lookup_fn = lookup
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (caller ip, monotonic expiry)
        self._requests: Counter[tuple[str, str, int]] = Counter()
        if sock is None:
            self._httpd = _Server((host, port), _Handler)
        else:
            self._httpd = _Server(sock.getsockname()[:2], _Handler, bind_and_activate=False)
            self._httpd.socket.close()
            self._httpd.socket = sock
            self._httpd.server_address = sock.getsockname()[:2]
            sock.listen(self._httpd.request_queue_size)
        self._httpd.imds = self
        self._thread: threading.Thread | None = None
        self._extra: list[tuple[_Server, threading.Thread]] = []
        for extra in extra_socks:
            srv = _Server(extra.getsockname()[:2], _Handler, bind_and_activate=False)
            srv.socket.close()
            srv.socket, srv.server_address = extra, extra.getsockname()[:2]
            extra.listen(srv.request_queue_size)
            srv.imds = self
            self._extra.append((srv, threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                name=f"imds-{srv.server_address[0]}", daemon=True)))

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) the server listens on."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """``http://host:port``, the value for ``--imds-url``."""
        host, port = self.address
        return f"http://{host}:{port}"

    @property
    def requests(self) -> Counter[tuple[str, str, int]]:
        """A snapshot of request counts keyed by (method, path, status), e.g.
        ``("GET", "/latest/meta-data/instance-id", 200)``."""
        with self._lock:
            return Counter(self._requests)

    def count(self, method: str | None = None, path: str | None = None,
              status: int | None = None) -> int:
        """How many requests matched every given field (None matches anything)."""
        return sum(n for (m, p, s), n in self.requests.items()
                   if (method is None or m == method) and (path is None or p == path)
                   and (status is None or s == status))

    def start(self) -> None:
        """Serve in a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.2},
                                            name=f"imds-{self.address[1]}", daemon=True)
            self._thread.start()
            for _srv, thread in self._extra:
                thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket; forgets every token."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
            for srv, thread in self._extra:
                srv.shutdown()
                thread.join(timeout=10)
        self._httpd.server_close()
        for srv, _thread in self._extra:
            srv.server_close()
        with self._lock:
            self._tokens.clear()

    def revoke_tokens(self) -> None:
        """Forget every token, as a restarted metadata service would (callers then get 401)."""
        with self._lock:
            self._tokens.clear()

    def __enter__(self) -> ImdsServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- used by the handler -------------------------------------------------------------------

    def _lookup(self, caller: str) -> InstanceMetadata | None:
        if caller.startswith("::ffff:"):
            caller = caller[len("::ffff:"):]
        return self._lookup_fn(caller)

    def _issue_token(self, caller: str, ttl_s: int) -> str:
        token = secrets.token_urlsafe(40)
        now = time.monotonic()
        with self._lock:
            for t, (_, expiry) in list(self._tokens.items()):
                if expiry <= now:
                    del self._tokens[t]
            self._tokens[token] = (caller, now + ttl_s)
        return token

    def _token_valid(self, token: str | None, caller: str) -> bool:
        if not token:
            return False
        with self._lock:
            entry = self._tokens.get(token.strip())
        return entry is not None and entry[0] == caller and time.monotonic() < entry[1]

    def _count(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._requests[(method, path, status)] += 1
