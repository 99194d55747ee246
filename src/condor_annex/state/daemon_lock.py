"""One annexd per state file: an advisory ``flock(2)`` on ``<state file>.annexd.lock``, held
for the daemon's life.  The kernel drops it when the daemon dies, even by SIGKILL, so the
master (or systemd) can restart the daemon at once and a crash never leaves a stale lock.
Commands look at the same lock to know whether a daemon serves their state file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from condor_annex.errors import BadInputError


def lock_path(state_file: Path) -> Path:
    """The daemon lock beside ``state_file``."""
    return state_file.with_name(state_file.name + ".annexd.lock")


@contextlib.contextmanager
def hold(state_file: Path) -> Iterator[None]:
    """Hold the state file's daemon lock for the ``with`` block, with this process's pid
    written in it (for ``daemon status`` and the refusal below).

    Raises:
        BadInputError: another daemon holds it (one line naming its pid and the state file;
            exit 2): two daemons on one state file would act twice.
    """
    path = lock_path(state_file)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            raise BadInputError(
                f"condor_annexd: another condor_annexd{f' (pid {pid})' if pid else ''} already "
                f"serves the state file {state_file}; stop it first, or give this one another "
                "file with ANNEX_STATE_FILE") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def holder(state_file: Path) -> int | None:
    """The pid of the daemon serving ``state_file``, or None when none does."""
    path = lock_path(state_file)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0)
    except (ValueError, OSError):
        return 0
