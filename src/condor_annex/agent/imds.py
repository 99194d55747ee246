"""IMDSv2 client for the bootstrap agent: standard library only.

Follows AWS's "Use the Instance Metadata Service to access instance metadata" guide
(IMDSv2 session tokens) and cloud-init's EC2 datasource policy:

* PUT ``/latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` gets a session token;
  every GET carries it in ``X-aws-ec2-metadata-token``. IMDSv1 (no token) is never used.
* A 401 on a GET means the token expired or the service restarted: fetch a new token once and
  repeat the GET; a second 401 is an error.
* 403 (metadata service disabled, or a proxy header was seen) and other 4xx fail fast.
* Connection errors, timeouts, 429 and 5xx are retried with exponential backoff and jitter until a
  per-call deadline on the monotonic clock; ``Retry-After`` is honoured.
* The token never appears in log records or exception text; no request goes through an HTTP proxy
  and no redirect is followed (either could hand the token to someone else).
"""

from __future__ import annotations

import email.utils
import enum
import json
import logging
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from http.client import HTTPException

log = logging.getLogger(__name__)

TOKEN_PATH = "/latest/api/token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
#: IMDS limits on the token TTL, seconds.
TOKEN_TTL_MIN_S = 1
TOKEN_TTL_MAX_S = 21600
#: Largest answer we read; user data is at most 16 KiB on EC2.
MAX_BODY_BYTES = 1024 * 1024
#: Longest ``Retry-After`` we accept, seconds (the deadline still applies).
MAX_RETRY_AFTER_S = 300.0


class ImdsError(Exception):
    """The metadata service could not answer a lookup.

    Attributes:
        status: the last HTTP status, or None when no HTTP answer came (connection error, timeout).
        path: the metadata path, relative to ``/latest/`` (never the token).
    """

    def __init__(self, message: str, *, status: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.path = path


class Action(enum.Enum):
    """What :func:`imds_retry_action` tells the client to do with one answer."""

    USE = "use"                      # 2xx: use the body
    MISSING = "missing"              # 404 on a GET: the key does not exist
    REFRESH_TOKEN = "refresh_token"  # 401 on a GET: get a new token, then repeat once
    RETRY = "retry"                  # transient: back off, then repeat
    FAIL = "fail"                    # permanent: raise ImdsError now


def imds_retry_action(status: int | None, *, token_request: bool,
                      token_refreshed: bool = False) -> Action:
    """Decide what to do with one IMDS answer; the whole retry policy lives here.

    Per status (``token_request`` is True for ``PUT /latest/api/token``):

    * ``None`` (connection refused or reset, timeout, no HTTP answer): RETRY. At boot the metadata
      service or the network may not be up yet.
    * 2xx: USE.
    * 401 on a GET: REFRESH_TOKEN the first time (token expired, or IMDS restarted and forgot it);
      FAIL if the token was already refreshed for this lookup (``token_refreshed``).
    * 401 on the token PUT: FAIL.
    * 403: FAIL. IMDS is disabled for the instance, or it saw ``X-Forwarded-For``; retrying cannot
      help (cloud-init ``_token_exception_cb`` does the same).
    * 404 on a GET: MISSING (e.g. no public IPv4, no user data); optional lookups return None.
    * 404 or 405 on the token PUT: FAIL. There is no IMDSv2 here, and IMDSv1 is refused.
    * 429: RETRY. IMDS throttles per instance; honour ``Retry-After``.
    * Any other 4xx (400 bad TTL, ...): FAIL.
    * 5xx: RETRY.
    * Anything else (1xx, 3xx; redirects are never followed): FAIL.

    Args:
        status: HTTP status code, or None when no HTTP answer arrived.
        token_request: True for the token PUT, False for a metadata GET.
        token_refreshed: True if this lookup already refreshed its token after a 401.

    Returns:
        The :class:`Action` to take.
    """
    if status is None:
        return Action.RETRY
    if 200 <= status < 300:
        return Action.USE
    if status == 401 and not token_request:
        return Action.FAIL if token_refreshed else Action.REFRESH_TOKEN
    if status == 404 and not token_request:
        return Action.MISSING
    if status == 429 or 500 <= status < 600:
        return Action.RETRY
    return Action.FAIL


@dataclass(frozen=True)
class _Answer:
    """One HTTP exchange: status (None when there was no HTTP answer), headers, body, a summary."""

    status: int | None
    headers: Message | None
    body: bytes
    summary: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow a redirect: urllib would resend our headers (the token) to the new location."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


def retry_after_s(headers: Message | None) -> float | None:
    """Seconds a ``Retry-After`` header asks us to wait (delta-seconds or HTTP-date), or None."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


class ImdsClient:
    """An IMDSv2 client with bounded retries.

    Args:
        base_url: the metadata service, e.g. ``"http://169.254.169.254"``.
        token_ttl_s: session token lifetime asked for, 1-21600 seconds.
        timeout_s: timeout of one HTTP request (connect and each read), seconds.
        deadline_s: overall time budget of one lookup, retries and token refresh included, seconds.
        backoff_initial_s: first retry delay, seconds; it doubles per attempt, with jitter.
        backoff_max_s: largest retry delay, seconds.
        max_attempts: most HTTP attempts per lookup (the deadline usually ends it first).

    Raises:
        ValueError: on a TTL outside 1-21600 s or a non-http(s) URL.
    """

    def __init__(self, base_url: str, *, token_ttl_s: int = 21600, timeout_s: float = 2.0,
                 deadline_s: float = 120.0, backoff_initial_s: float = 0.5,
                 backoff_max_s: float = 10.0, max_attempts: int = 100) -> None:
        if not TOKEN_TTL_MIN_S <= token_ttl_s <= TOKEN_TTL_MAX_S:
            raise ValueError(f"token_ttl_s must be {TOKEN_TTL_MIN_S}-{TOKEN_TTL_MAX_S} "
                             f"(got {token_ttl_s})")
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self._token_ttl_s = int(token_ttl_s)
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._max_attempts = max_attempts
        # No proxy (IMDS is link-local; a proxy would see the token), no redirects.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._token: str | None = None
        self._token_renew_at = 0.0  # monotonic time after which the token is renewed first

    def __repr__(self) -> str:
        return f"ImdsClient({self.base_url!r})"

    # -- generic lookups -----------------------------------------------------------------------

    def get(self, path: str, *, optional: bool = False) -> bytes | None:
        """GET ``/latest/<path>`` with a session token.

        Args:
            path: relative to ``/latest/``, e.g. ``"meta-data/instance-id"``.
            optional: if True, a 404 returns None instead of raising.

        Returns:
            The body, or None for a missing optional key.

        Raises:
            ImdsError: on 403 or another permanent failure, a 404 for a required key, or when the
                deadline passed while retrying.
        """
        path = path.lstrip("/")
        deadline = time.monotonic() + self._deadline_s
        refreshed = False
        answer: _Answer | None = None
        for attempt in range(self._max_attempts):
            token = self._valid_token(deadline)
            answer = self._exchange("GET", "/latest/" + path, {TOKEN_HEADER: token}, deadline)
            action = imds_retry_action(answer.status, token_request=False,
                                       token_refreshed=refreshed)
            if action is Action.USE:
                return answer.body
            if action is Action.MISSING:
                if optional:
                    return None
                raise ImdsError(f"IMDS {path}: not found (404)", status=404, path=path)
            if action is Action.REFRESH_TOKEN:
                log.info("IMDS %s: token rejected (401); fetching a new token", path)
                self._token = None
                refreshed = True
                continue
            if action is Action.FAIL:
                raise ImdsError(f"IMDS {path}: {answer.summary}", status=answer.status, path=path)
            self._sleep_before_retry(path, attempt, answer, deadline)
        raise ImdsError(f"IMDS {path}: gave up after {self._max_attempts} attempts; "
                        f"last: {answer.summary if answer else 'none'}",
                        status=answer.status if answer else None, path=path)

    def get_text(self, path: str, *, optional: bool = False) -> str | None:
        """Like :meth:`get`, decoded as UTF-8 and stripped."""
        body = self.get(path, optional=optional)
        return None if body is None else body.decode("utf-8", "replace").strip()

    # -- convenience ---------------------------------------------------------------------------

    def instance_id(self) -> str:
        """The instance id (``meta-data/instance-id``), e.g. ``"i-0abc..."``."""
        return self.get_text("meta-data/instance-id") or ""

    def region(self) -> str:
        """The instance's region (``meta-data/placement/region``), e.g. ``"us-east-1"``."""
        return self.get_text("meta-data/placement/region") or ""

    def public_ipv4(self) -> str:
        """The public IPv4 address, or the private one (``local-ipv4``) when there is none."""
        public = self.get_text("meta-data/public-ipv4", optional=True)
        if public:
            return public
        return self.get_text("meta-data/local-ipv4") or ""

    def tag(self, key: str) -> str | None:
        """The value of instance tag ``key`` (``meta-data/tags/instance/<key>``), or None.

        None also when tags in instance metadata are not enabled for this instance.

        Raises:
            ValueError: if ``key`` contains '/' (IMDS cannot serve such a key).
        """
        if not key or "/" in key:
            raise ValueError(f"tag key not servable by IMDS: {key!r}")
        quoted = urllib.parse.quote(key, safe="+-=.,_:@")
        body = self.get(f"meta-data/tags/instance/{quoted}", optional=True)
        return None if body is None else body.decode("utf-8", "replace")  # exact, not stripped

    def instance_profile_arn(self) -> str | None:
        """``InstanceProfileArn`` from ``meta-data/iam/info``, or None without an instance profile.

        Raises:
            ImdsError: if the answer is not the expected JSON.
        """
        text = self.get_text("meta-data/iam/info", optional=True)
        if text is None:
            return None
        try:
            info = json.loads(text)
        except ValueError:
            raise ImdsError("IMDS meta-data/iam/info: not JSON", path="meta-data/iam/info") from None
        arn = info.get("InstanceProfileArn") if isinstance(info, dict) else None
        return arn if isinstance(arn, str) and arn else None

    def user_data(self) -> bytes | None:
        """The raw user data (``/latest/user-data``), or None when the instance has none."""
        return self.get("user-data", optional=True)

    # -- internals -----------------------------------------------------------------------------

    def _valid_token(self, deadline: float) -> str:
        """Return the session token, fetching a new one first when absent or near its expiry."""
        if self._token is not None and time.monotonic() < self._token_renew_at:
            return self._token
        self._token = None
        answer: _Answer | None = None
        for attempt in range(self._max_attempts):
            sent_at = time.monotonic()
            answer = self._exchange("PUT", TOKEN_PATH, {TTL_HEADER: str(self._token_ttl_s)},
                                    deadline)
            action = imds_retry_action(answer.status, token_request=True)
            if action is Action.USE:
                token = answer.body.decode("ascii", "replace").strip()
                if not token:
                    raise ImdsError("IMDS token: empty answer", status=answer.status,
                                    path="api/token")
                # Renew a little before the service would expire it.
                margin_s = min(60.0, self._token_ttl_s / 4)
                self._token, self._token_renew_at = token, sent_at + self._token_ttl_s - margin_s
                return token
            if action is not Action.RETRY:
                hint = " (metadata service disabled, or IMDSv2 not offered)" \
                    if answer.status in (403, 404, 405) else ""
                raise ImdsError(f"IMDS token: {answer.summary}{hint}", status=answer.status,
                                path="api/token")
            self._sleep_before_retry("api/token", attempt, answer, deadline)
        raise ImdsError(f"IMDS token: gave up after {self._max_attempts} attempts; last: "
                        f"{answer.summary if answer else 'none'}", path="api/token")

    def _exchange(self, method: str, path: str, headers: dict[str, str],
                  deadline: float) -> _Answer:
        """One HTTP request; never raises for HTTP or network errors. Logs no header."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ImdsError(f"IMDS {path.removeprefix('/latest/')}: deadline of "
                            f"{self._deadline_s:g}s passed", path=path)
        timeout = min(self._timeout_s, remaining)
        request = urllib.request.Request(self.base_url + path, method=method, headers=headers,
                                         data=b"" if method == "PUT" else None)
        started = time.monotonic()
        try:
            with self._opener.open(request, timeout=timeout) as response:
                body = response.read(MAX_BODY_BYTES + 1)
                answer = _Answer(response.status, response.headers, body,
                                 f"HTTP {response.status}")
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read(MAX_BODY_BYTES + 1)
            except (OSError, HTTPException):
                body = b""
            finally:
                exc.close()
            answer = _Answer(exc.code, exc.headers, body, f"HTTP {exc.code}")
        except (urllib.error.URLError, OSError, HTTPException, ValueError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            answer = _Answer(None, None, b"", f"no answer ({type(reason).__name__}: {reason})")
        log.debug("IMDS %s %s -> %s in %.3fs", method, path, answer.summary,
                  time.monotonic() - started)
        if len(answer.body) > MAX_BODY_BYTES:
            raise ImdsError(f"IMDS {path}: answer larger than {MAX_BODY_BYTES} bytes", path=path)
        return answer

    def _sleep_before_retry(self, path: str, attempt: int, answer: _Answer,
                            deadline: float) -> None:
        """Sleep the backoff delay (or Retry-After, if longer); raise if that passes the deadline."""
        delay = min(self._backoff_max_s, self._backoff_initial_s * (2 ** attempt))
        delay = random.uniform(delay / 2, delay)
        asked = retry_after_s(answer.headers)
        if asked is not None:
            delay = max(delay, asked)
        remaining = deadline - time.monotonic()
        if delay >= remaining:
            raise ImdsError(f"IMDS {path}: gave up after {attempt + 1} attempts within the "
                            f"{self._deadline_s:g}s deadline; last: {answer.summary}",
                            status=answer.status, path=path)
        log.info("IMDS %s: %s; retrying in %.2fs", path, answer.summary, delay)
        time.sleep(delay)
