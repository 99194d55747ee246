"""Growing demand-driven annexes (issue 13): condor_annexd launches what its pass decided.

A pass records each autoscaled annex's decision in the store (``want`` instances, of which
``want_keep`` bring it up to ``--min``; :mod:`condor_annex.reconciler.autoscale`).  After the
pass, condor_annexd takes the decision (sets ``want`` back to 0 **before** launching: a kill -9
here never launches twice) and launches as ``create`` adds to an annex — the path replacements
of interrupted capacity take (:mod:`condor_annex.service.replace`): the annex's recorded
settings, under its existing lease, one RunInstances with a client token of its own
(``NAME_<uuid>``) recorded before the call.  ``--min`` nodes carry the no-idle-shutdown tag.

Only condor_annexd launches: a command's in-process pass records a decision and the next daemon
pass decides again from what it sees (a command must not buy instances as a side effect).
Annexes with user data of their own are not grown (it is not kept in the state file): the
decision then says so.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime

from condor_annex.errors import AnnexError
from condor_annex.service.context import Context
from condor_annex.service.replace import spec_for_replacement
from condor_annex.state.store import open_store

log = logging.getLogger(__name__)


def launch_wanted(ctx: Context, since: datetime | None = None) -> list[str]:
    """Launch every autoscaled annex's wanted instances (see the module docstring).

    Args:
        ctx: settings.
        since: the start of the pass whose decisions to launch (aware UTC): an older decision
            (a command's pass, or a pass that left a busy annex alone) is dropped, never
            launched.  None: every decision.

    Returns:
        one line per annex handled, for people and the daemon's log.
    """
    from condor_annex.service.create import create_annex
    with open_store(ctx.knobs) as store:
        rows = [r for r in store.autoscale().values() if r.want > 0]
        annexes = {a.name: a for a in store.annexes()}
        for r in rows:
            store.set_autoscale(r.annex, want=0, want_keep=0)   # taken before the launch
    lines: list[str] = []
    for r in rows:
        if since is not None and (r.at is None or r.at < since):
            continue   # stale: this pass did not decide it
        annex = annexes.get(r.annex)
        if annex is None or annex.off_requested_at is not None:
            continue
        if annex.spec.get("user_data_bytes"):
            why = (f"{r.why}; not grown: the annex has user data of its own, which the state "
                   "file does not keep")
            with open_store(ctx.knobs) as store:
                store.set_autoscale(r.annex, why=why)
            lines.append(f"annex {r.annex}: {why}")
            continue
        spec = spec_for_replacement(r.annex, annex.spec)
        keep = min(r.want_keep, r.want)
        for count, kept in ((keep, True), (r.want - keep, False)):
            if count <= 0:
                continue
            try:
                result = create_annex(ctx, dataclasses.replace(spec, count=count),
                                      keep_idle=kept)
                lines.append(f"annex {r.annex}: launched {len(result.instance_ids)} "
                             f"instance(s) ({result.client_token}): {r.why}")
            except AnnexError as e:
                why = f"{r.why}; the launch failed: {e}"
                with open_store(ctx.knobs) as store:
                    store.set_autoscale(r.annex, why=why)
                lines.append(f"annex {r.annex}: {why}")
                break
    for line in lines:
        ctx.notify(line)
    return lines
