"""Boot an annex instance: fetch its HTCondor config bundle, install it, run the master, power off.

Runs as root on the instance (a oneshot boot service, or the local cloud's instance process) under
the image's Python 3.11-3.13 with boto3; imports nothing from ``condor_annex`` outside
``condor_annex.agent``. It replaces HTCondor's ``condor-annex-ec2`` script (reference §8) and fixes
its defects: IMDSv2 instead of plain ``curl``; the annex name is the exact ``htcondor:AnnexName``
tag, not the client token cut at its first ``_``; the bucket comes from a tag on the instance role
instead of grepping IAM policies; the bundle is unpacked with checks instead of ``tar -xzf``.

Steps (each logged at INFO with its duration):

1. IMDSv2: instance id, region, public IPv4 (private IPv4 when there is none).
2. A boto3 session in that region, with the instance role's credentials through boto3's own
   chain, pointed at ``--imds-url`` (never a secret in argv).
3. Annex name: IMDS tag ``htcondor:AnnexName``, else EC2 DescribeTags on the instance.
4. Bucket: ``--bucket``, else the instance's own tag ``htcondor:ConfigBucket`` (IMDS, no API
   call; condor_annex sets it at launch), else that tag on the instance profile's role
   (IMDS ``iam/info`` -> IAM GetInstanceProfile -> IAM ListRoleTags).
5. S3 GetObject ``config-<annex>.tar.gz``, retried with backoff until ``--deadline-s``.
6. Install the bundle into ``--condor-config-dir``: regular files and directories only, relative
   paths without ``..``; files under ``tokens.d/`` (and ``passwords.d/``) mode 600, others 644.
7. Write ``config.d/49-instance.config`` (EC2InstanceID, EC2PublicIP, TCP_FORWARDING_HOST, ...).
8. Unless ``--no-block-imds``: an iptables rule rejecting non-root access to the metadata service
   (:mod:`condor_annex.agent.firewall`); when it cannot be applied, HTCondor is not started.
9. Run ``condor_master -f`` with ``CONDOR_CONFIG`` (:mod:`condor_annex.agent.master`); forward
   SIGTERM/SIGINT to it; every ``--off-poll-s`` seconds look at the instance tags
   ``htcondor:AnnexOff`` (set by ``condor_annex off``: shut the master down gracefully, SIGTERM,
   as ``condor_off -annex`` would) and ``htcondor:LeaseEnd``; at the lease end +
   ``--lease-margin-s`` (the instance-side backstop, :mod:`condor_annex.agent.backstop`: the
   later of the bundle's ``AnnexLeaseEnd`` and the tag) stop it too, with a bounded grace, even
   when IMDS, S3 and every cloud-side piece are broken; when the master exits, run
   ``--poweroff-command`` and exit 0. A node whose lease is already over when it is ready does
   not start the master at all.

Any failure before the master starts (IMDS 403, no annex tag, no bundle by the deadline, a bad
bundle, no metadata firewall) logs one ``bootstrap failed`` line, runs the power-off command and
exits 1, so a broken node never lingers (the original powered off after 50 minutes, "AWS charges
by the hour").

Required instance-role permissions: ``ec2:DescribeTags`` (only when instance metadata tags are
off), ``iam:GetInstanceProfile`` and ``iam:ListRoleTags`` on itself (only without ``--bucket``
and without the instance tag ``htcondor:ConfigBucket`` in metadata),
``s3:GetObject`` on ``config-<annex>.tar.gz``.
"""

from __future__ import annotations

import argparse
import functools
import io
import ipaddress
import logging
import math
import os
import posixpath
import random
import resource
import re
import shlex
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from condor_annex.agent.backstop import LEASE_MARGIN_S, TAG_LEASE_END, LeaseBackstop
from condor_annex.agent.firewall import FirewallError, block_imds
from condor_annex.agent.imds import ImdsClient, ImdsError
from condor_annex.agent.master import run_master
from condor_annex.agent.watch import TAG_ANNEX_OFF, NodeWatch

log = logging.getLogger(__name__)
T = TypeVar("T")

# Same values as condor_annex.model (not imported: the agent stands alone on the instance).
TAG_ANNEX_NAME = "htcondor:AnnexName"
TAG_CONFIG_BUCKET = "htcondor:ConfigBucket"
#: TAG_ANNEX_OFF (set by ``condor_annex off``: leave the pool gracefully, then power off) and
#: TAG_LEASE_END (the lease end, rewritten by ``extend``) come from the watch and backstop modules.
#: Seconds between looks at those instance tags while the master runs.
OFF_POLL_S = 5.0

DEFAULT_IMDS_URL = "http://169.254.169.254"
INSTANCE_CONFIG = "config.d/49-instance.config"
#: Top-level bundle directories whose files are secrets (mode 600, directory 700).
SECRET_DIRS = ("tokens.d", "passwords.d")
#: Longest a single IMDS lookup may retry, seconds (also capped by --deadline-s).
IMDS_DEADLINE_S = 120.0
#: How long a missing tag (annex name, config bucket) may take to become visible, seconds.
TAG_VISIBILITY_WAIT_S = 120.0
#: Backoff of the AWS retry loops: first delay and cap, seconds (the original started at 2 s).
BACKOFF_INITIAL_S = 2.0
BACKOFF_MAX_S = 120.0
#: Backoff while waiting for what appears within seconds of boot (role credentials, tags): the
#: 2-120 s backoff turned a 2 s wait into 50 s on a busy host.
_SOON = {"initial_s": 0.5, "max_s": 5.0}
MAX_RETRY_ATTEMPTS = 1000
#: Bundle limits: compressed size, number of members, total unpacked size.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_BUNDLE_MEMBERS = 1000
MAX_UNPACKED_BYTES = 64 * 1024 * 1024
#: Timeout of the power-off command, seconds.
POWEROFF_TIMEOUT_S = 120
_INSTANCE_ID_RE = re.compile(r"i-[0-9A-Za-z]{1,32}", re.ASCII)
#: tarfile's extraction filters arrived in Python 3.11.4; older 3.11 relies on our own checks.
_TAR_FILTER_ERRORS: tuple[type[Exception], ...] = \
    (tarfile.FilterError,) if hasattr(tarfile, "FilterError") else ()


class BootstrapError(Exception):
    """A failure that stops the boot; its text is the one line logged before powering off."""


class _NotYet(Exception):
    """A transient failure inside a retry loop (the text says what was missing)."""


@dataclass(frozen=True)
class Identity:
    """Who this instance is, from IMDS."""

    instance_id: str
    region: str
    public_ip: str


# -- command line ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The agent's command line."""
    p = argparse.ArgumentParser(
        prog="python3 -m condor_annex.agent",
        description="Join this instance to its annex: fetch and install the annex's HTCondor "
                    "config bundle, run condor_master, power off when it exits.")
    p.add_argument("--imds-url", default=DEFAULT_IMDS_URL,
                   help="instance metadata service (default: %(default)s)")
    p.add_argument("--aws-endpoint-url", default=None,
                   help="endpoint for EC2, IAM and S3 calls (default: AWS's own)")
    p.add_argument("--condor-config-dir", default="/etc/condor",
                   help="HTCondor config dir holding condor_config, config.d/, tokens.d/ "
                        "(default: %(default)s)")
    p.add_argument("--condor-master", default="condor_master",
                   help="condor_master command, split like a shell would (default: %(default)s)")
    p.add_argument("--poweroff-command", default="shutdown -h now",
                   help="run after the master exits or on failure; '' for none "
                        "(default: %(default)s)")
    p.add_argument("--bucket", default=None,
                   help="config bucket (default: tag htcondor:ConfigBucket of the instance role)")
    p.add_argument("--deadline-s", type=float, default=3000.0,
                   help="power off if not ready to start the master after this many seconds "
                        "(default: %(default)g)")
    p.add_argument("--off-poll-s", type=float, default=OFF_POLL_S,
                   help=f"seconds between looks at the instance tags {TAG_ANNEX_OFF} and "
                        f"{TAG_LEASE_END} while the master runs; 0 never looks "
                        "(default: %(default)g)")
    p.add_argument("--lease-margin-s", type=float, default=LEASE_MARGIN_S,
                   help="seconds past the lease end (the later of the bundle's AnnexLeaseEnd "
                        f"and the instance tag {TAG_LEASE_END}) before the agent stops HTCondor "
                        "and powers off (default: %(default)g)")
    p.add_argument("--no-block-imds", action="store_true",
                   help="do not firewall the metadata service off from non-root users (without "
                        "this flag, HTCondor is not started when the firewall cannot be applied)")
    return p


def main(argv: list[str] | None = None, *, clock: Callable[[], float] = time.time) -> int:
    """Run the agent.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).
        clock: the wall clock the lease end is compared with, epoch seconds (tests inject one).

    Returns:
        0 after the master ran and exited (and the power-off command ran), or when the lease
        (+ margin) was already over once the node was ready (the master never starts); 1 when
        the boot failed before the master started (a missing metadata firewall included); 2 for
        bad arguments; 130 when interrupted before the master started (no power-off then:
        someone is at the keyboard).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.deadline_s > 0:
        parser.error("--deadline-s: must be a positive number of seconds")
    if not (math.isfinite(args.off_poll_s) and args.off_poll_s >= 0):
        parser.error("--off-poll-s: must be 0 or a positive number of seconds")
    if not (math.isfinite(args.lease_margin_s) and args.lease_margin_s >= 0):
        parser.error("--lease-margin-s: must be 0 or a positive number of seconds, e.g. 60")
    try:
        master_cmd = shlex.split(args.condor_master)
        poweroff_cmd = shlex.split(args.poweroff_command)
    except ValueError as exc:
        parser.error(f"cannot split a command: {exc}")
    if not master_cmd:
        parser.error("--condor-master: must not be empty")

    agent_log = logging.getLogger("condor_annex.agent")
    saved_level = agent_log.level
    handler = _install_log_handler(agent_log)
    saved_env = dict(os.environ)
    try:
        return _run(args, master_cmd, poweroff_cmd, child_env=saved_env, clock=clock)
    finally:
        # We are usually a whole process; when called in-process, leave things as found.
        os.environ.clear()
        os.environ.update(saved_env)
        agent_log.removeHandler(handler)
        agent_log.setLevel(saved_level)


def _install_log_handler(agent_log: logging.Logger) -> logging.Handler:
    """INFO and above of ``condor_annex.agent.*`` to stderr, one line each, UTC timestamps.

    The agent never logs credentials, the IMDS token or bundle contents. botocore's own DEBUG
    output (which does include request headers) is not enabled.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.INFO)
    formatter = logging.Formatter(
        "%(asctime)s.%(msecs)03dZ condor-annex-agent %(levelname)s %(message)s",
        "%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    agent_log.addHandler(handler)
    if agent_log.getEffectiveLevel() > logging.INFO:
        agent_log.setLevel(logging.INFO)
    return handler


def _run(args: argparse.Namespace, master_cmd: list[str], poweroff_cmd: list[str], *,
         child_env: dict[str, str], clock: Callable[[], float]) -> int:
    started = time.monotonic()
    deadline = started + args.deadline_s
    config_dir = Path(args.condor_config_dir)
    try:
        refresh_bundle = _prepare(args, config_dir, deadline)
    except KeyboardInterrupt:
        log.error("bootstrap interrupted after %.1fs; not powering off", time.monotonic() - started)
        return 130
    except (BootstrapError, ImdsError) as exc:
        log.error("bootstrap failed after %.1fs, powering off: %s",
                  time.monotonic() - started, exc)
        power_off(poweroff_cmd, child_env)
        return 1
    except Exception as exc:  # a bug or an unforeseen error: still never leave the node running
        log.error("bootstrap failed after %.1fs, powering off: unexpected %s: %s",
                  time.monotonic() - started, type(exc).__name__, exc, exc_info=True)
        power_off(poweroff_cmd, child_env)
        return 1

    env = dict(child_env, CONDOR_CONFIG=str(config_dir / "condor_config"))
    # A short budget per look: a metadata service that hangs must not hold up the backstop.
    poller = ImdsClient(args.imds_url, deadline_s=min(args.off_poll_s or 5.0, 5.0),
                        max_attempts=2)
    backstop = LeaseBackstop(config_dir, read_tag=functools.partial(poller.tag, TAG_LEASE_END),
                             margin_s=args.lease_margin_s, clock=clock)
    backstop.poll(tag=args.off_poll_s > 0)
    end = backstop.lease_end()
    if end is None:
        log.warning("no lease end known (no %s in the bundle, no tag %s): the instance-side "
                    "backstop is off", "AnnexLeaseEnd", TAG_LEASE_END)
    else:
        log.info("instance-side backstop: lease end %d, acting at %.0f (in %.0fs)", end,
                 backstop.due_at(), backstop.seconds_until_due())
    reason = backstop.due_reason()
    if reason is not None:
        log.error("not starting HTCondor, powering off: %s", reason)
        power_off(poweroff_cmd, child_env)
        return 0
    # CPU seconds so far: the benchmarks compare them with any boto3 agent's floor.
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.info("starting condor_master %.2fs after the agent started; agent CPU %.2fs "
             "(its commands' %.2fs)", time.monotonic() - started, own.ru_utime + own.ru_stime,
             kids.ru_utime + kids.ru_stime)
    watch = NodeWatch(off_requested=functools.partial(off_requested, poller), backstop=backstop,
                      poll_s=args.off_poll_s, refresh_bundle=refresh_bundle)
    try:
        status = run_master(master_cmd, env, watch=watch)
    except OSError as exc:
        log.error("bootstrap failed, powering off: cannot start %s: %s", master_cmd[0], exc)
        power_off(poweroff_cmd, child_env)
        return 1
    log.info("step 9/9 condor_master exited with status %s after %.1fs in all; powering off%s",
             status, time.monotonic() - started, f" ({watch.reason})" if watch.reason else "")
    power_off(poweroff_cmd, child_env)
    return 0


def _prepare(args: argparse.Namespace, config_dir: Path,
             deadline: float) -> Callable[[], None]:
    """Steps 1-8: everything before the master starts.

    Returns:
        a function that fetches the annex's bundle again and installs it (30 s budget), for
        when ``extend`` moved the lease: the new bundle carries a token for the new end.
    """
    t0 = time.monotonic()
    imds = ImdsClient(args.imds_url, deadline_s=min(IMDS_DEADLINE_S, args.deadline_s))
    ident = read_identity(imds)
    log.info("step 1/9 identity: instance %s in %s, address %s (%.2fs)",
             ident.instance_id, ident.region, ident.public_ip, time.monotonic() - t0)

    t0 = time.monotonic()
    clients = AwsClients.create(args.imds_url, ident.region, args.aws_endpoint_url)
    method = _retry("instance role credentials", clients.credentials_method, deadline,
                    min(deadline, time.monotonic() + TAG_VISIBILITY_WAIT_S), **_SOON)
    if method != "iam-role":
        log.warning("AWS credentials come from %r, not from the instance role", method)
    log.info("step 2/9 AWS session: region %s, endpoint %s, credentials %s (%.2fs)",
             ident.region, args.aws_endpoint_url or "default", method, time.monotonic() - t0)

    t0 = time.monotonic()
    annex, source = discover_annex_name(imds, clients, ident.instance_id, deadline)
    log.info("step 3/9 annex name %r (from %s) (%.2fs)", annex, source, time.monotonic() - t0)

    t0 = time.monotonic()
    tagged = None if args.bucket else _metadata_tag(imds, TAG_CONFIG_BUCKET)
    if args.bucket:
        bucket, source = args.bucket, "--bucket"
    elif tagged:
        bucket, source = tagged, "instance metadata tag"
    else:
        bucket, source = discover_bucket(imds, clients, deadline), "instance role tag"
    log.info("step 4/9 config bucket %r (from %s) (%.2fs)", bucket, source, time.monotonic() - t0)

    t0 = time.monotonic()
    key = f"config-{annex}.tar.gz"
    bundle = fetch_bundle(clients, bucket, key, deadline)
    log.info("step 5/9 fetched s3://%s/%s, %d bytes (%.2fs)", bucket, key, len(bundle),
             time.monotonic() - t0)

    t0 = time.monotonic()
    installed = install_bundle(bundle, config_dir)
    log.info("step 6/9 installed %s into %s (%.2fs)",
             ", ".join(f"{name} ({mode:o})" for name, mode in installed), config_dir,
             time.monotonic() - t0)

    t0 = time.monotonic()
    path = write_instance_config(config_dir, ident)
    log.info("step 7/9 wrote %s (%.2fs)", path, time.monotonic() - t0)

    t0 = time.monotonic()
    if args.no_block_imds:
        log.info("step 8/9 metadata service left open to non-root users (--no-block-imds)")
    else:
        try:
            how = block_imds(args.imds_url)
        except FirewallError as exc:
            raise BootstrapError(f"metadata firewall could not be applied ({exc}); refusing to "
                                 "start HTCondor, whose jobs could take the instance role's "
                                 "credentials") from None
        log.info("step 8/9 metadata service blocked for non-root users (rule %s) (%.2fs)",
                 how, time.monotonic() - t0)

    def refresh_bundle() -> None:
        install_bundle(fetch_bundle(clients, bucket, key, time.monotonic() + 30), config_dir)
    return refresh_bundle


# -- steps -----------------------------------------------------------------------------------


def read_identity(imds: ImdsClient) -> Identity:
    """Step 1: instance id, region and public (else private) IPv4 address from IMDS.

    Raises:
        ImdsError: when IMDS fails (403 fails at once).
        BootstrapError: when an answer is not what EC2 serves (values go into HTCondor config).
    """
    instance_id, region, address = imds.instance_id(), imds.region(), imds.public_ipv4()
    # fullmatch: "$" after re.match would accept a trailing newline into the config.
    if not _INSTANCE_ID_RE.fullmatch(instance_id):
        raise BootstrapError(f"IMDS instance-id {instance_id!r} is not an EC2 instance id")
    if not re.fullmatch(r"[a-z0-9-]{1,40}", region, re.ASCII):
        raise BootstrapError(f"IMDS placement/region {region!r} is not a region name")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise BootstrapError(f"IMDS public-ipv4/local-ipv4 {address!r} is not an IPv4 "
                             "address") from None
    return Identity(instance_id, region, address)


class AwsClients:
    """boto3 clients for EC2, IAM and S3 using the instance role's credentials.

    boto3's default credential chain ends with the instance metadata provider; we point it at
    ``imds_url`` through the environment (``AWS_EC2_METADATA_SERVICE_ENDPOINT``; botocore reads
    ``AWS_EC2_METADATA_DISABLED`` only from the environment) and forbid its IMDSv1 fallback. The
    process is the agent alone, and :func:`main` restores the environment when it returns.
    """

    def __init__(self, session, endpoint_url: str | None) -> None:
        from botocore.config import Config

        self._session = session
        self._endpoint_url = endpoint_url
        self._config = Config(connect_timeout=5, read_timeout=30,
                              retries={"mode": "standard", "max_attempts": 3})

    # Each client is made on first use: loading a service model costs CPU on every booting
    # node (EC2's is the largest, and is needed only when metadata tags are off).
    def _client(self, service: str):
        return self._session.client(service, endpoint_url=self._endpoint_url,
                                    config=self._config)

    @functools.cached_property
    def ec2(self):
        """EC2 client (DescribeTags)."""
        return self._client("ec2")

    @functools.cached_property
    def iam(self):
        """IAM client (GetInstanceProfile, ListRoleTags)."""
        return self._client("iam")

    @functools.cached_property
    def s3(self):
        """S3 client (GetObject)."""
        return self._client("s3")

    @classmethod
    def create(cls, imds_url: str, region: str, endpoint_url: str | None) -> AwsClients:
        """A session in ``region`` whose credentials come from the IMDS at ``imds_url``."""
        os.environ.update({
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds_url,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv4",
            "AWS_EC2_METADATA_DISABLED": "false",
            "AWS_EC2_METADATA_V1_DISABLED": "true",
            "AWS_METADATA_SERVICE_TIMEOUT": "5",
            "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "5",
        })
        import boto3

        return cls(boto3.session.Session(region_name=region), endpoint_url)

    def credentials_method(self) -> str:
        """How boto3 found credentials (``"iam-role"`` for the instance role).

        Raises:
            _NotYet: no credentials yet (the role may not be attached yet at boot).
        """
        try:
            creds = self._session.get_credentials()
        except Exception as exc:  # noqa: BLE001 - any failure here is retried until the deadline
            # botocore raises MetadataRetrievalError (and, in some versions, other errors)
            # when the metadata endpoint is slow to hand out a token at boot.
            raise _NotYet(f"{type(exc).__name__}: {exc}") from None
        if creds is None:
            raise _NotYet("no credentials from the instance role yet")
        return str(getattr(creds, "method", "unknown"))


def discover_annex_name(imds: ImdsClient, clients: AwsClients, instance_id: str,
                        deadline: float) -> tuple[str, str]:
    """Step 3: the exact value of tag ``htcondor:AnnexName``, and where it came from.

    Instance metadata tags first (enabled at launch); else EC2 DescribeTags on this instance,
    retried for up to :data:`TAG_VISIBILITY_WAIT_S` (EC2 is eventually consistent).

    Raises:
        BootstrapError: no such tag.
    """
    name = imds.tag(TAG_ANNEX_NAME)
    if name:
        return name, "instance metadata"
    log.info("tag %s is not in instance metadata; asking EC2 DescribeTags", TAG_ANNEX_NAME)

    def attempt() -> str:
        answer = _aws(lambda: clients.ec2.describe_tags(Filters=[
            {"Name": "resource-id", "Values": [instance_id]},
            {"Name": "key", "Values": [TAG_ANNEX_NAME]},
        ]))
        for tag in answer.get("Tags", []):
            if tag.get("ResourceId") == instance_id and tag.get("Key") == TAG_ANNEX_NAME \
                    and tag.get("Value"):
                return str(tag["Value"])
        raise _NotYet(f"instance {instance_id} has no tag {TAG_ANNEX_NAME}")

    name = _retry("annex name", attempt, deadline,
                  min(deadline, time.monotonic() + TAG_VISIBILITY_WAIT_S), **_SOON)
    return name, "EC2 DescribeTags"


def _metadata_tag(imds: ImdsClient, key: str) -> str | None:
    """Instance tag ``key`` from IMDS, or None (tags in metadata off, or no such tag)."""
    try:
        value = imds.tag(key)
    except ImdsError as exc:
        log.debug("IMDS tag %s: %s", key, exc)
        return None
    return value.strip() if value and value.strip() else None


def discover_bucket(imds: ImdsClient, clients: AwsClients, deadline: float) -> str:
    """Step 4: tag ``htcondor:ConfigBucket`` of the role in this instance's instance profile.

    Raises:
        BootstrapError: no instance profile, no role, or no such tag.
    """
    arn = imds.instance_profile_arn()
    if not arn:
        raise BootstrapError("the instance has no instance profile (IMDS iam/info is 404); "
                             "launch it with the annex instance profile or pass --bucket")
    profile_name = arn.rsplit("/", 1)[-1]

    def attempt() -> str:
        answer = _aws(lambda: clients.iam.get_instance_profile(InstanceProfileName=profile_name))
        roles = answer.get("InstanceProfile", {}).get("Roles") or []
        if not roles:
            raise _NotYet(f"instance profile {profile_name} has no role")
        role = roles[0]["RoleName"]
        tags = _role_tags(clients, role)
        if not tags.get(TAG_CONFIG_BUCKET):
            raise _NotYet(f"role {role} has no tag {TAG_CONFIG_BUCKET}")
        return tags[TAG_CONFIG_BUCKET]

    return _retry("config bucket", attempt, deadline,
                  min(deadline, time.monotonic() + TAG_VISIBILITY_WAIT_S), **_SOON)


def _role_tags(clients: AwsClients, role: str) -> dict[str, str]:
    """All tags of an IAM role (IAM ListRoleTags, every page)."""
    tags: dict[str, str] = {}
    kwargs: dict[str, str] = {"RoleName": role}
    for _page in range(100):
        answer = _aws(lambda: clients.iam.list_role_tags(**kwargs))
        tags.update({t["Key"]: t["Value"] for t in answer.get("Tags", [])})
        if not answer.get("IsTruncated") or not answer.get("Marker"):
            break
        kwargs["Marker"] = answer["Marker"]
    return tags


def fetch_bundle(clients: AwsClients, bucket: str, key: str, deadline: float) -> bytes:
    """Step 5: S3 GetObject of the bundle, retried with backoff until ``deadline``.

    Every S3 error is retried: the object or the role's permission may not be visible yet.

    Raises:
        BootstrapError: not fetched by the deadline, or larger than :data:`MAX_BUNDLE_BYTES`.
    """
    def attempt() -> bytes:
        answer = _aws(lambda: clients.s3.get_object(Bucket=bucket, Key=key))
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength") or 0) > MAX_BUNDLE_BYTES:
                raise BootstrapError(f"s3://{bucket}/{key} is larger than {MAX_BUNDLE_BYTES} "
                                     "bytes")
            data = _aws(lambda: body.read(MAX_BUNDLE_BYTES + 1))
        finally:
            body.close()
        if len(data) > MAX_BUNDLE_BYTES:
            raise BootstrapError(f"s3://{bucket}/{key} is larger than {MAX_BUNDLE_BYTES} bytes")
        return data

    return _retry(f"bundle s3://{bucket}/{key}", attempt, deadline, deadline)


def install_bundle(bundle: bytes, config_dir: Path) -> list[tuple[str, int]]:
    """Step 6: unpack the bundle into ``config_dir``, safely; nothing is written if it is bad.

    Every member is checked before anything is written: only regular files and directories;
    relative names without ``..``; no links or devices; tarfile's ``data`` filter must accept it
    too. Files are written atomically (temporary file, then rename), under :data:`SECRET_DIRS`
    with mode 600 (directories 700), elsewhere 644 (directories 755). Existing path components
    must be real directories, not symlinks.

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
            _ensure_dir(root, rel)
        for rel, data in files:
            mode = 0o600 if rel.split("/", 1)[0] in SECRET_DIRS else 0o644
            _write_file_atomic(root, rel, data, mode)
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


def _ensure_dir(root: Path, rel: str) -> None:
    """Create ``root/rel`` one component at a time; refuse a symlink or file on the way."""
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


def _write_file_atomic(root: Path, rel: str, data: bytes, mode: int) -> Path:
    """Write ``root/rel`` with ``mode`` through a temporary file and a rename."""
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


def write_instance_config(config_dir: Path, ident: Identity) -> Path:
    """Step 7: ``config.d/49-instance.config`` advertising the instance id and address.

    Returns:
        The file's path.
    """
    text = (
        "# Written at boot by condor_annex.agent from instance metadata; do not edit.\n"
        f'EC2InstanceID = "{ident.instance_id}"\n'
        f'EC2PublicIP = "{ident.public_ip}"\n'
        f"TCP_FORWARDING_HOST = {ident.public_ip}\n"
        "STARTD_ATTRS = $(STARTD_ATTRS) EC2InstanceID EC2PublicIP\n"
        "MASTER_ATTRS = $(MASTER_ATTRS) EC2InstanceID EC2PublicIP\n"
    )
    root = Path(os.path.realpath(config_dir))
    try:
        _ensure_dir(root, posixpath.dirname(INSTANCE_CONFIG))
        return _write_file_atomic(root, INSTANCE_CONFIG, text.encode(), 0o644)
    except OSError as exc:
        raise BootstrapError(f"cannot write {INSTANCE_CONFIG}: {exc}") from None


def off_requested(imds: ImdsClient) -> bool:
    """True once the instance carries the tag ``htcondor:AnnexOff`` (IMDS
    ``meta-data/tags/instance/htcondor:AnnexOff``); an unreachable IMDS counts as not yet."""
    try:
        return imds.tag(TAG_ANNEX_OFF) is not None
    except ImdsError as exc:
        log.debug("could not look for tag %s: %s", TAG_ANNEX_OFF, exc)
        return False


def power_off(command: list[str], env: dict[str, str]) -> None:
    """Run the power-off command (nothing if empty); failures are logged, never raised."""
    if not command:
        log.info("no power-off command; exiting")
        return
    log.info("powering off: %s", shlex.join(command))
    try:
        done = subprocess.run(command, env=env, stdin=subprocess.DEVNULL,
                              timeout=POWEROFF_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        log.error("power-off command failed: %s", exc)
        return
    if done.returncode != 0:
        log.error("power-off command exited with status %d", done.returncode)


# -- retries ---------------------------------------------------------------------------------


def _aws(call: Callable[[], T]) -> T:
    """Run one boto3 call; turn any botocore error into :class:`_NotYet` (retried by the caller).

    At boot every AWS error may be transient: a role, tag or object not yet visible (eventual
    consistency), credentials not yet served, a network still coming up. The deadline bounds it.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = err.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        raise _NotYet(f"{exc.operation_name}: {code}: {err.get('Message', '')}".rstrip(": ")
                      ) from None
    except BotoCoreError as exc:
        raise _NotYet(f"{type(exc).__name__}: {exc}") from None


def _retry(what: str, attempt: Callable[[], T], deadline: float, give_up_at: float, *,
           initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S) -> T:
    """Call ``attempt`` until it returns, retrying :class:`_NotYet` with backoff and jitter.

    Delays start at ``initial_s`` and double up to ``max_s`` seconds, each drawn uniformly from
    [d/2, d]; the last attempt is made at ``give_up_at`` (monotonic, at most ``deadline``).

    Raises:
        BootstrapError: still failing at ``give_up_at``.
    """
    give_up_at = min(give_up_at, deadline)
    started = time.monotonic()
    reason = ""
    for n in range(MAX_RETRY_ATTEMPTS):
        try:
            return attempt()
        except _NotYet as exc:
            reason = str(exc)
        remaining = give_up_at - time.monotonic()
        if remaining <= 0:
            raise BootstrapError(f"{what}: gave up after {n + 1} attempts in "
                                 f"{time.monotonic() - started:.1f}s: {reason}")
        delay = min(max_s, initial_s * (2 ** n))
        delay = min(random.uniform(delay / 2, delay), remaining)
        log.warning("%s: %s; retrying in %.1fs", what, reason, delay)
        time.sleep(delay)
    raise BootstrapError(f"{what}: gave up after {MAX_RETRY_ATTEMPTS} attempts: {reason}")
