"""Step 7b: no idle shutdown on a node tagged ``htcondor:IdleShutdown = off`` (issue 13).

An autoscaled annex's ``--min`` nodes must not leave when idle, while the nodes it grew by
leave through the bundle's ``STARTD_NOCLAIM_SHUTDOWN``.  The bundle is one per annex, so the
difference is per launch: ``create`` tags the ``--min`` nodes, and this step writes
``config.d/51-idle-shutdown.config``, read after the bundle's ``50-annex.config``, with
``STARTD_NOCLAIM_SHUTDOWN = 0`` (HTCondor manual, *Configuration Macros*: the startd shuts down
after that many seconds unclaimed; 0, its default, never).

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

from pathlib import Path

from condor_annex.agent.files import write_config

#: The instance tag (``condor_annex.model.TAG_IDLE_SHUTDOWN``; the agent imports nothing above it).
TAG_IDLE_SHUTDOWN = "htcondor:IdleShutdown"
#: The file, relative to the config dir (51: read after the bundle's 50-annex.config).
IDLE_CONFIG = "config.d/51-idle-shutdown.config"


def write_idle_config(config_dir: Path, tag_value: str | None) -> Path | None:
    """Write :data:`IDLE_CONFIG` (mode 644) when ``tag_value`` is ``off``; otherwise write
    nothing (the bundle's idle shutdown applies).

    Args:
        config_dir: HTCondor's config dir.
        tag_value: the instance's :data:`TAG_IDLE_SHUTDOWN` tag, or None when absent.

    Returns:
        the file's path, or None when none was written.

    Raises:
        BootstrapError: the file could not be written.
    """
    if (tag_value or "").strip().lower() != "off":
        return None
    text = ("# Written at boot by condor_annex.agent: instance tag "
            f"{TAG_IDLE_SHUTDOWN} = off (an autoscaled annex's --min node).\n"
            "STARTD_NOCLAIM_SHUTDOWN = 0\n")
    return write_config(config_dir, IDLE_CONFIG, text)
