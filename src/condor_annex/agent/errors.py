"""The agent's two failures: one that ends the boot, one that a retry loop may outlast.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations


class BootstrapError(Exception):
    """A failure that stops the boot; its text is the one line logged before powering off."""


class NotYet(Exception):
    """A transient failure inside a retry loop (the text says what was missing); the loop of
    :func:`condor_annex.agent.retry.retry` tries again until its deadline."""
