"""The consoles the reconciler saved in the state store before it ended never-joined instances
(read by ``condor_annex logs``).

EC2 answers GetConsoleOutput only for a while after an instance ends, and lists an ended
instance only briefly (docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html:
"Recently terminated instances might appear in the returned results.  This interval is usually
less than one hour."), so the reconciler keeps each console, with the agent's uploaded log, in the store
(:meth:`condor_annex.state.store.Store.save_log`) before its TerminateInstances.  This module
only reads those copies: it never creates a state file (``logs`` on a machine that never ran
``create`` must leave nothing behind).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from condor_annex.state.records import TransitionRecord
from condor_annex.state.store import default_path, open_store

#: The pointer to ``condor_annex logs`` the reconciler appends to a never-joined reason: said
#: to a user who is reading exactly that, it is dropped.
_SEE_LOGS_RE = re.compile(r";\s*see condor_annex logs\b.*$", re.DOTALL)


@dataclass(frozen=True)
class SavedCopy:
    """One instance's console as the reconciler saved it.

    Attributes:
        instance_id: EC2's id.
        at: when it was saved (aware UTC).
        console: the GetConsoleOutput text then ("" when EC2 had none).
        agent_log: the agent's uploaded log then ("" when there was none).
        reason: why the reconciler ended the instance (e.g. "never joined: no startd ad 600 s
            after launch"), or "" when the store does not say.
        first_seen: when the store first recorded the instance (aware UTC; about its launch
            time): orders instances EC2 no longer lists.
    """

    instance_id: str
    at: datetime
    console: str
    agent_log: str
    reason: str
    first_seen: datetime


def saved_copies(knobs: dict[str, str], annex: str) -> dict[str, SavedCopy]:
    """Every saved console of the annex's instances, from the user's state file.

    Args:
        knobs: the user's knobs (``ANNEX_STATE_FILE`` names the file).
        annex: the annex name.

    Returns:
        instance id -> :class:`SavedCopy`; empty when there is no state file (none is created).

    Raises:
        BadInputError: ``ANNEX_STATE_FILE`` is not an absolute path, or the file is not a
            usable state file (:class:`condor_annex.state.store.Store`).
    """
    if not default_path(knobs).exists():
        return {}
    out: dict[str, SavedCopy] = {}
    with open_store(knobs) as store:
        for rec in store.instances(annex):
            saved = store.saved_log(rec.instance_id)
            if saved is None or saved.annex != annex:
                continue
            history = store.transitions(rec.instance_id)
            out[rec.instance_id] = SavedCopy(
                rec.instance_id, saved.at, saved.console, saved.agent_log,
                _reason(history, saved.at), history[0].at if history else saved.at)
    return out


def _reason(history: list[TransitionRecord], saved_at: datetime) -> str:
    """Why the instance was ended: its move to never-joined (what the reconciler saves the
    console for), else its last transition up to the save; without the pointer to ``logs``."""
    chosen = [t for t in history if t.to_state == "never-joined" and t.reason] \
        or [t for t in history if t.at <= saved_at and t.reason]
    return _SEE_LOGS_RE.sub("", chosen[-1].reason).strip() if chosen else ""
