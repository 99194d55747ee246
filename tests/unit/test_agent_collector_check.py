"""The agent's collector check: the address it reads from the installed configuration, and what
it says when the collector answers, refuses or never answers (real sockets on 127.0.0.1)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path

import pytest

from condor_annex.agent.collector_address import (UnknownAddress, collector_addresses,
                                                  parse_address)
from condor_annex.agent.collector_check import CollectorCheck, collector_check, try_connect
from condor_annex.agent.diagnosis import COLLECTOR_UNREACHABLE, collector_unreachable
from condor_annex.pool.configs import annex_config


@pytest.fixture
def listening():
    """A TCP port on 127.0.0.1 that accepts connections (a collector that answers)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                srv.accept()[0].close()
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    srv.close()


def closed_port() -> int:
    """A port on 127.0.0.1 nobody listens on (a connect is refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def blackhole():
    """A port on 127.0.0.1 whose SYNs are dropped, as a security group without the collector's
    port drops them: a listening socket that never accepts, its backlog filled first."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(0)
    port = srv.getsockname()[1]
    held = []
    for _ in range(8):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), timeout=0.3))
        except TimeoutError:
            break
    else:
        pytest.fail("could not fill the listening socket's backlog")
    yield port
    for c in held:
        c.close()
    srv.close()


# --- the address ---------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("10.200.0.2", ("10.200.0.2", 9618)),
    ("cm.example.org:9619", ("cm.example.org", 9619)),
    ("cm.example.org:9618?sock=collector", ("cm.example.org", 9618)),
    ("<10.0.0.5:9620?addrs=10.0.0.5-9620&sock=collector>", ("10.0.0.5", 9620)),
    ("[fd00::2]:9621", ("fd00::2", 9621)),
    ("<[fd00::2]:9618?sock=collector>", ("fd00::2", 9618)),
    ("fd00::2", ("fd00::2", 9618)),
])
def test_addresses_as_htcondor_writes_them(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", [":9618", "cm:0", "cm:70000", "cm:http", "<>", "[fd00::2]x"])
def test_a_bad_address_is_unknown_not_a_crash(text):
    with pytest.raises(UnknownAddress):
        parse_address(text)


def _config_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    cfg = tmp_path / "condor"
    (cfg / "config.d").mkdir(parents=True)
    (cfg / "condor_config").write_text("LOCAL_CONFIG_DIR = $(ETC)/config.d\n")
    for name, text in files.items():
        (cfg / name).write_text(text)
    return cfg


@pytest.mark.parametrize("collector,expected", [
    ("10.200.0.2", ("10.200.0.2", 9618)),
    ("cm.example.org:9619", ("cm.example.org", 9619)),
    ("<10.0.0.5:9618?sock=collector>", ("10.0.0.5", 9618)),
])
def test_reads_the_collector_the_annex_bundle_writes(tmp_path, collector, expected):
    text = annex_config(annex_name="a1", collector=collector, trust_domain="pool.test",
                        idle_seconds=900)
    cfg = _config_dir(tmp_path, {"config.d/50-annex.config": text})
    assert collector_addresses(cfg) == [expected]


def test_config_order_macros_lists_and_excluded_files(tmp_path):
    cfg = _config_dir(tmp_path, {
        "config.d/10-site.config": "COLLECTOR_HOST = old.example.org\n",
        "config.d/50-annex.config": "# comment = no\nCONDOR_HOST = cm.example.org\n"
                                    "collector_host = $(CONDOR_HOST):9620, \\\n"
                                    "  $(BACKUP:cm2.example.org)\n",
        "config.d/50-annex.config~": "COLLECTOR_HOST = editor-backup.example.org\n",
        "config.d/.hidden": "COLLECTOR_HOST = hidden.example.org\n",
    })
    assert collector_addresses(cfg) == [("cm.example.org", 9620), ("cm2.example.org", 9618)]


def test_collector_host_defaults_to_condor_host(tmp_path):
    cfg = _config_dir(tmp_path, {"config.d/50-site.config": "CONDOR_HOST = cm.example.org\n"})
    assert collector_addresses(cfg) == [("cm.example.org", 9618)]


@pytest.mark.parametrize("text,words", [
    ("DAEMON_LIST = MASTER STARTD\n", "no COLLECTOR_HOST"),
    ("COLLECTOR_HOST = $ENV(CM)\n", "cannot evaluate"),
    ("COLLECTOR_HOST = $(A)\nA = $(COLLECTOR_HOST)\n", "nest too deep"),
])
def test_no_readable_collector_is_unknown(tmp_path, text, words, caplog):
    cfg = _config_dir(tmp_path, {"config.d/50-site.config": text})
    with pytest.raises(UnknownAddress, match=words):
        collector_addresses(cfg)
    # The agent then starts the master without a check, and says so.
    caplog.set_level(logging.INFO, logger="condor_annex")
    assert collector_check(cfg) is None
    assert any("not checking that the collector can be reached" in r.getMessage()
               for r in caplog.records)


# --- one connect ---------------------------------------------------------------------------

def test_try_connect_reached_refused_timed_out(listening, blackhole):
    assert try_connect("127.0.0.1", listening, 2.0) is None
    assert try_connect("127.0.0.1", closed_port(), 2.0) == "refused"
    started = time.monotonic()
    assert try_connect("127.0.0.1", blackhole, 0.3) == "timed out"
    assert time.monotonic() - started < 2.0     # bounded by the timeout


def test_try_connect_unresolvable_name():
    assert try_connect("no-such-host.invalid", 9618, 2.0) == "name not resolved"


# --- the check -----------------------------------------------------------------------------

def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("condor_annex.agent")]


def test_reachable_collector_one_short_line_and_no_upload(listening, caplog):
    caplog.set_level(logging.DEBUG, logger="condor_annex")
    uploads = []
    check = CollectorCheck([("127.0.0.1", listening)], window_s=5, interval_s=1,
                           on_unreachable=lambda: uploads.append(1))

    assert check.run() is True

    assert check.outcome is True and uploads == []
    assert _messages(caplog) == [f"collector 127.0.0.1:{listening} reachable from this instance"]


def test_refused_for_the_whole_window_says_so_once_and_uploads_once(caplog):
    caplog.set_level(logging.INFO, logger="condor_annex")
    port = closed_port()
    uploads, attempts = [], []

    def connect(host, p, timeout_s):
        attempts.append(time.monotonic())
        return try_connect(host, p, timeout_s)

    check = CollectorCheck([("127.0.0.1", port)], window_s=0.6, interval_s=0.2, timeout_s=1,
                           on_unreachable=lambda: uploads.append(1), connect=connect)
    assert check.run() is False

    assert check.outcome is False and uploads == [1]
    assert 3 <= len(attempts) <= 5              # retried, not one attempt
    assert attempts[-1] - attempts[0] >= 0.6    # across the whole window
    [line] = [m for m in _messages(caplog) if COLLECTOR_UNREACHABLE in m]
    assert line.startswith(f"collector 127.0.0.1:{port} unreachable from this instance for ")
    assert "(refused): check that the collector runs at that address" in line
    assert line.endswith("this node will not join the pool")
    assert collector_unreachable("boot...\n2026-01-01T00:00:00.000Z condor-annex-agent ERROR "
                                 + line + "\nmore\n") == \
        line[:line.index("): ") + 1]
    assert line[:line.index("): ") + 1].endswith(" s (refused)")


def test_dropped_packets_time_out_and_name_the_firewall(blackhole, caplog):
    caplog.set_level(logging.INFO, logger="condor_annex")
    check = CollectorCheck([("127.0.0.1", blackhole)], window_s=0.4, interval_s=0.2,
                           timeout_s=0.2)
    assert check.run() is False
    [line] = [m for m in _messages(caplog) if COLLECTOR_UNREACHABLE in m]
    assert f"collector 127.0.0.1:{blackhole} unreachable from this instance for " in line
    assert "(timed out): check that the pool's firewall / security group (or network ACL) " \
           f"admits this instance (TCP port {blackhole} to the collector)" in line


def test_a_collector_that_answers_late_is_not_unreachable(caplog):
    """A pool slow to come up: the first attempts are refused, a later one connects."""
    caplog.set_level(logging.INFO, logger="condor_annex")
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    attempts = []

    def connect(host, p, timeout_s):
        attempts.append(1)
        if len(attempts) == 3:
            srv.listen(1)   # the collector starts now
        return try_connect(host, p, timeout_s)

    try:
        check = CollectorCheck([("127.0.0.1", port)], window_s=5, interval_s=0.1,
                               timeout_s=1, on_unreachable=lambda: pytest.fail("uploaded"),
                               connect=connect)
        assert check.run() is True
    finally:
        srv.close()
    assert len(attempts) == 3
    [line] = _messages(caplog)
    assert line.startswith(f"collector 127.0.0.1:{port} reachable from this instance after ")
    assert line.endswith("(earlier: refused)")


def test_any_of_several_collectors_is_enough(listening, caplog):
    caplog.set_level(logging.INFO, logger="condor_annex")
    check = CollectorCheck([("127.0.0.1", closed_port()), ("127.0.0.1", listening)],
                           window_s=1, interval_s=0.5)
    assert check.run() is True
    assert f"collector 127.0.0.1:{listening} reachable" in _messages(caplog)[0]


def test_several_collectors_unreachable_each_with_its_reason(blackhole, caplog):
    caplog.set_level(logging.INFO, logger="condor_annex")
    refused = closed_port()
    check = CollectorCheck([("127.0.0.1", refused), ("127.0.0.1", blackhole)],
                           window_s=0.2, interval_s=0.2, timeout_s=0.2)
    assert check.run() is False
    [line] = [m for m in _messages(caplog) if COLLECTOR_UNREACHABLE in m]
    assert line.startswith(f"collector 127.0.0.1:{refused}, 127.0.0.1:{blackhole} unreachable")
    assert f"(127.0.0.1:{refused} refused; 127.0.0.1:{blackhole} timed out)" in line
    assert collector_unreachable(line) is not None


def test_stopped_check_says_nothing_and_returns_promptly(blackhole, caplog):
    caplog.set_level(logging.DEBUG, logger="condor_annex")
    uploads = []
    check = CollectorCheck([("127.0.0.1", blackhole)], window_s=60, interval_s=10,
                           timeout_s=0.3, on_unreachable=lambda: uploads.append(1)).start()
    time.sleep(0.5)     # one attempt timed out; now waiting for the next
    started = time.monotonic()
    check.stop()
    check.join(5)
    assert time.monotonic() - started < 1.0
    assert check.outcome is None and uploads == []
    assert _messages(caplog) == []


def test_a_failing_upload_is_logged_not_raised(caplog):
    caplog.set_level(logging.INFO, logger="condor_annex")

    def upload():
        raise RuntimeError("S3 down")

    check = CollectorCheck([("127.0.0.1", closed_port())], window_s=0, interval_s=0.1,
                           on_unreachable=upload)
    assert check.run() is False
    assert "after the collector check: RuntimeError: S3 down" in _messages(caplog)[-1]


def test_no_check_when_turned_off(tmp_path):
    cfg = _config_dir(tmp_path, {"config.d/50-annex.config": "COLLECTOR_HOST = cm:9618\n"})
    assert collector_check(cfg, window_s=0) is None
    check = collector_check(cfg, window_s=30)
    assert check is not None and check.addresses == [("cm", 9618)]
    assert (check.window_s, check.interval_s) == (30, 10)
