"""The agent as one file: a zipapp that setup uploads to the private bucket.

``python3 condor-annex-agent-<version>.pyz ARGS`` runs :mod:`condor_annex.agent` (stdlib
``zipapp``: a zip whose ``__main__.py`` Python runs, docs.python.org/3/library/zipapp.html).  It
holds ``condor_annex/__init__.py`` and ``condor_annex/agent/*.py`` only (the agent imports
nothing above itself), so it runs on the distribution python3 with python3-boto3.

The bytes are deterministic (sorted entries, a fixed timestamp, fixed permissions): the same
package version builds the same zipapp, so setup uploads it only when the bucket's copy is
missing or differs (S3 HeadObject ``ContentLength`` and our ``sha256`` metadata).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from importlib import resources

from condor_annex import __version__
from condor_annex.config import AwsSettings
from condor_annex.errors import NotFoundError
from condor_annex.providers.aws.bucket_objects import SHA_META as _SHA_META, put_unless_same
from condor_annex.providers.aws.errors import aws_errors
from condor_annex.providers.aws.session import make_client

#: Key prefix of agent zipapps in the setup bucket (the instance roles may GetObject it).
AGENT_PREFIX = "agent/"
#: Timestamp of every zip entry (the zip format's earliest, 1980-01-01 00:00:00).
_EPOCH = (1980, 1, 1, 0, 0, 0)
_MAIN = b"import sys\nfrom condor_annex.agent.bootstrap import main\nsys.exit(main())\n"


def agent_key(version: str = __version__) -> str:
    """The bucket key of the agent of package ``version``:
    ``agent/condor-annex-agent-<version>.pyz``."""
    return f"{AGENT_PREFIX}condor-annex-agent-{version}.pyz"


def _sources() -> list[tuple[str, bytes]]:
    pkg = resources.files("condor_annex")
    files = [("condor_annex/__init__.py", pkg.joinpath("__init__.py").read_bytes())]
    agent = pkg.joinpath("agent")
    for entry in sorted(agent.iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".py"):
            files.append((f"condor_annex/agent/{entry.name}", entry.read_bytes()))
    return files


def build_agent_zipapp() -> bytes:
    """The agent zipapp, bytes (deterministic for one source tree; about 30-60 KB).

    Entries: ``__main__.py`` (runs ``condor_annex.agent.bootstrap.main``),
    ``condor_annex/__init__.py``, ``condor_annex/agent/*.py``; deflated, mode 0644, dated
    1980-01-01.  A zipapp may start with a ``#!`` line; this one has none (the unit runs it
    with ``/usr/bin/python3``).
    """
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path, data in [("__main__.py", _MAIN)] + _sources():
            info = zipfile.ZipInfo(path, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3   # Unix, whatever host builds it
            zf.writestr(info, data)
    return out.getvalue()


def upload_agent(settings: AwsSettings, bucket: str, *, version: str = __version__,
                 data: bytes | None = None) -> bool:
    """Put the agent zipapp at :func:`agent_key` in ``bucket`` unless the same bytes are
    there (S3 HeadObject, then PutObject).

    Returns:
        True when it uploaded, False when the bucket already had it.

    Raises:
        ProviderError: an S3 call failed.
    """
    data = build_agent_zipapp() if data is None else data
    return put_unless_same(make_client(settings, "s3"), bucket, agent_key(version), data,
                           "application/zip")


def agent_status(settings: AwsSettings, bucket: str, *,
                 version: str = __version__) -> str | None:
    """``None`` when the bucket holds this version's agent as built now, else what is wrong
    (one line: missing, or different bytes).  One S3 HeadObject.

    Raises:
        ProviderError: the call failed otherwise than "not found".
    """
    s3 = make_client(settings, "s3")
    key = agent_key(version)
    try:
        with aws_errors("s3.HeadObject"):
            head = s3.head_object(Bucket=bucket, Key=key)
    except NotFoundError:
        return f"agent {key} is missing"
    digest = hashlib.sha256(build_agent_zipapp()).hexdigest()
    if head.get("Metadata", {}).get(_SHA_META) != digest:
        return f"agent {key} differs from this package's"
    return None
