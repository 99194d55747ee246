"""boto3 access for the AWS provider: one Session per thread, a new client per use.

Policy (after the boto3 guide "Multithreading or multiprocessing with resources" and
"Session"): a :class:`boto3.session.Session` is **not** thread-safe, a client is.  So each thread
gets its own Session (kept in a :class:`threading.local`), and :func:`make_client` builds a fresh
client from it each time.  Clients are not cached: key files are re-read on every call, so rotated
credentials are picked up, and nothing holds a connection pool across tests or endpoints.

Every client gets an explicit region, the emulator's endpoint when one is configured, and a
bounded retry policy: botocore's ``standard`` mode (exponential backoff with full jitter, at most
20 s a wait) with 10 attempts for ordinary calls (throttling comes in bursts: with 35 % of
requests refused, 5 attempts lose one call in 190, 10 one in 36,000),
and a single attempt (``fast_fail=True``) for launches, whose retries
:mod:`condor_annex.providers.aws.launch_retry` makes itself, safely.  Each call is logged at DEBUG by operation name only (parameters may hold user
data or keys, so they are never logged) and reported to the listeners registered with
:func:`add_call_listener` (benchmarks count API calls this way).

Every client is paced by :mod:`condor_annex.providers.aws.throttle`: EC2 requests take a token
of the bucket their account and region share with every other client of this process (the
``ANNEX_EC2_DESCRIBE_BUCKET`` / ``ANNEX_EC2_MUTATE_BUCKET`` knobs size it), and every throttled
attempt is counted (:func:`throttle.throttled_calls`).  ``paced=False`` leaves a client out of
the buckets, for code that stands in for AWS itself (the local cloud's own machinery), whose
calls are not the account's.

boto3 is imported inside :func:`make_client`, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from condor_annex.config import AwsSettings
from condor_annex.providers.aws import throttle

log = logging.getLogger(__name__)

#: Attempts per call (the first included) for ordinary clients; fast-fail clients make one.
MAX_ATTEMPTS = 10
#: Seconds to wait for a TCP connection, and for a response, per attempt.
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60

_local = threading.local()
_listeners: list[Callable[[str], None]] = []
_listeners_lock = threading.Lock()


def _session() -> Any:
    """This thread's boto3 Session (created on first use)."""
    session = getattr(_local, "session", None)
    if session is None:
        import boto3

        session = _local.session = boto3.session.Session()
    return session


def make_client(settings: AwsSettings, service: str, *, fast_fail: bool = False,
                paced: bool = True) -> Any:
    """Build a boto3 client for ``service`` as ``settings`` say.

    Args:
        settings: region, optional endpoint URL (the local cloud's emulator), key files and
            the EC2 bucket knobs.
        service: boto3 service name, e.g. ``"ec2"``, ``"s3"``, ``"scheduler"``.
        fast_fail: one attempt only (no botocore retries); used for launches.
        paced: EC2 requests wait for a token of the account's shared bucket
            (:mod:`.throttle`); False only for code standing in for AWS itself.

    Returns:
        A botocore client whose calls are counted by the registered call listeners, and whose
        throttled attempts are counted by :func:`throttle.throttled_calls`.

    Raises:
        BadInputError: a configured key file is unreadable or not private (see
            :meth:`AwsSettings.credentials`), or a bucket knob is malformed.
    """
    from botocore.config import Config

    config = Config(
        region_name=settings.region,
        # total_max_attempts counts the first call; botocore's "max_attempts" would not.
        # Not "adaptive": its client-side rate limiter lives in the client, and clients here
        # live for one call, so it only added waits (about 1 s per throttled call, measured);
        # the shared bucket of throttle.py paces instead (its docstring says why).
        retries={"mode": "standard", "total_max_attempts": 1 if fast_fail else MAX_ATTEMPTS},
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
    )
    kwargs: dict[str, Any] = {"region_name": settings.region, "config": config}
    if settings.endpoint_url:
        kwargs["endpoint_url"] = settings.endpoint_url
    creds = settings.credentials()
    if creds is not None:
        kwargs["aws_access_key_id"], kwargs["aws_secret_access_key"] = creds
    describe = throttle.parse_bucket(settings.ec2_describe_bucket, "ANNEX_EC2_DESCRIBE_BUCKET",
                                     throttle.DESCRIBE_BUCKET)
    mutate = throttle.parse_bucket(settings.ec2_mutate_bucket, "ANNEX_EC2_MUTATE_BUCKET",
                                   throttle.MUTATE_BUCKET)
    client = _session().client(service, **kwargs)
    client.meta.events.register("before-call.*.*", _make_hook(service))
    if paced:
        throttle.pace(client, endpoint=settings.endpoint_url or "", account=_account(creds),
                      region=settings.region, describe=describe, mutate=mutate)
    return client


def _account(creds: tuple[str, str] | None) -> str:
    """The access key id that will sign: the key file's, else the credential chain's (resolved
    once per thread's Session and cached by it), else ""."""
    if creds is not None:
        return creds[0]
    found = _session().get_credentials()
    return found.access_key if found is not None else ""


def _make_hook(service: str) -> Callable[..., None]:
    def before_call(model: Any = None, **_: Any) -> None:
        name = f"{service}.{model.name if model is not None else '?'}"
        log.debug("aws call %s", name)
        with _listeners_lock:
            listeners = list(_listeners)
        for fn in listeners:
            fn(name)

    return before_call


def add_call_listener(fn: Callable[[str], None]) -> None:
    """Call ``fn("<service>.<Operation>")`` (e.g. ``"ec2.RunInstances"``) before every API call
    made by a client from :func:`make_client`, once per call (botocore retries not counted)."""
    with _listeners_lock:
        _listeners.append(fn)


def remove_call_listener(fn: Callable[[str], None]) -> None:
    """Stop calling ``fn``; removing a listener that is not registered is not an error."""
    with _listeners_lock:
        if fn in _listeners:
            _listeners.remove(fn)
