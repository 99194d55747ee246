"""Convergence without a daemon: a ``condor_annex`` command runs one reconciler pass
in-process before it acts, when no annexd serves its state file (issue 11).

That pass is what makes a killed command harmless: a create killed during its launch call is
rolled back (or its instances adopted), an ``off`` killed part-way is finished, an ``extend``
killed between its tags and its schedule has its tags put back in line with the schedule.
When annexd runs, it does this every ``ANNEXD_INTERVAL`` seconds and commands do not.
"""

from __future__ import annotations

import logging
from pathlib import Path

from condor_annex import config, validate
from condor_annex.errors import BadInputError, NotSetUpError, ProviderError
from condor_annex.reconciler.plan import (DEFAULT_JOIN_DEADLINE_S, DEFAULT_NEVER_JOINED_LIMIT,
                                          PlanSettings)
from condor_annex.reconciler.reconcile import PassReport, run_pass
from condor_annex.service.context import Context
from condor_annex.state import daemon_lock
from condor_annex.state.store import default_path, open_store

log = logging.getLogger(__name__)

#: Knob: seconds (or a duration such as ``15m``) an instance may run without a startd ad in
#: the collector before it is ended as never joined; ``--join-deadline`` per annex wins.
JOIN_DEADLINE_KNOB = "ANNEX_JOIN_DEADLINE"
#: Knob: consecutive never-joined nodes after which an annex stops launching replacements.
NEVER_JOINED_LIMIT_KNOB = "ANNEX_NEVER_JOINED_LIMIT"


def plan_settings(knobs: dict[str, str]) -> PlanSettings:
    """The planner's settings from the user's knobs.

    Raises:
        BadInputError: a knob value that is not a duration (join deadline) or a count from 1
            to 100 (limit), naming the knob; exit 2.
    """
    deadline = float(DEFAULT_JOIN_DEADLINE_S)
    text = knobs.get(JOIN_DEADLINE_KNOB, "").strip()
    if text:
        deadline = validate.duration(text, JOIN_DEADLINE_KNOB, unit_required=False)
    limit = DEFAULT_NEVER_JOINED_LIMIT
    text = knobs.get(NEVER_JOINED_LIMIT_KNOB, "").strip()
    if text:
        if not text.isdigit() or not 1 <= int(text) <= 100:
            raise BadInputError(f"{NEVER_JOINED_LIMIT_KNOB}: {validate.shown(text)} is not a "
                                "count from 1 to 100; fix it in ~/.condor/user_config")
        limit = int(text)
    return PlanSettings(join_deadline_s=deadline, never_joined_limit=limit,
                        autoscale_settle_s=config.autoscale_settle_s(knobs))


def state_file(ctx: Context) -> Path:
    """The state file this command uses (``ANNEX_STATE_FILE``)."""
    return default_path(ctx.knobs)


def daemon_pid(ctx: Context) -> int | None:
    """The pid of the annexd serving this command's state file, or None."""
    return daemon_lock.holder(state_file(ctx))


def reconcile_once(ctx: Context) -> PassReport:
    """Run one pass now, whoever else runs (annexd's loop, ``status --refresh``).

    Raises:
        NotSetUpError: no setup outputs.
        BadInputError: a bad knob, or an unusable state file (exit 2).
        ProviderError: DescribeInstances failed.
    """
    outputs = ctx.setup_outputs()
    provider = ctx.provider(outputs)
    with open_store(ctx.knobs) as store:
        return run_pass(provider, store, collector=ctx.collector, bucket=outputs.bucket,
                        settings=plan_settings(ctx.knobs), listing_lag_s=ctx.listing_lag_s,
                        notify=ctx.notify)


def converge(ctx: Context) -> PassReport | None:
    """Before a command acts: one pass in-process when no annexd serves the state file and the
    store knows a live annex (else None: nothing to finish, or the daemon does it).

    Failures of the pass are logged and never stop the command (the command's own checks
    report a cloud that cannot be reached); a state file that cannot be used stops it
    (exit 2, naming the file and ``sweep --adopt``), since the command would write to it.

    Raises:
        BadInputError: the state file is corrupt or from a newer version; a bad knob.
    """
    if daemon_pid(ctx) is not None:
        return None
    with open_store(ctx.knobs) as store:
        if not store.annexes():
            return None
    try:
        return reconcile_once(ctx)
    except NotSetUpError:
        return None   # nothing of ours can exist in the cloud yet
    except ProviderError as e:
        log.warning("reconciler pass skipped: %s", e)
        return None
