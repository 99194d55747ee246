"""The seed's wheelhouse: every Python package the seed instance installs, in setup's bucket.

Instances cannot be assumed to reach PyPI (the local cloud has no route out, a private subnet
may have none either), and the pinned set is what the user tested, so the seed installs offline
from ``s3://<setup bucket>/seed/<version>/``: the third-party wheels (the package's non-extra
requirements, pinned in pyproject.toml, and their dependencies), a pinned pip wheel, the
condor-annex wheel itself, and ``MANIFEST`` (``<sha256>  <file name>`` lines, what
``sha256sum -c`` reads).  The seed runs pip from its wheel (``python3 pip-*.whl/pip install
--no-index --find-links DIR condor-annex``; "pip can be run from a wheel", pip's own
``__main__.py``), so the image needs no pip.

Third-party wheels come from ``pip download --only-binary=:all: --python-version V
--implementation cp --platform P`` (pip documentation, "pip download": the target interpreter
need not be this one) into a cache directory that a stamp file (the request and the files'
SHA-256) makes reusable: the second build for the same pins does no network.  The condor-annex
wheel is rebuilt on every call (the code may change within a version): from the checkout when
the package is installed from one (PEP 610 ``direct_url.json``), else downloaded by version.
Its ``Requires-Dist`` (not this process's possibly stale metadata) names what to download.
"""

from __future__ import annotations

import email.parser
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condor_annex import __version__
from condor_annex.config import AwsSettings
from condor_annex.errors import NotFoundError, ProviderError
from condor_annex.providers.aws.bucket_objects import SHA_META as _SHA_META, put_unless_same
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

log = logging.getLogger(__name__)

#: The pip the seed runs from its wheel (pip 26.3 supports Python 3.9 and later).
PIP_VERSION = "26.3"
#: The seed image's python3 (Debian 13 "trixie") and a platform tag its glibc (2.41) accepts.
DEFAULT_PYTHON = "3.13"
DEFAULT_PLATFORM = "manylinux_2_28_x86_64"
#: Key prefix of wheelhouses in the setup bucket; the seed role may GetObject under it.
SEED_PREFIX = "seed/"
MANIFEST = "MANIFEST"
_DIST = "condor-annex"
_OWN_GLOB = "condor_annex-*.whl"
_STAMP = "wheelhouse.json"
#: SOURCE_DATE_EPOCH for our wheel (1980-01-01, the zip format's earliest date): the same
#: source builds the same bytes, so an unchanged wheel is not uploaded again.
_EPOCH = "315532800"
#: Not copied from a checkout into the build directory (caches, earlier builds, metadata an
#: editable install left: setuptools would put stale files of build/ into the wheel).
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist",
                               ".mypy_cache", ".pytest_cache")

Notify = Callable[[str], None]


class WheelhouseError(ProviderError):
    """Making the wheelhouse failed: pip failed (its last error line is in the message), or a
    file changed between build and upload.  Exit status 1."""


@dataclass(frozen=True)
class Wheelhouse:
    """A directory of wheels for the seed.

    Attributes:
        directory: where the files are (pip's ``--find-links`` directory).
        files: ``(file name, size in bytes, sha256 hex)`` per wheel, sorted by name; only
            these belong to the wheelhouse (the directory may hold others).
    """

    directory: Path
    files: tuple[tuple[str, int, str], ...]

    @classmethod
    def scan(cls, directory: Path, names: Iterable[str]) -> Wheelhouse:
        """The wheelhouse of the files ``names`` in ``directory`` (each read and hashed).

        Raises:
            OSError: a file is missing or unreadable.
        """
        return cls(directory, tuple(file_entry(directory / n) for n in sorted(set(names))))

    def manifest(self) -> str:
        """``MANIFEST``'s text: ``<sha256>  <file name>`` per wheel (``sha256sum -c``)."""
        return manifest_text(self.files)


def file_entry(path: Path) -> tuple[str, int, str]:
    """``(file name, size in bytes, sha256 hex)`` of ``path``.  Raises OSError."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return path.name, size, digest.hexdigest()


def manifest_text(files: Iterable[tuple[str, int, str]]) -> str:
    """One ``<sha256>  <file name>`` line per file, sorted by name (the format ``sha256sum
    -c`` checks; two spaces: text mode, the same bytes on Linux)."""
    return "".join(f"{sha}  {name}\n" for name, _size, sha in sorted(files))


def seed_requirements(requires: Iterable[str] | None) -> list[str]:
    """The requirements the seed installs: ``requires`` (``Requires-Dist`` strings) less those
    of an extra (``; extra == "test"``), in their order, plus the pinned pip."""
    keep = [r.strip() for r in requires or ()
            if not re.search(r"\bextra\s*==", r.partition(";")[2])]
    return keep + [f"pip=={PIP_VERSION}"]


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of ``wheel``'s ``*.dist-info/METADATA`` (all of them,
    extras included).

    Raises:
        WheelhouseError: the file is not a wheel (no METADATA).
    """
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist()
                 if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if not names:
            raise WheelhouseError(f"{wheel.name}: not a wheel (no .dist-info/METADATA)")
        text = zf.read(names[0]).decode("utf-8")
    return email.parser.Parser().parsestr(text, headersonly=True).get_all("Requires-Dist") or []


def checkout_dir(direct_url: str | None) -> Path | None:
    """The source directory this package was installed from, read from PEP 610's
    ``direct_url.json`` text: a ``file:`` URL naming a directory that has a pyproject.toml
    (``pip install -e .`` or ``pip install .``); ``None`` for an install from an index, an
    archive or a VCS URL, or when there is no such file."""
    try:
        doc = json.loads(direct_url or "")
        parts = urllib.parse.urlsplit(doc["url"])
    except (ValueError, KeyError, TypeError):
        return None
    if parts.scheme != "file" or "dir_info" not in doc:
        return None
    path = Path(urllib.request.url2pathname(urllib.parse.unquote(parts.path)))
    return path if (path / "pyproject.toml").is_file() else None


def default_cache_dir(python_version: str = DEFAULT_PYTHON,
                      platform: str = DEFAULT_PLATFORM) -> Path:
    """``$XDG_CACHE_HOME/condor-annex/seed-wheels/<python_version>-<platform>/`` (default
    ``~/.cache/...``, the XDG Base Directory rule): downloads anyone may fetch again, so not
    beside the user's config, and one copy for every config a user (or a test suite) has."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "condor-annex" / "seed-wheels" / f"{python_version}-{platform}"


def _error_line(stderr: str, returncode: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith("error:")]
    return (errors or lines or [f"exit status {returncode}"])[-1]


def run_pip(args: list[str], notify: Notify | None = None, *,
            env: dict[str, str] | None = None) -> None:
    """Run ``sys.executable -m pip ARGS``: each stdout line goes to ``notify``.

    Raises:
        WheelhouseError: pip exited non-zero; the message holds its last error line (e.g.
            ``ERROR: No matching distribution found for htcondor==25.14.1``).
    """
    cmd = [sys.executable, "-m", "pip", *args]
    full_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", **(env or {}))
    # stderr to a file: a pipe left unread while stdout is read could fill and stall pip
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                env=full_env, stdin=subprocess.DEVNULL)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() and notify is not None:
                notify(line.rstrip())
        rc = proc.wait()
        if rc:
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
            log.debug("pip %s stderr: %s", args[0], stderr[-4000:])
            raise WheelhouseError(f"pip {args[0]} failed: {_error_line(stderr, rc)}",
                                  code="PipFailed")


def fetch_dependency_wheels(cache_dir: Path, requirements: list[str], *,
                            python_version: str = DEFAULT_PYTHON,
                            platform: str = DEFAULT_PLATFORM,
                            notify: Notify | None = None) -> list[str]:
    """Wheels of ``requirements`` and their dependencies for the target interpreter, in
    ``cache_dir``; returns their file names (sorted).

    When the cache's stamp records the same request and every file with its SHA-256 is still
    there, pip does not run (no network).  Otherwise ``pip download --only-binary=:all:``
    fetches the set afresh into a temporary directory beside the cache, then wheels of an
    earlier set are removed (``--find-links`` must not offer a stale urllib3) and the new ones
    moved in; the condor-annex wheel in the directory is left alone.

    Raises:
        WheelhouseError: pip failed (no wheel of a pin for this Python and platform, no
            network, ...).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = {"requirements": list(requirements), "python_version": python_version,
           "platform": platform}
    stamp = cache_dir / _STAMP
    try:
        doc = json.loads(stamp.read_text(encoding="utf-8"))
        if doc["key"] == key and all(
                list(file_entry(cache_dir / name)) == [name, size, sha]
                for name, size, sha in doc["files"]):
            return sorted(name for name, _size, _sha in doc["files"])
    except (OSError, ValueError, KeyError, TypeError):
        pass    # no cache, another request, or a file changed: download
    if notify is not None:
        notify(f"downloading {len(requirements)} pinned packages and their dependencies "
               f"for CPython {python_version} on {platform}")
    with tempfile.TemporaryDirectory(dir=cache_dir.parent, prefix=".download-") as tmp:
        run_pip(["download", "--only-binary=:all:", "--python-version", python_version,
                 "--implementation", "cp", "--platform", platform, "--progress-bar", "off",
                 "-d", tmp, *requirements], notify)
        names = sorted(p.name for p in Path(tmp).iterdir() if p.name.endswith(".whl"))
        for old in cache_dir.glob("*.whl"):
            if old.name not in names and not old.match(_OWN_GLOB):
                old.unlink()
        for name in names:
            os.replace(Path(tmp) / name, cache_dir / name)
    entries = [list(file_entry(cache_dir / name)) for name in names]
    part = stamp.with_name(stamp.name + ".part")
    part.write_text(json.dumps({"key": key, "files": entries}, indent=1) + "\n",
                    encoding="utf-8")
    os.replace(part, stamp)
    return names


def _version(text: str) -> tuple[int, ...]:
    """Leading numeric release of a version string: ``"65.5.0"`` -> (65, 5, 0)."""
    out = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if not digits:
            break
        out.append(int(digits[0]))
        if digits[0] != part:
            break
    return tuple(out)


def backend_installed(pyproject: dict[str, Any]) -> bool:
    """True when this interpreter can build the checkout's wheel with no network: the build
    backend is setuptools, every ``build-system.requires`` entry (``name`` or
    ``name>=version``) is installed at such a version, and setuptools can make wheels
    (70.1 and later by itself, older ones with the ``wheel`` package)."""
    system = pyproject.get("build-system", {})
    if system.get("build-backend") != "setuptools.build_meta":
        return False
    try:
        for req in system.get("requires", []):
            m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(?:>=\s*([0-9][0-9.]*))?\s*", req)
            if m is None:
                return False
            have = importlib.metadata.version(m[1])
            if m[2] and _version(have) < _version(m[2]):
                return False
        setuptools = _version(importlib.metadata.version("setuptools"))
    except importlib.metadata.PackageNotFoundError:
        return False
    return setuptools >= (70, 1) or importlib.util.find_spec("wheel") is not None


def build_own_wheel(checkout: Path, dest: Path, notify: Notify | None = None) -> Path:
    """Build condor-annex's wheel from ``checkout`` into ``dest``; return its path.

    The checkout's top-level files and ``src/`` are copied to a temporary directory first
    (setuptools builds in the source tree: its ``build/`` keeps files since deleted, and
    other people's builds run in the same tree).  ``SOURCE_DATE_EPOCH`` makes the bytes
    depend on the source only.  Built with this interpreter's setuptools when it can
    (:func:`backend_installed`; no network), else in pip's isolated build environment (pip
    fetches the backend pyproject.toml names).

    Raises:
        WheelhouseError: the build failed.
    """
    pyproject = tomllib.loads((checkout / "pyproject.toml").read_text(encoding="utf-8"))
    offline = backend_installed(pyproject)
    with tempfile.TemporaryDirectory(prefix="condor-annex-wheel-") as tmp:
        src = Path(tmp) / "src-copy"
        src.mkdir()
        for entry in checkout.iterdir():
            if entry.is_file():
                shutil.copy2(entry, src / entry.name)
        if (checkout / "src").is_dir():
            shutil.copytree(checkout / "src", src / "src", ignore=_SKIP)
        out = Path(tmp) / "out"
        isolation = ["--no-build-isolation", "--no-index"] if offline else []
        if notify is not None:
            notify(f"building the condor-annex wheel from {checkout}"
                   + ("" if offline else " (pip fetches the build backend)"))
        run_pip(["wheel", "--no-deps", *isolation, "--progress-bar", "off", "-w", str(out),
                 str(src)], notify, env={"SOURCE_DATE_EPOCH": _EPOCH})
        return _move_own_wheel(out, dest)


def _move_own_wheel(out: Path, dest: Path) -> Path:
    """Move the one condor-annex wheel in ``out`` into ``dest``, replacing any there."""
    built = sorted(out.glob(_OWN_GLOB))
    if len(built) != 1:
        raise WheelhouseError(f"pip made {len(built)} condor-annex wheels, not one")
    for old in dest.glob(_OWN_GLOB):
        old.unlink()
    return Path(shutil.move(str(built[0]), dest / built[0].name))


def _download_own_wheel(version: str, dest: Path, python_version: str,
                        notify: Notify | None) -> Path:
    with tempfile.TemporaryDirectory(prefix="condor-annex-wheel-") as tmp:
        run_pip(["download", "--no-deps", "--only-binary=:all:", "--python-version",
                 python_version, "--progress-bar", "off", "-d", tmp,
                 f"{_DIST}=={version}"], notify)
        return _move_own_wheel(Path(tmp), dest)


def build_wheelhouse(*, python_version: str = DEFAULT_PYTHON,
                     platform: str = DEFAULT_PLATFORM, cache_dir: Path | None = None,
                     notify: Notify | None = None) -> Wheelhouse:
    """Everything the seed installs, in one directory (``cache_dir``, default
    :func:`default_cache_dir`): the condor-annex wheel (rebuilt now), pip's wheel
    (:data:`PIP_VERSION`) and the wheels of the condor-annex wheel's non-extra requirements
    with their dependencies for CPython ``python_version`` on ``platform`` (from the cache
    when the pins have not changed).  About 28 MB; a cold cache takes seconds of download.

    Args:
        python_version: the seed image's python3, ``"3.13"``.
        platform: a wheel platform tag the image accepts (pip also takes older manylinux
            tags and pure-Python wheels).
        notify: called with each progress line (pip's output included).

    Raises:
        WheelhouseError: pip failed (no network, no wheel of a pin for the target).
    """
    cache = cache_dir or default_cache_dir(python_version, platform)
    cache.mkdir(parents=True, exist_ok=True)
    dist = importlib.metadata.distribution(_DIST)
    checkout = checkout_dir(dist.read_text("direct_url.json"))
    if checkout is not None:
        own = build_own_wheel(checkout, cache, notify)
    else:
        own = _download_own_wheel(dist.version, cache, python_version, notify)
    requirements = seed_requirements(wheel_requirements(own))
    names = fetch_dependency_wheels(cache, requirements, python_version=python_version,
                                    platform=platform, notify=notify)
    return Wheelhouse.scan(cache, [*names, own.name])


def seed_prefix(version: str = __version__) -> str:
    """The bucket key prefix of package ``version``'s wheelhouse: ``seed/<version>/``."""
    return f"{SEED_PREFIX}{version}/"


def upload_wheelhouse(settings: AwsSettings, bucket: str, wh: Wheelhouse, *,
                      version: str = __version__, notify: Notify | None = None) -> str:
    """Put each wheel of ``wh`` at ``seed/<version>/<file name>`` in ``bucket`` unless the
    same bytes are there (S3 HeadObject ``ContentLength`` and our ``sha256`` metadata, then
    PutObject), then ``seed/<version>/MANIFEST`` (after the wheels: a reader of the manifest
    finds every file it names), then delete the prefix's other keys (wheels of an earlier
    build of this version, which ``--find-links`` would otherwise offer).

    Returns:
        The prefix, ``seed/<version>/``.

    Raises:
        WheelhouseError: a file changed since :func:`build_wheelhouse` hashed it.
        ProviderError: an S3 call failed (HeadObject, PutObject, ListObjectsV2,
            DeleteObjects).
    """
    s3 = make_client(settings, "s3")
    prefix = seed_prefix(version)
    for name, size, sha in wh.files:
        data = (wh.directory / name).read_bytes()
        if len(data) != size or hashlib.sha256(data).hexdigest() != sha:
            raise WheelhouseError(f"{wh.directory / name} changed since the wheelhouse was "
                                  f"built; build it again")
        if put_unless_same(s3, bucket, prefix + name, data, "application/zip") and notify:
            notify(f"uploaded {prefix}{name} ({size / 1e6:.1f} MB)")
    put_unless_same(s3, bucket, prefix + MANIFEST, wh.manifest().encode(), "text/plain")
    keep = {prefix + name for name, _size, _sha in wh.files} | {prefix + MANIFEST}
    stale: list[str] = []
    with aws_errors("s3.ListObjectsV2"):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                 Prefix=prefix):
            stale += [o["Key"] for o in page.get("Contents", []) if o["Key"] not in keep]
    for start in range(0, len(stale), 1000):     # DeleteObjects takes 1000 keys a call
        with aws_errors("s3.DeleteObjects"):
            resp = s3.delete_objects(Bucket=bucket, Delete={
                "Objects": [{"Key": k} for k in stale[start:start + 1000]], "Quiet": True})
        if resp.get("Errors"):     # per-key failures come in a 200 reply
            first = resp["Errors"][0]
            raise ProviderError(f"s3.DeleteObjects: {first.get('Key')}: "
                                f"{first.get('Message', first.get('Code'))}",
                                code=first.get("Code", ""))
    if stale and notify:
        notify(f"deleted {len(stale)} stale files under {prefix}")
    return prefix
