"""A failed boot leaves its log in the config bucket, for ``condor_annex logs`` and the
never-joined deadline to show after the instance is gone.

When the boot fails (a bootstrap error, condor_master failing within its first minutes, or
HTCondor never started), the agent puts the tail of its own log
(:class:`~condor_annex.agent.log_tail.LogTail`, at most 256 KiB of text) at
``logs/<annex>/<instance-id>/agent.log`` with S3 PutObject, using the instance role (whose
policy allows ``s3:PutObject`` on ``logs/<its annex>/*`` only).  It is best effort: one call
with short timeouts, in a thread the agent waits for at most :data:`UPLOAD_BUDGET_S` seconds,
so a broken S3 or network never holds up the power-off for longer.

Standard library only at import time (botocore is imported when the upload is made).
"""

from __future__ import annotations

import logging
import threading

from condor_annex.agent.clients import AwsClients

log = logging.getLogger(__name__)

#: Key prefix of uploaded agent logs in the config bucket (the instance role may write only
#: ``logs/<its annex>/*``; :mod:`condor_annex.providers.aws.agent_log` reads them).
LOGS_PREFIX = "logs/"
#: Longest the agent waits for the upload before powering off anyway, seconds.
UPLOAD_BUDGET_S = 5.0
#: Timeouts of the upload's one S3 call, seconds (connect, read).
_CONNECT_TIMEOUT_S = 2.0
_READ_TIMEOUT_S = 3.0


def log_key(annex: str, instance_id: str) -> str:
    """``logs/<annex>/<instance-id>/agent.log``: where the agent of ``instance_id`` puts its
    log on a failed boot."""
    return f"{LOGS_PREFIX}{annex}/{instance_id}/agent.log"


def upload_log(clients: AwsClients, bucket: str, annex: str, instance_id: str, text: bytes, *,
               budget_s: float = UPLOAD_BUDGET_S) -> bool:
    """Put ``text`` (the agent's log, UTF-8) at :func:`log_key` in ``bucket`` (S3 PutObject,
    ``text/plain``), waiting at most ``budget_s`` seconds; never raises.

    Returns:
        True when S3 accepted it within the budget; False otherwise (logged as a warning with
        S3's error code, or as still running: the call is then abandoned to its thread).
    """
    key = log_key(annex, instance_id)
    outcome: dict[str, str] = {}

    def put() -> None:
        try:
            from botocore.config import Config

            s3 = clients.client("s3", Config(
                connect_timeout=_CONNECT_TIMEOUT_S, read_timeout=_READ_TIMEOUT_S,
                retries={"mode": "standard", "total_max_attempts": 1}))
            s3.put_object(Bucket=bucket, Key=key, Body=text,
                          ContentType="text/plain; charset=utf-8")
            outcome["done"] = "yes"
        except Exception as exc:  # noqa: BLE001 - best effort: a failure is reported, not raised
            # ClientError carries S3's answer; botocore's own errors have none (a
            # ReadTimeoutError's ``response`` is None).
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
            outcome["error"] = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=put, name="agent-log-upload", daemon=True)
    thread.start()
    thread.join(budget_s)
    if outcome.get("done"):
        log.info("uploaded this log to s3://%s/%s (%d bytes)", bucket, key, len(text))
        return True
    if thread.is_alive():
        log.warning("could not upload this log to s3://%s/%s within %gs; going on", bucket,
                    key, budget_s)
    else:
        log.warning("could not upload this log to s3://%s/%s: %s", bucket, key,
                    outcome.get("error", "no answer"))
    return False
