"""Use case extend: move an annex's lease end (token and bundle re-made, ``htcondor:LeaseEnd``
tags rewritten, the lease's schedule moved last), for every kind of annex.  It holds the
annex's lock (:mod:`condor_annex.state.locks`); a failed step puts the bundle and tags back.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from condor_annex.errors import AnnexError, LeaseWouldShortenError, ProviderError
from condor_annex.model import LeaseRef, utcnow
from condor_annex.pool import configs
from condor_annex.providers.base import Provider
from condor_annex.service import budget_change, recording
from condor_annex.service.budget_change import BudgetCheck
from condor_annex.service.common import mint_for, whole_second
from condor_annex.service.context import Context
from condor_annex.service.converge import converge
from condor_annex.service.names import unknown_annex
from condor_annex.state.locks import annex_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtendResult:
    """What ``extend`` did.

    Attributes:
        annex_name: the annex.
        lease_expires_at: the new lease end (aware UTC, whole second).
        previous_end: the lease end before.
        instance_ids: live instances whose ``htcondor:LeaseEnd`` tag was rewritten.
        fleets: fleets whose tag was rewritten.
        fleets_stopping: (fleet id, ValidUntil) of fleets whose unchangeable ``ValidUntil``
            comes before the new end: they stop placing and replacing instances then (their
            instances keep running until the lease ends).
        budget: the annex's budget after the extend (with its spend and projection), or None
            when it has none (:mod:`condor_annex.service.budget_change`).
    """

    annex_name: str
    lease_expires_at: datetime
    previous_end: datetime
    instance_ids: tuple[str, ...] = ()
    fleets: tuple[str, ...] = ()
    fleets_stopping: tuple[tuple[str, datetime], ...] = ()
    budget: BudgetCheck | None = None


#: Lines of ``config.d/50-annex.config`` (:func:`configs.annex_config`) that ``extend`` reads
#: back to re-render the bundle as ``create`` made it.
_CONFIG_LINE = re.compile(r"([A-Za-z_.]+) = (.*)")
_OWNERS_START = re.compile(r'stringListMember\(TARGET\.Owner, "([^"]*)"\)')


def bundle_settings(bundle: bytes) -> dict:
    """What ``create`` rendered into an annex's bundle and ``extend`` keeps: the collector,
    trust domain, idle time (seconds) and owners, read back from its
    ``config.d/50-annex.config`` (the format of :func:`condor_annex.pool.configs.annex_config`).

    Returns:
        {"collector": str, "trust_domain": str, "idle_seconds": int, "owners": tuple[str]},
        the keyword arguments of :func:`condor_annex.pool.configs.annex_bundle` besides the
        name, token and lease end.

    Raises:
        AnnexError: the bundle is not one ``create`` made (not a tar.gz, no such file, or a
            line missing).
    """
    import io
    import tarfile
    try:
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            member = tar.extractfile("config.d/50-annex.config")
            text = member.read().decode() if member else ""
    except (tarfile.TarError, KeyError, OSError, UnicodeDecodeError, EOFError):
        text = ""
    knobs = {m[1]: m[2] for m in map(_CONFIG_LINE.fullmatch, text.splitlines()) if m}
    try:
        start = knobs["START"]
        owners_m = _OWNERS_START.fullmatch(start)
        if start != "TRUE" and owners_m is None:
            raise KeyError("START")
        return {"collector": knobs["COLLECTOR_HOST"], "trust_domain": knobs["TRUST_DOMAIN"],
                "idle_seconds": int(knobs["STARTD_NOCLAIM_SHUTDOWN"]),
                "owners": tuple(o for o in (owners_m.group(1) if owners_m else "").split(",")
                                if o)}
    except (KeyError, ValueError):
        raise AnnexError("the annex's stored bundle is not one condor_annex create made (its "
                         "config.d/50-annex.config is missing a setting); nothing was "
                         "changed") from None


def extend_annex(ctx: Context, name: str, lease_seconds: int | None, *,
                 allow_shorten: bool = True, budget_usd: float = 0.0,
                 duration_flag: str = "DURATION") -> ExtendResult:
    """Move an annex's lease to ``now + lease_seconds`` (rounded up to a whole second), for
    every kind of annex (on-demand, EC2 Fleet, Spot Fleet); never changes the annex's type;
    and/or change its budget (``budget_usd``).

    Before anything changes, the annex's budget is checked
    (:func:`condor_annex.service.budget_change.recheck`): a new budget below what was spent
    plus one minute of the rate, or a later lease end the budget cannot pay for, is refused.
    A new budget is written after the lease moved (tag ``htcondor:Budget``, then the store).

    Under the annex's lock, in this order (each step idempotent, so re-running the same
    extend finishes one that stopped part-way):

    1. the annex's IDTOKEN is minted again for the new end (plus at most 5 min of clock skew)
       and the bundle is re-rendered as ``create`` made it (collector, trust domain, idle
       time and owners read back from the stored bundle, :func:`bundle_settings`) with the
       new ``AnnexLeaseEnd``, and uploaded in place;
    2. tag ``htcondor:LeaseEnd`` is rewritten on every live instance, fleet and the launch
       template (EC2 CreateTags, in batches);
    3. the lease's schedule moves (Scheduler UpdateSchedule) last, so until it has moved the
       annex still ends at its old time.

    Fleets keep their ``ValidUntil`` (it cannot be modified): a fleet whose ``ValidUntil``
    passes before the new end stops placing and replacing instances then, but its instances
    run until the lease ends (they were launched with ``TerminateInstancesWithExpiration``
    false); :attr:`ExtendResult.fleets_stopping` lists them.

    Args:
        lease_seconds: the new lease length from now, or None to keep the lease (a budget
            change alone).
        allow_shorten: False refuses a new end earlier than the current one (modern ``extend``
            without ``--force-lease``).
        budget_usd: the new budget (USD, ``--budget``), or 0.0 to keep it.
        duration_flag: how the user gave ``lease_seconds``, for messages (``DURATION``, or
            the classic ``-duration``).

    Raises:
        UnknownAnnexError: the annex has no lease (the original created one anyway).
        LeaseWouldShortenError: the new end is earlier and ``allow_shorten`` is False.
        BadInputError: the budget refuses the change (one line naming the flag; nothing
            changed).
        AnnexError: the annex's bundle is missing or unreadable (nothing changed).
        PoolError: the token could not be minted (nothing changed).
        ProviderError: a cloud call failed part-way; the bundle and tags are put back as far
            as possible and the message says the annex still ends at its old time.
    """
    outputs = ctx.setup_outputs()
    provider = ctx.provider(outputs)
    converge(ctx)
    with annex_lock(name, notify=ctx.notify):
        lease = provider.get_lease(name)
        if lease is None:
            raise unknown_annex(provider, name)
        if lease_seconds is None:
            check = budget_change.recheck(ctx, provider, name, lease.expires_at,
                                          new_budget=budget_usd)
            if check is not None:
                budget_change.apply(ctx, provider, name, check)
            return ExtendResult(name, lease.expires_at, lease.expires_at, budget=check)
        new_end = whole_second(utcnow() + timedelta(seconds=lease_seconds))
        if not allow_shorten and new_end < lease.expires_at - timedelta(seconds=1):
            raise LeaseWouldShortenError(name, lease.expires_at, new_end)
        check = budget_change.recheck(ctx, provider, name, new_end, new_budget=budget_usd,
                                      extending=new_end > lease.expires_at,
                                      duration_flag=duration_flag)
        old_bundle = provider.get_bundle(name)
        if old_bundle is None:
            raise AnnexError(f"annex '{name}': its bundle is missing (is it being ended?); "
                             "nothing was changed: its lease still ends it at "
                             f"{lease.expires_at:%Y-%m-%d %H:%M:%S} UTC")
        settings = bundle_settings(old_bundle)
        settings.update(configs.bundle_extras(old_bundle, name))   # its key, --config-dir
        token = mint_for(ctx, name, new_end)
        bundle = configs.annex_bundle(annex_name=name, token=token, **settings,
                                      lease_end=math.ceil(new_end.timestamp()))
        del token
        step = "uploading the bundle"
        try:
            provider.put_bundle(name, bundle)
            step = "tagging the instances and fleets"
            tagged = provider.set_lease_end(name, new_end)
            step = "moving the lease schedule"
            moved = provider.extend_lease(lease, new_end)
        except ProviderError as e:
            current = _lease_or_none(provider, name)
            if current is not None and current.expires_at == new_end:
                # The schedule did move (a lost reply): the extend is complete but for the
                # answer; tag again, which is idempotent.
                tagged = provider.set_lease_end(name, new_end)
                moved = current
            else:
                _put_back(provider, name, old_bundle, lease.expires_at)
                raise type(e)(
                    f"annex '{name}': extend stopped while {step} ({e}); its lease still "
                    f"ends it at {lease.expires_at:%Y-%m-%d %H:%M:%S} UTC; run the same "
                    "extend again to move it", code=e.code, retryable=e.retryable,
                    request_id=e.request_id) from e
        if check is not None:
            budget_change.apply(ctx, provider, name, check)
    recording.record_lease_end(ctx.knobs, name, moved.expires_at)
    stopping = tuple((fid, until) for fid, until in tagged.fleets
                     if until is not None and until < moved.expires_at)
    return ExtendResult(name, moved.expires_at, lease.expires_at, tagged.instance_ids,
                        tuple(fid for fid, _ in tagged.fleets), stopping, check)


def _lease_or_none(provider: Provider, name: str) -> LeaseRef | None:
    try:
        return provider.get_lease(name)
    except ProviderError:
        return None


def _put_back(provider: Provider, name: str, bundle: bytes, end: datetime) -> None:
    """After a failed extend: the old bundle (old token, old ``AnnexLeaseEnd``) and the old
    ``htcondor:LeaseEnd`` tags, as far as the cloud lets us (best effort: the schedule, which
    did not move, ends the annex at its old time anyway)."""
    try:
        provider.put_bundle(name, bundle)
        provider.set_lease_end(name, end)
    except ProviderError as e:
        log.warning("annex %s: could not put the old bundle and tags back: %s", name, e)


def extend_lease(ctx: Context, name: str, lease_seconds: int, *,
                 allow_shorten: bool = True) -> datetime:
    """:func:`extend_annex`, returning only the new lease end (aware UTC)."""
    return extend_annex(ctx, name, lease_seconds,
                        allow_shorten=allow_shorten).lease_expires_at
