"""``logs NAME [INSTANCE_ID]``: the console output of an annex's instances, and the log their
agent uploaded when a boot failed.

The console comes from the provider's :meth:`~condor_annex.providers.base.Provider.console_output`
(on AWS, EC2 GetConsoleOutput, the latest output when EC2 has it: see
:mod:`condor_annex.providers.aws.console`).  Cloud-init's and the agent's lines (every one
starting ``condor-annex:``) reach the console, so a node whose bootstrap failed shows the reason
here.  A failed boot also uploads the agent's own log to the config bucket
(:meth:`~condor_annex.providers.base.Provider.agent_log`), which outlives the instance's console.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from condor_annex.errors import BadInputError, NotFoundError, NotSetUpError, ProviderError
from condor_annex.model import CloudInstance
from condor_annex.providers.base import Provider
from condor_annex.service.context import Context

#: An EC2 instance id as typed (``i-`` and 8 or 17 hex digits).
_INSTANCE_ID_RE = re.compile(r"i-[0-9a-f]{8,17}", re.ASCII)
#: Control characters of an uploaded agent log that are not shown (all but tab and newline):
#: the instance wrote it, and escape sequences must not reach the user's terminal.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class ConsoleLog:
    """One instance's console output, and its agent's uploaded log.

    Attributes:
        instance_id: e.g. ``"i-0abc..."``.
        state: its EC2 state name when asked.
        launch_time: aware UTC datetime, or None.
        captured_at: when EC2 captured the output (GetConsoleOutput ``Timestamp``), or None.
        text: the output, decoded (UTF-8, undecodable bytes replaced); "" when none yet.
        latest: True when EC2 gave the most recent output (``Latest=True``).
        agent_log: the log the agent uploaded when the boot failed (decoded, control
            characters but tab and newline removed), or None when it uploaded none.
    """

    instance_id: str
    state: str
    launch_time: datetime | None
    captured_at: datetime | None
    text: str
    latest: bool
    agent_log: str | None = None

    def as_dict(self) -> dict:
        """JSON-ready fields (datetimes as ISO 8601 text, or None)."""
        return {"instance_id": self.instance_id, "state": self.state,
                "launch_time": self.launch_time.isoformat() if self.launch_time else None,
                "captured_at": self.captured_at.isoformat() if self.captured_at else None,
                "latest": self.latest, "output": self.text, "agent_log": self.agent_log}


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


def _launched(inst: CloudInstance) -> datetime:
    """Sort key: launch time (a stable sort keeps EC2's listing order within one second)."""
    return inst.launch_time or datetime.min.replace(tzinfo=timezone.utc)


def annex_logs(ctx: Context, name: str, only: str | None = None) -> list[ConsoleLog]:
    """The console output of every instance of annex ``name`` (terminated ones included, while
    EC2 still lists them), oldest launch first, newest last; or of its instance ``only``; with
    the log each one's agent uploaded when its boot failed.

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
    out = []
    for inst in chosen:
        try:
            text, when, latest = provider.console_output(inst.instance_id)
        except NotFoundError:   # gone from EC2 between the listing and now
            text, when, latest = "", None, False
        out.append(ConsoleLog(inst.instance_id, inst.state, inst.launch_time, when, text,
                              latest, _agent_log(provider, name, inst.instance_id)))
    return out


def _agent_log(provider: Provider, name: str, iid: str) -> str | None:
    """The agent log ``iid`` uploaded, as text fit for a terminal; None when there is none or
    setup's outputs (the bucket) are unknown."""
    try:
        data = provider.agent_log(name, iid)
    except NotSetUpError:
        return None
    if data is None:
        return None
    return _CONTROL_RE.sub("", data.decode("utf-8", "replace"))


def _annex_exists(provider: Provider, name: str) -> bool:
    """Whether the annex has a lease or a bundle (an annex whose fleet launched nothing yet)."""
    try:
        return provider.get_lease(name) is not None or provider.bundle_exists(name)
    except (NotSetUpError, ProviderError):
        return False
