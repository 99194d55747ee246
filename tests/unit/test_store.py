"""The state store: created when missing, private, WAL, migrated in order, a newer or corrupt file
refused in one line (exit 2) naming the file and how to rebuild it, and safe with two writers."""

from __future__ import annotations

import json
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone

import pytest

from condor_annex.cli.main import main
from condor_annex.errors import BadInputError
from condor_annex.state.store import (MIGRATIONS, SCHEMA_VERSION, StaleStateError, Store,
                                      default_path)

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
T1 = datetime(2026, 1, 1, 13, 0, tzinfo=timezone.utc)


def test_a_missing_file_is_created_private_in_the_user_config_directory(user_config):
    path = default_path({})
    assert path == user_config.parent / "annex-state.sqlite3"
    assert not path.exists()
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.annexes() == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_the_knob_moves_the_file_and_a_relative_path_is_refused(tmp_path, user_config):
    assert default_path({"ANNEX_STATE_FILE": str(tmp_path / "s.db")}) == tmp_path / "s.db"
    with pytest.raises(BadInputError, match=r"^ANNEX_STATE_FILE: give an absolute path "
                                            r"\(got 'state.db'\); fix it in "):
        default_path({"ANNEX_STATE_FILE": "state.db"})


def test_rows_round_trip_with_times_and_units(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.put_annex("a1", {"instance_type": "m5.large"}, requested=3, lease_end=T1, now=T0)
        store.put_annex("a1", {"instance_type": "m5.large"}, requested=2, lease_end=T0, now=T0)
        store.record_launch("a1_tok", "a1", "ec2-fleet", 2, now=T0)
        store.set_launch_state("a1_tok", "launched", now=T1)
        store.add_instances("a1", ["i-1", "i-2"], state="requested", launch_token="a1_tok",
                            reason="returned by the launch call", now=T0)
        store.set_instance_state("i-1", expected="requested", to="allocated",
                                 reason="EC2 lists it running", at=T1)
        annex = store.annex("a1")
        # Adding instances adds to the size and never moves the lease end earlier.
        assert (annex.requested, annex.lease_end, annex.created_at) == (5, T1, T0)
        (req,) = store.launch_requests("a1")
        assert (req.kind, req.count, req.state, req.created_at, req.updated_at) == \
            ("ec2-fleet", 2, "launched", T0, T1)
        assert [(i.instance_id, i.state, i.since) for i in store.instances("a1")] == \
            [("i-1", "allocated", T1), ("i-2", "requested", T0)]
        assert [(t.from_state, t.to_state) for t in store.transitions("i-1")] == \
            [("", "requested"), ("requested", "allocated")]
        with pytest.raises(StaleStateError, match="i-1 is allocated, not requested"):
            store.set_instance_state("i-1", expected="requested", to="allocated", reason="x")
        with pytest.raises(sqlite3.IntegrityError):   # a client token is never reused
            store.record_launch("a1_tok", "a1", "on-demand", 1)
        assert store.end_annex("a1", at=T1) and not store.end_annex("a1")
        assert store.annexes() == [] and store.annexes(include_ended=True)[0].ended_at == T1


def test_migrations_apply_in_order_once_and_keep_rows(tmp_path):
    path = tmp_path / "s.db"
    v1 = (("CREATE TABLE t (a INTEGER)", "INSERT INTO t VALUES (1)"),)
    with Store(path, migrations=v1) as store:
        assert store.schema_version() == 1
    v3 = v1 + (("ALTER TABLE t ADD COLUMN b TEXT DEFAULT 'x'",),
               ("UPDATE t SET b = b || 'y'",))
    with Store(path, migrations=v3) as store:
        assert store.schema_version() == 3
        assert store._db.execute("SELECT a, b FROM t").fetchall() == [(1, "xy")]
    with Store(path, migrations=v3) as store:   # re-opening applies nothing again
        assert store._db.execute("SELECT a, b FROM t").fetchall() == [(1, "xy")]


def test_a_failed_migration_leaves_the_previous_version(tmp_path):
    path = tmp_path / "s.db"
    v1 = (("CREATE TABLE t (a INTEGER)",),)
    Store(path, migrations=v1).close()
    broken = v1 + (("ALTER TABLE t ADD COLUMN b TEXT", "ALTER TABLE nosuch ADD COLUMN c"),)
    with pytest.raises(BadInputError):
        Store(path, migrations=broken)
    with Store(path, migrations=v1) as store:
        assert store.schema_version() == 1
        assert [r[1] for r in store._db.execute("PRAGMA table_info(t)")] == ["a"]


def test_a_file_from_a_newer_version_is_refused_with_its_version(tmp_path):
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    db.close()
    with pytest.raises(BadInputError, match=rf"{path} has schema version {SCHEMA_VERSION + 5}, "
                                            rf"newer than this condor_annex understands "
                                            rf"\({SCHEMA_VERSION}\)"):
        Store(path)


def test_the_file_is_in_wal_mode_and_readable_during_a_write(tmp_path):
    path = tmp_path / "s.db"
    with Store(path) as writer, Store(path) as reader:
        assert writer._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        writer.put_annex("a1", {}, requested=1, lease_end=T1, now=T0)
        writer._db.execute("BEGIN IMMEDIATE")
        writer._db.execute("UPDATE annexes SET requested = 7")
        # The reader neither waits for nor sees the open write transaction.
        assert reader.annex("a1").requested == 1
        writer._db.execute("COMMIT")
        assert reader.annex("a1").requested == 7


def test_a_corrupt_file_is_one_line_naming_it_and_the_rebuild_exit_2(user_config, capsys):
    path = default_path({})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database\n" * 100)
    assert main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(path) in err and "condor_annex sweep --adopt" in err
    assert path.read_bytes() == b"this is not a database\n" * 100   # nothing overwritten


_WRITER = textwrap.dedent("""
    import sys, time
    from condor_annex.state.store import Store
    with Store(sys.argv[1]) as store:
        for i in range(150):
            store.record_launch(f"{sys.argv[2]}_{i}", "a1", "on-demand", 1)
            time.sleep(0.002)
""")


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "s.db"
    Store(path).close()
    other = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), "them"],
                             stderr=subprocess.PIPE, text=True)
    with Store(path) as store:
        deadline = time.monotonic() + 30
        while not store.launch_requests("a1") and time.monotonic() < deadline:
            time.sleep(0.01)   # start once the other writer is writing
        for i in range(150):
            store.record_launch(f"us_{i}", "a1", "on-demand", 1)
            time.sleep(0.002)
    assert other.wait(timeout=60) == 0, other.stderr.read()
    with Store(path) as store:
        order = [r[0].split("_")[0] for r in store._db.execute(
            "SELECT client_token FROM launch_requests ORDER BY rowid")]
    assert sorted(order) == ["them"] * 150 + ["us"] * 150
    # The two really wrote at the same time: their rows interleave.
    assert sum(a != b for a, b in zip(order, order[1:])) > 2


def test_list_shows_the_annexes_of_the_store(user_config, capsys):
    with Store(default_path({})) as store:
        store.put_annex("a1", {}, requested=3, lease_end=T1, now=T0)
        store.record_launch("a1_tok", "a1", "on-demand", 3, now=T0)
        store.put_annex("gone", {}, requested=1, lease_end=T1, now=T0)
        store.end_annex("gone")
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == [{"name": "a1", "requested": 3, "lease_end": "2026-01-01T13:00:00Z",
                     "created_at": "2026-01-01T12:00:00Z", "ended_at": None,
                     "launch_stopped": "",
                     "launch_requests": [{"client_token": "a1_tok", "kind": "on-demand",
                                          "count": 3, "state": "recorded"}]}]
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "a1" in out and "3 on-demand recorded" in out and "gone" not in out


def test_a_new_file_has_every_table_at_the_current_version(tmp_path):
    with Store(tmp_path / "s.db") as store:
        tables = {r[0] for r in store._db.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
    assert tables == {"annexes", "launch_requests", "instances", "transitions", "saved_logs",
                      "observations", "daemon", "interruptions", "replacements", "autoscale"}


def test_a_version_1_file_is_migrated_keeping_its_annexes(tmp_path):
    """A state file written before annexd (schema 1) opens with its rows kept, and an off
    can then be recorded on it."""
    path = tmp_path / "s.db"
    with Store(path, migrations=MIGRATIONS[:1]) as old:
        assert old.schema_version() == 1
        old._db.execute("INSERT INTO annexes (name, spec, requested, created_at) "
                        "VALUES ('a1', '{}', 2, 0)")
    with Store(path) as store:
        assert store.schema_version() == SCHEMA_VERSION
        assert store.annex("a1").requested == 2
        assert store.annex("a1").off_requested_at is None
        assert store.request_off("a1")
        assert store.annex("a1").off_requested_at is not None


def test_observations_replace_the_previous_pass(tmp_path):
    with Store(tmp_path / "s.db") as store:
        assert store.observations() == (None, {})
        store.put_observations({"a1": {"running": 1}, "a2": {"running": 2}})
        store.put_observations({"a2": {"running": 3}})
        at, seen = store.observations()
        assert at is not None and seen == {"a2": {"running": 3}}


def test_a_saved_console_outlives_its_instance(tmp_path):
    with Store(tmp_path / "s.db") as store:
        assert store.saved_log("i-1") is None
        store.save_log("i-1", "a1", "boot failed", "agent: collector unreachable")
        saved = store.saved_log("i-1")
        assert (saved.annex, saved.console, saved.agent_log) == (
            "a1", "boot failed", "agent: collector unreachable")


def test_a_name_used_again_after_its_annex_ended_does_not_inherit_its_instances(tmp_path):
    """Regression (make demo): a second demo annex showed the first one's instances as
    "not listed by EC2 180 s after its launch"."""
    with Store(tmp_path / "s.db") as store:
        store.put_annex("demo", {}, requested=1, lease_end=None)
        store.record_launch("demo_old", "demo", "on-demand", 1)
        store.add_instances("demo", ["i-old"], state="requested", reason="launched")
        store.end_annex("demo")
        store.put_annex("demo", {}, requested=1, lease_end=None)
        assert store.instances("demo") == [] and store.launch_requests("demo") == []
        assert store.transitions("i-old") == []
        store.add_instances("demo", ["i-old"], state="requested", reason="again")
        assert [t.reason for t in store.transitions("i-old")] == ["again"]


def test_an_interruption_is_recorded_once(tmp_path):
    with Store(tmp_path / "s.db") as store:
        assert store.record_interruption("i-1", "a1", "m5.large", "spot interruption")
        assert not store.record_interruption("i-1", "a1", "m5.large", "again")
        assert store.interrupted() == ["i-1"]
        assert [(i, t) for i, t, _ in store.interruptions("a1")] == [("i-1", "m5.large")]
