"""Rows measured against a plain moto server (no HTCondor nodes): API calls (row 2), CLI start-up
(row 4) and peak memory (row 6).

API calls are counted in-process with :func:`condor_annex.providers.aws.session.add_call_listener`
(one count per botocore call, retries excluded).  Start-up and memory are measured on the real
console script ``.venv/bin/condor_annex`` in child processes, the way a user runs it.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import env
from benchmarks.report import Row

#: The console script under test (the project's venv).
CLI = Path(sys.executable).with_name("condor_annex")
#: Target of rows 2: create makes at most this many calls, whatever N.
CREATE_CALLS_MAX = 8
#: Target of row 4, seconds.
STARTUP_TARGET_S = 0.3


def counted(fn: Callable[[], Any]) -> tuple[Any, Counter, float]:
    """Run ``fn`` counting botocore calls made through ``make_client``.

    Returns:
        (fn's value, Counter of ``"<service>.<Operation>"``, wall seconds).
    """
    from condor_annex.providers.aws.session import add_call_listener, remove_call_listener

    calls: Counter = Counter()

    def listener(name: str) -> None:
        calls[name] += 1

    add_call_listener(listener)
    try:
        t0 = time.perf_counter()
        value = fn()
        return value, calls, time.perf_counter() - t0
    finally:
        remove_call_listener(listener)


def fresh_account(endpoint: str, home: Path) -> float:
    """Reset moto, write the user config and run ``setup``; returns setup's seconds."""
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context

    env.reset_moto(endpoint)
    env.write_moto_config(home, endpoint)
    t0 = time.perf_counter()
    svc.setup_cloud(Context.load())
    return time.perf_counter() - t0


def api_call_rows(endpoint: str, home: Path, counts: tuple[int, ...],
                  log: Callable[[str], None]) -> list[Row]:
    """Row 2: calls per ``create`` and per ``status`` for each N in ``counts``.

    Each N gets a freshly reset account (setup re-run), so moto's slow tag filter is not
    measured over earlier runs' instances.
    """
    from condor_annex.model import AnnexSpec
    from condor_annex.service import annex as svc
    from condor_annex.service.context import Context

    rows: list[Row] = []
    create_totals: dict[int, int] = {}
    for n in counts:
        setup_s = fresh_account(endpoint, home)
        name = f"calls-n{n}"
        spec = AnnexSpec(name=name, count=n, lease_seconds=3600, idle_seconds=900)
        result, calls, create_s = counted(lambda: svc.create_annex(Context.load(), spec))
        assert len(result.instance_ids) == n, f"create launched {len(result.instance_ids)}/{n}"
        create_totals[n] = sum(calls.values())
        log(f"  create N={n}: {create_totals[n]} calls in {create_s:.2f} s")
        rows.append(Row(
            key=f"calls.create.n{n}", what=f"API calls per create, N={n}", unit="calls",
            samples=[float(create_totals[n])], target=f"≤ {CREATE_CALLS_MAX}, constant in N",
            extra={"by_operation": dict(calls), "wall_s": create_s, "setup_s": setup_s}))

        status, calls, status_s = counted(lambda: svc.annex_status(Context.load()))
        assert status and status[0].requested == n, "status did not see the annex's instances"
        _, named_calls, named_s = counted(lambda: svc.annex_status(Context.load(), name))
        describes = calls["ec2.DescribeInstances"]
        want = math.ceil(n / 1000)
        log(f"  status N={n}: {sum(calls.values())} calls ({describes} DescribeInstances) "
            f"in {status_s:.2f} s")
        rows.append(Row(
            key=f"calls.status.n{n}", what=f"API calls per status (all annexes), N={n}",
            unit="calls", samples=[float(sum(calls.values()))],
            target=f"DescribeInstances = ⌈N/1000⌉ = {want}", target_ok=describes == want,
            notes=f"{describes} DescribeInstances",
            extra={"by_operation": dict(calls), "describe_instances": describes,
                   "wall_s": status_s, "named_status": {"by_operation": dict(named_calls),
                                                        "wall_s": named_s}}))
    constant = len(set(create_totals.values())) == 1
    for row in rows:
        if row.key.startswith("calls.create."):
            row.target_ok = constant and row.value is not None and row.value <= CREATE_CALLS_MAX
    return rows


def run_cli(args: list[str], *, timeout: float = 600) -> tuple[float, subprocess.CompletedProcess]:
    """Run the console script; returns (wall seconds, completed process with text output)."""
    t0 = time.perf_counter()
    p = subprocess.run([str(CLI), *args], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, env=env.child_env(), timeout=timeout)
    return time.perf_counter() - t0, p


def peak_rss_cli(args: list[str], *, timeout: float = 600) -> tuple[float, float, str, int]:
    """Run the console script, collecting its peak RSS with ``os.wait4``.

    Returns:
        (wall seconds, peak RSS MiB, stderr tail, exit status).
    """
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([str(CLI), *args], stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, env=env.child_env())
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                raise RuntimeError(f"condor_annex {' '.join(args)}: no answer in {timeout:.0f} s")
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-500:]
    return wall, usage.ru_maxrss / 1024, tail, proc.returncode


def startup_rows(runs: int, log: Callable[[str], None]) -> list[Row]:
    """Row 4: wall time of ``condor_annex --help`` and ``condor_annex status`` (nothing to show).

    The account must be set up with no annexes.  One warm-up run of each is not counted.
    """
    rows = []
    for key, args in (("startup.help", ["--help"]), ("startup.status", ["status"])):
        run_cli(args)   # warm-up: page cache, .pyc files
        samples = []
        for _ in range(runs):
            wall, p = run_cli(args)
            if p.returncode != 0:
                raise RuntimeError(f"condor_annex {' '.join(args)} exited {p.returncode}: "
                                   f"{p.stderr.strip()[-300:]}")
            samples.append(wall)
        row = Row(key=key, what=f"CLI start-up: condor_annex {' '.join(args)}", unit="s",
                  samples=samples, target=f"≤ {STARTUP_TARGET_S} s")
        row.target_ok = row.value is not None and row.value <= STARTUP_TARGET_S
        if key == "startup.status":
            row.extra["importtime_top3"] = import_top(["status"], 3)
            row.notes = "setup done, no annexes; " + ", ".join(
                f"{i['module']} {i['cumulative_ms']:.0f} ms" for i in row.extra["importtime_top3"])
        log(f"  {row.what}: median {row.value:.3f} s over {runs}")
        rows.append(row)
    return rows


_IMPORT_RE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def import_top(args: list[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` top-level imports with the largest cumulative time (``python -X importtime``).

    "Top-level" means imported by the script itself, not nested inside another import, so the
    numbers do not double-count.
    """
    p = subprocess.run([sys.executable, "-X", "importtime", str(CLI), *args],
                       capture_output=True, text=True, env=env.child_env(), timeout=120)
    top = []
    for line in p.stderr.splitlines():
        m = _IMPORT_RE.match(line)
        if m and len(m.group(3)) == 1:   # one space of indentation = not nested
            top.append({"module": m.group(4), "self_ms": int(m.group(1)) / 1000,
                        "cumulative_ms": int(m.group(2)) / 1000})
    top.sort(key=lambda d: -d["cumulative_ms"])
    return top[:k]


def memory_rows(endpoint: str, home: Path, n: int, log: Callable[[str], None]) -> list[Row]:
    """Row 6: peak RSS of ``condor_annex create --count N`` and of ``condor_annex status`` over
    those N instances (fresh account)."""
    fresh_account(endpoint, home)
    name = f"mem-n{n}"
    rows = []
    for key, args, what in (
            ("memory.create", ["create", name, "--count", str(n), "--duration", "1h",
                               "--no-owner", "--json"], f"peak RSS: create, N={n}"),
            ("memory.status", ["status", "--json"], f"peak RSS: status over {n} instances")):
        wall, rss, tail, code = peak_rss_cli(args)
        if code != 0:
            rows.append(Row(key=key, what=what, unit="MiB", error=tail.strip()[-300:]))
            continue
        log(f"  {what}: {rss:.0f} MiB, {wall:.1f} s")
        rows.append(Row(key=key, what=what, unit="MiB", samples=[rss],
                        target="reported (no target)", notes=f"wall {wall:.1f} s",
                        extra={"wall_s": wall}))
    return rows
