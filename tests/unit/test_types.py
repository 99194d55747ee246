"""`make test` runs the type checker: mypy (pinned in pyproject.toml's test extra, configured in
its [tool.mypy]) over src/condor_annex must report no error.

Among what it proves: every provider method the service layer and the command line call is
declared in the contract (providers/base.py), and AwsProvider satisfies that contract
(providers/aws/contract.py) — remove a method from AwsProvider, or change a signature, and this
test fails naming it.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_mypy_finds_no_type_error(tmp_path):
    # The venv's interpreter (the one running the tests), so the pinned mypy is the one used;
    # a cache of our own, so runs neither share nor leave state in the tree.
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache"),
         "src/condor_annex"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mypy found type errors:\n{proc.stdout}{proc.stderr}"
    assert "Success: no issues found" in proc.stdout, proc.stdout + proc.stderr
