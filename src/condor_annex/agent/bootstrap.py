"""Boot an annex instance: fetch its HTCondor config bundle, install it, run the master, power off.

Runs as root on the instance (a oneshot boot service, or the local cloud's instance process) under
the image's Python 3.11-3.13 with boto3; imports nothing from ``condor_annex`` outside
``condor_annex.agent``. It replaces HTCondor's ``condor-annex-ec2`` script (reference §8) and fixes
its defects: IMDSv2 instead of plain ``curl``; the annex name is the exact ``htcondor:AnnexName``
tag, not the client token cut at its first ``_``; the bucket comes from a tag on the instance role
instead of grepping IAM policies; the bundle is unpacked with checks instead of ``tar -xzf``.

This module is the agent's main flow; each step lives in a module of its own:

====================  ===================================================================
module                what
====================  ===================================================================
``arguments``         the command line
``log_tail``          the log: stderr, and its tail in memory
``imds``              the IMDSv2 client
``discovery``         steps 1, 3, 4: identity, annex name, config bucket
``clients``           step 2: boto3 clients with the instance role's credentials
``retry``             backoff and deadlines of every AWS call at boot
``bundle``            steps 5, 6: fetch the bundle, unpack it with checks (``files``)
``instance_config``   step 7: ``config.d/49-instance.config``
``firewall``          step 8: the metadata firewall
``master``            step 9: run condor_master, forward signals, stop it when told
``watch``             what tells it to stop: the ``htcondor:AnnexOff`` tag, the lease
``collector_check``   can this instance reach the collector? (``collector_address``,
                      ``diagnosis``: the phrase the submit side recognises)
``backstop``          the instance-side lease backstop
``interruption_watch`` EC2's spot warnings (``notices``): no new claims on a rebalance
                      recommendation; drain and leave on an interruption notice
                      (``node_drain``, HTCondor's tools through ``condor_commands``)
``log_upload``        a failed boot's log, to the config bucket
``ec2_end``           after an interruption's drain: wait for EC2 to end the instance
``poweroff``          the power-off command
====================  ===================================================================

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
   not start the master at all. Beside the master, a thread tries TCP connections to the
   installed ``COLLECTOR_HOST`` for ``--collector-check-s`` seconds
   (:mod:`condor_annex.agent.collector_check`); when none succeeds it logs one line saying the
   collector is unreachable from this instance and uploads this log, and the master runs on.
   Every ``--interruption-poll-s`` seconds another thread reads EC2's spot interruption notice
   and rebalance recommendation from instance metadata
   (:mod:`condor_annex.agent.interruption_watch`): a recommendation makes the startd take no new
   claims; a notice drains the node (jobs vacated back to the queue, ``AnnexInterruption``
   advertised) and stops the master well before EC2's time; the agent then leaves the
   instance's end to EC2 (:mod:`condor_annex.agent.ec2_end`: its state reason records the
   interruption) and powers off by itself only a minute after EC2's time.

Any failure before the master starts (IMDS 403, no annex tag, no bundle by the deadline, a bad
bundle, no metadata firewall) logs one ``bootstrap failed`` line, runs the power-off command and
exits 1, so a broken node never lingers (the original powered off after 50 minutes, "AWS charges
by the hour").

A failed boot — any such failure once the instance id, annex and bucket are known, a master
that cannot start or exits with an error within :data:`EARLY_EXIT_S` seconds of its start
without being told to stop, or a node whose lease was over before HTCondor started — first
uploads the tail of the agent's log to ``s3://<bucket>/logs/<annex>/<instance-id>/agent.log``
(:mod:`condor_annex.agent.log_upload`; best effort, at most a few seconds), so that
``condor_annex logs`` shows why after the instance is gone.

Required instance-role permissions: ``ec2:DescribeTags`` (only when instance metadata tags are
off), ``iam:GetInstanceProfile`` and ``iam:ListRoleTags`` on itself (only without ``--bucket``
and without the instance tag ``htcondor:ConfigBucket`` in metadata),
``s3:GetObject`` on ``config-<annex>.tar.gz``, ``s3:PutObject`` on ``logs/<annex>/*`` (only for
the log of a failed boot or of a node that cannot reach its collector).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from condor_annex.agent import arguments, log_tail
from condor_annex.agent.backstop import TAG_LEASE_END, LeaseBackstop
from condor_annex.agent.bundle import bundle_key, fetch_bundle, install_bundle
from condor_annex.agent.clients import AwsClients
from condor_annex.agent.collector_check import collector_check
from condor_annex.agent.discovery import (TAG_CONFIG_BUCKET, Identity, discover_annex_name,
                                          discover_bucket, metadata_tag, read_identity)
from condor_annex.agent.errors import BootstrapError
from condor_annex.agent.firewall import FirewallError, block_imds
from condor_annex.agent.imds import ImdsClient, ImdsError
from condor_annex.agent.idle_shutdown import TAG_IDLE_SHUTDOWN, write_idle_config
from condor_annex.agent.instance_config import write_instance_config
from condor_annex.agent.ec2_end import wait_for_ec2
from condor_annex.agent.interruption_watch import interruption_watch
from condor_annex.agent.log_upload import upload_log
from condor_annex.agent.master import run_master
from condor_annex.agent.poweroff import power_off
from condor_annex.agent.retry import SOON, TAG_VISIBILITY_WAIT_S, retry
from condor_annex.agent.watch import NodeWatch, off_requested

log = logging.getLogger(__name__)

#: Longest a single IMDS lookup may retry, seconds (also capped by --deadline-s).
IMDS_DEADLINE_S = 120.0
#: A master that exits with an error within this many seconds of its start, without being told
#: to stop, counts as a failed boot (its log is uploaded).
EARLY_EXIT_S = 300.0
#: Budget of a bundle fetched again after ``extend`` moved the lease, seconds.
REFRESH_BUDGET_S = 30.0


@dataclass
class Found:
    """What the boot has learnt so far, filled step by step (a failed boot's log upload needs
    the identity, the clients, the annex and the bucket)."""

    identity: Identity | None = None
    clients: AwsClients | None = None
    annex: str | None = None
    bucket: str | None = None


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
    parsed = arguments.parse(argv)
    agent_log = logging.getLogger("condor_annex.agent")
    saved_level = agent_log.level
    stderr, tail = log_tail.install(agent_log)
    saved_env = dict(os.environ)
    try:
        return _run(parsed, tail, child_env=saved_env, clock=clock)
    finally:
        # We are usually a whole process; when called in-process, leave things as found.
        os.environ.clear()
        os.environ.update(saved_env)
        agent_log.removeHandler(stderr)
        agent_log.removeHandler(tail)
        agent_log.setLevel(saved_level)


def _run(parsed: arguments.Arguments, tail: log_tail.LogTail, *, child_env: dict[str, str],
         clock: Callable[[], float]) -> int:
    args, master_cmd, poweroff_cmd = parsed.args, parsed.master_cmd, parsed.poweroff_cmd
    started = time.monotonic()
    deadline = started + args.deadline_s
    config_dir = Path(args.condor_config_dir)
    found = Found()

    def give_up(status: int) -> int:
        """A failed boot: upload the log when we can, power off, exit ``status``."""
        _upload_log(found, tail)
        power_off(poweroff_cmd, child_env)
        return status

    try:
        refresh_bundle = _prepare(args, config_dir, deadline, found)
    except KeyboardInterrupt:
        log.error("bootstrap interrupted after %.1fs; not powering off", time.monotonic() - started)
        return 130
    except (BootstrapError, ImdsError) as exc:
        log.error("bootstrap failed after %.1fs, powering off: %s",
                  time.monotonic() - started, exc)
        return give_up(1)
    except Exception as exc:  # a bug or an unforeseen error: still never leave the node running
        log.error("bootstrap failed after %.1fs, powering off: unexpected %s: %s",
                  time.monotonic() - started, type(exc).__name__, exc, exc_info=True)
        return give_up(1)

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
        return give_up(0)   # HTCondor never started: the log says why
    # CPU seconds so far: the benchmarks compare them with any boto3 agent's floor.
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    log.info("starting condor_master %.2fs after the agent started; agent CPU %.2fs "
             "(its commands' %.2fs)", time.monotonic() - started, own.ru_utime + own.ru_stime,
             kids.ru_utime + kids.ru_stime)
    master_pid: list[int] = []
    spot = interruption_watch(args.imds_url, config_dir, env, poll_s=args.interruption_poll_s,
                              master_pid=lambda: master_pid[0] if master_pid else None)
    watch = NodeWatch(off_requested=functools.partial(off_requested, poller), backstop=backstop,
                      poll_s=args.off_poll_s, refresh_bundle=refresh_bundle,
                      leave_reason=spot.leave_reason if spot is not None else None)
    master_started = time.monotonic()
    # Beside the master, never in its way: says once whether this instance can reach the
    # collector, and uploads the log when it cannot (the submit side reads why it never joined).
    check = collector_check(config_dir, window_s=args.collector_check_s,
                            on_unreachable=functools.partial(_upload_log, found, tail))

    def beside_master() -> None:
        if check is not None:
            check.start()
        if spot is not None:
            spot.start()
    try:
        status = run_master(master_cmd, env, watch=watch, on_started=beside_master,
                            on_pid=master_pid.append)
    except OSError as exc:
        log.error("bootstrap failed, powering off: cannot start %s: %s", master_cmd[0], exc)
        return give_up(1)
    finally:
        if check is not None:
            check.stop()
        if spot is not None:
            spot.stop()
    ran_s = time.monotonic() - master_started
    log.info("step 9/9 condor_master exited with status %s after %.1fs in all; powering off%s",
             status, time.monotonic() - started, f" ({watch.reason})" if watch.reason else "")
    if status != 0 and watch.reason is None and ran_s < EARLY_EXIT_S:
        log.error("condor_master failed %.1fs after it started (status %s): the node did not "
                  "join the pool", ran_s, status)
        return give_up(0)
    if spot is not None and spot.interruption is not None:
        wait_for_ec2(spot.interruption, clock=clock)
    power_off(poweroff_cmd, child_env)
    return 0


def _upload_log(found: Found, tail: log_tail.LogTail) -> None:
    """Upload the log of a failed boot when the instance id, clients, annex and bucket are
    known (else say so: the console output is then the only record)."""
    if found.identity is None or found.clients is None or not found.annex or not found.bucket:
        log.info("this log is not uploaded: the boot failed before the instance, its annex and "
                 "its bucket were known")
        return
    upload_log(found.clients, found.bucket, found.annex, found.identity.instance_id,
               tail.text())


def _prepare(args: argparse.Namespace, config_dir: Path, deadline: float,
             found: Found) -> Callable[[], None]:
    """Steps 1-8: everything before the master starts; ``found`` learns as they go.

    Returns:
        a function that fetches the annex's bundle again and installs it
        (:data:`REFRESH_BUDGET_S` budget), for when ``extend`` moved the lease: the new bundle
        carries a token for the new end.
    """
    t0 = time.monotonic()
    imds = ImdsClient(args.imds_url, deadline_s=min(IMDS_DEADLINE_S, args.deadline_s))
    ident = found.identity = read_identity(imds)
    log.info("step 1/9 identity: instance %s in %s, address %s (%.2fs)",
             ident.instance_id, ident.region, ident.public_ip, time.monotonic() - t0)

    t0 = time.monotonic()
    clients = AwsClients.create(args.imds_url, ident.region, args.aws_endpoint_url)
    method = retry("instance role credentials", clients.credentials_method, deadline,
                   min(deadline, time.monotonic() + TAG_VISIBILITY_WAIT_S), **SOON)
    found.clients = clients
    if method != "iam-role":
        log.warning("AWS credentials come from %r, not from the instance role", method)
    log.info("step 2/9 AWS session: region %s, endpoint %s, credentials %s (%.2fs)",
             ident.region, args.aws_endpoint_url or "default", method, time.monotonic() - t0)

    t0 = time.monotonic()
    annex, source = discover_annex_name(imds, clients, ident.instance_id, deadline)
    found.annex = annex
    log.info("step 3/9 annex name %r (from %s) (%.2fs)", annex, source, time.monotonic() - t0)

    t0 = time.monotonic()
    tagged = None if args.bucket else metadata_tag(imds, TAG_CONFIG_BUCKET)
    if args.bucket:
        bucket, source = args.bucket, "--bucket"
    elif tagged:
        bucket, source = tagged, "instance metadata tag"
    else:
        bucket, source = discover_bucket(imds, clients, deadline), "instance role tag"
    found.bucket = bucket
    log.info("step 4/9 config bucket %r (from %s) (%.2fs)", bucket, source, time.monotonic() - t0)

    t0 = time.monotonic()
    key = bundle_key(annex)
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
    kept = write_idle_config(config_dir, metadata_tag(imds, TAG_IDLE_SHUTDOWN))   # issue 13
    log.info("step 7/9 wrote %s%s (%.2fs)", path, f" and {kept} (no idle shutdown)"
             if kept else "", time.monotonic() - t0)

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
        install_bundle(fetch_bundle(clients, bucket, key, time.monotonic() + REFRESH_BUDGET_S),
                       config_dir)
    return refresh_bundle
