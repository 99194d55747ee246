"""Running HTCondor's own tools on the node, against the node's configuration.

The agent runs ``condor_reconfig``, ``condor_vacate`` and ``condor_off`` as root with the
environment of the master (``CONDOR_CONFIG`` pointing at the installed configuration), each
bounded by a timeout. Everything that runs a command takes a :data:`Runner`, the one seam the
tests replace to see which commands ran and in which order.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Callable

log = logging.getLogger(__name__)

#: Longest one HTCondor command may take, seconds (they talk to the local daemons only).
COMMAND_TIMEOUT_S = 20.0

#: Runs one command (argv) and returns its exit status; -1 when it could not run or timed out.
#: It never raises.
Runner = Callable[[list[str]], int]


def subprocess_runner(env: dict[str, str], *, timeout_s: float = COMMAND_TIMEOUT_S) -> Runner:
    """A :data:`Runner` that runs commands with ``env`` (with ``CONDOR_CONFIG``), standard
    input closed, at most ``timeout_s`` seconds each; a failure is logged with the command's
    last line of output (HTCondor's tools say there why, e.g. an authorization refusal)."""

    def run(argv: list[str]) -> int:
        try:
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout_s)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("%s failed: %s", shlex.join(argv), exc)
            return -1
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip() or "no message").splitlines()[-1]
            log.warning("%s exited with status %d: %s", shlex.join(argv), done.returncode, last)
        return done.returncode

    return run
