"""An enforced dollar budget on the local cloud (issue 12): an annex given a budget worth about
3 minutes of its instances ends by its budget, long before its lease or idle time, and what it
spent stays within the budget plus one minute of its rate — ended by condor_annexd, and, with no
daemon at all, by the lease sweep in AWS alone (the cloud-side backstop).

Spend is bounded from above as EC2 would bill it (:func:`benchmarks.budget_rows.run_budgeted`):
each instance from its LaunchTime until it was seen gone, at least 60 s, at the price the local
cloud's price list gives.
"""

from __future__ import annotations

import json

import pytest

from benchmarks.budget_rows import BUDGET, MINUTE, annexd_alone, run_budgeted
from condor_annex.cli.main import main
from condor_annex.providers.aws.session import make_client
from tests.e2e.helpers import cli

pytestmark = pytest.mark.e2e


def _cli(args: list[str]) -> None:
    cli(*args)


def _inject(args: list[str]) -> None:
    assert main(args) == 0


def test_annexd_ends_an_annex_by_its_budget_within_one_minute_of_its_rate(local_cloud):
    """annexd alone: the lease function fails every invocation meanwhile, so the cloud-side
    sweep (which, with its 5-minute period, would end a 3-minute budget at its first run)
    cannot be what ended it."""
    ec2 = make_client(local_cloud.aws, "ec2")
    cli("setup")
    try:
        done = annexd_alone(ec2, "budgeted", _cli, _inject)
    finally:
        cli("off", "budgeted", "--grace", "0", check=False)
    assert done.took_s < 20 * 60          # not its idle time (20 min) nor its lease (30 min)
    # It ran until about one minute of its rate was left, not ended at once.
    assert done.took_s >= 60, done
    assert done.spent <= BUDGET + MINUTE, (done, BUDGET, MINUTE)
    (row,) = [a for a in json.loads(cli("list", "--all", "--json").stdout)
              if a["name"] == "budgeted"]
    assert row["ended_at"] and row["launch_stopped"].startswith("budget: "), row
    print(f"\n[budget] annexd: ended {done.took_s:.0f} s after create; spent <= "
          f"${done.spent:.4f} of a ${BUDGET} budget (bound ${BUDGET + MINUTE:.4f})")


def test_the_lease_sweep_alone_ends_an_annex_by_its_budget(local_cloud):
    """No annexd, no command between create and the end: only the cloud-side sweep."""
    ec2 = make_client(local_cloud.aws, "ec2")
    cli("setup")
    try:
        done = run_budgeted(ec2, "backstop", _cli)
    finally:
        cli("off", "backstop", "--grace", "0", check=False)
    assert done.took_s < 20 * 60
    assert done.spent <= BUDGET + MINUTE, (done, BUDGET, MINUTE)
    print(f"\n[budget] lease sweep alone: ended {done.took_s:.0f} s after create; spent <= "
          f"${done.spent:.4f} of a ${BUDGET} budget (bound ${BUDGET + MINUTE:.4f})")
