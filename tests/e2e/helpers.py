"""What the end-to-end tests share: the command line as a user runs it, a polling wait, and the
live instances of an annex as EC2 lists them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

#: The installed ``condor_annex`` beside this interpreter.
CLI = str(Path(sys.executable).with_name("condor_annex"))


def cli(*args: str, timeout_s: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``condor_annex ARGS`` in a process of its own; with ``check``, assert exit 0."""
    p = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout_s,
                       env=dict(os.environ))
    if check:
        assert p.returncode == 0, f"condor_annex {' '.join(args)}: exit {p.returncode}\n" \
                                  f"{p.stdout}\n{p.stderr}"
    return p


def wait(what: str, test, timeout_s: float, step_s: float = 1.0):
    """Poll ``test()`` every ``step_s`` seconds until it returns something true; return it.
    Fails naming ``what`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = test()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step_s)


def alive(ec2, name: str) -> list[str]:
    """Ids of the annex's pending or running instances (DescribeInstances)."""
    r = ec2.describe_instances(Filters=[{"Name": "tag:htcondor:AnnexName", "Values": [name]},
                                        {"Name": "instance-state-name",
                                         "Values": ["pending", "running"]}])
    return [i["InstanceId"] for res in r["Reservations"] for i in res["Instances"]]
