"""A whole boot that EC2 interrupts: our IMDSv2 server and moto (test_agent_bootstrap.py's
``cloud`` fixture), a condor_master double that runs until SIGTERM, and doubles of HTCondor's
tools on PATH that record their arguments. The notice appears in instance metadata while the
master runs; the node must drain, stop the master, leave its end to EC2 until EC2's time, and
power off, in that order."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from condor_annex.agent import arguments, bootstrap, ec2_end
from condor_annex.agent import node_drain
from condor_annex.agent.node_drain import INTERRUPTION_CONFIG
import test_agent_bootstrap as boot

#: The fixture of test_agent_bootstrap.py: a launched instance, its IMDS, bucket and doubles.
cloud = boot.cloud


def _tools_on_path(cloud, monkeypatch) -> None:
    """condor_reconfig, condor_vacate and condor_off doubles: each appends its name and
    arguments to the events file and succeeds."""
    bin_dir = cloud.root / "bin"
    bin_dir.mkdir()
    for tool in ("condor_reconfig", "condor_vacate", "condor_off"):
        boot.write_script(bin_dir / tool, f'echo "{tool} $*" >> "{cloud.events}"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_interruption_notice_drains_then_stops_the_master_then_powers_off(cloud, monkeypatch,
                                                                         caplog):
    if not hasattr(cloud.metadata, "spot_instance_action"):
        pytest.skip("the local IMDS does not serve spot/instance-action yet")
    caplog.set_level(logging.INFO, logger="condor_annex")
    boot._master_until_sigterm(cloud)
    _tools_on_path(cloud, monkeypatch)
    # The node leaves 3 s before EC2's time (45 s on EC2), so the test waits for EC2's time
    # in seconds; EC2 acts 3 + 7 s after the notice: the vacate window is about 2 s.
    monkeypatch.setattr(node_drain, "LEAVE_BEFORE_S", 3.0)
    at = int(time.time()) + 3 + 7

    def notice_once_master_runs() -> None:
        for _ in range(200):
            if "master started" in cloud.event_lines():
                time.sleep(0.5)     # a few 404 polls first
                cloud.metadata.spot_instance_action = json.dumps(
                    {"action": "terminate",
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))})
                return
            time.sleep(0.05)

    # EC2 never acts here (no termination in this test): the agent powers off by itself
    # ACT_GRACE_S after EC2's time; shortened so the test does not wait a minute.
    monkeypatch.setattr(ec2_end, "ACT_GRACE_S", 0.5)
    notifier = threading.Thread(target=notice_once_master_runs, daemon=True)
    notifier.start()
    started = time.monotonic()
    assert bootstrap.main(cloud.argv("--interruption-poll-s", "0.2")) == 0
    powered_off_at = time.time()
    notifier.join(timeout=5)

    assert cloud.event_lines() == [
        "master started",
        "condor_reconfig -daemon startd",
        "condor_vacate -graceful",
        "condor_off -fast -daemon startd",
        "master got TERM",
        "poweroff ",
    ]
    assert time.monotonic() - started < 15            # not the master double's 20 s run
    # The end is left to EC2 (its StateReason then records the interruption): no power-off
    # before EC2's time.
    assert powered_off_at >= at + 0.5
    config = (cloud.config_dir / INTERRUPTION_CONFIG).read_text().splitlines()
    assert f"AnnexInterruptionTime = {at}" in config and "START = False" in config
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("EC2 spot interruption notice: terminate at ") for m in messages)
    assert any("powering off (spot interruption (terminate at" in m for m in messages)
    assert any(m.startswith("spot interruption: leaving the instance's end to EC2") for m in messages)


def test_an_on_demand_node_never_drains(cloud, monkeypatch):
    """Without a notice (404, as on every on-demand instance) the watch runs nothing."""
    boot._master_until_sigterm(cloud)
    _tools_on_path(cloud, monkeypatch)

    def off_once_polled() -> None:
        for _ in range(200):
            if cloud.imds.count("GET", "/latest/meta-data/spot/instance-action", 404) >= 3:
                cloud.metadata.tags["htcondor:AnnexOff"] = "now"
                return
            time.sleep(0.05)

    tagger = threading.Thread(target=off_once_polled, daemon=True)
    tagger.start()
    assert bootstrap.main(cloud.argv("--interruption-poll-s", "0.1", "--off-poll-s", "0.2")) == 0
    tagger.join(timeout=5)

    assert cloud.imds.count("GET", "/latest/meta-data/spot/instance-action", 404) >= 3
    assert cloud.event_lines() == ["master started", "master got TERM", "poweroff "]
    assert not (cloud.config_dir / INTERRUPTION_CONFIG).exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "five"])
def test_bad_interruption_poll_is_one_error_line_exit_2(value, capsys):
    with pytest.raises(SystemExit) as exc:
        arguments.parse(["--interruption-poll-s", value])
    assert exc.value.code == 2
    [line] = [ln for ln in capsys.readouterr().err.splitlines() if "error:" in ln]
    assert "--interruption-poll-s" in line


def test_interruption_poll_defaults_to_aws_five_seconds_and_zero_turns_it_off():
    assert arguments.parse([]).args.interruption_poll_s == 5.0
    assert arguments.parse(["--interruption-poll-s", "0"]).args.interruption_poll_s == 0.0
