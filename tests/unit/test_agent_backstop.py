"""The instance-side backstop and the metadata firewall, through the agent's own ``main``.

Same set-up as test_agent_bootstrap.py (its ``cloud`` fixture: our IMDSv2 server on 127.0.0.1,
the moto server as AWS, test doubles for condor_master and the power-off command, all writing
to one events file); the bundle is the real one ``condor_annex create`` uploads
(condor_annex.pool.configs.annex_bundle), carrying ``AnnexLeaseEnd``.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from condor_annex.agent import bootstrap
from condor_annex.pool.configs import annex_bundle
import test_agent_bootstrap as boot
from test_agent_bootstrap import ANNEX, TOKEN_SECRET, write_script

#: The fixture of test_agent_bootstrap.py: a launched instance, its IMDS, bucket and doubles.
cloud = boot.cloud

TAG_LEASE_END = "htcondor:LeaseEnd"


def put_leased_bundle(node, lease_end: int) -> None:
    node.put_bundle(ANNEX, annex_bundle(annex_name=ANNEX, collector="10.200.0.2:9618",
                                         trust_domain="pool.test", idle_seconds=900,
                                         token=TOKEN_SECRET, lease_end=lease_end))


def master_until_signal(node, *, ignore_term: bool = False) -> None:
    """A condor_master double that runs (up to 30 s) until SIGTERM, recording the wall time it
    got it; with ``ignore_term`` it ignores SIGTERM and exits on SIGQUIT (fast shutdown)."""
    ev = node.events
    if ignore_term:
        traps = (f"trap 'echo \"master ignored TERM\" >> \"{ev}\"' TERM\n"
                 f"trap 'echo \"master got QUIT\" >> \"{ev}\"; exit 0' QUIT\n")
    else:
        traps = f"trap 'echo \"master got TERM at $(date +%s.%N)\" >> \"{ev}\"; exit 0' TERM\n"
    write_script(node.root / "fake_condor_master", f"""\
{traps}echo "master started" >> "{ev}"
for i in $(seq 1 300); do sleep 0.1; done
echo "master timed out" >> "{ev}"
""")


def once_master_runs(node, action) -> threading.Thread:
    """Run ``action()`` in a thread as soon as the master double has started."""
    def wait_then_act() -> None:
        for _ in range(400):
            if "master started" in node.event_lines():
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=wait_then_act, daemon=True)
    thread.start()
    return thread


def term_time(node) -> float:
    """The wall time at which the master double got SIGTERM."""
    [line] = [x for x in node.event_lines() if x.startswith("master got TERM at ")]
    return float(line.rsplit(" ", 1)[1])


def black_hole(node) -> socket.socket:
    """Replace the metadata service by a listener that accepts connections and never answers
    (worse than a refused connection: every look waits out its timeout)."""
    host, port = node.imds.address
    node.imds.stop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    return sock


def backstop_lines(caplog) -> list[str]:
    """The lines saying the backstop stops the master (not the power-off line repeating why)."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("lease ended")
            and "instance-side backstop stops HTCondor" in r.getMessage()]


def test_powers_off_at_bundle_lease_end_plus_margin_when_imds_answers_nothing(cloud, caplog):
    caplog.set_level(logging.INFO)
    end = int(time.time()) + 5
    put_leased_bundle(cloud, end)
    master_until_signal(cloud)
    holes: list[socket.socket] = []
    watcher = once_master_runs(cloud, lambda: holes.append(black_hole(cloud)))
    try:
        assert bootstrap.main(cloud.argv("--off-poll-s", "0.3", "--lease-margin-s", "1.5")) == 0
    finally:
        watcher.join(timeout=5)
        for sock in holes:
            sock.close()

    assert holes, "the metadata service was not broken while the master ran"
    assert cloud.event_lines()[0] == "master started"
    assert cloud.event_lines()[-1] == "poweroff "
    stopped = term_time(cloud)
    assert end + 1.5 <= stopped < end + 1.5 + 3, stopped - end
    [why] = backstop_lines(caplog)
    assert f"lease ended at {end} (bundle AnnexLeaseEnd {end})" in why
    assert any("powering off (lease ended" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("tag_offset_s", [pytest.param(3, id="extended-tag-wins"),
                                          pytest.param(-3600, id="stale-tag-ignored")])
def test_the_later_of_bundle_and_tag_counts(cloud, caplog, tag_offset_s):
    caplog.set_level(logging.INFO)
    bundle_end = int(time.time()) + 4
    tag_end = bundle_end + tag_offset_s
    put_leased_bundle(cloud, bundle_end)
    master_until_signal(cloud)
    # The tag appears (or changes) while the master runs, as ``extend`` rewrites it.
    watcher = once_master_runs(cloud, lambda: cloud.metadata.tags.update(
        {TAG_LEASE_END: str(tag_end)}))

    assert bootstrap.main(cloud.argv("--off-poll-s", "0.2", "--lease-margin-s", "1")) == 0
    watcher.join(timeout=5)

    effective = max(bundle_end, tag_end)
    stopped = term_time(cloud)
    assert effective + 1 <= stopped < effective + 1 + 2.5, stopped - effective
    assert cloud.event_lines()[-1] == "poweroff "
    [why] = backstop_lines(caplog)
    assert why.startswith(f"lease ended at {effective} ")
    assert f"instance tag {TAG_LEASE_END} {tag_end}" in why


class SetClock:
    """The agent's wall clock, set by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_never_powers_off_before_lease_end_plus_margin_by_its_own_clock(cloud, caplog):
    # The wall clock says the lease ended long ago; the agent's clock (injected) says it has
    # not: the agent goes by its own clock, to the second.
    caplog.set_level(logging.INFO)
    end = int(time.time()) - 1000
    margin = 60
    clock = SetClock(end - 30)
    put_leased_bundle(cloud, end)
    master_until_signal(cloud)
    seen: dict[str, list[str]] = {}

    def walk_the_clock() -> None:
        clock.now = end + margin - 0.5        # half a second before it is due
        time.sleep(1.5)                       # several looks (every 0.2 s)
        seen["just before"] = cloud.event_lines()
        clock.now = end + margin

    watcher = once_master_runs(cloud, walk_the_clock)
    started = time.monotonic()
    assert bootstrap.main(cloud.argv("--off-poll-s", "0.2", "--lease-margin-s", str(margin)),
                          clock=clock) == 0
    watcher.join(timeout=5)

    assert seen["just before"] == ["master started"]
    assert [x.split(" at ")[0] for x in cloud.event_lines()] == [
        "master started", "master got TERM", "poweroff "]
    assert time.monotonic() - started < 10
    assert len(backstop_lines(caplog)) == 1


def test_lease_already_over_at_boot_never_starts_the_master(cloud, caplog):
    caplog.set_level(logging.INFO)
    put_leased_bundle(cloud, int(time.time()) - 120)

    assert bootstrap.main(cloud.argv("--lease-margin-s", "60")) == 0

    assert cloud.event_lines() == ["poweroff "]
    assert any(r.getMessage().startswith("not starting HTCondor, powering off: lease ended")
               for r in caplog.records)


def test_a_master_that_ignores_sigterm_is_stopped_fast_after_the_grace(cloud, caplog,
                                                                       monkeypatch):
    from condor_annex.agent import master

    monkeypatch.setattr(master, "LEASE_STOP_GRACE_S", 1.0)
    caplog.set_level(logging.INFO)
    end = int(time.time()) + 3
    put_leased_bundle(cloud, end)
    master_until_signal(cloud, ignore_term=True)
    started = time.monotonic()

    assert bootstrap.main(cloud.argv("--off-poll-s", "0.2", "--lease-margin-s", "0")) == 0

    assert cloud.event_lines() == ["master started", "master ignored TERM", "master got QUIT",
                                   "poweroff "]
    assert time.monotonic() - started < 15
    assert any("fast shutdown (SIGQUIT)" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("iptables", [
    pytest.param("echo \"iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: "
                 "Permission denied (you must be root)\" >&2\nexit 4\n", id="iptables-fails"),
    pytest.param(None, id="no-iptables"),
])
def test_no_metadata_firewall_no_htcondor(cloud, caplog, tmp_path, monkeypatch, iptables):
    caplog.set_level(logging.INFO)
    put_leased_bundle(cloud, int(time.time()) + 3600)
    master_until_signal(cloud)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if iptables is not None:
        write_script(bin_dir / "iptables", iptables)
    monkeypatch.setenv("PATH", str(bin_dir))    # no other iptables to be found
    argv = [a for a in cloud.argv() if a != "--no-block-imds"]

    assert bootstrap.main(argv) == 1

    assert cloud.event_lines() == ["poweroff "]     # the master never ran
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(errors) == 1, errors
    assert "bootstrap failed" in errors[0]
    assert "metadata firewall could not be applied" in errors[0]
    assert "refusing to start HTCondor" in errors[0]
    assert ("Permission denied" if iptables else "iptables not found") in errors[0]
    assert "\n" not in errors[0]


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_bad_lease_margin_is_refused_before_anything(cloud, capsys, value):
    with pytest.raises(SystemExit) as exited:
        bootstrap.main(cloud.argv("--lease-margin-s", value))
    assert exited.value.code == 2
    assert "--lease-margin-s" in capsys.readouterr().err
    assert cloud.event_lines() == []
    assert cloud.imds.count() == 0


def test_an_extended_lease_tag_installs_the_bundle_again_for_its_new_token(tmp_path):
    # extend re-uploads the bundle (a token living until the new end) and rewrites the tag; a
    # running node learns of it from the tag and fetches the bundle again, once per new end.
    from condor_annex.agent.backstop import LeaseBackstop
    from condor_annex.agent.watch import NodeWatch

    cfg = tmp_path / "config.d" / "50-annex.config"
    cfg.parent.mkdir()
    cfg.write_text("AnnexLeaseEnd = 1000\n")
    tag = {"value": "1000"}
    fetched = []

    def refresh():
        fetched.append(tag["value"])
        if len(fetched) == 1:
            raise OSError("S3 unreachable")   # retried at the next poll
        cfg.write_text(f"AnnexLeaseEnd = {tag['value']}\n")

    now = {"t": 0.0}
    backstop = LeaseBackstop(tmp_path, read_tag=lambda: tag["value"], clock=lambda: 500.0)
    watch = NodeWatch(off_requested=lambda: False, backstop=backstop, poll_s=5,
                      monotonic=lambda: now["t"], refresh_bundle=refresh)

    def poll():
        now["t"] += 5
        return watch.check()

    assert poll() is None and fetched == []          # tag == bundle: nothing to fetch
    tag["value"] = "4600"
    assert poll() is None and fetched == ["4600"]    # failed fetch
    assert poll() is None and fetched == ["4600", "4600"]
    assert backstop.bundle_end == 4600
    assert poll() is None and len(fetched) == 2      # installed: not fetched again
