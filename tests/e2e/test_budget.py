"""An enforced dollar budget on the local cloud (issue 12): an annex given a budget worth about
3 minutes of its instances ends by its budget, long before its lease or idle time, and what it
spent stays within the budget plus one minute of its rate — ended by condor_annexd, and, with no
daemon at all, by the lease sweep in AWS alone (the cloud-side backstop).

Spend is bounded from above as EC2 would bill it: each instance from its LaunchTime until this
test saw it gone (polled every second), at least 60 s, at the price the local cloud's price
list gives (m4.large, 0.10 USD per hour).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.providers.aws.session import make_client
from tests.e2e.helpers import alive, cli, wait

pytestmark = pytest.mark.e2e

PRICE = 0.10          # USD per hour, m4.large in the local cloud's price list
COUNT = 2
BUDGET = round(COUNT * PRICE * 3 / 60, 4)   # about 3 minutes of the annex
MINUTE = COUNT * PRICE / 60                 # one minute of its rate


def _run_until_ended(ec2, name: str, timeout_s: float) -> tuple[float, float]:
    """Create the budgeted annex and wait until none of its instances is alive.

    Returns:
        (seconds from create to the end, upper bound of what it spent in USD).
    """
    t0 = time.monotonic()
    cli("create", name, "--count", str(COUNT), "--budget", f"{BUDGET}", "--duration", "30m",
        "--idle", "20m", "--no-owner")
    launched = {}
    for r in ec2.describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName",
                                              "Values": [name]}])["Reservations"]:
        for i in r["Instances"]:
            launched[i["InstanceId"]] = i["LaunchTime"].timestamp()
    assert len(launched) == COUNT
    ended: dict[str, float] = {}

    def all_gone() -> bool:
        now = time.time()
        for iid in set(launched) - set(alive(ec2, name)):
            ended.setdefault(iid, now)
        return len(ended) == COUNT

    wait(f"annex {name} to end by its budget", all_gone, timeout_s, 1)
    spent = sum(max(60.0, ended[i] - launched[i]) for i in launched) * PRICE / 3600
    return time.monotonic() - t0, spent


def test_annexd_ends_an_annex_by_its_budget_within_one_minute_of_its_rate(local_cloud):
    """annexd alone: the lease function fails every invocation meanwhile, so the cloud-side
    sweep (which, with its 5-minute period, would end a 3-minute budget at its first run)
    cannot be what ended it."""
    ec2 = make_client(local_cloud.aws, "ec2")
    cli("setup")
    config.write_block("budget-e2e", {"ANNEXD_INTERVAL": "2"})
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("condor_annexd"))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert main(["local", "inject", "lambda-error", "10000"]) == 0
        took_s, spent = _run_until_ended(ec2, "budgeted", 6 * 60)
    finally:
        main(["local", "inject", "none"])
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        config.write_block("budget-e2e", {})
        cli("off", "budgeted", "--grace", "0", check=False)
    assert took_s < 20 * 60          # not its idle time (20 min) nor its lease (30 min)
    # It ran until about one minute of its rate was left, not ended at once.
    assert took_s >= 60, took_s
    assert spent <= BUDGET + MINUTE, (spent, BUDGET, MINUTE)
    (row,) = [a for a in json.loads(cli("list", "--all", "--json").stdout)
              if a["name"] == "budgeted"]
    assert row["ended_at"] and row["launch_stopped"].startswith("budget: "), row
    print(f"\n[budget] annexd: ended {took_s:.0f} s after create; spent <= ${spent:.4f} of a "
          f"${BUDGET} budget (bound ${BUDGET + MINUTE:.4f})")


def test_the_lease_sweep_alone_ends_an_annex_by_its_budget(local_cloud):
    """No annexd, no command between create and the end: only the cloud-side sweep."""
    ec2 = make_client(local_cloud.aws, "ec2")
    cli("setup")
    try:
        took_s, spent = _run_until_ended(ec2, "backstop", 6 * 60)
    finally:
        cli("off", "backstop", "--grace", "0", check=False)
    assert took_s < 20 * 60
    assert spent <= BUDGET + MINUTE, (spent, BUDGET, MINUTE)
    print(f"\n[budget] lease sweep alone: ended {took_s:.0f} s after create; spent <= "
          f"${spent:.4f} of a ${BUDGET} budget (bound ${BUDGET + MINUTE:.4f})")
