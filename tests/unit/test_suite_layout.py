"""The suite's layout: every test file is collected and run by ``make test``.

pytest imports test modules by basename (rootdir-relative, no ``__init__.py`` packages), so two
test files of one name in different directories stop the whole run at collection ("import file
mismatch"). It happened twice (tests/e2e/test_annexd.py, tests/e2e/test_autoscale.py), each
found only by a fresh-clone CI run."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_no_two_test_files_share_a_basename():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def test_make_test_runs_every_directory_of_tests():
    """``make test`` runs the suite in two halves at once; a new directory of tests must be in
    one of them, or CI would never run it."""
    makefile = (TESTS.parent / "Makefile").read_text()
    recipe = makefile[makefile.index("\ntest: install"):].split("\n\n")[0]
    dirs = {p.parent.relative_to(TESTS.parent).as_posix() for p in TESTS.rglob("test_*.py")}
    assert sorted(dirs - set(re.findall(r"tests/\w+", recipe))) == []
