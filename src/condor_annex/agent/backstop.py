"""The instance-side backstop: the node ends itself at its lease end, whatever the cloud does.

The lease is enforced three ways (the scheduled enforcer, the lease sweep, and this). This one
needs nothing but the node itself once the bundle is installed: the lease end comes from

* the installed bundle, ``config.d/50-annex.config``: ``AnnexLeaseEnd = <epoch seconds>``
  (written by ``condor_annex create``, and again by ``extend`` for nodes booted later), and
* the instance tag ``htcondor:LeaseEnd`` (decimal epoch seconds) read through instance metadata
  tags (IMDS ``meta-data/tags/instance/htcondor:LeaseEnd``); ``extend`` rewrites it on live
  instances, so a running node learns of an extension from here.

The effective lease end is the later of the two known values: a fresh bundle may be newer than
a stale launch template tag, and an extension moves the tag past the bundle. A value read once
is kept when IMDS stops answering or the tag disappears: a broken metadata service must not
make the node forget its lease. At effective end + margin (``--lease-margin-s``, default 60 s)
the agent stops HTCondor gracefully and powers off. The clock is the agent's own ``time.time()``
(injectable for tests).

Standard library only (the agent runs on the instance's python3.9+).
"""

from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path
from typing import Callable, Optional

log = logging.getLogger(__name__)

#: Same value as condor_annex.model.TAG_LEASE_END (not imported: the agent stands alone).
TAG_LEASE_END = "htcondor:LeaseEnd"
#: The bundle's annex configuration (relative to the HTCondor config dir) and its knob.
BUNDLE_CONFIG = "config.d/50-annex.config"
BUNDLE_KNOB = "AnnexLeaseEnd"
#: Seconds past the lease end before the backstop acts (the cloud side gets the first go).
LEASE_MARGIN_S = 60.0
#: Lease ends outside [1, this] epoch seconds are not believed (year 5138; 12 digits at most).
MAX_EPOCH_S = 10 ** 11
#: A whole line ``AnnexLeaseEnd = 1234`` (HTCondor knob names are case-insensitive); the
#: renderer writes exactly this form (condor_annex.pool.configs.annex_config).
_KNOB_RE = re.compile(r"^[ \t]*" + BUNDLE_KNOB + r"[ \t]*=[ \t]*([0-9]{1,12})[ \t]*$",
                      re.ASCII | re.IGNORECASE | re.MULTILINE)
_TAG_RE = re.compile(r"[0-9]{1,12}", re.ASCII)


def parse_epoch(text: str) -> Optional[int]:
    """A lease end written as decimal epoch seconds (ASCII digits, surrounding blanks allowed),
    or None when ``text`` is anything else or outside 1..:data:`MAX_EPOCH_S`."""
    text = text.strip()
    if not _TAG_RE.fullmatch(text):
        return None
    value = int(text)
    return value if 0 < value <= MAX_EPOCH_S else None


def bundle_lease_end(config_text: str) -> Optional[int]:
    """``AnnexLeaseEnd`` of a bundle's ``50-annex.config`` text, epoch seconds, or None.

    The last assignment wins, as in HTCondor's own parser; a value that is not whole epoch
    seconds counts as absent.
    """
    found = _KNOB_RE.findall(config_text)
    return parse_epoch(found[-1]) if found else None


class LeaseBackstop:
    """Knows this node's lease end and says when the backstop is due.

    Args:
        config_dir: the HTCondor config dir the bundle was installed into; its
            :data:`BUNDLE_CONFIG` is read at every :meth:`poll` (a missing or unreadable file
            keeps the last value read).
        read_tag: returns the raw value of instance tag ``htcondor:LeaseEnd`` or None when it
            is absent; may raise any exception (IMDS down), which keeps the last value read.
            None: the tag is never read.
        margin_s: seconds past the lease end before the backstop is due (>= 0).
        clock: the agent's wall clock, epoch seconds (default ``time.time``).
    """

    def __init__(self, config_dir: Path, *, read_tag: Optional[Callable[[], Optional[str]]],
                 margin_s: float = LEASE_MARGIN_S,
                 clock: Callable[[], float] = time.time) -> None:
        if not (math.isfinite(margin_s) and margin_s >= 0):
            raise ValueError(f"margin_s must be a finite number >= 0 (got {margin_s!r})")
        self._path = Path(config_dir) / BUNDLE_CONFIG
        self._read_tag = read_tag
        self.margin_s = float(margin_s)
        self.clock = clock
        self.bundle_end: Optional[int] = None
        self.tag_end: Optional[int] = None
        self._bad_tag: Optional[str] = None   # last unusable tag value (logged once)

    # -- what is known -------------------------------------------------------------------------

    def lease_end(self) -> Optional[int]:
        """The effective lease end, epoch seconds: the later of the bundle's and the tag's
        (last known values); None when neither is known (the backstop is then off)."""
        known = [v for v in (self.bundle_end, self.tag_end) if v is not None]
        return max(known) if known else None

    def due_at(self) -> Optional[float]:
        """Epoch seconds at which the backstop acts (lease end + margin), or None."""
        end = self.lease_end()
        return None if end is None else end + self.margin_s

    def seconds_until_due(self) -> Optional[float]:
        """Seconds from now (the agent's clock) until :meth:`due_at`; <= 0 once due; None when
        no lease end is known."""
        due = self.due_at()
        return None if due is None else due - self.clock()

    def due_reason(self) -> Optional[str]:
        """None before lease end + margin; afterwards the one line saying why the node ends."""
        left = self.seconds_until_due()
        if left is None or left > 0:
            return None
        sources = []
        if self.bundle_end is not None:
            sources.append(f"bundle {BUNDLE_KNOB} {self.bundle_end}")
        if self.tag_end is not None:
            sources.append(f"instance tag {TAG_LEASE_END} {self.tag_end}")
        return (f"lease ended at {self.lease_end()} ({', '.join(sources)}); now "
                f"{self.clock():.0f} is {self.margin_s - left:.0f}s past it, beyond the "
                f"{self.margin_s:g}s margin: instance-side backstop stops HTCondor and powers off")

    # -- learning ------------------------------------------------------------------------------

    def poll(self, *, tag: bool = True) -> None:
        """Re-read the installed bundle's lease end and (if ``tag``) the instance tag.

        Never raises: what cannot be read keeps its last known value.
        """
        self._read_bundle()
        if tag and self._read_tag is not None:
            self._poll_tag()

    def _read_bundle(self) -> None:
        try:
            text = self._path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            log.debug("cannot read %s: %s", self._path, exc)
            return
        value = bundle_lease_end(text)
        if value is not None and value != self.bundle_end:
            log.info("lease end from the bundle: %s %d", BUNDLE_KNOB, value)
            self.bundle_end = value

    def _poll_tag(self) -> None:
        if self._read_tag is None:   # no IMDS reader given (poll checks it too)
            return
        try:
            raw = self._read_tag()
        except Exception as exc:  # noqa: BLE001 - IMDS down: keep what we knew
            log.debug("could not read tag %s: %s", TAG_LEASE_END, exc)
            return
        if raw is None:
            return
        value = parse_epoch(raw)
        if value is None:
            if raw != self._bad_tag:
                log.warning("instance tag %s = %r is not epoch seconds; ignored", TAG_LEASE_END,
                            raw[:40])
                self._bad_tag = raw
            return
        if value != self.tag_end:
            log.info("lease end from instance tag %s: %d", TAG_LEASE_END, value)
            self.tag_end = value
