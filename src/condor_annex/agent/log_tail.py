"""The agent's own log: one line per record on stderr.

Records of ``condor_annex.agent.*`` at INFO and above go to stderr (the journal, and the
serial console through cloud-init), one line each with a UTC timestamp.

The agent never logs credentials, the IMDS token or bundle contents; botocore's own DEBUG
output (which does include request headers) is not enabled.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import logging
import sys
import time


def formatter() -> logging.Formatter:
    """``2026-01-02T03:04:05.678Z condor-annex-agent INFO message`` (UTC)."""
    fmt = logging.Formatter("%(asctime)s.%(msecs)03dZ condor-annex-agent %(levelname)s "
                            "%(message)s", "%Y-%m-%dT%H:%M:%S")
    fmt.converter = time.gmtime
    return fmt


def install(agent_log: logging.Logger) -> logging.Handler:
    """Add a stderr handler (INFO) to ``agent_log``, and lower its level to INFO when it is
    higher.

    Returns:
        the handler: the caller removes it when it is done.
    """
    fmt = formatter()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.INFO)
    stderr.setFormatter(fmt)
    agent_log.addHandler(stderr)
    if agent_log.getEffectiveLevel() > logging.INFO:
        agent_log.setLevel(logging.INFO)
    return stderr
