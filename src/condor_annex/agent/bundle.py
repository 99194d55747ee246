"""The annex's config bundle: fetched from S3 (step 5) and unpacked with checks (step 6).

The original agent ran ``tar -xzf`` on whatever it fetched; here every member is checked before
anything is written, and the sizes are bounded (a bundle is a few KB).

Standard library only at import time (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import io
import os
import posixpath
import tarfile
import zlib
from pathlib import Path

from condor_annex.agent.clients import AwsClients
from condor_annex.agent.errors import BootstrapError
from condor_annex.agent.files import SECRET_DIRS, ensure_dir, write_file_atomic
from condor_annex.agent.retry import aws_call, retry

#: Bundle limits: compressed size, number of members, total unpacked size (bytes).
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_BUNDLE_MEMBERS = 1000
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
#: tarfile's extraction filters arrived in Python 3.11.4; older 3.11 relies on our own checks.
_TAR_FILTER_ERRORS: tuple[type[Exception], ...] = \
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


def bundle_key(annex: str) -> str:
    """S3 key of the annex's bundle, ``config-<annex>.tar.gz`` (same as
    ``condor_annex.model.bundle_key``; not imported: the agent stands alone)."""
    return f"config-{annex}.tar.gz"


def fetch_bundle(clients: AwsClients, bucket: str, key: str, deadline: float) -> bytes:
    """Step 5: S3 GetObject of the bundle, retried with backoff until ``deadline`` (monotonic).

    Every S3 error is retried: the object or the role's permission may not be visible yet.

    Returns:
        The tar.gz bytes (at most :data:`MAX_BUNDLE_BYTES`).

    Raises:
        BootstrapError: not fetched by the deadline, or larger than :data:`MAX_BUNDLE_BYTES`.
    """
    def attempt() -> bytes:
        answer = aws_call(lambda: clients.s3.get_object(Bucket=bucket, Key=key))
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength") or 0) > MAX_BUNDLE_BYTES:
                raise BootstrapError(f"s3://{bucket}/{key} is larger than {MAX_BUNDLE_BYTES} "
                                     "bytes")
            data = aws_call(lambda: body.read(MAX_BUNDLE_BYTES + 1))
        finally:
            body.close()
        if len(data) > MAX_BUNDLE_BYTES:
            raise BootstrapError(f"s3://{bucket}/{key} is larger than {MAX_BUNDLE_BYTES} bytes")
        return data

    return retry(f"bundle s3://{bucket}/{key}", attempt, deadline, deadline)


def install_bundle(bundle: bytes, config_dir: Path) -> list[tuple[str, int]]:
    """Step 6: unpack the bundle into ``config_dir``, safely; nothing is written if it is bad.

    Every member is checked before anything is written: only regular files and directories;
    relative names without ``..``; no links or devices; tarfile's ``data`` filter must accept it
    too. Files are written atomically (temporary file, then rename), under
    :data:`~condor_annex.agent.files.SECRET_DIRS` with mode 600 (directories 700), elsewhere 644
    (directories 755). Existing path components must be real directories, not symlinks.

    Returns:
        (relative path, mode) of each file written, in bundle order.

    Raises:
        BootstrapError: a bad bundle (the message names the member) or a write failure.
    """
    root = Path(os.path.realpath(config_dir))
    if not root.is_dir():
        raise BootstrapError(f"config dir {config_dir} does not exist")
    dirs, files = _read_bundle(bundle, root)
    written: list[tuple[str, int]] = []
    try:
        for rel in sorted(dirs | {posixpath.dirname(f) for f, _ in files} - {""}):
            ensure_dir(root, rel)
        for rel, data in files:
            mode = 0o600 if rel.split("/", 1)[0] in SECRET_DIRS else 0o644
            write_file_atomic(root, rel, data, mode)
            written.append((rel, mode))
    except OSError as exc:
        raise BootstrapError(f"cannot install the bundle into {config_dir}: {exc}") from None
    return written


def _read_bundle(bundle: bytes, root: Path) -> tuple[set[str], list[tuple[str, bytes]]]:
    """Check every member; return the directories and (name, content) of the files."""
    dirs: set[str] = set()
    files: list[tuple[str, bytes]] = []
    unpacked = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
            members = tar.getmembers()
            if len(members) > MAX_BUNDLE_MEMBERS:
                raise BootstrapError(f"bundle has more than {MAX_BUNDLE_MEMBERS} members")
            for member in members:
                rel = _checked_member_name(member)
                if hasattr(tarfile, "data_filter"):  # Python 3.11.4+, 3.12+
                    tarfile.data_filter(member, str(root))
                if rel is None:
                    continue
                if member.isdir():
                    dirs.add(rel)
                    continue
                unpacked += member.size
                if unpacked > MAX_UNPACKED_BYTES:
                    raise BootstrapError(f"bundle unpacks to more than {MAX_UNPACKED_BYTES} bytes")
                stream = tar.extractfile(member)
                if stream is None:
                    raise BootstrapError(f"bundle member {member.name!r} has no content")
                files.append((rel, stream.read()))
    except _TAR_FILTER_ERRORS as exc:
        raise BootstrapError(f"bundle refused: {exc}") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise BootstrapError(f"bundle is not a valid tar.gz: {exc}") from None
    if not files:
        raise BootstrapError("bundle holds no files")
    return dirs, files


def _checked_member_name(member: tarfile.TarInfo) -> str | None:
    """The member's normalized relative name (None for the top directory ``.``).

    Raises:
        BootstrapError: absolute name, ``..``, a link, a device or any non-regular type.
    """
    name = member.name
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise BootstrapError(f"bundle refused: member {name!r} is a {kind}; only regular files "
                             "and directories are allowed")
    if not name or "\0" in name or "\\" in name or name.startswith("/"):
        raise BootstrapError(f"bundle refused: member name {name!r} is not a relative path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BootstrapError(f"bundle refused: member name {name!r} contains '..'")
    if not parts:
        if member.isdir():
            return None
        raise BootstrapError(f"bundle refused: member name {name!r} is not a file name")
    return "/".join(parts)
