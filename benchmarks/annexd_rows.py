"""Issue 11's annexd rows, each on its own plain moto server (no local cloud, no root needed).

1. ``annexd.describe.n2400``: DescribeInstances calls (pages) in one reconciler pass over 2,400
   instances in 200 annexes (target ⌈N/1000⌉ = 3: one paginated call for every annex, the
   provider's ``MaxResults`` of 1000).  moto counts ``MaxResults`` in *reservations*, AWS in
   items (instances), so here every instance is launched by a RunInstances of its own (one
   reservation each): pages are then the same counted either way.  2,400 rather than a multiple
   of 1000: a page that ends exactly at the last item may come back with a NextToken, and
   the empty page after it would be an artefact of the page size, not of the pass.
2. ``annexd.status.n1000``: ``condor_annex status`` over 1,000 instances answered from the
   store (a daemon holds the state file's lock; the store holds its pass's observations), side
   by side with the classic ``condor_annex -status`` over the same instances without a daemon,
   which asks the cloud (target ≤ 0.3×).  Both are the console script in a child process, the
   way a user runs it (wall time, median of a few runs after one warm-up).  The layout is the
   side-by-side row's (``original.status``: one annex of 1,000 instances, one RunInstances);
   the reference is our own classic ``-status`` with a state file that knows no annex (no
   reconciler pass first: its fastest form, one DescribeInstances as the original's).  When
   ``make bench`` also ran the side-by-side section, :func:`add_original` names HTCondor's own
   ``condor_annex -status`` over 1,000 instances beside it.  The row's extra data also holds
   ``-status`` from the store, ``-status`` without a daemon whose store knows the annex (a pass
   first), and ``status`` from the store over row 1's 200 annexes.

The cloud is set up the way ``create`` leaves it, without the creates: ``setup`` once, then per
annex its desired state, a launch request (recorded, then launched), a lease (Scheduler
CreateSchedule), RunInstances with the tags the product puts on an instance
(:func:`condor_annex.providers.aws.instance_settings.annex_tags`: annex, launch token, lease
end, owner), and the instances recorded in the store as allocated.  A pass over that cloud
plans nothing but reads everything: what a daemon's steady-state pass costs.  The set-up calls
stand in for creates made over time, so they are not paced by the product's token bucket.

The daemon is stood in for by this process holding the state file's daemon lock
(:func:`condor_annex.state.daemon_lock.hold`, what ``condor_annexd`` holds) after running the
pass the daemon runs (:func:`condor_annex.service.converge.reconcile_once`): a real
``condor_annexd`` would run a pass every 10 s against the same moto server while the
reference is timed.  No collector is configured (``COLLECTOR_HOST`` unset): neither side
queries a pool.

``python -m benchmarks.annexd_rows [--small | --smoke]`` runs the rows alone (``--small``: 20
annexes, 240 and 100 instances; ``--smoke``: a few instances, for the unit test) and prints
them as JSON, one row per line.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from benchmarks import env
from benchmarks.report import Row

ANNEXES = 200
DESCRIBE_INSTANCES = 2_400
STATUS_INSTANCES = 1_000
STATUS_RUNS = 5
#: Row 2's target: store status / cloud status.
STATUS_TARGET_RATIO = 0.3
#: Issue 11 item 7's absolute goal for status from the store, reported beside the ratio.
STATUS_TARGET_S = 0.3
#: Items in a full DescribeInstances page (``MaxResults`` at most 1000).
PAGE = 1000


def _counting() -> tuple[Counter, Callable[[], None]]:
    """A Counter of ``"<service>.<Operation>"`` fed by every call through ``make_client``, and
    the function that stops feeding it."""
    from condor_annex.providers.aws.session import add_call_listener, remove_call_listener
    calls: Counter = Counter()

    def listener(name: str) -> None:
        calls[name] += 1

    add_call_listener(listener)
    return calls, lambda: remove_call_listener(listener)


@contextlib.contextmanager
def fresh_cloud(log: Callable[[str], None]) -> Iterator[None]:
    """A private user config and moto server for the block, with ``setup`` done."""
    from benchmarks import moto_rows

    with env.isolated_home("annex-bench-annexd-") as home, env.moto_server(home) as endpoint:
        log(f"  setup on a fresh moto server: {moto_rows.fresh_account(endpoint, home):.1f} s")
        yield


def populate(annexes: int, per_annex: int, *, per_call: int) -> int:
    """Make ``annexes`` annexes (``bench-000``, ...) of ``per_annex`` running instances each,
    as ``create`` leaves them (see the module docstring), in the cloud and the store of the
    current user config; leases end in 2 hours.

    Args:
        annexes: how many annexes.
        per_annex: instances per annex.
        per_call: instances per RunInstances (one reservation each); the annex's launch token
            is on all of them.

    Returns:
        the instances made.
    """
    from condor_annex.model import lease_end_value
    from condor_annex.providers.aws.instance_settings import annex_tags
    from condor_annex.providers.aws.session import make_client
    from condor_annex.service.context import Context
    from condor_annex.state.lifecycle import Lifecycle
    from condor_annex.state.store import open_store

    ctx = Context.load()
    provider = ctx.provider(ctx.setup_outputs())
    end = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(hours=2)
    ec2 = make_client(ctx.aws, "ec2", paced=False)
    owner = provider.owner()
    made = 0
    with open_store(ctx.knobs) as store:
        for a in range(annexes):
            name = f"bench-{a:03d}"
            token = f"{name}_{uuid.uuid4()}"
            store.put_annex(name, {"instance_type": "m5.large", "count": per_annex},
                            requested=per_annex, lease_end=end)
            store.record_launch(token, name, "on-demand", per_annex)
            provider.create_lease(name, end)
            tags = annex_tags(name, launch_token=token, lease_end=lease_end_value(end),
                              owner=owner)
            ids: list[str] = []
            for k in range(0, per_annex, per_call):
                n = min(per_call, per_annex - k)
                reply = ec2.run_instances(
                    ImageId=env.MOTO_AMI, InstanceType="m5.large", MinCount=n, MaxCount=n,
                    ClientToken=token if per_call >= per_annex else f"{token}-{k}",
                    TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
                ids += [i["InstanceId"] for i in reply["Instances"]]
            store.set_launch_state(token, "launched")
            store.add_instances(name, ids, state=Lifecycle.ALLOCATED.value, launch_token=token,
                                reason="benchmark: launched")
            made += len(ids)
    return made


def one_pass() -> tuple[Any, Counter, float]:
    """One reconciler pass as annexd runs it; (its PassReport, calls by operation, seconds)."""
    from condor_annex.service.context import Context
    from condor_annex.service.converge import reconcile_once

    calls, stop = _counting()
    try:
        t0 = time.perf_counter()
        report = reconcile_once(Context.load())
        return report, calls, time.perf_counter() - t0
    finally:
        stop()


@contextlib.contextmanager
def daemon_serving() -> Iterator[None]:
    """This process holds the state file's daemon lock for the block, as ``condor_annexd``
    does, so commands answer from the store."""
    from condor_annex.service.context import Context
    from condor_annex.service.converge import daemon_pid, state_file
    from condor_annex.state import daemon_lock

    ctx = Context.load()
    with daemon_lock.hold(state_file(ctx)):
        if daemon_pid(ctx) is None:
            raise RuntimeError("commands do not see the daemon lock this process holds")
        yield


def _timed(args: list[str], runs: int, expect: str, *, warm_up: bool = True,
           from_store: bool | None = None) -> list[float]:
    """``runs`` timed runs of the console script (after one warm-up run: page cache, .pyc).

    Args:
        expect: text every run's output must hold (an annex name).
        from_store: when not None, whether the output must say it answers from annexd's pass.

    Raises:
        RuntimeError: a run failed or printed something else.
    """
    from benchmarks.moto_rows import run_cli

    samples = []
    for r in range(runs + warm_up):
        wall, p = run_cli(args)
        out = p.stdout + p.stderr
        store = "as of condor_annexd" in out.lower()
        if p.returncode != 0 or expect not in out or \
                (from_store is not None and store != from_store):
            raise RuntimeError(f"condor_annex {' '.join(args)} (exit {p.returncode}, "
                               f"{'from' if store else 'not from'} the store) did not show "
                               f"what was expected: {out.strip()[-300:]}")
        if r or not warm_up:
            samples.append(wall)
    return samples


def describe_row(annexes: int, n: int, log: Callable[[str], None]) -> Row:
    """Row 1 (see the module docstring), on its own moto server; its extra data also has
    ``status`` from the store over those annexes (3 runs)."""
    from condor_annex.service.context import Context

    with fresh_cloud(log):
        t0 = time.perf_counter()
        made = populate(annexes, n // annexes, per_call=1)
        log(f"  {made} instances in {annexes} annexes, one RunInstances each: "
            f"{time.perf_counter() - t0:.1f} s")
        page_size = getattr(Context.load().provider(), "page_size", None)
        with daemon_serving():
            report, calls, seconds = one_pass()
            store_status = _timed(["status"], 3, f"bench-{annexes - 1:03d}", from_store=True)
    pages = calls["ec2.DescribeInstances"]
    want = math.ceil(made / PAGE)
    log(f"  pass over {report.instances} instances in {report.annexes} annexes: {pages} "
        f"DescribeInstances, {sum(calls.values())} calls, {report.actions} actions, "
        f"{seconds:.1f} s; status from the store {statistics.median(store_status):.3f} s")
    return Row(key=f"annexd.describe.n{made}",
               what=f"DescribeInstances per pass: {made:,} instances in {report.annexes} annexes",
               unit="calls", samples=[float(pages)], target=f"= ⌈N/1000⌉ = {want}",
               target_ok=pages == want and report.instances == made and not report.errors,
               notes=f"page size {page_size}; {sum(calls.values())} calls in all, "
                     f"{report.actions} actions; pass {seconds:.1f} s on moto",
               extra={"by_operation": dict(calls), "pass_s": seconds,
                      "instances_seen": report.instances, "annexes": report.annexes,
                      "actions": report.actions, "errors": list(report.errors),
                      "page_size": page_size, "status_from_store_s": store_status})


def status_row(n: int, runs: int, log: Callable[[str], None]) -> Row:
    """Row 2 (see the module docstring), on its own moto server."""
    from condor_annex import config

    with fresh_cloud(log):
        populate(1, n, per_call=n)
        with daemon_serving():
            report, pass_calls, pass_s = one_pass()
            log(f"  daemon's pass over {report.instances} instances: {pass_s:.1f} s, "
                f"{pass_calls['ec2.DescribeInstances']} DescribeInstances")
            store = _timed(["status"], runs, "bench-000", from_store=True)
            # the classic -status asks the cloud, as the original did (its tables have no
            # "as of" line), also while annexd serves the store
            classic_store = _timed(["-status"], runs, "bench-000", from_store=False)
        log(f"  status from the store: median {statistics.median(store):.3f} s; "
            f"-status from the store {statistics.median(classic_store):.3f} s")
        home = config.user_config_path().parent
        config.write_block("bench-annexd", {"ANNEX_STATE_FILE": str(home / "empty.sqlite3")})
        try:
            cloud = _timed(["-status"], runs, "bench-000", from_store=False)
            cloud_calls = _calls_of_status()
        finally:
            config.remove_block("bench-annexd")
        log(f"  -status from the cloud: median {statistics.median(cloud):.3f} s "
            f"({sum(cloud_calls.values())} calls)")
        with_pass = _timed(["-status"], 1, "bench-000", warm_up=False, from_store=False)
        log(f"  -status from the cloud after a pass (no daemon; the store knows the annex): "
            f"{with_pass[0]:.3f} s")
    row = Row(key=f"annexd.status.n{n}",
              what=f"status over {n:,} instances: from the store (annexd) vs -status from "
                   "the cloud",
              unit="s", samples=store, reference=statistics.median(cloud),
              reference_samples=cloud, target=f"≤ {STATUS_TARGET_RATIO}×",
              extra={"classic_status_from_store_s": classic_store,
                     "classic_status_after_pass_s": with_pass,
                     "reference_calls": dict(cloud_calls), "daemon_pass_s": pass_s,
                     "daemon_pass_calls": dict(pass_calls),
                     "absolute_target_s": STATUS_TARGET_S})
    row.target_ok = row.ratio is not None and row.ratio <= STATUS_TARGET_RATIO
    absolute = "meets" if row.value is not None and row.value <= STATUS_TARGET_S else "misses"
    row.notes = (f"reference: our classic -status, no daemon ({sum(cloud_calls.values())} "
                 f"calls), not HTCondor's; {absolute} ≤ {STATUS_TARGET_S:g} s absolute")
    return row


def _calls_of_status() -> Counter:
    """The calls one ``-status`` makes (counted in-process: the service call the console
    script makes, with the same user config)."""
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context

    calls, stop = _counting()
    try:
        svc.annex_status(Context.load())
    finally:
        stop()
    return calls


def rows(log: Callable[[str], None], *, annexes: int = ANNEXES,
         describe_n: int = DESCRIBE_INSTANCES, status_n: int = STATUS_INSTANCES,
         runs: int = STATUS_RUNS) -> list[Row]:
    """Row 1 (``annexes`` annexes, ``describe_n`` instances) and row 2 (``status_n``
    instances, ``runs`` runs per side)."""
    describe = describe_row(annexes, describe_n, log)
    status = status_row(status_n, runs, log)
    many = describe.extra.get("status_from_store_s")
    if many:
        status.extra["status_from_store_many_annexes"] = {
            "annexes": annexes, "instances": describe.extra["instances_seen"], "s": many}
        status.notes += (f"; from the store over {annexes} annexes, "
                         f"{describe.extra['instances_seen']:,} instances: "
                         f"{statistics.median(many):.3f} s")
    return [describe, status]


def add_original(rows_: list[Row]) -> None:
    """When the side-by-side section measured HTCondor's own ``-status`` over 1,000 instances
    (row ``original.status``), name its median and our ratio to it in the status row."""
    by_key = {r.key: r for r in rows_}
    ours, orig = by_key.get(f"annexd.status.n{STATUS_INSTANCES}"), by_key.get("original.status")
    if ours is None or ours.value is None or orig is None or orig.reference is None:
        return
    ours.extra["original_status_s"] = orig.reference
    ours.notes += (f"; HTCondor's condor_annex -status (row original.status): "
                   f"{orig.reference:.2f} s, {ours.value / orig.reference:.2f}×")


#: Sizes of ``--small`` (a quick look) and ``--smoke`` (the unit test): annexes, instances of
#: row 1, instances of row 2, runs per side.
SIZES = {"--small": (20, 240, 100, 2), "--smoke": (3, 6, 6, 1),
         "": (ANNEXES, DESCRIBE_INSTANCES, STATUS_INSTANCES, STATUS_RUNS)}


def main(argv: list[str]) -> int:
    """Run the rows alone; one JSON object per row on stdout, progress on stderr."""
    import json

    if argv not in ([], ["--small"], ["--smoke"]):
        print("usage: python -m benchmarks.annexd_rows [--small | --smoke]", file=sys.stderr)
        return 2
    annexes, describe_n, status_n, runs = SIZES[argv[0] if argv else ""]
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    for r in rows(log, annexes=annexes, describe_n=describe_n, status_n=status_n, runs=runs):
        print(json.dumps(r.as_dict(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
