"""An instance's console output: EC2 GetConsoleOutput, the latest when EC2 has it.

EC2 GetConsoleOutput returns an instance's serial console output, base64-encoded, with the time
it was captured (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html).
``Latest=True`` asks for the most recent output (64 KB), which AWS gives only on Nitro-based
instances; any other instance answers with an error, and the call is then repeated without
``Latest`` (the output buffered at the last boot, shutdown or reboot; up to 64 KB).  An instance
with no output yet has no ``Output`` in the answer: its text is empty.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from condor_annex.config import AwsSettings
from condor_annex.errors import ProviderError
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

#: Error codes with which EC2 refuses ``Latest=True`` for an instance that is not Nitro-based.
LATEST_REFUSED = frozenset({"UnsupportedOperation", "InvalidParameterValue",
                            "InvalidParameterCombination", "InvalidParameter"})


def decode_output(answer: dict[str, Any]) -> str:
    """The text of a GetConsoleOutput answer, "" when it has no ``Output`` (no output yet).

    EC2 sends ``Output`` base64-encoded; botocore's ``decode_console_output`` handler
    (after-call.ec2.GetConsoleOutput) has already decoded it as UTF-8 with bad bytes replaced,
    so the text is used as it is (decoding it again would garble it).
    """
    return answer.get("Output") or ""


def console_output(settings: AwsSettings, instance_id: str) -> tuple[str, datetime | None, bool]:
    """(text, capture time, latest) of one instance: GetConsoleOutput with ``Latest=True``,
    again without it when EC2 refuses ``Latest`` (instances that are not Nitro-based).

    Returns:
        the decoded text ("" when none yet), when EC2 captured it (aware UTC, or None), and
        True when it is the latest output (``Latest=True`` was accepted).

    Raises:
        NotFoundError: the instance does not exist (any more).
        ProviderError: the call failed otherwise.
    """
    ec2 = make_client(settings, "ec2")
    try:
        with aws_errors("ec2.GetConsoleOutput"):
            answer, latest = ec2.get_console_output(InstanceId=instance_id, Latest=True), True
    except ProviderError as e:
        if e.code not in LATEST_REFUSED:
            raise
        with aws_errors("ec2.GetConsoleOutput"):
            answer, latest = ec2.get_console_output(InstanceId=instance_id), False
    when = answer.get("Timestamp")
    if isinstance(when, datetime) and when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return decode_output(answer), when if isinstance(when, datetime) else None, latest
