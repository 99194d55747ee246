"""The agent's collector check inside a whole boot (test_agent_bootstrap.py's ``cloud``: our
IMDS on 127.0.0.1, the moto server as AWS, condor_master and power-off doubles): a node that
cannot reach its collector says so on the console and uploads its log while the master runs on;
one that can says so in one line; the check never holds up the master or the power-off."""

from __future__ import annotations

import logging
import time

import pytest

import test_agent_bootstrap as boot
from condor_annex.agent import arguments, bootstrap
from condor_annex.agent.diagnosis import COLLECTOR_UNREACHABLE, collector_unreachable
from test_agent_bootstrap import ANNEX, BUCKET, TOKEN_SECRET, make_bundle, write_script
from test_agent_collector_check import blackhole, closed_port, listening  # noqa: F401 (fixtures)

#: The fixture of test_agent_bootstrap.py: a launched instance, its IMDS, bucket and doubles.
cloud = boot.cloud


def _bundle(cloud, collector: str) -> None:
    cloud.put_bundle(ANNEX, make_bundle({
        "config.d/50-annex.config": f'AnnexName = "{ANNEX}"\nCOLLECTOR_HOST = {collector}\n'
                                    .encode(),
        "tokens.d/annex.token": TOKEN_SECRET.encode() + b"\n"}))


def _master_running(cloud, seconds: float) -> None:
    """A condor_master double that runs ``seconds`` and exits 0, as an idle master would."""
    write_script(cloud.root / "fake_condor_master", f"""\
echo "master started" >> "{cloud.events}"
sleep {seconds}
echo "master done" >> "{cloud.events}"
""")


def _agent_log(cloud) -> str | None:
    key = f"logs/{ANNEX}/{cloud.instance_id}/agent.log"
    try:
        return cloud.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    except cloud.s3.exceptions.NoSuchKey:
        return None


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("condor_annex.agent")]


def test_unreachable_collector_is_said_and_the_log_uploaded_while_the_master_runs_on(
        cloud, caplog):
    caplog.set_level(logging.INFO, logger="condor_annex")
    port = closed_port()
    _bundle(cloud, f"127.0.0.1:{port}?sock=collector")
    _master_running(cloud, 3)

    assert bootstrap.main(cloud.argv("--collector-check-s", "0.5")) == 0

    # The master was neither stopped nor held up: it ran to its end, then the power-off.
    assert cloud.event_lines() == ["master started", "master done", "poweroff "]
    messages = _messages(caplog)
    [verdict] = [m for m in messages if COLLECTOR_UNREACHABLE in m]
    assert verdict.startswith(f"collector 127.0.0.1:{port} unreachable from this instance for ")
    assert verdict.endswith("this node will not join the pool")
    # Said after the master started, before it exited; the log went up once, right after.
    order = [i for i, m in enumerate(messages)
             if "starting" in m and "condor_master" in m and "-f" in m] \
        + [messages.index(verdict)] \
        + [i for i, m in enumerate(messages) if m.startswith("uploaded this log")] \
        + [i for i, m in enumerate(messages) if "condor_master exited" in m]
    assert len(order) == 4 and order == sorted(order), messages
    uploaded = _agent_log(cloud)
    assert uploaded is not None and collector_unreachable(uploaded) == \
        verdict[:verdict.index("): ") + 1]
    assert TOKEN_SECRET not in uploaded


def test_reachable_collector_one_line_and_no_upload(cloud, caplog, listening):  # noqa: F811
    caplog.set_level(logging.INFO, logger="condor_annex")
    _bundle(cloud, f"<127.0.0.1:{listening}?sock=collector>")
    _master_running(cloud, 1)

    assert bootstrap.main(cloud.argv()) == 0

    assert cloud.event_lines() == ["master started", "master done", "poweroff "]
    lines = [m for m in _messages(caplog) if m.startswith("collector ")]
    assert lines == [f"collector 127.0.0.1:{listening} reachable from this instance"]
    assert _agent_log(cloud) is None


def test_check_never_holds_up_the_power_off(cloud, caplog, blackhole):  # noqa: F811
    """A collector whose packets are dropped, the default 120 s window, a master that exits at
    once: the agent powers off at once, and the stopped check says nothing."""
    caplog.set_level(logging.INFO, logger="condor_annex")
    _bundle(cloud, f"127.0.0.1:{blackhole}")
    _master_running(cloud, 0)

    started = time.monotonic()
    assert bootstrap.main(cloud.argv()) == 0

    assert time.monotonic() - started < 15      # not the check's 120 s (nor one 5 s connect)
    assert cloud.event_lines() == ["master started", "master done", "poweroff "]
    time.sleep(0.5)
    assert not [m for m in _messages(caplog) if m.startswith("collector ")]
    assert _agent_log(cloud) is None


def test_no_check_with_collector_check_s_0(cloud, caplog, listening):  # noqa: F811
    caplog.set_level(logging.INFO, logger="condor_annex")
    _bundle(cloud, f"127.0.0.1:{listening}")
    _master_running(cloud, 0.5)

    assert bootstrap.main(cloud.argv("--collector-check-s", "0")) == 0

    assert not [m for m in _messages(caplog) if m.startswith("collector ")]


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_bad_collector_check_flag_is_one_error_line(value, capsys):
    with pytest.raises(SystemExit) as exc:
        arguments.parse(["--collector-check-s", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--collector-check-s: must be 0 (no check) or a positive number of seconds" in err


def test_collector_check_flag_default_and_zero():
    assert arguments.parse([]).args.collector_check_s == 120
    assert arguments.parse(["--collector-check-s", "0"]).args.collector_check_s == 0
