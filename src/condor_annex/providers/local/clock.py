"""The local cloud's one clock: wall time, with AWS's minutes shrunk for tests.

Everything in the local cloud that waits the way AWS waits — Lambda's asynchronous retries
(+60 s, +120 s), the period of a recurring ``rate()`` schedule, the lease enforcer's wait
inside its minute when the local cloud runs it in-process — asks this clock, so that one knob,
``CONDOR_ANNEX_TIME_SCALE``, shortens all of them together:

* ``time()`` is the wall clock (epoch seconds): lease ends and ``at()`` schedules are wall
  times written by the product, so they are never scaled;
* ``scaled(s)`` is how many wall seconds an AWS delay of ``s`` seconds takes here
  (``s / scale``); ``sleep(s)`` sleeps that long.

The knob is read only by the local cloud (never by the product). Tests pass their own clock
(:class:`ManualClock`) and move it by hand.
"""

from __future__ import annotations

import os
import threading
import time

#: The environment variable holding the time scale (a number >= 1; default 1).
TIME_SCALE_ENV = "CONDOR_ANNEX_TIME_SCALE"


def time_scale_from_env(environ: dict | None = None) -> float:
    """``CONDOR_ANNEX_TIME_SCALE`` as a float >= 1 (1 when unset or empty).

    Raises:
        ValueError: the value is not a finite number >= 1 (one line naming the variable and
            the fix; the daemon refuses to start rather than run at a surprising speed).
    """
    env = os.environ if environ is None else environ
    text = (env.get(TIME_SCALE_ENV) or "").strip()
    if not text:
        return 1.0
    try:
        scale = float(text)
    except ValueError:
        scale = float("nan")
    if not (scale >= 1 and scale != float("inf")):
        raise ValueError(f"{TIME_SCALE_ENV}: must be a number >= 1, e.g. 10 (got {text!r})")
    return scale


class Clock:
    """Wall time with scaled delays (see the module docstring).

    Args:
        scale: how many times faster AWS's delays pass (>= 1); default: the environment's
            ``CONDOR_ANNEX_TIME_SCALE``.
        stop: an event that cuts every :meth:`sleep` short when set (the daemon's stop event).

    Raises:
        ValueError: ``scale`` < 1 (or the environment's value is bad).
    """

    def __init__(self, scale: float | None = None, stop: threading.Event | None = None) -> None:
        self.scale = time_scale_from_env() if scale is None else float(scale)
        if not self.scale >= 1:
            raise ValueError(f"time scale must be >= 1 (got {scale!r})")
        self._stop = stop

    def time(self) -> float:
        """Now, in epoch seconds (wall time, never scaled)."""
        return time.time()

    def scaled(self, seconds: float) -> float:
        """Wall seconds that an AWS delay of ``seconds`` takes in the local cloud."""
        return seconds / self.scale

    def sleep(self, seconds: float) -> None:
        """Wait an AWS delay of ``seconds`` (``seconds / scale`` wall seconds); returns early
        when the stop event is set."""
        wall = max(0.0, self.scaled(seconds))
        if self._stop is not None:
            self._stop.wait(wall)
        else:
            time.sleep(wall)

    def sleep_until_wall(self, seconds: float) -> None:
        """Wait ``seconds`` of wall time, unscaled (returns early when the stop event is set):
        for waits that end at an absolute moment, such as the lease enforcer sleeping out the
        rest of its minute until the lease end, which no time scale may move earlier."""
        wall = max(0.0, seconds)
        if self._stop is not None:
            self._stop.wait(wall)
        else:
            time.sleep(wall)

    def wait_wall(self, event: threading.Event, wall_seconds: float) -> bool:
        """Block on ``event`` for at most ``wall_seconds`` of wall time (the dispatcher's idle
        wait); returns whether the event is set."""
        return event.wait(max(0.0, wall_seconds))


class ManualClock(Clock):
    """A clock that moves only when told to: for tests and benchmarks.

    ``time()`` starts at ``start`` (epoch seconds); ``advance(s)`` moves it ``s`` wall seconds;
    ``sleep(s)`` moves it ``s / scale`` at once (no real waiting), so a handler that sleeps
    returns immediately with the clock moved on. ``wait_wall`` never blocks.
    """

    def __init__(self, start: float, scale: float = 1.0) -> None:
        super().__init__(scale=scale)
        self._now = float(start)
        self._lock = threading.Lock()

    def time(self) -> float:
        """The manual time (epoch seconds)."""
        with self._lock:
            return self._now

    def advance(self, wall_seconds: float) -> float:
        """Move the clock ``wall_seconds`` on; returns the new time."""
        with self._lock:
            self._now += wall_seconds
            return self._now

    def sleep(self, seconds: float) -> None:
        """Move the clock by the scaled delay, without waiting."""
        self.advance(max(0.0, self.scaled(seconds)))

    def sleep_until_wall(self, seconds: float) -> None:
        """Move the clock by ``seconds`` (unscaled), without waiting."""
        self.advance(max(0.0, seconds))

    def wait_wall(self, event: threading.Event, wall_seconds: float) -> bool:
        """Never blocks (tests drive the clock); returns whether the event is set."""
        return event.is_set()
