"""Public SSM parameters of the distributions' stock images (a gateway strict rule).

API (for the local cloud)::

    from condor_annex.providers.local.strict_ssm import PublicParameters
    params = gateway.rule(PublicParameters)          # None when the gateway is not strict
    params.publish("/aws/service/debian/release/13/latest/amd64", "ami-0123...")
    params.unpublish(name)   # forget one;  params.published() -> {name: image id}

Distributions publish their current AMI ids as public SSM parameters that every account can
read with GetParameter / GetParameters / GetParametersByPath (Debian: "/aws/service/debian/
release/13/latest/amd64", wiki.debian.org/Cloud/AmazonEC2Image; Canonical: "/aws/service/
canonical/ubuntu/server/24.04/stable/current/amd64/hvm/ebs-gp3/ami-id",
documentation.ubuntu.com/aws/aws-how-to/instances/find-ubuntu-images/; AWS: "Public parameters
... /aws/service/...", docs.aws.amazon.com/systems-manager/latest/userguide/
parameter-store-public-parameters.html).  moto publishes only Amazon Linux's.

The gateway answers those three operations itself for the names published here (a table the
local cloud fills with its stock images), as AWS answers a public parameter: ``Type`` String,
``DataType`` ``text`` (as in moto's snapshot of AWS's own public parameters), ``Version`` 1, the ARN ``arn:aws:ssm:REGION::parameter/NAME``
(docs.aws.amazon.com/systems-manager/latest/APIReference/API_GetParameter.html,
API_GetParameters.html, API_GetParametersByPath.html: ByPath ``Recursive`` false returns only
the path's direct children, ``MaxResults`` 1-10 with ``NextToken`` paging).  Every other name —
moto's Amazon Linux parameters, the user's own — is moto's: GetParameters merges moto's answer
for the others; GetParametersByPath under a path holding none of ours is forwarded untouched.
"""

from __future__ import annotations

import json
import threading

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply
from condor_annex.providers.local.gateway_strict import StrictRule

_OPS = ("GetParameter", "GetParameters", "GetParametersByPath")
_JSON = [("Content-Type", "application/x-amz-json-1.1")]


class PublicParameters(StrictRule):
    """The rule of the module docstring: a table of public parameter name → AMI id.

    Thread-safe.  :meth:`forget` (moto reset) keeps the table: public parameters are not the
    account's resources, and the local cloud publishes them once at start.
    """

    def __init__(self, gateway) -> None:
        super().__init__(gateway)
        self._lock = threading.Lock()
        self._table: dict[str, tuple[str, float]] = {}

    # the API --------------------------------------------------------------------------------

    def publish(self, name: str, image_id: str) -> None:
        """Publish (or re-point) public parameter ``name`` (``/aws/service/...``, leading
        slash) with value ``image_id`` (``ami-...``), from now on, in every region.

        Raises:
            ValueError: ``name`` does not start with ``/``.
        """
        if not name.startswith("/"):
            raise ValueError(f"public parameter name must start with '/': {name!r}")
        with self._lock:
            self._table[name] = (image_id, self.gateway.wall())

    def unpublish(self, name: str) -> None:
        """Forget ``name`` (unknown names are ignored)."""
        with self._lock:
            self._table.pop(name, None)

    def published(self) -> dict[str, str]:
        """The table: name → image id."""
        with self._lock:
            return {n: v for n, (v, _t) in self._table.items()}

    # the gateway hook -----------------------------------------------------------------------

    def answer(self, call: Call, body: bytes) -> Reply | None:
        """Answer an SSM read of a published name before moto sees it.

        Args:
            call: the request.
            body: its JSON body (bytes).

        Returns:
            The reply, or None to forward the request to moto.
        """
        if call.service != "ssm" or call.operation not in _OPS:
            return None
        with self._lock:
            table = dict(self._table)
        if not table:
            return None
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            return None
        region = call.region or "us-east-1"
        if call.operation == "GetParameter":
            name = _plain(req.get("Name", ""))
            return _ok({"Parameter": _param(name, table[name], region)}) if name in table \
                else None
        if call.operation == "GetParameters":
            names = [_plain(n) for n in req.get("Names", [])]
            ours = [n for n in names if n in table]
            if not ours:
                return None
            found = [_param(n, table[n], region) for n in dict.fromkeys(ours)]
            invalid: list[str] = []
            rest = [n for n in req.get("Names", []) if _plain(n) not in table]
            if rest:
                got = self.gateway.upstream_client("ssm", region).get_parameters(Names=rest)
                found += [_jsonable(p) for p in got.get("Parameters", [])]
                invalid = got.get("InvalidParameters", [])
            return _ok({"Parameters": found, "InvalidParameters": invalid})
        return self._by_path(req, table, region)

    def _by_path(self, req: dict, table: dict, region: str) -> Reply | None:
        path = req.get("Path", "/").rstrip("/") + "/"
        recursive = bool(req.get("Recursive", False))

        def under(name: str) -> bool:
            return name.startswith(path) and (recursive or "/" not in name[len(path):])

        ours = sorted(n for n in table if under(n))
        if not ours:
            return None
        items = [_param(n, table[n], region) for n in ours]
        try:   # moto's own parameters under the same path stay visible
            pages = self.gateway.upstream_client("ssm", region).get_paginator(
                "get_parameters_by_path").paginate(Path=path.rstrip("/") or "/",
                                                   Recursive=recursive)
            items += [_jsonable(p) for page in pages for p in page.get("Parameters", [])
                      if p["Name"] not in table]
        except Exception:  # noqa: BLE001 - moto has nothing there: ours alone
            pass
        size = max(1, min(int(req.get("MaxResults", 10)), 10))
        start = int(req.get("NextToken") or 0)
        out: dict = {"Parameters": items[start:start + size]}
        if start + size < len(items):
            out["NextToken"] = str(start + size)
        return _ok(out)

    def forget(self) -> None:
        """Keep the table (see the class docstring)."""


def _plain(name: str) -> str:
    """A name without a ``:version`` / ``:label`` selector."""
    return name.split(":", 1)[0]


def _param(name: str, entry: tuple[str, float], region: str) -> dict:
    value, when = entry
    return {"Name": name, "Type": "String", "Value": value, "Version": 1,
            "LastModifiedDate": when, "ARN": f"arn:aws:ssm:{region}::parameter{name}",
            "DataType": "text"}


def _jsonable(p: dict) -> dict:
    out = dict(p)
    if hasattr(out.get("LastModifiedDate"), "timestamp"):
        out["LastModifiedDate"] = out["LastModifiedDate"].timestamp()
    return out


def _ok(payload: dict) -> Reply:
    data = json.dumps(payload).encode()
    return 200, list(_JSON), data
