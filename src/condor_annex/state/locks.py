"""Per-annex locks: ``create``, ``extend`` and ``off`` of one annex on one machine, and the
reconciler's repairs of it, run one at a time.

Without it, ``off`` running while a ``create`` of the same annex sits between its lease and its
launch would delete the lease, and the launch would then start instances nothing ends.  The lock
is an advisory ``flock(2)`` on ``<user config dir>/locks/annex-<name>.lock``: the kernel drops it
when the holder dies, even by SIGKILL, so a crash never leaves a stale lock behind.  (Across
machines the create re-checks its lease after launching; see :mod:`condor_annex.service.annex`.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from condor_annex.errors import AnnexError

#: Seconds a command waits for another command on the same annex before giving up.
LOCK_WAIT_S = 600.0


def lock_path(annex_name: str) -> Path:
    """The lock file of an annex (next to the user's config file)."""
    from condor_annex import config
    return config.user_config_path().parent / "locks" / f"annex-{annex_name}.lock"


@contextlib.contextmanager
def annex_lock(annex_name: str, *, wait_s: float = LOCK_WAIT_S,
               notify: Callable[[str], None] | None = None,
               poll_s: float = 0.2) -> Iterator[None]:
    """Hold the annex's lock for the ``with`` block.

    Args:
        annex_name: a validated annex name.
        wait_s: seconds to wait for another holder before giving up.
        notify: called once with a line saying what it waits for.
        poll_s: seconds between attempts while waiting.

    Raises:
        AnnexError: another command held the lock for ``wait_s`` seconds.
    """
    path = lock_path(annex_name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + wait_s
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told and notify:
                    notify(f"annex {annex_name}: waiting for another condor_annex command on "
                           "this annex to finish")
                    told = True
                if time.monotonic() >= deadline:
                    raise AnnexError(f"annex '{annex_name}': another condor_annex command held "
                                     f"it for {wait_s:.0f} s; try again when it has finished") \
                        from None
                time.sleep(poll_s)
        yield
    finally:
        os.close(fd)   # also releases the lock


@contextlib.contextmanager
def annex_lock_if_free(annex_name: str) -> Iterator[bool]:
    """Take the annex's lock only if no command holds it: yields True with the lock held for
    the ``with`` block, or False at once when another process holds it.

    The reconciler uses it before it rolls back or ends anything of an annex: a command holding
    the lock is alive (SIGKILL releases ``flock``), so what it recorded is still in flight;
    a free lock means whatever the store shows unfinished was left by a command that died.
    """
    path = lock_path(annex_name)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def annex_busy(annex_name: str) -> bool:
    """True when a command holds the annex's lock right now (a snapshot: it may end at once)."""
    with annex_lock_if_free(annex_name) as free:
        return not free
