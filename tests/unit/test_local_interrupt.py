"""``condor_annex local inject interrupt INSTANCE_ID [--rebalance] [--notice 120s]``: EC2
interrupts a Spot Instance of the local cloud (providers/local/interruptions.py).

Through the command line with a local cloud's state dir in a temporary directory (the daemon is
this test process); the instance's IMDS over HTTP (IMDSv2 only); and the instance runner's pass
against moto behind the gateway on a sped-up manual clock: the notice, then the termination
when it runs out, with the state and StateReason EC2 gives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import boto3
import pytest

from condor_annex.cli.main import main
from condor_annex.providers.local import cloud
from condor_annex.providers.local.clock import ManualClock
from condor_annex.providers.local.imds import ImdsServer, InstanceMetadata
from condor_annex.providers.local.inject import FILE_NAME, Injections
from condor_annex.providers.local.instances import InstanceRunner
from condor_annex.providers.local.interruptions import (InterruptRequest, SpotInterruptions,
                                                        parse_interrupt)
from condor_annex.providers.local.state_reasons import StateReasons
from tests.conftest import MOTO_AMI

IID = "i-0123456789abcdef0"
#: 2027-01-15T08:00:00Z: the manual clock's start.
T0 = 1_800_000_000.0


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cloud, "STATE_DIR", tmp_path / "local")
    return tmp_path / "local"


@pytest.fixture
def running(state_dir, aws, moto_endpoint):
    """A state file naming a live daemon (this process) whose endpoint is moto, with the
    account's key files; moto runs two Spot Instances (:data:`IID` stands for the first, the
    second is named by :func:`_second`)."""
    st = cloud.LocalCloudState(pid=os.getpid(), endpoint_url=moto_endpoint,
                               collector="127.0.0.1:9618", annex_collector="10.200.0.2:9618",
                               root="/nonexistent", image_id="ami-1", token_command="true",
                               started_at=0.0)
    st.save()
    for name in ("access_key", "secret_key"):
        (state_dir / name).write_text("testing\n")
        (state_dir / name).chmod(0o600)
    ec2 = _ec2(moto_endpoint)
    return [ec2.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1,
                              InstanceMarketOptions={"MarketType": "spot"})["Instances"][0]
            ["InstanceId"] for _ in range(2)]


def _ec2(url: str):
    return boto3.client("ec2", endpoint_url=url, region_name="us-east-1")


def _injected(capsys) -> list[str]:
    assert main(["local", "status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["injected"]


# ---- parse, apply, consume -----------------------------------------------------------------

def test_parse_interrupt():
    assert parse_interrupt([IID]) == InterruptRequest(IID, False, 120)
    assert parse_interrupt([IID], notice="90s") == InterruptRequest(IID, False, 90)
    assert parse_interrupt([IID], notice="2m").notice_s == 120
    assert parse_interrupt([IID], notice="30").notice_s == 30   # a bare number is seconds
    assert parse_interrupt(["i-0abc1234"], rebalance=True) == InterruptRequest("i-0abc1234",
                                                                             True, 120)


def test_inject_interrupt_is_listed_taken_by_the_daemon_once_and_cleared(running, state_dir,
                                                                       capsys):
    first, second = running
    assert main(["local", "inject", "interrupt", first, "--notice", "90s"]) == 0
    assert f"Injected faults: interrupt {first} --notice 90s." in capsys.readouterr().out
    assert main(["local", "inject", "interrupt", second, "--rebalance"]) == 0
    assert main(["local", "inject", "no-join", "1"]) == 0
    capsys.readouterr()
    assert _injected(capsys) == ["no-join 1", f"interrupt {first} --notice 90s",
                                 f"interrupt {second} --rebalance"]

    daemon = Injections(state_dir / FILE_NAME)
    assert daemon.take_interrupts() == [InterruptRequest(first, False, 90),
                                        InterruptRequest(second, True, 120)]
    assert daemon.take_interrupts() == []   # taken once
    assert _injected(capsys) == ["no-join 1"]

    assert main(["local", "inject", "interrupt", first]) == 0
    assert main(["local", "inject", "none"]) == 0
    capsys.readouterr()
    assert _injected(capsys) == [] and daemon.take_interrupts() == []


@pytest.mark.parametrize("argv, word", [
    (["interrupt"], "instance id"),
    (["interrupt", IID, "i-0abc1234"], "instance id"),
    (["interrupt", "i-xyz"], "i-xyz"),
    (["interrupt", "0123456789abcdef0"], "not an instance id"),
    (["interrupt", IID.upper()], "not an instance id"),
    (["interrupt", IID, "--notice", "0"], "--notice"),
    (["interrupt", IID, "--notice", "-5s"], "--notice"),
    (["interrupt", IID, "--notice", "2h"], "--notice"),
    (["interrupt", IID, "--notice", "soon"], "--notice"),
    (["interrupt", IID, "--notice", "nan"], "--notice"),
    (["interrupt", IID, "--notice"], "--notice"),
    (["interrupt", IID, "--rebalance", "--notice", "60s"], "--notice"),
    (["no-join", "1", "--notice", "60s"], "--notice"),
    (["schedule-early", "--rebalance"], "--rebalance"),
    (["interupt", IID], "interupt"),
])
def test_bad_interrupt_input_is_one_line_exit_2_and_changes_nothing(running, state_dir, capsys,
                                                                    argv, word):
    assert main(["local", "inject", "interrupt", running[0]]) == 0
    capsys.readouterr()
    assert main(["local", "inject", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "local inject" in err and word in err, err
    assert _injected(capsys) == [f"interrupt {running[0]} --notice 120s"]


def test_an_instance_ec2_could_not_interrupt_is_refused(running, state_dir, moto_endpoint,
                                                        capsys):
    ec2 = _ec2(moto_endpoint)
    on_demand = ec2.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"]
    ec2.terminate_instances(InstanceIds=[running[1]])
    for iid, word in ((IID, "no instance"), (on_demand, "on-demand"),
                      (running[1], "terminated")):
        assert main(["local", "inject", "interrupt", iid]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and word in err and iid in err, err
    assert _injected(capsys) == []


def test_interrupt_without_a_local_cloud_is_refused(state_dir, capsys):
    assert main(["local", "inject", "interrupt", IID]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not running" in err
    assert not (state_dir / FILE_NAME).exists()


def test_a_hand_edited_request_is_skipped(tmp_path):
    path = tmp_path / FILE_NAME
    path.write_text(json.dumps({"interrupt": [{"instance_id": "x"}, "y",
                                              {"instance_id": IID, "notice_s": 0},
                                              {"instance_id": IID, "notice_s": 60}]}))
    assert Injections(path).take_interrupts() == [InterruptRequest(IID, False, 60)]


# ---- the instance's IMDS -------------------------------------------------------------------

def _imds_get(srv: ImdsServer, path: str, token: str | None) -> tuple[int, bytes]:
    import http.client
    host, port = srv.address
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        if token == "new":
            conn.request("PUT", "/latest/api/token",
                         headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"})
            token = conn.getresponse().read().decode()
        conn.request("GET", path, headers={"X-aws-ec2-metadata-token": token} if token else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


ACTION = "/latest/meta-data/spot/instance-action"
REBALANCE = "/latest/meta-data/events/recommendations/rebalance"


def test_imds_serves_the_notices_after_they_are_given_404_before_token_required(tmp_path):
    inj = Injections(tmp_path / FILE_NAME)
    clock = ManualClock(T0)
    spot = SpotInterruptions(inj.take_interrupts, clock)
    base = InstanceMetadata(IID, "us-east-1", "us-east-1a", "127.0.0.1")
    from condor_annex.providers.local.interruptions import with_notice
    with ImdsServer(lambda ip: with_notice(base, spot.notice(IID))) as srv:
        assert _imds_get(srv, ACTION, "new")[0] == 404
        assert _imds_get(srv, REBALANCE, "new")[0] == 404
        assert b"spot/" not in _imds_get(srv, "/latest/meta-data/", "new")[1]

        inj.add_interrupt(parse_interrupt([IID], rebalance=True))
        spot.tick(None, {IID})
        assert json.loads(_imds_get(srv, REBALANCE, "new")[1]) == {
            "noticeTime": "2027-01-15T08:00:00Z"}
        assert _imds_get(srv, ACTION, "new")[0] == 404   # a recommendation is no notice
        clock.advance(30)
        assert spot.tick(None, {IID}) == []   # and never terminates

        inj.add_interrupt(parse_interrupt([IID], notice="120s"))
        spot.tick(None, {IID})
        status, body = _imds_get(srv, ACTION, "new")
        assert status == 200
        assert json.loads(body) == {"action": "terminate", "time": "2027-01-15T08:02:30Z"}
        assert _imds_get(srv, "/latest/meta-data/spot/termination-time", "new")[1] == \
            b"2027-01-15T08:02:30Z"
        assert "spot/" in _imds_get(srv, "/latest/meta-data/", "new")[1].decode().split()
        # IMDSv2 only, as every other path: no token, or a made-up one, is 401.
        assert _imds_get(srv, ACTION, None)[0] == 401
        assert _imds_get(srv, ACTION, "not-a-token")[0] == 401
        assert _imds_get(srv, REBALANCE, None)[0] == 401


# ---- the termination when the notice runs out ----------------------------------------------

class _Node:
    """A booted node as the runner sees it: it shuts down over one pass after SIGTERM."""

    def __init__(self, iid: str, md: InstanceMetadata) -> None:
        self.instance_id, self.address, self.metadata, self.root = iid, md.private_ip, md, None
        self.stopped = 0
        self.released = False

    def powered_off(self) -> bool:
        return False

    def stop(self) -> None:
        self.stopped += 1

    def reap(self, grace_s: float = 20.0) -> bool:
        return self.stopped > 1 or (self.stopped == 1 and self._shut_down_once())

    def _shut_down_once(self) -> bool:
        self.stopped += 1   # gone on the pass after the one that stopped it
        return False

    def release(self) -> None:
        self.released = True


def _describe(ec2, iid: str) -> dict:
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def test_the_notice_runs_out_on_a_sped_up_clock_and_ec2_terminates_the_instance(
        aws, gateway, tmp_path):
    ec2 = boto3.client("ec2", endpoint_url=gateway.url, region_name="us-east-1")
    spot_iid, other = (ec2.run_instances(
        ImageId=MOTO_AMI, MinCount=1, MaxCount=1,
        InstanceMarketOptions={"MarketType": "spot"})["Instances"][0]["InstanceId"]
        for _ in range(2))
    inj = Injections(tmp_path / FILE_NAME)
    ended: list[str] = []
    runner = InstanceRunner(lambda service: ec2, images=None,
                            identities=SimpleNamespace(refreshed=lambda md, inst: md),
                            injections=inj, state_dir=Path("/nonexistent"),
                            on_ended=ended.append)
    clock = runner.interruptions.clock = ManualClock(T0, scale=10)   # 120 s pass in 12 s
    for n, iid in enumerate((spot_iid, other)):
        node = _Node(iid, InstanceMetadata(iid, "us-east-1", "us-east-1a", f"10.200.1.{n}"))
        runner.nodes[iid], runner.by_address[node.address] = node, node
    gateway.strict_rules.append(StateReasons(
        gateway, runner.interruptions.spot_terminated, lambda iid: iid in runner.nodes))

    inj.add_interrupt(parse_interrupt([spot_iid]))
    runner.reconcile()
    md = runner.metadata_for("10.200.1.0")
    assert md is not None
    assert json.loads(md.spot_instance_action) == {"action": "terminate",
                                                   "time": "2027-01-15T08:00:12Z"}
    assert runner.metadata_for("10.200.1.1").spot_instance_action == ""   # only that one

    clock.advance(11.5)
    runner.reconcile()
    assert _describe(ec2, spot_iid)["State"]["Name"] == "running"
    assert runner.nodes[spot_iid].stopped == 0

    clock.advance(0.5)   # the notice ran out: EC2 terminates it; its OS gets the shutdown
    runner.reconcile()
    node = runner.nodes[spot_iid]
    assert node.stopped >= 1
    shutting = _describe(ec2, spot_iid)
    assert shutting["State"] == {"Code": 32, "Name": "shutting-down"}
    assert shutting["StateReason"] == {
        "Code": "Server.SpotInstanceTermination",
        "Message": "Server.SpotInstanceTermination: Spot instance termination"}

    runner.reconcile()   # its node is gone: terminated, for the same reason
    assert spot_iid not in runner.nodes and node.released and ended == [spot_iid]
    gone = _describe(ec2, spot_iid)
    assert gone["State"] == {"Code": 48, "Name": "terminated"}
    assert gone["StateReason"]["Code"] == "Server.SpotInstanceTermination"
    listed = [i for r in ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    assert {i["InstanceId"]: i["State"]["Name"] for i in listed} == {
        spot_iid: "terminated", other: "running"}

    # An instance the user terminates keeps EC2's user-initiated reason.
    ec2.terminate_instances(InstanceIds=[other])
    assert _describe(ec2, other)["StateReason"]["Code"] == "Client.UserInitiatedShutdown"


class _HaltedNode(_Node):
    """A node whose OS powered itself off (the agent's power-off)."""

    def powered_off(self) -> bool:
        return True

    class proc:   # noqa: N801 - the runner logs the agent's exit status
        returncode = 0


def test_an_instance_that_powered_itself_off_says_its_os_shut_it_down(
        aws, gateway, tmp_path):
    """EC2 says ``Client.InstanceInitiatedShutdown`` for an instance whose OS shut it down,
    where moto says ``Client.UserInitiatedShutdown`` (an API call): code counting spot
    interruptions must tell a node's own power-off from EC2's interruption."""
    ec2 = boto3.client("ec2", endpoint_url=gateway.url, region_name="us-east-1")
    iid = ec2.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1,
                            InstanceInitiatedShutdownBehavior="terminate",
                            InstanceMarketOptions={"MarketType": "spot"})["Instances"][0][
        "InstanceId"]
    runner = InstanceRunner(lambda service: ec2, images=None,
                            identities=SimpleNamespace(refreshed=lambda md, inst: md),
                            injections=Injections(tmp_path / FILE_NAME),
                            state_dir=Path("/nonexistent"), on_ended=lambda iid: None)
    runner.interruptions.clock = ManualClock(T0)
    node = _HaltedNode(iid, InstanceMetadata(iid, "us-east-1", "us-east-1a", "10.200.1.0"))
    runner.nodes[iid], runner.by_address[node.address] = node, node
    gateway.strict_rules.append(StateReasons(
        gateway, runner.interruptions.spot_terminated, lambda i: i in runner.nodes,
        runner.os_shutdown))

    runner.reconcile()
    gone = _describe(ec2, iid)
    assert gone["State"]["Name"] == "terminated"   # its shutdown behaviour
    assert gone["StateReason"] == {
        "Code": "Client.InstanceInitiatedShutdown",
        "Message": "Client.InstanceInitiatedShutdown: Instance initiated shutdown"}


def test_a_request_for_an_instance_not_running_is_dropped(tmp_path, caplog):
    inj = Injections(tmp_path / FILE_NAME)
    spot = SpotInterruptions(inj.take_interrupts, ManualClock(T0))
    inj.add_interrupt(parse_interrupt([IID], notice="1s"))
    assert spot.tick(None, set()) == [] and spot.notice(IID) is None
    assert "no such pending or running instance" in caplog.text


def test_an_instance_ended_otherwise_during_its_notice_keeps_its_own_reason(aws, gateway,
                                                                           tmp_path):
    """Regression: an instance the user terminated while its notice ran was later described
    as terminated by a Spot interruption."""
    ec2 = _ec2(gateway.url)
    iid = ec2.run_instances(ImageId=MOTO_AMI, MinCount=1, MaxCount=1,
                            InstanceMarketOptions={"MarketType": "spot"})["Instances"][0][
        "InstanceId"]
    inj = Injections(tmp_path / FILE_NAME)
    clock = ManualClock(T0)
    spot = SpotInterruptions(inj.take_interrupts, clock)
    gateway.strict_rules.append(StateReasons(gateway, spot.spot_terminated,
                                                       lambda i: False))
    inj.add_interrupt(parse_interrupt([iid], notice="60s"))
    spot.tick(ec2, {iid})
    ec2.terminate_instances(InstanceIds=[iid])
    clock.advance(61)
    assert spot.tick(ec2, set()) == [] and spot.notice(iid) is None
    assert _describe(ec2, iid)["StateReason"]["Code"] == "Client.UserInitiatedShutdown"


def test_a_second_notice_keeps_the_first_ones_time_and_a_recommendation_adds_to_it(tmp_path):
    inj = Injections(tmp_path / FILE_NAME)
    clock = ManualClock(T0)
    spot = SpotInterruptions(inj.take_interrupts, clock)
    inj.add_interrupt(parse_interrupt([IID], notice="60s"))
    spot.tick(None, {IID})
    clock.advance(10)
    inj.add_interrupt(parse_interrupt([IID], notice="120s"))
    inj.add_interrupt(parse_interrupt([IID], rebalance=True))
    spot.tick(None, {IID})
    n = spot.notice(IID)
    assert n is not None
    assert json.loads(n.instance_action())["time"] == "2027-01-15T08:01:00Z"
    assert json.loads(n.rebalance()) == {"noticeTime": "2027-01-15T08:00:10Z"}
