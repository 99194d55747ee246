"""Issue 12's budget rows, on the local cloud: an annex of two m4.large instances with a budget
worth about three minutes of them must end by its budget, having spent at most the budget plus
one minute of its rate.

* ``budget.overrun.annexd``: condor_annexd alone (the lease function fails every invocation
  meanwhile, ``local inject lambda-error``), so annexd's rule is what ends the annex;
* ``budget.overrun.sweep``: no annexd, no command: the lease sweep in AWS alone (the
  cloud-side backstop).

Spend is bounded from above as EC2 bills it: each instance from its ``LaunchTime`` until it
was seen gone (DescribeInstances polled every second), 60 s at least, at the local cloud's
price list (m4.large 0.10 USD per hour).  The row's value is the overrun, spend - budget, in
USD (negative: under the budget); the target is one minute of the annex's rate.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.report import Row

#: USD per hour of m4.large in the local cloud's price list.
PRICE = 0.10
#: Instances of the annex.
COUNT = 2
#: About three minutes of the annex, USD.
BUDGET = round(COUNT * PRICE * 3 / 60, 4)
#: One minute of the annex's rate, USD (the bound on the overrun).
MINUTE = COUNT * PRICE / 60


@dataclass(frozen=True)
class BudgetRun:
    """One budgeted annex from create to its end: ``took_s`` seconds, at most ``spent`` USD."""

    took_s: float
    spent: float


def run_budgeted(ec2, name: str, create: Callable[[list[str]], None], *,
                 timeout_s: float = 360) -> BudgetRun:
    """Create annex ``name`` (``create`` runs ``condor_annex ARGS`` and raises on failure) with
    :data:`COUNT` instances and a budget of :data:`BUDGET` USD, a 30-minute lease and a
    20-minute idle time, and wait until none of its instances is pending or running.

    Raises:
        TimeoutError: the annex still runs after ``timeout_s`` seconds.
    """
    t0 = time.monotonic()
    create(["create", name, "--count", str(COUNT), "--budget", f"{BUDGET}", "--duration",
            "30m", "--idle", "20m", "--no-owner"])
    launched = {i["InstanceId"]: i["LaunchTime"].timestamp() for i in _instances(ec2, name)}
    if len(launched) != COUNT:
        raise RuntimeError(f"{name}: {len(launched)} instances launched, not {COUNT}")
    ended: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while len(ended) < COUNT:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name}: still running {timeout_s:.0f} s after create")
        now = time.time()
        live = {i["InstanceId"] for i in _instances(ec2, name)
                if i["State"]["Name"] in ("pending", "running")}
        for iid in set(launched) - live:
            ended.setdefault(iid, now)
        time.sleep(1)
    spent = sum(max(60.0, ended[i] - launched[i]) for i in launched) * PRICE / 3600
    return BudgetRun(time.monotonic() - t0, spent)


def _instances(ec2, name: str) -> list[dict]:
    r = ec2.describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName", "Values": [name]}])
    return [i for res in r["Reservations"] for i in res["Instances"]]


def annexd_alone(ec2, name: str, create: Callable[[list[str]], None],
                 inject: Callable[[list[str]], None]) -> BudgetRun:
    """:func:`run_budgeted` with condor_annexd running (a pass every 2 s) and the lease
    function failing every invocation (``local inject lambda-error 10000``), both undone
    after."""
    from condor_annex import config

    config.write_block("budget-bench", {"ANNEXD_INTERVAL": "2"})
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("condor_annexd"))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        inject(["local", "inject", "lambda-error", "10000"])
        return run_budgeted(ec2, name, create)
    finally:
        inject(["local", "inject", "none"])
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        config.write_block("budget-bench", {})


def budget_rows(ctx, runs: int, log: Callable[[str], None]) -> list[Row]:
    """``runs`` budgeted annexes ended by annexd and ``runs`` by the sweep alone."""
    from condor_annex.cli.main import main
    from condor_annex.providers.aws.session import make_client

    def run(args: list[str]) -> None:
        if main(args) != 0:
            raise RuntimeError(f"condor_annex {' '.join(args)} failed")

    ec2 = make_client(ctx.aws, "ec2")
    target = f"<= {MINUTE:.4f} USD (one minute of the annex's rate)"
    rows = {"annexd": Row("budget.overrun.annexd", f"budget overrun, condor_annexd alone "
                          f"(budget ${BUDGET}, {COUNT} x m4.large)", "USD", target=target),
            "sweep": Row("budget.overrun.sweep", f"budget overrun, the lease sweep alone "
                         f"(budget ${BUDGET}, {COUNT} x m4.large)", "USD", target=target)}
    for n in range(runs):
        for how, row in rows.items():
            name = f"bench-budget-{how}{n}"
            try:
                done = (annexd_alone(ec2, name, run, run) if how == "annexd"
                        else run_budgeted(ec2, name, run))
                row.samples.append(done.spent - BUDGET)
                row.extra.setdefault("ended_after_s", []).append(round(done.took_s, 1))
                log(f"budget {how} run {n}: ended {done.took_s:.0f} s after create, spent "
                    f"<= ${done.spent:.4f} of ${BUDGET}")
            except Exception as e:   # noqa: BLE001 - a row with its error, not a crash
                row.error = str(e)
            finally:
                main(["off", name, "--grace", "0"])
    for row in rows.values():
        if row.samples:
            row.target_ok = max(row.samples) <= MINUTE
    return list(rows.values())
