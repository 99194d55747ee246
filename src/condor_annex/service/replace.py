"""Replacing capacity lost to spot interruptions (issue 12 item 2).

A reconciler pass records each interruption and, when the annex still has growth allowed
(no budget or protected-mode stop, no ``off``) and at least 10 minutes of lease, a wanted
replacement (:class:`~condor_annex.reconciler.actions.WantReplacement`).  After the pass, this
module launches each wanted replacement as ``create`` adds to an annex: one more instance (or
one more unit of fleet capacity) with the annex's recorded settings, under its existing lease,
with a client token of its own — so a kill -9 here is as safe as one during ``create``
(a replacement killed while launching is not tried again: its row stays ``launching``).

* on-demand annexes: RunInstances of one instance of the annex's type;
* EC2 Fleet annexes: a fleet of capacity 1 over the annex's instance types, the interrupted
  type moved last (AWS's advice: diversify away from the pool that was reclaimed);
* Spot Fleet annexes (the classic ``-aws-spot-fleet-config-file``) and annexes with user data
  of their own are not replaced: their config and user data may hold the user's secrets and
  are not kept in the state file; the replacement is marked skipped with that reason.

A ``maintain`` fleet replaces by itself on AWS; its interruptions are only counted.

condor_annexd launches replacements after each pass; without a daemon they wait (a command's
in-process pass records them, the next daemon pass launches them): replacing capacity is
watching work, and ``create`` itself runs a pass, which must not launch again.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from condor_annex.errors import AnnexError
from condor_annex.model import AnnexSpec, SpotSpec
from condor_annex.service.context import Context
from condor_annex.state.store import open_store

log = logging.getLogger(__name__)

#: AnnexSpec fields a replacement takes from the recorded spec (the rest keep defaults).
_KEPT = ("lease_seconds", "idle_seconds", "instance_type", "image_id", "owners", "tags",
         "subnet_ids", "image_name", "join_deadline_s", "job_deadline_s")


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples a spec holds."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def spec_for_replacement(name: str, recorded: dict[str, Any]) -> AnnexSpec:
    """The :class:`AnnexSpec` adding one instance (or capacity unit) to annex ``name`` as it
    was created (``recorded`` is the store's spec dict)."""
    fields = {f.name for f in dataclasses.fields(AnnexSpec)}
    kept = {k: _tuples(recorded[k]) for k in _KEPT if k in fields and k in recorded}
    return AnnexSpec(name=name, count=1, lease_explicit=False, **kept)


def spot_for_replacement(recorded: dict[str, Any], interrupted_type: str) -> SpotSpec | None:
    """The annex's EC2 Fleet settings with ``interrupted_type`` moved last, or None when none
    were recorded (a Spot Fleet annex, or a create that died before recording them)."""
    data = recorded.get("spot")
    if not isinstance(data, dict) or data.get("api") != "ec2-fleet":
        return None
    types = [tuple(t) for t in data.get("instance_types", [])]
    types.sort(key=lambda t: t[0] == interrupted_type)   # stable: others keep their order
    return SpotSpec(api="ec2-fleet", fleet_type="instant",
                    instance_types=tuple((str(t), float(w)) for t, w in types),
                    allocation_strategy=str(data.get("allocation_strategy", "")),
                    max_price=str(data.get("max_price", "")))


def replace_wanted(ctx: Context) -> list[str]:
    """Launch every wanted replacement (see the module docstring).

    Returns:
        one line per replacement handled, for people and the daemon's log.
    """
    from condor_annex.service.create import create_annex, create_spot_annex
    with open_store(ctx.knobs) as store:
        wanted = store.replacements(state="wanted")
        annexes = {a.name: a for a in store.annexes()}
        kinds = {r.annex: r.kind for r in store.launch_requests() if r.state == "launched"}
    lines = []
    for iid, name, itype, _, reason in wanted:
        annex = annexes.get(name)
        skip = ("its annex ended" if annex is None or annex.off_requested_at is not None
                else f"launching stopped: {annex.launch_stopped}" if annex.launch_stopped
                else "the annex has user data of its own, which the state file does not keep; "
                     f"add a node with 'condor_annex create {name} --count 1'"
                if annex.spec.get("user_data_bytes") else "")
        kind = kinds.get(name, "")
        token = ""
        with open_store(ctx.knobs) as store:
            # Taken before the launch: the create runs a pass of its own, which must not
            # launch this replacement again (a kill -9 here leaves it "launching": not retried).
            store.set_replacement(iid, "launching", reason)
        try:
            if annex is None:
                pass   # skip says why
            elif not skip and kind == "on-demand":
                token = create_annex(ctx, spec_for_replacement(name, annex.spec)).client_token
            elif not skip and kind == "ec2-fleet":
                spot = spot_for_replacement(annex.spec, itype)
                if spot is None:
                    skip = "its EC2 Fleet settings were not recorded"
                else:
                    token = create_spot_annex(ctx, spec_for_replacement(name, annex.spec),
                                              spot).client_token
            elif not skip:
                skip = (f"{kind or 'unknown'} annexes are not replaced (a Spot Fleet config "
                        "may hold secrets and is not kept)")
        except AnnexError as e:
            skip = f"the replacement launch failed: {e}"
        with open_store(ctx.knobs) as store:
            if token:
                store.set_replacement(iid, "launched", reason, token)
                lines.append(f"annex {name}: launched a replacement for {iid} ({token})")
            else:
                store.set_replacement(iid, "skipped", skip)
                lines.append(f"annex {name}: {iid} not replaced: {skip}")
    for line in lines:
        ctx.notify(line)
    return lines
