"""condor_annexd on the local cloud (issue 11): under the pool's own ``condor_master``
(``DAEMON_LIST = $(DAEMON_LIST) ANNEXD``), restarted by the master after a SIGKILL, finishing a
create whose command died during its launch call; and ending nodes that never join the pool
within the join deadline plus one pass, with the reason in ``status`` and the console in
``logs``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.providers.aws.session import make_client

from tests.e2e.helpers import CLI, alive, cli, wait

pytestmark = pytest.mark.e2e




def _daemon_status() -> dict:
    p = cli("daemon", "status", "--json", check=False)
    return json.loads(p.stdout)




def _gateway(ctx, path: str, payload=None, method: str = "POST") -> dict:
    """The local cloud gateway's control endpoint (rules: hold, release)."""
    from condor_annex.providers.local.gateway import CONTROL_PREFIX
    req = urllib.request.Request(ctx.aws.endpoint_url.rstrip("/") + CONTROL_PREFIX + path,
                                 data=json.dumps(payload).encode() if payload is not None
                                 else None, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def _condor_status_any() -> str:
    """``condor_status -any -af MyType Name`` as the pool's own tool prints it."""
    from condor_annex.providers.local import netns
    from condor_annex.providers.local.layout import CM_DIR, ROOT
    return subprocess.run(
        ["ip", "netns", "exec", netns.prefix() + "cm", "chroot", str(ROOT), "env",
         f"CONDOR_CONFIG={CM_DIR}/etc/condor_config", "condor_status", "-any", "-af",
         "MyType", "Name"], capture_output=True, text=True).stdout




@pytest.fixture
def annexd_knobs(local_cloud, tmp_path):
    """Fast passes (2 s), the daemon's log in the test's directory."""
    config.write_block("annexd-e2e", {"ANNEXD_INTERVAL": "2",
                                      "ANNEXD_LOG": str(tmp_path / "annexd.log")})
    yield tmp_path / "annexd.log"
    config.write_block("annexd-e2e", {})


def test_annexd_under_the_pools_master_is_restarted_after_sigkill_and_finishes_a_create(
        local_cloud, annexd_knobs):
    ctx = local_cloud
    ec2 = make_client(ctx.aws, "ec2")
    cli("setup")
    assert main(["local", "annexd", "on"]) == 0
    try:
        first = wait("the master to start condor_annexd",
                      lambda: (s := _daemon_status())["running"] and s["report"] and s, 90)
        pid = first["pid"]
        # HTCondor's own view: the daemon's generic ad in the collector (condor_status -any).
        def daemon_ads() -> str:
            return "\n".join(line for line in _condor_status_any().splitlines()
                             if line.startswith("AnnexDaemon annexd@"))
        assert wait("annexd's ad", daemon_ads, 60, 2)
        # An annex of one node; then a create adding one more whose command dies during its
        # launch call: the gateway holds its RunInstances; the command and annexd are killed;
        # the call then reaches the cloud.  (Adding: the annex's instance profile is old
        # enough for EC2, so the one RunInstances sent is the one that launches.)
        cli("create", "crashed", "--count", "1", "--duration", "20m", "--idle", "10m",
            "--no-owner")
        held = _gateway(ctx, "rules", {"rule": "hold", "operation": "ec2.RunInstances",
                                       "times": 1})["ids"][0]
        time.sleep(6)   # the local cloud's instance-profile propagation delay (5 s) is over
        create = subprocess.Popen([CLI, "create", "crashed", "--count", "1", "--no-owner"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait("the launch to be held", lambda: any(
            r.get("id") == held and r.get("held", 0) for r in
            _gateway(ctx, "rules", method="GET")["rules"]), 120, 0.2)
        os.kill(pid, signal.SIGKILL)
        create.kill()
        create.wait(timeout=30)
        _gateway(ctx, "release", {"id": held})
        # The master restarts annexd (a new pid) and its passes finish the create.
        wait("the master to restart condor_annexd", lambda: (s := _daemon_status())[
            "running"] and s["pid"] not in (None, pid) and s, 120)
        wait("the annex to be whole", lambda: len(alive(ec2, "crashed")) == 2, 120)
        from condor_annex.state.store import Store, default_path
        wait("both launch requests to be recorded launched", lambda: [
            r.state for r in Store(default_path({})).launch_requests("crashed")] == [
            "launched", "launched"], 60)
        wait("both nodes to join", lambda: json.loads(cli("status", "crashed", "--json")
                                                      .stdout)[0]["joined"] == 2, 180, 2)
    finally:
        assert main(["local", "annexd", "off"]) == 0
        cli("off", "crashed", "--grace", "0", check=False)
    wait("the master to stop condor_annexd", lambda: not _daemon_status()["running"], 60)


def test_annexd_ends_a_node_that_never_joins_and_status_says_why(local_cloud, annexd_knobs):
    ctx = local_cloud
    ec2 = make_client(ctx.aws, "ec2")
    cli("setup")
    daemon = subprocess.Popen([str(Path(sys.executable).with_name("condor_annexd"))],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait("condor_annexd", lambda: _daemon_status()["running"], 60)
        assert main(["local", "inject", "no-join", "1"]) == 0
        t0 = time.monotonic()
        cli("create", "nojoin", "--count", "1", "--join-deadline", "1m", "--duration", "20m",
            "--idle", "10m", "--no-owner")
        (iid,) = wait("the instance", lambda: alive(ec2, "nojoin"), 60)
        wait("annexd to end the node", lambda: not alive(ec2, "nojoin"), 60 + 60, 1)
        ended_s = time.monotonic() - t0
        # Within the deadline (60 s from launch) plus one pass (2 s) plus the terminate.
        assert ended_s < 60 + 2 + 20, ended_s
        out = cli("status", "nojoin").stdout
        assert f"{iid}: never joined" in out and f"condor_annex logs nojoin {iid}" in out, out
        logs = cli("logs", "nojoin", iid).stdout
        assert "Cloud-init v. " in logs and "condor_master" in logs, logs[-2000:]
        print(f"\n[annexd] never-joined node ended {ended_s:.0f} s after create "
              "(deadline 60 s, passes every 2 s)")
    finally:
        main(["local", "inject", "none"])
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=60)
        cli("off", "nojoin", "--grace", "0", check=False)
