"""The metadata firewall: only root on the instance may reach the instance metadata service.

Anyone who can reach IMDS can take the instance role's credentials (reference §9), and with
them read the annex's bundle (its pool token). HTCondor runs jobs as other users, so the agent
adds one iptables OUTPUT rule rejecting non-root TCP traffic to the metadata service before it
starts HTCondor, and refuses to start HTCondor when the rule cannot be put in place.

Standard library only (the agent runs on the instance's python3.9+).
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.parse

#: Timeout of one iptables command, seconds.
IPTABLES_TIMEOUT_S = 30


class FirewallError(Exception):
    """The rule could not be put in place; the text (one line) says why."""


def imds_rule(imds_url: str) -> list[str]:
    """The iptables rule (without the command and ``-A``/``-C``) for the service at
    ``imds_url``: reject TCP to its host and port from every uid but 0."""
    parsed = urllib.parse.urlsplit(imds_url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return ["OUTPUT", "-d", host, "-p", "tcp", "--dport", str(port),
            "-m", "owner", "!", "--uid-owner", "0", "-j", "REJECT"]


def block_imds(imds_url: str) -> str:
    """Reject non-root TCP traffic to the metadata service (an iptables OUTPUT rule).

    The rule is added once (``iptables -C`` first) and checked again after it was added.

    Returns:
        ``"present"`` (the rule was already there) or ``"added"``.

    Raises:
        FirewallError: no iptables, or iptables failed (the message carries its last line).
    """
    exe = shutil.which("iptables")
    if not exe:
        raise FirewallError("iptables not found")
    rule = imds_rule(imds_url)

    def iptables(op: str) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([exe, "-w", op, *rule], capture_output=True, text=True,
                                  timeout=IPTABLES_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as exc:
            raise FirewallError(f"iptables {op} failed: {exc}") from None

    if iptables("-C").returncode == 0:
        return "present"
    added = iptables("-A")
    if added.returncode != 0:
        detail = (added.stderr.strip().splitlines() or ["no message"])[-1]
        raise FirewallError(f"iptables -A exited with status {added.returncode}: {detail}")
    if iptables("-C").returncode != 0:
        raise FirewallError("iptables -A succeeded but -C does not find the rule")
    return "added"
