"""The machine-wide local-cloud lock (:func:`cloud.exclusive_session`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from condor_annex.providers.local import cloud


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(cloud, "STATE_DIR", tmp_path / "local")
    return tmp_path / "local"


def test_a_session_inside_a_session_of_the_same_process_does_not_wait_for_itself(state_dir):
    """Regression: tests/original, run after the e2e tests in one pytest session, waited
    forever for the lock the e2e fixture of its own process held."""
    with cloud.exclusive_session(timeout_s=2):
        with cloud.exclusive_session(timeout_s=2):
            pass
        with cloud.exclusive_session(timeout_s=2):
            pass


def test_another_process_still_waits_for_the_session(state_dir):
    code = ("import sys; from pathlib import Path; from condor_annex.providers.local import "
            f"cloud; cloud.STATE_DIR = Path({str(state_dir)!r})\n"
            "try:\n"
            "    with cloud.exclusive_session(timeout_s=1): sys.exit(0)\n"
            "except TimeoutError: sys.exit(3)\n")
    with cloud.exclusive_session(timeout_s=2):
        assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 3
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
