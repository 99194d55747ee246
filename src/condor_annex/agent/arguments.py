"""The agent's command line: ``python3 -m condor_annex.agent [OPTIONS]``.

The boot unit passes these (``$CONDOR_ANNEX_AGENT_ARGS``); no secret is ever an argument.

Standard library only (the agent runs on the instance's python3, 3.11+).
"""

from __future__ import annotations

import argparse
import math
import shlex
from dataclasses import dataclass

from condor_annex.agent.backstop import LEASE_MARGIN_S, TAG_LEASE_END
from condor_annex.agent.collector_check import WINDOW_S
from condor_annex.agent.interruption_watch import POLL_S as INTERRUPTION_POLL_S
from condor_annex.agent.watch import TAG_ANNEX_OFF

DEFAULT_IMDS_URL = "http://169.254.169.254"
#: Seconds between looks at the instance tags while the master runs.
OFF_POLL_S = 5.0


@dataclass(frozen=True)
class Arguments:
    """The parsed command line.

    Attributes:
        args: every option, as argparse parsed it.
        master_cmd: ``--condor-master`` split like a shell would (never empty).
        poweroff_cmd: ``--poweroff-command`` split (empty: none).
    """

    args: argparse.Namespace
    master_cmd: list[str]
    poweroff_cmd: list[str]


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
    p.add_argument("--collector-check-s", type=float, default=WINDOW_S,
                   help="once condor_master runs, try to reach the collector this many seconds "
                        "and say on the console when it never answered; 0: no check "
                        "(default: %(default)g)")
    p.add_argument("--interruption-poll-s", type=float, default=INTERRUPTION_POLL_S,
                   help="once condor_master runs, look for EC2's spot interruption notice and "
                        "rebalance recommendation in instance metadata every this many seconds "
                        "(drain and leave the pool / take no new jobs); 0: never "
                        "(default: %(default)g)")
    p.add_argument("--no-block-imds", action="store_true",
                   help="do not firewall the metadata service off from non-root users (without "
                        "this flag, HTCondor is not started when the firewall cannot be applied)")
    return p


def parse(argv: list[str] | None) -> Arguments:
    """Parse and check ``argv`` (without the program name; None: ``sys.argv[1:]``).

    Raises:
        SystemExit: status 2 with one ``error:`` line naming the option, on bad input
            (argparse's own behaviour).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.deadline_s > 0:
        parser.error("--deadline-s: must be a positive number of seconds")
    if not (math.isfinite(args.off_poll_s) and args.off_poll_s >= 0):
        parser.error("--off-poll-s: must be 0 or a positive number of seconds")
    if not (math.isfinite(args.lease_margin_s) and args.lease_margin_s >= 0):
        parser.error("--lease-margin-s: must be 0 or a positive number of seconds, e.g. 60")
    if not (math.isfinite(args.collector_check_s) and args.collector_check_s >= 0):
        parser.error("--collector-check-s: must be 0 (no check) or a positive number of "
                     "seconds, e.g. 120")
    if not (math.isfinite(args.interruption_poll_s) and args.interruption_poll_s >= 0):
        parser.error("--interruption-poll-s: must be 0 (no watch) or a positive number of "
                     "seconds, e.g. 5")
    try:
        master_cmd = shlex.split(args.condor_master)
        poweroff_cmd = shlex.split(args.poweroff_command)
    except ValueError as exc:
        parser.error(f"cannot split a command: {exc}")
    if not master_cmd:
        parser.error("--condor-master: must not be empty")
    return Arguments(args, master_cmd, poweroff_cmd)
