"""``condor_annex local inject no-join N``: the next N instances the local cloud boots never
join, because the network drops their traffic to the collector (providers/local/network_acl.py).

Through the command line with a local cloud's state dir in a temporary directory (the daemon
is this test process), the instance runner's use of the count, and, as root with the chroot
present, the rule itself between scratch namespaces: the collector's port is dropped, the
collector's other ports and the hub's own services (IMDS, the AWS endpoint) are not.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from condor_annex.cli.main import main
from condor_annex.providers.local import cloud, netns, network_acl
from condor_annex.providers.local.inject import FILE_NAME, Injections, parse
from condor_annex.providers.local.instances import InstanceRunner
from condor_annex.providers.local.layout import COLLECTOR_PORT, ROOT


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


def _injected(capsys) -> list[str]:
    assert main(["local", "status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)["injected"]


def test_no_join_is_listed_used_up_by_boots_and_cleared(running, state_dir, capsys):
    assert main(["local", "inject", "no-join", "2"]) == 0
    assert "Injected faults: no-join 2." in capsys.readouterr().out
    assert main(["local", "inject", "lambda-error", "1"]) == 0
    capsys.readouterr()
    assert _injected(capsys) == ["lambda-error 1", "no-join 2"]
    assert main(["local", "status"]) == 0
    assert "Injected faults: lambda-error 1, no-join 2." in capsys.readouterr().out

    # The daemon uses one per instance booted; the Lambda errors are counted apart.
    daemon = Injections(state_dir / FILE_NAME)
    assert [daemon.take_no_join() for _ in range(3)] == [True, True, False]
    assert _injected(capsys) == ["lambda-error 1"]

    # no-join N sets the count (as lambda-error N does); none clears every kind.
    assert main(["local", "inject", "no-join", "5"]) == 0
    assert main(["local", "inject", "no-join", "3"]) == 0
    capsys.readouterr()
    assert _injected(capsys) == ["lambda-error 1", "no-join 3"]
    assert main(["local", "inject", "none"]) == 0
    assert "Injected faults: none." in capsys.readouterr().out
    assert _injected(capsys) == [] and not daemon.take_no_join()


@pytest.mark.parametrize("words", [
    ["no-join"], ["no-join", "0"], ["no-join", "-1"], ["no-join", "x"], ["no-join", "2.5"],
    ["no-join", "10001"], ["no-join", "1", "2"], ["no-join", "٣"], ["nojoin", "1"],
])
def test_bad_no_join_input_is_one_line_exit_2_and_changes_nothing(running, state_dir, capsys,
                                                                  words):
    assert main(["local", "inject", "no-join", "1"]) == 0
    capsys.readouterr()
    assert main(["local", "inject", *words]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "local inject" in err and "Traceback" not in err
    assert "no-join" in err, err
    assert _injected(capsys) == ["no-join 1"]


def test_parse_no_join():
    assert parse(["no-join", "4"]) == ("no-join", 4)
    assert parse(["no-join", "10000"]) == ("no-join", 10000)


def test_a_hand_edited_count_is_no_injection(tmp_path):
    path = tmp_path / FILE_NAME
    path.write_text(json.dumps({"no_join": "x", "lambda_error": -2}))
    inj = Injections(path)
    assert inj.describe() == [] and not inj.take_no_join() and not inj.take_lambda_error()


class _Node:
    """What the runner's boot step needs of a node: an id, its image, and boot()."""

    def __init__(self, iid: str) -> None:
        self.instance_id, self.address = iid, "10.200.1.1"
        self.metadata = SimpleNamespace(image_id="ami-1")
        self.booted: dict | None = None

    def boot(self, layers, **kw) -> None:
        self.booted = {"layers": layers, **kw}


def _runner(injections: Injections) -> InstanceRunner:
    images = SimpleNamespace(layers_for=lambda image_id: [Path("/layers") / image_id])
    return InstanceRunner(client=None, images=images, identities=None,
                          injections=injections, state_dir=Path("/nonexistent"),
                          on_ended=lambda iid: None)


def test_the_next_n_instances_booted_take_the_no_join_in_launch_order(tmp_path):
    inj = Injections(tmp_path / FILE_NAME)
    inj.apply(*parse(["no-join", "2"]))
    inj.apply(*parse(["backstop-off"]))
    runner = _runner(inj)
    first = [_Node(f"i-{n}") for n in "abc"]
    runner._boot(first)   # noqa: SLF001 - the boot step of a pass, without EC2
    assert [n.booted["no_join"] for n in first] == [True, True, False]
    assert all(n.booted["lease_margin_s"] == 86400 for n in first)
    assert all(n.booted["layers"] == [Path("/layers/ami-1")] for n in first)
    assert inj.describe() == ["backstop-off"]

    # Used up: later boots join; a new injection applies to the next boot only.
    later = [_Node("i-d")]
    runner._boot(later)   # noqa: SLF001
    assert later[0].booted["no_join"] is False
    inj.apply(*parse(["no-join", "1"]))
    again = [_Node("i-e"), _Node("i-f")]
    runner._boot(again)   # noqa: SLF001
    assert [n.booted["no_join"] for n in again] == [True, False]


def test_the_rules_drop_only_the_instances_packets_to_the_collectors_port():
    rules = network_acl.collector_rules("10.200.1.7")
    assert [r[r.index("--ip-protocol") + 1] for r in rules] == ["tcp", "udp"]
    for r in rules:
        assert r[0] == "FORWARD" and r[-2:] == ["-j", "DROP"]
        assert r[r.index("--ip-source") + 1] == "10.200.1.7"
        assert r[r.index("--ip-destination") + 1] == netns.CM_ADDR
        assert r[r.index("--ip-destination-port") + 1] == str(COLLECTOR_PORT) == "9618"


def _can_run_the_rule() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None \
        and (ROOT / "usr/sbin" / network_acl.EBTABLES).exists()


def _reaches(ns: str, host: str, port: int) -> bool:
    try:
        netns.connect_in_netns(ns, host, port, timeout=1.5).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _can_run_the_rule(),
                    reason="needs root and the local cloud's chroot (ebtables-nft)")
def test_the_network_drops_the_collectors_port_and_nothing_else(monkeypatch):
    # Scratch namespaces of their own prefix, beside any running local cloud's.
    monkeypatch.setenv("CONDOR_ANNEX_NETNS_PREFIX", f"ut{os.getpid() % 10000}-")
    address = netns.instance_address(0)
    listeners: list[socket.socket] = []
    try:
        netns.create_hub()
        cm = netns.create_host("cm", netns.CM_ADDR)
        inst = netns.create_host("i0", address)
        hub = netns.prefix() + "hub"
        listeners += [netns.socket_in_netns(cm, netns.CM_ADDR, p)
                      for p in (COLLECTOR_PORT, COLLECTOR_PORT + 1)]
        listeners += [netns.socket_in_netns(hub, netns.HUB_ADDR, 4566),
                      netns.socket_in_netns(hub, netns.IMDS_ADDR, 80)]
        assert _reaches(inst, netns.CM_ADDR, COLLECTOR_PORT)

        network_acl.deny_collector(address, hub=hub)
        assert not _reaches(inst, netns.CM_ADDR, COLLECTOR_PORT)      # the collector: dropped
        assert _reaches(inst, netns.CM_ADDR, COLLECTOR_PORT + 1)      # another port: open
        assert _reaches(inst, netns.HUB_ADDR, 4566)                   # the AWS endpoint
        assert _reaches(inst, netns.IMDS_ADDR, 80)                    # IMDS

        network_acl.allow_collector(address, hub=hub)
        assert _reaches(inst, netns.CM_ADDR, COLLECTOR_PORT)
    finally:
        for s in listeners:
            s.close()
        netns.delete_all()
