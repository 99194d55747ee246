"""The instance lifecycle state machine: every edge of the table is allowed and recorded with its
reason, anything else is refused, and EC2's state names map in one place."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

import pytest

from condor_annex.state import lifecycle
from condor_annex.state.lifecycle import (TERMINAL, TRANSITIONS, Lifecycle, TransitionError,
                                          from_ec2_state, transition)
from condor_annex.state.store import Store

EDGES = [(a, b) for a, nexts in TRANSITIONS.items() for b in sorted(nexts, key=lambda s: s.value)]
NON_EDGES = [(a, b) for a, b in itertools.product(Lifecycle, Lifecycle)
             if b not in TRANSITIONS[a]]
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path):
    with Store(tmp_path / "state.sqlite3") as s:
        yield s


def test_table_covers_every_state_and_terminal_states_lead_nowhere():
    assert set(TRANSITIONS) == set(Lifecycle)
    assert TERMINAL == {Lifecycle.TERMINATED, Lifecycle.ALLOCATION_FAILED}
    # Every non-terminal state can reach an end: no instance is stuck in the machine forever.
    for state in Lifecycle:
        seen, todo = set(), [state]
        while todo:
            s = todo.pop()
            seen.add(s)
            todo += [n for n in TRANSITIONS[s] if n not in seen]
        assert seen & TERMINAL, state


@pytest.mark.parametrize("from_state,to_state", EDGES, ids=lambda s: s.value)
def test_every_edge_in_the_table_is_recorded_with_its_reason(store, from_state, to_state):
    store.add_instances("a1", ["i-1"], state=from_state.value, reason="test start", now=T0)
    left = transition(store, "i-1", to_state, "because", at=T0)
    assert left is from_state
    assert store.instance("i-1").state == to_state.value
    last = store.transitions("i-1")[-1]
    assert (last.from_state, last.to_state, last.reason, last.at) == \
        (from_state.value, to_state.value, "because", T0)


@pytest.mark.parametrize("from_state,to_state", NON_EDGES, ids=lambda s: s.value)
def test_an_edge_not_in_the_table_is_refused_and_nothing_recorded(store, from_state, to_state):
    store.add_instances("a1", ["i-1"], state=from_state.value, reason="test start", now=T0)
    with pytest.raises(TransitionError) as e:
        transition(store, "i-1", to_state, "because")
    assert f"{from_state.value} -> {to_state.value} is not a lifecycle transition" in str(e.value)
    assert store.instance("i-1").state == from_state.value
    assert len(store.transitions("i-1")) == 1


def test_the_refusal_names_what_is_allowed():
    with pytest.raises(TransitionError, match=r"\(from requested: allocated, "
                                              r"allocation-failed, terminated, terminating\)"):
        lifecycle.check("i-1", Lifecycle.REQUESTED, Lifecycle.JOINED)
    with pytest.raises(TransitionError, match=r"nothing \(terminal\)"):
        lifecycle.check("i-1", Lifecycle.TERMINATED, Lifecycle.ALLOCATED)


def test_an_unknown_instance_is_refused(store):
    with pytest.raises(TransitionError, match="i-404: not in the state store"):
        transition(store, "i-404", Lifecycle.ALLOCATED, "seen")


@pytest.mark.parametrize("ec2,expected", [
    ("pending", Lifecycle.ALLOCATED), ("running", Lifecycle.ALLOCATED),
    ("shutting-down", Lifecycle.TERMINATING), ("stopping", Lifecycle.TERMINATING),
    ("stopped", Lifecycle.TERMINATING), ("terminated", Lifecycle.TERMINATED)])
def test_ec2_states_map_to_lifecycle_states(ec2, expected):
    assert from_ec2_state(ec2) is expected


def test_an_unknown_ec2_state_is_refused():
    with pytest.raises(ValueError, match="unknown EC2 instance state 'rebooting'"):
        from_ec2_state("rebooting")
