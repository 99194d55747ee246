"""``create`` and ``off`` write the state store (issue 11): the launch request with its client token
before the launch, its outcome after; and a state file that cannot be used stops the create
before anything exists in the cloud."""

from __future__ import annotations

from condor_annex.state.store import Store, default_path
from tests.aws.test_create_safety import cloud, run  # noqa: F401 - the fixture

__all__ = ["cloud"]


def test_create_records_the_launch_its_instances_and_off_ends_the_annex(cloud, capsys):
    code, out, _ = run(["create", "rec", "--count", "2", "--json"], capsys)
    assert code == 0
    with Store(default_path({})) as store:
        annex = store.annex("rec")
        (req,) = store.launch_requests("rec")
        instances = store.instances("rec")
    assert annex.requested == 2 and annex.spec["instance_type"] and annex.lease_end
    assert (req.kind, req.count, req.state) == ("on-demand", 2, "launched")
    assert req.client_token in out   # the token create --json prints is the one recorded
    assert sorted(i.instance_id for i in instances) == sorted(cloud.instances("rec"))
    assert {i.state for i in instances} == {"requested"}
    assert {i.launch_token for i in instances} == {req.client_token}
    assert run(["off", "rec", "--grace", "0"], capsys)[0] == 0
    with Store(default_path({})) as store:
        assert store.annexes() == [] and store.annex("rec").ended_at is not None


def test_a_failed_launch_is_recorded_failed(cloud, capsys):
    cloud.gateway.fail("ec2.RunInstances", "InsufficientInstanceCapacity", "none", status=500)
    assert run(["create", "nocap", "--count", "1"], capsys)[0] == 1
    with Store(default_path({})) as store:
        assert [r.state for r in store.launch_requests("nocap")] == ["failed"]


def test_a_corrupt_state_file_stops_create_before_the_cloud(cloud, capsys):
    path = default_path({})
    path.write_bytes(b"garbage" * 1000)
    code, out, err = run(["create", "nostore", "--count", "1"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert str(path) in err and "condor_annex sweep --adopt" in err
    assert cloud.instances() == {} and cloud.leases() == {} and cloud.bundles() == {}
