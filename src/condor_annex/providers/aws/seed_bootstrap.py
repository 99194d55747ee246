"""The seed's user data: the cloud-init document that makes an instance a seed.

Rendered from ``templates/seed.yaml`` (no secrets in it: user data is readable by anyone who can
describe the instance; the pool's signing key is made on the instance by its collector).  It
boots the way every annex node boots (cloud-init on a stock image; the bootstrap's cloud-init
semantics are in :mod:`condor_annex.providers.aws.bootstrap`):

- ``users`` (init stage) makes the seed's admin user, whose only sudo right is
  ``/usr/bin/condor_token_create`` (the pool's signing key is root's; annex tokens are minted
  with it);
- ``bootcmd`` (every boot) rewrites the address file from IMDSv2 (``local-ipv4``,
  ``public-ipv4``): ``TCP_FORWARDING_HOST`` is the public address of this boot;
- ``write_files`` writes the seed's HTCondor configuration
  (:func:`condor_annex.pool.seed_config.seed_config`), the scripts and the
  ``condor-annexd.service`` unit (``User=`` the admin user);
- ``runcmd`` (once, final stage): install HTCondor, python3-boto3 and sudo (a no-op when the
  image has them), write the addresses, fetch the wheelhouse from the private bucket with the
  instance role (:mod:`condor_annex.providers.aws.seed_wheels`; each wheel checked against the
  MANIFEST's SHA-256) and install condor-annex into ``/opt/condor-annex`` with pip run from its
  own wheel, start ``condor.service`` (the distribution's unit: central manager + submit node),
  wait for the collector, mint the admin user's IDTOKEN (its tools and condor_annexd
  authenticate with it: HTCondor's FS method needs the client's own host name to resolve,
  which a fresh instance's may not), start condor_annexd, then print :data:`SEED_READY_LINE` (or
  :data:`SEED_FAILED_LINE`) on the console, which ``seed status`` reads.
"""

from __future__ import annotations

import gzip
import re
from importlib import resources

from condor_annex.validate import MAX_USER_DATA_BASE64

#: Console lines of the seed's document: ready (every step done), or a step failed.
SEED_READY_LINE = "condor-annex: seed ready"
SEED_FAILED_LINE = "condor-annex: seed FAILED"
_SAFE_RE = re.compile(r"[A-Za-z0-9._:/@%+=,-]*", re.ASCII)
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}", re.ASCII)


def template_source() -> str:
    """The template text (``templates/seed.yaml`` in this package)."""
    return resources.files("condor_annex.providers.aws").joinpath(
        "templates/seed.yaml").read_text()


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line + "\n" if line else "\n" for line in text.splitlines())


def render_seed(*, version: str, region: str, bucket: str, wheel_prefix: str,
                endpoint_url: str, admin_user: str, admin_identity: str, seed_file: str,
                seed_config: str,
                address_file: str, address_template: str) -> str:
    """The ``#cloud-config`` document of one seed (str, about 9 KB).

    Args:
        version: this package's version (shown in the document).
        region: the AWS region the wheelhouse fetch uses.
        bucket: setup's private bucket.
        wheel_prefix: the wheelhouse's key prefix (``seed/<version>/``, with its ``MANIFEST``).
        endpoint_url: the instance's AWS endpoint (``ANNEX_INSTANCE_AWS_ENDPOINT_URL``), "" for
            AWS's own.
        admin_user: the seed's admin user name.
        admin_identity: its identity in the pool (``admin@<trust domain>``): the seed mints
            it an IDTOKEN once the pool's signing key exists.
        seed_file: where the seed's HTCondor configuration goes (a ``config.d`` path).
        seed_config: its text (:func:`condor_annex.pool.seed_config.seed_config`).
        address_file: where the address script writes each boot's addresses.
        address_template: that file's text with ``@PRIVATE@`` and ``@ADVERTISED@`` for the
            private and the advertised (public, else private) addresses.

    Raises:
        ValueError: a value the document cannot hold, or markers left unrendered.
    """
    for value, what in ((version, "version"), (region, "region"), (bucket, "bucket"),
                        (wheel_prefix, "wheelhouse prefix"), (endpoint_url, "endpoint"),
                        (seed_file, "seed file"), (address_file, "address file"),
                        (admin_identity, "admin identity")):
        if not _SAFE_RE.fullmatch(value):
            raise ValueError(f"seed bootstrap: {what} {value!r} has characters the document "
                             "cannot hold")
    if not _USER_RE.fullmatch(admin_user):
        raise ValueError(f"seed bootstrap: {admin_user!r} is not a user name")
    marks = {"@VERSION@": version, "@ADMIN_USER@": admin_user,
             "@ADMIN_IDENTITY@": admin_identity, "@SEED_FILE@": seed_file,
             "@SEED_CONFIG@\n": _indent(seed_config, 6),
             "@PY_ADDRESS_FILE@": repr(address_file),
             "@PY_ADDRESS_TEMPLATE@": repr(address_template),
             "@PY_BUCKET@": repr(bucket), "@PY_PREFIX@": repr(wheel_prefix),
             "@PY_REGION@": repr(region), "@PY_ENDPOINT@": repr(endpoint_url),
             "@READY_LINE@": SEED_READY_LINE, "@FAILED_LINE@": SEED_FAILED_LINE}
    text = template_source()
    for mark, value in marks.items():
        text = text.replace(mark, value)
    left = re.findall(r"@[A-Z_]+@", text.replace("@PRIVATE@", "").replace("@ADVERTISED@", ""))
    if left:   # a template edit without its renderer: never ship a half-rendered document
        raise ValueError(f"seed bootstrap: template markers left unrendered: {left}")
    return text


def user_data(document: str) -> bytes:
    """The user data to send: ``document`` gzip-compressed (cloud-init unpacks gzip user data
    before anything else, "User-data formats", docs.cloud-init.io/en/latest/explanation/
    format.html); about 5 KB instead of 12.  Deterministic (no time stamp in the header)."""
    return gzip.compress(document.encode(), mtime=0)


def fits(data: bytes) -> bool:
    """Whether user data ``data`` is within EC2's limit (16384 bytes after base64,
    docs.aws.amazon.com/AWSEC2/latest/UserGuide/user-data.html)."""
    return (len(data) + 2) // 3 * 4 <= MAX_USER_DATA_BASE64
