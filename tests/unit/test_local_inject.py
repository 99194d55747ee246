"""``condor_annex local inject`` and ``local status --json`` through the command line, with a
local cloud's state dir in a temporary directory (the daemon is this test process)."""

from __future__ import annotations

import json
import os

import pytest

from condor_annex.cli.main import main
from condor_annex.providers.local import cloud
from condor_annex.providers.local.inject import FILE_NAME, Injections


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cloud, "STATE_DIR", tmp_path / "local")
    return tmp_path / "local"


@pytest.fixture
def running(state_dir):
    """A state file naming a live daemon (this process)."""
    st = cloud.LocalCloudState(pid=os.getpid(), endpoint_url="http://127.0.0.1:4999",
                               collector="127.0.0.1:9618", annex_collector="10.200.0.2:9618",
                               root="/nonexistent", image_id="ami-1", token_command="true",
                               started_at=0.0)
    st.save()
    return st


def _status(capsys) -> dict:
    assert main(["local", "status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_inject_then_status_json(running, state_dir, capsys):
    assert _status(capsys)["injected"] == []
    assert main(["local", "inject", "lambda-error", "3"]) == 0
    assert "lambda-error 3" in capsys.readouterr().out
    assert main(["local", "inject", "schedule-early"]) == 0
    capsys.readouterr()
    st = _status(capsys)
    assert st["endpoint"] == "http://127.0.0.1:4999" and st["collector"] == "127.0.0.1:9618"
    assert st["injected"] == ["lambda-error 3", "schedule-early"]

    # The daemon uses them up, one per failed attempt; status shows what is left.
    daemon = Injections(state_dir / FILE_NAME)
    assert [daemon.take_lambda_error() for _ in range(4)] == [True, True, True, False]
    assert _status(capsys)["injected"] == ["schedule-early"]

    assert main(["local", "status"]) == 0
    assert "Injected faults: schedule-early" in capsys.readouterr().out
    assert main(["local", "inject", "none"]) == 0
    capsys.readouterr()
    assert _status(capsys)["injected"] == []


@pytest.mark.parametrize("words", [
    ["lambda-error", "0"], ["lambda-error", "-1"], ["lambda-error", "x"], ["lambda-error", "1_0"],
    ["lambda-error", "2.5"], ["lambda-error", "+3"], ["lambda-error", "10001"], ["lambda-error"],
    ["lambda-error", "1", "2"], ["schedule-early", "5"], ["none", "now"], ["slow-disk"], [],
    ["lambda-error", "٣"],
])
def test_bad_inject_input_is_one_line_exit_2_and_changes_nothing(running, state_dir, capsys,
                                                                  words):
    assert main(["local", "inject", "lambda-error", "2"]) == 0
    capsys.readouterr()
    assert main(["local", "inject", *words]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "local inject" in err and "Traceback" not in err
    assert _status(capsys)["injected"] == ["lambda-error 2"]


def test_inject_without_a_local_cloud_is_refused(state_dir, capsys):
    assert main(["local", "inject", "schedule-early"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not running" in err and "local up" in err
    assert not (state_dir / FILE_NAME).exists()
    assert main(["local", "status", "--json"]) == 1
    assert json.loads(capsys.readouterr().out) == {"up": False}


@pytest.mark.parametrize("value", ["0.5", "0", "-3", "fast", "inf", "nan"])
def test_a_bad_time_scale_is_refused_before_the_local_cloud_starts(state_dir, capsys,
                                                                   monkeypatch, value):
    monkeypatch.setenv("CONDOR_ANNEX_TIME_SCALE", value)
    assert main(["local", "up"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CONDOR_ANNEX_TIME_SCALE" in err and ">= 1" in err
    assert not state_dir.exists()


def test_backstop_off_is_an_injection_of_its_own(tmp_path):
    from condor_annex.providers.local.inject import Injections, parse
    inj = Injections(tmp_path / "inject.json")
    assert parse(["backstop-off"]) == ("backstop-off", 0)
    inj.apply(*parse(["backstop-off"]))
    inj.apply(*parse(["lambda-error", "2"]))
    assert inj.backstop_off() and inj.describe() == ["lambda-error 2", "backstop-off"]
    inj.apply("none")
    assert not inj.backstop_off() and inj.describe() == []
