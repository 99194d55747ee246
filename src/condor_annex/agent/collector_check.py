"""Can this instance reach the pool's collector?  Said once, on the console, after the master starts.

A node that boots fine but whose packets to the collector are dropped (a security group or
network ACL that forgets the collector's port, a pool firewall that does not admit the annex's
subnet) runs condor_master forever without ever joining, and its console used to stop at
"starting condor_master".  This check opens a TCP connection to each collector address of the
installed configuration (:mod:`condor_annex.agent.collector_address`), every
:data:`INTERVAL_S` seconds for up to :data:`WINDOW_S` seconds (a pool that is slow to answer
is not an error), each attempt bounded by :data:`CONNECT_TIMEOUT_S`.  When none ever succeeds it
logs one line holding :data:`condor_annex.agent.diagnosis.COLLECTOR_UNREACHABLE`, e.g.::

    collector 10.200.0.2:9618 unreachable from this instance for 121 s (timed out): check that
    the pool's firewall / security group admits this instance (TCP port 9618 to the collector);
    this node will not join the pool

and uploads the agent's log once (best effort), so the submit side, which ends a node that
never joined after saving its console and that log, can say why.  It then stops; the master
keeps running (HTCondor may still get through later; the submit side decides).  When the
collector answers, one short line says so.

The check runs in a daemon thread: it never delays the master, the watch loop or the power-off,
and logs nothing once stopped.  Standard library only (the agent runs on the instance's
python3, 3.11+); the connection is opened and closed at once, and nothing is sent on it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from condor_annex.agent.collector_address import (UnknownAddress, collector_addresses,
                                                  shown)
from condor_annex.agent.diagnosis import COLLECTOR_UNREACHABLE

log = logging.getLogger(__name__)

#: How long the collector may stay unreachable before the agent says so, seconds.
WINDOW_S = 120.0
#: Seconds between the starts of two attempts.
INTERVAL_S = 10.0
#: Longest one TCP connect may take, seconds.
CONNECT_TIMEOUT_S = 5.0

#: What to check, by the last attempt's outcome; the default covers the rest ("no route to
#: host", "network is unreachable", ...).
_HINTS = {
    "timed out": "check that the pool's firewall / security group (or network ACL) admits "
                 "this instance (TCP port {port} to the collector)",
    "refused": "check that the collector runs at that address and that the pool's firewall "
               "admits this instance (TCP port {port})",
    "name not resolved": "check that the collector's name (COLLECTOR_HOST) resolves from this "
                         "instance's network",
}
_DEFAULT_HINT = ("check this instance's route to the collector and that the pool's firewall / "
                 "security group admits it (TCP port {port})")


def try_connect(host: str, port: int, timeout_s: float) -> str | None:
    """Open and close one TCP connection to ``host:port``.

    Returns:
        None when it was accepted within ``timeout_s`` seconds; else a few words saying why
        not: ``"timed out"`` (dropped: no answer), ``"refused"`` (a TCP reset: nothing listens,
        or a firewall rejects), ``"name not resolved"``, or the system's own words (e.g.
        ``"No route to host"``).  Never raises for a network failure.
    """
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except socket.gaierror:
        return "name not resolved"
    except TimeoutError:   # socket.timeout is TimeoutError since Python 3.10
        return "timed out"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


class CollectorCheck:
    """Attempts to connect to the collector until one succeeds or the window has passed.

    Args:
        addresses: (host, port) of each collector; reaching any one of them is enough.
        window_s: seconds after the first attempt's start at which the last attempt starts.
        interval_s: seconds between the starts of two attempts.
        timeout_s: longest one connect may take, seconds.
        on_unreachable: called once after the verdict is logged (the agent uploads its log);
            its errors are logged, never raised.
        connect: :func:`try_connect`, or a test's double.
        monotonic: the clock of the schedule, seconds.

    Attributes:
        outcome: None while checking (or when stopped first); True once reached; False once
            declared unreachable.
    """

    def __init__(self, addresses: list[tuple[str, int]], *, window_s: float = WINDOW_S,
                 interval_s: float = INTERVAL_S, timeout_s: float = CONNECT_TIMEOUT_S,
                 on_unreachable: Callable[[], object] | None = None,
                 connect: Callable[[str, int, float], str | None] = try_connect,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        if not addresses:
            raise ValueError("no collector address to check")
        self.addresses = list(addresses)
        self.window_s, self.interval_s, self.timeout_s = window_s, interval_s, timeout_s
        self._on_unreachable = on_unreachable
        self._connect = connect
        self._monotonic = monotonic
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.outcome: bool | None = None

    def start(self) -> CollectorCheck:
        """Run :meth:`run` in a daemon thread named ``collector-check``; returns self."""
        self._thread = threading.Thread(target=self.run, name="collector-check", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop checking and logging (the master has exited); returns at once (an attempt in
        progress ends within ``timeout_s`` on its own, silently)."""
        self._stop.set()

    def join(self, timeout_s: float | None = None) -> None:
        """Wait for the thread started by :meth:`start` (tests)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def run(self) -> bool | None:
        """Attempt until reached, declared unreachable or stopped.

        Returns:
            True reached, False unreachable (the line is logged and ``on_unreachable`` called),
            None stopped first (nothing logged).
        """
        first = self._monotonic()
        errors: dict[tuple[str, int], str] = {}
        while not self._stop.is_set():
            started = self._monotonic()
            for host, port in self.addresses:
                error = self._connect(host, port, self.timeout_s)
                if self._stop.is_set():
                    return None
                if error is None:
                    self._reached(host, port, self._monotonic() - first, errors)
                    return True
                errors[(host, port)] = error
            if started - first >= self.window_s:
                self._unreachable(self._monotonic() - first, errors)
                return False
            next_at = min(started + self.interval_s, first + self.window_s)
            self._stop.wait(max(0.0, next_at - self._monotonic()))
        return None

    def _reached(self, host: str, port: int, after_s: float,
                 errors: dict[tuple[str, int], str]) -> None:
        self.outcome = True
        if errors:
            log.info("collector %s reachable from this instance after %.0f s (earlier: %s)",
                     shown(host, port), after_s, "; ".join(sorted(set(errors.values()))))
        else:
            log.info("collector %s reachable from this instance", shown(host, port))

    def _unreachable(self, for_s: float, errors: dict[tuple[str, int], str]) -> None:
        self.outcome = False
        where = ", ".join(shown(h, p) for h, p in self.addresses)
        if len(self.addresses) == 1:
            why = errors[self.addresses[0]]
        else:
            why = "; ".join(f"{shown(h, p)} {errors[(h, p)]}" for h, p in self.addresses)
        last = errors[self.addresses[-1]]
        ports = ", ".join(sorted({str(p) for _, p in self.addresses}))
        hint = _HINTS.get(last, _DEFAULT_HINT).format(port=ports)
        log.error("collector %s %s for %.0f s (%s): %s; this node will not join the pool",
                  where, COLLECTOR_UNREACHABLE, for_s, why, hint)
        if self._on_unreachable is not None:
            try:
                self._on_unreachable()
            except Exception as exc:  # noqa: BLE001 - a diagnosis must never end the agent
                log.warning("after the collector check: %s: %s", type(exc).__name__, exc)


def collector_check(config_dir: Path, *, window_s: float = WINDOW_S,
                    on_unreachable: Callable[[], object] | None = None) -> CollectorCheck | None:
    """A :class:`CollectorCheck` (not started) of the collectors the configuration in
    ``config_dir`` names (``COLLECTOR_HOST``).

    Args:
        config_dir: HTCondor's config dir, with the annex's bundle installed.
        window_s: see :class:`CollectorCheck`; 0 or less: no check.
        on_unreachable: see :class:`CollectorCheck`.

    Returns:
        the check, or None when it is off or the address cannot be read (logged: the master
        runs all the same).
    """
    if window_s <= 0:
        return None
    try:
        addresses = collector_addresses(config_dir)
    except UnknownAddress as exc:
        log.warning("not checking that the collector can be reached: %s", exc)
        return None
    return CollectorCheck(addresses, window_s=window_s, interval_s=min(INTERVAL_S, window_s),
                          on_unreachable=on_unreachable)
