"""The state store: one SQLite file per user (``ANNEX_STATE_FILE``, default
``annex-state.sqlite3`` beside the user config, i.e. ``~/.condor/annex-state.sqlite3``), where the
command line and the annex daemon meet.

It holds each annex's desired state, each launch request (its client token written **before**
the cloud call, so a command killed during the call can be resumed or rolled back with that
token), each instance's lifecycle state and the history of its transitions.

Design (SQLite documentation followed):

* WAL journal (https://sqlite.org/wal.html): readers never block the writer, so ``status`` can
  read while a daemon pass writes;
* every write is one short ``BEGIN IMMEDIATE`` transaction (the write lock taken at once, so two
  writers queue on ``busy_timeout`` instead of failing with a deadlock on lock upgrade:
  https://sqlite.org/lang_transaction.html);
* the schema version is ``PRAGMA user_version`` (https://sqlite.org/pragma.html#pragma_user_version);
  :data:`MIGRATIONS` are applied in order, each in its own transaction with the version bump, so a
  crash mid-upgrade leaves the previous version intact.  A file from a newer condor_annex is
  refused with its version (an old program must not write rows it does not understand).

Times are stored as Unix seconds (REAL) and returned as aware UTC datetimes.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from condor_annex import config
from condor_annex.errors import BadInputError
from condor_annex.state.records import (LAUNCH_KINDS, LAUNCH_STATES, AnnexRecord,
                                        InstanceRecord, LaunchRecord, SavedLog,
                                        TransitionRecord)
from condor_annex.state.autoscale_record import AutoscaleRecord

#: The knob naming the state file.
STATE_FILE_KNOB = "ANNEX_STATE_FILE"
#: The state file's name beside the user config (``~/.condor/``) when the knob is not set.
DEFAULT_FILE_NAME = "annex-state.sqlite3"
#: Seconds a writer waits for another's transaction before failing (SQLite busy_timeout).
BUSY_TIMEOUT_S = 10.0

#: Schema migrations, oldest first: migration ``i`` (0-based) takes the file from version ``i``
#: to ``i + 1``.  Append only; never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the four tables of issue 11.
    (
        """CREATE TABLE annexes (
               name TEXT PRIMARY KEY,
               spec TEXT NOT NULL,                 -- JSON: what the user asked for
               requested INTEGER NOT NULL,         -- instances / weighted capacity
               lease_end REAL,                     -- Unix seconds, NULL until known
               created_at REAL NOT NULL,
               ended_at REAL,                      -- NULL while the annex lives
               launch_stopped TEXT NOT NULL DEFAULT ''
           )""",
        """CREATE TABLE launch_requests (
               client_token TEXT PRIMARY KEY,
               annex TEXT NOT NULL,
               kind TEXT NOT NULL CHECK (kind IN ('on-demand', 'ec2-fleet', 'spot-fleet')),
               count INTEGER NOT NULL,
               state TEXT NOT NULL,
               created_at REAL NOT NULL,
               updated_at REAL NOT NULL
           )""",
        "CREATE INDEX launch_requests_annex ON launch_requests (annex)",
        """CREATE TABLE instances (
               instance_id TEXT PRIMARY KEY,
               annex TEXT NOT NULL,
               launch_token TEXT NOT NULL DEFAULT '',
               state TEXT NOT NULL,
               since REAL NOT NULL
           )""",
        "CREATE INDEX instances_annex ON instances (annex)",
        """CREATE TABLE transitions (
               instance_id TEXT NOT NULL,
               from_state TEXT NOT NULL,
               to_state TEXT NOT NULL,
               at REAL NOT NULL,
               reason TEXT NOT NULL
           )""",
        "CREATE INDEX transitions_instance ON transitions (instance_id, at)",
    ),
    # 2: what annexd needs: a recorded ``off`` (desired state "ended"), consoles saved before a
    # terminate, each annex's status as of the last pass, and the daemon's own report.
    (
        # NULL unless an ``off`` started (and maybe died part-way): the reconciler finishes it.
        "ALTER TABLE annexes ADD COLUMN off_requested_at REAL",
        """CREATE TABLE saved_logs (
               instance_id TEXT PRIMARY KEY,
               annex TEXT NOT NULL,
               at REAL NOT NULL,
               console TEXT NOT NULL,
               agent_log TEXT NOT NULL DEFAULT ''
           )""",
        """CREATE TABLE observations (
               annex TEXT PRIMARY KEY,
               at REAL NOT NULL,
               status TEXT NOT NULL                -- JSON: the annex's status as observed
           )""",
        """CREATE TABLE daemon (
               id INTEGER PRIMARY KEY CHECK (id = 1),
               report TEXT NOT NULL,               -- JSON: pid, host, passes, errors, ...
               at REAL NOT NULL
           )""",
    ),
    # 3: spot interruptions (issue 12): which instances EC2 ended by one, for status and for
    # replacing the capacity.
    (
        """CREATE TABLE interruptions (
               instance_id TEXT PRIMARY KEY,
               annex TEXT NOT NULL,
               instance_type TEXT NOT NULL DEFAULT '',
               at REAL NOT NULL,
               reason TEXT NOT NULL
           )""",
        "CREATE INDEX interruptions_annex ON interruptions (annex)",
    ),
    # 4: replacements of interrupted capacity (issue 12): wanted by a pass, launched (or
    # skipped, with why) by the service after it.
    (
        """CREATE TABLE replacements (
               instance_id TEXT PRIMARY KEY,       -- the interrupted instance it replaces
               annex TEXT NOT NULL,
               instance_type TEXT NOT NULL DEFAULT '',
               state TEXT NOT NULL,                -- wanted, launching, launched, skipped
               client_token TEXT NOT NULL DEFAULT '',
               reason TEXT NOT NULL,
               at REAL NOT NULL
           )""",
    ),
    # 5: demand-driven annexes (issue 13): bounds, the slot template demand is matched against,
    # when demand was first seen above capacity (survives a restart), and the last pass's
    # decision (target, growth wanted, why) for status and for annexd's launch.
    (
        """CREATE TABLE autoscale (
               annex TEXT PRIMARY KEY,
               min_count INTEGER NOT NULL,
               max_count INTEGER NOT NULL,
               template TEXT NOT NULL,             -- JSON: the slot ad's attributes
               above_since REAL,                   -- NULL: demand not above capacity
               demand INTEGER,                     -- NULL: not known last pass
               target INTEGER NOT NULL DEFAULT 0,
               want INTEGER NOT NULL DEFAULT 0,    -- instances annexd is to launch
               want_keep INTEGER NOT NULL DEFAULT 0,  -- of which kept up to --min
               why TEXT NOT NULL DEFAULT '',
               at REAL
           )""",
    ),
)
#: The schema version this program writes.
SCHEMA_VERSION = len(MIGRATIONS)


class StaleStateError(RuntimeError):
    """A compare-and-swap on an instance's state found another state (a concurrent writer moved
    it first).  The caller re-reads and re-plans."""


def default_path(knobs: dict[str, str] | None = None) -> Path:
    """Where the state file is: the ``ANNEX_STATE_FILE`` knob, else ``annex-state.sqlite3``
    in the user config's directory (``~/.condor/``; tests move it with
    ``CONDOR_ANNEX_USER_CONFIG``, so they never touch the real one).

    Args:
        knobs: the user's knobs (:func:`condor_annex.config.read_knobs`); read when None.

    Raises:
        BadInputError: the knob is not an absolute path (``~`` allowed).
    """
    knobs = config.read_knobs() if knobs is None else knobs
    text = knobs.get(STATE_FILE_KNOB, "").strip()
    if not text:
        return config.user_config_path().parent / DEFAULT_FILE_NAME
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise BadInputError(f"{STATE_FILE_KNOB}: give an absolute path (got {text!r}); fix it "
                            f"in {config.user_config_path()}")
    return path


def _rebuild_hint(path: Path, what: str) -> BadInputError:
    """The one-line error for a state file that cannot be used."""
    return BadInputError(f"{STATE_FILE_KNOB}: {path} {what}; move it aside and rebuild it from "
                         "the cloud with 'condor_annex sweep --adopt' (re-imports what carries "
                         "our tags)")


def _ts(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else _at(ts)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Store:
    """An open state file.  Use as a context manager, or call :meth:`close`.

    Not shared between threads (one ``sqlite3`` connection); open one per process or thread.
    Several processes may use one file at once: writes serialize on SQLite's lock.

    Args:
        path: the file; created (mode 600, its directory 700) when missing.
        migrations: the schema migrations (tests pass their own); default :data:`MIGRATIONS`.

    Raises:
        BadInputError: the file is not a SQLite database or is damaged (naming the file and
            ``condor_annex sweep --adopt``), is a directory, or was written by a newer
            condor_annex (naming its version).
    """

    def __init__(self, path: Path, *,
                 migrations: Sequence[Sequence[str]] = MIGRATIONS) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise _rebuild_hint(self.path, "is a directory, not a state file")
        if not self.path.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Created private before SQLite opens it: it names the user's annexes.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S,
                                       isolation_level=None)   # transactions are explicit
        except sqlite3.Error as e:
            raise _rebuild_hint(self.path, f"cannot be opened ({e})") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            self._migrate(migrations)
        except sqlite3.DatabaseError as e:
            self._db.close()
            if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
                raise
            raise _rebuild_hint(self.path, f"is not a readable state file ({e})") from None
        except BaseException:
            self._db.close()
            raise

    # --- lifecycle of the connection -----------------------------------------------------

    def close(self) -> None:
        """Close the file (idempotent)."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (``BEGIN IMMEDIATE``: the write lock taken at once)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def schema_version(self) -> int:
        """The file's ``PRAGMA user_version``."""
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, migrations: Sequence[Sequence[str]]) -> None:
        """Apply the migrations the file lacks, in order, each with its version bump in one
        transaction; the version is re-read under the write lock (two processes opening an
        old file at once migrate it once)."""
        newest = len(migrations)
        version = self.schema_version()
        if version > newest:
            raise BadInputError(
                f"{STATE_FILE_KNOB}: {self.path} has schema version {version}, newer than this "
                f"condor_annex understands ({newest}); use the condor_annex that wrote it, or "
                "upgrade")
        while version < newest:
            with self._write() as db:
                version = self.schema_version()
                if version >= newest:
                    break
                for statement in migrations[version]:
                    db.execute(statement)
                # PRAGMA takes no parameters; the value is our own integer.
                db.execute(f"PRAGMA user_version = {version + 1:d}")
            version = self.schema_version()

    # --- annexes ---------------------------------------------------------------------------

    def put_annex(self, name: str, spec: dict[str, Any], *, requested: int,
                  lease_end: datetime | None, now: datetime | None = None) -> None:
        """Record an annex's desired state (a new annex, or instances added to one).

        A new row is created with ``requested``; for an existing live annex ``requested`` is
        added to its size, the spec replaced and the lease end moved to the later of the two.
        An annex that had ended and is created again starts afresh: the ended one's instances,
        transitions and launch requests are dropped.

        Args:
            name: annex name.
            spec: JSON-ready desired state (no user data, no token).
            requested: instances / weighted capacity this create adds (>= 0).
            lease_end: the lease end (aware UTC), or None.
            now: creation time (aware UTC); default the clock.
        """
        now_s = (now or _now()).timestamp()
        spec_json = json.dumps(spec, sort_keys=True, default=str)
        with self._write() as db:
            row = db.execute("SELECT requested, lease_end, ended_at FROM annexes WHERE name=?",
                             (name,)).fetchone()
            if row is not None and row[2] is not None:
                # A name used again after its annex ended: the old annex's instances and launch
                # requests are not this one's (their saved consoles stay, by instance id).
                db.execute("DELETE FROM transitions WHERE instance_id IN (SELECT instance_id "
                           "FROM instances WHERE annex=?)", (name,))
                db.execute("DELETE FROM instances WHERE annex=?", (name,))
                db.execute("DELETE FROM launch_requests WHERE annex=?", (name,))
                db.execute("DELETE FROM autoscale WHERE annex=?", (name,))
            if row is None or row[2] is not None:
                db.execute("INSERT OR REPLACE INTO annexes (name, spec, requested, lease_end, "
                           "created_at, ended_at, launch_stopped, off_requested_at) "
                           "VALUES (?,?,?,?,?,NULL,'',NULL)",
                           (name, spec_json, requested, _ts(lease_end), now_s))
            else:
                end = max((e for e in (row[1], _ts(lease_end)) if e is not None), default=None)
                db.execute("UPDATE annexes SET spec=?, requested=?, lease_end=? WHERE name=?",
                           (spec_json, row[0] + requested, end, name))

    def set_lease_end(self, name: str, lease_end: datetime) -> None:
        """Record the annex's lease end (``extend``, or the lease found by a pass)."""
        with self._write() as db:
            db.execute("UPDATE annexes SET lease_end=? WHERE name=?", (_ts(lease_end), name))

    def end_annex(self, name: str, *, at: datetime | None = None) -> bool:
        """Mark the annex ended (``off`` finished, or the reconciler ended it).

        Returns:
            True when a live annex of that name was marked; False when unknown or ended.
        """
        with self._write() as db:
            cur = db.execute("UPDATE annexes SET ended_at=? WHERE name=? AND ended_at IS NULL",
                             ((at or _now()).timestamp(), name))
            return cur.rowcount > 0

    def stop_launching(self, name: str, reason: str) -> None:
        """Record why no more replacements are launched for the annex ("" resumes them)."""
        with self._write() as db:
            db.execute("UPDATE annexes SET launch_stopped=? WHERE name=?", (reason, name))

    def annex(self, name: str) -> AnnexRecord | None:
        """The annex's record, or None when the store does not know it."""
        rows = self._annexes("WHERE name=?", (name,))
        return rows[0] if rows else None

    def annexes(self, *, include_ended: bool = False) -> list[AnnexRecord]:
        """Every annex (live ones only unless ``include_ended``), by name."""
        return self._annexes("" if include_ended else "WHERE ended_at IS NULL", ())

    def _annexes(self, where: str, args: tuple) -> list[AnnexRecord]:
        rows = self._db.execute(
            "SELECT name, spec, requested, lease_end, created_at, ended_at, launch_stopped, "
            f"off_requested_at FROM annexes {where} ORDER BY name", args).fetchall()
        return [AnnexRecord(r[0], json.loads(r[1]), r[2], _dt(r[3]), _at(r[4]), _dt(r[5]), r[6],
                            _dt(r[7]))
                for r in rows]

    def request_off(self, name: str, *, at: datetime | None = None) -> bool:
        """Record that ``off`` started ending the annex (before its first cloud call), so a pass
        finishes the job if the command dies part-way.

        Returns:
            True when a live annex of that name was marked; False when unknown or ended.
        """
        with self._write() as db:
            cur = db.execute("UPDATE annexes SET off_requested_at=? WHERE name=? AND "
                             "ended_at IS NULL", ((at or _now()).timestamp(), name))
            return cur.rowcount > 0

    # --- launch requests -------------------------------------------------------------------

    def record_launch(self, client_token: str, annex: str, kind: str, count: int, *,
                      now: datetime | None = None) -> None:
        """Record a launch request in state ``recorded`` **before** its cloud call.

        Args:
            client_token: the idempotency token the call will send.
            annex: the annex.
            kind: ``on-demand``, ``ec2-fleet`` or ``spot-fleet``.
            count: instances / weighted capacity.
            now: when (aware UTC); default the clock.

        Raises:
            ValueError: an unknown kind.
            sqlite3.IntegrityError: the token was recorded already (tokens are never reused).
        """
        if kind not in LAUNCH_KINDS:
            raise ValueError(f"launch kind {kind!r} is not one of {LAUNCH_KINDS}")
        now_s = (now or _now()).timestamp()
        with self._write() as db:
            db.execute("INSERT INTO launch_requests (client_token, annex, kind, count, state, "
                       "created_at, updated_at) VALUES (?,?,?,?,'recorded',?,?)",
                       (client_token, annex, kind, count, now_s, now_s))

    def set_launch_state(self, client_token: str, state: str, *,
                         now: datetime | None = None) -> None:
        """Move a launch request to ``state`` (one of
        :data:`~condor_annex.state.records.LAUNCH_STATES`).

        Raises:
            ValueError: an unknown state.
            KeyError: no request has that token.
        """
        if state not in LAUNCH_STATES:
            raise ValueError(f"launch state {state!r} is not one of {LAUNCH_STATES}")
        with self._write() as db:
            cur = db.execute("UPDATE launch_requests SET state=?, updated_at=? "
                             "WHERE client_token=?",
                             (state, (now or _now()).timestamp(), client_token))
            if cur.rowcount == 0:
                raise KeyError(client_token)

    def launch_requests(self, annex: str | None = None) -> list[LaunchRecord]:
        """Launch requests (of one annex, or all), oldest first."""
        where, args = ("WHERE annex=?", (annex,)) if annex else ("", ())
        rows = self._db.execute(
            "SELECT client_token, annex, kind, count, state, created_at, updated_at "
            f"FROM launch_requests {where} ORDER BY created_at, client_token", args).fetchall()
        return [LaunchRecord(r[0], r[1], r[2], r[3], r[4], _at(r[5]), _at(r[6])) for r in rows]

    # --- instances and their transitions ---------------------------------------------------

    def add_instances(self, annex: str, instance_ids: Sequence[str], *, state: str,
                      launch_token: str = "", reason: str, now: datetime | None = None) -> int:
        """Record instances the store did not know, in ``state``, each with a first transition
        (from "").  Known ids are left as they are.

        Returns:
            how many were new.
        """
        now_s = (now or _now()).timestamp()
        added = 0
        with self._write() as db:
            for iid in instance_ids:
                cur = db.execute("INSERT OR IGNORE INTO instances (instance_id, annex, "
                                 "launch_token, state, since) VALUES (?,?,?,?,?)",
                                 (iid, annex, launch_token, state, now_s))
                if cur.rowcount:
                    added += 1
                    db.execute("INSERT INTO transitions VALUES (?,?,?,?,?)",
                               (iid, "", state, now_s, reason))
        return added

    def instance(self, instance_id: str) -> InstanceRecord | None:
        """The instance's record, or None."""
        rows = self._instances("WHERE instance_id=?", (instance_id,))
        return rows[0] if rows else None

    def instances(self, annex: str | None = None) -> list[InstanceRecord]:
        """Instances (of one annex, or all), by id."""
        where, args = ("WHERE annex=?", (annex,)) if annex else ("", ())
        return self._instances(where, args)

    def _instances(self, where: str, args: tuple) -> list[InstanceRecord]:
        rows = self._db.execute("SELECT instance_id, annex, launch_token, state, since "
                                f"FROM instances {where} ORDER BY instance_id", args).fetchall()
        return [InstanceRecord(r[0], r[1], r[2], r[3], _at(r[4])) for r in rows]

    def set_instance_state(self, instance_id: str, *, expected: str, to: str, reason: str,
                           at: datetime | None = None) -> None:
        """Compare-and-swap an instance's lifecycle state and append the transition, in one
        transaction.  Callers go through :func:`condor_annex.state.lifecycle.transition`,
        which checks the edge against the transitions table.

        Raises:
            KeyError: the store does not know the instance.
            StaleStateError: its state is not ``expected`` any more.
        """
        at_s = (at or _now()).timestamp()
        with self._write() as db:
            cur = db.execute("UPDATE instances SET state=?, since=? "
                             "WHERE instance_id=? AND state=?", (to, at_s, instance_id, expected))
            if cur.rowcount == 0:
                row = db.execute("SELECT state FROM instances WHERE instance_id=?",
                                 (instance_id,)).fetchone()
                if row is None:
                    raise KeyError(instance_id)
                raise StaleStateError(f"instance {instance_id} is {row[0]}, not {expected}")
            db.execute("INSERT INTO transitions VALUES (?,?,?,?,?)",
                       (instance_id, expected, to, at_s, reason))

    def transitions(self, instance_id: str) -> list[TransitionRecord]:
        """The instance's transitions, oldest first."""
        rows = self._db.execute("SELECT instance_id, from_state, to_state, at, reason "
                                "FROM transitions WHERE instance_id=? ORDER BY at, rowid",
                                (instance_id,)).fetchall()
        return [TransitionRecord(r[0], r[1], r[2], _at(r[3]), r[4]) for r in rows]


    def join_outcomes(self) -> dict[str, tuple[bool, ...]]:
        """Per live annex, whether each instance that finished trying to join joined (True)
        or never joined (False), in the order it happened (the planner's protected mode)."""
        rows = self._db.execute(
            "SELECT i.annex, t.to_state FROM transitions t "
            "JOIN instances i ON i.instance_id = t.instance_id "
            "JOIN annexes a ON a.name = i.annex AND a.ended_at IS NULL "
            "WHERE t.to_state IN ('joined', 'never-joined') ORDER BY t.at, t.rowid").fetchall()
        out: dict[str, list[bool]] = {}
        for annex, to in rows:
            out.setdefault(annex, []).append(to == "joined")
        return {k: tuple(v) for k, v in out.items()}

    def last_transitions(self, annex: str) -> dict[str, TransitionRecord]:
        """Each instance of the annex -> its latest transition (why it is in its state)."""
        rows = self._db.execute(
            "SELECT t.instance_id, t.from_state, t.to_state, t.at, t.reason FROM transitions t "
            "JOIN instances i ON i.instance_id = t.instance_id WHERE i.annex=? "
            "ORDER BY t.at, t.rowid", (annex,)).fetchall()
        return {r[0]: TransitionRecord(r[0], r[1], r[2], _at(r[3]), r[4]) for r in rows}

    # --- spot interruptions ----------------------------------------------------------------

    def record_interruption(self, instance_id: str, annex: str, instance_type: str, reason: str,
                            *, at: datetime | None = None) -> bool:
        """Record a spot interruption of an instance (once).  Returns True when new."""
        with self._write() as db:
            cur = db.execute("INSERT OR IGNORE INTO interruptions VALUES (?,?,?,?,?)",
                             (instance_id, annex, instance_type,
                              (at or _now()).timestamp(), reason))
            return cur.rowcount > 0

    def interrupted(self) -> list[str]:
        """Ids of every instance whose interruption is recorded."""
        return [r[0] for r in self._db.execute("SELECT instance_id FROM interruptions")]

    def interruptions(self, annex: str) -> list[tuple[str, str, datetime]]:
        """The annex's interruptions: (instance id, instance type, when), oldest first."""
        rows = self._db.execute("SELECT instance_id, instance_type, at FROM interruptions "
                                "WHERE annex=? ORDER BY at", (annex,)).fetchall()
        return [(r[0], r[1], _at(r[2])) for r in rows]

    def want_replacement(self, instance_id: str, annex: str, instance_type: str,
                         reason: str, *, at: datetime | None = None) -> bool:
        """Record that the capacity of an interrupted instance is to be replaced (once)."""
        with self._write() as db:
            cur = db.execute("INSERT OR IGNORE INTO replacements VALUES (?,?,?,'wanted','',?,?)",
                             (instance_id, annex, instance_type, reason,
                              (at or _now()).timestamp()))
            return cur.rowcount > 0

    def replacements(self, annex: str | None = None,
                     state: str | None = None) -> list[tuple[str, str, str, str, str]]:
        """Replacements (of one annex, in one state): (interrupted instance id, annex,
        instance type, state, reason), oldest first."""
        where, args = [], []
        if annex:
            where.append("annex=?")
            args.append(annex)
        if state:
            where.append("state=?")
            args.append(state)
        sql = "SELECT instance_id, annex, instance_type, state, reason FROM replacements"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [tuple(r) for r in self._db.execute(sql + " ORDER BY at", args)]  # type: ignore[misc]

    def set_replacement(self, instance_id: str, state: str, reason: str,
                        client_token: str = "") -> None:
        """Move a replacement to ``launching``, ``launched`` (with its client token) or
        ``skipped`` (with why)."""
        with self._write() as db:
            db.execute("UPDATE replacements SET state=?, reason=?, client_token=? "
                       "WHERE instance_id=?", (state, reason, client_token, instance_id))

    def update_spec(self, name: str, extra: dict[str, Any]) -> None:
        """Merge ``extra`` (JSON-ready) into the live annex's recorded spec."""
        with self._write() as db:
            row = db.execute("SELECT spec FROM annexes WHERE name=? AND ended_at IS NULL",
                             (name,)).fetchone()
            if row is None:
                return
            spec = {**json.loads(row[0]), **extra}
            db.execute("UPDATE annexes SET spec=? WHERE name=? AND ended_at IS NULL",
                       (json.dumps(spec, sort_keys=True, default=str), name))

    # --- demand-driven annexes (issue 13) ---------------------------------------------------

    def put_autoscale(self, name: str, min_count: int, max_count: int,
                      template: dict[str, Any]) -> None:
        """Record an annex's autoscale bounds (instances) and slot template (JSON-ready
        attributes); a decision recorded earlier is kept."""
        with self._write() as db:
            db.execute("INSERT INTO autoscale (annex, min_count, max_count, template) "
                       "VALUES (?,?,?,?) ON CONFLICT (annex) DO UPDATE SET min_count="
                       "excluded.min_count, max_count=excluded.max_count, template="
                       "excluded.template", (name, min_count, max_count,
                                             json.dumps(template, sort_keys=True)))

    def set_autoscale(self, name: str, **values: Any) -> None:
        """Update an autoscale row's decision columns (``above_since`` aware UTC or None,
        ``demand``, ``target``, ``want``, ``want_keep``, ``why``, ``at``)."""
        allowed = ("above_since", "demand", "target", "want", "want_keep", "why", "at")
        cols = [k for k in values if k in allowed]
        if len(cols) != len(values):
            raise ValueError(f"autoscale columns are {allowed}")
        args = [_ts(v) if isinstance(v, datetime) else v for v in values.values()]
        with self._write() as db:
            db.execute(f"UPDATE autoscale SET {', '.join(c + '=?' for c in cols)} "
                       "WHERE annex=?", (*args, name))

    def autoscale(self) -> dict[str, AutoscaleRecord]:
        """Autoscale rows of live annexes, by annex."""
        rows = self._db.execute(
            "SELECT s.annex, min_count, max_count, template, above_since, demand, target, "
            "want, want_keep, why, at FROM autoscale s JOIN annexes a ON a.name = s.annex "
            "AND a.ended_at IS NULL ORDER BY s.annex").fetchall()
        return {r[0]: AutoscaleRecord(r[0], r[1], r[2], json.loads(r[3]), _dt(r[4]), r[5],
                                      r[6], r[7], r[8], r[9], _dt(r[10])) for r in rows}

    # --- saved consoles --------------------------------------------------------------------

    def save_log(self, instance_id: str, annex: str, console: str, agent_log: str = "", *,
                 at: datetime | None = None) -> None:
        """Keep an instance's console output (and its agent's uploaded log) saved before it was
        terminated: EC2 answers GetConsoleOutput only for a while after an instance ends."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO saved_logs VALUES (?,?,?,?,?)",
                       (instance_id, annex, (at or _now()).timestamp(), console, agent_log))

    def saved_log(self, instance_id: str) -> SavedLog | None:
        """The console saved for an instance, or None."""
        row = self._db.execute("SELECT instance_id, annex, at, console, agent_log "
                               "FROM saved_logs WHERE instance_id=?", (instance_id,)).fetchone()
        return None if row is None else SavedLog(row[0], row[1], _at(row[2]), row[3], row[4])

    # --- what the last pass observed -------------------------------------------------------

    def put_observations(self, statuses: dict[str, dict[str, Any]], *,
                         at: datetime | None = None) -> None:
        """Replace every annex's observed status (JSON-ready dicts, ``status --json``'s shape)
        with a pass's, in one transaction: readers see one pass, never a mix."""
        at_s = (at or _now()).timestamp()
        with self._write() as db:
            db.execute("DELETE FROM observations")
            db.executemany("INSERT INTO observations VALUES (?,?,?)",
                           [(name, at_s, json.dumps(st, sort_keys=True, default=str))
                            for name, st in statuses.items()])

    def observations(self) -> tuple[datetime | None, dict[str, dict[str, Any]]]:
        """(when the last pass observed, annex -> its observed status); (None, {}) before any
        pass."""
        rows = self._db.execute("SELECT annex, at, status FROM observations ORDER BY annex"
                                ).fetchall()
        if not rows:
            return None, {}
        return _at(max(r[1] for r in rows)), {r[0]: json.loads(r[2]) for r in rows}

    # --- the daemon's report ---------------------------------------------------------------

    def put_daemon_report(self, report: dict[str, Any], *, at: datetime | None = None) -> None:
        """Record annexd's report (JSON-ready: pid, host, passes, errors, throttled calls...)."""
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO daemon VALUES (1,?,?)",
                       (json.dumps(report, sort_keys=True, default=str),
                        (at or _now()).timestamp()))

    def daemon_report(self) -> tuple[datetime, dict[str, Any]] | None:
        """(when written, annexd's last report), or None when no daemon ever ran on this file."""
        row = self._db.execute("SELECT report, at FROM daemon WHERE id=1").fetchone()
        return None if row is None else (_at(row[1]), json.loads(row[0]))


def open_store(knobs: dict[str, str] | None = None, path: Path | None = None) -> Store:
    """Open the user's state file (:func:`default_path`), creating it when missing.

    Raises:
        BadInputError: see :class:`Store`.
    """
    return Store(path or default_path(knobs))
