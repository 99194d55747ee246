"""``python -m benchmarks`` (``make bench``): issue 4's benchmarks, one table, one JSON file.

Sections, in order (each in an isolated user config; nothing touches ``~/.condor``):

1. plain moto server: API calls per create/status (row 2), CLI start-up (row 4), peak memory
   (row 6);
2. the local cloud, under the machine-wide lock: join time against the floor (row 1) and lease
   overrun (row 5);
3. HTCondor's own ``condor_annex`` side by side with ours against one moto endpoint (row 3).

``--smoke`` runs only section 1 with N=1 and few repetitions (no local cloud, no root needed);
the unit test ``tests/unit/test_bench_smoke.py`` runs it.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import env
from benchmarks.report import RESULTS_DIR, Row, table, write_json

#: Repetitions of a full run, chosen so the whole run fits in 15 minutes on 2 cores.
FULL = {
    "join_counts": (1, 20, 100),
    "join_runs": 5,
    # One N=100 run (ours + floor + tear-down) takes about 4.5 min on 2 cores: 5 do not fit.
    "join_runs_n100": 1,
    "lease_runs": 5,         # annexes ending at once: one pass of about 60 s
    # Issue 9's kill-switch rows, 5 annexes at once each: about 2 + 7 + 3 minutes.
    "kill_switch_runs": 5,
    # Issue 10: stock (cloud-init) vs prepared image at N=1 and 5, the agent's CPU, and
    # N=20 against a floor that pays boto3 too; 3 runs each, about 6 minutes.
    "stock_counts": (1, 5),
    "stock_runs": 3,
    # Issue 12: one spot annex of 2 nodes per run, one node interrupted with a 120 s notice;
    # about 4 minutes a run.
    "interruption_runs": 2,
    # Issue 12: a budget worth 3 minutes of 2 instances, ended by annexd alone (about 3 min)
    # and by the lease sweep alone (about 1 min).
    "budget_runs": 1,
    # Issue 13: an autoscaled annex from zero, idle jobs -> first slot claimed, against the
    # N=1 join floor; about 4 minutes a run.
    "autoscale_runs": 1,
    # Issue 13: a seed made ready, grown by one annex from its own shell, ended; about 2 min.
    "seed_runs": 1,
    "boto3_join_counts": (20,),
    "api_counts": (1, 100, 1000),
    "startup_runs": 10,
    "memory_n": 1000,
    "original_create_n": 100,
    "original_status_n": 1000,
    "original_runs": 5,
}
SMOKE = {**FULL, "api_counts": (1,), "startup_runs": 3}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true",
                   help="fast subset: moto rows with N=1, 3 start-up runs; no local cloud")
    p.add_argument("--only", default="", help="comma-separated sections: moto,local,original")
    p.add_argument("--join-runs", type=int, help="runs per N of row 1 (default 5; N=100: 3)")
    p.add_argument("--join-counts", help="N values of row 1, comma-separated (default 1,20,100)")
    p.add_argument("--lease-runs", type=int, metavar="RUNS", help="annexes of row 5, ending at once (default 5)")
    p.add_argument("--interruption-runs", type=int, metavar="RUNS",
                   help="spot interruptions measured (default 2; 0: skip)")
    p.add_argument("--budget-runs", type=int, metavar="RUNS",
                   help="budgeted annexes ended by annexd and by the lease sweep, each "
                        "(0 skips the budget rows)")
    p.add_argument("--autoscale-runs", type=int, metavar="RUNS",
                   help="autoscaled annexes grown from zero (default 1; 0: skip)")
    p.add_argument("--seed-runs", type=int, metavar="RUNS",
                   help="seeds made ready and grown by one annex (default 1; 0: skip)")
    p.add_argument("--kill-switch-runs", type=int, metavar="RUNS",
                   help="annexes per kill-switch row, ending at once (default 5; 0: skip)")
    p.add_argument("--skip-join", action="store_true", help="local section without row 1")
    p.add_argument("--stock-runs", type=int, metavar="RUNS",
                   help="runs of the stock/prepared image and boto3-floor rows (default 3; "
                        "0: skip)")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                   help="where to write <timestamp>.json and latest.json")
    return p


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def plan_from_args(args: argparse.Namespace) -> dict:
    plan = dict(SMOKE if args.smoke else FULL)
    if args.join_counts:
        plan["join_counts"] = tuple(int(x) for x in args.join_counts.split(","))
    if args.join_runs:
        plan["join_runs"] = plan["join_runs_n100"] = args.join_runs
    if args.lease_runs is not None:
        plan["lease_runs"] = args.lease_runs
    if args.kill_switch_runs is not None:
        plan["kill_switch_runs"] = args.kill_switch_runs
    if args.stock_runs is not None:
        plan["stock_runs"] = args.stock_runs
    if args.interruption_runs is not None:
        plan["interruption_runs"] = args.interruption_runs
    if args.autoscale_runs is not None:
        plan["autoscale_runs"] = args.autoscale_runs
    if args.seed_runs is not None:
        plan["seed_runs"] = args.seed_runs
    if args.budget_runs is not None:
        plan["budget_runs"] = args.budget_runs
    if args.skip_join:
        plan["join_counts"] = ()
    sections = {"moto", "local", "original", "reconciler", "annexd"}
    if args.only:
        sections = set(args.only.split(","))
    if args.smoke:
        sections = {"moto"}
    plan["sections"] = sorted(sections)
    plan["memory"] = not args.smoke
    return plan


def _section(name: str, rows: list[Row], fn: Callable[[], list[Row]],
             failed_keys: list[tuple[str, str]]) -> None:
    """Run one section; on failure, add error rows so the table says what broke."""
    t0 = time.monotonic()
    _log(f"== {name}")
    try:
        rows.extend(fn())
    except Exception as e:  # noqa: BLE001 - a broken section must not hide the others
        traceback.print_exc()
        for key, what in failed_keys:
            if not any(r.key == key for r in rows):
                rows.append(Row(key=key, what=what, unit="s",
                                error=f"{name} failed: {type(e).__name__}: {e}"))
    _log(f"== {name} done in {time.monotonic() - t0:.0f} s")


def run_moto(plan: dict) -> list[Row]:
    from benchmarks import moto_rows

    rows: list[Row] = []
    with env.isolated_home() as home, env.moto_server(home) as endpoint:
        rows += moto_rows.api_call_rows(endpoint, home, plan["api_counts"], _log)
        moto_rows.fresh_account(endpoint, home)   # set up, no annexes
        rows += moto_rows.startup_rows(plan["startup_runs"], _log)
        if plan["memory"]:
            rows += moto_rows.memory_rows(endpoint, home, plan["memory_n"], _log)
    return rows


def run_local(plan: dict) -> list[Row]:
    from benchmarks import local_rows

    rows: list[Row] = []
    with env.isolated_home() as _home, local_rows.local_cloud(_log) as ctx:
        runs = {n: (plan["join_runs_n100"] if n >= 100 else plan["join_runs"])
                for n in plan["join_counts"]}
        rows += local_rows.join_rows(ctx, runs, _log, asked_runs=plan["join_runs"])
        if plan["lease_runs"]:
            rows += local_rows.lease_rows(ctx, plan["lease_runs"], _log)
        if plan["kill_switch_runs"]:
            rows += local_rows.kill_switch_rows(ctx, plan["kill_switch_runs"], _log)
        if plan["stock_runs"]:
            from benchmarks import stock_rows
            rows += stock_rows.stock_rows(ctx, plan["stock_counts"], plan["stock_runs"], _log,
                                          join_counts=plan["boto3_join_counts"])
        if plan.get("interruption_runs"):   # issue 12: spot interruption drain
            from benchmarks import interruption_rows
            rows += interruption_rows.interruption_rows(ctx, plan["interruption_runs"], _log)
        if plan.get("budget_runs"):   # issue 12: budget overrun, annexd and the sweep alone
            from benchmarks import budget_rows
            rows += budget_rows.budget_rows(ctx, plan["budget_runs"], _log)
        if plan.get("autoscale_runs"):   # issue 13: demand-driven growth from zero
            from benchmarks import autoscale_rows
            rows += autoscale_rows.autoscale_rows(ctx, plan["autoscale_runs"], _log)
        if plan.get("seed_runs"):   # issue 13: a pool from one seed
            from benchmarks import seed_rows
            rows += seed_rows.seed_rows(ctx, plan["seed_runs"], _log)
    return rows


def run_original(plan: dict) -> list[Row]:
    from benchmarks import original

    return original.rows(plan, _log)


def _references_from_original(rows: list[Row]) -> None:
    """Row 2's reference column: the original tool's request counts from row 3 (create -count
    100; -status over 1000 instances), when row 3 measured them."""
    by_key = {r.key: r for r in rows}
    for calls_key, orig_key in (("calls.create.n100", "original.create"),
                                ("calls.status.n1000", "original.status")):
        calls, orig = by_key.get(calls_key), by_key.get(orig_key)
        if calls and orig and "requests_original" in orig.extra:
            calls.reference = float(orig.extra["requests_original"])
            calls.extra["reference_is"] = "HTCondor's condor_annex 23.9.6, counted at the proxy"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = plan_from_args(args)
    started = time.monotonic()
    _log("plan: " + ", ".join(f"{k}={v}" for k, v in plan.items()))
    rows: list[Row] = []
    if "moto" in plan["sections"]:
        keys = [(f"calls.create.n{n}", f"API calls per create, N={n}")
                for n in plan["api_counts"]]
        keys += [("startup.help", "CLI start-up: condor_annex --help"),
                 ("startup.status", "CLI start-up: condor_annex status")]
        _section("moto: API calls, start-up, memory", rows, lambda: run_moto(plan), keys)
    if "local" in plan["sections"]:
        keys = [(f"join.n{n}", f"join time create → {n} startd(s) in collector")
                for n in plan["join_counts"]]
        if plan["lease_runs"]:
            keys.append(("lease.overrun", "lease end → last instance terminated"))
        if plan["kill_switch_runs"]:
            from benchmarks.local_rows import KILL_SWITCH_CASES
            keys += [(c.key, c.what) for c in KILL_SWITCH_CASES]
        _section("local cloud: join time, lease overrun", rows, lambda: run_local(plan), keys)
    if "original" in plan["sections"]:
        keys = [("original.create", "side by side: create -count 100 -yes"),
                ("original.status", "side by side: -status over 1000 instances")]
        _section("HTCondor's condor_annex side by side", rows, lambda: run_original(plan), keys)
    if "reconciler" in plan["sections"]:   # issue 11: no cloud at all
        from benchmarks import reconciler_rows
        _section("reconciler: plan pass, peak RSS", rows, lambda: reconciler_rows.rows(5, _log),
                 [("reconciler.plan.n10000", "plan pass: 10,000 instances in 200 annexes")])
    if "annexd" in plan["sections"]:   # issue 11 on plain moto servers (no local cloud)
        from benchmarks import annexd_rows
        _section("annexd: DescribeInstances per pass, status from the store", rows,
                 lambda: annexd_rows.rows(_log),
                 [("annexd.describe.n2400", "DescribeInstances per pass: 2,400 instances"),
                  ("annexd.status.n1000", "status over 1,000 instances from the store")])
        annexd_rows.add_original(rows)
    _references_from_original(rows)
    elapsed = time.monotonic() - started
    title = (f"condor-annex benchmarks ({'smoke' if args.smoke else 'full'}, {elapsed:.0f} s; "
             f"repetitions: start-up {plan['startup_runs']}")
    if "local" in plan["sections"]:
        title += (f", join {plan['join_runs']} per N ({plan['join_runs_n100']} for N≥100), "
                  f"lease {plan['lease_runs']}")
    if "original" in plan["sections"]:
        title += f", side by side {plan['original_runs']}"
    title += ")"
    from rich.console import Console
    Console(width=160).print(table(rows, title))
    path = write_json(rows, {"mode": "smoke" if args.smoke else "full", "elapsed_s": elapsed,
                             "plan": plan, "argv": sys.argv[1:] if argv is None else argv},
                      args.results_dir)
    _log(f"results: {path}")
    return 0 if all(r.samples for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
