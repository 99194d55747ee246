"""Writing into HTCondor's config dir without following a link out of it.

Every file goes through a temporary file and a rename (a reader never sees half a file), with
its mode set before any byte is written; every directory on the way must be a real directory,
not a symlink planted by someone else.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from condor_annex.agent.errors import BootstrapError

#: Top-level config dir subdirectories whose files are secrets (mode 600, directory 700).
SECRET_DIRS = ("tokens.d", "passwords.d")


def ensure_dir(root: Path, rel: str) -> None:
    """Create ``root/rel`` one component at a time (mode 755; the first component 700 when it
    is one of :data:`SECRET_DIRS`, whatever the umask).

    Raises:
        BootstrapError: a component exists and is not a directory (a symlink or a file).
        OSError: a directory could not be made.
    """
    path = root
    parts = rel.split("/")
    for i, part in enumerate(parts):
        path = path / part
        mode = 0o700 if parts[0] in SECRET_DIRS and i == 0 else 0o755
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, mode)
            os.chmod(path, mode)  # not narrowed by the umask
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise BootstrapError(f"{path} exists and is not a directory (a symlink?); refusing "
                                 "to install through it")


def write_file_atomic(root: Path, rel: str, data: bytes, mode: int) -> Path:
    """Write ``root/rel`` with ``mode`` through a temporary file and a rename.

    ``root`` must be a real path (``os.path.realpath``); the parent directory must exist.

    Returns:
        The file's path.

    Raises:
        BootstrapError: the target would lie outside ``root``.
        OSError: the write failed (the temporary file is removed).
    """
    target = root / rel
    if not os.path.realpath(target.parent).startswith(str(root) + os.sep) and \
            os.path.realpath(target.parent) != str(root):
        raise BootstrapError(f"{target} would be outside {root}")
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".annex-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def write_config(config_dir: str | Path, rel: str, text: str) -> Path:
    """Write HTCondor configuration ``text`` to ``config_dir/rel`` (mode 644, its directory
    made as needed), atomically.

    Returns:
        The file's path.

    Raises:
        BootstrapError: it cannot be written (naming ``rel`` and why).
    """
    root = Path(os.path.realpath(config_dir))
    try:
        ensure_dir(root, os.path.dirname(rel))
        return write_file_atomic(root, rel, text.encode(), 0o644)
    except OSError as exc:
        raise BootstrapError(f"cannot write {rel}: {exc}") from None
