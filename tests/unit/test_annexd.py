"""condor_annexd's contract with the commands, without a cloud: one daemon per state file
(a lock SIGKILL releases), its knobs, ``daemon status`` and ``daemon unit``, and ``status``
answered from the store's last pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from condor_annex.cli.main import main
from condor_annex.daemon.main import interval_s
from condor_annex.errors import BadInputError
from condor_annex.state import daemon_lock
from condor_annex.state.store import Store, default_path


def test_a_second_daemon_on_one_state_file_refuses_to_start(user_config):
    path = default_path({})
    with daemon_lock.hold(path):
        assert daemon_lock.holder(path) == os.getpid()
        with pytest.raises(BadInputError, match=f"pid {os.getpid()}"):
            with daemon_lock.hold(path):
                pass
    assert daemon_lock.holder(path) is None


def test_sigkill_releases_the_daemon_lock(user_config, tmp_path):
    """condor_master restarts a killed annexd at once: the lock must not outlive it."""
    path = default_path({})
    code = ("import sys, time; from pathlib import Path; "
            "from condor_annex.state import daemon_lock as d; "
            f"c = d.hold(Path({str(path)!r})); c.__enter__(); print('held', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    assert daemon_lock.holder(path) == proc.pid
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert daemon_lock.holder(path) is None
    with daemon_lock.hold(path):
        pass


def test_condor_annexd_refuses_a_second_instance_with_exit_2(user_config, capsys):
    """... and leaves no log handler behind (regression: a handler bound to a closed stderr
    made every later warning print '--- Logging error ---')."""
    import logging

    from condor_annex.daemon.main import main as annexd
    before = list(logging.getLogger().handlers)
    with daemon_lock.hold(default_path({})):
        assert annexd(["--once"]) == 2
    assert logging.getLogger().handlers == before
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already serves the state file" in err


@pytest.mark.parametrize("value", ["0", "16", "ten", "-1"])
def test_a_bad_interval_names_the_knob(value):
    with pytest.raises(BadInputError, match="ANNEXD_INTERVAL"):
        interval_s({"ANNEXD_INTERVAL": value})


def test_the_interval_defaults_to_10_s_and_takes_up_to_15():
    assert interval_s({}) == 10 and interval_s({"ANNEXD_INTERVAL": "15"}) == 15


def test_daemon_status_says_when_none_runs(user_config, capsys):
    assert main(["daemon", "status", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["running"] is False and data["report"] is None


def test_daemon_status_shows_the_running_daemon_and_its_last_pass(user_config, capsys):
    path = default_path({})
    with Store(path) as store:
        store.put_daemon_report({"pid": os.getpid(), "passes": 7, "errors": 1,
                                 "last_error": "leases not read: throttled",
                                 "throttled_calls": 3, "orphans": [],
                                 "last_pass": {"annexes": 2, "instances": 5, "seconds": 0.4}})
    with daemon_lock.hold(path):
        assert main(["daemon", "status", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["running"] and data["pid"] == os.getpid()
        assert data["report"]["passes"] == 7 and data["report"]["throttled_calls"] == 3
        assert main(["daemon", "status"]) == 0
        out = capsys.readouterr().out
        assert "leases not read: throttled" in out and "2 / 5" in out


def test_daemon_unit_restarts_the_daemon_and_carries_no_secret(user_config, capsys,
                                                              monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-print")
    assert main(["daemon", "unit"]) == 0
    out = capsys.readouterr().out
    assert "ExecStart=" in out and "condor_annexd" in out and "Restart=always" in out
    assert "do-not-print" not in out and f"CONDOR_ANNEX_USER_CONFIG={user_config}" in out


def test_status_while_a_daemon_runs_is_its_last_pass_without_any_cloud_call(
        user_config, capsys, monkeypatch):
    """No endpoint, no credentials: a cloud call would fail; the store answers."""
    from condor_annex import config
    config.write_block("setup", {f"us_east_1.{k}": "x" for k in config.SETUP_KNOBS.values()}
                       | {"ANNEX_DEFAULT_AWS_REGION": "us-east-1"})
    path = default_path({})
    end = datetime.now(timezone.utc) + timedelta(hours=1)
    observed = {"name": "a1", "requested": 2, "running": 2, "joined": 1, "idle_slots": 1,
                "busy_slots": 0, "lease_expires_at": end.isoformat(),
                "states": {"running": 2}, "not_joined": ["i-2"],
                "lifecycle": {"joined": 1, "never-joined": 1},
                "instances": [{"id": "i-1", "lifecycle": "joined", "reason": "ad seen"},
                              {"id": "i-2", "lifecycle": "never-joined",
                               "reason": "never joined: no startd ad 600 s after launch; see "
                                         "condor_annex logs a1 i-2"}],
                "launch_stopped": ""}
    with Store(path) as store:
        store.put_observations({"a1": observed})
    monkeypatch.setattr("condor_annex.service.context.Context.provider",
                        lambda *a, **k: pytest.fail("status called the cloud"))
    with daemon_lock.hold(path):
        started = time.monotonic()
        assert main(["status", "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert time.monotonic() - started < 5
        assert (row["name"], row["running"], row["joined"]) == ("a1", 2, 1)
        assert row["lifecycle"] == {"joined": 1, "never-joined": 1} and row["as_of"]
        assert row["states"] == {"running": 2}   # EC2's names only, as before
        assert main(["status"]) == 0
        out = capsys.readouterr().out
        assert "i-2: never joined" in out and "condor_annex logs a1 i-2" in out
        assert "As of condor_annexd's last pass" in out
        assert main(["status", "nope"]) == 2


def test_status_of_an_annex_created_since_the_last_pass_runs_a_pass_not_an_error(
        user_config, capsys, monkeypatch):
    """Regression (autoscale e2e): ``status NAME`` right after ``create``, before annexd's
    next pass, said "annex 'auto' is not in annexd's last pass" and exited 2."""
    from condor_annex import config
    config.write_block("setup", {f"us_east_1.{k}": "x" for k in config.SETUP_KNOBS.values()}
                       | {"ANNEX_DEFAULT_AWS_REGION": "us-east-1"})
    path = default_path({})
    end = datetime.now(timezone.utc) + timedelta(hours=1)
    with Store(path) as store:
        store.put_annex("fresh", {}, requested=0, lease_end=end)
    passes = []

    def a_pass(ctx):   # what annexd's next pass would record
        passes.append(ctx)
        with Store(path) as store:
            store.put_observations({"fresh": {"name": "fresh", "requested": 0,
                                              "lease_expires_at": end.isoformat()}})
    monkeypatch.setattr("condor_annex.service.status.reconcile_once", a_pass)
    with daemon_lock.hold(path):
        assert main(["status", "fresh", "--json"]) == 0
        (row,) = json.loads(capsys.readouterr().out)
        assert row["name"] == "fresh" and len(passes) == 1
        assert main(["status", "fresh", "--json"]) == 0   # seen now: the store answers
        assert len(passes) == 1
        assert main(["status", "nope"]) == 2                # still unknown: no pass for it
        assert len(passes) == 1
