"""Rows measured on the local cloud (real HTCondor execute nodes in network namespaces): join
time against a floor (row 1) and lease overrun (row 5).

The local cloud is one per machine: :func:`local_cloud` holds
:func:`condor_annex.providers.local.cloud.exclusive_session` for its whole life and always brings
the cloud down again, also on error or Ctrl-C.

**The floor.**  For N nodes, the floor is the same execute nodes started *directly*: the token
minted with the service's own command, the bundle rendered by :func:`pool.configs.annex_bundle`
and installed with the agent's own :func:`agent.bootstrap.install_bundle` and
:func:`~agent.bootstrap.write_instance_config` (exactly what the agent would install), one
namespace per node made with :func:`netns.create_host`, and ``condor_master -f`` started in it --
but no moto, no IMDS, no S3, no agent.  Every node is prepared first (namespace, files), then
every master is started.  Its clock covers all of that (minting, preparing, starting) until
every node has a slot in the collector, polled every 0.2 s.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from benchmarks.report import Row

#: Index of the first floor node's address (netns.instance_address): far above any index the
#: local cloud hands out during a benchmark, and below the 2000 host names in the chroot.
FLOOR_FIRST_INDEX = 1500
#: Target of row 1 (ours / floor) and row 5 (seconds).
JOIN_RATIO_TARGET = 1.2
LEASE_OVERRUN_TARGET_S = 60.0
#: The lease sweep's period on AWS (the stack's rate(5 minutes)), seconds.
SWEEP_PERIOD_S = 300.0


class _Args:
    json = False


@contextlib.contextmanager
def local_cloud(log: Callable[[str], None]) -> Iterator[Any]:
    """Bring the local cloud up (and ``setup`` on it) under the machine-wide lock; yield a
    :class:`Context`; bring it down whatever happens.  Needs :func:`env.isolated_home`."""
    from condor_annex.cli import local
    from condor_annex.providers.local.cloud import exclusive_session
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context

    log("waiting for the local-cloud lock (other tests or the demo may hold it)")
    with exclusive_session():
        if local.running_state() is not None:   # left over by an interrupted run
            local.cmd_down(_Args())
        t0 = time.monotonic()
        try:
            local.cmd_up(_Args())
            up_s = time.monotonic() - t0
            svc.setup_cloud(Context.load())
            ctx = Context.load()
            log(f"local cloud up in {up_s:.1f} s (setup included: "
                f"{time.monotonic() - t0:.1f} s)")
            yield ctx
        finally:
            _stop_floor_leftovers()
            local.cmd_down(_Args())


# ---- ours -----------------------------------------------------------------------------------

def ours_join(ctx: Any, name: str, n: int, timeout_s: float) -> dict[str, float]:
    """create → all N startds in the collector, with the service's own calls
    (``create_annex`` then ``wait_for_join`` with its default 1 s poll).  Ends the annex after.

    Returns:
        ``{"total_s", "create_s", "agent_steps"}``: the last is per agent step, the median and
        maximum of its duration over the nodes, from their ``agent.log``.
    """
    from condor_annex.model import AnnexSpec
    from condor_annex.service import annex as svc

    spec = AnnexSpec(name=name, count=n, lease_seconds=3600, idle_seconds=3600)
    t0 = time.perf_counter()
    try:
        result = svc.create_annex(ctx, spec)
        create_s = time.perf_counter() - t0
        svc.wait_for_join(ctx, name, n, timeout_s=timeout_s)
        total_s = time.perf_counter() - t0
    finally:
        end_and_settle(ctx, name)
    return {"total_s": total_s, "create_s": create_s,
            "agent_steps": agent_steps(result.instance_ids)}


_STEP_RE = re.compile(r"INFO step (\d)/9 .*\((\d+\.\d+)s\)\s*$")


def agent_steps(instance_ids: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Durations of the agent's boot steps 1-8 on the given instances (their console, where the
    agent's unit writes): ``{"step N": {"median_s", "max_s"}}``."""
    from condor_annex.providers.local.cloud import STATE_DIR

    by_step: dict[str, list[float]] = {}
    for iid in instance_ids:
        try:
            text = (STATE_DIR / "instances" / iid / "console.log").read_text(errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = _STEP_RE.search(line)
            if m:
                by_step.setdefault(f"step {m.group(1)}", []).append(float(m.group(2)))
    return {k: {"median_s": _median(v), "max_s": max(v)} for k, v in sorted(by_step.items())}


def end_and_settle(ctx: Any, name: str, timeout_s: float = 180) -> None:
    """End the annex (``end_annex`` + ``wait_for_end``), then wait until the local cloud has
    stopped every node and the collector lists none of the annex's slots, so the next run
    starts on a quiet machine."""
    from condor_annex.errors import UnknownAnnexError
    from condor_annex.service import annex as svc

    try:
        svc.end_annex(ctx, name, grace_s=0)   # the local cloud still stops nodes gracefully
    except UnknownAnnexError:
        pass   # ended by its lease already
    svc.wait_for_end(ctx, name, timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    while _instance_namespaces() or _slots(ctx, name):
        if time.monotonic() > deadline:
            raise RuntimeError(f"annex {name}: nodes still up {timeout_s:.0f} s after it ended")
        time.sleep(0.5)


def _instance_namespaces() -> list[str]:
    """Namespaces of the local cloud's instances (``<prefix>i<N>``)."""
    from condor_annex.providers.local import netns

    p = netns.ip("netns", "list", check=False)
    names = [line.split()[0] for line in p.stdout.splitlines() if line.strip()]
    pre = netns.prefix() + "i"
    return [n for n in names if n.startswith(pre) and n[len(pre):].isdigit()]


def _slots(ctx: Any, name: str) -> list[Any]:
    from condor_annex.errors import PoolError
    from condor_annex.pool.collector import annex_slots

    try:
        return annex_slots(ctx.collector, name)
    except PoolError:
        return []


# ---- the floor ------------------------------------------------------------------------------

@dataclass
class _FloorNode:
    index: int
    ns: str
    dir: str                      # inside the chroot
    address: str
    proc: subprocess.Popen | None = None


@dataclass
class Floor:
    """N bare execute nodes of one annex name, started directly (see the module docstring)."""

    ctx: Any
    name: str
    n: int
    nodes: list[_FloorNode] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    #: ``(script, endpoint, bucket, key, (access key, secret))``: each node first runs the
    #: python3 ``script`` with those arguments and keys (a boto3 floor; benchmarks/stock_rows).
    prelude: tuple | None = None

    def run(self, timeout_s: float) -> float:
        """Prepare every node (namespace, files), start every master, and wait until all are
        in the collector; returns seconds for all of it."""
        from condor_annex.pool import configs
        from condor_annex.pool.tokens import mint_annex_token
        from condor_annex.service.common import TOKEN_MARGIN_SECONDS

        t0 = time.perf_counter()
        token = mint_annex_token(self.name, 3600 + TOKEN_MARGIN_SECONDS,
                                 command=self.ctx.token_command)
        bundle = configs.annex_bundle(annex_name=self.name, collector=self.ctx.annex_collector,
                                      trust_domain=self.ctx.trust_domain, idle_seconds=3600,
                                      token=token, owners=())
        self.timings["mint_s"] = time.perf_counter() - t0
        for i in range(self.n):
            self._prepare(i, bundle)
        self.timings["prepared_s"] = time.perf_counter() - t0
        for node in self.nodes:
            self._start(node)
        self.timings["started_s"] = time.perf_counter() - t0
        deadline = time.monotonic() + timeout_s
        while True:
            joined = {s.instance_id for s in _slots(self.ctx, self.name)}
            if len(joined) >= self.n:
                return time.perf_counter() - t0
            if time.monotonic() > deadline:
                raise RuntimeError(f"floor {self.name}: {len(joined)}/{self.n} nodes in the "
                                   f"collector after {timeout_s:.0f} s")
            time.sleep(0.2)

    def _prepare(self, i: int, bundle: bytes) -> None:
        """Node ``i``'s namespace and files: the image's paths-only config plus what the agent
        would install (bundle, instance config)."""
        from condor_annex.agent.bootstrap import Identity, install_bundle, write_instance_config
        from condor_annex.pool import configs
        from condor_annex.providers.local import netns
        from condor_annex.providers.local.cloud import NODES_DIR, ROOT, chroot_run

        index = FLOOR_FIRST_INDEX + i
        address = netns.instance_address(index)
        node = _FloorNode(index=index, ns=f"fl{i}", dir=f"{NODES_DIR}/floor-{self.name}-{i}",
                          address=address)
        self.nodes.append(node)
        host_dir = ROOT / node.dir.lstrip("/")
        shutil.rmtree(host_dir, ignore_errors=True)
        for sub in ("etc/config.d", "etc/tokens.d", "etc/passwords.d", "log", "spool",
                    "execute", "run", "lock", "cred_dir"):
            (host_dir / sub).mkdir(parents=True, exist_ok=True)
        (host_dir / "etc" / "condor_config").write_text(
            configs.node_image_config(local_dir=node.dir, etc_dir=f"{node.dir}/etc"))
        chroot_run("chown", "-R", "condor:condor", *(f"{node.dir}/{s}" for s in
                   ("log", "spool", "execute", "run", "lock")))
        install_bundle(bundle, host_dir / "etc")
        write_instance_config(host_dir / "etc",
                              Identity(f"i-floor{i:05d}", "us-east-1", address))
        netns.create_host(node.ns, address)

    def _start(self, node: _FloorNode) -> None:
        """``condor_master -f`` in the node's namespace, with its own host name (after the
        :attr:`prelude`, when there is one)."""
        from condor_annex.providers.local import netns
        from condor_annex.providers.local.cloud import ROOT

        hostname = "ip-" + node.address.replace(".", "-")
        host_dir = ROOT / node.dir.lstrip("/")
        run = ["condor_master", "-f"]
        keys: list[str] = []
        if self.prelude:
            script, endpoint, bucket, key, (access, secret) = self.prelude
            run = ["sh", "-c", 'python3 -c "$0" "$1" "$2" "$3" && exec condor_master -f',
                   script, endpoint, bucket, key]
            keys = [f"AWS_ACCESS_KEY_ID={access}", f"AWS_SECRET_ACCESS_KEY={secret}"]
        with open(host_dir / "master.out", "ab") as out:
            node.proc = subprocess.Popen(
                ["ip", "netns", "exec", netns.prefix() + node.ns, "unshare", "--uts", "--",
                 "sh", "-c", 'hostname "$0" && exec "$@"', hostname, "chroot", str(ROOT),
                 "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
                 "LANG=C.UTF-8", f"CONDOR_CONFIG={node.dir}/etc/condor_config", *keys, *run],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)

    @staticmethod
    def output(node: _FloorNode) -> str:
        """What the node's processes printed (``master.out``)."""
        from condor_annex.providers.local.cloud import ROOT
        try:
            return (ROOT / node.dir.lstrip("/") / "master.out").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, grace_s: float = 30) -> None:
        """SIGTERM every master (graceful: its slots leave the collector), SIGKILL stragglers
        after ``grace_s``, delete the namespaces and directories."""
        from condor_annex.providers.local import netns
        from condor_annex.providers.local.cloud import ROOT

        for node in self.nodes:
            _killpg(node.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _killpg(node.proc, signal.SIGKILL)   # stragglers of the group
            if node.proc.poll() is None:
                node.proc.wait(timeout=10)
        for node in self.nodes:
            netns.delete_host(node.ns)
            shutil.rmtree(ROOT / node.dir.lstrip("/"), ignore_errors=True)
        end = time.monotonic() + 30
        while _slots(self.ctx, self.name) and time.monotonic() < end:
            time.sleep(0.5)
        self.nodes.clear()


def _killpg(proc: subprocess.Popen | None, sig: int) -> None:
    if proc is None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_floor_leftovers() -> None:
    """Delete floor namespaces an interrupted run left (``<prefix>fl<N>``); ``local down``
    kills their processes (they run under the nodes' directory) and deletes the rest."""
    from condor_annex.providers.local import netns

    p = netns.ip("netns", "list", check=False)
    for line in p.stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        if ns.startswith(netns.prefix() + "fl"):
            netns.ip("netns", "del", ns, check=False)


def floor_join(ctx: Any, name: str, n: int, timeout_s: float) -> dict[str, float]:
    """One floor run (see :class:`Floor`); the nodes are stopped after."""
    floor = Floor(ctx, name, n)
    try:
        total = floor.run(timeout_s)
    finally:
        floor.stop()
    return {"total_s": total, **floor.timings}


# ---- rows -----------------------------------------------------------------------------------

def join_rows(ctx: Any, plan: dict[int, int], log: Callable[[str], None],
              asked_runs: int) -> list[Row]:
    """Row 1: for each N (with its number of runs), ours and the floor, interleaved."""
    rows = []
    for n, runs in plan.items():
        timeout_s = 120 + 3 * n
        ours, floor, details, failures = [], [], [], []
        for r in range(runs):
            try:
                o = ours_join(ctx, f"join-n{n}-r{r}", n, timeout_s)
                f = floor_join(ctx, f"floor-n{n}-r{r}", n, timeout_s)
            except Exception as e:  # noqa: BLE001 - a failed run is reported, not hidden
                failures.append(f"run {r + 1}: {type(e).__name__}: {e}")
                log(f"  join N={n} run {r + 1}/{runs} FAILED: {failures[-1]}")
                continue
            ours.append(o["total_s"])
            floor.append(f["total_s"])
            details.append({"ours": o, "floor": f})
            log(f"  join N={n} run {r + 1}/{runs}: ours {o['total_s']:.1f} s, "
                f"floor {f['total_s']:.1f} s")
        row = Row(key=f"join.n{n}", what=f"join time create → {n} startd(s) in collector",
                  unit="s", samples=ours, reference=_median(floor), reference_samples=floor,
                  target=f"≤ {JOIN_RATIO_TARGET}× floor",
                  extra={"runs": details, "failed_runs": failures})
        row.target_ok = row.ratio is not None and row.ratio <= JOIN_RATIO_TARGET and \
            not failures
        notes = []
        if runs < asked_runs:
            notes.append(f"{runs} runs, not {asked_runs}: 15-minute budget")
        if failures:
            notes.append(f"{len(failures)} of {runs} runs failed: {failures[0]}")
        if not ours:
            row.error = "; ".join(failures)
        row.notes = "; ".join(notes)
        rows.append(row)
    return rows


def _median(xs: list[float]) -> float | None:
    import statistics
    return statistics.median(xs) if xs else None


def lease_overruns(ctx: Any, names: list[str], n: int = 2, lease_s: int = 30,
                   timeout_s: float = 240) -> list[dict[str, float]]:
    """Row 5, several annexes at once (each its own sample): lease end → last instance
    terminated (EC2 state), and → last slot gone from the collector, seconds after the lease's
    end time (the schedule's whole second); ``first_ended_s``: when the annex's first instance
    stopped running (negative: it ended before its lease end).  All leases end within about a
    second of each other, as they would for a user's batch of annexes."""
    import math

    from condor_annex.model import AnnexSpec
    from condor_annex.service import annex as svc

    provider = ctx.provider(ctx.setup_outputs())
    ends: dict[str, int] = {}
    out: dict[str, dict] = {}
    first_ended: dict[str, float] = {}   # when an instance of the annex first stopped running
    try:
        for name in names:
            spec = AnnexSpec(name=name, count=n, lease_seconds=lease_s, idle_seconds=3600)
            ends[name] = math.ceil(svc.create_annex(ctx, spec).lease_expires_at.timestamp())
        for name in names:
            svc.wait_for_join(ctx, name, n, timeout_s=lease_s)
        joined_at = time.time()
        deadline = time.monotonic() + lease_s + timeout_s
        while True:
            by_annex: dict[str, list[str]] = {}
            for inst in provider.query_instances(include_terminated=True).values():
                by_annex.setdefault(inst.annex_name, []).append(inst.state)
            now = time.time()
            for name in names:
                d = out.get(name)
                states = by_annex.get(name, [])
                if states and any(s not in ("pending", "running") for s in states):
                    first_ended.setdefault(name, now - ends[name])
                if d is None and states and all(s == "terminated" for s in states):
                    d = out[name] = {"terminated_s": now - ends[name], "slots_gone_s": None,
                                     "first_ended_s": first_ended[name],
                                     "joined_before_lease_end": joined_at < ends[name]}
                if d is not None and d["slots_gone_s"] is None and now > ends[name] \
                        and not _slots(ctx, name):
                    d["slots_gone_s"] = now - ends[name]
            if all(out.get(x, {}).get("slots_gone_s") is not None for x in names):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"annexes {names}: not ended {timeout_s:.0f} s after their "
                                   "leases")
            time.sleep(0.5)
        return [dict(out[x], lease_end=datetime.fromtimestamp(ends[x], timezone.utc)
                     .isoformat()) for x in names]
    finally:
        for name in names:
            end_and_settle(ctx, name)


def lease_rows(ctx: Any, runs: int, log: Callable[[str], None]) -> list[Row]:
    """Row 5: lease overrun of ``runs`` annexes at once (N=2 each, lease 30 s, idle 1 h)."""
    details = lease_overruns(ctx, [f"lease-r{r}" for r in range(runs)])
    samples = [d["terminated_s"] for d in details]
    for r, d in enumerate(details):
        log(f"  lease overrun annex {r + 1}/{runs}: terminated {d['terminated_s']:.1f} s, "
            f"slots gone {d['slots_gone_s']:.1f} s after the lease end")
    row = Row(key="lease.overrun",
              what=f"lease end → last instance terminated ({runs} annexes of N=2 at once, "
                   "lease 30 s)",
              unit="s", samples=samples, target=f"≤ {LEASE_OVERRUN_TARGET_S:.0f} s",
              extra={"runs": details})
    row.target_ok = row.value is not None and max(samples) <= LEASE_OVERRUN_TARGET_S
    row.notes = "slots gone from collector: " + ", ".join(
        f"{d['slots_gone_s']:.1f}" for d in details) + " s"
    return [row]


@dataclass(frozen=True)
class KillSwitchCase:
    """One kill-switch row: which faults are injected and which switches are off."""

    key: str
    what: str
    inject: tuple[tuple[str, ...], ...]
    sweep_on: bool
    target_s: float
    lease_s: int
    delete_schedules: bool = False


KILL_SWITCH_CASES = (
    KillSwitchCase("lease.early", "lease overrun, enforcer healthy, schedules early in their "
                   "minute (sweep and backstop off)",
                   (("schedule-early",), ("backstop-off",)), False, LEASE_OVERRUN_TARGET_S, 40),
    KillSwitchCase("lease.sweep", "lease overrun, no scheduled invocation arrives (schedule "
                   "deleted: as after the invocation and its 2 retries failed), backstop off "
                   "(the lease sweep alone)",
                   (("backstop-off",),), True, SWEEP_PERIOD_S + 60, 40, delete_schedules=True),
    KillSwitchCase("lease.backstop", "lease overrun, cloud side broken (instance-side "
                   "backstop alone)", (("lambda-error", "10000"),), True, 90.0, 30),
)


def kill_switch_rows(ctx: Any, runs: int, log: Callable[[str], None]) -> list[Row]:
    """Issue 9's rows: each kill switch alone, ``runs`` annexes of N=1 ending at once, on the
    strict local cloud at time scale 1.  "The scheduled invocation and its retries fail" is
    made by deleting the annexes' schedules (the event never arrives; the same for the sweep
    as three failed attempts, which end in the failure queue), so the lambda-error budget
    cannot be spent by the sweep's own invocations first."""
    from condor_annex.cli.main import main
    from condor_annex.providers.aws.session import make_client

    def cli(argv: list[str]) -> None:
        if main(argv) != 0:
            raise RuntimeError(f"condor_annex {' '.join(argv)} failed")
    from condor_annex.providers.local.inject import set_lease_sweep
    sch = make_client(ctx.aws, "scheduler")
    stack = ctx.setup_outputs().stack_name
    rows = []
    for case in KILL_SWITCH_CASES:
        names = [f"{case.key.split('.')[1]}-r{r}" for r in range(runs)]
        cli(["local", "inject", "none"])
        for words in case.inject:
            cli(["local", "inject", *words])
        set_lease_sweep(sch, stack, case.sweep_on)
        try:
            if case.delete_schedules:
                details = _overruns_without_schedules(ctx, sch, names, case)
            else:
                details = lease_overruns(ctx, names, n=1, lease_s=case.lease_s,
                                         timeout_s=case.target_s + 120)
        finally:
            cli(["local", "inject", "none"])
            set_lease_sweep(sch, stack, True)
        samples = [d["terminated_s"] for d in details]
        early = min(d["first_ended_s"] for d in details)
        log(f"  {case.key}: terminated {', '.join(f'{x:.1f}' for x in samples)} s after the "
            f"lease end; first instance ended {early:+.1f} s")
        row = Row(key=case.key, what=f"{case.what} ({runs} annexes at once)", unit="s",
                  samples=samples, target=f"0–{case.target_s:.0f} s, never early",
                  extra={"runs": details, "time_scale": 1})
        row.target_ok = max(samples) <= case.target_s and early >= 0
        row.notes = f"earliest instance end {early:+.1f} s from its lease end; 0 left running"
        rows.append(row)
    return rows


def _overruns_without_schedules(ctx: Any, sch: Any, names: list[str],
                                case: KillSwitchCase) -> list[dict[str, float]]:
    """:func:`lease_overruns` with each annex's lease schedule deleted right after create."""
    import threading
    stop = threading.Event()

    def delete_schedules() -> None:
        while not stop.is_set():
            for name in names:
                try:
                    sch.delete_schedule(Name=f"annex-lease-{name}")
                except Exception:  # noqa: BLE001 - not made yet, or deleted already
                    pass
            stop.wait(0.5)
    t = threading.Thread(target=delete_schedules, daemon=True)
    t.start()
    try:
        return lease_overruns(ctx, names, n=1, lease_s=case.lease_s,
                              timeout_s=case.target_s + 120)
    finally:
        stop.set()
        t.join()


def chroot_path() -> Path:
    """The HTCondor chroot (for reports)."""
    from condor_annex.providers.local.cloud import ROOT
    return ROOT
