"""The agent's spot interruption handling: EC2's notices read through the agent's IMDSv2 client
from a small metadata stand-in over HTTP (404 first, then AWS's JSON), and the node's answer
seen as the HTCondor commands it runs, in order (the :data:`Runner` seam), the config file it
writes, and the order it gives the master."""

from __future__ import annotations

import functools
import json
import logging
import signal
import threading
import time
from calendar import timegm
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from condor_annex.agent.imds import ImdsClient
from condor_annex.agent.interruption_watch import InterruptionWatch
from condor_annex.agent.node_drain import (INTERRUPTION_CONFIG, LEAVE_BEFORE_S, VACATE_S,
                                           NodeDrain)
from condor_annex.agent.notices import (INSTANCE_ACTION_PATH, REBALANCE_PATH,
                                        InterruptionNotice, parse_instance_action,
                                        parse_rebalance)
from condor_annex.agent.watch import NodeWatch

TOKEN = "stand-in-token-0123456789"
#: AWS's examples ("Spot Instance interruption notices"; "EC2 instance rebalance
#: recommendations").
AWS_ACTION = '{"action": "terminate", "time": "2017-09-18T08:22:00Z"}'
AWS_REBALANCE = '{"noticeTime": "2020-10-27T08:22:00Z"}'


class MetadataStandIn:
    """IMDSv2 on 127.0.0.1: PUT /latest/api/token gives :data:`TOKEN`; a GET without it is 401;
    ``answers[path]`` (relative to /latest/) is served as 200, anything else is 404. Every GET
    path is recorded in ``gets``."""

    def __init__(self) -> None:
        self.answers: dict[str, str] = {}
        self.gets: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes = b"") -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_PUT(self) -> None:  # noqa: N802
                self._send(200, TOKEN.encode())

            def do_GET(self) -> None:  # noqa: N802
                if self.headers.get("X-aws-ec2-metadata-token") != TOKEN:
                    return self._send(401)
                path = self.path.removeprefix("/latest/")
                outer.gets.append(path)
                body = outer.answers.get(path)
                self._send(404) if body is None else self._send(200, body.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def metadata():
    standin = MetadataStandIn()
    yield standin
    standin.close()


class Node:
    """What the node did: the commands run (the Runner seam), signals to the master, waits."""

    def __init__(self, config_dir: Path, *, failing: tuple[str, ...] = (),
                 clock=time.time) -> None:
        self.config_dir = config_dir
        self.events: list[str] = []
        self.failing = failing
        self.drain = NodeDrain(config_dir, self.run, signal_master=self.signal, clock=clock,
                               wait=self.wait)

    def run(self, argv: list[str]) -> int:
        self.events.append(" ".join(argv))
        return 1 if argv[0] in self.failing else 0

    def signal(self, signum: int) -> bool:
        self.events.append(f"signal {signal.Signals(signum).name}")
        return True

    def wait(self, seconds: float) -> bool:
        self.events.append(f"wait {seconds:.0f}")
        return False

    def config(self) -> list[str]:
        path = self.config_dir / INTERRUPTION_CONFIG
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def config_dir(tmp_path) -> Path:
    (tmp_path / "config.d").mkdir()
    return tmp_path


def epoch(text: str) -> float:
    return float(timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))


# -- the notices -----------------------------------------------------------------------------

def test_aws_documented_notices_parse_to_their_action_and_time():
    notice = parse_instance_action(AWS_ACTION, seen_at=0)
    assert (notice.action, notice.at, notice.exact) == \
        ("terminate", epoch("2017-09-18T08:22:00Z"), True)
    assert parse_instance_action('{"action": "stop", "time": "2026-12-01T00:02:00.000Z"}',
                                 seen_at=0).at == epoch("2026-12-01T00:02:00Z")
    rebalance = parse_rebalance(AWS_REBALANCE, seen_at=0)
    assert (rebalance.at, rebalance.exact) == (epoch("2020-10-27T08:22:00Z"), True)


@pytest.mark.parametrize("body", ["", "not json", "[]", '{"action": "terminate"}',
                                  '{"action": "terminate", "time": "soon"}'])
def test_an_unreadable_interruption_notice_still_means_two_minutes(body):
    notice = parse_instance_action(body, seen_at=1000.0)
    assert notice.at == 1120.0 and not notice.exact


# -- the drain sequence ----------------------------------------------------------------------

def test_interruption_drain_runs_reconfig_vacate_then_off_in_that_order(config_dir):
    now = 1_800_000_000.0
    node = Node(config_dir, clock=lambda: now)

    node.drain.drain(InterruptionNotice("terminate", now + 115))

    assert node.events == ["condor_reconfig -daemon startd", "condor_vacate -graceful",
                           f"wait {VACATE_S:.0f}", "condor_off -fast -daemon startd"]
    config = node.config()
    assert "START = False" in config and "PREEMPT = True" in config
    assert "MAXJOBRETIREMENTTIME = 0" in config
    assert f"MachineMaxVacateTime = {VACATE_S:.0f}" in config
    assert "AnnexInterruption = True" in config
    assert f"AnnexInterruptionTime = {int(now + 115)}" in config
    assert "STARTD_ATTRS = $(STARTD_ATTRS) AnnexInterruption AnnexInterruptionTime" in config


def test_a_short_notice_shrinks_the_vacate_window_to_fit(config_dir):
    now = 1_800_000_000.0
    node = Node(config_dir, clock=lambda: now)

    node.drain.drain(InterruptionNotice("terminate", now + LEAVE_BEFORE_S + 15))

    assert "wait 10" in node.events
    assert "MachineMaxVacateTime = 10" in node.config()
    node.events.clear()
    node.drain.drain(InterruptionNotice("hibernate", now))   # hibernation begins at once
    assert "wait 0" in node.events and "MachineMaxVacateTime = 0" in node.config()


def test_a_refused_condor_reconfig_falls_back_to_sighup_to_the_master(config_dir, caplog):
    caplog.set_level(logging.INFO, logger="condor_annex.agent")
    now = 1_800_000_000.0
    node = Node(config_dir, failing=("condor_reconfig", "condor_vacate"), clock=lambda: now)

    node.drain.drain(InterruptionNotice("terminate", now + 120))

    assert node.events[:3] == ["condor_reconfig -daemon startd", "signal SIGHUP",
                               "condor_vacate -graceful"]
    assert node.events[-1] == "condor_off -fast -daemon startd"
    assert any("SIGHUP sent to condor_master" in r.getMessage() for r in caplog.records)
    assert any("the startd's PREEMPT vacates the jobs" in r.getMessage()
               for r in caplog.records)


def test_a_drain_cut_short_by_the_end_of_the_node_runs_nothing_more(config_dir):
    node = Node(config_dir)
    node.wait = lambda seconds: True   # type: ignore[method-assign]
    node.drain = NodeDrain(config_dir, node.run, wait=node.wait)

    node.drain.drain(InterruptionNotice("terminate", time.time() + 120))

    assert node.events == ["condor_reconfig -daemon startd", "condor_vacate -graceful"]


def test_rebalance_stops_new_claims_and_leaves_jobs_running(config_dir, caplog):
    caplog.set_level(logging.INFO, logger="condor_annex.agent")
    node = Node(config_dir)

    node.drain.stop_new_claims(parse_rebalance(AWS_REBALANCE, seen_at=0))

    assert node.events == ["condor_reconfig -daemon startd"]    # no vacate, no off
    assert [ln for ln in node.config() if not ln.startswith("#")] == ["START = False"]
    [line] = [r.getMessage() for r in caplog.records if "rebalance" in r.getMessage()]
    assert "takes no new jobs" in line and "2020-10-27T08:22:00Z" in line


# -- the watch against IMDS ------------------------------------------------------------------

def watch_of(metadata: MetadataStandIn, node: Node, **kw) -> InterruptionWatch:
    imds = ImdsClient(metadata.url, deadline_s=2, max_attempts=2)
    return InterruptionWatch(functools.partial(imds.get_text, optional=True), node.drain, **kw)


def test_watch_does_nothing_while_imds_says_404_then_acts_on_each_notice_once(metadata,
                                                                             config_dir):
    node = Node(config_dir)
    watch = watch_of(metadata, node)

    watch.poll_once()
    watch.poll_once()
    assert node.events == [] and watch.leave_reason() is None
    assert metadata.gets == [INSTANCE_ACTION_PATH, REBALANCE_PATH] * 2

    metadata.answers[REBALANCE_PATH] = AWS_REBALANCE
    watch.poll_once()
    watch.poll_once()
    assert node.events == ["condor_reconfig -daemon startd"]    # once, not per poll
    assert watch.leave_reason() is None
    assert metadata.gets[-1] == INSTANCE_ACTION_PATH            # rebalance no longer read

    soon = time.time() + 120
    metadata.answers[INSTANCE_ACTION_PATH] = json.dumps(
        {"action": "terminate", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(soon))})
    watch.poll_once()
    watch.poll_once()
    assert node.events[1:] == ["condor_reconfig -daemon startd", "condor_vacate -graceful",
                               node.events[3], "condor_off -fast -daemon startd"]
    assert node.events[3].startswith("wait ")
    reason = watch.leave_reason()
    assert reason is not None and "drained; leaving the pool" in reason
    assert "AnnexInterruption = True" in node.config()


def test_watch_thread_polls_until_the_notice_then_stops_polling(metadata, config_dir):
    node = Node(config_dir)
    watch = watch_of(metadata, node, poll_s=0.05)
    watch.start()
    try:
        time.sleep(0.3)
        assert node.events == [] and len(metadata.gets) >= 4     # several 404 polls
        metadata.answers[INSTANCE_ACTION_PATH] = '{"action": "terminate", "time": "bad"}'
        for _ in range(100):
            if watch.leave_reason() is not None:
                break
            time.sleep(0.05)
        assert watch.leave_reason() is not None
        polled = len(metadata.gets)
        time.sleep(0.2)
        assert len(metadata.gets) == polled                      # no more polling
    finally:
        watch.stop()
    assert node.events[-1] == "condor_off -fast -daemon startd"


def test_imds_down_is_looked_at_again_not_fatal(config_dir, caplog):
    caplog.set_level(logging.INFO, logger="condor_annex.agent")
    node = Node(config_dir)
    imds = ImdsClient("http://127.0.0.1:9", deadline_s=0.3, max_attempts=1)
    watch = InterruptionWatch(functools.partial(imds.get_text, optional=True), node.drain)

    watch.poll_once()
    watch.poll_once()

    assert node.events == [] and watch.leave_reason() is None
    assert sum("did not answer" in r.getMessage() for r in caplog.records) == 1


def test_the_node_leaves_at_leave_by_even_when_the_drain_hangs(config_dir):
    now = [1_800_000_000.0]
    hung = threading.Event()
    node = Node(config_dir, clock=lambda: now[0])
    node.drain = NodeDrain(config_dir, node.run, clock=lambda: now[0],
                           wait=lambda s: hung.wait(5))
    answers = {INSTANCE_ACTION_PATH: '{"action": "terminate", "time": "2027-01-15T08:00:20Z"}'}
    watch = InterruptionWatch(answers.get, node.drain, clock=lambda: now[0])
    at = epoch("2027-01-15T08:00:20Z")
    now[0] = at - 110
    poller = threading.Thread(target=watch.poll_once, daemon=True)
    poller.start()
    try:
        for _ in range(100):
            if "condor_vacate -graceful" in node.events:
                break
            time.sleep(0.01)
        assert watch.leave_reason() is None                      # the drain waits, in time
        now[0] = at - LEAVE_BEFORE_S
        reason = watch.leave_reason()
        assert reason is not None and "the drain is not over" in reason
    finally:
        hung.set()
        poller.join(5)


# -- the master's side -----------------------------------------------------------------------

def test_node_watch_gives_one_bounded_stop_order_when_told_to_leave():
    reason: list[str | None] = [None]
    watch = NodeWatch(off_requested=None, backstop=None, poll_s=0,
                      leave_reason=lambda: reason[0])

    assert watch.wait_s() == 1.0 and watch.check() is None
    reason[0] = "spot interruption: leaving"
    order = watch.check()
    assert order is not None and order.bounded and order.reason == "spot interruption: leaving"
    assert watch.reason == "spot interruption: leaving"
    assert watch.check() is None and watch.wait_s() is None


# -- HTCondor reads the file as meant -------------------------------------------------------

def _image_condor_config_val():
    """Run the local cloud image's condor_config_val (HTCondor's own config parser) through
    the image's dynamic loader, without entering it; skips without the image."""
    import subprocess

    from condor_annex.providers.local.layout import ROOT

    loader, tool = ROOT / "lib64/ld-linux-x86-64.so.2", ROOT / "usr/bin/condor_config_val"
    if not (loader.exists() and tool.exists()):
        pytest.skip(f"no HTCondor image at {ROOT} (make install builds it)")
    libs = ":".join(str(ROOT / d) for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu",
                                            "usr/lib"))

    def value(config: Path, name: str) -> str:
        done = subprocess.run([str(loader), "--library-path", libs, str(tool), "-subsystem",
                               "startd", name], capture_output=True, text=True, timeout=30,
                              env={"CONDOR_CONFIG": str(config)})
        return done.stdout.strip() if done.returncode == 0 else f"error: {done.stderr.strip()}"
    return value


def test_htcondor_reads_the_drain_config_as_the_startd_should(config_dir):
    """Regression: the vacate time was first written MACHINE_MAX_VACATE_TIME, a name HTCondor
    does not know (its knob is MachineMaxVacateTime): jobs would have had the default 10
    minutes, far past the notice."""
    value = _image_condor_config_val()
    config = config_dir / "condor_config"
    config.write_text(f"LOCAL_CONFIG_DIR = {config_dir}/config.d\nLOG = {config_dir}\n"
                      "START = TRUE\nSTARTD_ATTRS = IsAnnex\n")
    assert value(config, "MachineMaxVacateTime") == "10 * 60"     # HTCondor's default: a knob
    now = 1_800_000_000.0
    Node(config_dir, clock=lambda: now).drain.drain(InterruptionNotice("terminate", now + 120))

    assert value(config, "START") == "False"
    assert value(config, "PREEMPT") == "True"
    assert value(config, "MachineMaxVacateTime") == f"{VACATE_S:.0f}"
    assert value(config, "MAXJOBRETIREMENTTIME") == "0"
    assert value(config, "STARTD_ATTRS") == "IsAnnex AnnexInterruption AnnexInterruptionTime"
    assert value(config, "AnnexInterruptionTime") == f"{now + 120:.0f}"
