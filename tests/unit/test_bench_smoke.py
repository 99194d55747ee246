"""The benchmarks' smoke mode (``python -m benchmarks --smoke``) runs and reports numbers.

Runs against a private moto server in a child process (N=1, few repetitions; no local cloud),
so it checks the harness end to end: the table is printed, the JSON has the expected rows, and
every row has a number.  The full benchmark (``make bench``) never runs in the test suite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXPECTED_ROWS = {"calls.create.n1", "calls.status.n1", "startup.help", "startup.status"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """Run the smoke benchmark once; yield (completed process, parsed latest.json)."""
    out_dir = tmp_path_factory.mktemp("bench-results")
    env = dict(os.environ, CONDOR_ANNEX_USER_CONFIG=str(out_dir / "never-used"),
               COLUMNS="200")
    p = subprocess.run([sys.executable, "-m", "benchmarks", "--smoke", "--results-dir",
                        str(out_dir)], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0, p.stderr[-3000:]
    doc = json.loads((out_dir / "latest.json").read_text())
    stamped = [f for f in out_dir.glob("*.json") if f.name != "latest.json"]
    assert len(stamped) == 1 and json.loads(stamped[0].read_text()) == doc
    yield p, doc


def test_json_has_the_expected_rows_with_numbers(smoke):
    _, doc = smoke
    rows = {r["key"]: r for r in doc["rows"]}
    assert EXPECTED_ROWS <= set(rows)
    for key in EXPECTED_ROWS:
        r = rows[key]
        assert r["error"] == "" and r["runs"] >= 1, r
        assert isinstance(r["value"], (int, float)) and math.isfinite(r["value"]), r
        assert r["min"] <= r["value"] <= r["max"], r
    assert rows["startup.status"]["runs"] == 3 and 0 < rows["startup.status"]["value"] < 30


def test_call_counts_are_plausible(smoke):
    _, doc = smoke
    rows = {r["key"]: r for r in doc["rows"]}
    create = rows["calls.create.n1"]
    assert 1 <= create["value"] <= 50
    assert create["extra"]["by_operation"].get("ec2.RunInstances") == 1
    assert rows["calls.status.n1"]["extra"]["describe_instances"] >= 1
    top = rows["startup.status"]["extra"]["importtime_top3"]
    assert len(top) == 3 and all(t["cumulative_ms"] > 0 for t in top)


def test_table_is_printed_with_all_columns(smoke):
    p, doc = smoke
    for col in ("what", "ours", "reference", "ratio", "target", "runs", "min–max"):
        assert col in p.stdout
    assert doc["columns"] == ["what", "ours", "reference", "ratio", "target", "runs", "min–max"]
    assert "API calls per create, N=1" in p.stdout
    assert doc["mode"] == "smoke"
