"""The classic ``-status [-annex-name N] [-classads]`` and ``[-annex-name N] status [ARGS]``,
printing what HTCondor's ``condor_annex`` 23.9.6 printed, with its exit status (reference §6).

What the original did, and so do these:

1. list every instance tagged ``htcondor:AnnexName``, terminated ones included (one
   DescribeInstances pass), keeping annex ``N``'s (its name in any case) when given;
2. none: ``Found no instances in any annex.`` (``Found no machines in that annex.`` with a
   name), exit status 0;
3. ``status``: hand them to ``condor_status -annex`` (:mod:`.classic_status_word`);
4. ``-status``: ask the collector (``COLLECTOR_HOST``) for the annex slots, mark their instances
   ``in-pool`` (if it does not answer: ``Status check failed -- cannot contact collector`` on
   stderr, and on without), and print the tables (:mod:`.classic_status_tables`) or the
   ClassAds (:mod:`.classic_status_classads`); exit status 0.

The original's audit-log lines are not written.  A cloud error is one line and exit status 1
(the original printed its GAHP's message).
"""

from __future__ import annotations

import sys

from condor_annex.cli.classic_context import context, say
from condor_annex.cli.classic_plan import Plan
from condor_annex.cli.classic_status_classads import classads_text, key_file_md5
from condor_annex.cli.classic_status_tables import (NO_INSTANCES, NO_MACHINES, annex_table,
                                                    summary_table)

__all__ = ["classads_text", "run_status"]

#: What the original wrote on stderr when the collector did not answer.
NO_COLLECTOR = "Status check failed -- cannot contact collector"


def run_status(plan: Plan) -> int:
    """Run ``-status`` or the ``status`` word (``plan.status_args`` is not None); returns the
    exit status (0, or condor_status's for the word).

    Raises:
        ProviderError: the cloud could not be listed.
        PoolError: ``status`` and HTCondor's ``condor_status`` is not installed.
    """
    from condor_annex.service import classic_status as svc
    ctx = context(plan)
    name = plan.annex_name
    instances = svc.classic_instances(ctx, name)
    if not instances:
        say(NO_INSTANCES if name is None else NO_MACHINES)
        return 0
    if plan.status_args is not None:
        from condor_annex.cli.classic_status_word import run_condor_status
        return run_condor_status(instances, name, plan.status_args)
    states = {i.instance_id: i.state for i in instances}
    annexes = {i.instance_id: i.annex_name for i in instances}
    in_pool = svc.slot_instance_ids(ctx, name)
    if in_pool is None:
        sys.stderr.write(NO_COLLECTOR + "\n")
        sys.stderr.flush()
    for iid in in_pool or ():
        states[iid] = svc.IN_POOL
    if plan.classads:
        out, err = classads_text(states, annexes, name, key_file_md5(ctx.aws.access_key_file))
        say(out, end="")
        if err:
            sys.stderr.write(err)
        return 0
    say(summary_table(states, annexes) if name is None else annex_table(states), end="")
    return 0
