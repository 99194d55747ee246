"""The suite collects: pytest imports test modules by basename (rootdir-relative, no
``__init__.py`` packages), so two test files of one name in different directories stop the
whole run at collection ("import file mismatch"). It happened twice (tests/e2e/test_annexd.py,
tests/e2e/test_autoscale.py), each found only by a fresh-clone CI run."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_basename():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
