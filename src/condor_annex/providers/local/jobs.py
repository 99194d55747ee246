"""Jobs on the local cloud's submit node, submitted and watched as an ordinary user.

HTCondor refuses root submitters, and a job whose IWD is under /tmp fails with
MOUNT_UNDER_SCRATCH; so jobs are submitted as ``annexuser`` from its home directory in the chroot,
inside the central manager's namespace (local-cloud.md, pitfalls 3 and 4).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

from condor_annex.providers.local import netns
from condor_annex.providers.local.cloud import CM_DIR, ROOT

SUBMIT_USER = "annexuser"


def _as_user(script: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = ["ip", "netns", "exec", netns.prefix() + "cm", "chroot", str(ROOT), "runuser", "-u",
           SUBMIT_USER, "--", "env", f"CONDOR_CONFIG={CM_DIR}/etc/condor_config",
           f"HOME=/home/{SUBMIT_USER}", "PATH=/usr/bin:/bin", "sh", "-c",
           f"cd /home/{SUBMIT_USER} && {script}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def submit(annex_name: str, count: int, sleep_s: int = 5) -> int:
    """Submit ``count`` jobs that require ``AnnexName == annex_name``; returns the cluster id.

    Each job sleeps ``sleep_s`` seconds and prints the host it ran on.

    Raises:
        RuntimeError: condor_submit failed (its message is included).
    """
    sub = f"""executable = /bin/sh
arguments = "-c 'hostname; sleep {int(sleep_s)}'"
output = demo-{annex_name}.$(Cluster).$(Process).out
error = demo-{annex_name}.$(Cluster).$(Process).err
log = demo-{annex_name}.log
requirements = (AnnexName =?= "{annex_name}")
should_transfer_files = YES
when_to_transfer_output = ON_EXIT
request_memory = 64
queue {int(count)}
"""
    p = _as_user(f"cat > demo-{annex_name}.sub <<'EOF'\n{sub}EOF\ncondor_submit demo-{annex_name}.sub")
    m = re.search(r"submitted to cluster (\d+)", p.stdout)
    if p.returncode or not m:
        raise RuntimeError(f"condor_submit failed: {p.stderr.strip() or p.stdout.strip()}")
    return int(m.group(1))


@dataclass(frozen=True)
class JobRecord:
    """A job as the schedd reports it: status (4 = completed) and where it ran (the slot, and
    the ``AnnexName`` / ``EC2InstanceID`` of its machine, via SYSTEM_JOB_MACHINE_ATTRS)."""

    proc: int
    status: int
    remote_host: str
    annex_name: str
    instance_id: str


def jobs(cluster: int) -> list[JobRecord]:
    """Jobs of a cluster, from the queue and the history (completed ones leave the queue)."""
    fmt = "-af ProcId JobStatus LastRemoteHost MachineAttrAnnexName0 MachineAttrEC2InstanceID0"
    p = _as_user(f"condor_q {cluster} {fmt}; condor_history {cluster} {fmt}")
    out: dict[int, JobRecord] = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0].isdigit():
            out[int(parts[0])] = JobRecord(int(parts[0]), int(parts[1]), *parts[2:])
    return [out[k] for k in sorted(out)]


def remove(cluster: int) -> None:
    """Remove a cluster's jobs from the queue (``condor_rm`` as the submitting user).

    Raises:
        RuntimeError: condor_rm failed (its message is included).
    """
    p = _as_user(f"condor_rm {int(cluster)}")
    if p.returncode:
        raise RuntimeError(f"condor_rm failed: {p.stderr.strip() or p.stdout.strip()}")


def condor_status_annex(annex_name: str) -> list[tuple[str, str]]:
    """``condor_status -annex NAME`` on the submit node, as its user would run it.

    Returns:
        (slot name, ``EC2InstanceID``) of each slot listed.

    Raises:
        RuntimeError: condor_status failed.
    """
    p = _as_user(f"condor_status -annex {annex_name} -af Name EC2InstanceID")
    if p.returncode:
        raise RuntimeError(f"condor_status failed: {p.stderr.strip() or p.stdout.strip()}")
    return [tuple(line.split()[:2]) for line in p.stdout.splitlines() if line.strip()]
