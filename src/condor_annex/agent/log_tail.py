"""The agent's own log: one line per record on stderr, and its last lines kept in memory.

Records of ``condor_annex.agent.*`` at INFO and above go to stderr (the journal, and the
serial console through cloud-init), one line each with a UTC timestamp.  A :class:`LogTail`
keeps the same lines, the newest :data:`MAX_LOG_BYTES` of them, so that a failed boot can
upload its log (:mod:`condor_annex.agent.log_upload`) without reading any file.

The agent never logs credentials, the IMDS token or bundle contents; botocore's own DEBUG
output (which does include request headers) is not enabled.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import collections
import logging
import sys
import time

#: Most bytes of log lines a :class:`LogTail` keeps (the newest; older lines are dropped).
MAX_LOG_BYTES = 256 * 1024


def formatter() -> logging.Formatter:
    """``2026-01-02T03:04:05.678Z condor-annex-agent INFO message`` (UTC)."""
    fmt = logging.Formatter("%(asctime)s.%(msecs)03dZ condor-annex-agent %(levelname)s "
                            "%(message)s", "%Y-%m-%dT%H:%M:%S")
    fmt.converter = time.gmtime
    return fmt


class LogTail(logging.Handler):
    """A handler keeping the newest formatted lines, at most ``max_bytes`` bytes of them
    (UTF-8; a single longer line keeps its end).

    Args:
        max_bytes: the cap, bytes (default :data:`MAX_LOG_BYTES`).
    """

    def __init__(self, max_bytes: int = MAX_LOG_BYTES) -> None:
        super().__init__(logging.INFO)
        self.max_bytes = max_bytes
        self._lines: collections.deque[bytes] = collections.deque()
        self._size = 0
        #: How many of the oldest lines were dropped to stay under the cap.
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's line (called under the handler's lock by ``handle``)."""
        try:
            line = (self.format(record) + "\n").encode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - logging must never raise into the agent
            self.handleError(record)
            return
        line = line[-self.max_bytes:]
        self._lines.append(line)
        self._size += len(line)
        while self._size > self.max_bytes:
            self._size -= len(self._lines.popleft())
            self.dropped += 1

    def text(self) -> bytes:
        """The kept lines, oldest first (at most ``max_bytes`` bytes, plus one first line
        saying how many earlier lines were dropped, when any were)."""
        self.acquire()
        try:
            head = [f"[{self.dropped} earlier lines dropped]\n".encode()] if self.dropped else []
            return b"".join(head + list(self._lines))
        finally:
            self.release()


def install(agent_log: logging.Logger) -> tuple[logging.Handler, LogTail]:
    """Add a stderr handler and a :class:`LogTail` (both INFO, one format) to ``agent_log``,
    and lower its level to INFO when it is higher.

    Returns:
        (the stderr handler, the tail): the caller removes both when it is done.
    """
    fmt = formatter()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.INFO)
    stderr.setFormatter(fmt)
    tail = LogTail()
    tail.setFormatter(fmt)
    agent_log.addHandler(stderr)
    agent_log.addHandler(tail)
    if agent_log.getEffectiveLevel() > logging.INFO:
        agent_log.setLevel(logging.INFO)
    return stderr, tail
