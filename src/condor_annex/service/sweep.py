"""``condor_annex sweep``: find and end what this user's annexes left behind.

Everything ``create`` makes carries tag ``htcondor:AnnexOwner`` = the user's identity (STS
GetCallerIdentity; see :mod:`condor_annex.providers.aws.identity`).  The sweep lists every annex
resource in the region once per kind and keeps the user's orphans
(:func:`condor_annex.providers.aws.orphans.decide`): the resources of an annex with no live
lease that the state store does not know, or whose lease has passed, older than a grace
(10 min), and only when the whole annex is the user's.  Ending uses ``off``'s code
(:func:`condor_annex.service.annex.end_annex`, no graceful wait: nothing of an orphan serves the
pool), annex by annex, so an orphan is ended exactly as ``off`` would end its annex.  Nothing
without our tags, or of another owner, is ever touched.

With ``adopt``, the annexes of this user that have a live lease and that the state store does
not know are recorded in it (their live instances too): how a lost store is rebuilt from the
cloud.
"""

from __future__ import annotations

import logging
from datetime import datetime

from condor_annex.errors import AnnexError, UnknownAnnexError
from condor_annex.model import utcnow
from condor_annex.providers.aws import orphans as _orphans
from condor_annex.providers.aws.orphans import AnnexResource, Orphan
from condor_annex.service.context import Context

log = logging.getLogger(__name__)


def sweep(ctx: Context, dry_run: bool = False, adopt: bool = False, *,
          grace_s: float | None = None, now: datetime | None = None) -> list[Orphan]:
    """List this user's orphans and, unless ``dry_run``, end them.

    Args:
        ctx: the command's context (setup outputs, provider).
        dry_run: only list; end nothing.
        adopt: first record this user's live annexes the state store does not know.
        grace_s: seconds a resource must be old to be an orphan; default
            :data:`condor_annex.providers.aws.orphans.GRACE_S` (600).
        now: aware UTC; default the clock.

    Returns:
        The orphans, in annex, kind, id order (also those just ended).

    Raises:
        NotSetUpError: setup has not run (nothing is listed).
        BadInputError: the state file cannot be used (naming it; nothing ended).
        AnnexError: an annex could not be ended (the others were; the message names it).
        ProviderError: a listing failed (nothing ended).
    """
    outputs = ctx.setup_outputs()
    provider = ctx.provider(outputs)
    now = now or utcnow()
    resources = provider.annex_resources()
    owner = provider.owner()
    known = _known_annexes(ctx)
    grace = _orphans.GRACE_S if grace_s is None else grace_s
    decision = _orphans.decide(resources, owner, now, grace_s=grace, known=known)
    if adopt:
        orphaned = {o.annex for o in decision.orphans}
        _adopt(ctx, [r for r in resources if r.annex not in orphaned and r.annex not in known],
               owner, now)
    for line in decision.kept:
        ctx.notify(line)
    if dry_run:
        return list(decision.orphans)
    from condor_annex.service.end import end_annex
    failed = []
    for annex in sorted({o.annex for o in decision.orphans}):
        try:
            end_annex(ctx, annex, grace_s=0)
        except UnknownAnnexError:
            pass   # ended meanwhile (off, the lease enforcer)
        except Exception as e:   # noqa: BLE001 - end the others, then say which failed
            log.warning("sweep: annex %s could not be ended", annex, exc_info=True)
            failed.append(f"{annex} ({e})")
    if failed:
        raise AnnexError(f"sweep: could not end {len(failed)} orphaned annex(es): "
                         f"{'; '.join(failed)}; run 'condor_annex sweep' again")
    return list(decision.orphans)


def _known_annexes(ctx: Context) -> frozenset[str]:
    """Live annexes of the state store; none when there is no state file (none is made)."""
    from condor_annex.state import store
    path = store.default_path(ctx.knobs)
    if not path.exists():
        return frozenset()
    with store.Store(path) as db:
        return frozenset(a.name for a in db.annexes())


def _adopt(ctx: Context, resources: list[AnnexResource], owner: str, now: datetime) -> None:
    """Record in the state store each annex of ``owner`` among ``resources`` that has a live
    lease, with its lease end and its live instances (their lifecycle state from EC2's)."""
    from condor_annex.state import store
    from condor_annex.state.lifecycle import from_ec2_state
    by_annex: dict[str, list[AnnexResource]] = {}
    for r in resources:
        by_annex.setdefault(r.annex, []).append(r)
    with store.open_store(ctx.knobs) as db:
        for annex, found in sorted(by_annex.items()):
            ends = [r.lease_end for r in found if r.kind == "schedule" and r.lease_end]
            if not ends or max(ends) <= now or any(
                    r.owner and r.owner != owner for r in found):
                continue
            if not any(r.owner == owner for r in found):
                continue
            instances = [r for r in found if r.kind == "instance" and r.owner == owner]
            db.put_annex(annex, {"adopted": "condor_annex sweep --adopt"},
                         requested=len(instances), lease_end=max(ends), now=now)
            for r in instances:
                db.add_instances(annex, [r.id], state=from_ec2_state(r.state).value,
                                 reason="adopted by condor_annex sweep --adopt", now=now)
            ctx.notify(f"adopted annex {annex} ({len(instances)} instance(s)) into "
                       f"{db.path}")
