"""The execute step of a reconciler pass: the only code of the pass that calls the provider,
and the one that records each action's outcome in the store.

Actions run in the planner's order.  One that fails is recorded (its error line is returned,
the daemon counts it) and the pass goes on with the next: an action on another annex or
instance does not depend on it, and the next pass plans again from what it then observes.
Actions that change an annex's resources (ending it, rolling back a launch, rewriting its lease
tags) take the annex's lock first (:func:`condor_annex.state.locks.annex_lock_if_free`) and are
skipped when a command holds it: that command is alive and owns the annex meanwhile.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from condor_annex.agent.diagnosis import collector_unreachable
from condor_annex.errors import AnnexError, ProviderError
from condor_annex.model import utcnow
from condor_annex.providers.base import Provider
from condor_annex.reconciler import budget_actions, ending
from condor_annex.reconciler.autoscale_action import SetAutoscale
from condor_annex.reconciler.actions import (Action, AdoptInstance, EndAnnex, MarkLaunch,
                                             RecordInterruption, RecordTransition,
                                             RollBackLaunch, SaveConsole, StopLaunching,
                                             SyncLease, Terminate, WantReplacement)
from condor_annex.state import lifecycle
from condor_annex.state.lifecycle import TERMINAL, Lifecycle, TransitionError
from condor_annex.state.locks import annex_lock_if_free
from condor_annex.state.store import StaleStateError, Store

log = logging.getLogger(__name__)

#: Characters of an agent log kept in the store with the console (its tail).
AGENT_LOG_KEEP = 64 * 1024


@dataclass(frozen=True)
class Executed:
    """What :func:`execute` did.

    Attributes:
        done: actions performed.
        skipped: actions left for a later pass (a command held the annex's lock, or the lease
            was found after all).
        errors: one line per action that failed.
    """

    done: int
    skipped: int
    errors: tuple[str, ...]


@dataclass
class Executor:
    """Performs actions against one provider and one store.

    Attributes:
        provider: the cloud.
        store: the state store.
        bucket: setup's bucket (where bundles are).
        listing_lag_s: seconds a rollback keeps looking for what EC2 does not list yet.
        notify: one line of progress for people (the CLI's stderr, the daemon's log).
    """

    provider: Provider
    store: Store
    bucket: str
    listing_lag_s: float = 30.0
    notify: Callable[[str], None] | None = None
    #: instance id -> why it never joined, as its saved console or agent log says (filled by
    #: SaveConsole, used as the reason of its Terminate).
    diagnoses: dict[str, str] = field(default_factory=dict)

    def run(self, actions: Sequence[Action]) -> Executed:
        """Perform ``actions`` in order; see the module docstring for failures."""
        done = skipped = 0
        errors: list[str] = []
        for action in actions:
            try:
                if self._one(action):
                    done += 1
                else:
                    skipped += 1
            except (ProviderError, AnnexError, StaleStateError, KeyError) as e:
                line = f"{type(action).__name__} {_subject(action)}: {e}"
                log.warning("reconciler: %s", line)
                errors.append(line)
        return Executed(done, skipped, tuple(errors))

    # Each returns True when done, False when skipped.

    def _one(self, action: Action) -> bool:
        if isinstance(action, RecordTransition):
            self.store.set_instance_state(action.instance_id, expected=action.from_state.value,
                                          to=action.to_state.value, reason=action.reason)
            return True
        if isinstance(action, AdoptInstance):
            self.store.add_instances(action.annex, [action.instance_id],
                                     state=action.state.value, launch_token=action.launch_token,
                                     reason=action.reason)
            return True
        if isinstance(action, SaveConsole):
            return self._save_console(action)
        if isinstance(action, Terminate):
            return self._terminate(action)
        if isinstance(action, MarkLaunch):
            self.store.set_launch_state(action.client_token, action.state)
            return True
        if isinstance(action, SetAutoscale):   # issue 13: annexd launches ``want``
            self.store.set_autoscale(action.annex, above_since=action.above_since,
                                     demand=action.demand, target=action.target,
                                     want=action.want, want_keep=action.want_keep,
                                     why=action.reason, at=utcnow())
            return True
        if isinstance(action, StopLaunching):
            self.store.stop_launching(action.annex, action.reason)
            return True
        if isinstance(action, WantReplacement):
            self.store.want_replacement(action.instance_id, action.annex,
                                        action.instance_type, action.reason)
            return True
        if isinstance(action, RecordInterruption):
            if self.store.record_interruption(action.instance_id, action.annex,
                                              action.instance_type, action.reason):
                self._say(f"annex {action.annex}: {action.instance_id}: {action.reason}")
            return True
        with annex_lock_if_free(action.annex) as free:
            if not free:
                return False
            if isinstance(action, EndAnnex):
                return self._end_annex(action)
            if isinstance(action, budget_actions.BUDGET_ACTIONS):
                return budget_actions.perform(action, self.provider, self.store, self._say)
            if isinstance(action, RollBackLaunch):
                ending.end_launch_request(self.provider, action.annex, action.client_token,
                                          wait_s=self.listing_lag_s, notify=self.notify)
                self.store.set_launch_state(action.client_token, "rolled-back")
                self._say(f"annex {action.annex}: launch {action.client_token} rolled back: "
                          f"{action.reason}")
                return True
            if isinstance(action, SyncLease):
                if action.retag:
                    self.provider.set_lease_end(action.annex, action.lease_end)
                self.store.set_lease_end(action.annex, action.lease_end)
                return True
        raise AnnexError(f"unknown action {action!r}")   # a planner bug

    def _save_console(self, action: SaveConsole) -> bool:
        """Keep the console (GetConsoleOutput) and the agent's uploaded log before the
        terminate: EC2 keeps console output only for a while after an instance ends."""
        try:
            console, _, _ = self.provider.console_output(action.instance_id)
        except ProviderError as e:
            console = f"(console output could not be read: {e})"
        try:
            agent = self.provider.agent_log(action.annex, action.instance_id) or b""
        except (ProviderError, AnnexError) as e:
            agent = f"(agent log could not be read: {e})".encode()
        agent_text = agent[-AGENT_LOG_KEEP:].decode("utf-8", "replace")
        self.store.save_log(action.instance_id, action.annex, console, agent_text)
        verdict = collector_unreachable(agent_text) or collector_unreachable(console)
        if verdict:
            self.diagnoses[action.instance_id] = (
                f"never joined: {verdict}; see condor_annex logs {action.annex} "
                f"{action.instance_id}")
        return True

    def _terminate(self, action: Terminate) -> bool:
        """TerminateInstances, then TERMINATING per instance (TERMINATION_FAILED on error)."""
        try:
            self.provider.terminate(list(action.instance_ids))
        except ProviderError as e:
            for iid in action.instance_ids:
                self._move(iid, Lifecycle.TERMINATING, action.reason)
                self._move(iid, Lifecycle.TERMINATION_FAILED, f"TerminateInstances: {e}")
            raise
        reasons = {iid: self._why_ended(iid, action.reason) for iid in action.instance_ids}
        for iid in action.instance_ids:
            self._move(iid, Lifecycle.TERMINATING, reasons[iid])
        self._say(f"annex {action.annex}: terminated {', '.join(action.instance_ids)}: "
                  + "; ".join(sorted(set(reasons.values()))))
        return True

    def _why_ended(self, iid: str, default: str) -> str:
        """The reason recorded when an instance is terminated: the agent's verdict when its
        logs had one, else why it was found never joined (that reason names the deadline and
        the logs command, which ``status`` shows), else ``default``."""
        if iid in self.diagnoses:
            return self.diagnoses[iid]
        record = self.store.instance(iid)
        if record is not None and record.state == Lifecycle.NEVER_JOINED.value:
            history = self.store.transitions(iid)
            if history:
                return history[-1].reason
        return default

    def _end_annex(self, action: EndAnnex) -> bool:
        """End every resource of the annex (:mod:`condor_annex.reconciler.ending`), mark its
        instances TERMINATING and the annex ended."""
        if action.if_lease_gone and self.provider.get_lease(action.annex) is not None:
            return False   # a listing lagged; GetSchedule by name says it lives
        ended = ending.end_annex_resources(self.provider, action.annex, self.bucket)
        for rec in self.store.instances(action.annex):
            if Lifecycle(rec.state) not in TERMINAL:
                self._move(rec.instance_id, Lifecycle.TERMINATING, action.reason)
        for req in self.store.launch_requests(action.annex):
            if req.state in ("recorded", "resuming"):
                self.store.set_launch_state(req.client_token, "rolled-back")
        # Why it ended, for status (budget_actions.ENDED_REASON_KEY).
        self.store.update_spec(action.annex, {budget_actions.ENDED_REASON_KEY: action.reason})
        self.store.end_annex(action.annex)
        self._say(f"annex {action.annex}: ended: {action.reason}"
                  + (f"; {len(ended.terminated)} instance(s) terminated" if ended.terminated
                     else ""))
        return True

    def _move(self, iid: str, to: Lifecycle, reason: str) -> None:
        """Record a transition the execute step caused, when the table allows it from the
        instance's current state (an instance the store does not know is left alone)."""
        try:
            lifecycle.transition(self.store, iid, to, reason)
        except TransitionError:
            pass   # unknown to the store, or already past this state

    def _say(self, line: str) -> None:
        if self.notify:
            self.notify(line)
        else:
            log.info("reconciler: %s", line)


def _subject(action: Action) -> str:
    """What an action is about, for its error line."""
    for attr in ("instance_id", "client_token", "annex"):
        value = getattr(action, attr, "")
        if value:
            return str(value)
    ids = getattr(action, "instance_ids", ())
    return ", ".join(ids)
