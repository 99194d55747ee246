"""``status`` from the state store: what annexd's last pass observed (issue 11), read without
a cloud call, and the lifecycle counts the store adds to a live status.
"""

from __future__ import annotations

import logging
import sqlite3

from condor_annex.errors import AnnexError, UnknownAnnexError
from condor_annex.reconciler.annex_status import AnnexStatus, notable_reasons, status_from_dict
from condor_annex.reconciler.end_reason import status_fields
from condor_annex.service.context import Context
from condor_annex.state.store import default_path, open_store

log = logging.getLogger(__name__)


def from_store(ctx: Context, name: str | None = None, *,
               must_exist: bool = False) -> list[AnnexStatus]:
    """Each live annex (or ``name``) as the last pass observed it, by name, with
    :attr:`AnnexStatus.as_of` set.

    Raises:
        UnknownAnnexError: ``must_exist`` and the last pass saw no annex ``name`` (exit 2).
        BadInputError: the state file is corrupt or newer (naming it).
    """
    with open_store(ctx.knobs) as store:
        at, seen = store.observations()
    rows = []
    for annex, data in sorted(seen.items()):
        if name is not None and annex != name:
            continue
        st = status_from_dict(data)
        st.as_of = at
        rows.append(st)
    if name is not None and must_exist and not rows:
        raise UnknownAnnexError(f"annex '{name}' is not in annexd's last pass (state file "
                                f"{default_path(ctx.knobs)}); see 'condor_annex status', or "
                                "'condor_annex status --refresh'")
    return rows


def unseen_by_last_pass(ctx: Context, name: str) -> bool:
    """Whether annex ``name`` is live in the store but not in annexd's last pass (created
    since: a user asking right after ``create``)."""
    with open_store(ctx.knobs) as store:
        _, seen = store.observations()
        record = store.annex(name)
        return name not in seen and record is not None and record.ended_at is None


def add_lifecycle(ctx: Context, rows: list[AnnexStatus]) -> None:
    """Fill each row's ``lifecycle`` counts and notable ``reasons`` from the store (left
    empty when the store cannot be read: a live status never fails for it)."""
    if not rows or not default_path(ctx.knobs).exists():
        return
    try:
        with open_store(ctx.knobs) as store:
            for st in rows:
                instances = store.instances(st.name)
                why = store.last_transitions(st.name)
                counts: dict[str, int] = {}
                for r in instances:
                    counts[r.state] = counts.get(r.state, 0) + 1
                st.lifecycle = counts
                fields = status_fields(store.annex(st.name))
                st.end_reason, st.budget_usd = fields["end_reason"], fields["budget_usd"]
                st.interruptions = len(store.interruptions(st.name))
                st.replacements = len(store.replacements(st.name, "launched"))
                scaled = store.autoscale().get(st.name)   # issue 13
                st.autoscale = scaled.as_dict() if scaled is not None else None
                st.reasons = notable_reasons([
                    {"id": r.instance_id, "lifecycle": r.state,
                     "reason": why[r.instance_id].reason if r.instance_id in why else ""}
                    for r in instances])
    except (AnnexError, sqlite3.Error, OSError) as e:
        log.info("status: lifecycle counts not read from the state file: %s", e)
