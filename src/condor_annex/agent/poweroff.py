"""The last thing the agent does: run the power-off command.

An annex instance is launched with shutdown behaviour *terminate*, so powering off ends it (and
its bill).  A broken node must never linger: every path out of the agent, success or failure,
runs this (the original powered off after 50 minutes, "AWS charges by the hour").

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import logging
import shlex
import subprocess

log = logging.getLogger(__name__)

#: Timeout of the power-off command, seconds.
POWEROFF_TIMEOUT_S = 120


def power_off(command: list[str], env: dict[str, str]) -> None:
    """Run the power-off command (nothing if empty) with ``env``, at most
    :data:`POWEROFF_TIMEOUT_S` seconds; failures are logged, never raised."""
    if not command:
        log.info("no power-off command; exiting")
        return
    log.info("powering off: %s", shlex.join(command))
    try:
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL,
                              timeout=POWEROFF_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("power-off command failed: %s", exc)
        return
    if done.returncode != 0:
        log.error("power-off command exited with status %d", done.returncode)
