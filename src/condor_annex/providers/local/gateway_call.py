"""Which AWS service and operation an HTTP request is: the AWS gateway's first step.

:func:`identify` names a request the way the gateway's rules match it (``"ec2.RunInstances"``,
``"s3.GetObject"``...), from what AWS itself reads: the SigV4 credential scope (service and
region), ``X-Amz-Target`` (JSON protocols), ``Action=`` (EC2 and the query protocols), the RPC v2
CBOR path, or the REST path (S3, Scheduler, Lambda); see the AWS protocols in botocore's service
models.  Stdlib only.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Call", "identify"]

_SCOPE_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/]+)/([^/]+)/aws4_request")
_ACCESS_KEY_RE = re.compile(r"Credential=([^/,\s]+)/")


@dataclass(frozen=True)
class Call:
    """What an AWS request is.

    Attributes:
        service: the boto3 client name (``ec2``, ``s3``, ``scheduler``, ``lambda``, ``iam``,
            ``cloudwatch``...), from the SigV4 signing name, or ``"unknown"``.
        operation: the API operation (``RunInstances``, ``PutObject``, ``CreateSchedule``...);
            for a REST path this module does not know, ``"<METHOD> /<first path word>"``.
        protocol: ``ec2``, ``query``, ``json``, ``rest-json``, ``rest-xml`` or ``rpc-v2-cbor``:
            how its errors are written.
        params: the query-protocol parameters (form body and query string), else empty.
        region: the region of the SigV4 credential scope (``us-east-1``), or ``""``.
        access_key: the access key id that signed the request (SigV4 ``Credential``), or
            ``""`` when unsigned.
        resource: for S3, ``"<bucket>/<key>"`` (the key URL-decoded; ``"<bucket>/"`` for a
            bucket request), else ``""``.
    """

    service: str
    operation: str
    protocol: str
    params: tuple[tuple[str, str], ...] = ()
    region: str = ""
    access_key: str = ""
    resource: str = ""

    @property
    def name(self) -> str:
        """``"<service>.<operation>"``, the name rules match against."""
        return f"{self.service}.{self.operation}"

    def param(self, key: str) -> str | None:
        """The first value of query-protocol parameter ``key``, or None."""
        return next((v for k, v in self.params if k == key), None)


_REST_XML = {"s3", "s3control", "route53", "cloudfront"}
#: SigV4 signing names that differ from the boto3 client name.
_SIGNING_NAMES = {"monitoring": "cloudwatch", "email": "ses", "states": "stepfunctions"}


def identify(method: str, path: str, headers, body: bytes = b"") -> Call:
    """Name the AWS service and operation of one HTTP request.

    The service comes from the SigV4 credential scope (``Authorization`` header, or
    ``X-Amz-Credential`` of a presigned URL), else from the host name; the operation from
    ``X-Amz-Target`` (JSON protocols), ``Action=`` in the form body or query string (EC2, IAM,
    STS, CloudFormation), the ``/service/.../operation/Op`` path (RPC v2 CBOR), or the REST path
    (S3, Scheduler, Lambda).

    Args:
        method: the HTTP method (``GET``, ``POST``...).
        path: the request target (path and query string).
        headers: the request headers (any mapping with case-insensitive ``get``, such as
            :class:`http.client.HTTPMessage`, or a plain dict).
        body: the request body (de-chunked).

    Returns:
        The :class:`Call`.
    """
    get = _header_getter(headers)
    split = urllib.parse.urlsplit(path)
    query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
    host = (get("Host") or "").lower()
    if host.count(":") == 1:   # not a bare IPv6 address
        host = host.rsplit(":", 1)[0]
    m = _SCOPE_RE.search(get("Authorization") or "") or _SCOPE_RE.search(
        "Credential=" + (query.get("X-Amz-Credential") or [""])[0])
    region = m.group(1) if m else ""
    a = _ACCESS_KEY_RE.search(get("Authorization") or "") or _ACCESS_KEY_RE.search(
        "Credential=" + (query.get("X-Amz-Credential") or [""])[0])
    access_key = a.group(1) if a else ""
    if m:
        service = _SIGNING_NAMES.get(m.group(2), m.group(2))
    elif re.search(r"(^|\.)s3[.-]", host) or host.startswith("s3."):
        service = "s3"
    elif host.endswith(".amazonaws.com"):
        service = host.split(".")[0]
    else:
        service = "unknown"
    ctype = (get("Content-Type") or "").lower()
    target = get("X-Amz-Target")
    if target:
        return Call(service, target.rsplit(".", 1)[-1], "json", region=region)
    if "rpc-v2-cbor" in (get("Smithy-Protocol") or "").lower():
        return Call(service, split.path.rstrip("/").rsplit("/", 1)[-1], "rpc-v2-cbor",
                    region=region)
    params: list[tuple[str, str]] = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
    if body and "x-www-form-urlencoded" in ctype:
        params += urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    action = next((v for k, v in params if k == "Action"), None)
    if action and service not in _REST_XML:
        return Call(service, action, "ec2" if service == "ec2" else "query", tuple(params),
                    region, access_key=access_key)
    if service == "s3":
        return Call(service, _s3_operation(method, split.path, query, host, get), "rest-xml",
                    region=region, access_key=access_key,
                    resource=_s3_resource(split.path, host))
    op = _rest_operation(service, method, split.path)
    return Call(service, op, "rest-xml" if service in _REST_XML else "rest-json", region=region)


def _header_getter(headers) -> Callable[[str], str | None]:
    if isinstance(headers, dict):
        lower = {k.lower(): v for k, v in headers.items()}
        return lambda name: lower.get(name.lower())
    return headers.get


#: (service, method, path regex, operation) for the REST APIs the project uses.
_REST_ROUTES: list[tuple[str, str, re.Pattern, str]] = [
    (s, m, re.compile(p), op) for s, m, p, op in [
        ("lambda", "POST", r"/2015-03-31/functions/[^/]+/invocations/?", "Invoke"),
        ("lambda", "POST", r"/2014-11-13/functions/[^/]+/invoke-async/?", "InvokeAsync"),
        ("lambda", "GET", r"/2015-03-31/functions/?", "ListFunctions"),
        ("lambda", "POST", r"/2015-03-31/functions/?", "CreateFunction"),
        ("lambda", "GET", r"/2015-03-31/functions/[^/]+/?", "GetFunction"),
        ("lambda", "DELETE", r"/2015-03-31/functions/[^/]+/?", "DeleteFunction"),
        ("lambda", "GET", r"/2015-03-31/functions/[^/]+/configuration/?",
         "GetFunctionConfiguration"),
        ("lambda", "PUT", r"/2015-03-31/functions/[^/]+/configuration/?",
         "UpdateFunctionConfiguration"),
        ("lambda", "PUT", r"/2015-03-31/functions/[^/]+/code/?", "UpdateFunctionCode"),
        ("lambda", "POST", r"/2015-03-31/functions/[^/]+/policy/?", "AddPermission"),
        ("lambda", "GET", r"/2015-03-31/functions/[^/]+/policy/?", "GetPolicy"),
        ("lambda", "DELETE", r"/2015-03-31/functions/[^/]+/policy/[^/]+/?", "RemovePermission"),
        ("lambda", "POST", r"/2015-03-31/functions/[^/]+/versions/?", "PublishVersion"),
        ("lambda", "GET", r"/2015-03-31/functions/[^/]+/versions/?", "ListVersionsByFunction"),
        ("lambda", "PUT", r"/2019-09-25/functions/[^/]+/event-invoke-config/?",
         "PutFunctionEventInvokeConfig"),
        ("lambda", "POST", r"/2019-09-25/functions/[^/]+/event-invoke-config/?",
         "UpdateFunctionEventInvokeConfig"),
        ("lambda", "GET", r"/2019-09-25/functions/[^/]+/event-invoke-config/?",
         "GetFunctionEventInvokeConfig"),
        ("lambda", "DELETE", r"/2019-09-25/functions/[^/]+/event-invoke-config/?",
         "DeleteFunctionEventInvokeConfig"),
        ("lambda", "PUT", r"/2017-10-31/functions/[^/]+/concurrency/?", "PutFunctionConcurrency"),
        ("lambda", "DELETE", r"/2017-10-31/functions/[^/]+/concurrency/?",
         "DeleteFunctionConcurrency"),
        ("lambda", "GET", r"/2019-09-30/functions/[^/]+/concurrency/?", "GetFunctionConcurrency"),
        ("lambda", "GET", r"/2017-03-31/tags/.+", "ListTags"),
        ("lambda", "POST", r"/2017-03-31/tags/.+", "TagResource"),
        ("lambda", "DELETE", r"/2017-03-31/tags/.+", "UntagResource"),
        ("scheduler", "GET", r"/schedules/?", "ListSchedules"),
        ("scheduler", "POST", r"/schedules/[^/]+", "CreateSchedule"),
        ("scheduler", "GET", r"/schedules/[^/]+", "GetSchedule"),
        ("scheduler", "PUT", r"/schedules/[^/]+", "UpdateSchedule"),
        ("scheduler", "DELETE", r"/schedules/[^/]+", "DeleteSchedule"),
        ("scheduler", "GET", r"/schedule-groups/?", "ListScheduleGroups"),
        ("scheduler", "POST", r"/schedule-groups/[^/]+", "CreateScheduleGroup"),
        ("scheduler", "GET", r"/schedule-groups/[^/]+", "GetScheduleGroup"),
        ("scheduler", "DELETE", r"/schedule-groups/[^/]+", "DeleteScheduleGroup"),
        ("scheduler", "GET", r"/tags/.+", "ListTagsForResource"),
        ("scheduler", "POST", r"/tags/.+", "TagResource"),
        ("scheduler", "DELETE", r"/tags/.+", "UntagResource"),
    ]]


def _rest_operation(service: str, method: str, path: str) -> str:
    for s, m, pattern, op in _REST_ROUTES:
        if s == service and m == method and pattern.fullmatch(path):
            return op
    first = next((p for p in path.split("/") if p), "")
    return f"{method} /{first}"


#: S3 sub-resources (query keys) of a bucket: the operation's name after Get/Put/Delete.
_S3_BUCKET_SUB = {
    "tagging": "BucketTagging", "policy": "BucketPolicy", "versioning": "BucketVersioning",
    "encryption": "BucketEncryption", "acl": "BucketAcl", "cors": "BucketCors",
    "lifecycle": "BucketLifecycleConfiguration", "website": "BucketWebsite",
    "notification": "BucketNotificationConfiguration", "logging": "BucketLogging",
    "ownershipControls": "BucketOwnershipControls", "replication": "BucketReplication",
    "location": "BucketLocation", "publicAccessBlock": "PublicAccessBlock",
    "object-lock": "ObjectLockConfiguration", "accelerate": "BucketAccelerateConfiguration",
}
_VERB = {"GET": "Get", "PUT": "Put", "DELETE": "Delete"}


def _s3_resource(path: str, host: str) -> str:
    """``"<bucket>/<key>"`` of an S3 request (path- or virtual-host-style), key URL-decoded."""
    vhost = re.match(r"(.+?)\.s3[.-]", host) or re.match(r"(.+)\.localhost$", host)
    if vhost:
        return f"{vhost.group(1)}/{urllib.parse.unquote(path.lstrip('/'))}"
    bucket, _, key = path.lstrip("/").partition("/")
    return f"{bucket}/{urllib.parse.unquote(key)}"


def _s3_operation(method: str, path: str, query: dict, host: str, get) -> str:
    parts = path.lstrip("/").split("/", 1)
    vhost = re.match(r"(.+?)\.s3[.-]", host) or re.match(r"(.+)\.localhost$", host)
    if vhost:
        bucket, key = vhost.group(1), path.lstrip("/")
    else:
        bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
    if not bucket:
        return "ListBuckets" if method == "GET" else f"{method} /"
    if key:
        if "uploads" in query and method == "POST":
            return "CreateMultipartUpload"
        if "uploadId" in query:
            if method == "PUT":
                return "UploadPartCopy" if get("x-amz-copy-source") else "UploadPart"
            return {"POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload",
                    "GET": "ListParts"}.get(method, method)
        for sub, name in (("tagging", "ObjectTagging"), ("acl", "ObjectAcl")):
            if sub in query and method in _VERB:
                return _VERB[method] + name
        if method == "PUT":
            return "CopyObject" if get("x-amz-copy-source") else "PutObject"
        return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject",
                "POST": "RestoreObject"}.get(method, method)
    if "delete" in query and method == "POST":
        return "DeleteObjects"
    if method == "GET" and "uploads" in query:
        return "ListMultipartUploads"
    if method == "GET" and "versions" in query:
        return "ListObjectVersions"
    for sub, name in _S3_BUCKET_SUB.items():
        if sub in query and method in _VERB:
            return _VERB[method] + name
    if method == "GET":
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return {"PUT": "CreateBucket", "HEAD": "HeadBucket", "DELETE": "DeleteBucket"}.get(
        method, method)
