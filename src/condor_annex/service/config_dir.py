"""``-config-dir DIR`` / ``--config-dir DIR``: the user's own HTCondor configuration files for
the annex's nodes, read and checked before anything is made in the cloud.

The original tool copied the directory into its tarball (reference §3, step 2).  Here each
regular file of ``DIR`` goes into the bundle as ``config.d/60-user-<its name>``
(:data:`condor_annex.pool.configs.USER_CONFIG_PREFIX`): HTCondor reads LOCAL_CONFIG_DIR in name
order, so the user's files come after ours (``49-instance.config``, ``50-annex.config``: theirs
win) in their own name order, and before the agent's ``90-annex-interruption.config`` (whose
``START = False`` must still drain a node on a spot interruption).  Files whose names HTCondor's
default ``LOCAL_CONFIG_DIR_EXCLUDE_REGEXP`` skips (hidden, ``#...``, ``~`` backups, ``.pl``,
``.py``, ``.sh``, package-manager leftovers) are skipped here too: HTCondor would never read
them.
"""

from __future__ import annotations

import os
import re
import stat

from condor_annex import validate
from condor_annex.errors import BadInputError
from condor_annex.validate import shown

#: Most bytes all files together may hold (the bundle is fetched by every node at boot).
MAX_TOTAL_BYTES = 1024 * 1024
#: Most files (the agent refuses bundles of more than 1,000 members).
MAX_FILES = 500
#: Longest file name kept (the bundle adds a 8-character prefix; file systems allow 255).
MAX_NAME = 200
#: HTCondor's default LOCAL_CONFIG_DIR_EXCLUDE_REGEXP (condor_config_val -v, 23.9).
HTCONDOR_EXCLUDED = re.compile(r"^((\..*)|(.*\.pl)|(.*\.py)|(.*\.sh)|(.*~)|(#.*)|(.*\.rpmsave)|"
                               r"(.*\.rpmnew)|(.*\.dpkg-old)|(.*\.dpkg-dist)|(.*\.cfsaved))$")


def read_config_dir(path: str, flag: str) -> tuple[tuple[str, bytes], ...]:
    """Read ``path``'s configuration files, checking every rule first.

    Args:
        path: the directory as typed (``~`` expanded); it may itself be a symlink.
        flag: the flag as typed (``-config-dir`` or ``--config-dir``), for messages.

    Returns:
        (file name, content) of each file, in name (byte) order; () for an empty directory.

    Raises:
        BadInputError: one line naming the flag and the file: not a directory, a symlink, a
            subdirectory or another non-regular entry, a name with control characters or too
            long, a file that is not UTF-8 text, more than :data:`MAX_FILES` files or more
            than :data:`MAX_TOTAL_BYTES` bytes in all, or an unreadable file.
    """
    where = os.path.expanduser(path)
    try:
        dir_fd = os.open(where, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        raise BadInputError(f"{flag}: {shown(path)} does not exist; give a directory of "
                            "HTCondor configuration files") from None
    except NotADirectoryError:
        raise BadInputError(f"{flag}: {shown(path)} is not a directory; give a directory of "
                            "HTCondor configuration files") from None
    except OSError as e:
        raise BadInputError(f"{flag}: cannot open {shown(path)} ({e.strerror}); give a "
                            "readable directory") from None
    try:
        return _read_all(dir_fd, path, flag)
    finally:
        os.close(dir_fd)


def _read_all(dir_fd: int, path: str, flag: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = sorted(os.listdir(dir_fd), key=os.fsencode)
    except OSError as e:
        raise BadInputError(f"{flag}: cannot list {shown(path)} ({e.strerror}); give a "
                            "readable directory") from None
    files: list[tuple[str, bytes]] = []
    total = 0
    for name in names:
        # The file first (a long directory would hide it when shortened).
        shown_name = f"{shown(name, 100)} in {shown(path)}"
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError as e:
            raise BadInputError(f"{flag}: cannot read {shown_name} ({e.strerror}); fix it or "
                                "remove it") from None
        if stat.S_ISLNK(st.st_mode):
            raise BadInputError(f"{flag}: {shown_name} is a symlink; copy the file it points "
                                "to into the directory instead")
        if stat.S_ISDIR(st.st_mode):
            raise BadInputError(f"{flag}: {shown_name} is a subdirectory; put only "
                                "configuration files in the directory")
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError(f"{flag}: {shown_name} is not a regular file; remove it from "
                                "the directory")
        if HTCONDOR_EXCLUDED.match(name):
            continue   # HTCondor's LOCAL_CONFIG_DIR would skip it: so do we
        if validate.has_control(name) or "\\" in name or len(name) > MAX_NAME \
                or not _utf8(name):
            raise BadInputError(f"{flag}: {shown_name}: the name must be printable UTF-8 of at "
                                f"most {MAX_NAME} characters; rename the file")
        if len(files) == MAX_FILES:
            raise BadInputError(f"{flag}: {shown_name}: more than {MAX_FILES} files; merge "
                                "them into fewer")
        data = _read_one(dir_fd, name, shown_name, flag, MAX_TOTAL_BYTES - total)
        total += len(data)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInputError(f"{flag}: {shown_name} is not UTF-8 text; HTCondor "
                                "configuration files are text") from None
        if b"\0" in data:
            raise BadInputError(f"{flag}: {shown_name} holds a NUL byte; HTCondor "
                                "configuration files are text")
        files.append((name, data))
    return tuple(files)


def _utf8(name: str) -> bool:
    """True when ``name`` (as listed, undecodable bytes escaped) is valid UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_one(dir_fd: int, name: str, shown_name: str, flag: str, room: int) -> bytes:
    """The file's bytes, opened without following a link (a file swapped for a link after the
    listing is refused too); at most ``room`` bytes.

    Raises:
        BadInputError: unreadable, not regular by now, or more than ``room`` bytes.
    """
    too_big = BadInputError(f"{flag}: {shown_name} brings the files over "
                            f"{MAX_TOTAL_BYTES // 1024} KiB in all; keep the directory under "
                            "1 MiB")
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError as e:
        raise BadInputError(f"{flag}: cannot read {shown_name} ({e.strerror}); fix its "
                            "permissions or remove it") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BadInputError(f"{flag}: {shown_name} is not a regular file; remove it from "
                                "the directory")
        if st.st_size > room:
            raise too_big
        data = f.read(room + 1)
    if len(data) > room:
        raise too_big
    return data
