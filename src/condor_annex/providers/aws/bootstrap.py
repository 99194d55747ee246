"""The bootstrap: the cloud-init document every annex instance gets as its user data.

Rendered from ``templates/bootstrap.yaml`` (no secrets in it: user data is readable by anyone
who can describe the instance).  cloud-init semantics relied on (cloud-init docs,
docs.cloud-init.io/en/latest/reference/modules.html and examples/cloud-config-boot-cmds.txt,
cloud-config-run-cmds.txt in canonical/cloud-init):

- ``bootcmd`` runs at **every** boot, early (init stage), each list item via execve: it masks
  the distribution's ``condor.service`` (the agent runs ``condor_master``) and copies the
  agent's arguments to ``/etc/default/condor-annex-agent``;
- ``write_files`` (init stage, once per instance) writes the install script, the agent fetch
  script, the systemd unit and the env file;
- ``runcmd`` runs **once per instance** in the final stage ("rc.local-like", output to the
  console): install step (a no-op when ``htcondor``, ``python3-boto3`` and ``iptables`` are
  installed; skipped on a prepared image), fetch the agent (skipped on a prepared image),
  ``systemctl daemon-reload``, ``systemctl enable --now condor-annex-agent.service``.

A user's own user data is combined with ours as a MIME multi-part archive (cloud-init "User-data
formats": ``multipart/mixed`` whose parts are ``text/cloud-config``, ``text/x-shellscript``,
``text/cloud-boothook``, ``text/x-include-url``, ``text/jinja2``...; docs.cloud-init.io/en/latest/
explanation/format.html), ours first.  cloud-init merges several cloud-config parts in order and,
by default, a later part's ``runcmd``/``write_files`` *replace* the earlier ones ("Merging user
data sections", docs.cloud-init.io/en/latest/reference/merging.html): the user's cloud-config
part therefore carries the MIME header ``Merge-Type: list(append)+dict(no_replace,recurse_list)
+str()`` so that its lists append to ours instead of dropping them (its own ``merge_how``, if
any, wins: the user's explicit choice).

EC2 accepts at most 16384 bytes of user data after base64 (docs.aws.amazon.com/AWSEC2/latest/
UserGuide/user-data.html): :func:`check_size` says so in one line naming the flag.
"""

from __future__ import annotations

import base64
import gzip
import re
from email import message_from_bytes
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from importlib import resources

from condor_annex.errors import BadInputError
from condor_annex.validate import MAX_USER_DATA_BASE64

#: Where the agent lives on an instance, and its unit (the image builder and docs use these).
AGENT_PATH = "/usr/local/lib/condor-annex/condor-annex-agent.pyz"
UNIT_PATH = "/etc/systemd/system/condor-annex-agent.service"
ENV_PATH = "/etc/default/condor-annex-agent"
#: How the user's cloud-config part merges into ours (lists append; see the module docstring).
USER_MERGE_TYPE = "list(append)+dict(no_replace,recurse_list)+str()"

#: runcmd steps that start the agent (joining boots; not the image builder).
_START_STEPS = ("  - [systemctl, daemon-reload]\n"
                "  - [systemctl, enable, --now, condor-annex-agent.service]\n")
#: Console lines of the image builder's document: done (then power-off), or failed.
BUILD_DONE_LINE = "condor-annex: image build complete"
BUILD_FAILED_LINE = "condor-annex: image build FAILED"
_SERIES_RE = re.compile(r"[0-9]{2}\.x", re.ASCII)
_SAFE_RE = re.compile(r"[A-Za-z0-9._:/@%+=,-]*", re.ASCII)
#: User data prefixes -> the MIME type cloud-init gives them (format.html).
_STARTS = (("#cloud-config", "cloud-config"), ("#!", "x-shellscript"),
           ("#include-once", "x-include-once-url"), ("#include", "x-include-url"),
           ("#cloud-boothook", "cloud-boothook"), ("## template: jinja", "jinja2"),
           ("#part-handler", "part-handler"))


def template_source() -> str:
    """The template text (``templates/bootstrap.yaml`` in this package)."""
    return resources.files("condor_annex.providers.aws").joinpath(
        "templates/bootstrap.yaml").read_text()


def _safe(value: str, what: str) -> str:
    if not _SAFE_RE.fullmatch(value):
        raise ValueError(f"bootstrap: {what} {value!r} has characters the bootstrap cannot hold")
    return value


def render_bootstrap(*, region: str, bucket: str, agent_key: str, version: str,
                     endpoint_url: str = "", prepared: bool = False, prepared_version: str = "",
                     htcondor_repo: str = "", distribution: str = "debian",
                     build: bool = False) -> str:
    """The ``#cloud-config`` document for one launch (str, about 6 KB).

    Args:
        region: the AWS region the agent fetch uses (``us-east-1``).
        bucket: setup's private bucket.
        agent_key: the agent zipapp's key (:func:`agent_package.agent_key`).
        version: this package's version (shown in the document).
        endpoint_url: the instances' AWS endpoint (``ANNEX_INSTANCE_AWS_ENDPOINT_URL``), "" for
            AWS's own; also passed to the agent as ``--aws-endpoint-url``.
        prepared: the AMI carries ``htcondor:AnnexImage``: runcmd skips install and fetch and
            prints ``condor-annex: prepared image (htcondor:AnnexImage=<v>), skipping install``.
        prepared_version: that tag's value.
        htcondor_repo: ``ANNEX_HTCONDOR_REPO`` series (``24.x``): HTCondor from HTCondor's own
            apt repository; "" = the distribution's (Ubuntu: ``23.x`` from HTCondor's).
        distribution: ``debian`` / ``ubuntu`` / "" (treated as Debian-like).
        build: the image builder's document (``condor_annex image build``): install, fetch
            the agent, enable its unit without starting it, print
            :data:`BUILD_DONE_LINE` and power off; on any failure print
            :data:`BUILD_FAILED_LINE` and stay up.

    Raises:
        ValueError: a value with characters the document cannot hold (callers validate first).
    """
    if htcondor_repo and not _SERIES_RE.fullmatch(htcondor_repo):
        raise ValueError(f"bootstrap: HTCondor series {htcondor_repo!r} is not like 24.x")
    for value, what in ((region, "region"), (bucket, "bucket"), (agent_key, "agent key"),
                        (endpoint_url, "endpoint"), (version, "version"),
                        (prepared_version, "image version"), (distribution, "distribution")):
        _safe(value, what)
    args = f"--aws-endpoint-url {endpoint_url}" if endpoint_url else ""
    if build:
        # One shell line: the image is made only after every step succeeded (the builder
        # powers off); on failure it stays up and says so (image_builder watches for it).
        steps = ('  - [sh, -c, "sh /usr/local/lib/condor-annex/install.sh'
                 ' && python3 /usr/local/lib/condor-annex/fetch-agent.py'
                 ' && systemctl daemon-reload && systemctl enable condor-annex-agent.service'
                 f' && echo \'{BUILD_DONE_LINE}\' && shutdown -h now'
                 f' || echo \'{BUILD_FAILED_LINE}\'"]\n')
    elif prepared:
        steps = ('  - [echo, "condor-annex: prepared image (htcondor:AnnexImage='
                 f'{prepared_version}), skipping install"]\n' + _START_STEPS)
    else:
        steps = ("  - [sh, /usr/local/lib/condor-annex/install.sh]\n"
                 "  - [python3, /usr/local/lib/condor-annex/fetch-agent.py]\n" + _START_STEPS)
    marks = {"@VERSION@": version, "@AGENT_ARGS@": args, "@HTCONDOR_REPO@": htcondor_repo,
             "@DISTRIBUTION@": distribution, "@PY_BUCKET@": repr(bucket),
             "@PY_AGENT_KEY@": repr(agent_key), "@PY_REGION@": repr(region),
             "@PY_ENDPOINT@": repr(endpoint_url), "@RUNCMD_STEPS@\n": steps}
    text = template_source()
    for mark, value in marks.items():
        text = text.replace(mark, value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:   # a template edit without its renderer: never ship a half-rendered document
        raise ValueError(f"bootstrap: template markers left unrendered: {left}")
    return text


def _part_type(text: str) -> str:
    for prefix, subtype in _STARTS:
        if text.startswith(prefix):
            return subtype
    return "plain"


def _text_part(text: str, subtype: str) -> MIMEText:
    try:
        text.encode("ascii")
        charset = "us-ascii"
    except UnicodeEncodeError:
        charset = "utf-8"
    return MIMEText(text, subtype, charset)


def combine_user_data(ours: str, theirs: bytes | None) -> bytes:
    """Our bootstrap alone (``theirs`` None or empty), else a MIME multi-part archive: ours
    (``text/cloud-config``) first, then the user's, never dropped: a MIME archive's parts are
    appended as they are, gzip is unpacked, other data becomes one part typed by its first
    line (``#cloud-config`` -> ``text/cloud-config`` with ``Merge-Type``
    :data:`USER_MERGE_TYPE`, ``#!`` -> ``text/x-shellscript``, ...).

    Returns:
        the raw user data (bytes; boto3 / our fleet code base64-encode it).
    """
    if not theirs:
        return ours.encode()
    if theirs[:2] == b"\x1f\x8b":
        theirs = gzip.decompress(theirs)
    outer = MIMEMultipart(boundary="==condor-annex-bootstrap==")
    outer.attach(_text_part(ours, "cloud-config"))
    head = theirs.lstrip()[:200].lower()
    if head.startswith(b"content-type: multipart") or head.startswith(b"mime-version"):
        for part in message_from_bytes(theirs).walk():
            if not part.is_multipart():
                outer.attach(part)
    else:
        text = theirs.decode("utf-8", "replace")
        subtype = _part_type(text)
        part = _text_part(text, subtype)
        if subtype == "cloud-config":
            part["Merge-Type"] = USER_MERGE_TYPE
        outer.attach(part)
    return outer.as_bytes()


def check_size(data: bytes, flag: str, *, ours: int = 0) -> bytes:
    """Return ``data`` if EC2 takes it: at most 16384 bytes once base64-encoded.

    Args:
        data: the combined user data (raw).
        flag: the user's user-data flag as typed (``--user-data``, ``-aws-user-data``...).
        ours: bytes of it that are our bootstrap, for the message.

    Raises:
        BadInputError: one line naming ``flag``.
    """
    size = len(base64.b64encode(data))
    if size > MAX_USER_DATA_BASE64:
        raise BadInputError(
            f"{flag}: user data is {size} bytes in base64 once combined with condor-annex's "
            f"bootstrap ({ours} bytes of it); EC2 accepts at most {MAX_USER_DATA_BASE64}; "
            "shorten yours or fetch the rest at boot")
    return data
