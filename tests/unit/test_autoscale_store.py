"""The state store's autoscale rows (issue 13, schema 5): bounds recorded at create, the
first time demand was seen above capacity kept across a restart (a reopened file), and an
annex name used again after its annex ended starting without the old bounds."""

from __future__ import annotations

from datetime import datetime, timezone

from condor_annex.state.store import MIGRATIONS, Store

T = datetime(2026, 3, 1, 12, 0, 7, tzinfo=timezone.utc)


def test_bounds_and_first_seen_time_survive_a_reopen(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.put_annex("a1", {}, requested=0, lease_end=None)
        store.put_autoscale("a1", 0, 4, {"Cpus": 2})
        store.set_autoscale("a1", above_since=T, demand=12, target=0, want=0, why="waiting")
    with Store(path) as again:   # a daemon restarted
        rec = again.autoscale()["a1"]
    assert (rec.min_count, rec.max_count, rec.template) == (0, 4, {"Cpus": 2})
    assert rec.above_since == T and rec.demand == 12 and rec.why == "waiting"
    assert rec.as_dict() == {"min": 0, "max": 4, "demand": 12, "target": 0, "why": "waiting",
                             "above_since": T.isoformat()}


def test_a_name_used_again_after_its_annex_ended_has_no_bounds(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.put_annex("a1", {}, requested=0, lease_end=None)
        store.put_autoscale("a1", 1, 4, {})
        store.end_annex("a1")
        assert store.autoscale() == {}
        store.put_annex("a1", {}, requested=2, lease_end=None)   # a plain create
        assert store.autoscale() == {}


def test_a_version_4_file_is_migrated_to_5(tmp_path):
    path = tmp_path / "s.db"
    with Store(path, migrations=MIGRATIONS[:4]) as old:
        old.put_annex("a1", {}, requested=1, lease_end=None)
    with Store(path) as store:
        assert store.schema_version() == 5 and store.annex("a1") is not None
        assert store.autoscale() == {}
