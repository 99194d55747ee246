"""Demand-driven annexes on the local cloud (issue 13, "Done when"), with condor_annexd under
the pool's condor_master (``condor_annex local annexd on``, passes every 2 s, the default
settle time of 30 s):

* a burst of jobs that leaves the queue within the settle time launches nothing;
* an annex created with ``--autoscale --min 0 --max 4`` grows when 12 short jobs targeting it
  are submitted, they all complete on its nodes, it never has more than 4 instances (watched
  every second by a thread, DescribeInstances), and it returns to 0 instances by the nodes'
  idle timeout (``--idle 1m``).

Timings assumed: a node boots and joins within about 2 minutes on the local cloud; the jobs
sleep 20 s; the whole test takes about 6-8 minutes.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local import jobs as local_jobs
from tests.e2e.helpers import alive, cli, wait

pytestmark = pytest.mark.e2e

NAME = "auto"
MAX = 4
JOBS = 12
SETTLE_S = 30


class _Watch(threading.Thread):
    """Counts the annex's live instances every second; keeps the most ever seen and whether
    any was ever seen."""

    def __init__(self, ec2, name: str) -> None:
        super().__init__(daemon=True)
        self.ec2, self.name = ec2, name
        self.most = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.most = max(self.most, len(alive(self.ec2, self.name)))
            except Exception:   # noqa: BLE001 - a missed sample, not a failure
                pass
            self.stop.wait(1.0)


@pytest.fixture
def annexd(local_cloud, tmp_path):
    """condor_annexd under the pool's master, fast passes, the default settle time."""
    config.write_block("autoscale-e2e", {"ANNEXD_INTERVAL": "2",
                                         "ANNEX_AUTOSCALE_SETTLE": f"{SETTLE_S}s",
                                         "ANNEXD_LOG": str(tmp_path / "annexd.log")})
    cli("setup")
    assert main(["local", "annexd", "on"]) == 0
    wait("the master to start condor_annexd", lambda: json.loads(
        cli("daemon", "status", "--json", check=False).stdout)["running"], 90)
    try:
        yield tmp_path / "annexd.log"
    finally:
        assert main(["local", "annexd", "off"]) == 0
        config.write_block("autoscale-e2e", {})
        cli("off", NAME, "--grace", "0", check=False)


def _autoscale(name: str) -> dict:
    (row,) = json.loads(cli("status", name, "--json").stdout)
    return row["autoscale"] or {}


def test_an_autoscaled_annex_grows_for_its_jobs_and_returns_to_zero(local_cloud, annexd):
    ec2 = make_client(local_cloud.aws, "ec2")
    cli("create", NAME, "--autoscale", "--min", "0", "--max", str(MAX), "--duration", "30m",
        "--idle", "1m", "--no-owner")
    assert alive(ec2, NAME) == []
    watch = _Watch(ec2, NAME)
    watch.start()
    try:
        # A burst that leaves the queue within the settle time buys nothing.
        burst = local_jobs.submit(NAME, JOBS, sleep_s=1)
        wait("annexd to see the burst", lambda: (_autoscale(NAME).get("demand") or 0) > 0, 20)
        local_jobs.remove(burst)
        t_gone = time.monotonic()
        wait("annexd to see the queue empty", lambda: _autoscale(NAME).get("demand") == 0, 20)
        time.sleep(max(0.0, SETTLE_S + 10 - (time.monotonic() - t_gone)))
        assert watch.most == 0, "the burst launched instances"
        why_idle = _autoscale(NAME)["why"]
        # 12 short jobs: the annex grows (to at most 4), they all complete on its nodes.
        cluster = local_jobs.submit(NAME, JOBS, sleep_s=20)
        wait("the annex to grow", lambda: alive(ec2, NAME), SETTLE_S + 60)
        growing = _autoscale(NAME)
        done = wait(f"{JOBS} jobs to complete", lambda: (
            js := local_jobs.jobs(cluster)) and len(js) == JOBS and all(
            j.status == 4 for j in js) and js, 15 * 60, 5)
        assert {j.annex_name for j in done} == {NAME}, done
        # Back to 0 instances by the idle timeout (1 min) once the queue is empty.
        wait("the annex to return to 0 instances", lambda: not alive(ec2, NAME), 6 * 60, 5)
    finally:
        watch.stop.set()
        watch.join(timeout=10)
    assert 1 <= watch.most <= MAX, watch.most
    print(f"\n[autoscale] burst: {why_idle}; growing: {growing}; most instances at once "
          f"{watch.most} (max {MAX})")
