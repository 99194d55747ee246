"""One reconciler pass: observe -> plan -> execute -> record (issue 11, Ray autoscaler v2's
reconciler is the model).

:func:`run_pass` is what ``condor_annexd`` runs every ``ANNEXD_INTERVAL`` seconds and what a
``condor_annex`` command runs in-process when no daemon serves its state file.  After acting it
records each live annex's status as observed (:class:`~condor_annex.reconciler.annex_status.
AnnexStatus` plus lifecycle counts and each instance's last reason), so ``status`` can answer
from the store.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from condor_annex.model import utcnow
from condor_annex.providers.base import Provider
from condor_annex.reconciler.annex_status import (add_cost, ended_times, join_status,
                                                  merge_instance_rows)
from condor_annex.reconciler.cost import annex_cost, launch_prices
from condor_annex.reconciler.end_reason import shown_ended, status_fields
from condor_annex.reconciler.execute import Executor
from condor_annex.reconciler.observe import Observed, observe
from condor_annex.reconciler.plan import PlanSettings, plan
from condor_annex.reconciler.price_lookup import ProviderPrices
from condor_annex.state.store import Store


@dataclass(frozen=True)
class PassReport:
    """What one pass did.

    Attributes:
        at: when it started (aware UTC).
        seconds: how long it took.
        annexes: live annexes in the store.
        instances: instances with our annex tag the cloud listed.
        actions: actions planned.
        done / skipped: actions performed / left for a later pass.
        errors: one line per failed read or action.
        describe_calls: DescribeInstances pages read (one paginated call per pass).
    """

    at: datetime
    seconds: float
    annexes: int
    instances: int
    actions: int
    done: int
    skipped: int
    errors: tuple[str, ...] = ()
    describe_calls: int = 1
    lines: tuple[str, ...] = field(default=(), repr=False)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``daemon status --json``, the daemon's ad)."""
        return {"at": self.at.isoformat(), "seconds": round(self.seconds, 3),
                "annexes": self.annexes, "instances": self.instances, "actions": self.actions,
                "done": self.done, "skipped": self.skipped, "errors": list(self.errors)}


def run_pass(provider: Provider, store: Store, *, collector: str | None, bucket: str,
             settings: PlanSettings = PlanSettings(), listing_lag_s: float = 30.0,
             notify: Callable[[str], None] | None = None,
             now: Callable[[], datetime] = utcnow) -> PassReport:
    """Run one pass.

    Args:
        provider: the cloud.
        store: the state store (read, then written by the execute and record steps).
        collector: the pool's collector, or None/"" to skip the pool.
        bucket: setup's bucket.
        settings: the planner's deadlines.
        listing_lag_s: seconds a rollback looks again for what EC2 lists late.
        notify: one line per action done, for people.
        now: the clock (aware UTC).

    Returns:
        :class:`PassReport`.

    Raises:
        ProviderError: DescribeInstances failed (nothing was planned or done).
    """
    started = time.monotonic()
    at = now()
    seen = observe(provider, store, collector)
    actions = plan(seen.snapshot, at, settings)
    lines: list[str] = []

    def tell(line: str) -> None:
        lines.append(line)
        if notify:
            notify(line)

    executed = Executor(provider, store, bucket, listing_lag_s, tell).run(actions)
    store.put_observations(statuses(seen, store, ProviderPrices(provider), at), at=at)
    return PassReport(at, time.monotonic() - started, len(seen.snapshot.store.annexes),
                      len(seen.cloud), len(actions), executed.done, executed.skipped,
                      seen.errors + executed.errors, lines=tuple(lines))


def statuses(seen: Observed, store: Store, prices: ProviderPrices | None = None,
             at: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Each live annex's status as this pass observed it: ``status --json``'s fields
    (:meth:`AnnexStatus.as_dict`) plus ``lifecycle`` (state -> instances, the store's view
    after this pass), ``instances`` (id, EC2 state, lifecycle state and the reason of its last
    transition, merged with its cost row when ``prices`` is given: :mod:`.cost`) and
    ``launch_stopped``."""
    leases = seen.snapshot.leases or {}
    out: dict[str, dict[str, Any]] = {}
    # Annexes the reconciler ended within the hour stay shown, saying why (end_reason.py).
    for record in store.annexes() + shown_ended(store.annexes(include_ended=True),
                                                at or utcnow()):
        name = record.name
        cloud = {iid: i for iid, i in seen.cloud.items() if i.annex_name == name}
        slots = [s for s in (seen.slots or []) if s.annex_name == name]
        st = join_status(cloud, slots, name)
        st.lease_expires_at = leases.get(name, record.lease_end)
        rows = store.instances(name)
        why = store.last_transitions(name)
        if prices is not None:
            add_cost(st, annex_cost(cloud, prices, at or utcnow(),
                                    at_launch=launch_prices(record.spec),
                                    ended_at=ended_times(why),
                                    ip_usd_per_hour=prices.public_ip_usd_per_hour()))
        data = st.as_dict()
        for key in ("lease_seconds_left", "reasons", "as_of"):
            data.pop(key)   # computed when read: relative to the reader's clock, or derived
        data["lifecycle"] = dict(Counter(r.state for r in rows))
        data["instances"] = [
            {"id": r.instance_id, "ec2_state": cloud[r.instance_id].state
             if r.instance_id in cloud else "", "lifecycle": r.state,
             "reason": why[r.instance_id].reason if r.instance_id in why else ""}
            for r in rows]
        data["instances"] = merge_instance_rows(data["instances"], st.instances)
        data["launch_stopped"] = record.launch_stopped
        data.update(status_fields(record))
        data["interruptions"] = len(store.interruptions(name))
        data["replacements"] = len(store.replacements(name, "launched"))
        scaled = store.autoscale().get(name)   # issue 13
        data["autoscale"] = scaled.as_dict() if scaled is not None else None
        out[name] = data
    return out
