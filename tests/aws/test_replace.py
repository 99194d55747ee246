"""Replacing capacity lost to spot interruptions (issue 12 item 2), on the moto server: a
wanted replacement recorded by a pass is launched as ``create`` adds to the annex, once."""

from __future__ import annotations

from condor_annex.service.context import Context
from condor_annex.service.replace import replace_wanted, spot_for_replacement
from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cloud, run  # noqa: F401 - the fixture

__all__ = ["cloud"]


def _want(annex: str, iid: str, itype: str = "m5.large") -> None:
    with Store(default_path({})) as store:
        assert store.want_replacement(iid, annex, itype, f"replaces {iid}, interrupted")


def test_an_on_demand_annex_gets_one_instance_back_once(cloud, capsys):
    assert run(["create", "od", "--count", "1"], capsys)[0] == 0
    _want("od", "i-gone")
    lines = replace_wanted(Context.load())
    assert len(cloud.instances("od")) == 2, lines
    assert replace_wanted(Context.load()) == []          # not launched twice
    assert len(cloud.instances("od")) == 2
    with Store(default_path({})) as store:
        ((iid, annex, _, state, _),) = store.replacements("od")
        assert (iid, state) == ("i-gone", "launched")
    code, out, _ = run(["status", "od", "--json"], capsys)
    assert '"replacements": 1' in out


def test_an_ec2_fleet_annex_is_replaced_with_the_interrupted_type_last(cloud, capsys):
    assert run(["create", "fl", "--spot", "--capacity", "1", "--instance-types",
                "m5.large,m5a.large"], capsys)[0] == 0
    with Store(default_path({})) as store:
        recorded = store.annex("fl").spec
    spot = spot_for_replacement(recorded, "m5.large")
    assert [t for t, _ in spot.instance_types] == ["m5a.large", "m5.large"]
    _want("fl", "i-gone")
    replace_wanted(Context.load())
    assert len(cloud.instances("fl")) == 2


def test_an_annex_with_its_own_user_data_is_not_replaced_and_says_why(cloud, capsys, tmp_path):
    script = tmp_path / "ud.sh"
    script.write_text("#!/bin/sh\necho hello\n")
    assert run(["create", "ud", "--count", "1", "--user-data", str(script)], capsys)[0] == 0
    _want("ud", "i-gone")
    (line,) = replace_wanted(Context.load())
    assert "user data of its own" in line and len(cloud.instances("ud")) == 1
