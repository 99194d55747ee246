"""``logs NAME [INSTANCE_ID]``: the console output of an annex's instances.

EC2 GetConsoleOutput returns an instance's serial console output, base64-encoded, with the time
it was captured (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_GetConsoleOutput.html).
``Latest=True`` asks for the most recent output (64 KB), which AWS gives only on Nitro-based
instances; any other instance answers with an error, and the call is then repeated without
``Latest`` (the output buffered at the last boot, shutdown or reboot; up to 64 KB).  An instance
with no output yet has no ``Output`` in the answer: its text is empty.

Cloud-init's and the agent's lines (every one starting ``condor-annex:``) reach the console, so
a node whose bootstrap failed shows the reason here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from condor_annex.errors import BadInputError, NotFoundError, ProviderError
from condor_annex.model import CloudInstance
from condor_annex.providers.base import Provider
from condor_annex.service.context import Context

#: An EC2 instance id as typed (``i-`` and 8 or 17 hex digits).
_INSTANCE_ID_RE = re.compile(r"i-[0-9a-f]{8,17}", re.ASCII)

#: Error codes with which EC2 refuses ``Latest=True`` for an instance that is not Nitro-based.
LATEST_REFUSED = frozenset({"UnsupportedOperation", "InvalidParameterValue",
                            "InvalidParameterCombination", "InvalidParameter"})


@dataclass(frozen=True)
class ConsoleLog:
    """One instance's console output.

    Attributes:
        instance_id: e.g. ``"i-0abc..."``.
        state: its EC2 state name when asked.
        launch_time: aware UTC datetime, or None.
        captured_at: when EC2 captured the output (GetConsoleOutput ``Timestamp``), or None.
        text: the output, decoded (UTF-8, undecodable bytes replaced); "" when none yet.
        latest: True when EC2 gave the most recent output (``Latest=True``).
    """

    instance_id: str
    state: str
    launch_time: datetime | None
    captured_at: datetime | None
    text: str
    latest: bool

    def as_dict(self) -> dict:
        """JSON-ready fields (datetimes as ISO 8601 text, or None)."""
        return {"instance_id": self.instance_id, "state": self.state,
                "launch_time": self.launch_time.isoformat() if self.launch_time else None,
                "captured_at": self.captured_at.isoformat() if self.captured_at else None,
                "latest": self.latest, "output": self.text}


def instance_id(text: str, flag: str = "INSTANCE_ID") -> str:
    """Check an instance id as typed.

    Raises:
        BadInputError: not ``i-`` followed by 8 or 17 lowercase hex digits, naming ``flag``.
    """
    if not _INSTANCE_ID_RE.fullmatch(text or ""):
        from condor_annex.validate import shown
        raise BadInputError(f"{flag}: {shown(text)} is not an EC2 instance id (i- and 8 or 17 "
                            "hex digits, e.g. i-0123456789abcdef0); see 'condor_annex status'")
    return text


def decode_output(answer: dict[str, Any]) -> str:
    """The text of a GetConsoleOutput answer, "" when it has no ``Output`` (no output yet).

    EC2 sends ``Output`` base64-encoded; botocore's ``decode_console_output`` handler
    (after-call.ec2.GetConsoleOutput) has already decoded it as UTF-8 with bad bytes replaced,
    so the text is used as it is (decoding it again would garble it).
    """
    return answer.get("Output") or ""


def console_output(ec2: Any, iid: str) -> tuple[str, datetime | None, bool]:
    """(text, capture time, latest) of one instance: GetConsoleOutput with ``Latest=True``,
    again without it when EC2 refuses ``Latest`` (instances that are not Nitro-based).

    Raises:
        ProviderError: (subclasses) the call failed otherwise; NotFoundError when the instance
            does not exist.
    """
    from condor_annex.providers.aws.errors import aws_errors
    try:
        with aws_errors("ec2.GetConsoleOutput"):
            answer, latest = ec2.get_console_output(InstanceId=iid, Latest=True), True
    except ProviderError as e:
        if e.code not in LATEST_REFUSED:
            raise
        with aws_errors("ec2.GetConsoleOutput"):
            answer, latest = ec2.get_console_output(InstanceId=iid), False
    when = answer.get("Timestamp")
    if isinstance(when, datetime) and when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return decode_output(answer), when if isinstance(when, datetime) else None, latest


def _launched(inst: CloudInstance) -> datetime:
    """Sort key: launch time (a stable sort keeps EC2's listing order within one second)."""
    return inst.launch_time or datetime.min.replace(tzinfo=timezone.utc)


def annex_logs(ctx: Context, name: str, only: str | None = None) -> list[ConsoleLog]:
    """The console output of every instance of annex ``name`` (terminated ones included, while
    EC2 still lists them), oldest launch first, newest last; or of its instance ``only``.

    Args:
        ctx: settings (the setup need not exist: instances are found by their tag).
        name: the annex.
        only: one instance id of that annex, or None for all.

    Returns:
        :class:`ConsoleLog` per instance; empty when the annex exists (a lease, bundle or fleet)
        but has launched no instance yet.

    Raises:
        UnknownAnnexError: no instance, lease, fleet or bundle of that name (exit 2, with the
            closest names).
        BadInputError: ``only`` is not one of the annex's instances (exit 2, naming
            ``INSTANCE_ID`` and the annex's instances).
        ProviderError: a call failed.
    """
    from condor_annex.providers.aws.session import make_client
    from condor_annex.service import annex as svc
    instances = svc.annex_instances(ctx, name).get(name, {})
    provider = ctx.provider(svc._outputs_or_none(ctx))
    if not instances:
        if _annex_exists(provider, name):
            if only:
                raise BadInputError(f"INSTANCE_ID: annex '{name}' has no instance yet")
            return []
        raise svc.unknown_annex(provider, name)
    if only is not None and only not in instances:
        ids = " ".join(sorted(instances, key=lambda i: _launched(instances[i])))
        raise BadInputError(f"INSTANCE_ID: {only} is not an instance of annex '{name}'; its "
                            f"instances: {ids}")
    chosen = [instances[only]] if only else sorted(instances.values(), key=_launched)
    ec2 = make_client(ctx.aws, "ec2")
    out = []
    for inst in chosen:
        try:
            text, when, latest = console_output(ec2, inst.instance_id)
        except NotFoundError:   # gone from EC2 between the listing and now
            text, when, latest = "", None, False
        out.append(ConsoleLog(inst.instance_id, inst.state, inst.launch_time, when, text,
                              latest))
    return out


def _annex_exists(provider: Provider, name: str) -> bool:
    """Whether the annex has a lease or a bundle (an annex whose fleet launched nothing yet)."""
    from condor_annex.errors import NotSetUpError
    try:
        return provider.get_lease(name) is not None or provider.bundle_exists(name)
    except (NotSetUpError, ProviderError):
        return False
