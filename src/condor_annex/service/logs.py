"""``logs NAME [INSTANCE_ID]``: the console output of an annex's instances, and the log their
agent uploaded when a boot failed.

The console comes from the provider's :meth:`~condor_annex.providers.base.Provider.console_output`
(on AWS, EC2 GetConsoleOutput, the latest output when EC2 has it: see
:mod:`condor_annex.providers.aws.console`).  Cloud-init's and the agent's lines (every one
starting ``condor-annex:``) reach the console, so a node whose bootstrap failed shows the reason
here.  A failed boot also uploads the agent's own log to the config bucket
(:meth:`~condor_annex.providers.base.Provider.agent_log`), which outlives the instance's console.

Before the reconciler terminates a never-joined instance it saves both in the state store
(:mod:`condor_annex.service.saved_logs`): when EC2 no longer gives an instance's console (empty
output, or the instance no longer listed), that copy is shown instead, saying when it was saved
and why the instance was ended.  An annex's instances are those EC2 lists and those the store
kept a copy for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from condor_annex.errors import BadInputError, NotFoundError, NotSetUpError, ProviderError
from condor_annex.model import CloudInstance
from condor_annex.providers.base import Provider
from condor_annex.service.context import Context
from condor_annex.service.saved_logs import SavedCopy, saved_copies

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
        state: its EC2 state name when asked; ``"terminated"`` for an instance EC2 no longer
            lists (only the store's copy is left).
        launch_time: aware UTC datetime, or None.
        captured_at: when EC2 captured the output (GetConsoleOutput ``Timestamp``), or None.
        text: the output, decoded (UTF-8, undecodable bytes replaced); "" when none yet.
        latest: True when EC2 gave the most recent output (``Latest=True``).
        agent_log: the log the agent uploaded when the boot failed (decoded, control
            characters but tab and newline removed), or None when it uploaded none.
        saved_at: when the reconciler saved the console shown (aware UTC) because EC2 no
            longer gives it, or None when ``text`` is EC2's answer now.
        saved_reason: why the reconciler ended the instance ("" when unknown or not saved).
    """

    instance_id: str
    state: str
    launch_time: datetime | None
    captured_at: datetime | None
    text: str
    latest: bool
    agent_log: str | None = None
    saved_at: datetime | None = None
    saved_reason: str = ""

    def as_dict(self) -> dict:
        """JSON-ready fields (datetimes as ISO 8601 text, or None)."""
        return {"instance_id": self.instance_id, "state": self.state,
                "launch_time": self.launch_time.isoformat() if self.launch_time else None,
                "captured_at": self.captured_at.isoformat() if self.captured_at else None,
                "latest": self.latest, "output": self.text, "agent_log": self.agent_log,
                "saved_at": self.saved_at.isoformat() if self.saved_at else None}


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


def _launched(inst: CloudInstance | None, copy: SavedCopy | None) -> datetime:
    """Sort key: launch time, else (EC2 no longer lists it) when the store first recorded it
    (a stable sort keeps EC2's listing order within one second)."""
    if inst is not None and inst.launch_time is not None:
        return inst.launch_time
    return copy.first_seen if copy is not None else datetime.min.replace(tzinfo=timezone.utc)


def annex_logs(ctx: Context, name: str, only: str | None = None) -> list[ConsoleLog]:
    """The console output of every instance of annex ``name`` (terminated ones included, while
    EC2 still lists them, or while the state store keeps the console the reconciler saved),
    oldest launch first, newest last; or of its instance ``only``; with the log each one's
    agent uploaded when its boot failed.  The store's copy stands in for a console EC2 no
    longer gives (see the module docstring); the state file is read only when it exists.

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
        BadInputError: the state file exists but cannot be used (naming it and
            ``condor_annex sweep --adopt``).
    """
    from condor_annex.service.common import outputs_or_none
    from condor_annex.service.names import unknown_annex
    from condor_annex.service.status import annex_instances
    instances = annex_instances(ctx, name).get(name, {})
    saved = saved_copies(ctx.knobs, name)
    provider = ctx.provider(outputs_or_none(ctx))
    if not instances and not saved:
        if _annex_exists(provider, name):
            if only:
                raise BadInputError(f"INSTANCE_ID: annex '{name}' has no instance yet")
            return []
        raise unknown_annex(provider, name)
    # EC2's listing order first (the sort is stable), then what only the store has.
    ids = sorted([*instances, *(i for i in saved if i not in instances)],
                 key=lambda i: _launched(instances.get(i), saved.get(i)))
    if only is not None and only not in ids:
        raise BadInputError(f"INSTANCE_ID: {only} is not an instance of annex '{name}'; its "
                            f"instances: {' '.join(ids)}")
    return [_console_log(provider, name, iid, instances.get(iid), saved.get(iid))
            for iid in ([only] if only else ids)]


def _console_log(provider: Provider, name: str, iid: str, inst: CloudInstance | None,
                 copy: SavedCopy | None) -> ConsoleLog:
    """One instance's :class:`ConsoleLog`: EC2's console while it gives one, else the store's
    copy; the bucket's agent log, else the copy's.  GetConsoleOutput is not asked about an
    instance EC2 no longer lists (it would answer InvalidInstanceID.NotFound)."""
    text, when, latest = "", None, False
    if inst is not None:
        try:
            text, when, latest = provider.console_output(iid)
        except NotFoundError:   # gone from EC2 between the listing and now
            pass
    agent_log = _agent_log(provider, name, iid)
    state = inst.state if inst is not None else "terminated"
    launch_time = inst.launch_time if inst is not None else None
    if text or copy is None:
        return ConsoleLog(iid, state, launch_time, when, text, latest, agent_log)
    if agent_log is None and copy.agent_log:
        agent_log = _printable(copy.agent_log)
    return ConsoleLog(iid, state, launch_time, None, copy.console, False, agent_log,
                      copy.at, copy.reason)


def _agent_log(provider: Provider, name: str, iid: str) -> str | None:
    """The agent log ``iid`` uploaded, as text fit for a terminal; None when there is none or
    setup's outputs (the bucket) are unknown."""
    try:
        data = provider.agent_log(name, iid)
    except NotSetUpError:
        return None
    if data is None:
        return None
    return _printable(data.decode("utf-8", "replace"))


def _printable(text: str) -> str:
    """An agent log fit for a terminal: control characters but tab and newline removed."""
    return _CONTROL_RE.sub("", text)


def _annex_exists(provider: Provider, name: str) -> bool:
    """Whether the annex has a lease or a bundle (an annex whose fleet launched nothing yet)."""
    try:
        return provider.get_lease(name) is not None or provider.bundle_exists(name)
    except (NotSetUpError, ProviderError):
        return False
