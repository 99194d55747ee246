"""Retrying what a booting instance cannot have yet: AWS calls with backoff and jitter.

At boot every AWS error may be transient: a role, tag or object not yet visible (IAM, EC2 and S3
are eventually consistent), credentials not yet served, a network still coming up.  So every
botocore error is turned into :class:`~condor_annex.agent.errors.NotYet` and retried until a
deadline on the monotonic clock; only the deadline turns it into a
:class:`~condor_annex.agent.errors.BootstrapError`.

Standard library only at import time (botocore is imported when a call is made).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from condor_annex.agent.errors import BootstrapError, NotYet

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a missing tag (annex name, config bucket) or the role's credentials may take to
#: become visible, seconds.
TAG_VISIBILITY_WAIT_S = 120.0
#: Backoff of the AWS retry loops: first delay and cap, seconds (the original started at 2 s).
BACKOFF_INITIAL_S = 2.0
BACKOFF_MAX_S = 120.0
#: Backoff while waiting for what appears within seconds of boot (role credentials, tags): the
#: 2-120 s backoff turned a 2 s wait into 50 s on a busy host.
SOON = {"initial_s": 0.5, "max_s": 5.0}
MAX_RETRY_ATTEMPTS = 1000


def aws_call(call: Callable[[], T]) -> T:
    """Run one boto3 call; turn any botocore error into :class:`NotYet` (retried by the caller).

    The text of the NotYet is ``<operation>: <code>: <message>`` (never a credential).
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise NotYet(f"{exc.operation_name}: {code}: {err.get('Message', '')}".rstrip(": ")
                     ) from None
    except BotoCoreError as exc:
        raise NotYet(f"{type(exc).__name__}: {exc}") from None


def retry(what: str, attempt: Callable[[], T], deadline: float, give_up_at: float, *,
          initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S) -> T:
    """Call ``attempt`` until it returns, retrying :class:`NotYet` with backoff and jitter.

    Delays start at ``initial_s`` and double up to ``max_s`` seconds, each drawn uniformly from
    [d/2, d]; the last attempt is made at ``give_up_at`` (monotonic, at most ``deadline``).

    Raises:
        BootstrapError: still failing at ``give_up_at`` (the text names ``what``, the attempts
            and the last reason).
    """
    give_up_at = min(give_up_at, deadline)
    started = time.monotonic()
    reason = ""
    for n in range(MAX_RETRY_ATTEMPTS):
        try:
            return attempt()
        except NotYet as exc:
            reason = str(exc)
        remaining = give_up_at - time.monotonic()
        if remaining <= 0:
            raise BootstrapError(f"{what}: gave up after {n + 1} attempts in "
                                 f"{time.monotonic() - started:.1f}s: {reason}")
        delay = min(max_s, initial_s * (2 ** n))
        delay = min(random.uniform(delay / 2, delay), remaining)
        log.warning("%s: %s; retrying in %.1fs", what, reason, delay)
        time.sleep(delay)
    raise BootstrapError(f"{what}: gave up after {MAX_RETRY_ATTEMPTS} attempts: {reason}")
