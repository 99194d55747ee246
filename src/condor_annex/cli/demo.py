"""``condor_annex local demo``: the main job, end to end, on the local cloud.

Brings up the pool and the local cloud, runs ``setup``, creates an annex, submits jobs that
require it as an ordinary user, waits for them, shows ``status``, then waits until the annex ends
by itself (idle or lease) and checks that nothing is left: no instance running, no bundle, no
lease.  Prints one ``DEMO OK: ...`` line, or ``DEMO FAILED: ...`` and exits 1.
"""

from __future__ import annotations

import time

from condor_annex.cli import render
from condor_annex.errors import AnnexError


class DemoFailed(AnnexError):
    """A demo check failed; the message says which."""


def add_verb(lsub) -> None:
    """Register ``local demo``."""
    p = lsub.add_parser("demo", help="run the main job end to end on the local cloud")
    p.add_argument("--name", default="demo", help="annex name (default demo)")
    p.add_argument("--count", default="3", help="instances (default 3)")
    p.add_argument("--jobs", default="6", help="jobs to run (default 6)")
    p.add_argument("--duration", default="3m", help="lease (default 3m)")
    p.add_argument("--idle", default="1m", help="idle shutdown (default 1m)")
    p.add_argument("--job-seconds", default="5s", help="how long each job runs (default 5s)")
    p.add_argument("--keep-up", action="store_true",
                   help="leave the local cloud running afterwards")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    """Run the demo; always leaves the local cloud as it found it (unless --keep-up)."""
    from condor_annex.cli import local_lifecycle as local, parse
    from condor_annex.model import AnnexSpec, validate_annex_name
    local.require_root()
    spec = AnnexSpec(name=validate_annex_name(args.name, "--name"),
                     count=parse.count(args.count, "--count"),
                     lease_seconds=parse.duration(args.duration, "--duration"),
                     idle_seconds=parse.duration(args.idle, "--idle"),
                     owners=("annexuser",))
    n_jobs = parse.count(args.jobs, "--jobs")
    job_s = parse.duration(args.job_seconds, "--job-seconds")
    from condor_annex.providers.local.cloud import exclusive_session
    with exclusive_session():
        was_up = local.running_state() is not None
        try:
            local.cmd_up(args)
            line = _run(spec, n_jobs, job_s)
        except KeyboardInterrupt:
            print("DEMO FAILED: interrupted", flush=True)
            raise
        except Exception as e:  # noqa: BLE001 - every failure ends in one DEMO FAILED line
            print(f"DEMO FAILED: {e}", flush=True)
            return 1
        finally:
            if not (was_up or args.keep_up):
                local.cmd_down(args)
    print(line, flush=True)
    return 0


def _step(text: str) -> None:
    render.console.print(f"[bold cyan]==>[/] {text}")


def _run(spec, n_jobs: int, job_s: int) -> str:
    from condor_annex.cli.annex import wait_join_with_progress
    from condor_annex.providers.local import jobs as local_jobs
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context

    _step("setup: deploying the CloudFormation stack to the local cloud")
    svc.setup_cloud(Context.load())
    ctx = Context.load()
    for row in svc.check_setup(ctx):
        if not row[1]:
            render.console.print(f"    check-setup: {row[0]}: {row[2]}")
    # An annex of this name left from an interrupted run would confuse the checks below.
    try:
        svc.end_annex(ctx, spec.name)
        svc.wait_for_end(ctx, spec.name, timeout_s=120)
    except AnnexError:
        pass

    _step(f"create {spec.name}: {spec.count} instances, lease {spec.lease_seconds} s, "
          f"idle {spec.idle_seconds} s")
    t0 = time.monotonic()
    result = svc.create_annex(ctx, spec)
    joined = wait_join_with_progress(ctx, spec.name, spec.count, timeout_s=300)
    join_s = time.monotonic() - t0
    render.console.print(f"    {joined}/{spec.count} joined in {join_s:.1f} s")
    lease_end = result.lease_expires_at

    _step(f"submit {n_jobs} jobs as annexuser, requiring AnnexName == \"{spec.name}\"")
    t1 = time.monotonic()
    cluster = local_jobs.submit(spec.name, n_jobs, job_s)
    records = _wait_jobs(cluster, n_jobs, timeout_s=300)
    jobs_s = time.monotonic() - t1
    annex_ids = set(ctx.provider(ctx.setup_outputs()).query_instances(
        spec.name, include_terminated=True))
    on_annex = [r for r in records
                if r.annex_name == spec.name and r.instance_id in annex_ids]
    render.console.print(f"    {len(records)} jobs done in {jobs_s:.1f} s on "
                         f"{len({r.remote_host for r in records})} slots")
    if len(on_annex) != n_jobs:
        raise DemoFailed(f"only {len(on_annex)}/{n_jobs} jobs ran on annex slots: "
                         + ", ".join(f"{r.proc}@{r.remote_host}({r.annex_name},{r.instance_id})"
                                     for r in records))

    _step("status")
    render.status_table(svc.annex_status(ctx, spec.name))

    _step("waiting for the annex to end by itself (idle or lease)")
    t2 = time.monotonic()
    with render.err_console.status("instances still alive...") as st:
        svc.wait_for_end(ctx, spec.name, timeout_s=spec.lease_seconds + 180,
                         progress=lambda n: st.update(f"{n} instance(s) still alive"))
    ended_at = time.time()
    cause = "idle" if ended_at < lease_end.timestamp() else "lease"
    end_s = time.monotonic() - t0
    provider = ctx.provider(ctx.setup_outputs())
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and (provider.bundle_exists(spec.name)
                                           or provider.get_lease(spec.name)):
        time.sleep(1)
    left = [i for i in provider.query_instances(spec.name).values()
            if i.state in ("pending", "running")]
    if provider.bundle_exists(spec.name):
        raise DemoFailed(f"the annex ended by {cause} but its bundle is still in the bucket")
    if provider.get_lease(spec.name):
        raise DemoFailed(f"the annex ended by {cause} but its lease still exists")
    if left:
        raise DemoFailed(f"{len(left)} instance(s) still running: "
                         + " ".join(i.instance_id for i in left))
    render.console.print(f"    ended by {cause} {time.monotonic() - t2:.1f} s after the jobs; "
                         "bundle and lease deleted")
    return (f"DEMO OK: {joined}/{spec.count} joined in {join_s:.0f} s; {len(on_annex)}/{n_jobs} "
            f"jobs ran on annex slots; annex ended by {cause} after {end_s:.0f} s; "
            f"{len(left)} instances left running")


def _wait_jobs(cluster: int, n: int, timeout_s: float):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from condor_annex.providers.local import jobs as local_jobs
    deadline = time.monotonic() + timeout_s
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(),
                  console=render.err_console) as bar:
        task = bar.add_task("jobs completed", total=n)
        while True:
            records = local_jobs.jobs(cluster)
            done = [r for r in records if r.status == 4]
            bar.update(task, completed=len(done))
            if len(done) >= n:
                return done
            if any(r.status in (3, 5) for r in records):
                raise DemoFailed("a job was removed or held: "
                                 + ", ".join(f"{r.proc}:{r.status}" for r in records))
            if time.monotonic() > deadline:
                raise DemoFailed(f"{len(done)}/{n} jobs done after {timeout_s:.0f} s")
            time.sleep(1)
