"""Stopping the local cloud's child processes: each runs in its own session (process group), so
a signal reaches everything it started."""

from __future__ import annotations

import os
import signal
import subprocess


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to ``proc``'s process group; a group already gone is fine."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_group(proc: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM ``proc``'s group, wait up to ``timeout_s`` seconds for ``proc``, then SIGKILL the
    group; nothing when ``proc`` is None or has exited."""
    if proc is None or proc.poll() is not None:
        return
    signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        signal_group(proc, signal.SIGKILL)
