"""Phrases the agent writes when a node will not join, for the submit side to recognise.

The agent's lines reach the instance's console and, after a failed boot or a diagnosis, its
uploaded log (``logs/<annex>/<instance-id>/agent.log``).  The reconciler saves both before it
ends an instance that never joined; it looks for these phrases to say *why* in ``status``
(e.g. "never joined: collector unreachable") instead of only *that* it never joined.  The agent
writes them and the submit side reads them from this one module, so they cannot drift apart.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import re

#: In the agent's line when no TCP connection to the pool's collector could be opened for the
#: whole check window (:mod:`condor_annex.agent.collector_check`); the line reads
#: ``collector <host:port>[, <host:port>...] unreachable from this instance for <N> s (<why>):
#: <what to check>; this node will not join the pool``.
COLLECTOR_UNREACHABLE = "unreachable from this instance"

_COLLECTOR_UNREACHABLE_RE = re.compile(
    r"collector (\S+(?:, \S+)*) " + re.escape(COLLECTOR_UNREACHABLE) + r" for [0-9]+ s \([^)\n]*\)")


def collector_unreachable(text: str) -> str | None:
    """The agent's verdict in ``text`` (a console output or an agent log), if it has one.

    Args:
        text: decoded console output or agent log, any number of lines.

    Returns:
        the verdict's leading part, e.g. ``"collector 10.200.0.2:9618 unreachable from this
        instance for 121 s (timed out)"`` (the last one when there are several), or None.
    """
    found = [m.group(0) for m in _COLLECTOR_UNREACHABLE_RE.finditer(text)]
    return found[-1] if found else None
