"""Why an annex is ending or ended, as ``status`` shows it (issue 12 item 5), from its record."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from condor_annex.reconciler.end_reason import (SHOWN_AFTER_END_S, end_reason, shown_ended,
                                                status_fields)
from condor_annex.state.records import AnnexRecord

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def rec(name="a", *, ended_s_ago=None, spec=None) -> AnnexRecord:
    ended = None if ended_s_ago is None else NOW - timedelta(seconds=ended_s_ago)
    return AnnexRecord(name, spec or {}, 1, None, NOW - timedelta(hours=1), ended)


def test_a_draining_annex_says_its_budget_drains_it():
    r = rec(spec={"budget_usd": 1.0, "budget_drain": {"at": NOW.isoformat(),
                                                      "reason": "budget: $0.99 spent"}})
    assert end_reason(r) == "budget: $0.99 spent"
    assert status_fields(r) == {"end_reason": "budget: $0.99 spent", "budget_usd": 1.0}


def test_an_ended_annex_says_why_and_a_live_one_says_nothing():
    assert end_reason(rec(ended_s_ago=5, spec={"ended_reason": "budget: x; ended"})) == \
        "budget: x; ended"
    assert end_reason(rec()) == "" and end_reason(None) == ""
    assert status_fields(rec()) == {"end_reason": "", "budget_usd": None}


def test_annexes_the_reconciler_ended_within_the_hour_stay_shown():
    recent = rec("recent", ended_s_ago=60, spec={"ended_reason": "budget: y"})
    old = rec("old", ended_s_ago=SHOWN_AFTER_END_S, spec={"ended_reason": "budget: y"})
    by_off = rec("off", ended_s_ago=60)        # off records no reason: gone at once, as before
    live = rec("live")
    assert [r.name for r in shown_ended([recent, old, by_off, live], NOW)] == ["recent"]
