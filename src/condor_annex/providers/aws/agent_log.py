"""The agent's log that a failed boot uploaded to the config bucket.

The agent (:mod:`condor_annex.agent.log_upload`) puts the tail of its log at
``logs/<annex>/<instance-id>/agent.log`` when its boot fails; the annex's instance role may
write only under ``logs/<its annex>/`` (:mod:`condor_annex.providers.aws.annex_role`).  This
module reads it back (S3 GetObject) for ``condor_annex logs`` and the never-joined deadline.
"""

from __future__ import annotations

from condor_annex.agent.log_upload import LOGS_PREFIX, log_key
from condor_annex.config import AwsSettings
from condor_annex.errors import NotFoundError, ProviderError
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

#: Most bytes read of one log (its end): the agent uploads at most 256 KiB, but the object is
#: written by the instance, which need not be ours to trust.
MAX_READ_BYTES = 256 * 1024

__all__ = ["LOGS_PREFIX", "MAX_READ_BYTES", "agent_log_key", "read_agent_log"]


def agent_log_key(annex_name: str, instance_id: str) -> str:
    """``logs/<annex>/<instance-id>/agent.log`` (the agent's own :func:`log_key`)."""
    return log_key(annex_name, instance_id)


def read_agent_log(settings: AwsSettings, bucket: str, annex_name: str,
                   instance_id: str) -> bytes | None:
    """The uploaded agent log of ``instance_id`` (its last :data:`MAX_READ_BYTES` bytes, S3
    GetObject with a suffix ``Range``), or None when the agent uploaded none.

    Raises:
        NotFoundError: the bucket does not exist.
        ProviderError: the call failed otherwise (AuthError: no ``s3:GetObject`` on the key).
    """
    key = agent_log_key(annex_name, instance_id)
    try:
        with aws_errors("s3.GetObject"):
            answer = make_client(settings, "s3").get_object(
                Bucket=bucket, Key=key, Range=f"bytes=-{MAX_READ_BYTES}")
            body = answer["Body"]
            try:
                data: bytes = body.read(MAX_READ_BYTES + 1)[-MAX_READ_BYTES:]
            finally:
                body.close()
    except NotFoundError as e:
        if e.code == "NoSuchBucket":
            raise
        return None
    except ProviderError as e:
        if e.code != "InvalidRange":   # S3's answer to a suffix range of an empty object
            raise
        return b""
    return data
