"""The lease sweep's budget backstop counts the annex's ended instances too (issue 12 item 5):
those EC2 still lists (about an hour after they end) from their launch to their end (the
time in ``StateTransitionReason``), and those it no longer lists at what annexd kept of them
(``spent=`` in tag ``htcondor:Budget``); the larger of the two, never their sum.  Against the
moto server."""

from __future__ import annotations

import calendar
import time

import pytest

import condor_annex.lease.handler as lease_handler
from condor_annex.model import AnnexSpec
from condor_annex.service.budget_check import BUDGET_TAG, budget_tag
from tests.aws.test_budget_backstop import PRICE, _annex, _live, _sweep, provider_ec2
from tests.aws.test_lease_handler import clients  # noqa: F401 - the fixture

__all__ = ["clients"]


def _end(provider, iid):
    provider_ec2(provider).terminate_instances(InstanceIds=[iid])


def _retag(provider, ids, value):
    provider_ec2(provider).create_tags(Resources=list(ids),
                                       Tags=[{"Key": BUDGET_TAG, "Value": value}])


def test_an_ended_instance_counts_until_it_ended_not_until_now(provider, launch_request,
                                                                 clients):
    # Two at one cent a minute, $0.20; one ended at once (a minute billed).  The other one +
    # the sweep's 6 minutes ahead + that cent reach $0.20 at 13 minutes; without the ended one
    # it would take 14, counted until now it would take 7.
    ids, launched = _annex(provider, launch_request, "half", 0.20)
    _end(provider, ids[0])
    assert _sweep(provider, clients, launched + 12.5 * 60)["Ended"] == []
    assert _sweep(provider, clients, launched + 13.5 * 60)["Ended"] == ["half"]
    assert _live(provider, "half") == set()


def test_what_annexd_kept_of_instances_ec2_no_longer_lists_counts(provider, launch_request,
                                                                  clients):
    # One live instance; annexd kept $0.15 for ended ones EC2 no longer lists: $0.15 + 6
    # minutes ahead ($0.06) reach $0.20 at once; without it not before 14 minutes.
    ids, launched = _annex(provider, launch_request, "kept", 0.20, count=1)
    _retag(provider, ids, f"0.2 m4.large={PRICE} spent=0.15")
    assert _sweep(provider, clients, launched)["Ended"] == ["kept"]


def test_a_listed_ended_instance_and_annexds_record_of_it_count_once(provider, launch_request,
                                                                     clients):
    ids, launched = _annex(provider, launch_request, "once", 0.20)
    _end(provider, ids[0])
    _retag(provider, ids[1:], f"0.2 m4.large={PRICE} spent=0.01")   # that one's minute
    assert _sweep(provider, clients, launched + 12.5 * 60)["Ended"] == []
    assert _sweep(provider, clients, launched + 13.5 * 60)["Ended"] == ["once"]


def test_a_raised_budget_on_some_instances_is_the_one_that_counts(provider, launch_request,
                                                                  clients):
    # extend --budget retags the live instances; a maintain fleet's later ones keep the old.
    ids, launched = _annex(provider, launch_request, "raised", 0.05)
    _retag(provider, ids[:1], budget_tag(AnnexSpec(name="raised", count=2, budget_usd=5.0,
                                                   budget_prices=(("m4.large", PRICE),))))
    assert _sweep(provider, clients, launched + 60)["Ended"] == []


def test_an_annex_whose_instances_all_ended_is_not_ended_again(provider, launch_request,
                                                               clients):
    # Terminated instances are listed now (for their spend): their passed lease tags must not
    # make the sweep end their annex again and again.
    ids, launched = _annex(provider, launch_request, "done", 0.01)
    assert _sweep(provider, clients, launched)["Ended"] == ["done"]
    assert _sweep(provider, clients, launched + 3600)["Ended"] == []


@pytest.mark.parametrize("reason, expected", [
    ("User initiated (2026-03-01 12:00:00 GMT)", "2026-03-01 12:00:00"),
    ("User initiated (2024-02-29 23:59:59 UTC)", "2024-02-29 23:59:59"),
    ("Service initiated (2000-01-01 00:00:00 GMT)", "2000-01-01 00:00:00"),
])
def test_the_end_time_is_read_from_the_state_transition_reason(reason, expected):
    epoch = calendar.timegm(time.strptime(expected, "%Y-%m-%d %H:%M:%S"))
    assert lease_handler.ended_at({"StateTransitionReason": reason}, 4e9) == epoch


@pytest.mark.parametrize("instance", [{}, {"StateTransitionReason": ""},
                                      {"StateTransitionReason": "User initiated"},
                                      {"StateTransitionReason": "x (not a date)"}])
def test_an_unreadable_end_time_counts_until_now(instance):
    assert lease_handler.ended_at(instance, 1234.0) == 1234.0


def test_an_end_after_now_counts_until_now():
    assert lease_handler.ended_at(
        {"StateTransitionReason": "User initiated (2030-01-01 00:00:00 GMT)"}, 1234.0) == 1234.0
