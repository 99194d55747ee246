"""The interruption drain in the shipped agent zipapp on the oldest Python we support (Debian
bookworm's /usr/bin/python3 3.11 with its python3-boto3), as the agent's unit runs it: the same
whole boot as test_agent_interruption_boot.py (our IMDS, moto, HTCondor tool doubles on PATH)."""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from condor_annex.agent.node_drain import LEAVE_BEFORE_S
from condor_annex.providers.aws.agent_package import build_agent_zipapp
import test_agent_bootstrap as boot
import test_agent_oldest_python as oldest
from test_agent_interruption_boot import _tools_on_path

cloud = boot.cloud


def test_zipapp_on_the_system_python_drains_on_an_interruption_notice(cloud, tmp_path,
                                                                      monkeypatch):
    if not hasattr(cloud.metadata, "spot_instance_action"):
        pytest.skip("the local IMDS does not serve spot/instance-action yet")
    oldest.probe_system_python()
    pyz = tmp_path / "condor-annex-agent.pyz"
    pyz.write_bytes(build_agent_zipapp())
    cloud.put_bundle(boot.ANNEX, boot.make_bundle(boot.GOOD_BUNDLE_FILES))
    boot._master_until_sigterm(cloud)
    _tools_on_path(cloud, monkeypatch)
    at = int(time.time()) + int(LEAVE_BEFORE_S) + 8

    def notice_once_master_runs() -> None:
        for _ in range(400):
            if "master started" in cloud.event_lines():
                cloud.metadata.spot_instance_action = json.dumps(
                    {"action": "terminate",
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))})
                return
            time.sleep(0.05)

    notifier = threading.Thread(target=notice_once_master_runs, daemon=True)
    notifier.start()
    done = subprocess.run([oldest.SYSTEM_PYTHON, str(pyz),
                           *cloud.argv("--interruption-poll-s", "0.2")],
                          capture_output=True, text=True, timeout=120, env=oldest.system_env())
    notifier.join(timeout=5)

    assert done.returncode == 0, done.stderr
    assert cloud.event_lines() == [
        "master started",
        "condor_reconfig -daemon startd",
        "condor_vacate -graceful",
        "condor_off -fast -daemon startd",
        "master got TERM",
        "poweroff ",
    ], done.stderr
    assert " WARNING EC2 spot interruption notice: terminate at " in done.stderr
