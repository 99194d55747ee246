"""The annexd benchmark rows (``benchmarks/annexd_rows.py``, issue 11) run end to end at a tiny
size: ``python -m benchmarks.annexd_rows --smoke`` (3 annexes, 6 instances, one run per side,
private moto servers in a child process; about 15 s).  ``make bench`` runs them at full size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.annexd_rows import add_original
from benchmarks.report import Row

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def smoke_rows(tmp_path_factory):
    """The rows the smoke run printed, by key."""
    env = dict(os.environ, CONDOR_ANNEX_USER_CONFIG=str(
        tmp_path_factory.mktemp("annexd-bench") / "never-used"))
    p = subprocess.run([sys.executable, "-m", "benchmarks.annexd_rows", "--smoke"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    return {r["key"]: r for r in rows}


def test_a_steady_pass_over_every_annex_reads_one_page(smoke_rows):
    r = smoke_rows["annexd.describe.n6"]
    assert r["error"] == "" and r["value"] == 1 and r["target_ok"] is True, r
    ops = r["extra"]["by_operation"]
    assert ops["ec2.DescribeInstances"] == 1
    assert ops["scheduler.GetSchedule"] == 3          # one per annex's lease
    assert r["extra"]["instances_seen"] == 6 and r["extra"]["annexes"] == 3
    assert r["extra"]["actions"] == 0, "the cloud was not set up as create leaves it"
    assert r["extra"]["page_size"] == 1000
    assert len(r["extra"]["status_from_store_s"]) == 3


def test_status_is_timed_from_the_store_and_from_the_cloud(smoke_rows):
    r = smoke_rows["annexd.status.n6"]
    assert r["error"] == "" and r["runs"] == 1 and 0 < r["value"] < 30, r
    assert r["reference"] and 0 < r["reference"] < 60 and r["ratio"] > 0
    assert r["target_ok"] == (r["ratio"] <= 0.3)
    assert r["extra"]["reference_calls"]["ec2.DescribeInstances"] == 1
    assert len(r["extra"]["classic_status_from_store_s"]) == 1
    assert "not HTCondor's" in r["notes"]


def test_original_status_is_named_when_the_side_by_side_section_ran():
    ours = Row(key="annexd.status.n1000", what="status", unit="s", samples=[0.2],
               reference=5.0, notes="reference: ours")
    rows = [ours]
    add_original(rows)
    assert "HTCondor" not in ours.notes and "original_status_s" not in ours.extra
    rows.append(Row(key="original.status", what="-status", unit="s", samples=[4.0],
                    reference=2.0))
    add_original(rows)
    assert ours.extra["original_status_s"] == 2.0
    assert "HTCondor's condor_annex -status (row original.status): 2.00 s, 0.10×" in ours.notes
